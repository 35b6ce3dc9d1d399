package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// diskWindow is a time a node's disk was full: from the moment the filler
// filled it to the moment the filler was removed (to is zero meanwhile).
type diskWindow struct {
	node     string
	from, to time.Time
}

// fullAt reports whether node's disk was full at t, or had been until a
// moment before: a process that touches a page its full disk cannot back
// dies at once, but the exit may be reaped just after the filler is gone.
func (d *driver) fullAt(node string, t time.Time) bool {
	const grace = time.Second
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.windows {
		if w.node == node && !t.Before(w.from) && (w.to.IsZero() || !t.After(w.to.Add(grace))) {
			return true
		}
	}
	return false
}

// errSkip says a fault could not be injected now (no target free, the
// kind not available); it is not counted.
type errSkip struct{ why string }

func (e errSkip) Error() string { return e.why }

func (d *driver) count(kind string) {
	d.mu.Lock()
	d.sum.Faults[kind]++
	d.mu.Unlock()
}

// runEvent waits for ev's time, injects it, holds it for ev.Dur (or until
// ctx ends: everything heals at the end of the fault phase) and heals it.
func (d *driver) runEvent(ctx context.Context, start time.Time, ev scheduled) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(start.Add(ev.At))):
	}
	if ctx.Err() != nil {
		return
	}
	rng := rand.New(rand.NewPCG(ev.Pick, 0x6661756c74))
	heal, desc, err := d.inject(ctx, ev, rng)
	var skip errSkip
	switch {
	case errors.As(err, &skip):
		d.event("%s not injected: %s", ev.Kind, skip.why)
		return
	case err != nil:
		d.event("%s not injected: %v", ev.Kind, err)
		return
	}
	if ev.Kind == KindLeaseMove {
		// desc starts with the kind it turned out to be.
		kind, rest, _ := strings.Cut(desc, ": ")
		d.count(kind)
		d.event("inject %s (%s): %s", kind, ev.Kind, rest)
		return
	}
	d.count(ev.Kind)
	d.event("inject %s: %s", ev.Kind, desc)
	if heal == nil {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(ev.Dur):
	}
	heal()
	d.event("healed %s: %s", ev.Kind, desc)
}

// inject starts one fault and returns how to heal it (nil: nothing to heal).
func (d *driver) inject(ctx context.Context, ev scheduled, rng *rand.Rand) (func(), string, error) {
	switch ev.Kind {
	case KindWardPartition, KindWardLinkCut, KindWardLinkLossy:
		return d.injectLink(ev.Kind, rng)
	case KindCityMinority, KindCityMajority, KindCityBridge, KindOneWayCut:
		return d.injectMesh(ctx, ev.Kind, rng)
	case KindKill:
		return d.injectKill(ctx, rng)
	case KindPause:
		return d.injectPause(ctx, rng)
	case KindClockSkew:
		return d.injectClock(ctx, rng)
	case KindDiskFullWard, KindDiskFullMember:
		return d.injectDiskFull(ctx, ev.Kind)
	case KindLeaseMove:
		kind, desc, err := d.leaseMove(ctx, rng)
		return nil, kind + ": " + desc, err
	case KindSplitBrain:
		return d.splitBrain(ctx, rng)
	case KindMemberReplace:
		desc, err := d.replaceMember(ctx, rng)
		return nil, desc, err
	}
	return nil, "", fmt.Errorf("unknown fault kind %q", ev.Kind)
}

// ---- network ----

func (d *driver) injectLink(kind string, rng *rand.Rand) (func(), string, error) {
	o := d.offices[d.order[rng.IntN(len(d.order))]]
	o.mu.Lock()
	defer o.mu.Unlock()
	slots := []int{0, 1, 2}
	desc := fmt.Sprintf("%s ↔ every member cut", o.id)
	switch kind {
	case KindWardLinkCut:
		rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
		slots = slots[:1+rng.IntN(2)]
		var names []string
		for _, s := range slots {
			names = append(names, d.slotName(s))
		}
		desc = fmt.Sprintf("%s ↔ %s cut", o.id, strings.Join(names, ", "))
	case KindWardLinkLossy:
		desc = fmt.Sprintf("%s's links lossy (10%% loss, 5%% reordering, 2%% duplicates, 20 ms jitter)", o.id)
	}
	for _, s := range slots {
		l := o.links[s]
		if kind == KindWardLinkLossy {
			l.lossy++
		} else {
			l.cuts++
		}
		l.apply()
	}
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, s := range slots {
			// The link in the slot now (a replaced member's link is a new
			// one that took the old one's counts).
			l := o.links[s]
			if kind == KindWardLinkLossy {
				l.lossy = max(0, l.lossy-1)
			} else {
				l.cuts = max(0, l.cuts-1)
			}
			l.apply()
		}
	}, desc, nil
}

