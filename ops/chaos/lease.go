package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The lease history, for porcupine. The driver records every lease read
// and change it makes (call and return times, what came back); the
// sequential model below is the FSM's rules (replication/cluster/lease.go)
// for the calls the driver makes, with one step nobody calls: the backup
// office releasing a pending handback, which may happen between any two
// operations. It extends the model of cmd/wardsync's
// TestLeaseLinearizableUnderLeaderKills with non-forced handbacks.

// leaseState is a ward's lease as the model sees it.
type leaseState struct {
	Epoch      uint64
	Active     string // "" at epoch 0: the ward's own office
	HandbackTo string // set while a handback waits for the holder
}

// leaseIn is one lease call.
type leaseIn struct {
	Ward   string
	Op     string // "read", "failover", "handback"
	To     string // failover's target
	Expect uint64
	Force  bool
	Reason string
}

const (
	leaseOK       = iota // 200
	leaseConflict        // 409: the compare failed
	leaseUnknown         // no answer, or 5xx: it may or may not have happened
)

type leaseOut struct {
	Result     int
	Epoch      uint64
	Active     string
	HandbackTo string
}

// leaseModel is the sequential specification of one ward's lease; home
// is the ward office's node, where a handback returns the ward.
func leaseModel(home string) porcupine.Model {
	// apply is the state after in from s, and whether the FSM accepts it.
	apply := func(s leaseState, in leaseIn) (leaseState, bool) {
		if s.Epoch != in.Expect {
			return s, false
		}
		switch in.Op {
		case "failover":
			if s.HandbackTo != "" || (s.Epoch > 0 && s.Active == in.To) {
				return s, false
			}
			return leaseState{Epoch: s.Epoch + 1, Active: in.To}, true
		case "handback":
			if s.HandbackTo != "" {
				if in.Force {
					return leaseState{Epoch: s.Epoch + 1, Active: home}, true
				}
				return s, true // the same handback asked again: answered as is
			}
			if s.Epoch == 0 || s.Active == home {
				return s, false
			}
			if in.Force {
				return leaseState{Epoch: s.Epoch + 1, Active: home}, true
			}
			return leaseState{Epoch: s.Epoch, Active: s.Active, HandbackTo: home}, true
		}
		return s, false
	}
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{leaseState{}} },
		Step: func(state, input, output any) []any {
			s, in, out := state.(leaseState), input.(leaseIn), output.(leaseOut)
			// The holder may have released a pending handback before this
			// operation took effect.
			starts := []leaseState{s}
			if s.HandbackTo != "" {
				starts = append(starts, leaseState{Epoch: s.Epoch + 1, Active: s.HandbackTo})
			}
			var next []any
			for _, c := range starts {
				if in.Op == "read" {
					if out.Epoch == c.Epoch && out.Active == c.Active && out.HandbackTo == c.HandbackTo {
						next = append(next, c)
					}
					continue
				}
				n, ok := apply(c, in)
				switch out.Result {
				case leaseOK:
					if ok && out.Epoch == n.Epoch && out.Active == n.Active && out.HandbackTo == n.HandbackTo {
						next = append(next, n)
					}
				case leaseConflict:
					if !ok {
						next = append(next, c)
					}
				default: // unknown: it happened (where it could) or it did not
					next = append(next, c)
					if ok {
						next = append(next, n)
					}
				}
			}
			return next
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(leaseIn), output.(leaseOut)
			res := [...]string{"ok", "409", "unknown"}[out.Result]
			switch in.Op {
			case "read":
				return fmt.Sprintf("read → %d %s %s", out.Epoch, orDash(out.Active), out.HandbackTo)
			case "failover":
				return fmt.Sprintf("failover(%d → %s) %s", in.Expect, in.To, res)
			}
			return fmt.Sprintf("handback(%d, force %v) %s → %d %s %s", in.Expect, in.Force, res, out.Epoch, orDash(out.Active), out.HandbackTo)
		},
		DescribeState: func(state any) string {
			s := state.(leaseState)
			return fmt.Sprintf("epoch %d, %s, handback to %s", s.Epoch, orDash(s.Active), orDash(s.HandbackTo))
		},
	}
	return nm.ToModel()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// leaseLog is the recorded history, every ward's together.
