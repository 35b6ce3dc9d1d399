package cluster

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// TestFSMLeaseReleaseIndependentOfBatching: a lease command decides from
// scans of the store (scans held for the holder, the partition head, the
// ward's home), and a store scan does not see what earlier entries of the
// same write staged. Members group committed entries into FSM batches
// differently (the leader applies as entries commit, a follower catching
// up applies many at once), so such a decision must not depend on the
// grouping. Found by the chaos driver (docs/reliability.md, seed 2005):
// a release applied in the same batch as the blob command that released
// the backup's last held scan was refused on two members and accepted on
// the third; the members diverged (lease epochs, then every op the backup
// pushed in the epoch only one member knew).
func TestFSMLeaseReleaseIndependentOfBatching(t *testing.T) {
	// The same committed log, given to members that batch it differently.
	log := func() []*raft.Log {
		wa := newOrigin("wa", schema.PeerWard, "HCM001")
		bk := newOrigin("bk", schema.PeerBackup, "HCM001")
		m := testManifest()
		d := "01M845RJX5TY05VRQ5B5H4C001"
		cmds := [][]Command{
			{wa.register(), bk.register()},
			{lease(LeaseFailover, "HCM001", "bk", 0)},
			{bk.push(bk.op("HCM001", d, 1), bk.attach("HCM001", d, 1, &m))},
			{lease(LeaseHandback, "HCM001", "", 1)},
			// The holder releases while its scan is still held: refused.
			{{Kind: KindLease, Lease: &LeaseCmd{Op: LeaseRelease, Ward: "HCM001", By: "bk", Expect: 1, LastSeq: 2, At: 1, ID: "rel-1"}}},
			{{Kind: KindBlob, Blob: NewBlobCmd(&m, "bk")}},
			// Once the scan is on a majority: done.
			{{Kind: KindLease, Lease: &LeaseCmd{Op: LeaseRelease, Ward: "HCM001", By: "bk", Expect: 1, LastSeq: 2, At: 2, ID: "rel-2"}}},
		}
		var out []*raft.Log
		for i, c := range cmds {
			out = append(out, entry(t, uint64(i+1), c...))
		}
		return out
	}()
	type outcome struct {
		codes []string // each entry's first result code
		lease schema.Lease
	}
	apply := func(batches ...[]*raft.Log) outcome {
		f := newTestFSM(t)
		var o outcome
		for _, b := range batches {
			for _, r := range f.ApplyBatch(b) {
				res := r.(*entryResult).Results
				o.codes = append(o.codes, res[0].Code)
			}
		}
		if err := f.st.View(func(tx *store.Tx) error {
			var err error
			o.lease, err = tx.Lease("HCM001")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return o
	}
	one := func(i int) []*raft.Log { return log[i : i+1] }
	groupings := map[string][][]*raft.Log{
		"one entry at a time":                     {one(0), one(1), one(2), one(3), one(4), one(5), one(6)},
		"all at once (a follower catching up)":    {log},
		"the release with the blob that freed it": {log[:5], log[5:]},
		"the first release with the held scan":    {log[:2], log[2:5], log[5:]},
		"the second release alone after the rest": {log[:6], log[6:]},
	}
	want := []string{"", "", "", "", "conflict", "", ""}
	for name, g := range groupings {
		t.Run(name, func(t *testing.T) {
			got := apply(g...)
			for i := range want {
				if got.codes[i] != want[i] {
					t.Errorf("entry %d: code %q, want %q (all: %q)", i+1, got.codes[i], want[i], got.codes)
				}
			}
			if got.lease.Epoch != 2 || got.lease.Active != "wa" || got.lease.HandbackTo != "" {
				t.Errorf("lease at the end: %+v, want epoch 2 at wa", got.lease)
			}
		})
	}
}

// TestFSMBlobCommandTwiceIndependentOfBatching: the same blob command
// committed twice (a proposal retried across a leader change) releases
// the held attach op once, however the entries are batched.
func TestFSMBlobCommandTwiceIndependentOfBatching(t *testing.T) {
	bk := newOrigin("bk", schema.PeerWard, "HCM001")
	m := testManifest()
	d := "01M845RJX5TY05VRQ5B5H4C001"
	cmds := [][]Command{
		{bk.register()},
		{bk.push(bk.op("HCM001", d, 0), bk.attach("HCM001", d, 0, &m))},
		{{Kind: KindBlob, Blob: NewBlobCmd(&m, "bk")}},
		{{Kind: KindBlob, Blob: NewBlobCmd(&m, "bk")}},
	}
	var log []*raft.Log
	for i, c := range cmds {
		log = append(log, entry(t, uint64(i+1), c...))
	}
	history := func(batches ...[]*raft.Log) (int, []string) {
		f := newTestFSM(t)
		for _, b := range batches {
			f.ApplyBatch(b)
		}
		var n int
		if err := f.st.View(func(tx *store.Tx) error {
			dd, ok, err := tx.Dossier(d)
			if !ok && err == nil {
				t.Fatal("no dossier")
			}
			n = len(dd.History)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n, changesOf(t, f, "HCM001")
	}
	n1, c1 := history(log[:1], log[1:2], log[2:3], log[3:4])
	n2, c2 := history(log[:2], log[2:])
	if n1 != 2 || n2 != n1 || len(c1) != len(c2) {
		t.Fatalf("one entry at a time: %d events, changes %v; the blob commands in one batch: %d events, changes %v", n1, c1, n2, c2)
	}
}

// BenchmarkFSMApplyCatchUp measures a follower catching up: 256 entries
// of 8 pushed creates each, applied in one batch (one store write), so
// the cost of scans that see the write's staged changes shows.
func BenchmarkFSMApplyCatchUp(b *testing.B) {
	bf := newBenchFSM(b)
	wa, next := bf.wa, bf.next
	n := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		logs := make([]*raft.Log, 256)
		for i := range logs {
			ops := make([]schema.Op, 8)
			for j := range ops {
				n++
				ops[j] = wa.op("HCM001", fmt.Sprintf("01M845RJX5TY05VRQ5B%07d", n), 0)
			}
			logs[i] = next(wa.push(ops...))
		}
		b.StartTimer()
		bf.apply(logs)
	}
	b.ReportMetric(float64(b.N*256*8)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkFSMApplyCatchUpExisting: the same for notes on dossiers that
// exist already (64 entries of 100 ops, each on its own dossier): each op
// reads its dossier's ops with a scan, inside the batch's write, after the
// earlier ops of the batch were staged.
func BenchmarkFSMApplyCatchUpExisting(b *testing.B) {
	bf := newBenchFSM(b)
	wa, next, apply := bf.wa, bf.next, bf.apply
	const entries, perEntry = 64, 100
	ids := make([]string, entries*perEntry)
	for e := range entries {
		ops := make([]schema.Op, perEntry)
		for j := range ops {
			ids[e*perEntry+j] = fmt.Sprintf("01M845RJX5TY05VRQ5B%07d", e*perEntry+j)
			ops[j] = wa.op("HCM001", ids[e*perEntry+j], 0)
		}
		apply([]*raft.Log{next(wa.push(ops...))})
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		logs := make([]*raft.Log, entries)
		for e := range logs {
			ops := make([]schema.Op, perEntry)
			for j := range ops {
				ops[j] = wa.note("HCM001", ids[e*perEntry+j])
			}
			logs[e] = next(wa.push(ops...))
		}
		b.StartTimer()
		apply(logs)
	}
	b.ReportMetric(float64(b.N*entries*perEntry)/b.Elapsed().Seconds(), "ops/s")
}

// note makes the origin's next op: a note on dossier d.
func (o *origin) note(ward, d string) schema.Op {
	o.seq++
	op := schema.Op{ID: schema.OpID{Origin: o.name, Seq: o.seq}, Ward: ward, Dossier: d, HLC: schema.NewHLC(1_790_000_000_000+int64(o.seq), 0),
		Actor: schema.Actor{ID: "hoa", Role: schema.RoleClerk}, Kind: schema.KindAnnotate, Prev: o.prev,
		Body: schema.MarshalBody(schema.AnnotateBody{Text: "gọi lại"})}
	op.Sign(o.key)
	o.prev = op.Hash()
	return op
}

// benchFSM is an FSM on a real store with one registered ward origin, and
// the means to make and apply its next entries.
type benchFSM struct {
	b     *testing.B
	f     *fsm
	wa    *origin
	index uint64
}

func newBenchFSM(b *testing.B) *benchFSM {
	st, err := store.Open(store.Options{Dir: b.TempDir(), Create: true, MemTableSize: fsmMemTable})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	bf := &benchFSM{b: b, f: &fsm{st: st, log: slog.New(slog.DiscardHandler)}, wa: newOrigin("wa", schema.PeerWard, "HCM001"), index: 1}
	bf.apply([]*raft.Log{bf.next(bf.wa.register())})
	return bf
}

// next makes the next committed entry.
func (bf *benchFSM) next(cmds ...Command) *raft.Log {
	data, err := EncodeEntry(cmds)
	if err != nil {
		bf.b.Fatal(err)
	}
	bf.index++
	return &raft.Log{Index: bf.index, Term: 1, Type: raft.LogCommand, Data: data}
}

// apply applies logs in one batch; every command must be accepted.
func (bf *benchFSM) apply(logs []*raft.Log) {
	for _, r := range bf.f.ApplyBatch(logs) {
		if res := r.(*entryResult); res.Err != nil || res.Results[0].Code != "" {
			bf.b.Fatalf("entry refused: %+v", res)
		}
	}
}