func (d *driver) slotName(s int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.slots[s].id
}

// memberIDs returns the current members' IDs, and the leader's index in
// them (-1 if unknown).
func (d *driver) memberIDs(ctx context.Context) ([]string, int) {
	var ids []string
	for _, m := range d.currentMembers() {
		ids = append(ids, m.id)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	l, err := d.leader(cctx)
	if err != nil {
		return ids, -1
	}
	return ids, slices.Index(ids, l)
}

func (d *driver) injectMesh(ctx context.Context, kind string, rng *rand.Rand) (func(), string, error) {
	ids, leader := d.memberIDs(ctx)
	// The member the fault is about: the leader half the time.
	x := rng.IntN(len(ids))
	if leader >= 0 && rng.IntN(2) == 0 {
		x = leader
	}
	role := ""
	if x == leader {
		role = " (the leader)"
	}
	var pairs [][2]string // directed pairs cut
	var desc string
	others := slices.Delete(slices.Clone(ids), x, x+1)
	switch kind {
	case KindCityMinority:
		for _, o := range others {
			pairs = append(pairs, [2]string{ids[x], o}, [2]string{o, ids[x]})
		}
		desc = fmt.Sprintf("%s%s cut off from %s", ids[x], role, strings.Join(others, " and "))
	case KindCityMajority:
		for i, a := range ids {
			for j, b := range ids {
				if i != j {
					pairs = append(pairs, [2]string{a, b})
				}
			}
		}
		desc = fmt.Sprintf("%s each cut off from the others: no majority", strings.Join(ids, ", "))
	case KindCityBridge:
		pairs = append(pairs, [2]string{others[0], others[1]}, [2]string{others[1], others[0]})
		desc = fmt.Sprintf("%s and %s cut from each other, both reach %s%s", others[0], others[1], ids[x], role)
	case KindOneWayCut:
		if rng.IntN(2) == 0 {
			for _, o := range others {
				pairs = append(pairs, [2]string{ids[x], o})
			}
			desc = fmt.Sprintf("%s%s → %s dropped (their datagrams still reach it)", ids[x], role, strings.Join(others, ", "))
		} else {
			for _, o := range others {
				pairs = append(pairs, [2]string{o, ids[x]})
			}
			desc = fmt.Sprintf("%s → %s%s dropped (its datagrams still reach them)", strings.Join(others, ", "), ids[x], role)
		}
	}
	for _, p := range pairs {
		d.mesh.cut(p[0], p[1])
	}
	return func() {
		for _, p := range pairs {
			d.mesh.uncut(p[0], p[1])
		}
	}, desc, nil
}

// ---- processes ----

// tryHold takes p for a fault if no other fault holds it and it is up.
func tryHold(p *proc) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold > 0 || p.retired || !p.runningLocked() {
		return false
	}
	p.hold++
	return true
}

func release(p *proc) {
	p.mu.Lock()
	p.hold--
	p.mu.Unlock()
}

// pickProc holds a process for a fault: any process of the run (the
// leader a third of the time), or one of only.
func (d *driver) pickProc(ctx context.Context, rng *rand.Rand, only []*proc) (*proc, string, error) {
	cands := only
	if cands == nil {
		for _, m := range d.currentMembers() {
			cands = append(cands, m.p)
		}
		for _, id := range d.order {
			cands = append(cands, d.offices[id].p)
		}
	}
	if only == nil && rng.IntN(3) == 0 {
		ids, leader := d.memberIDs(ctx)
		if leader >= 0 {
			for _, m := range d.currentMembers() {
				if m.id == ids[leader] && tryHold(m.p) {
					return m.p, " (the leader)", nil
				}
			}
		}
	}
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	for _, p := range cands {
		if tryHold(p) {
			return p, "", nil
		}
	}
	return nil, "", errSkip{"no process free for it"}
}

