package cluster

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// origin is a test node that signs a gapless, chained log.
type origin struct {
	name  string
	role  schema.PeerRole
	wards []string
	key   ed25519.PrivateKey
	seq   uint64
	prev  [32]byte
}

func newOrigin(name string, role schema.PeerRole, wards ...string) *origin {
	_, key, _ := ed25519.GenerateKey(nil)
	return &origin{name: name, role: role, wards: wards, key: key}
}

func (o *origin) register() Command {
	return Command{Kind: KindRegister, Register: &RegisterCmd{Origin: o.name, Key: o.key.Public().(ed25519.PublicKey), Wards: o.wards, Role: o.role}}
}

// op makes the origin's next op: a create of dossier d in ward, stamped
// with epoch.
func (o *origin) op(ward, d string, epoch uint64) schema.Op {
	o.seq++
	op := schema.Op{ID: schema.OpID{Origin: o.name, Seq: o.seq}, Ward: ward, Dossier: d, HLC: schema.NewHLC(1_790_000_000_000+int64(o.seq), 0),
		Actor: schema.Actor{ID: "hoa", Role: schema.RoleClerk}, Kind: schema.KindCreate, Epoch: epoch, Prev: o.prev,
		Body: schema.MarshalBody(schema.CreateBody{Procedure: "certified-copy", ReceiptNo: fmt.Sprintf("%s-%d", o.name, o.seq)})}
	op.Sign(o.key)
	o.prev = op.Hash()
	return op
}

// undo forgets the last op (it was refused, so the next one reuses its seq).
func (o *origin) undo(op schema.Op) { o.seq, o.prev = op.ID.Seq-1, op.Prev }

func (o *origin) push(ops ...schema.Op) Command {
	return Command{Kind: KindOps, Ops: ops, Pusher: &Pusher{Node: o.name, Wards: o.wards, Role: o.role}}
}

func lease(op, ward, to string, expect uint64) Command {
	return Command{Kind: KindLease, Lease: &LeaseCmd{Op: op, Ward: ward, To: to, Expect: expect, By: "admin", At: 1_790_000_000_000 + int64(expect), Reason: "test"}}
}

