package cluster

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// attachOps makes a ward origin's chained ops: a create, an attach of m,
// then a transition made after the attach.
func attachOps(t *testing.T, m *schema.Manifest) []schema.Op {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	dossier := "01M845RJX5TY05VRQ5B5H4WA01"
	bodies := []struct {
		kind schema.Kind
		body any
	}{
		{schema.KindCreate, schema.CreateBody{Procedure: "certified-copy", ReceiptNo: "R1"}},
		{schema.KindAttach, schema.NewAttachBody("id-card.pdf", m)},
		{schema.KindTransition, schema.TransitionBody{To: schema.StatusInReview}},
	}
	var ops []schema.Op
	var prev [32]byte
	for i, b := range bodies {
		op := schema.Op{ID: schema.OpID{Origin: "hcm001-a", Seq: uint64(i + 1)}, Ward: "HCM001", Dossier: dossier,
			HLC: schema.NewHLC(1_790_000_000_000+int64(i), 0), Actor: schema.Actor{ID: "hoa", Role: schema.RoleClerk},
			Kind: b.kind, Body: schema.MarshalBody(b.body), Prev: prev}
		op.Sign(key)
		prev = op.Hash()
		ops = append(ops, op)
	}
	return ops
}

func testManifest() schema.Manifest {
	chunk := sha256.Sum256([]byte("chunk"))
	return schema.Manifest{Hash: sha256.Sum256([]byte("blob")), Size: 2*schema.ChunkSize + 5, Type: schema.TypePDF,
		Chunks: [][32]byte{chunk, chunk, sha256.Sum256([]byte("tail"))}}
}

func changesOf(t *testing.T, f *fsm, ward string) []string {
	t.Helper()
	var out []string
	f.st.View(func(tx *store.Tx) error {
		ch, err := tx.Changes(ward, 0, 1000)
		for _, c := range ch {
			out = append(out, fmt.Sprintf("%s@%d", c.Op.ID, c.Index))
		}
		return err
	})
	return out
}