func (d *driver) injectKill(ctx context.Context, rng *rand.Rand) (func(), string, error) {
	p, role, err := d.pickProc(ctx, rng, nil)
	if err != nil {
		return nil, "", err
	}
	if err := p.kill9(); err != nil {
		release(p)
		return nil, "", err
	}
	return func() {
		defer release(p)
		d.restart(p, "after SIGKILL")
	}, "SIGKILL " + p.name + role, nil
}

func (d *driver) injectPause(ctx context.Context, rng *rand.Rand) (func(), string, error) {
	p, role, err := d.pickProc(ctx, rng, nil)
	if err != nil {
		return nil, "", err
	}
	if err := p.pause(); err != nil {
		release(p)
		return nil, "", err
	}
	return func() {
		p.resume()
		release(p)
	}, "SIGSTOP " + p.name + role, nil
}

// restart starts p again, trying a few times; if it does not come up,
// the supervisor keeps trying (and reports it).
func (d *driver) restart(p *proc, why string) {
	var err error
	for try := range 3 {
		if p.running() {
			return
		}
		if err = p.start(d.runCtx(), d.cfg.Bin, d.cfg.Timeout); err == nil {
			d.event("restarted %s %s", p.name, why)
			return
		}
		d.event("restart %d of %s %s failed: %v", try+1, p.name, why, err)
		time.Sleep(time.Second)
	}
}

// clockOffset draws a clock offset: ahead or behind, by 5 s to 10 min.
func clockOffset(rng *rand.Rand) time.Duration {
	mag := []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute}[rng.IntN(4)]
	off := mag/2 + time.Duration(rng.Int64N(int64(mag/2))) // [mag/2, mag)
	off = off.Round(time.Second)
	if rng.IntN(2) == 0 {
		off = -off
	}
	return off
}

func (d *driver) injectClock(ctx context.Context, rng *rand.Rand) (func(), string, error) {
	var only []*proc
	for _, id := range d.order {
		only = append(only, d.offices[id].p)
	}
	p, _, err := d.pickProc(ctx, rng, only)
	if err != nil {
		return nil, "", err
	}
	o := d.offices[p.name]
	from := o.offset
	to := clockOffset(rng)
	back := time.Duration(0)
	if rng.IntN(3) == 0 {
		back = clockOffset(rng) // a second jump, not back to true time
	}
	hard := rng.IntN(2) == 0
	d.restartWithOffset(o, to, hard)
	return func() {
		defer release(p)
		d.restartWithOffset(o, back, hard)
	}, fmt.Sprintf("%s's clock %s → %s, then → %s (restarts, SIGKILL %v)", o.id, from, to, back, hard), nil
}

// restartWithOffset restarts office o with its clock offset by off.
func (d *driver) restartWithOffset(o *office, off time.Duration, hard bool) {
	if hard {
		_ = o.p.kill9()
	} else {
		o.p.stop(10 * time.Second)
	}
	d.mu.Lock()
	o.offset = off
	d.mu.Unlock()
	o.p.mu.Lock()
	o.p.args = d.officeArgs(o)
	o.p.mu.Unlock()
	d.restart(o.p, fmt.Sprintf("with --clock-offset %s", off))
}

// ---- disk full ----

func (d *driver) injectDiskFull(ctx context.Context, kind string) (func(), string, error) {
	var p *proc
	var dir string
	if kind == KindDiskFullWard {
		for _, id := range d.order {
			if o := d.offices[id]; o.disk != "" {
				p, dir = o.p, o.disk
			}
		}
	} else {
		for _, m := range d.currentMembers() {
			if m.disk != "" {
				p, dir = m.p, m.disk
			}
		}
	}
	if p == nil {
		d.mu.Lock()
		why := d.sum.Skipped[kind]
		d.mu.Unlock()
		if why == "" {
			why = "no small disk in this run"
		}
		return nil, "", errSkip{why}
	}
	if !tryHold(p) {
		return nil, "", errSkip{p.name + " is busy with another fault"}
	}
	filler := filepath.Join(dir, "chaos-filler")
	n, err := fill(filler)
	if err != nil {
		release(p)
		os.Remove(filler)
		return nil, "", err
	}
	d.mu.Lock()
	d.windows = append(d.windows, diskWindow{node: p.name, from: time.Now()})
	w := len(d.windows) - 1
	d.mu.Unlock()
	return func() {
		defer release(p)
		d.mu.Lock()
		d.windows[w].to = time.Now()
		d.mu.Unlock()
		if err := os.Remove(filler); err != nil {
			d.note("removing the filler of %s: %v", p.name, err)
		}
		d.afterDiskFull(p)
	}, fmt.Sprintf("%s's disk filled (%d MiB filler)", p.name, n>>20), nil
}

