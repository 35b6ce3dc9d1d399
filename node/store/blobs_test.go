package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

var blobTestKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))

func testBlobHash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// testBlobManifest is a well-formed manifest (made-up chunk hashes).
func testBlobManifest(name string, size int64) schema.Manifest {
	m := schema.Manifest{Hash: testBlobHash(name), Size: size, Type: schema.TypePDF}
	for i := 0; i < schema.ChunkCount(size); i++ {
		m.Chunks = append(m.Chunks, testBlobHash(fmt.Sprint(name, i)))
	}
	return m
}

func testDossierID(i int) string { return fmt.Sprintf("01J%023d", i) }

func testOp(origin, ward, dossier string, hlc int64, kind schema.Kind, body []byte) schema.Op {
	return schema.Op{
		ID: schema.OpID{Origin: origin, Seq: 1}, Ward: ward, Dossier: dossier,
		HLC:   schema.NewHLC(hlc, 0),
		Actor: schema.Actor{ID: "u1", Role: schema.RoleClerk},
		Kind:  kind, Body: body,
	}
}

func attachBody(m *schema.Manifest) []byte {
	return schema.MarshalBody(schema.NewAttachBody("scan.pdf", m))
}

func mustWrite(t *testing.T, s *Store, fn func(tx *Tx) error) {
	t.Helper()
	if err := s.Write(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func view[T any](t *testing.T, s *Store, fn func(tx *Tx) (T, error)) T {
	t.Helper()
	var v T
	if err := s.View(func(tx *Tx) error {
		var err error
		v, err = fn(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func sortedHashes(hs ...[32]byte) [][32]byte {
	out := slices.Clone(hs)
	slices.SortFunc(out, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	return out
}

func TestUploadMarks(t *testing.T) {
	s := openTestStore(t)
	a, b, c := testBlobHash("a"), testBlobHash("b"), testBlobHash("c")
	pending := func(limit int) [][32]byte {
		return view(t, s, func(tx *Tx) ([][32]byte, error) { return tx.PendingUploads(limit) })
	}
	if got := pending(10); len(got) != 0 {
		t.Fatalf("fresh store has uploads pending: %x", got)
	}
	mustWrite(t, s, func(tx *Tx) error {
		tx.MarkUpload(c, 1)
		tx.MarkUpload(a, 1)
		tx.MarkUpload(b, 1)
		tx.MarkUpload(a, 1) // twice is once
		return nil
	})
	if got, want := pending(10), sortedHashes(a, b, c); !slices.Equal(got, want) {
		t.Fatalf("PendingUploads = %x, want %x in hash order", got, want)
	}
	if got, want := pending(2), sortedHashes(a, b, c)[:2]; !slices.Equal(got, want) {
		t.Fatalf("PendingUploads(2) = %x, want %x", got, want)
	}
	if got := pending(1); len(got) != 1 {
		t.Fatalf("PendingUploads(1) = %d hashes", len(got))
	}
	mustWrite(t, s, func(tx *Tx) error {
		tx.ClearUpload(b)
		tx.ClearUpload(testBlobHash("never marked"))
		return nil
	})
	if got, want := pending(10), sortedHashes(a, c); !slices.Equal(got, want) {
		t.Fatalf("after ClearUpload: %x, want %x", got, want)
	}
	// Uploads and fetches are separate lists.
	if got := view(t, s, func(tx *Tx) ([][32]byte, error) { return tx.PendingFetches(10) }); len(got) != 0 {
		t.Fatalf("upload marks show as fetches: %x", got)
	}
	mustWrite(t, s, func(tx *Tx) error { tx.ClearUpload(a); tx.ClearUpload(c); return nil })
	if got := pending(10); len(got) != 0 {
		t.Fatalf("all cleared, still pending: %x", got)
	}
}

func TestFetchMarks(t *testing.T) {
	s := openTestStore(t)
	a, b := testBlobHash("fa"), testBlobHash("fb")
	fetches := func() [][32]byte {
		return view(t, s, func(tx *Tx) ([][32]byte, error) { return tx.PendingFetches(100) })
	}
	mustWrite(t, s, func(tx *Tx) error { tx.MarkFetch(a); tx.MarkFetch(b); tx.MarkUpload(a, 1); return nil })
	if got, want := fetches(), sortedHashes(a, b); !slices.Equal(got, want) {
		t.Fatalf("PendingFetches = %x, want %x", got, want)
	}
	mustWrite(t, s, func(tx *Tx) error { tx.ClearFetch(a); return nil })
	if got := fetches(); !slices.Equal(got, [][32]byte{b}) {
		t.Fatalf("after ClearFetch: %x", got)
	}
	// Clearing the fetch left the upload mark alone.
	if got := view(t, s, func(tx *Tx) ([][32]byte, error) { return tx.PendingUploads(100) }); !slices.Equal(got, [][32]byte{a}) {
		t.Fatalf("ClearFetch touched the upload marks: %x", got)
	}
	// Marks are durable records: they survive a reopen.
	dir := t.TempDir()
	s2, err := Open(Options{Dir: dir, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s2, func(tx *Tx) error { tx.MarkFetch(a); tx.MarkUpload(b, 1); return nil })
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if got := view(t, s3, func(tx *Tx) ([][32]byte, error) { return tx.PendingFetches(10) }); !slices.Equal(got, [][32]byte{a}) {
		t.Fatalf("fetch marks after reopen: %x", got)
	}
	if got := view(t, s3, func(tx *Tx) ([][32]byte, error) { return tx.PendingUploads(10) }); !slices.Equal(got, [][32]byte{b}) {
		t.Fatalf("upload marks after reopen: %x", got)
	}
}

// TestAppendLocalIndexesBlobRef: storing this node's attach op records
// that its dossier refers to the blob; other ops, and attach ops whose
// body does not parse, refer to none.
func TestAppendLocalIndexesBlobRef(t *testing.T) {
	s := openTestStore(t)
	scan := testBlobManifest("scan", 2*schema.ChunkSize+1)
	photo := testBlobManifest("photo", 10)
	d1, d2, d3 := testDossierID(1), testDossierID(2), testDossierID(3)
	refs := func(h [32]byte) []string {
		return view(t, s, func(tx *Tx) ([]string, error) { return tx.BlobRefs(h) })
	}
	referenced := func(h [32]byte) bool {
		return view(t, s, func(tx *Tx) (bool, error) { return tx.BlobReferenced(h) })
	}
	if referenced(scan.Hash) || len(refs(scan.Hash)) != 0 {
		t.Fatal("a fresh store refers to a blob")
	}
	appendOp := func(op schema.Op) {
		t.Helper()
		mustWrite(t, s, func(tx *Tx) error { return tx.AppendLocal(&op, blobTestKey) })
	}
	appendOp(testOp("w1", "W1", d2, 100, schema.KindAttach, attachBody(&scan)))
	if got := refs(scan.Hash); !slices.Equal(got, []string{d2}) {
		t.Fatalf("BlobRefs = %q, want [%s]", got, d2)
	}
	if !referenced(scan.Hash) {
		t.Fatal("BlobReferenced false after an attach op")
	}
	if referenced(photo.Hash) {
		t.Fatal("an unrelated blob is referenced")
	}
	// The same blob attached to another dossier, and again to the first.
	appendOp(testOp("w1", "W1", d1, 101, schema.KindAttach, attachBody(&scan)))
	appendOp(testOp("w1", "W1", d2, 102, schema.KindAttach, attachBody(&scan)))
	if got := refs(scan.Hash); !slices.Equal(got, []string{d1, d2}) {
		t.Fatalf("BlobRefs = %q, want [%s %s]", got, d1, d2)
	}
	// Ops that name no blob.
	appendOp(testOp("w1", "W1", d3, 103, schema.KindAnnotate, schema.MarshalBody(schema.AnnotateBody{Text: "scan.pdf " + photo.HashHex()})))
	bad := schema.NewAttachBody("x.exe", &photo)
	bad.Type = "application/x-msdownload"
	appendOp(testOp("w1", "W1", d3, 104, schema.KindAttach, schema.MarshalBody(bad)))
	appendOp(testOp("w1", "W1", d3, 105, schema.KindAttach, []byte("{")))
	if referenced(photo.Hash) || len(refs(photo.Hash)) != 0 {
		t.Fatalf("an op that is not a valid attach op refers to blob %x: %q", photo.Hash[:4], refs(photo.Hash))
	}
	if got := refs(scan.Hash); !slices.Equal(got, []string{d1, d2}) {
		t.Fatalf("BlobRefs changed by unrelated ops: %q", got)
	}
	// The ops themselves are all stored, with gapless seqs.
	if seq := view(t, s, func(tx *Tx) (uint64, error) { return tx.LastSeq() }); seq != 6 {
		t.Fatalf("LastSeq = %d, want 6", seq)
	}
	ops := view(t, s, func(tx *Tx) ([]schema.Op, error) { return tx.DossierOps(d2) })
	if len(ops) != 2 || ops[0].Kind != schema.KindAttach {
		t.Fatalf("DossierOps(d2) = %d ops", len(ops))
	}
	if m, ok := AttachManifest(&ops[0]); !ok || m.Hash != scan.Hash || len(m.Chunks) != 3 {
		t.Fatalf("AttachManifest of a stored attach op: %v %+v", ok, m)
	}
}

// TestBlobRefsAreExactPerHash: a dossier referring to one blob never shows
// under another, even when the hashes share a prefix.
func TestBlobRefsAreExactPerHash(t *testing.T) {
	s := openTestStore(t)
	a := testBlobManifest("prefix", 10)
	b := a
	b.Hash[31] ^= 1 // same first 31 bytes
	c := a
	c.Hash[0] ^= 0x80
	d1, d2 := testDossierID(10), testDossierID(11)
	mustWrite(t, s, func(tx *Tx) error {
		op1 := testOp("w1", "W1", d1, 100, schema.KindAttach, attachBody(&a))
		if err := tx.AppendLocal(&op1, blobTestKey); err != nil {
			return err
		}
		return nil
	})
	mustWrite(t, s, func(tx *Tx) error {
		op2 := testOp("w1", "W1", d2, 101, schema.KindAttach, attachBody(&b))
		return tx.AppendLocal(&op2, blobTestKey)
	})
	for _, c := range []struct {
		h    [32]byte
		want []string
	}{{a.Hash, []string{d1}}, {b.Hash, []string{d2}}, {c.Hash, nil}} {
		got := view(t, s, func(tx *Tx) ([]string, error) { return tx.BlobRefs(c.h) })
		if !slices.Equal(got, c.want) {
			t.Fatalf("BlobRefs(%x) = %q, want %q", c.h[:4], got, c.want)
		}
		if ok := view(t, s, func(tx *Tx) (bool, error) { return tx.BlobReferenced(c.h) }); ok != (len(c.want) > 0) {
			t.Fatalf("BlobReferenced(%x) = %v", c.h[:4], ok)
		}
	}
}

// TestRemoteAndPulledOpsIndexBlobRefs: ops stored from elsewhere (the city
// FSM's PutRemoteOp, a ward's ApplyPulled) are indexed too, and a ward
// marks its own ward's blobs for a background fetch, not other wards'.
func TestRemoteAndPulledOpsIndexBlobRefs(t *testing.T) {
	city := openTestStore(t)
	scan := testBlobManifest("remote", 5)
	d := testDossierID(20)
	mustWrite(t, city, func(tx *Tx) error {
		op := testOp("w-ba-dinh-1", "W1", d, 100, schema.KindAttach, attachBody(&scan))
		op.Sign(blobTestKey)
		return tx.PutRemoteOp(&op, 7)
	})
	if got := view(t, city, func(tx *Tx) ([]string, error) { return tx.BlobRefs(scan.Hash) }); !slices.Equal(got, []string{d}) {
		t.Fatalf("PutRemoteOp: BlobRefs = %q", got)
	}

	ward := openTestStore(t)
	mustWrite(t, ward, func(tx *Tx) error {
		return tx.PutIdentity(Identity{Node: "w-ba-dinh-1", Ward: "W1", PublicKey: blobTestKey.Public().(ed25519.PublicKey), PrivateKey: blobTestKey})
	})
	own := testBlobManifest("own ward", 5)
	other := testBlobManifest("other ward", 5)
	dOwn, dOther := testDossierID(21), testDossierID(22)
	pulled := []schema.Op{
		testOp("city", "W1", dOwn, 100, schema.KindCreate, schema.MarshalBody(schema.CreateBody{Procedure: "birth-registration"})),
		testOp("w-hoan-kiem-1", "W1", dOwn, 110, schema.KindAttach, attachBody(&own)),
		testOp("w-hoan-kiem-1", "W2", dOther, 120, schema.KindAttach, attachBody(&other)),
	}
	pulled[1].ID.Seq, pulled[2].ID.Seq = 1, 2
	mustWrite(t, ward, func(tx *Tx) error { _, err := tx.ApplyPulled("W1", pulled, 3); return err })
	if got := view(t, ward, func(tx *Tx) ([]string, error) { return tx.BlobRefs(own.Hash) }); !slices.Equal(got, []string{dOwn}) {
		t.Fatalf("ApplyPulled: BlobRefs(own) = %q", got)
	}
	if got := view(t, ward, func(tx *Tx) ([]string, error) { return tx.BlobRefs(other.Hash) }); !slices.Equal(got, []string{dOther}) {
		t.Fatalf("ApplyPulled: BlobRefs(other) = %q", got)
	}
	if got := view(t, ward, func(tx *Tx) ([][32]byte, error) { return tx.PendingFetches(10) }); !slices.Equal(got, [][32]byte{own.Hash}) {
		t.Fatalf("PendingFetches = %x, want only this ward's blob %x", got, own.Hash[:4])
	}
	dossier := view(t, ward, func(tx *Tx) (schema.Dossier, error) {
		d, _, err := tx.Dossier(dOwn)
		return d, err
	})
	if len(dossier.Attachments) != 1 || dossier.Attachments[0].Hash != own.HashHex() {
		t.Fatalf("the pulled dossier's state lacks its attachment: %+v", dossier.Attachments)
	}
	// Pulled again (a retried page): nothing changes.
	mustWrite(t, ward, func(tx *Tx) error {
		n, err := tx.ApplyPulled("W1", pulled, 3)
		if n != 0 {
			return fmt.Errorf("%d ops new the second time", n)
		}
		return err
	})
	if got := view(t, ward, func(tx *Tx) ([]string, error) { return tx.BlobRefs(own.Hash) }); !slices.Equal(got, []string{dOwn}) {
		t.Fatalf("after a repeated pull: BlobRefs = %q", got)
	}
}
