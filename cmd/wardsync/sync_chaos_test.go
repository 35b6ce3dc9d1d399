package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsync/wardsync/replication/faultproxy"
	"github.com/wardsync/wardsync/schema"
)

// Chaos tests of the ward ↔ city link: a rough network (loss, reordering,
// duplicates, a flapping link, the leader killed), and kill -9 of a ward in
// the middle of a push and in the middle of a pull.

// chaosSeed returns the seed of a chaos test, from WARDSYNC_CHAOS_SEED if
// set, and logs how to replay it.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64() >> 1 // fits an int64 for the proxies
	if s := os.Getenv("WARDSYNC_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 63); err != nil {
			t.Fatalf("WARDSYNC_CHAOS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (rerun with WARDSYNC_CHAOS_SEED=%d)", seed, seed)
	return seed
}

// syncStatus is a ward's GET /v1/sync/status.
type syncStatus struct {
	Enabled     bool   `json:"enabled"`
	Connected   bool   `json:"connected"`
	CityMember  string `json:"city_member"`
	Leader      string `json:"leader"`
	OutboxDepth uint64 `json:"outbox_depth"`
	PushAcked   uint64 `json:"push_acked"`
	LastSeq     uint64 `json:"last_seq"`
	PullCursor  uint64 `json:"pull_cursor"`
	LastError   string `json:"last_error"`
}

func (w *wardNode) status() (syncStatus, error) {
	code, data, err := w.api.do("GET", "/v1/sync/status", nil)
	if err != nil || code != 200 {
		return syncStatus{}, fmt.Errorf("GET /v1/sync/status on %s: HTTP %d %v %s", w.id, code, err, data)
	}
	var st syncStatus
	return st, json.Unmarshal(data, &st)
}

// cityWard is one ward as the city's GET /v1/wards shows it.
type cityWard struct {
	Ward          string            `json:"ward"`
	Connected     bool              `json:"connected"`
	HighWater     map[string]uint64 `json:"high_water"`
	PullCursor    uint64            `json:"pull_cursor"`
	PartitionHead uint64            `json:"partition_head"`
}