// TestFSMLease is the lease's rules, one committed entry per step, applied
// to two members that must agree at the end.
func TestFSMLease(t *testing.T) {
	wa := newOrigin("wa", schema.PeerWard, "HCM001")
	bk1 := newOrigin("bk1", schema.PeerBackup, "HCM001", "HCM002")
	bk2 := newOrigin("bk2", schema.PeerBackup, "HCM002")
	a, b := newTestFSM(t), newTestFSM(t)
	index := uint64(0)
	apply := func(cmds ...Command) []Result {
		t.Helper()
		index++
		l := entry(t, index, cmds...)
		ra := a.ApplyBatch([]*raft.Log{l})[0].(*entryResult)
		rb := b.ApplyBatch([]*raft.Log{l})[0].(*entryResult)
		for i := range ra.Results {
			if ra.Results[i].Code != rb.Results[i].Code {
				t.Fatalf("members disagree on command %d: %+v vs %+v", i, ra.Results[i], rb.Results[i])
			}
		}
		return ra.Results
	}
	want := func(step string, r Result, code string) {
		t.Helper()
		if r.Code != code {
			t.Fatalf("%s: code %q (%s), want %q", step, r.Code, r.Err, code)
		}
	}
	apply(wa.register(), bk1.register(), bk2.register())
	want("office writes at epoch 0", apply(wa.push(wa.op("HCM001", "01M845RJX5TY05VRQ5B5H4W001", 0)))[0], "")

	// Failover refusals, then the one that wins.
	for _, c := range []struct {
		name, to string
		expect   uint64
		code     string
	}{
		{"to a ward office's node", "wa", 0, "forbidden"},
		{"to a backup whose certificate does not name the ward", "bk2", 0, "forbidden"},
		{"to a node that never connected", "ghost", 0, "not_found"},
		{"with a stale epoch", "bk1", 7, "conflict"},
	} {
		r := apply(lease(LeaseFailover, "HCM001", c.to, c.expect))[0]
		want("failover "+c.name, r, c.code)
		if r.Err == "" {
			t.Fatalf("failover %s: no message", c.name)
		}
	}
	// Two failovers that read the same epoch, committed in one entry:
	// exactly one wins.
	first, second := lease(LeaseFailover, "HCM001", "bk1", 0), lease(LeaseFailover, "HCM001", "bk1", 0)
	second.Lease.At++
	rs := apply(first, second)
	want("first concurrent failover", rs[0], "")
	want("second concurrent failover", rs[1], "conflict")
	if l := rs[0].Lease; l.Epoch != 1 || l.Active != "bk1" || l.Home != "wa" || l.Ready == 0 {
		t.Fatalf("lease after failover: %+v", l)
	}
	// The winner proposed again (a retry across a leader change) is done,
	// not a conflict.
	want("failover re-proposed", apply(first)[0], "")

	// Epochs on ops.
	late := wa.op("HCM001", "01M845RJX5TY05VRQ5B5H4W002", 0)
	want("the cut-off office's late op at epoch 0", apply(wa.push(late))[0], "")
	want("the backup at epoch 1", apply(bk1.push(bk1.op("HCM001", "01M845RJX5TY05VRQ5B5H4B001", 1)))[0], "")
	bad := bk1.op("HCM001", "01M845RJX5TY05VRQ5B5H4B002", 0)
	r := apply(bk1.push(bad))[0]
	want("the backup at epoch 0", r, "epoch")
	if !strings.Contains(r.Err, "never held") {
		t.Fatalf("epoch refusal does not say why: %s", r.Err)
	}
	bk1.undo(bad)
	bad = wa.op("HCM001", "01M845RJX5TY05VRQ5B5H4W003", 1)
	want("the office at the backup's epoch", apply(wa.push(bad))[0], "epoch")
	wa.undo(bad)
	bad = bk2.op("HCM002", "01M845RJX5TY05VRQ5B5H4C001", 1)
	want("another backup at an epoch of another ward", apply(bk2.push(bad))[0], "epoch")
	bk2.undo(bad)

	// Handback: asked, then released by the holder once it pushed all.
	hb := apply(lease(LeaseHandback, "HCM001", "", 1))[0]
	want("handback", hb, "")
	if hb.Lease.Epoch != 1 || hb.Lease.HandbackTo != "wa" || hb.Lease.Active != "bk1" {
		t.Fatalf("lease while handing back: %+v", hb.Lease)
	}
	release := func(by string, last uint64) Command {
		return Command{Kind: KindLease, Lease: &LeaseCmd{Op: LeaseRelease, Ward: "HCM001", By: by, Expect: 1, LastSeq: last, At: 1_790_000_100_000}}
	}
	want("release by a node that does not hold the ward", apply(release("bk2", 0))[0], "forbidden")
	want("release before the city has every op", apply(release("bk1", bk1.seq+1))[0], "conflict")
	rel := apply(release("bk1", bk1.seq))[0]
	want("release", rel, "")
	if rel.Lease.Epoch != 2 || rel.Lease.Active != "wa" || rel.Lease.HandbackTo != "" {
		t.Fatalf("lease after handback: %+v", rel.Lease)
	}
	want("the office at epoch 2", apply(wa.push(wa.op("HCM001", "01M845RJX5TY05VRQ5B5H4W003", 2)))[0], "")
	want("the backup's late op at epoch 1", apply(bk1.push(bk1.op("HCM001", "01M845RJX5TY05VRQ5B5H4B002", 1)))[0], "")
	want("handback of a ward at home", apply(lease(LeaseHandback, "HCM001", "", 2))[0], "conflict")

	// History and agreement.
	var hist []schema.Lease
	if err := a.st.View(func(tx *store.Tx) error { var err error; hist, err = tx.LeaseHistory("HCM001"); return err }); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Active != "bk1" || hist[1].Active != "wa" {
		t.Fatalf("history: %+v", hist)
	}
	ha, _ := a.st.StateHash()
	hb2, _ := b.st.StateHash()
	if ha != hb2 {
		t.Fatal("two members applying the same lease entries differ")
	}
}