// TestFSMHoldsAttachUntilBlobOnMajority: an attach op pushed before its
// blob is on a majority takes its place in the origin's log (the ward's
// later transition is applied at once: metadata first) but is neither
// folded into the dossier nor offered to pulls until the blob command
// commits; then it is, at that command's index. Both members agree, and
// a snapshot taken in between restores the held op.
func TestFSMHoldsAttachUntilBlobOnMajority(t *testing.T) {
	m := testManifest()
	ops := attachOps(t, &m)
	pusher := &Pusher{Node: "hcm001-a", Wards: []string{"HCM001"}, Role: schema.PeerWard}
	a, b := newTestFSM(t), newTestFSM(t)
	push := entry(t, 1, Command{Kind: KindOps, Ops: ops, Pusher: pusher})
	res := a.ApplyBatch([]*raft.Log{push})[0].(*entryResult).Results[0]
	b.Apply(push)
	if res.Code != "" || res.Applied != 3 || res.HighWater != 3 {
		t.Fatalf("push: %+v, want all 3 ops taken (high water 3)", res)
	}
	var d schema.Dossier
	a.st.View(func(tx *store.Tx) error { d, _, _ = tx.Dossier(ops[0].Dossier); return nil })
	if d.Status != schema.StatusInReview || len(d.Attachments) != 0 {
		t.Fatalf("before the blob is stored: status %s, %d attachments; want in_review and none", d.Status, len(d.Attachments))
	}
	if got := changesOf(t, a, "HCM001"); len(got) != 2 {
		t.Fatalf("partition offers %v before the blob is stored; want only the create and the transition", got)
	}
	snap := newTestFSM(t)
	sn, _ := a.Snapshot()
	var sink bufSink
	if err := sn.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	sn.Release()
	if err := snap.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}

	stored := entry(t, 2, Command{Kind: KindBlob, Blob: NewBlobCmd(&m, "hcm001-a")})
	for _, f := range []*fsm{a, b, snap} {
		r := f.ApplyBatch([]*raft.Log{stored})[0].(*entryResult).Results[0]
		if r.Code != "" || r.Applied != 1 {
			t.Fatalf("blob command: %+v, want the 1 held op applied", r)
		}
	}
	a.st.View(func(tx *store.Tx) error { d, _, _ = tx.Dossier(ops[0].Dossier); return nil })
	if len(d.Attachments) != 1 || d.Attachments[0].Hash != m.HashHex() || d.Status != schema.StatusInReview {
		t.Fatalf("after the blob is stored: %+v", d.Attachments)
	}
	if got := changesOf(t, a, "HCM001"); len(got) != 3 || got[2] != "hcm001-a/2@2" {
		t.Fatalf("partition %v, want the attach op offered at the blob command's index 2", got)
	}
	// A member catching up gets the push and the blob command in one
	// batch (one store write): the op held and released in it is applied.
	caught := newTestFSM(t)
	caught.ApplyBatch([]*raft.Log{push, stored})
	ha, _ := a.st.StateHash()
	hb, _ := b.st.StateHash()
	hs, _ := snap.st.StateHash()
	hc, _ := caught.st.StateHash()
	if ha != hb || ha != hs || ha != hc {
		t.Fatalf("members disagree after the blob command (one-by-one %v, from snapshot %v, one batch %v)", ha == hb, ha == hs, ha == hc)
	}
	var refs []string
	a.st.View(func(tx *store.Tx) error { refs, _ = tx.BlobRefs(m.Hash); return nil })
	if len(refs) != 1 || refs[0] != ops[0].Dossier {
		t.Fatalf("blob refs %v", refs)
	}
	// The same content attached by another office is held too, until that
	// office has uploaded it itself: knowing a hash is not having the scan
	// (else any ward could attach a hash it saw and then read the scan).
	again := attachOps(t, &m)
	for i := range again {
		again[i].ID.Origin = "hcm001-b"
		again[i].Dossier = "01M845RJX5TY05VRQ5B5H4WA02"
	}
	_, key, _ := ed25519.GenerateKey(nil)
	var prev [32]byte
	for i := range again {
		again[i].Prev = prev
		again[i].Sign(key)
		prev = again[i].Hash()
	}
	a.ApplyBatch([]*raft.Log{entry(t, 3, Command{Kind: KindOps, Ops: again, Pusher: &Pusher{Node: "hcm001-b", Wards: []string{"HCM001"}, Role: schema.PeerWard}})})
	a.st.View(func(tx *store.Tx) error { d, _, _ = tx.Dossier(again[0].Dossier); return nil })
	if len(d.Attachments) != 0 {
		t.Fatalf("another office's attach of a stored blob was applied before it uploaded: %+v", d.Attachments)
	}
	var heldForB, heldForA bool
	a.st.View(func(tx *store.Tx) error {
		heldForB, _ = tx.HeldFor(m.Hash, "hcm001-b")
		heldForA, _ = tx.HeldFor(m.Hash, "hcm001-a")
		return nil
	})
	if !heldForB || heldForA {
		t.Fatalf("held for b %v (want true), for a %v (want false)", heldForB, heldForA)
	}
	// A's record does not release B's op; B's own does.
	r := a.ApplyBatch([]*raft.Log{entry(t, 4, Command{Kind: KindBlob, Blob: NewBlobCmd(&m, "hcm001-a")})})[0].(*entryResult).Results[0]
	if r.Applied != 0 {
		t.Fatalf("a's blob command released %d ops of b", r.Applied)
	}
	r = a.ApplyBatch([]*raft.Log{entry(t, 5, Command{Kind: KindBlob, Blob: NewBlobCmd(&m, "hcm001-b")})})[0].(*entryResult).Results[0]
	if r.Applied != 1 {
		t.Fatalf("b's blob command released %d ops, want 1", r.Applied)
	}
	a.st.View(func(tx *store.Tx) error { d, _, _ = tx.Dossier(again[0].Dossier); return nil })
	if len(d.Attachments) != 1 {
		t.Fatalf("b's attach after its upload: %+v", d)
	}
	// A different manifest under the same hash (a forgery) is refused.
	forged := m
	forged.Chunks = [][32]byte{m.Chunks[2], m.Chunks[1], m.Chunks[0]}
	r = a.ApplyBatch([]*raft.Log{entry(t, 6, Command{Kind: KindBlob, Blob: NewBlobCmd(&forged, "hcm001-b")})})[0].(*entryResult).Results[0]
	if r.Code != "invalid" {
		t.Fatalf("a second manifest for a recorded hash: %+v, want invalid", r)
	}
	var held int
	var referenced bool
	a.st.View(func(tx *store.Tx) error {
		refs, _ = tx.BlobRefs(m.Hash)
		referenced, _ = tx.BlobReferenced(m.Hash)
		held, _ = tx.HeldOps()
		return nil
	})
	if len(refs) != 2 || !referenced {
		t.Fatalf("blob refs %v (referenced %v), want both dossiers", refs, referenced)
	}
	if held != 0 {
		t.Fatalf("%d ops still held", held)
	}
}

// TestFSMRefusesBadBlobCommand: a blob command whose manifest does not
// validate changes nothing.
func TestFSMRefusesBadBlobCommand(t *testing.T) {
	f := newTestFSM(t)
	m := testManifest()
	bad := NewBlobCmd(&m, "hcm001-a")
	bad.Chunks = bad.Chunks[:1]
	r := f.Apply(entry(t, 1, Command{Kind: KindBlob, Blob: bad})).(*entryResult).Results[0]
	if r.Code != "invalid" {
		t.Fatalf("bad manifest: %+v, want invalid", r)
	}
	var ok bool
	f.st.View(func(tx *store.Tx) error { _, ok, _ = tx.BlobStored(m.Hash); return nil })
	if ok {
		t.Fatal("a bad manifest was recorded")
	}
}