func (e *cityEnv) cityWards(member string) (map[string]cityWard, error) {
	p := e.members[member]
	if p == nil {
		return nil, fmt.Errorf("no member %s", member)
	}
	code, body := e.call(e.admin, "GET", p.url+"/v1/wards", nil)
	if code != 200 {
		return nil, fmt.Errorf("GET /v1/wards on %s: HTTP %d %s", member, code, body)
	}
	var v struct {
		Items []cityWard `json:"items"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	out := map[string]cityWard{}
	for _, w := range v.Items {
		out[w.Ward] = w
	}
	return out, nil
}

// fullDossier is a dossier with its history, as GET /v1/dossiers/{id}
// shows it on a ward and on a city member.
type fullDossier struct {
	ID        string            `json:"id"`
	Ward      string            `json:"ward"`
	Status    string            `json:"status"`
	StateHash string            `json:"state_hash"`
	History   []json.RawMessage `json:"history"`
}

func (w *wardNode) full(id string) (fullDossier, error) {
	code, data, err := w.api.do("GET", "/v1/dossiers/"+id, nil)
	if err != nil || code != 200 {
		return fullDossier{}, fmt.Errorf("GET %s on ward %s: HTTP %d %v %s", id, w.id, code, err, data)
	}
	var d fullDossier
	return d, json.Unmarshal(data, &d)
}

func (e *cityEnv) fullAt(member, id string) (fullDossier, error) {
	code, body := e.call(e.admin, "GET", e.members[member].url+"/v1/dossiers/"+id, nil)
	if code != 200 {
		return fullDossier{}, fmt.Errorf("GET %s on %s: HTTP %d %s", id, member, code, body)
	}
	var d fullDossier
	return d, json.Unmarshal(body, &d)
}

// listedDossier is one item of a dossier listing.
type listedDossier struct {
	ID     string `json:"id"`
	Origin string `json:"origin"`
}

// listItems pages through a listing ({"items": [...], "next_cursor"}).
func listItems(get func(query string) (int, []byte, error), path string) ([]listedDossier, error) {
	var items []listedDossier
	cursor := ""
	for {
		q := path + "?limit=500"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		code, data, err := get(q)
		if err != nil || code != 200 {
			return nil, fmt.Errorf("GET %s: HTTP %d %v %.300s", q, code, err, data)
		}
		var page struct {
			Items []listedDossier `json:"items"`
			Next  *string         `json:"next_cursor"`
		}
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, err
		}
		items = append(items, page.Items...)
		if page.Next == nil || *page.Next == "" {
			return items, nil
		}
		cursor = *page.Next
	}
}

// listAll returns the IDs of a listing.
func listAll(get func(query string) (int, []byte, error), path string) ([]string, error) {
	items, err := listItems(get, path)
	ids := make([]string, 0, len(items))
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids, err
}

// describeListing counts a listing's items by origin, and its repeats.
func describeListing(items []listedDossier) string {
	origins := map[string]int{}
	seen := map[string]bool{}
	repeats := 0
	for _, it := range items {
		origins[it.Origin]++
		if seen[it.ID] {
			repeats++
		}
		seen[it.ID] = true
	}
	return fmt.Sprintf("%d items, %d distinct, by origin %v", len(items), len(items)-repeats, origins)
}

// wardIDs lists every dossier a ward node holds.
func (w *wardNode) wardIDs() ([]string, error) {
	return listAll(func(q string) (int, []byte, error) { return w.api.do("GET", q, nil) }, "/v1/dossiers")
}

// cityWardIDs lists every dossier of ward on member.
func (e *cityEnv) cityWardIDs(member, ward string) ([]string, error) {
	return listAll(func(q string) (int, []byte, error) {
		code, body := e.call(e.admin, "GET", e.members[member].url+q, nil)
		return code, body, nil
	}, "/v1/wards/"+ward+"/dossiers")
}

// portalFor submits a portal dossier for ward through member.
func (e *cityEnv) portalFor(member, ward string, i int) (portalDossier, error) {
	p := e.members[member]
	if p == nil {
		return portalDossier{}, fmt.Errorf("no member %s", member)
	}
	body := map[string]any{"procedure": "birth-registration", "ward": ward,
		"applicant": map[string]string{"name": fmt.Sprintf("Công dân cổng %d", i), "id_number": fmt.Sprintf("%012d", 79_300_000_000+i)}}
	code, data := e.call(e.portal, "POST", p.url+"/v1/dossiers", body)
	if code != 201 {
		return portalDossier{}, fmt.Errorf("portal via %s: HTTP %d %.300s", member, code, data)
	}
	var d portalDossier
	return d, json.Unmarshal(data, &d)
}

// proxyTo starts a fault proxy in front of a city member's QUIC address; it
// runs until the test ends.
func (e *cityEnv) proxyTo(ctx context.Context, member string, seed int64) *faultproxy.Proxy {
	e.t.Helper()
	p, err := faultproxy.New("127.0.0.1:0", e.quic[member], seed, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			e.t.Errorf("faultproxy to %s: %v", member, err)
		}
	}()
	e.t.Cleanup(func() { p.Close(); <-done })
	return p
}

// createMany makes n dossiers on a ward with workers concurrent clients;
// each create is one op. extra adds fields to make ops bigger.
func createMany(w *wardNode, n, workers int, extra map[string]string) ([]string, error) {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		ids   []string
		first error
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				body := map[string]any{"procedure": "certified-copy", "fields": extra,
					"applicant": map[string]string{"name": fmt.Sprintf("Người %d", i), "id_number": fmt.Sprintf("%012d", 79_200_000_000+i)}}
				code, data, err := w.api.do("POST", "/v1/dossiers", body)
				mu.Lock()
				if err != nil || code != 201 {
					if first == nil {
						first = fmt.Errorf("create %d on %s: HTTP %d %v %.300s", i, w.id, code, err, data)
					}
					mu.Unlock()
					return
				}
				var d syncedDossier
				json.Unmarshal(data, &d)
				ids = append(ids, d.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ids, first
}

// sameEverywhere checks that every dossier in ids has, on every member,
// the ward's state hash and history length (no event lost or applied
// twice). It checks with a few concurrent clients and retries each dossier
// for up to patience (a follower may still be applying).
func (e *cityEnv) sameEverywhere(w *wardNode, ids []string, members []string, patience time.Duration) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	check := func(id string) error {
		deadline := time.Now().Add(patience)
		wd, err := w.full(id)
		if err != nil {
			return err
		}
		for _, m := range members {
			for {
				cd, err := e.fullAt(m, id)
				if err == nil && cd.StateHash == wd.StateHash && len(cd.History) == len(wd.History) {
					break
				}
				if time.Now().After(deadline) {
					if err != nil {
						return fmt.Errorf("dossier %s on %s: %v", id, m, err)
					}
					return fmt.Errorf("dossier %s: %s has status %s, hash %s, %d events; ward %s has %s, %s, %d events",
						id, m, cd.Status, cd.StateHash, len(cd.History), w.id, wd.Status, wd.StateHash, len(wd.History))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return nil
	}
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) {
					return
				}
				if err := check(ids[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(len(ids)))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// TestSyncRoughNetwork: 3 wards write through their own fault proxies (5 %
// loss, 5 % reordering, 1 % duplicates, jitter, links flapping every few
// hundred ms) while the city leader is SIGKILLed and later restarted, and a
// portal submission is made. Once the network heals, every ward's outbox
// drains, every dossier has the same state hash and the same number of
// events on the ward and on all 3 members, and the city's high-water mark
// of each ward's origin equals the ward's last seq: no op lost, none
// applied twice.
func TestSyncRoughNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	seed := chaosSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x726f756768))
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	all := schema.DefaultWards().All()
	if len(all) < 3 {
		t.Fatalf("the default registry has %d wards; the test needs 3", len(all))
	}
	faults := faultproxy.Faults{Drop: 0.05, Reorder: 0.05, Duplicate: 0.01, Jitter: 5 * time.Millisecond}
	type chaosWard struct {
		*wardNode
		mu      sync.Mutex
		created []string
		writes  int
	}
	var wards []*chaosWard
	var proxies []*faultproxy.Proxy
	for i := range 3 {
		w := &chaosWard{wardNode: e.initWard(fmt.Sprintf("r%d", i+1), all[i].Code)}
		var addrs []string
		for j := range ids {
			// Each ward tries a different member first.
			m := ids[(i+j)%len(ids)]
			p := e.proxyTo(ctx, m, int64(seed)+int64(i*len(ids)+j)+1)
			p.Set(faults)
			proxies = append(proxies, p)
			addrs = append(addrs, p.Addr())
		}
		e.runWard(w.wardNode, strings.Join(addrs, ","))
		wards = append(wards, w)
	}
	e.logsOnFailure(wards[0].wardNode, wards[1].wardNode, wards[2].wardNode)
	// Every ward has been connected once before the chaos starts, so the
	// city knows its origin.
	for _, w := range wards {
		eventually(t, w.id+" connected", 30*time.Second, func() error {
			st, err := w.status()
			if err == nil && !st.Connected {
				err = fmt.Errorf("%+v", st)
			}
			return err
		})
	}
	flapCtx, stopFlap := context.WithCancel(ctx)
	var flapping sync.WaitGroup
	for _, p := range proxies {
		up := time.Duration(300+rng.IntN(200)) * time.Millisecond
		down := time.Duration(200+rng.IntN(200)) * time.Millisecond
		flapping.Add(1)
		go func() { defer flapping.Done(); p.Flap(flapCtx, up, down) }()
	}

	// The write phase: every ward creates dossiers and moves them through
	// the workflow on two concurrent clients.
	const writePhase = 10 * time.Second
	stopWrites := make(chan struct{})
	var writers sync.WaitGroup
	var writeErrs atomic.Int64
	for wi, w := range wards {
		for k := range 2 {
			wrng := rand.New(rand.NewPCG(seed, uint64(wi*10+k)))
			writers.Add(1)
			go func() {
				defer writers.Done()
				do := func(method, path string, body any, want int) []byte {
					code, data, err := w.api.do(method, path, body)
					if err != nil || code != want {
						if writeErrs.Add(1) <= 5 {
							t.Errorf("%s %s on %s: HTTP %d %v %s", method, path, w.id, code, err, data)
						}
						return nil
					}
					return data
				}
				for n := 0; ; n++ {
					select {
					case <-stopWrites:
						return
					default:
					}
					data := do("POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
						"applicant": map[string]string{"name": fmt.Sprintf("Người %s-%d-%d", w.id, k, n), "id_number": fmt.Sprintf("%012d", 79_400_000_000+wi*1_000_000+k*100_000+n)}}, 201)
					if data == nil {
						return
					}
					var d syncedDossier
					json.Unmarshal(data, &d)
					path := "/v1/dossiers/" + d.ID + "/transitions"
					ops := 1
					steps := [][]string{{"in_review"}, {"approved", "rejected", "supplement_requested"}, {"returned"}}
					for _, step := range steps[:wrng.IntN(len(steps)+1)] {
						to := step[wrng.IntN(len(step))]
						if do("POST", path, map[string]string{"to": to}, 200) == nil {
							return
						}
						ops++
						if to == "supplement_requested" {
							break
						}
					}
					w.mu.Lock()
					w.created = append(w.created, d.ID)
					w.writes += ops
					w.mu.Unlock()
					time.Sleep(time.Duration(5+wrng.IntN(25)) * time.Millisecond)
				}
			}()
		}
	}

	// A timeline of each ward's link, for the log.
	var timeline []string
	var tlMu sync.Mutex
	tlDone := make(chan struct{})
	go func() {
		defer close(tlDone)
		t0 := time.Now()
		for {
			select {
			case <-stopWrites:
				return
			case <-time.After(time.Second):
			}
			line := fmt.Sprintf("%4.1fs", time.Since(t0).Seconds())
			for _, w := range wards {
				st, _ := w.status()
				line += fmt.Sprintf(" | %s@%s %d/%d", w.id, st.CityMember, st.PushAcked, st.LastSeq)
			}
			tlMu.Lock()
			timeline = append(timeline, line)
			tlMu.Unlock()
		}
	}()

	// Meanwhile: kill the leader once, submit at the portal while it is
	// down, and bring it back.
	start := time.Now()
	time.Sleep(3 * time.Second)
	leader := e.waitLeader("c1", "")
	links := func(when string) {
		var parts []string
		for _, w := range wards {
			st, err := w.status()
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, fmt.Sprintf("%s connected=%v member=%q acked=%d/%d err=%q", w.id, st.Connected, st.CityMember, st.PushAcked, st.LastSeq, st.LastError))
		}
		t.Logf("links %s: %s", when, strings.Join(parts, "; "))
	}
	links("before the kill")
	e.members[leader].kill9()
	killedAt := time.Since(start)
	var alive []string
	for _, id := range ids {
		if id != leader {
			alive = append(alive, id)
		}
	}
	newLeader := e.waitLeader(alive[0], leader)
	t.Logf("killed leader %s at %v; new leader %s at %v", leader, killedAt.Round(time.Millisecond), newLeader, time.Since(start).Round(time.Millisecond))
	portalWard := wards[1]
	var portal portalDossier
	portalFailures := 0 // a failed attempt might still have been committed
	eventually(t, "portal submission while the old leader is down", 30*time.Second, func() error {
		var err error
		if portal, err = e.portalFor(alive[1], portalWard.ward, 1); err != nil {
			portalFailures++
			t.Logf("portal attempt failed: %v", err)
		}
		return err
	})
	t.Logf("portal dossier %s for %s submitted through %s at %v", portal.ID, portalWard.id, alive[1], time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Until(start.Add(6 * time.Second)))
	e.start(leader, "--bootstrap", boot)
	t.Logf("restarted %s at %v", leader, time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Until(start.Add(writePhase)))
	close(stopWrites)
	writers.Wait()
	<-tlDone
	links("at the end of the write phase")
	t.Logf("pushes acked/written during the write phase:\n%s", strings.Join(timeline, "\n"))
	if writeErrs.Load() > 0 {
		t.Fatalf("%d ward writes failed (the ward must work whatever the link does)", writeErrs.Load())
	}

	// The network heals.
	stopFlap()
	flapping.Wait()
	var stats faultproxy.Stats
	add := func(sum *faultproxy.DirStats, d faultproxy.DirStats) {
		sum.Received += d.Received
		sum.Forwarded += d.Forwarded
		sum.Dropped += d.Dropped
		sum.CutDropped += d.CutDropped
		sum.Duplicated += d.Duplicated
		sum.Reordered += d.Reordered
	}
	for _, p := range proxies {
		s := p.Stats()
		add(&stats.ToUpstream, s.ToUpstream)
		add(&stats.ToClient, s.ToClient)
		p.Set(faultproxy.Faults{})
	}
	healed := time.Now()
	t.Logf("faults while writing: to city %+v; to wards %+v", stats.ToUpstream, stats.ToClient)
	if stats.ToUpstream.Dropped == 0 || stats.ToUpstream.CutDropped == 0 || stats.ToClient.Reordered == 0 {
		t.Fatalf("the proxies injected no faults: %+v", stats)
	}

	// Every ward drains its outbox, and the city holds exactly its ops.
	for _, w := range wards {
		var st syncStatus
		eventually(t, w.id+" outbox drained", 45*time.Second, func() error {
			var err error
			st, err = w.status()
			if err == nil && (st.OutboxDepth != 0 || st.PushAcked != st.LastSeq) {
				err = fmt.Errorf("%+v", st)
			}
			return err
		})
		w.mu.Lock()
		t.Logf("ward %s (%s): %d dossiers, %d ops written, last_seq %d, drained %v after the network healed",
			w.id, w.ward, len(w.created), w.writes, st.LastSeq, time.Since(healed).Round(time.Millisecond))
		if st.LastSeq != uint64(w.writes) {
			t.Errorf("ward %s: last_seq %d, but %d ops were written", w.id, st.LastSeq, w.writes)
		}
		w.mu.Unlock()
		for _, m := range ids {
			eventually(t, "high-water of "+w.id+" on "+m, 30*time.Second, func() error {
				views, err := e.cityWards(m)
				if err != nil {
					return err
				}
				if hw := views[w.ward].HighWater[w.id]; hw != st.LastSeq {
					return fmt.Errorf("city high-water %d, ward last_seq %d", hw, st.LastSeq)
				}
				return nil
			})
		}
	}
	// The portal submission made during the chaos reached its ward.
	eventually(t, "portal dossier on "+portalWard.id, 30*time.Second, func() error {
		_, err := portalWard.full(portal.ID)
		return err
	})
	// Every dossier, every replica: same state, same number of events.
	for _, w := range wards {
		w.mu.Lock()
		created := append([]string(nil), w.created...)
		w.mu.Unlock()
		if w == portalWard {
			created = append(created, portal.ID)
		}
		if err := e.sameEverywhere(w.wardNode, created, ids, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		// And the city holds no dossier of the ward that the ward lacks.
		for _, m := range ids {
			cityIDs, err := e.cityWardIDs(m, w.ward)
			if err != nil {
				t.Fatal(err)
			}
			if len(cityIDs) != len(created) {
				t.Fatalf("%s holds %d dossiers of ward %s; the ward made %d (and %d portal attempts failed)", m, len(cityIDs), w.ward, len(created), portalFailures)
			}
		}
	}
	t.Logf("converged %v after the network healed", time.Since(healed).Round(time.Millisecond))
}

// setCut cuts (or restores) every proxy's link.
func setCut(ps []*faultproxy.Proxy, down bool) {
	for _, p := range ps {
		p.Cut(down)
	}
}

// proxiesFor puts one fault proxy (no faults) in front of every member and
// returns them with the --city list that goes through them.
func (e *cityEnv) proxiesFor(ctx context.Context, members []string, seed int64) ([]*faultproxy.Proxy, string) {
	var ps []*faultproxy.Proxy
	var addrs []string
	for i, m := range members {
		p := e.proxyTo(ctx, m, seed+int64(i))
		ps = append(ps, p)
		addrs = append(addrs, p.Addr())
	}
	return ps, strings.Join(addrs, ",")
}

// sample picks up to n of ids, spread over the whole list.
func sample(ids []string, n int) []string {
	if len(ids) <= n {
		return ids
	}
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, ids[i*len(ids)/n])
	}
	return append(out, ids[len(ids)-1])
}

// TestSyncResumesAfterKill9MidPush: a ward piles up 10,000 ops (~20 MB)
// offline, the link comes up, and the ward is SIGKILLed while its outbox is
// being pushed (some batches acknowledged, others not). After a restart it
// resumes from its durable push cursor; the city ends up with exactly the
// ward's ops and the same dossiers.
func TestSyncResumesAfterKill9MidPush(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	seed := chaosSeed(t)
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, city := e.proxiesFor(ctx, ids, int64(seed))
	w := e.initWard("k1", testWard(t))
	setCut(ps, true) // offline
	e.runWard(w, city)
	e.logsOnFailure(w)

	// Fewer but bigger ops than 20,000 bare creates (cheaper to make on a
	// busy machine): ~2 KB of form fields each, so the outbox is ~20 MB and
	// goes up in a few dozen batches.
	form := map[string]string{}
	for _, k := range []string{"ghi_chu", "dia_chi_cu", "giay_to_kem_theo"} {
		form[k] = strings.Repeat("giấy tờ kèm theo bản sao ", 28)
	}
	var created []string
	var kill syncStatus
	for round, n := 1, 10_000; ; round, n = round+1, n*2 {
		start := time.Now()
		more, err := createMany(w, n, 16, form)
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, more...)
		st, err := w.status()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d ops made offline in %v; outbox_depth %d, push_acked %d, last_seq %d",
			round, n, time.Since(start).Round(time.Millisecond), st.OutboxDepth, st.PushAcked, st.LastSeq)
		if st.Connected || st.OutboxDepth < uint64(n) {
			t.Fatalf("offline status: %+v", st)
		}
		// The link comes up; kill the ward as soon as a first batch is
		// acknowledged.
		setCut(ps, false)
		up := time.Now()
		for {
			if st, err = w.status(); err != nil {
				t.Fatal(err)
			}
			if st.PushAcked > kill.PushAcked || st.OutboxDepth == 0 {
				break
			}
			if time.Since(up) > 60*time.Second {
				t.Fatalf("nothing pushed within 60s of the link coming up: %+v", st)
			}
		}
		w.proc.kill9()
		t.Logf("round %d: SIGKILL %v after the link came up, at push_acked %d of last_seq %d (outbox_depth %d)",
			round, time.Since(up).Round(time.Millisecond), st.PushAcked, st.LastSeq, st.OutboxDepth)
		setCut(ps, true)
		e.runWard(w, city)
		if st.OutboxDepth > 0 && st.PushAcked > kill.PushAcked {
			kill = st
			break
		}
		if round == 3 {
			t.Fatalf("the push was never caught mid-way: %+v", st)
		}
		kill = st
		t.Logf("round %d: the push finished before the kill; again with twice the ops", round)
	}
	if kill.PushAcked >= kill.LastSeq {
		t.Fatalf("the kill did not land mid-push: %+v", kill)
	}
	// What the restarted ward holds durably: its cursor, somewhere in the
	// middle of its log.
	after, err := w.status()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the restart (link still down): push_acked %d, last_seq %d, outbox_depth %d", after.PushAcked, after.LastSeq, after.OutboxDepth)
	if after.LastSeq != kill.LastSeq || after.PushAcked < kill.PushAcked {
		t.Fatalf("the restarted ward's cursors went back: at the kill %+v, after the restart %+v", kill, after)
	}
	if after.PushAcked >= after.LastSeq {
		t.Logf("note: the last batches were acknowledged between the status read and the SIGKILL")
	}
	// The link comes up again: the ward resumes and drains.
	setCut(ps, false)
	resumed := time.Now()
	eventually(t, "outbox drained after the restart", 45*time.Second, func() error {
		st, err := w.status()
		if err == nil && (st.OutboxDepth != 0 || st.PushAcked != st.LastSeq || !st.Connected) {
			err = fmt.Errorf("%+v", st)
		}
		return err
	})
	t.Logf("drained %v after the link came back", time.Since(resumed).Round(time.Millisecond))
	for _, m := range ids {
		eventually(t, "high-water on "+m, 30*time.Second, func() error {
			views, err := e.cityWards(m)
			if err != nil {
				return err
			}
			if hw := views[w.ward].HighWater[w.id]; hw != kill.LastSeq {
				return fmt.Errorf("city high-water %d, ward last_seq %d", hw, kill.LastSeq)
			}
			return nil
		})
	}
	if uint64(len(created)) != kill.LastSeq {
		t.Fatalf("%d creates acknowledged, but last_seq is %d", len(created), kill.LastSeq)
	}
	cityIDs, err := e.cityWardIDs("c2", w.ward)
	if err != nil {
		t.Fatal(err)
	}
	if len(cityIDs) != len(created) {
		t.Fatalf("the city holds %d dossiers of the ward; the ward made %d", len(cityIDs), len(created))
	}
	if err := e.sameEverywhere(w, sample(created, 100), ids, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestSyncResumesAfterKill9MidPull: the city holds a large partition for a
// ward (a first node's ops and portal submissions); a fresh node of the same
// ward starts pulling it and is SIGKILLed part-way. After a restart it
// resumes from its durable pull cursor and ends up with every dossier of
// its ward, in the same state as the city.
func TestSyncResumesAfterKill9MidPull(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	seed := chaosSeed(t)
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ward := testWard(t)

	// The partition: a first node of the ward makes dossiers online (its
	// ops reach the city in many small batches) while the portal takes
	// submissions for the same ward.
	first := e.initWard("p1", ward)
	e.runWard(first, e.cityQUIC(ids...))
	const (
		wardDossiers   = 5_000
		portalDossiers = 200
	)
	var (
		portalErr    error
		portalFailed []string // attempts that failed and were retried
		portalWG     sync.WaitGroup
		portalMu     sync.Mutex
		next         atomic.Int64
	)
	start := time.Now()
	for k := range 4 {
		portalWG.Add(1)
		go func() {
			defer portalWG.Done()
			for {
				i := int(next.Add(1))
				if i > portalDossiers {
					return
				}
				var err error
				for try := 0; try < 50; try++ {
					if _, err = e.portalFor(ids[(i+k)%len(ids)], ward, i); err == nil {
						break
					}
					portalMu.Lock()
					portalFailed = append(portalFailed, err.Error())
					portalMu.Unlock()
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					portalMu.Lock()
					portalErr = err
					portalMu.Unlock()
					return
				}
			}
		}()
	}
	if _, err := createMany(first, wardDossiers, 16, nil); err != nil {
		t.Fatal(err)
	}
	portalWG.Wait()
	if portalErr != nil {
		t.Fatal(portalErr)
	}
	var st syncStatus
	eventually(t, "first node's outbox drained", 60*time.Second, func() error {
		var err error
		st, err = first.status()
		if err == nil && st.OutboxDepth != 0 {
			err = fmt.Errorf("%+v", st)
		}
		return err
	})
	first.proc.stop()
	var head uint64
	eventually(t, "partition head", 30*time.Second, func() error {
		views, err := e.cityWards("c1")
		if err != nil {
			return err
		}
		v := views[ward]
		if v.HighWater[first.id] != st.LastSeq {
			return fmt.Errorf("high-water %d of %d", v.HighWater[first.id], st.LastSeq)
		}
		head = v.PartitionHead
		return nil
	})
	cityIDs, err := e.cityWardIDs("c1", ward)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("partition of %s: %d dossiers (%d ops from %s, %d portal), head at commit %d, built in %v",
		ward, len(cityIDs), st.LastSeq, first.id, portalDossiers, head, time.Since(start).Round(time.Millisecond))
	if len(portalFailed) > 0 {
		t.Logf("%d portal attempts failed and were retried: %q", len(portalFailed), portalFailed[:min(len(portalFailed), 5)])
	}
	if len(cityIDs) != wardDossiers+portalDossiers {
		items, _ := listItems(func(q string) (int, []byte, error) {
			code, body := e.call(e.admin, "GET", e.members["c1"].url+q, nil)
			return code, body, nil
		}, "/v1/wards/"+ward+"/dossiers")
		t.Fatalf("the city lists %d dossiers of %s, want %d (%d from %s and %d from the portal): %s; %d portal attempts failed",
			len(cityIDs), ward, wardDossiers+portalDossiers, wardDossiers, first.id, portalDossiers, describeListing(items), len(portalFailed))
	}

	// A fresh node of the same ward pulls it all, and is killed part-way.
	ps, city := e.proxiesFor(ctx, ids, int64(seed))
	fresh := e.initWard("p2", ward)
	e.logsOnFailure(first, fresh)
	e.runWard(fresh, city)
	up := time.Now()
	for {
		if st, err = fresh.status(); err != nil {
			t.Fatal(err)
		}
		// A third of the way in: far enough that re-pulling from zero
		// could not pass for resuming.
		if st.PullCursor >= head/3 {
			break
		}
		if time.Since(up) > 60*time.Second {
			t.Fatalf("the fresh node pulled nothing within 60s: %+v", st)
		}
	}
	fresh.proc.kill9()
	t.Logf("SIGKILL %v after start, at pull_cursor %d of head %d", time.Since(up).Round(time.Millisecond), st.PullCursor, head)
	if st.PullCursor == 0 || st.PullCursor >= head {
		t.Fatalf("the kill did not land mid-pull: pull_cursor %d, head %d", st.PullCursor, head)
	}
	// Restarted with the link down: it starts from its durable cursor.
	setCut(ps, true)
	e.runWard(fresh, city)
	after, err := fresh.status()
	if err != nil {
		t.Fatal(err)
	}
	before, err := fresh.wardIDs()
	if err != nil {
		t.Fatal(err)
	}
	held := before
	t.Logf("after the restart (link down): pull_cursor %d, %d of %d dossiers held", after.PullCursor, len(held), len(cityIDs))
	if after.PullCursor < st.PullCursor || after.PullCursor == 0 {
		t.Fatalf("the durable pull cursor is %d; the node had reported %d before the kill", after.PullCursor, st.PullCursor)
	}
	if after.PullCursor >= head || len(held) >= len(cityIDs) {
		t.Fatalf("the restarted node holds the whole partition (cursor %d, head %d): the kill landed after the pull", after.PullCursor, head)
	}
	// Ops the city sends from now on: the members' counters, once the
	// killed node's old sessions have stopped sending into the void.
	var sentBefore float64
	eventually(t, "members' pulled-ops counters settle", 30*time.Second, func() error {
		a, err := e.pulledOps(ids)
		if err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		b, err := e.pulledOps(ids)
		if err == nil && a != b {
			err = fmt.Errorf("still moving: %v then %v", a, b)
		}
		sentBefore = b
		return err
	})
	setCut(ps, false)
	resumed := time.Now()
	eventually(t, "fresh node caught up", 45*time.Second, func() error {
		st, err := fresh.status()
		if err == nil && st.PullCursor < head {
			err = fmt.Errorf("%+v, head %d", st, head)
		}
		return err
	})
	if held, err = fresh.wardIDs(); err != nil {
		t.Fatal(err)
	}
	t.Logf("caught up %v after the link came back; %d dossiers held", time.Since(resumed).Round(time.Millisecond), len(held))
	sentAfter, err := e.pulledOps(ids)
	if err != nil {
		t.Fatal(err)
	}
	// Every dossier here is one create op. Resuming from the cursor re-sends
	// at most what the cursor did not cover (one pushed batch at most); a
	// pull from zero would send the whole partition again.
	total, resent := len(cityIDs), int(sentAfter-sentBefore)
	t.Logf("the city sent %d ops after the restart (partition %d ops, %d already held)", resent, total, len(before))
	if resent > total-len(before)+2000 || resent >= total {
		t.Fatalf("after the restart the city sent %d ops of a %d-op partition to a node that held %d: it did not resume from its cursor", resent, total, len(before))
	}
	if len(held) != len(cityIDs) {
		t.Fatalf("the fresh node holds %d dossiers; the city %d", len(held), len(cityIDs))
	}
	if err := e.sameEverywhere(fresh, sample(cityIDs, 100), []string{"c1"}, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if st, _ := fresh.status(); st.LastSeq != 0 || st.OutboxDepth != 0 {
		t.Fatalf("the fresh node made ops of its own while pulling: %+v", st)
	}
}

// pulledOps sums the members' wardsync_city_pulled_ops_total: ops sent to
// wards.
func (e *cityEnv) pulledOps(members []string) (float64, error) {
	var sum float64
	for _, m := range members {
		code, body := e.call(e.admin, "GET", e.members[m].url+"/metrics", nil)
		if code != 200 {
			return 0, fmt.Errorf("GET /metrics on %s: HTTP %d", m, code)
		}
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(line, "wardsync_city_pulled_ops_total "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					return 0, err
				}
				sum += f
			}
		}
	}
	return sum, nil
}

// logsOnFailure logs the tail of every process's stderr if the test fails
// (or always, with WARDSYNC_CHAOS_LOGS set).
func (e *cityEnv) logsOnFailure(wards ...*wardNode) {
	e.t.Cleanup(func() {
		if !e.t.Failed() && os.Getenv("WARDSYNC_CHAOS_LOGS") == "" {
			return
		}
		tail := func(s string) string {
			if len(s) > 6000 {
				return "…" + s[len(s)-6000:]
			}
			return s
		}
		for _, w := range wards {
			if w.proc != nil {
				e.t.Logf("ward %s stderr:\n%s", w.id, tail(w.proc.stderr.String()))
			}
		}
		for id, p := range e.members {
			e.t.Logf("member %s stderr:\n%s", id, tail(p.stderr.String()))
		}
	})
}
