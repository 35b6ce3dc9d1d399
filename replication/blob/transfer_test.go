package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

func openStore(t testing.TB) *blobstore.Store {
	t.Helper()
	s, err := blobstore.Open(blobstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pdf returns a PDF-looking blob of n bytes.
func pdf(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	copy(b, "%PDF-1.7\n")
	return b
}

func importBlob(t testing.TB, s *blobstore.Store, data []byte) schema.Manifest {
	t.Helper()
	m, err := s.Import(context.Background(), bytes.NewReader(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cutConn passes writes through until limit bytes have gone, then fails
// every write and closes: the link cut at that byte.
type cutConn struct {
	net.Conn
	left atomic.Int64
}

func (c *cutConn) Write(p []byte) (int, error) {
	if c.left.Add(-int64(len(p))) < 0 {
		c.Conn.Close()
		return 0, io.ErrClosedPipe
	}
	return c.Conn.Write(p)
}

// transfer runs one send/receive over an in-memory pipe. cutAfter > 0 cuts
// the sender's side after that many bytes. It returns how many chunks the
// sender wrote and the receive error.
func transfer(t testing.TB, src, dst *blobstore.Store, m *schema.Manifest, cutAfter int64) (int, error) {
	t.Helper()
	return transferOpts(t, src, dst, m, cutAfter, Options{})
}

// transferOpts is transfer with the receiver's options.
func transferOpts(t testing.TB, src, dst *blobstore.Store, m *schema.Manifest, cutAfter int64, ro Options) (int, error) {
	t.Helper()
	a, b := net.Pipe()
	var w net.Conn = a
	if cutAfter > 0 {
		cc := &cutConn{Conn: a}
		cc.left.Store(cutAfter)
		w = cc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sent := 0
	sendDone := make(chan error, 1)
	go func() {
		_, err := send(ctx, w, wire.NewReader(a, maxFrame), src, m, Options{Sent: func(int, int) { sent++ }})
		a.Close()
		sendDone <- err
	}()
	err := receive(ctx, b, wire.NewReader(b, maxFrame), dst, m, ro, nil)
	b.Close()
	<-sendDone
	return sent, err
}

func blobBytes(t *testing.T, s *blobstore.Store, h [32]byte) []byte {
	t.Helper()
	r, err := s.Open(h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTransferMovesOnlyMissingChunks(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	data := pdf(t, 5*schema.ChunkSize+123)
	m := importBlob(t, src, data)
	// The receiver already holds chunks 1 and 3 (dedupe across blobs).
	for _, i := range []int{1, 3} {
		c, _ := src.Chunk(m.Chunks[i])
		if err := dst.PutChunk(m.Chunks[i], c); err != nil {
			t.Fatal(err)
		}
	}
	sent, err := transfer(t, src, dst, &m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sent != 4 {
		t.Fatalf("sent %d chunks, want the 4 the receiver lacked", sent)
	}
	if got := blobBytes(t, dst, m.Hash); sha256.Sum256(got) != m.Hash || !bytes.Equal(got, data) {
		t.Fatal("received blob differs from the original")
	}
	// Again: nothing moves.
	if sent, err = transfer(t, src, dst, &m, 0); err != nil || sent != 0 {
		t.Fatalf("second transfer sent %d chunks (err %v), want 0", sent, err)
	}
}

// TestTransferCutAtAnyByteResendsAtMostOneChunk cuts the link at many
// points; each retry resumes at the first chunk the receiver lacks, so
// across all the cuts at most one chunk per cut is sent twice.
func TestTransferCutAtAnyByteResendsAtMostOneChunk(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	data := pdf(t, 8*schema.ChunkSize+77)
	m := importBlob(t, src, data)
	total, cuts := 0, 0
	for _, at := range []int64{1, 100, schema.ChunkSize / 2, schema.ChunkSize + 40, 3*schema.ChunkSize + 1, 2 * schema.ChunkSize} {
		sent, err := transfer(t, src, dst, &m, at)
		total += sent
		if err == nil {
			break
		}
		cuts++
	}
	sent, err := transfer(t, src, dst, &m, 0)
	if err != nil {
		t.Fatal(err)
	}
	total += sent
	if cuts < 4 {
		t.Fatalf("only %d of the cuts cut anything", cuts)
	}
	if extra := total - len(m.Chunks); extra < 0 || extra > cuts {
		t.Fatalf("%d chunk writes for %d chunks over %d cuts: %d sent again, want at most %d", total, len(m.Chunks), cuts, extra, cuts)
	}
	if got := blobBytes(t, dst, m.Hash); !bytes.Equal(got, data) {
		t.Fatal("received blob differs from the original")
	}
}

// TestTransferRefusesBadChunkAndAsksAgain plays a sender that corrupts the
// first copy of chunk 1: the receiver refuses it (stores nothing for it),
// asks for it again, and stores the good copy.
func TestTransferRefusesBadChunkAndAsksAgain(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	data := pdf(t, 3*schema.ChunkSize)
	m := importBlob(t, src, data)
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bad := 0
	recvDone := make(chan error, 1)
	go func() {
		recvDone <- receive(ctx, b, wire.NewReader(b, maxFrame), dst, &m, Options{Bad: func(int) { bad++ }}, nil)
		b.Close()
	}()
	r := wire.NewReader(a, maxFrame)
	msg, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	want := msg.(*wire.BlobWant)
	if len(want.Indexes) != 3 {
		t.Fatalf("want %v, expected all 3 chunks", want.Indexes)
	}
	corrupted := false
	queue := want.Indexes
	for stored := false; !stored; {
		if len(queue) > 0 {
			i := queue[0]
			queue = queue[1:]
			c, _ := src.Chunk(m.Chunks[i])
			if i == 1 && !corrupted {
				c = bytes.Clone(c)
				c[500] ^= 0xff
				corrupted = true
			}
			if err := wire.WriteMsg(a, &wire.BlobChunk{Index: i, Data: c}); err != nil {
				t.Fatal(err)
			}
		}
		msg, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		switch x := msg.(type) {
		case *wire.BlobAck: // arrived; checked and stored meanwhile
		case *wire.BlobWant:
			if len(x.Indexes) != 1 || x.Indexes[0] != 1 {
				t.Fatalf("unexpected re-want %v", x.Indexes)
			}
			if ok, _ := dst.HasChunk(m.Chunks[1]); ok {
				t.Fatal("the corrupt chunk was stored")
			}
			queue = append(queue, 1)
		case *wire.BlobStored:
			if x.Hash != m.Hash {
				t.Fatal("BlobStored for another blob")
			}
			stored = true
		default:
			t.Fatalf("unexpected %T", msg)
		}
	}
	if err := <-recvDone; err != nil {
		t.Fatal(err)
	}
	if bad != 1 || !bytes.Equal(blobBytes(t, dst, m.Hash), data) {
		t.Fatalf("bad chunks %d; blob intact %v", bad, bytes.Equal(blobBytes(t, dst, m.Hash), data))
	}
}

// TestTransferGivesUpOnASenderThatKeepsSendingGarbage: after three corrupt
// copies of one chunk the receiver refuses the sender with bad_signature.
func TestTransferGivesUpOnASenderThatKeepsSendingGarbage(t *testing.T) {
	dst := openStore(t)
	m := schema.Manifest{Size: 10, Type: schema.TypePDF, Chunks: [][32]byte{sha256.Sum256([]byte("%PDF-1.7\n!"))}}
	m.Hash = m.Chunks[0]
	a, b := net.Pipe()
	defer a.Close()
	recvDone := make(chan error, 1)
	go func() {
		recvDone <- receive(context.Background(), b, wire.NewReader(b, maxFrame), dst, &m, Options{}, nil)
		b.Close()
	}()
	r := wire.NewReader(a, maxFrame)
	r.Read() // the want
	var last wire.Msg
	for range maxBadChunk {
		wire.WriteMsg(a, &wire.BlobChunk{Index: 0, Data: []byte("%PDF-1.7\n?")})
		if ack, _ := r.Read(); ack == nil {
			t.Fatal("no ack")
		}
		last, _ = r.Read() // a new want, or at last the refusal
	}
	e, ok := last.(*wire.Error)
	if !ok || e.Code != wire.CodeBadSignature {
		t.Fatalf("after %d corrupt copies got %#v, want an Error bad_signature", maxBadChunk, last)
	}
	if err := <-recvDone; !errors.Is(err, schema.ErrBadSignature) {
		t.Fatalf("receive: %v", err)
	}
	if st, _ := dst.Stats(); st.Chunks != 0 {
		t.Fatalf("%d chunks stored from a lying sender", st.Chunks)
	}
}

// TestTransferRefusesAChunkNotAskedFor: a sender may only send what was
// wanted.
func TestTransferRefusesAChunkNotAskedFor(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	m := importBlob(t, src, pdf(t, 2*schema.ChunkSize))
	c, _ := src.Chunk(m.Chunks[0])
	dst.PutChunk(m.Chunks[0], c)
	a, b := net.Pipe()
	defer a.Close()
	recvDone := make(chan error, 1)
	go func() {
		recvDone <- receive(context.Background(), b, wire.NewReader(b, maxFrame), dst, &m, Options{}, nil)
		b.Close()
	}()
	r := wire.NewReader(a, maxFrame)
	r.Read()
	go wire.WriteMsg(a, &wire.BlobChunk{Index: 0, Data: c})
	msg, _ := r.Read()
	if e, ok := msg.(*wire.Error); !ok || e.Code != wire.CodeBadFrame {
		t.Fatalf("got %#v, want an Error bad_frame", msg)
	}
	if err := <-recvDone; !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("receive: %v", err)
	}
}

// TestTransferRefusesForgedManifest: chunks that each match their own
// hash but are not the blob named by the manifest's hash are refused when
// the receiver checks the whole (as a member does for a ward's upload),
// and the forged manifest is not kept.
func TestTransferRefusesForgedManifest(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	m := importBlob(t, src, pdf(t, 3*schema.ChunkSize))
	forged := m
	forged.Hash = sha256.Sum256([]byte("someone else's scan"))
	_, err := transferOpts(t, src, dst, &forged, 0, Options{VerifyWhole: true})
	if !errors.Is(err, schema.ErrBadSignature) {
		t.Fatalf("forged manifest: %v, want a bad-signature refusal", err)
	}
	if _, ok, _ := dst.Manifest(forged.Hash); ok {
		t.Fatal("the forged manifest was kept")
	}
	// The honest manifest goes through, resumed from the chunks that came.
	if _, err := transferOpts(t, src, dst, &m, 0, Options{VerifyWhole: true}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := dst.Complete(m.Hash); !ok {
		t.Fatal("the honest blob is not complete")
	}
}

// TestTransferRefusesChunkOfWrongLength: a manifest whose size does not
// match its chunks is refused at the first chunk that disagrees.
func TestTransferRefusesChunkOfWrongLength(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	m := importBlob(t, src, pdf(t, 2*schema.ChunkSize))
	lie := m
	lie.Size -= 5 // still two chunks, but the last should be 5 bytes shorter
	_, err := transfer(t, src, dst, &lie, 0)
	if !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("chunk longer than the manifest says: %v, want invalid", err)
	}
}

// TestTransferProveAsksForAChunkAlreadyHeld: a receiver that holds every
// chunk still asks for one when told to make the sender prove it has the
// content; a sender without it fails.
func TestTransferProveAsksForAChunkAlreadyHeld(t *testing.T) {
	src, dst := openStore(t), openStore(t)
	m := importBlob(t, src, pdf(t, 2*schema.ChunkSize))
	if _, err := transfer(t, src, dst, &m, 0); err != nil {
		t.Fatal(err)
	}
	sent, err := transferOpts(t, src, dst, &m, 0, Options{Prove: true})
	if err != nil || sent != 1 {
		t.Fatalf("proof: %d chunks sent (%v), want 1", sent, err)
	}
	empty := openStore(t) // knows the manifest, has no chunk
	if _, err := transferOpts(t, empty, dst, &m, 0, Options{Prove: true}); err == nil {
		t.Fatal("a sender without the content passed the proof")
	}
}