type leaseLog struct {
	t0 time.Time

	mu      sync.Mutex
	ops     []porcupine.Operation
	unknown []int // indexes in ops: their Return is set at the end
	clients int
	reasons map[string]leaseIn // the reason of every change sent
}

func newLeaseLog(t0 time.Time) *leaseLog { return &leaseLog{t0: t0, reasons: map[string]leaseIn{}} }

func (l *leaseLog) now() int64 { return time.Since(l.t0).Nanoseconds() }

// client returns a new porcupine client ID (one per sequential caller).
func (l *leaseLog) client() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients++
	return l.clients - 1
}

func (l *leaseLog) add(op porcupine.Operation, isUnknown bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if isUnknown {
		l.unknown = append(l.unknown, len(l.ops))
	}
	l.ops = append(l.ops, op)
}

func (l *leaseLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ops)
}

// leaseJSON is the part of a lease answer the model needs.
type leaseJSON struct {
	Ward       string `json:"ward"`
	Active     string `json:"active_node"`
	Epoch      uint64 `json:"epoch"`
	HandbackTo string `json:"handback_to"`
	Reason     string `json:"reason"`
	By         string `json:"by"`
}

// readLease reads ward's lease through m, recording the read if it was
// answered (a read with no answer constrains nothing).
func (d *driver) readLease(ctx context.Context, ward string, m *member, client int) (leaseJSON, bool) {
	call := d.lease.now()
	var l leaseJSON
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := d.cityAPI(m).getJSON(cctx, "/v1/wards/"+ward+"/lease", &l)
	cancel()
	ret := d.lease.now()
	if err != nil {
		return l, false
	}
	d.lease.add(porcupine.Operation{ClientId: client, Input: leaseIn{Ward: ward, Op: "read"}, Call: call, Return: ret,
		Output: leaseOut{Result: leaseOK, Epoch: l.Epoch, Active: l.Active, HandbackTo: l.HandbackTo}, Metadata: m.id}, false)
	return l, true
}

// changeLease sends a failover (to backupID) or a handback through m and
// records it.
func (d *driver) changeLease(ctx context.Context, ward, op string, expect uint64, force bool, m *member, client int) (int, leaseJSON, string) {
	in := leaseIn{Ward: ward, Op: op, Expect: expect, Force: force,
		Reason: fmt.Sprintf("chaos %d: %s %s at %s", d.cfg.Seed, op, ward, strings.TrimSpace(d.at()))}
	body := map[string]any{"expect_epoch": expect, "reason": in.Reason}
	if op == "failover" {
		in.To = backupID
		body["to"] = backupID
	} else if force {
		body["force"] = true
	}
	d.lease.mu.Lock()
	d.lease.reasons[in.Reason] = in
	d.lease.mu.Unlock()
	call := d.lease.now()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	r, err := d.cityAPI(m).do(cctx, "POST", "/v1/wards/"+ward+"/lease/"+op, body)
	cancel()
	ret := d.lease.now()
	pop := porcupine.Operation{ClientId: client, Input: in, Call: call, Return: ret, Metadata: m.id}
	var l leaseJSON
	switch {
	case err != nil && classify(r, err) == refused:
		// Never reached a member: as if never made.
		return leaseUnknown, l, "connection refused"
	case err == nil && r.code == http.StatusOK:
		if jerr := json.Unmarshal(r.body, &l); jerr != nil {
			d.note("lease %s %s: unreadable answer %s", op, ward, r.body)
			pop.Output = leaseOut{Result: leaseUnknown}
			d.lease.add(pop, true)
			return leaseUnknown, l, "unreadable"
		}
		pop.Output = leaseOut{Result: leaseOK, Epoch: l.Epoch, Active: l.Active, HandbackTo: l.HandbackTo}
		d.lease.add(pop, false)
		return leaseOK, l, ""
	case err == nil && r.code == http.StatusConflict:
		pop.Output = leaseOut{Result: leaseConflict}
		d.lease.add(pop, false)
		return leaseConflict, l, string(r.body)
	case err == nil && r.code < 500:
		// 403, 404: refused before the compare; changes nothing and
		// constrains nothing.
		d.note("lease %s %s through %s: HTTP %d %s", op, ward, m.id, r.code, r.body)
		return leaseConflict, l, string(r.body)
	default:
		pop.Output = leaseOut{Result: leaseUnknown}
		d.lease.add(pop, true)
		return leaseUnknown, l, errClass(r, err)
	}
}

