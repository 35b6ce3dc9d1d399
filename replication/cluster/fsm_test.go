package cluster

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

func newTestFSM(t *testing.T) *fsm {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir(), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fsm{st: st, log: slog.New(slog.DiscardHandler)}
}

func entry(t *testing.T, index uint64, cmds ...Command) *raft.Log {
	t.Helper()
	data, err := EncodeEntry(cmds)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func portal(i int) Command {
	return Command{Kind: KindPortal, Portal: &PortalCmd{
		Dossier: fmt.Sprintf("01M845RJX5TY05VRQ5B5H4E%03d", i), Ward: "HCM001", Procedure: "birth-registration",
		Applicant: schema.Applicant{Name: fmt.Sprintf("Công dân %d", i), IDNumber: "079123456789"},
		HLC:       schema.NewHLC(1_790_000_000_000+int64(i), 0), ReceivedAt: 1_790_000_000_000 + int64(i), DueAt: 1_790_100_000_000,
		Actor: schema.Actor{ID: "portal", Name: "portal", Role: schema.RoleSystem},
	}}
}

// wardOps makes signed ops of a ward origin: creates and a transition.
func wardOps(t *testing.T, n int) []schema.Op {
	_, key, _ := ed25519.GenerateKey(nil)
	var ops []schema.Op
	var prev [32]byte
	for i := 1; i <= n; i++ {
		op := schema.Op{ID: schema.OpID{Origin: "hcm001-a", Seq: uint64(i)}, Ward: "HCM001",
			Dossier: fmt.Sprintf("01M845RJX5TY05VRQ5B5H4W%03d", (i+1)/2), HLC: schema.NewHLC(1_790_000_000_000+int64(i), 0),
			Actor: schema.Actor{ID: "hoa", Role: schema.RoleClerk}, Prev: prev}
		if i%2 == 1 {
			op.Kind, op.Body = schema.KindCreate, schema.MarshalBody(schema.CreateBody{Procedure: "certified-copy", ReceiptNo: fmt.Sprint(i)})
		} else {
			op.Kind, op.Body = schema.KindTransition, schema.MarshalBody(schema.TransitionBody{To: schema.StatusInReview})
		}
		op.Sign(key)
		prev = op.Hash()
		ops = append(ops, op)
	}
	return ops
}

// TestFSMDeterministicAndIdempotent is invariants 2 and 3 at the city: two
// members applying the same entries hold the same state hash; an entry
// applied again after a restart (index at or below the applied index)
// changes nothing; an op pushed twice is stored once.
func TestFSMDeterministicAndIdempotent(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	ops := wardOps(t, 10)
	logs := []*raft.Log{
		entry(t, 1, Command{Kind: KindInit, Init: &InitCmd{Node: CityOrigin, PrivateKey: key}}),
		entry(t, 2, portal(1), portal(2), Command{Kind: KindOps, Ops: ops[:6]}),
		entry(t, 3, Command{Kind: KindOps, Ops: ops[4:]}, portal(3)), // ops 5 and 6 again
		{Index: 4, Term: 1, Type: raft.LogConfiguration},
		entry(t, 5, portal(2)), // the same command again (a re-proposal): done, not applied twice
		entry(t, 6, func() Command { c := portal(2); c.Portal.HLC++; return c }()), // another command, same ID: refused
	}
	a, b := newTestFSM(t), newTestFSM(t)
	ra := a.ApplyBatch(logs)
	for _, l := range logs {
		b.Apply(l) // one at a time on the other member
	}
	ha, _ := a.st.StateHash()
	hb, _ := b.st.StateHash()
	if ha != hb {
		t.Fatal("two members applying the same entries differ")
	}
	res := ra[2].(*entryResult).Results
	if res[0].Applied != 4 {
		t.Fatalf("second push stored %d ops, want 4 (2 were duplicates)", res[0].Applied)
	}
	if r := ra[4].(*entryResult).Results[0]; r.Code != "" || r.Dossier == nil || r.Dossier.ReceiptNo != ra[1].(*entryResult).Results[1].Dossier.ReceiptNo {
		t.Fatalf("re-proposed portal command: %+v, want the same dossier", r)
	}
	if r := ra[5].(*entryResult).Results[0]; r.Code != "conflict" {
		t.Fatalf("another command with an existing dossier ID: %+v, want conflict", r)
	}
	p1 := ra[1].(*entryResult).Results[0].Dossier
	if p1 == nil || p1.ReceiptNo == "" || p1.Origin != CityOrigin {
		t.Fatalf("portal result %+v", p1)
	}
	// Replay after a restart: nothing moves.
	a.ApplyBatch(logs)
	if h, _ := a.st.StateHash(); h != ha {
		t.Fatal("re-applying entries at or below the applied index changed the state")
	}
	var hw, seq uint64
	a.st.View(func(tx *store.Tx) error {
		hw, _ = tx.HighWater("hcm001-a")
		seq, _ = tx.LastSeq()
		return nil
	})
	if hw != 10 || seq != 3 {
		t.Fatalf("high-water %d (want 10), city seq %d (want 3)", hw, seq)
	}
	var changes []store.Change
	a.st.View(func(tx *store.Tx) error {
		var err error
		changes, err = tx.Changes("HCM001", 0, 100)
		return err
	})
	if len(changes) != 13 { // 10 ward ops + 3 portal creates
		t.Fatalf("change index has %d entries, want 13", len(changes))
	}
	for i := 1; i < len(changes); i++ {
		if changes[i].Index < changes[i-1].Index {
			t.Fatal("change index out of commit order")
		}
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

// TestFSMSnapshotRestore: Persist streams the state while Apply goes on,
// and Restore on another member gives the snapshot's state hash.
func TestFSMSnapshotRestore(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	a := newTestFSM(t)
	a.ApplyBatch([]*raft.Log{entry(t, 1, Command{Kind: KindInit, Init: &InitCmd{Node: CityOrigin, PrivateKey: key}}), entry(t, 2, portal(1), portal(2))})
	want, _ := a.st.StateHash()
	snap, _ := a.Snapshot()
	a.ApplyBatch([]*raft.Log{entry(t, 3, portal(3))}) // after the snapshot
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	b := newTestFSM(t)
	if err := b.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.st.StateHash(); got != want {
		t.Fatal("restored state differs from the snapshot")
	}
}

func TestEntryCodecRoundTrip(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	cmds := []Command{{Kind: KindInit, Init: &InitCmd{Node: "city", PrivateKey: key}}, portal(7), {Kind: KindOps, Ops: wardOps(t, 3)}}
	b, err := EncodeEntry(cmds)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEntry(b)
	if err != nil || len(got) != 3 || got[1].Portal.Dossier != cmds[1].Portal.Dossier || got[2].Ops[2].Hash() != cmds[2].Ops[2].Hash() {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for i := 0; i < len(b); i++ {
		if _, err := DecodeEntry(b[:i]); err == nil {
			t.Fatalf("truncated entry (%d of %d bytes) decoded", i, len(b))
		}
	}
}

// FuzzDecodeEntry: entries arrive from other members; no input panics,
// and what decodes re-encodes to something that decodes the same.
func FuzzDecodeEntry(f *testing.F) {
	b, _ := EncodeEntry([]Command{portal(1)})
	f.Add(b)
	f.Add([]byte{entryVersion, 1, byte(KindOps), 1, 0})
	b, _ = EncodeEntry([]Command{lease(LeaseFailover, "HCM001", "bk1", 0), {Kind: KindLease, Lease: &LeaseCmd{Op: LeaseRelease, Ward: "HCM001", By: "bk1", Expect: 1, LastSeq: 9}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := DecodeEntry(data)
		if err != nil {
			return
		}
		again, err := EncodeEntry(cmds)
		if err != nil {
			t.Fatalf("decoded entry does not re-encode: %v", err)
		}
		if _, err := DecodeEntry(again); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
	})
}

// BenchmarkFSMApplyPortal measures the FSM applying portal intake: one
// Raft entry of 10 portal commands per apply (each apply one fsync).
func BenchmarkFSMApplyPortal(b *testing.B) {
	st, err := store.Open(store.Options{Dir: b.TempDir(), Create: true, MemTableSize: fsmMemTable})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	f := &fsm{st: st, log: slog.New(slog.DiscardHandler)}
	_, key, _ := ed25519.GenerateKey(nil)
	data, _ := EncodeEntry([]Command{{Kind: KindInit, Init: &InitCmd{Node: CityOrigin, PrivateKey: key}}})
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: data}})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmds := make([]Command, 10)
		for j := range cmds {
			cmds[j] = portal(i*10 + j)
			cmds[j].Portal.Dossier = fmt.Sprintf("01M845RJX5TY05VRQ5B%07d", i*10+j)
		}
		data, _ := EncodeEntry(cmds)
		f.ApplyBatch([]*raft.Log{{Index: uint64(i + 2), Type: raft.LogCommand, Data: data}})
	}
	b.ReportMetric(float64(b.N*10)/b.Elapsed().Seconds(), "commands/s")
}