// TestFSMHandbackForce moves the lease without the holder, whose late
// ops at its epoch still merge.
func TestFSMHandbackForce(t *testing.T) {
	wa := newOrigin("wa", schema.PeerWard, "HCM001")
	bk1 := newOrigin("bk1", schema.PeerBackup, "HCM001")
	f := newTestFSM(t)
	f.ApplyBatch([]*raft.Log{entry(t, 1, wa.register(), bk1.register())})
	res := f.ApplyBatch([]*raft.Log{entry(t, 2, lease(LeaseFailover, "HCM001", "bk1", 0))})[0].(*entryResult).Results[0]
	if res.Code != "" {
		t.Fatal(res.Err)
	}
	force := lease(LeaseHandback, "HCM001", "", 1)
	force.Lease.Force = true
	res = f.ApplyBatch([]*raft.Log{entry(t, 3, force)})[0].(*entryResult).Results[0]
	if res.Code != "" || res.Lease.Epoch != 2 || res.Lease.Active != "wa" {
		t.Fatalf("forced handback: %+v", res)
	}
	res = f.ApplyBatch([]*raft.Log{entry(t, 4, bk1.push(bk1.op("HCM001", "01M845RJX5TY05VRQ5B5H4B001", 1)))})[0].(*entryResult).Results[0]
	if res.Code != "" || res.Applied != 1 {
		t.Fatalf("late op of the backup after a forced handback: %+v", res)
	}
}

// FuzzLeaseChangeBody feeds arbitrary request bodies to the lease API's
// decoding and checks: no panic, and a body it accepts has a valid shape
// (a failover names its target) and survives a round trip.
func FuzzLeaseChangeBody(f *testing.F) {
	f.Add([]byte(`{"to":"bk1","reason":"lũ lụt","expect_epoch":0}`), true)
	f.Add([]byte(`{"expect_epoch":3,"force":true}`), false)
	f.Add([]byte(`{"to":"BK 1","expect_epoch":-1}`), true)
	f.Add([]byte(`{"to":"bk1"}`), true)
	f.Add([]byte(`{"reason":"\xff","expect_epoch":1}`), false)
	f.Fuzz(func(t *testing.T, data []byte, failover bool) {
		op := LeaseHandback
		if failover {
			op = LeaseFailover
		}
		var in leaseChangeRequest
		if json.Unmarshal(data, &in) != nil {
			return
		}
		ch, err := in.change(op, "HCM001")
		if err != nil {
			return
		}
		if failover && ch.To == "" {
			t.Fatalf("accepted a failover without a target: %s", data)
		}
		if ch.Force && failover {
			t.Fatalf("accepted force on a failover: %s", data)
		}
		b, _ := json.Marshal(ch)
		var again schema.LeaseChange
		if err := json.Unmarshal(b, &again); err != nil || again != ch {
			t.Fatalf("round trip: %+v vs %+v", again, ch)
		}
	})
}

// attach makes the origin's next op: an attach of m to dossier d.
func (o *origin) attach(ward, d string, epoch uint64, m *schema.Manifest) schema.Op {
	o.seq++
	op := schema.Op{ID: schema.OpID{Origin: o.name, Seq: o.seq}, Ward: ward, Dossier: d, HLC: schema.NewHLC(1_790_000_000_000+int64(o.seq), 0),
		Actor: schema.Actor{ID: "hoa", Role: schema.RoleClerk}, Kind: schema.KindAttach, Epoch: epoch, Prev: o.prev,
		Body: schema.MarshalBody(schema.NewAttachBody("scan.pdf", m))}
	op.Sign(o.key)
	o.prev = op.Hash()
	return op
}