// fill writes zeros to path until the file system is full; it returns
// the bytes written.
func fill(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, size := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			k, err := f.Write(buf)
			n += int64(k)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// afterDiskFull brings p back to health once its disk has room again: a
// process that died meanwhile is restarted; a node whose storage failed
// (it refuses writes until restarted, by design) is restarted.
func (d *driver) afterDiskFull(p *proc) {
	if !p.running() {
		p.mu.Lock()
		expected, err := p.expected, p.err
		p.expected = true
		p.mu.Unlock()
		if !expected {
			d.mu.Lock()
			d.sum.DiskFullCrashes++
			d.mu.Unlock()
			d.event("%s exited while its disk was full (%v):%s", p.name, err, tail(p.log, 6))
		}
		d.restart(p, "after its disk was full")
		return
	}
	code, status, err := d.health(p)
	if err != nil || status != "storage_failed" {
		return // healthy, or not for its storage: nothing to do for the disk
	}
	d.event("%s's storage failed while its disk was full (HTTP %d %s): restarting it", p.name, code, status)
	d.mu.Lock()
	d.sum.DiskFullRestarts++
	d.mu.Unlock()
	p.stop(10 * time.Second)
	d.restart(p, "after its storage failed")
}

// health is GET /healthz of a process: its HTTP status and its "status"
// ("ok", "storage_failed", "no_leader", ...).
func (d *driver) health(p *proc) (int, string, error) {
	hc := officeHTTP(3 * time.Second)
	if strings.HasPrefix(p.url, "https://") {
		hc = d.admin
	}
	api := &apiClient{base: func() string { return p.url }, hc: hc}
	ctx, cancel := context.WithTimeout(d.runCtx(), 3*time.Second)
	defer cancel()
	r, err := api.do(ctx, "GET", "/healthz", nil)
	if err != nil {
		return 0, "", err
	}
	var h struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(r.body, &h)
	return r.code, h.Status, nil
}

// ---- leases ----

// leaseMove fails a backup ward over to the backup office, or hands it
// back (forced one time in five) if the backup holds it. It returns the
// kind to count: failover, handback, handback-forced, or
// lease-move-refused when the city said no (or left it unknown).
func (d *driver) leaseMove(ctx context.Context, rng *rand.Rand) (string, string, error) {
	ward := backupWards[rng.IntN(len(backupWards))]
	mu := d.leaseMu[ward]
	if !mu.TryLock() {
		return "", "", errSkip{"another lease move of " + ward + " is under way"}
	}
	defer mu.Unlock()
	l, client, err := d.leaseNow(ctx, ward, rng)
	if err != nil {
		return "", "", err
	}
	op, force := "failover", false
	if l.Epoch > 0 && l.Active == backupID {
		op, force = "handback", rng.IntN(5) == 0
	}
	kind, desc := d.moveLease(ctx, ward, op, force, l, client, rng)
	return kind, desc, nil
}

// leaseNow reads ward's lease through a member that answers; a pending
// handback is a reason to leave the lease alone now.
func (d *driver) leaseNow(ctx context.Context, ward string, rng *rand.Rand) (leaseJSON, int, error) {
	ms := d.currentMembers()
	client := d.lease.client()
	for _, i := range rng.Perm(len(ms)) {
		if m := ms[i]; m.p.running() {
			if l, ok := d.readLease(ctx, ward, m, client); ok {
				if l.HandbackTo != "" {
					return l, client, errSkip{fmt.Sprintf("%s: a handback to %s is pending", ward, l.HandbackTo)}
				}
				return l, client, nil
			}
		}
	}
	return leaseJSON{}, client, errSkip{"no member answered the lease read of " + ward}
}

// moveLease sends one lease change (read as l) through a random member.
func (d *driver) moveLease(ctx context.Context, ward, op string, force bool, l leaseJSON, client int, rng *rand.Rand) (string, string) {
	ms := d.currentMembers()
	m := ms[rng.IntN(len(ms))]
	res, got, why := d.changeLease(ctx, ward, op, l.Epoch, force, m, client)
	if res != leaseOK {
		return KindLeaseRefused, fmt.Sprintf("%s of %s through %s at epoch %d not done: %.200s", op, ward, m.id, l.Epoch, strings.TrimSpace(why))
	}
	kind := KindFailover
	switch {
	case op == "handback" && force:
		kind = KindForcedHandback
	case op == "handback":
		kind = KindHandback
	}
	desc := fmt.Sprintf("%s of %s through %s at epoch %d → epoch %d, %s", op, ward, m.id, l.Epoch, got.Epoch, orDash(got.Active))
	if got.HandbackTo != "" {
		desc += ", handing back to " + got.HandbackTo
	}
	return kind, desc
}

// splitBrain cuts a backup ward's office off from the city and fails the
// ward over to the backup office meanwhile: both offices serve the ward
// until the cut heals (contradicting decisions become conflicts, which
// the heads resolve).
func (d *driver) splitBrain(ctx context.Context, rng *rand.Rand) (func(), string, error) {
	ward := backupWards[rng.IntN(len(backupWards))]
	mu := d.leaseMu[ward]
	if !mu.TryLock() {
		return nil, "", errSkip{"another lease move of " + ward + " is under way"}
	}
	l, client, err := d.leaseNow(ctx, ward, rng)
	if err == nil && l.Epoch > 0 && l.Active == backupID {
		err = errSkip{"the backup office holds " + ward + " already"}
	}
	if err != nil {
		mu.Unlock()
		return nil, "", err
	}
	o := d.offices[wardNodeID(ward)]
	o.mu.Lock()
	for _, l := range o.links {
		l.cuts++
		l.apply()
	}
	o.mu.Unlock()
	kind, desc := d.moveLease(ctx, ward, "failover", false, l, client, rng)
	d.count(kind)
	return func() {
		o.mu.Lock()
		for _, l := range o.links {
			l.cuts = max(0, l.cuts-1)
			l.apply()
		}
		o.mu.Unlock()
		mu.Unlock()
	}, fmt.Sprintf("%s cut off from the city, and %s (%s)", o.id, desc, kind), nil
}

// ---- member replacement ----

// replaceMember removes a member through the admin API and starts a new
// one, with a new ID and an empty data dir, that joins the city; every
// office's link in the member's slot now goes to the new member.
func (d *driver) replaceMember(ctx context.Context, rng *rand.Rand) (string, error) {
	if !d.replaceMu.TryLock() {
		return "", errSkip{"another member replacement is under way"}
	}
	defer d.replaceMu.Unlock()
	d.mu.Lock()
	if len(d.spares) == 0 {
		d.mu.Unlock()
		return "", errSkip{"no spare member certificate left"}
	}
	d.mu.Unlock()
	ms := d.currentMembers()
	var slot = -1
	for _, i := range rng.Perm(len(ms)) {
		// Not the member on a small disk (the disk-full target), and not
		// one a fault holds.
		if ms[i].disk == "" && tryHold(ms[i].p) {
			slot = i
			break
		}
	}
	if slot < 0 {
		return "", errSkip{"no member free to replace"}
	}
	old := ms[slot]
	defer release(old.p)
	// 1. Remove it, through any member that answers (a follower forwards).
	removed := false
	var lastErr string
	deadline := time.Now().Add(20 * time.Second)
	for !removed && time.Now().Before(deadline) && ctx.Err() == nil {
		for _, m := range ms {
			if !m.p.running() {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := d.cityAPI(m).do(cctx, "DELETE", "/v1/cluster/members/"+old.id, nil)
			cancel()
			if err == nil && (r.code == http.StatusOK || r.code == http.StatusNotFound) {
				removed = true // 404: no such member, an earlier try whose answer was lost did it
				break
			}
			lastErr = errClass(r, err) + " " + string(r.body)
			if d.inConfig(ctx, old.id) == 0 {
				removed = true // an earlier try did it
				break
			}
		}
		if !removed {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if !removed {
		// An answer lost is not a removal refused: ask the configuration,
		// once a leader can say.
		in := -1
		_ = d.eventually(ctx, "the configuration", 30*time.Second, func() error {
			if in = d.inConfig(ctx, old.id); in < 0 {
				return errors.New("no member with a leader answered")
			}
			return nil
		})
		switch in {
		case 0:
			removed = true
		case 1:
			return "", fmt.Errorf("removing %s: %s (it is still a member)", old.id, strings.TrimSpace(lastErr))
		default:
			// Unknown: leave it running; the heal joins it again if it
			// was removed.
			return "", fmt.Errorf("removing %s: %s (outcome unknown)", old.id, strings.TrimSpace(lastErr))
		}
	}
	// 2. Retire it.
	old.p.mu.Lock()
	old.p.retired = true
	old.p.mu.Unlock()
	old.p.stop(10 * time.Second)
	// 3. A fresh member in its slot, joining through another member.
	d.mu.Lock()
	id := d.spares[0]
	d.spares = d.spares[1:]
	d.mu.Unlock()
	nm, err := d.newMember(id)
	if err != nil {
		return "", err
	}
	via := ms[(slot+1)%len(ms)]
	nm.p.args = d.memberArgs(nm, "--join", via.p.url)
	d.mu.Lock()
	d.slots[slot] = nm
	d.mu.Unlock()
	// 4. The offices' links of the slot go to it.
	for _, oid := range d.order {
		o := d.offices[oid]
		o.mu.Lock()
		l := o.links[slot]
		l.p.Close()
		<-l.done
		nl := &link{listen: l.listen, cuts: l.cuts, lossy: l.lossy}
		err := d.openLink(d.runCtx(), o, nl, nm, slot)
		if err == nil {
			o.links[slot] = nl
		}
		o.mu.Unlock()
		if err != nil {
			return "", err
		}
	}
	old.proxy.Close()
	if err := nm.p.start(d.runCtx(), d.cfg.Bin, d.cfg.Timeout); err != nil {
		d.event("starting %s failed (the supervisor retries): %v", nm.id, err)
	}
	return fmt.Sprintf("%s removed; %s (new data dir) joined through %s", old.id, nm.id, via.id), nil
}

// inConfig reports whether the city's configuration holds member id: 1
// yes, 0 no, -1 could not tell. It asks the leader (a member that has just
// joined may not have the configuration yet).
func (d *driver) inConfig(ctx context.Context, id string) int {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	leader, err := d.leader(cctx)
	if err != nil {
		return -1
	}
	for _, m := range d.currentMembers() {
		if m.id != leader || !m.p.running() {
			continue
		}
		var v struct {
			Leader  string `json:"leader"`
			Members []struct {
				ID string `json:"id"`
			} `json:"members"`
		}
		if err := d.cityAPI(m).getJSON(cctx, "/v1/cluster", &v); err != nil || v.Leader != m.id {
			return -1
		}
		for _, x := range v.Members {
			if x.ID == id {
				return 1
			}
		}
		return 0
	}
	return -1
}

// ---- the supervisor ----

// restartState is the supervisor's memory of a process it restarts.
type restartState struct {
	crashes  int // exits with no fault holding it (the first is a violation)
	failures int
	next     time.Time
	reported bool
}

// supervise restarts any process that is down with no fault holding it:
// one that exited by itself (a crash: a violation, unless its disk was
// full) or whose restart after a fault failed.
func (d *driver) supervise(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range d.allProcs() {
			p.mu.Lock()
			down := p.done != nil && !p.runningLocked() && p.hold == 0 && !p.retired
			expected, exitErr, exitedAt := p.expected, p.err, p.exitedAt
			if down {
				p.expected = true // reported once
			}
			p.mu.Unlock()
			if !down {
				continue
			}
			if !expected && d.fullAt(p.name, exitedAt) {
				// It died of its full disk just as the fault healed, before
				// the heal could see it down.
				expected = true
				d.mu.Lock()
				d.sum.DiskFullCrashes++
				d.mu.Unlock()
				d.event("%s exited while its disk was full (%v; noticed after the heal):%s", p.name, exitErr, tail(p.log, 6))
			}
			d.mu.Lock()
			st := d.restarts[p.name]
			if st == nil {
				st = &restartState{}
				d.restarts[p.name] = st
			}
			wait := time.Now().Before(st.next)
			if !expected {
				st.crashes++
			}
			crashes := st.crashes
			d.mu.Unlock()
			switch {
			case !expected && crashes == 1:
				d.violation("%s exited by itself (%v) with no fault holding it:%s", p.name, exitErr, tail(p.log, 8))
			case !expected:
				d.event("%s exited by itself again (%v), %d times now", p.name, exitErr, crashes)
			}
			if wait {
				continue
			}
			err := p.start(ctx, d.cfg.Bin, d.cfg.Timeout)
			d.mu.Lock()
			if err == nil {
				st.failures = 0
				d.mu.Unlock()
				d.event("supervisor restarted %s", p.name)
				continue
			}
			st.failures++
			st.next = time.Now().Add(time.Duration(min(st.failures, 5)) * time.Second)
			report := st.failures == 3 && !st.reported
			if report {
				st.reported = true
			}
			d.mu.Unlock()
			d.event("supervisor could not restart %s: %v", p.name, err)
			if report {
				d.violation("%s does not start again (3 tries): %v", p.name, err)
			}
		}
	}
}

// ---- healing ----

// healAll makes sure nothing is left of any fault: no cut, no lossy link,
// no paused process, every process of the city and the offices up and
// healthy, every running member in the configuration.
func (d *driver) healAll(ctx context.Context) error {
	d.mesh.healAll()
	for _, id := range d.order {
		o := d.offices[id]
		o.mu.Lock()
		for _, l := range o.links {
			l.cuts, l.lossy = 0, 0
			l.apply()
		}
		o.mu.Unlock()
	}
	for _, p := range d.allProcs() {
		p.resume()
	}
	// Every member in the configuration, once there is a leader: a
	// replacement whose join did not get through, or a member whose
	// removal no one answered, is joined as city IT would (city join).
	if _, err := d.waitLeader(ctx, d.cfg.Timeout); err != nil {
		d.violation("after healing, no leader: %v", err)
	}
	for _, m := range d.currentMembers() {
		in := -1
		_ = d.eventually(ctx, "the configuration", d.cfg.Timeout, func() error {
			if in = d.inConfig(ctx, m.id); in < 0 {
				return errors.New("no member with a leader answered")
			}
			return nil
		})
		if in != 0 {
			continue
		}
		d.note("%s not in the configuration after the faults: joining it", m.id)
		err := d.eventually(ctx, m.id+" joined", d.cfg.Timeout, func() error {
			for _, via := range d.currentMembers() {
				if via == m {
					continue
				}
				r, err := d.cityAPI(via).do(ctx, "POST", "/v1/cluster/members", map[string]string{"id": m.id, "address": m.proxy.Addr()})
				if err == nil && r.code == http.StatusOK {
					return nil
				}
			}
			return errors.New("no member took the join")
		})
		if err != nil {
			d.violation("after healing, %v", err)
		}
	}
	// Up and healthy (the supervisor restarts what is down).
	for _, p := range d.allProcs() {
		p.mu.Lock()
		retired := p.retired
		p.mu.Unlock()
		if retired {
			continue
		}
		restarted := false
		err := d.eventually(ctx, p.name+" up and healthy", d.cfg.Timeout, func() error {
			code, status, err := d.health(p)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				if status == "storage_failed" && !restarted {
					// Its storage failed (it refuses writes until
					// restarted, by design): restart it, as an operator
					// would.
					restarted = true
					d.note("%s answered /healthz %d %s after the faults: restarted", p.name, code, status)
					p.stop(10 * time.Second)
				}
				return fmt.Errorf("/healthz: HTTP %d %s", code, status)
			}
			return nil
		})
		if err != nil {
			d.violation("after healing, %v", err)
		}
	}
	d.event("healed: every link up, every process running")
	return nil
}