// leaseReader reads the backup office's wards' leases through random
// members every few hundred ms, until ctx ends.
func (d *driver) leaseReader(ctx context.Context) {
	rng := rand.New(rand.NewPCG(d.cfg.Seed, 0x6c65617365))
	client := d.lease.client()
	for ctx.Err() == nil {
		ms := d.currentMembers()
		m := ms[rng.IntN(len(ms))]
		if m.p.running() {
			d.readLease(ctx, backupWards[rng.IntN(len(backupWards))], m, client)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(150+rng.IntN(250)) * time.Millisecond):
		}
	}
}

// checkLeases runs porcupine on each ward's history, and checks the city's
// own lease history against the changes the driver sent.
func (d *driver) checkLeases(ctx context.Context) {
	d.lease.mu.Lock()
	end := d.lease.now() + 1
	for _, i := range d.lease.unknown {
		d.lease.ops[i].Return = end
	}
	byWard := map[string][]porcupine.Operation{}
	for _, op := range d.lease.ops {
		w := op.Input.(leaseIn).Ward
		byWard[w] = append(byWard[w], op)
	}
	reasons := d.lease.reasons
	d.lease.mu.Unlock()
	for _, w := range backupWards {
		h := byWard[w]
		model := leaseModel(wardNodeID(w))
		res, info := porcupine.CheckOperationsVerbose(model, h, 60*time.Second)
		switch res {
		case porcupine.Ok:
			d.event("lease history of %s: %d operations, linearizable", w, len(h))
		case porcupine.Illegal:
			path := filepath.Join(d.dir, "lease-"+w+".html")
			if err := porcupine.VisualizePath(model, info, path); err != nil {
				path = "(visualization failed: " + err.Error() + ")"
			}
			d.violation("the lease history of %s is not linearizable (%d operations); see %s", w, len(h), path)
		default:
			d.note("porcupine could not decide the lease history of %s (%d operations) in 60s", w, len(h))
		}
		d.checkLeaseHistory(ctx, w, reasons)
	}
}

// checkLeaseHistory: the city's history of ward w has epochs 1..N with no
// gap, each made by a change the driver sent (a release carries the
// reason of the handback it completes), moving the ward where asked.
func (d *driver) checkLeaseHistory(ctx context.Context, w string, reasons map[string]leaseIn) {
	var h struct {
		History []leaseJSON `json:"history"`
	}
	var err error
	for _, m := range d.currentMembers() {
		if err = d.cityAPI(m).getJSON(ctx, "/v1/wards/"+w+"/lease/history", &h); err == nil {
			break
		}
	}
	if err != nil {
		d.violation("the lease history of %s could not be read from any member: %v", w, err)
		return
	}
	for i, l := range h.History {
		in, ok := reasons[l.Reason]
		want := in.To
		if in.Op == "handback" {
			want = wardNodeID(w)
		}
		switch {
		case l.Epoch != uint64(i+1):
			d.violation("lease history of %s: entry %d is epoch %d", w, i, l.Epoch)
		case !ok:
			d.violation("lease history of %s: epoch %d (%s, %q) was made by no change the driver sent", w, l.Epoch, l.Active, l.Reason)
		case l.Active != want:
			d.violation("lease history of %s: epoch %d went to %s; the change (%s) asked for %s", w, l.Epoch, l.Active, in.Op, want)
		}
	}
}