// TestFSMLeaseReviewCases: the cases a review found. Retried and
// same-millisecond requests are told apart by ID; a pending handback is
// protected although it keeps the epoch; a release waits for the
// holder's scans; a handback goes to the office's latest node.
func TestFSMLeaseReviewCases(t *testing.T) {
	wa := newOrigin("wa", schema.PeerWard, "HCM001")
	bk1 := newOrigin("bk1", schema.PeerBackup, "HCM001")
	bk2 := newOrigin("bk2", schema.PeerBackup, "HCM001")
	f := newTestFSM(t)
	index := uint64(0)
	apply := func(cmds ...Command) []Result {
		t.Helper()
		index++
		return f.ApplyBatch([]*raft.Log{entry(t, index, cmds...)})[0].(*entryResult).Results
	}
	want := func(step string, r Result, code string) {
		t.Helper()
		if r.Code != code {
			t.Fatalf("%s: code %q (%s), want %q", step, r.Code, r.Err, code)
		}
	}
	withID := func(c Command, id string) Command { c.Lease.ID = id; return c }
	apply(wa.register(), bk1.register(), bk2.register())

	// Same operator, same millisecond, same epoch read: one wins.
	a, b := withID(lease(LeaseFailover, "HCM001", "bk1", 0), "req-a"), withID(lease(LeaseFailover, "HCM001", "bk2", 0), "req-b")
	rs := apply(a, b)
	want("first", rs[0], "")
	want("second, same millisecond", rs[1], "conflict")
	// A pending handback: a failover that read the same epoch, or a
	// handback elsewhere, is refused; the same handback again is done.
	hb := withID(lease(LeaseHandback, "HCM001", "", 1), "req-hb")
	want("handback", apply(hb)[0], "")
	want("failover over a pending handback", apply(withID(lease(LeaseFailover, "HCM001", "bk2", 1), "req-c"))[0], "conflict")
	want("the handback retried", apply(hb)[0], "")
	// A new node of the office registers (its disk was lost): a forced
	// handback with no target goes to it.
	wa2 := newOrigin("wa2", schema.PeerWard, "HCM001")
	apply(wa2.register())
	force := withID(lease(LeaseHandback, "HCM001", "", 1), "req-force")
	force.Lease.Force = true
	r := apply(force)[0]
	want("forced handback", r, "")
	if r.Lease.Active != "wa2" || r.Lease.Epoch != 2 {
		t.Fatalf("forced handback went to %+v, want wa2 at epoch 2", r.Lease)
	}
	// The first failover retried after all this: done, with its epoch.
	r = apply(a)[0]
	want("failover retried after the lease moved on", r, "")
	if r.Lease.Epoch != 1 || r.Lease.Active != "bk1" {
		t.Fatalf("retried failover answered %+v", r.Lease)
	}
	want("forced handback retried", apply(force)[0], "")

	// A release waits for the holder's scans.
	want("failover to bk2", apply(withID(lease(LeaseFailover, "HCM001", "bk2", 2), "req-d"))[0], "")
	d := "01M845RJX5TY05VRQ5B5H4C001"
	m := testManifest()
	want("bk2 creates and attaches", apply(bk2.push(bk2.op("HCM001", d, 3), bk2.attach("HCM001", d, 3, &m)))[0], "")
	want("handback", apply(withID(lease(LeaseHandback, "HCM001", "", 3), "req-e"))[0], "")
	release := Command{Kind: KindLease, Lease: &LeaseCmd{Op: LeaseRelease, Ward: "HCM001", By: "bk2", Expect: 3, LastSeq: bk2.seq, At: 1, ID: "req-rel"}}
	r = apply(release)[0]
	want("release with a scan not uploaded", r, "conflict")
	if !strings.Contains(r.Err, "not uploaded") {
		t.Fatalf("release refusal: %s", r.Err)
	}
	want("bk2 uploads the scan", apply(Command{Kind: KindBlob, Blob: NewBlobCmd(&m, "bk2")})[0], "")
	release.Lease.ID = "req-rel2"
	r = apply(release)[0]
	want("release", r, "")
	if r.Lease.Active != "wa2" || r.Lease.By != "admin" {
		t.Fatalf("after release: %+v", r.Lease)
	}
	want("release retried", apply(release)[0], "")
}
