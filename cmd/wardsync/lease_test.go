package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// Tests of issue 6's ward lease at the city: who may move it, that two
// concurrent changes cannot both win, and that reads and changes stay
// linearizable while leaders die.

// registerNode issues a certificate for node with role ("ward" or
// "backup") naming wards, and makes the city know the node as its first
// push would: a push hello carrying an ed25519 op-signing key, through
// member via, answered by Welcome and Ack. A failover target must have
// registered so; a handback returns the ward to a registered ward node.
func (e *cityEnv) registerNode(ctx context.Context, via, role, node string, wards ...string) {
	e.t.Helper()
	dir := filepath.Join(e.dir, "tls", node)
	args := []string{"ops", "cert", "issue", "--ca", filepath.Join(e.dir, "ca"), "--role", role, "--node", node, "--out", dir}
	for _, w := range wards {
		args = append(args, "--ward", w)
	}
	runOK(e.t, args...)
	cert, pool, _, err := certs.LoadBundle(dir, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	ep, err := transport.New(transport.Config{Addr: "127.0.0.1:0", Cert: cert, CA: pool})
	if err != nil {
		e.t.Fatal(err)
	}
	defer ep.Close()
	rctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	go ep.Run(rctx)
	_, key, _ := ed25519.GenerateKey(nil)
	hello := &wire.Hello{Proto: wire.ProtoPush, Node: node, Ward: wards[0], Versions: []uint8{wire.Version}, Key: key.Public().(ed25519.PublicKey)}
	for {
		err := pushHello(rctx, ep, e.quic[via], hello)
		if err == nil {
			return
		}
		// The city origin may still be initializing, or an election running.
		if rctx.Err() != nil {
			e.t.Fatalf("registering %s (%s) through %s: %v", node, role, via, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pushHello opens a push stream, says hello and expects Welcome then Ack.
func pushHello(ctx context.Context, ep *transport.Endpoint, addr string, hello *wire.Hello) error {
	conn, err := ep.Dial(ctx, addr, transport.ALPNSync, schema.PeerCity)
	if err != nil {
		return err
	}
	defer conn.CloseWithError(0, "registered")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer func() {
		s.CancelRead(0)
		s.Close()
	}()
	s.SetDeadline(time.Now().Add(20 * time.Second))
	if err := wire.WriteMsg(s, hello); err != nil {
		return err
	}
	r := wire.NewReader(s, 1<<20)
	for _, want := range []string{"Welcome", "Ack"} {
		m, err := r.Read()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", want, err)
		}
		switch m := m.(type) {
		case *wire.Welcome, *wire.Ack:
			if got := strings.TrimPrefix(fmt.Sprintf("%T", m), "*wire."); got != want {
				return fmt.Errorf("got %s, want %s", got, want)
			}
		case *wire.Error:
			return fmt.Errorf("city refused the hello: %s: %s", m.Code, m.Message)
		default:
			return fmt.Errorf("unexpected answer %T", m)
		}
	}
	return nil
}

// memberURL is member id's current HTTP base (it changes when it restarts).
func (e *cityEnv) memberURL(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.members[id].url
}

// leaseReq sends one lease API request. err is a transport error (no
// HTTP answer); sent is false when it certainly never reached the member
// (the connection could not be made).
func leaseReq(c *http.Client, method, url string, body any) (code int, data []byte, sent bool, err error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		var op *net.OpError
		return 0, nil, !(errors.As(err, &op) && op.Op == "dial"), err
	}
	defer resp.Body.Close()
	data, err = io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, true, err
	}
	return resp.StatusCode, data, true, nil
}

// mustLease reads ward's lease through member (retrying while the city
// elects a leader).
func (e *cityEnv) mustLease(member, ward string) schema.Lease {
	e.t.Helper()
	var l schema.Lease
	e.mustGet(member, "/v1/wards/"+ward+"/lease", &l)
	return l
}

// mustHistory reads ward's lease history through member.
func (e *cityEnv) mustHistory(member, ward string) []schema.Lease {
	e.t.Helper()
	var h struct {
		Ward    string         `json:"ward"`
		History []schema.Lease `json:"history"`
	}
	e.mustGet(member, "/v1/wards/"+ward+"/lease/history", &h)
	if h.Ward != ward || h.History == nil {
		e.t.Fatalf("lease history of %s through %s: %+v", ward, member, h)
	}
	return h.History
}

func (e *cityEnv) mustGet(member, path string, out any) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, data, _, err := leaseReq(e.admin, "GET", e.memberURL(member)+path, nil)
		if code == http.StatusOK {
			if err := json.Unmarshal(data, out); err != nil {
				e.t.Fatalf("GET %s through %s: %v in %s", path, member, err, data)
			}
			return
		}
		if (code != 0 && code < 500) || time.Now().After(deadline) {
			e.t.Fatalf("GET %s through %s: HTTP %d %s %v", path, member, code, data, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiError is the {"error": {...}} body of a refusal.
type apiError struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func parseAPIError(data []byte) (code, message, field string, ok bool) {
	var e apiError
	if json.Unmarshal(data, &e) != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
		return "", "", "", false
	}
	return e.Error.Code, e.Error.Message, e.Error.Field, true
}

// TestLeaseRefusals: a ward or backup certificate may not move a lease;
// a failover only goes to a registered backup whose certificate names the
// ward; bad requests get a clear 4xx. None of it changes the lease, and
// the CLI says why it was refused.
func TestLeaseRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	wards := schema.DefaultWards().All()
	ward, other := wards[0].Code, wards[1].Code
	e.registerNode(ctx, "c1", "ward", "wa", ward)
	e.registerNode(ctx, "c2", "backup", "bk1", ward)
	e.registerNode(ctx, "c3", "backup", "bk2", other) // covers another ward only
	runOK(t, "ops", "cert", "issue", "--ca", filepath.Join(e.dir, "ca"), "--role", "backup", "--node", "bk3", "--ward", ward, "--out", filepath.Join(e.dir, "tls", "bk3"))

	before := e.mustLease("c1", ward)
	if before.Epoch != 0 || before.Active != "" || before.Ward != ward {
		t.Fatalf("lease before any change: %+v", before)
	}
	wardCert, backupCert := e.client("wa"), e.client("bk1")
	failover := "/v1/wards/" + ward + "/lease/failover"
	handback := "/v1/wards/" + ward + "/lease/handback"
	cases := []struct {
		name   string
		client *http.Client
		method string
		path   string
		body   any
		code   int
		errIs  string // the error body's code
		says   string // in its message ("" = anything)
	}{
		{"ward certificate fails over", wardCert, "POST", failover, map[string]any{"to": "bk1", "expect_epoch": 0}, 403, "forbidden", "ward certificate"},
		{"ward certificate fails over to itself", wardCert, "POST", failover, map[string]any{"to": "wa", "expect_epoch": 0}, 403, "forbidden", ""},
		{"ward certificate hands back", wardCert, "POST", handback, map[string]any{"expect_epoch": 0, "force": true}, 403, "forbidden", ""},
		{"backup certificate takes the lease", backupCert, "POST", failover, map[string]any{"to": "bk1", "expect_epoch": 0}, 403, "forbidden", "backup certificate"},
		{"backup certificate reads the lease", backupCert, "GET", "/v1/wards/" + ward + "/lease", nil, 403, "forbidden", ""},
		{"portal certificate fails over", e.portal, "POST", failover, map[string]any{"to": "bk1", "expect_epoch": 0}, 403, "forbidden", ""},
		{"failover to a ward office's node", e.admin, "POST", failover, map[string]any{"to": "wa", "expect_epoch": 0}, 403, "forbidden", "ward certificate"},
		{"failover to a backup not named for the ward", e.admin, "POST", failover, map[string]any{"to": "bk2", "expect_epoch": 0}, 403, "forbidden", "does not name ward " + ward},
		{"failover to an unknown node", e.admin, "POST", failover, map[string]any{"to": "ghost", "expect_epoch": 0}, 404, "not_found", "never connected"},
		{"failover to a backup that never connected", e.admin, "POST", failover, map[string]any{"to": "bk3", "expect_epoch": 0}, 404, "not_found", "never connected"},
		{"failover without expect_epoch", e.admin, "POST", failover, map[string]any{"to": "bk1"}, 400, "invalid_field", "expect_epoch"},
		{"failover without a target", e.admin, "POST", failover, map[string]any{"expect_epoch": 0}, 400, "invalid_field", ""},
		{"failover with force", e.admin, "POST", failover, map[string]any{"to": "bk1", "expect_epoch": 0, "force": true}, 400, "invalid_field", ""},
		{"failover with a bad node ID", e.admin, "POST", failover, map[string]any{"to": "../bk1", "expect_epoch": 0}, 400, "invalid_field", ""},
		{"failover with malformed JSON", e.admin, "POST", failover, `{"to": "bk1", "expect_epoch": `, 400, "malformed_json", ""},
		{"failover with a string epoch", e.admin, "POST", failover, `{"to": "bk1", "expect_epoch": "0"}`, 400, "invalid_field", ""},
		{"failover with a negative epoch", e.admin, "POST", failover, `{"to": "bk1", "expect_epoch": -1}`, 400, "invalid_field", ""},
		{"failover with a JSON array", e.admin, "POST", failover, `[1]`, 400, "invalid", ""},
		{"failover of an unknown ward", e.admin, "POST", "/v1/wards/ZZZ999/lease/failover", map[string]any{"to": "bk1", "expect_epoch": 0}, 404, "not_found", ""},
		{"lease of an unknown ward", e.admin, "GET", "/v1/wards/ZZZ999/lease", nil, 404, "not_found", ""},
		{"history of an unknown ward", e.admin, "GET", "/v1/wards/ZZZ999/lease/history", nil, 404, "not_found", ""},
		{"failover with a stale epoch", e.admin, "POST", failover, map[string]any{"to": "bk1", "expect_epoch": 3}, 409, "conflict", "epoch 0, not 3"},
		{"handback of a ward its office serves", e.admin, "POST", handback, map[string]any{"expect_epoch": 0, "force": true}, 409, "conflict", ""},
	}
	for i, c := range cases {
		member := ids[i%len(ids)] // followers forward: refusals come back the same
		code, data, _, err := leaseReq(c.client, c.method, e.memberURL(member)+c.path, c.body)
		if err != nil {
			t.Fatalf("%s (via %s): %v", c.name, member, err)
		}
		errCode, msg, _, ok := parseAPIError(data)
		if code != c.code || !ok || errCode != c.errIs || !strings.Contains(msg, c.says) {
			t.Errorf("%s (via %s): HTTP %d %s; want %d with an error body of code %q saying %q", c.name, member, code, data, c.code, c.errIs, c.says)
		}
	}
	for _, m := range ids {
		if l := e.mustLease(m, ward); l != before {
			t.Fatalf("lease through %s after the refusals: %+v, want %+v", m, l, before)
		}
		if h := e.mustHistory(m, ward); len(h) != 0 {
			t.Fatalf("lease history through %s after the refusals: %+v", m, h)
		}
	}

	// The CLI exits non-zero and names the reason.
	for _, c := range []struct{ to, says string }{
		{"wa", "ward certificate"},
		{"bk2", "does not name ward " + ward},
		{"ghost", "never connected"},
	} {
		out, err := e.ops("c2", "failover", "--ward", ward, "--to", c.to, "--reason", "test", "--wait=false")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(out, c.says) || !strings.Contains(out, c.to) {
			t.Errorf("ops failover --to %s: %v\n%s\nwant a non-zero exit saying %q", c.to, err, out, c.says)
		}
	}
	out, err := e.ops("c3", "failover", "--ward", ward, "--to", "bk1", "--expect-epoch", "4", "--wait=false")
	if err == nil || !strings.Contains(out, "not 4") {
		t.Errorf("ops failover with a stale --expect-epoch: %v\n%s", err, out)
	}

	// The API did work all along: the one allowed failover moves the lease,
	// after which a ward certificate still cannot take it back.
	code, data, _, err := leaseReq(e.admin, "POST", e.memberURL("c3")+failover, map[string]any{"to": "bk1", "reason": "flood", "expect_epoch": 0})
	var moved schema.Lease
	if err != nil || code != 200 || json.Unmarshal(data, &moved) != nil || moved.Epoch != 1 || moved.Active != "bk1" || moved.Home != "wa" || moved.By != "it-desk" {
		t.Fatalf("allowed failover: HTTP %d %s %v", code, data, err)
	}
	if code, data, _, _ := leaseReq(wardCert, "POST", e.memberURL("c1")+handback, map[string]any{"expect_epoch": 1, "force": true}); code != 403 {
		t.Fatalf("ward certificate handing its ward back: HTTP %d %s", code, data)
	}
	if code, data, _, _ := leaseReq(e.admin, "POST", e.memberURL("c2")+failover, map[string]any{"to": "bk1", "expect_epoch": 1}); code != 409 {
		t.Fatalf("failover to the node that holds the ward: HTTP %d %s", code, data)
	}
	for _, m := range ids {
		if l := e.mustLease(m, ward); l.Epoch != 1 || l.Active != "bk1" || l.Since != moved.Since {
			t.Fatalf("lease through %s: %+v, want %+v", m, l, moved)
		}
		if h := e.mustHistory(m, ward); len(h) != 1 || h[0].Epoch != 1 || h[0].Active != "bk1" || h[0].Reason != "flood" {
			t.Fatalf("lease history through %s: %+v", m, h)
		}
	}
}

// TestLeaseConcurrentFailoverOneWins: round after round, failovers (and a
// forced handback) that all read the same epoch are sent at once to
// different members: exactly one wins, the others get 409, and the
// history gains exactly the winner's epoch.
func TestLeaseConcurrentFailoverOneWins(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ward := testWard(t)
	e.registerNode(ctx, "c1", "ward", "wa", ward)
	e.registerNode(ctx, "c2", "backup", "bk1", ward)
	e.registerNode(ctx, "c3", "backup", "bk2", ward)
	backups := []string{"bk1", "bk2"}

	type contender struct {
		member, op, to, reason string
	}
	type outcome struct {
		code  int
		data  []byte
		err   error
		lease schema.Lease
	}
	const rounds = 15
	var winners []contender
	unknown := 0
	for r := 0; r < rounds; r++ {
		cur := e.mustLease(ids[r%3], ward)
		if cur.Epoch != uint64(len(winners)) {
			t.Fatalf("round %d starts at epoch %d after %d winners: %+v", r, cur.Epoch, len(winners), cur)
		}
		for _, m := range ids { // warm a connection to every member, so the requests leave together
			e.mustLease(m, ward)
		}
		cs := []contender{
			{member: ids[0], op: "failover", to: backups[r%2]},
			{member: ids[1], op: "failover", to: backups[(r+1)%2]},
			{member: ids[2], op: "failover", to: backups[r%2]},
		}
		if r%3 == 2 { // a forced handback is a compare-and-set too
			cs[r%2*2] = contender{member: cs[r%2*2].member, op: "handback"}
		}
		for i := range cs {
			cs[i].reason = fmt.Sprintf("round %d, contender %d", r, i)
		}
		outs := make([]outcome, len(cs))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range cs {
			body := map[string]any{"reason": c.reason, "expect_epoch": cur.Epoch}
			if c.op == "failover" {
				body["to"] = c.to
			} else {
				body["force"] = true
			}
			url := e.memberURL(c.member) + "/v1/wards/" + ward + "/lease/" + c.op
			wg.Go(func() {
				<-start
				o := &outs[i]
				o.code, o.data, _, o.err = leaseReq(e.admin, "POST", url, body)
				if o.code == 200 {
					o.err = json.Unmarshal(o.data, &o.lease)
				}
			})
		}
		close(start)
		wg.Wait()
		// Exactly one 200, the rest 409. A request left without an answer
		// (none should be, with no member killed) proves nothing either
		// way: then the lease itself says who won.
		won, lost := -1, 0
		for i, o := range outs {
			switch {
			case o.err != nil || o.code >= 500:
				t.Logf("round %d, %+v: no answer (HTTP %d %s %v): its outcome is unknown", r, cs[i], o.code, o.data, o.err)
				lost++
			case o.code == 200:
				if won >= 0 {
					t.Fatalf("round %d at epoch %d: two changes won:\n%+v → %+v\n%+v → %+v", r, cur.Epoch, cs[won], outs[won].lease, cs[i], o.lease)
				}
				won = i
			case o.code == 409:
				if code, _, _, ok := parseAPIError(o.data); !ok || code != "conflict" {
					t.Fatalf("round %d, %+v: 409 %s", r, cs[i], o.data)
				}
			default:
				t.Fatalf("round %d, %+v: HTTP %d %s", r, cs[i], o.code, o.data)
			}
		}
		unknown += lost
		if won < 0 && lost == 0 {
			t.Fatalf("round %d at epoch %d (%s holds): no change won: %+v", r, cur.Epoch, cur.Active, outs)
		}
		after := e.mustLease(ids[(r+1)%3], ward)
		if won < 0 && after.Epoch == cur.Epoch {
			continue // the unknown ones did not happen
		}
		if after.Epoch != cur.Epoch+1 {
			t.Fatalf("round %d from epoch %d: the lease is at epoch %d", r, cur.Epoch, after.Epoch)
		}
		var w contender
		for i, c := range cs {
			if c.reason == after.Reason {
				w = c
				if won >= 0 && i != won || outs[i].code == 409 {
					t.Fatalf("round %d: %+v won, but %+v was answered HTTP %d %s", r, after, cs[i], outs[i].code, outs[i].data)
				}
			}
		}
		if w.op == "handback" {
			w.to = "wa"
		}
		if w.reason == "" || after.Active != w.to {
			t.Fatalf("round %d: the lease is %+v; the contenders were %+v", r, after, cs)
		}
		if won >= 0 {
			if l := outs[won].lease; l.Epoch != after.Epoch || l.Active != after.Active || l.Reason != after.Reason || l.Since != after.Since {
				t.Fatalf("round %d: the winner %+v was answered with lease %+v; the lease is %+v", r, cs[won], l, after)
			}
		}
		winners = append(winners, w)
	}
	for _, m := range ids {
		h := e.mustHistory(m, ward)
		if len(h) != len(winners) {
			t.Fatalf("history through %s has %d epochs after %d rounds with %d winners: %+v", m, len(h), rounds, len(winners), h)
		}
		for i, l := range h {
			if w := winners[i]; l.Epoch != uint64(i+1) || l.Active != w.to || l.Reason != w.reason {
				t.Fatalf("history through %s, epoch %d: %+v; the winner was %+v", m, i+1, l, w)
			}
		}
	}
	var handbacks int
	for _, w := range winners {
		if w.op == "handback" {
			handbacks++
		}
	}
	t.Logf("%d rounds, %d winners (%d forced handbacks); %d answers lost", rounds, len(winners), handbacks, unknown)
}

// The lease as a sequential object, for porcupine: a state {epoch,
// active}; reads return it; a failover or forced handback is a
// compare-and-set on the epoch.

type leaseState struct {
	Epoch  uint64
	Active string
}

type leaseInput struct {
	Op     string // "read", "failover", "handback" (forced)
	To     string // failover's target
	Expect uint64
	Reason string // unique per change: finds it in the history
}

const (
	leaseOK       = iota // 200
	leaseConflict        // 409: the compare failed
	leaseUnknown         // no answer, or 5xx: it may or may not have happened
)

type leaseOutput struct {
	Result int
	Epoch  uint64 // reads, and changes that succeeded
	Active string
}

// leaseModel is the lease's sequential specification. home is the ward
// office's node, where a forced handback returns the ward.
func leaseModel(home string) porcupine.Model {
	// next is the state after in, and whether the change may happen from s
	// (the FSM's rules: the epoch must match; a failover not to the
	// holder; a handback only away from a backup).
	next := func(s leaseState, in leaseInput) (leaseState, bool) {
		if s.Epoch != in.Expect {
			return s, false
		}
		switch in.Op {
		case "failover":
			return leaseState{s.Epoch + 1, in.To}, s.Epoch == 0 || s.Active != in.To
		case "handback":
			return leaseState{s.Epoch + 1, home}, s.Epoch > 0 && s.Active != home
		}
		return s, false
	}
	return porcupine.Model{
		Init: func() any { return leaseState{} },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(leaseState), input.(leaseInput), output.(leaseOutput)
			if in.Op == "read" {
				return out.Epoch == s.Epoch && out.Active == s.Active, s
			}
			n, can := next(s, in)
			switch out.Result {
			case leaseOK:
				return can && out.Epoch == n.Epoch && out.Active == n.Active, n
			case leaseConflict:
				return !can, s
			}
			// Unknown: if it happened, it happened where it could; if it
			// did not, the checker linearizes it at the end of the history
			// (its return), where nothing observes it.
			if can {
				return true, n
			}
			return true, s
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(leaseInput), output.(leaseOutput)
			res := [...]string{"ok", "409", "unknown"}[out.Result]
			switch in.Op {
			case "read":
				return fmt.Sprintf("read → %d %s", out.Epoch, out.Active)
			case "failover":
				return fmt.Sprintf("failover(%d → %s) %s", in.Expect, in.To, res)
			}
			return fmt.Sprintf("handback(%d) %s", in.Expect, res)
		},
		DescribeState: func(state any) string {
			s := state.(leaseState)
			return fmt.Sprintf("epoch %d, %s", s.Epoch, orDash(s.Active))
		},
	}
}

// TestLeaseLinearizableUnderLeaderKills: clients read the lease and move
// it (compare-and-set failovers and forced handbacks) through random
// members while the leader is SIGKILLed and restarted again and again;
// porcupine checks the recorded history against the sequential lease, and
// the lease history the city keeps must be exactly the changes that won.
func TestLeaseLinearizableUnderLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	boot := e.bootstrapSpec(ids...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ward := testWard(t)
	const home = "wa"
	e.registerNode(ctx, "c1", "ward", home, ward)
	e.registerNode(ctx, "c2", "backup", "bk1", ward)
	e.registerNode(ctx, "c3", "backup", "bk2", ward)
	client := e.client("admin")
	client.Timeout = 20 * time.Second // longer than an election; a timeout is an unknown outcome

	t0 := time.Now()
	now := func() int64 { return time.Since(t0).Nanoseconds() }
	var (
		mu         sync.Mutex
		history    []porcupine.Operation
		unknown    []int // indexes in history: their Return is set at the end
		unexpected []string
		latest     atomic.Uint64 // the highest epoch any client saw
		stop       atomic.Bool
		wg         sync.WaitGroup
	)
	record := func(op porcupine.Operation, isUnknown bool) {
		mu.Lock()
		defer mu.Unlock()
		if isUnknown {
			unknown = append(unknown, len(history))
		}
		history = append(history, op)
	}
	seen := func(epoch uint64) {
		for {
			cur := latest.Load()
			if epoch <= cur || latest.CompareAndSwap(cur, epoch) {
				return
			}
		}
	}
	const clients = 4
	for cl := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(cl), uint64(t0.UnixNano())))
			for n := 0; !stop.Load(); n++ {
				member := ids[rng.IntN(len(ids))]
				in := leaseInput{Op: "read"}
				switch p := rng.Float64(); {
				case p < 0.3:
					in.Op, in.To = "failover", "bk1"
				case p < 0.6:
					in.Op, in.To = "failover", "bk2"
				case p < 0.75:
					in.Op = "handback"
				}
				path := "/v1/wards/" + ward + "/lease"
				var body map[string]any
				if in.Op != "read" {
					in.Expect = latest.Load()
					if d := rng.IntN(10); d == 0 && in.Expect > 0 {
						in.Expect-- // stale
					} else if d == 1 {
						in.Expect++ // from the future
					}
					in.Reason = fmt.Sprintf("client %d, change %d", cl, n)
					path += "/" + in.Op
					body = map[string]any{"expect_epoch": in.Expect, "reason": in.Reason}
					if in.Op == "failover" {
						body["to"] = in.To
					} else {
						body["force"] = true
					}
				}
				method := "GET"
				if body != nil {
					method = "POST"
				}
				call := now()
				code, data, sent, err := leaseReq(client, method, e.memberURL(member)+path, body)
				ret := now()
				op := porcupine.Operation{ClientId: cl, Input: in, Call: call, Return: ret, Metadata: member}
				var l schema.Lease
				switch {
				case !sent:
					// Never reached a member (it is down): as if never made.
					time.Sleep(20 * time.Millisecond)
					continue
				case code == 200:
					if jerr := json.Unmarshal(data, &l); jerr != nil {
						mu.Lock()
						unexpected = append(unexpected, fmt.Sprintf("%+v via %s: %v in %s", in, member, jerr, data))
						mu.Unlock()
						continue
					}
					seen(l.Epoch)
					op.Output = leaseOutput{Result: leaseOK, Epoch: l.Epoch, Active: l.Active}
					record(op, false)
				case in.Op == "read" && (err != nil || code >= 500):
					// A read with no answer constrains nothing.
					time.Sleep(20 * time.Millisecond)
				case code == 409 && in.Op != "read":
					if ec, _, _, ok := parseAPIError(data); !ok || ec != "conflict" {
						mu.Lock()
						unexpected = append(unexpected, fmt.Sprintf("%+v via %s: HTTP 409 %s", in, member, data))
						mu.Unlock()
					}
					op.Output = leaseOutput{Result: leaseConflict}
					record(op, false)
				case in.Op != "read" && (err != nil || code >= 500):
					op.Output = leaseOutput{Result: leaseUnknown}
					record(op, true)
					time.Sleep(20 * time.Millisecond)
				default:
					mu.Lock()
					unexpected = append(unexpected, fmt.Sprintf("%+v via %s: HTTP %d %s", in, member, code, data))
					mu.Unlock()
				}
			}
		})
	}

	// Kill the leader a few times, restarting it each time.
	const kills = 3
	alive := "c1"
	for k := 0; k < kills; k++ {
		time.Sleep(1500 * time.Millisecond)
		leader := e.waitLeader(alive, "")
		e.mu.Lock()
		p := e.members[leader]
		e.mu.Unlock()
		p.kill9()
		for _, id := range ids {
			if id != leader {
				alive = id
				break
			}
		}
		newLeader := e.waitLeader(alive, leader)
		time.Sleep(500 * time.Millisecond)
		e.start(leader, "--bootstrap", boot) // --bootstrap is ignored: it has state
		t.Logf("kill %d: SIGKILLed leader %s; %s leads; %s restarted", k+1, leader, newLeader, leader)
		alive = leader
	}
	time.Sleep(1500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	for _, u := range unexpected {
		t.Error("unexpected answer:", u)
	}

	// Final reads through every member, once a leader is settled.
	e.waitLeader("c1", "")
	for _, m := range ids {
		call := now()
		l := e.mustLease(m, ward)
		history = append(history, porcupine.Operation{ClientId: clients, Input: leaseInput{Op: "read"}, Call: call,
			Output: leaseOutput{Result: leaseOK, Epoch: l.Epoch, Active: l.Active}, Return: now(), Metadata: m})
	}
	final := history[len(history)-1].Output.(leaseOutput)
	end := now() + 1
	for _, i := range unknown {
		history[i].Return = end
	}

	var reads, changes, won int
	for _, op := range history {
		if op.Input.(leaseInput).Op == "read" {
			reads++
			continue
		}
		changes++
		if op.Output.(leaseOutput).Result == leaseOK {
			won++
		}
	}
	model := leaseModel(home)
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, history, 60*time.Second)
	t.Logf("porcupine checked %d ops (%d reads, %d changes: %d won, %d unknown outcomes) in %v: %s; %d leader kills; final lease epoch %d (%s)",
		len(history), reads, changes, won, len(unknown), time.Since(checkStart).Round(time.Millisecond), res, kills, final.Epoch, final.Active)
	if res != porcupine.Ok {
		path := filepath.Join(t.ArtifactDir(), "lease-linearizability.html")
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Errorf("visualization: %v", err)
		}
		t.Fatalf("the lease history is not linearizable (%s); visualization: %s (kept with go test -artifacts)", res, path)
	}
	if won == 0 {
		t.Fatal("no change succeeded: the test exercised nothing")
	}

	// The city's own lease history: epochs 1..N without a gap, each made
	// by a change that a client saw win (or could not tell), as it set it.
	byReason := map[string]porcupine.Operation{}
	for _, op := range history {
		if in := op.Input.(leaseInput); in.Reason != "" {
			byReason[in.Reason] = op
		}
	}
	var h []schema.Lease
	var last schema.Lease
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		h, last = e.mustHistory("c2", ward), e.mustLease("c2", ward)
		if uint64(len(h)) == last.Epoch {
			break // (else a change committed between the two reads)
		}
		if time.Now().After(deadline) {
			t.Fatalf("history has %d epochs, the lease is at epoch %d", len(h), last.Epoch)
		}
	}
	wonEpoch := map[uint64]string{}
	for i, l := range h {
		if l.Epoch != uint64(i+1) {
			t.Fatalf("history entry %d is epoch %d: %+v", i, l.Epoch, h)
		}
		op, ok := byReason[l.Reason]
		if !ok {
			t.Fatalf("epoch %d (%+v) was made by no change a client sent", l.Epoch, l)
		}
		in, out := op.Input.(leaseInput), op.Output.(leaseOutput)
		want := in.To
		if in.Op == "handback" {
			want = home
		}
		if out.Result == leaseConflict || in.Expect != l.Epoch-1 || l.Active != want || l.By != "it-desk" {
			t.Fatalf("epoch %d is %+v, made by %+v answered %+v", l.Epoch, l, in, out)
		}
		wonEpoch[l.Epoch] = l.Reason
	}
	for _, op := range history {
		in, out := op.Input.(leaseInput), op.Output.(leaseOutput)
		if in.Op != "read" && out.Result == leaseOK && wonEpoch[out.Epoch] != in.Reason {
			t.Fatalf("%+v was answered with epoch %d, which the history gives to %q", in, out.Epoch, wonEpoch[out.Epoch])
		}
	}
	if n := len(h); n > 0 && h[n-1].Active != last.Active {
		t.Fatalf("the last epoch names %s, the lease %s", h[n-1].Active, last.Active)
	}
}
