package blobstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/schema"
)

// clock is a wall clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.UnixMilli(1_700_000_000_000)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openAt(t *testing.T, dir string, now func() time.Time) *blobstore.Store {
	t.Helper()
	s, err := blobstore.Open(blobstore.Options{Dir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openStore(t *testing.T) (*blobstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	return openAt(t, dir, nil), dir
}

// content returns n bytes starting with header, the rest pseudo-random
// (so no two chunks of it are alike) and fixed by seed.
func content(header string, n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	rand.NewChaCha8(s).Read(b)
	copy(b, header)
	return b
}

func pdf(n int, seed uint64) []byte { return content("%PDF-1.7\n", n, seed) }

func mustImport(t *testing.T, s *blobstore.Store, data []byte) schema.Manifest {
	t.Helper()
	m, err := s.Import(context.Background(), bytes.NewReader(data), 0)
	if err != nil {
		t.Fatalf("Import of %d bytes: %v", len(data), err)
	}
	return m
}

func stats(t *testing.T, s *blobstore.Store) blobstore.Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// assertNothingStored: no chunk, no manifest, and no staging file left.
func assertNothingStored(t *testing.T, s *blobstore.Store, dir string) {
	t.Helper()
	if st := stats(t, s); st != (blobstore.Stats{}) {
		t.Fatalf("a refused upload left %+v behind", st)
	}
	left, err := os.ReadDir(filepath.Join(dir, "incoming"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("a refused upload left %d staging files", len(left))
	}
}

// approxBytes: Stats and GC count bytes from badger's ValueSize, which
// estimates each value's header (a byte or so per chunk); the scrub, which
// reads the values, is exact.
func approxBytes(got int64, want, chunks int) bool {
	d := got - int64(want)
	return d >= -2*int64(chunks) && d <= 2*int64(chunks)
}

func readAll(t *testing.T, s *blobstore.Store, h [32]byte) []byte {
	t.Helper()
	r, err := s.Open(h)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read blob: %v", err)
	}
	return b
}

func complete(t *testing.T, s *blobstore.Store, h [32]byte) bool {
	t.Helper()
	ok, err := s.Complete(h)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func hasChunk(t *testing.T, s *blobstore.Store, h [32]byte) bool {
	t.Helper()
	ok, err := s.HasChunk(h)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestPutChunkRefusesWrongHash(t *testing.T) {
	s, _ := openStore(t)
	data := []byte("a chunk")
	h := sha256.Sum256(data)
	wrong := sha256.Sum256([]byte("another chunk"))
	for _, c := range []struct {
		name string
		h    [32]byte
		data []byte
	}{
		{"other hash", wrong, data},
		{"one byte flipped", h, append([]byte("b"), data[1:]...)},
		{"truncated", h, data[:len(data)-1]},
		{"empty", h, nil},
	} {
		err := s.PutChunk(c.h, c.data)
		if !errors.Is(err, blobstore.ErrBadChunk) || !errors.Is(err, schema.ErrInvalid) {
			t.Fatalf("%s: PutChunk = %v, want ErrBadChunk", c.name, err)
		}
		if hasChunk(t, s, c.h) {
			t.Fatalf("%s: a refused chunk was stored", c.name)
		}
	}
	if st := stats(t, s); st != (blobstore.Stats{}) {
		t.Fatalf("refused chunks left %+v", st)
	}
	if _, err := s.Chunk(h); !errors.Is(err, blobstore.ErrMissing) || !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("Chunk of a chunk never stored = %v, want ErrMissing", err)
	}
	if err := s.PutChunk(h, data); err != nil {
		t.Fatal(err)
	}
	got, err := s.Chunk(h)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Chunk = %q, %v", got, err)
	}
}

func TestPutChunkDedupes(t *testing.T) {
	s, _ := openStore(t)
	data := pdf(5000, 1)
	h := sha256.Sum256(data)
	for i := 0; i < 3; i++ {
		if err := s.PutChunk(h, data); err != nil {
			t.Fatal(err)
		}
	}
	if st := stats(t, s); st.Chunks != 1 || st.ChunkBytes != int64(len(data)) || st.Blobs != 0 {
		t.Fatalf("the same chunk three times: %+v, want one chunk of %d bytes", st, len(data))
	}
}

// manifestOf builds the manifest of data as Import would, without storing.
func manifestOf(data []byte, typ string) (schema.Manifest, [][]byte) {
	m := schema.Manifest{Hash: sha256.Sum256(data), Size: int64(len(data)), Type: typ}
	var parts [][]byte
	for off := 0; off < len(data); off += schema.ChunkSize {
		p := data[off:min(off+schema.ChunkSize, len(data))]
		parts = append(parts, p)
		m.Chunks = append(m.Chunks, sha256.Sum256(p))
	}
	return m, parts
}

func TestMissingAndComplete(t *testing.T) {
	s, _ := openStore(t)
	data := pdf(2*schema.ChunkSize+100, 2)
	m, parts := manifestOf(data, schema.TypePDF)
	if complete(t, s, m.Hash) {
		t.Fatal("an unknown blob is complete")
	}
	if _, ok, err := s.Manifest(m.Hash); ok || err != nil {
		t.Fatalf("Manifest of an unknown blob: %v %v", ok, err)
	}
	if _, err := s.Open(m.Hash); !errors.Is(err, blobstore.ErrMissing) {
		t.Fatalf("Open of an unknown blob: %v", err)
	}
	missing, err := s.Missing(&m)
	if err != nil || fmt.Sprint(missing) != "[0 1 2]" {
		t.Fatalf("Missing before anything = %v, %v", missing, err)
	}
	if err := s.PutManifest(&m); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Manifest(m.Hash)
	if err != nil || !ok || fmt.Sprint(got) != fmt.Sprint(m) {
		t.Fatalf("Manifest = %+v %v %v", got, ok, err)
	}
	if complete(t, s, m.Hash) {
		t.Fatal("a blob with no chunk is complete")
	}
	if _, err := s.Open(m.Hash); !errors.Is(err, blobstore.ErrMissing) {
		t.Fatalf("Open of a blob with missing chunks: %v", err)
	}
	if err := s.PutChunk(m.Chunks[1], parts[1]); err != nil {
		t.Fatal(err)
	}
	if missing, _ := s.Missing(&m); fmt.Sprint(missing) != "[0 2]" {
		t.Fatalf("Missing = %v, want [0 2]", missing)
	}
	if err := s.PutChunk(m.Chunks[2], parts[2]); err != nil {
		t.Fatal(err)
	}
	if missing, _ := s.Missing(&m); fmt.Sprint(missing) != "[0]" || complete(t, s, m.Hash) {
		t.Fatalf("Missing = %v, want [0] and not complete", missing)
	}
	if err := s.PutChunk(m.Chunks[0], parts[0]); err != nil {
		t.Fatal(err)
	}
	if missing, _ := s.Missing(&m); len(missing) != 0 || !complete(t, s, m.Hash) {
		t.Fatalf("all chunks held: Missing = %v", missing)
	}
	if !bytes.Equal(readAll(t, s, m.Hash), data) {
		t.Fatal("assembled blob differs from its parts")
	}
}

// TestPutManifestRefreshesCreation: storing a manifest again restarts its
// GC grace period (a blob imported again is as new as its new op).
func TestPutManifestRefreshesCreation(t *testing.T) {
	c := newClock()
	s := openAt(t, t.TempDir(), c.Now)
	m, _ := manifestOf(pdf(10, 3), schema.TypePDF)
	if err := s.PutManifest(&m); err != nil {
		t.Fatal(err)
	}
	c.Advance(48 * time.Hour)
	first := c.Now()
	if err := s.PutManifest(&m); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.Manifests(func(got *schema.Manifest, created time.Time) error {
		n++
		if got.Hash != m.Hash || !created.Equal(first) {
			t.Errorf("manifest %x created %v, want %v", got.Hash[:4], created, first)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d manifests, want 1", n)
	}
	// An invalid manifest is refused and not stored.
	bad := m
	bad.Hash[0] ^= 1
	bad.Type = "application/x-msdownload"
	if err := s.PutManifest(&bad); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("PutManifest of a bad type: %v", err)
	}
	bad.Type, bad.Chunks = schema.TypePDF, nil
	if err := s.PutManifest(&bad); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("PutManifest without chunks: %v", err)
	}
	if st := stats(t, s); st.Blobs != 1 {
		t.Fatalf("%d manifests after refusals, want 1", st.Blobs)
	}
}

func TestImportAllowedTypes(t *testing.T) {
	s, _ := openStore(t)
	for _, c := range []struct {
		header, want string
	}{
		{"%PDF-1.4\n", schema.TypePDF},
		{"\xff\xd8\xff\xe0\x00\x10JFIF\x00", schema.TypeJPEG},
		{"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", schema.TypePNG},
		{"II*\x00\x08\x00\x00\x00", schema.TypeTIFF},
		{"MM\x00*\x00\x00\x00\x08", schema.TypeTIFF},
	} {
		data := content(c.header, 3000, uint64(len(c.header)))
		m := mustImport(t, s, data)
		if m.Type != c.want {
			t.Errorf("%q: type %q, want %q", c.header, m.Type, c.want)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%q: manifest does not validate: %v", c.header, err)
		}
		if !complete(t, s, m.Hash) {
			t.Errorf("%q: not complete after Import", c.header)
		}
	}
}

func TestImportRefusesExecutables(t *testing.T) {
	for _, c := range []struct{ name, header string }{
		{"elf", "\x7fELF\x02\x01\x01\x00"},
		{"windows exe", "MZ\x90\x00\x03\x00\x00\x00\x04\x00"},
		{"shell script", "#!/bin/sh\nrm -rf /"},
		{"html", "<html><script>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, dir := openStore(t)
			data := content(c.header, schema.ChunkSize+10, 4)
			_, err := s.Import(context.Background(), bytes.NewReader(data), 0)
			if !errors.Is(err, schema.ErrUnsupportedType) || !errors.Is(err, blobstore.ErrUnsupportedType) {
				t.Fatalf("Import = %v, want ErrUnsupportedType", err)
			}
			if !strings.Contains(err.Error(), "PDF, JPEG, PNG or TIFF") {
				t.Fatalf("the error does not say what is allowed: %v", err)
			}
			assertNothingStored(t, s, dir)
		})
	}
}

func TestImportRefusesEmpty(t *testing.T) {
	s, dir := openStore(t)
	_, err := s.Import(context.Background(), bytes.NewReader(nil), 0)
	var fe *schema.FieldError
	if !errors.Is(err, schema.ErrInvalid) || !errors.As(err, &fe) || fe.Field != "body" {
		t.Fatalf("empty upload: %v, want a FieldError on body", err)
	}
	assertNothingStored(t, s, dir)
}

func TestImportRefusesOversized(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max int64
	}{
		{"small limit", 101, 100},
		{"a chunk and a byte over a limit of a chunk", schema.ChunkSize + 1, schema.ChunkSize},
		{"several chunks over", 3*schema.ChunkSize + 5, 2*schema.ChunkSize + 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, dir := openStore(t)
			_, err := s.Import(context.Background(), bytes.NewReader(pdf(int(c.size), 5)), c.max)
			if !errors.Is(err, schema.ErrTooLarge) {
				t.Fatalf("Import of %d bytes with limit %d = %v, want ErrTooLarge", c.size, c.max, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(c.max)) {
				t.Fatalf("the error does not give the limit: %v", err)
			}
			assertNothingStored(t, s, dir)
		})
	}
	// Exactly the limit is allowed.
	s, _ := openStore(t)
	for _, size := range []int{100, schema.ChunkSize} {
		m, err := s.Import(context.Background(), bytes.NewReader(pdf(size, 6)), int64(size))
		if err != nil || m.Size != int64(size) {
			t.Fatalf("Import of exactly the limit (%d): %v", size, err)
		}
	}
}

// failingReader yields data, then fails with err instead of io.EOF.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestImportReaderFailsMidway(t *testing.T) {
	reset := errors.New("connection reset by peer")
	for _, at := range []int{3, schema.SniffLen + 1, schema.ChunkSize / 2, schema.ChunkSize, schema.ChunkSize + schema.ChunkSize/2} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			s, dir := openStore(t)
			_, err := s.Import(context.Background(), &failingReader{data: pdf(at, 7), err: reset}, 0)
			if err == nil {
				t.Fatalf("an upload cut after %d bytes was accepted", at)
			}
			assertNothingStored(t, s, dir)
		})
	}
	// A reader that fails at once.
	s, dir := openStore(t)
	if _, err := s.Import(context.Background(), iotest.ErrReader(reset), 0); !errors.Is(err, reset) {
		t.Fatalf("a reader failing at once: %v", err)
	}
	assertNothingStored(t, s, dir)
}

func TestImportCanceled(t *testing.T) {
	s, dir := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Import(ctx, bytes.NewReader(pdf(3*schema.ChunkSize, 9)), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Import: %v", err)
	}
	assertNothingStored(t, s, dir)
}

func TestImportSizes(t *testing.T) {
	s, _ := openStore(t)
	for _, size := range []int{1, 5, schema.SniffLen, schema.SniffLen + 1, 1000, schema.ChunkSize - 1, schema.ChunkSize, schema.ChunkSize + 1, 2 * schema.ChunkSize, 2*schema.ChunkSize + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := pdf(size, uint64(size))
			if size < 5 {
				data = []byte("%PDF-")[:size]
				if schema.SniffType(data) == "" {
					t.Skip("too short to sniff")
				}
			}
			m := mustImport(t, s, data)
			want, _ := manifestOf(data, schema.TypePDF)
			if m.Size != int64(size) || len(m.Chunks) != schema.ChunkCount(int64(size)) {
				t.Fatalf("size %d: manifest size %d with %d chunks, want %d chunks", size, m.Size, len(m.Chunks), schema.ChunkCount(int64(size)))
			}
			if m.Hash != sha256.Sum256(data) {
				t.Fatal("blob hash is not the SHA-256 of the input")
			}
			if fmt.Sprint(m) != fmt.Sprint(want) {
				t.Fatalf("manifest differs from the chunking of the input:\n%x\n%x", m.Chunks, want.Chunks)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if !complete(t, s, m.Hash) {
				t.Fatal("not complete after Import")
			}
			if got := readAll(t, s, m.Hash); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differing from the %d imported", len(got), len(data))
			}
		})
	}
}

// TestImportReaders: however the upload's reader splits its bytes, the
// blob is the same.
func TestImportReaders(t *testing.T) {
	data := pdf(2*schema.ChunkSize+777, 10)
	want, _ := manifestOf(data, schema.TypePDF)
	for _, c := range []struct {
		name string
		r    func() io.Reader
	}{
		{"half reads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) }},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) }},
		{"odd sizes", func() io.Reader { return &stutterReader{r: bytes.NewReader(data)} }},
		{"one byte then the rest", func() io.Reader {
			return io.MultiReader(bytes.NewReader(data[:1]), bytes.NewReader(data[1:3]), bytes.NewReader(data[3:]))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := openStore(t)
			m, err := s.Import(context.Background(), c.r(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(m) != fmt.Sprint(want) {
				t.Fatal("manifest depends on how the reader splits the bytes")
			}
			if !bytes.Equal(readAll(t, s, m.Hash), data) {
				t.Fatal("content differs")
			}
		})
	}
}

// stutterReader returns reads of 1, 2, ... 4096 bytes in turn.
type stutterReader struct {
	r io.Reader
	n int
}

func (s *stutterReader) Read(p []byte) (int, error) {
	s.n = s.n%4096 + 1
	return s.r.Read(p[:min(len(p), s.n)])
}

func TestImportDedupes(t *testing.T) {
	s, _ := openStore(t)
	c0 := pdf(schema.ChunkSize, 11)
	c1 := content("x", schema.ChunkSize, 12)
	c2 := content("y", 5000, 13)

	// The same content twice is one blob.
	a := mustImport(t, s, append(append([]byte(nil), c0...), c1...))
	again := mustImport(t, s, append(append([]byte(nil), c0...), c1...))
	if fmt.Sprint(a) != fmt.Sprint(again) {
		t.Fatal("the same content imported twice gives two manifests")
	}
	if st := stats(t, s); st.Blobs != 1 || st.Chunks != 2 || !approxBytes(st.ChunkBytes, 2*schema.ChunkSize, 2) {
		t.Fatalf("after importing the same blob twice: %+v", st)
	}
	// A blob sharing a chunk with another stores only its new chunk.
	b := mustImport(t, s, append(append([]byte(nil), c0...), c2...))
	if b.Chunks[0] != a.Chunks[0] {
		t.Fatal("equal chunks hash differently")
	}
	if st := stats(t, s); st.Blobs != 2 || st.Chunks != 3 || !approxBytes(st.ChunkBytes, 2*schema.ChunkSize+5000, 3) {
		t.Fatalf("after a blob sharing a chunk: %+v", st)
	}
	// A blob that repeats one chunk stores it once.
	rep := mustImport(t, s, bytes.Repeat(c0, 3))
	if len(rep.Chunks) != 3 || rep.Chunks[0] != rep.Chunks[2] {
		t.Fatalf("repeated chunks: %x", rep.Chunks)
	}
	if st := stats(t, s); st.Blobs != 3 || st.Chunks != 3 {
		t.Fatalf("after a blob of one repeated chunk: %+v", st)
	}
	if !bytes.Equal(readAll(t, s, rep.Hash), bytes.Repeat(c0, 3)) {
		t.Fatal("repeated-chunk blob reads back wrong")
	}
}

func TestReaderSeek(t *testing.T) {
	s, _ := openStore(t)
	data := pdf(2*schema.ChunkSize+12345, 14)
	m := mustImport(t, s, data)
	r, err := s.Open(m.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Manifest(); got.Hash != m.Hash {
		t.Fatal("Reader.Manifest is another blob's")
	}
	size := int64(len(data))
	check := func(off int64, n int) {
		t.Helper()
		pos, err := r.Seek(off, io.SeekStart)
		if err != nil || pos != off {
			t.Fatalf("Seek(%d) = %d, %v", off, pos, err)
		}
		want := data[off:min(off+int64(n), size)]
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("read %d bytes at %d: %v", len(want), off, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes at %d differ", len(want), off)
		}
	}
	cs := int64(schema.ChunkSize)
	for _, c := range []struct {
		off int64
		n   int
	}{
		{0, 10}, {cs - 5, 10}, {cs - 1, 1}, {cs, 1}, {cs - 100, schema.ChunkSize + 200},
		{2*cs - 1, 2}, {2 * cs, 12345}, {size - 1, 1}, {0, len(data)}, {3, 2*schema.ChunkSize + 12342},
	} {
		check(c.off, c.n)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100; i++ {
		check(rnd.Int64N(size), 1+rnd.IntN(schema.ChunkSize))
	}
	// Backwards into an earlier chunk, then forwards again.
	check(2*cs+5, 100)
	check(5, 100)
	check(cs+5, 100)

	// Relative seeks.
	if pos, err := r.Seek(-10, io.SeekEnd); err != nil || pos != size-10 {
		t.Fatalf("Seek(-10, end) = %d, %v", pos, err)
	}
	tail, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(tail, data[size-10:]) {
		t.Fatalf("last 10 bytes: %v", err)
	}
	r.Seek(cs, io.SeekStart)
	if pos, err := r.Seek(-3, io.SeekCurrent); err != nil || pos != cs-3 {
		t.Fatalf("Seek(-3, current) = %d, %v", pos, err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[cs-3:cs+3]) {
		t.Fatalf("6 bytes across the chunk boundary after a relative seek: %v", err)
	}
	// At and past the end: EOF, not an error or a panic.
	for _, off := range []int64{size, size + 1, 10 * size} {
		r.Seek(off, io.SeekStart)
		if n, err := r.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read at %d (size %d) = %d, %v; want io.EOF", off, size, n, err)
		}
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("a negative position was accepted")
	}
	if _, err := r.Seek(-size-1, io.SeekEnd); err == nil {
		t.Fatal("a position before the start was accepted")
	}
	if _, err := r.Seek(0, 7); err == nil {
		t.Fatal("a bad whence was accepted")
	}
}

// TestReaderServesHTTPRanges: the download handler's http.ServeContent
// over a Reader answers range requests with the right bytes.
func TestReaderServesHTTPRanges(t *testing.T) {
	s, _ := openStore(t)
	data := pdf(2*schema.ChunkSize+999, 15)
	m := mustImport(t, s, data)
	serve := func(rangeHdr string) *http.Response {
		t.Helper()
		r, err := s.Open(m.Hash)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/v1/dossiers/D1/attachments/"+m.HashHex(), nil)
		if rangeHdr != "" {
			req.Header.Set("Range", rangeHdr)
		}
		w := httptest.NewRecorder()
		http.ServeContent(w, req, "scan.pdf", time.Time{}, r)
		return w.Result()
	}
	body := func(resp *http.Response) []byte {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cs := schema.ChunkSize
	size := len(data)

	full := serve("")
	if full.StatusCode != 200 || full.ContentLength != int64(size) || !bytes.Equal(body(full), data) {
		t.Fatalf("whole download: %d, %d bytes", full.StatusCode, full.ContentLength)
	}
	if ct := full.Header.Get("Content-Type"); ct != schema.TypePDF {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, c := range []struct {
		hdr        string
		start, end int // inclusive
	}{
		{"bytes=0-0", 0, 0},
		{fmt.Sprintf("bytes=%d-%d", cs-10, cs+10), cs - 10, cs + 10},
		{fmt.Sprintf("bytes=%d-", 2*cs), 2 * cs, size - 1},
		{"bytes=-500", size - 500, size - 1},
		{fmt.Sprintf("bytes=%d-%d", 100, 2*cs+50), 100, 2*cs + 50},
		{fmt.Sprintf("bytes=%d-%d", size-1, size+100), size - 1, size - 1},
	} {
		resp := serve(c.hdr)
		got := body(resp)
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("%s: status %d", c.hdr, resp.StatusCode)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size); resp.Header.Get("Content-Range") != want {
			t.Fatalf("%s: Content-Range %q, want %q", c.hdr, resp.Header.Get("Content-Range"), want)
		}
		if !bytes.Equal(got, data[c.start:c.end+1]) {
			t.Fatalf("%s: %d bytes that differ from the input's", c.hdr, len(got))
		}
	}
	if resp := serve(fmt.Sprintf("bytes=%d-", size)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}
}

func TestScrubFindsAndDeletesCorruptChunks(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	aData := pdf(3*schema.ChunkSize, 16)
	a := mustImport(t, s, aData)
	b := mustImport(t, s, pdf(schema.ChunkSize+10, 17))

	clean, err := s.Scrub(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if clean.Chunks != 5 || clean.Bytes != 4*schema.ChunkSize+10 || clean.Bad != 0 || clean.Unreadable != 0 || clean.Damaged == nil || len(clean.Damaged) != 0 {
		t.Fatalf("scrub of a healthy store: %+v", clean)
	}

	// Rot one chunk of A: same length, one bit off.
	rotten := bytes.Clone(aData[schema.ChunkSize : 2*schema.ChunkSize])
	rotten[12345] ^= 0x10
	if err := s.SetRawChunk(a.Chunks[1], rotten); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Scrub(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != 5 || rep.Bad != 1 || fmt.Sprint(rep.Damaged) != fmt.Sprint([]string{a.HashHex()}) {
		t.Fatalf("scrub after rot: %+v, want 1 bad chunk and blob %s damaged", rep, a.HashHex())
	}
	if hasChunk(t, s, a.Chunks[1]) {
		t.Fatal("the rotten chunk is still there")
	}
	if missing, _ := s.Missing(&a); fmt.Sprint(missing) != "[1]" {
		t.Fatalf("Missing after scrub = %v, want [1]", missing)
	}
	if complete(t, s, a.Hash) || !complete(t, s, b.Hash) {
		t.Fatal("after scrub: A must be incomplete, B complete")
	}
	if _, err := s.Open(a.Hash); !errors.Is(err, blobstore.ErrMissing) {
		t.Fatalf("Open of the damaged blob: %v", err)
	}
	// Repaired from a peer: the good chunk is accepted again.
	if err := s.PutChunk(a.Chunks[1], aData[schema.ChunkSize:2*schema.ChunkSize]); err != nil {
		t.Fatal(err)
	}
	if !complete(t, s, a.Hash) || !bytes.Equal(readAll(t, s, a.Hash), aData) {
		t.Fatal("repair did not restore the blob")
	}
	again, err := s.Scrub(ctx)
	if err != nil || again.Bad != 0 || len(again.Damaged) != 0 {
		t.Fatalf("scrub after repair: %+v %v", again, err)
	}

	// A chunk shared by two blobs damages both; a truncated value is as bad.
	s2, _ := openStore(t)
	shared := pdf(schema.ChunkSize, 18)
	x := mustImport(t, s2, append(bytes.Clone(shared), content("x", 100, 19)...))
	y := mustImport(t, s2, append(bytes.Clone(shared), content("y", 100, 20)...))
	if err := s2.SetRawChunk(x.Chunks[0], shared[:100]); err != nil {
		t.Fatal(err)
	}
	rep, err = s2.Scrub(ctx)
	if err != nil {
		t.Fatal(err)
	}
	damaged := map[string]bool{}
	for _, h := range rep.Damaged {
		damaged[h] = true
	}
	if rep.Bad != 1 || len(rep.Damaged) != 2 || !damaged[x.HashHex()] || !damaged[y.HashHex()] {
		t.Fatalf("a shared chunk rotted: %+v, want both blobs damaged", rep)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Scrub(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled scrub: %v", err)
	}
}

func TestChunkOfCorruptChunk(t *testing.T) {
	s, _ := openStore(t)
	data := pdf(2*schema.ChunkSize, 21)
	m := mustImport(t, s, data)
	if err := s.SetRawChunk(m.Chunks[0], []byte("%PDF-garbage")); err != nil {
		t.Fatal(err)
	}
	// A reader opened before the rot was noticed stops with an error; it
	// never serves the wrong bytes.
	r, err := s.Open(m.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Chunk(m.Chunks[0]); !errors.Is(err, blobstore.ErrBadChunk) {
		t.Fatalf("Chunk of a rotten chunk = %v, want ErrBadChunk", err)
	}
	if hasChunk(t, s, m.Chunks[0]) {
		t.Fatal("Chunk served-or-kept a rotten chunk")
	}
	if _, err := s.Chunk(m.Chunks[0]); !errors.Is(err, blobstore.ErrMissing) {
		t.Fatalf("after deletion Chunk = %v, want ErrMissing", err)
	}
	if got, err := io.ReadAll(r); err == nil || len(got) != 0 {
		t.Fatalf("reading a blob whose first chunk is gone: %d bytes, %v", len(got), err)
	}
	// The same through a reader that meets the rot itself.
	if err := s.PutChunk(m.Chunks[0], data[:schema.ChunkSize]); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRawChunk(m.Chunks[1], bytes.Repeat([]byte{0}, schema.ChunkSize)); err != nil {
		t.Fatal(err)
	}
	r, err = s.Open(m.Hash)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if !errors.Is(err, blobstore.ErrBadChunk) || !bytes.Equal(got, data[:schema.ChunkSize]) {
		t.Fatalf("read over a rotten chunk: %d bytes, %v; want the first chunk then ErrBadChunk", len(got), err)
	}
	if hasChunk(t, s, m.Chunks[1]) {
		t.Fatal("the rotten chunk a reader met was kept")
	}
}

func TestGC(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := openAt(t, dir, c.Now)
	ctx := context.Background()
	shared := pdf(schema.ChunkSize, 22)
	onlyA := content("a", schema.ChunkSize, 23)
	onlyB := content("b", 777, 24)
	a := mustImport(t, s, append(bytes.Clone(shared), onlyA...))
	b := mustImport(t, s, append(bytes.Clone(shared), onlyB...))
	keep := func(h [32]byte) (bool, error) {
		switch h {
		case a.Hash:
			return false, nil
		case b.Hash:
			return true, nil
		}
		return false, fmt.Errorf("keep asked about unknown blob %x", h[:4])
	}
	const grace = time.Hour

	// Young: A is left alone although nothing refers to it.
	for _, after := range []time.Duration{0, 30 * time.Minute, 30 * time.Minute} {
		c.Advance(after)
		rep, err := s.GC(ctx, keep, grace)
		if err != nil {
			t.Fatal(err)
		}
		if rep != (blobstore.GCReport{}) {
			t.Fatalf("%v after import (grace %v): GC removed %+v", c.Now().Sub(time.UnixMilli(1_700_000_000_000)), grace, rep)
		}
		if !complete(t, s, a.Hash) || !complete(t, s, b.Hash) {
			t.Fatal("a blob within its grace lost data")
		}
	}
	// Past the grace: A goes, with its own chunk but not the shared one.
	c.Advance(time.Millisecond)
	rep, err := s.GC(ctx, keep, grace)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != 1 || rep.Chunks != 1 || !approxBytes(rep.Bytes, len(onlyA), 1) {
		t.Fatalf("GC past the grace: %+v, want A and its one unshared chunk (%d bytes)", rep, len(onlyA))
	}
	if _, ok, _ := s.Manifest(a.Hash); ok {
		t.Fatal("A's manifest survived")
	}
	if hasChunk(t, s, a.Chunks[1]) {
		t.Fatal("A's own chunk survived")
	}
	if !hasChunk(t, s, a.Chunks[0]) {
		t.Fatal("the chunk A shared with B was removed")
	}
	if !complete(t, s, b.Hash) || !bytes.Equal(readAll(t, s, b.Hash), append(bytes.Clone(shared), onlyB...)) {
		t.Fatal("B was damaged by collecting A")
	}
	if st := stats(t, s); st.Blobs != 1 || st.Chunks != 2 {
		t.Fatalf("after GC: %+v", st)
	}
	// Nothing more to do.
	if rep, err := s.GC(ctx, keep, grace); err != nil || rep != (blobstore.GCReport{}) {
		t.Fatalf("second GC: %+v %v", rep, err)
	}
	// keep's error stops the collection.
	boom := errors.New("state store unavailable")
	if _, err := s.GC(ctx, func([32]byte) (bool, error) { return false, boom }, 0); !errors.Is(err, boom) {
		t.Fatalf("GC with a failing keep: %v", err)
	}
	if !complete(t, s, b.Hash) {
		t.Fatal("a failed GC removed data")
	}
}

// TestGCDuringImport: a collection that starts while an upload is being
// stored must not take its chunks. GC is started at the moment Import
// stamps the manifest (the store's clock is read then) and given time to
// run; it must wait for Import (or see the manifest), never delete the
// chunks of a blob Import then reports as stored.
func TestGCDuringImport(t *testing.T) {
	c := newClock()
	var s *blobstore.Store
	var armed bool
	var mu sync.Mutex
	var gcRep blobstore.GCReport
	var gcErr error
	gcDone := make(chan struct{})
	now := func() time.Time {
		mu.Lock()
		fire := armed
		armed = false
		mu.Unlock()
		if fire {
			go func() {
				defer close(gcDone)
				gcRep, gcErr = s.GC(context.Background(), func([32]byte) (bool, error) { return true, nil }, time.Hour)
			}()
			time.Sleep(200 * time.Millisecond) // room for a GC that does not wait
		}
		return c.Now()
	}
	s = openAt(t, t.TempDir(), now)
	data := pdf(3*schema.ChunkSize, 25)
	mu.Lock()
	armed = true
	mu.Unlock()
	m := mustImport(t, s, data)
	select {
	case <-gcDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the GC hook did not fire, or GC never finished")
	}
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	if !complete(t, s, m.Hash) {
		missing, _ := s.Missing(&m)
		t.Fatalf("Import returned success, but a GC during it removed %d chunks (%+v): chunks %v are missing", gcRep.Chunks, gcRep, missing)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := blobstore.Open(blobstore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	data := pdf(2*schema.ChunkSize+3, 26)
	m := mustImport(t, s, data)
	before := stats(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// A staging file left by a crash mid-upload is removed at open.
	stale := filepath.Join(dir, "incoming", "upload-123")
	if err := os.WriteFile(stale, []byte("%PDF-half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir, nil)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale staging file after reopen: %v", err)
	}
	if !complete(t, s2, m.Hash) {
		t.Fatal("blob incomplete after reopen")
	}
	got, ok, err := s2.Manifest(m.Hash)
	if err != nil || !ok || fmt.Sprint(got) != fmt.Sprint(m) {
		t.Fatalf("manifest after reopen: %+v %v %v", got, ok, err)
	}
	if st := stats(t, s2); st != before {
		t.Fatalf("stats after reopen %+v, before %+v", st, before)
	}
	if !bytes.Equal(readAll(t, s2, m.Hash), data) {
		t.Fatal("content after reopen differs")
	}
}

func TestEncryptedStoreReopens(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{0x42}, 32)
	s, err := blobstore.Open(blobstore.Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	data := pdf(schema.ChunkSize+5, 27)
	m := mustImport(t, s, data)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := blobstore.Open(blobstore.Options{Dir: dir}); err == nil {
		t.Fatal("an encrypted store opened without its key")
	}
	s2, err := blobstore.Open(blobstore.Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !bytes.Equal(readAll(t, s2, m.Hash), data) {
		t.Fatal("encrypted blob reads back wrong")
	}
}

// TestGCDuringTransfer: a transfer stores the manifest first, then the
// chunks, which GC relies on ("transfers write the manifest first"). But GC
// lists the manifests in one transaction and the chunks in another, so a
// blob that arrives between the two (here: while GC asks keep about the
// blobs it holds) has its fresh chunks taken as orphans.
func TestGCDuringTransfer(t *testing.T) {
	s, _ := openStore(t)
	old := mustImport(t, s, pdf(100, 28))
	data := pdf(2*schema.ChunkSize+1, 29)
	incoming, parts := manifestOf(data, schema.TypePDF)
	arrived := false
	putDone := make(chan error, 1)
	keep := func(h [32]byte) (bool, error) {
		if !arrived {
			arrived = true
			// A peer's blob arrives over the blob protocol while GC runs.
			go func() {
				if err := s.PutManifest(&incoming); err != nil {
					putDone <- err
					return
				}
				for i, p := range parts {
					if err := s.PutChunk(incoming.Chunks[i], p); err != nil {
						putDone <- err
						return
					}
				}
				putDone <- nil
			}()
			time.Sleep(100 * time.Millisecond) // room for writes that do not wait
		}
		return true, nil
	}
	rep, err := s.GC(context.Background(), keep, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !arrived {
		t.Fatal("keep was never called")
	}
	if err := <-putDone; err != nil {
		t.Fatal(err)
	}
	if !complete(t, s, old.Hash) {
		t.Fatal("the kept blob lost chunks")
	}
	if !complete(t, s, incoming.Hash) {
		missing, _ := s.Missing(&incoming)
		t.Fatalf("a blob stored while GC ran lost chunks %v (GC removed %+v)", missing, rep)
	}
}

// errAfter returns data, then err instead of io.EOF.
type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

// TestImportRefusesBodyCutShort: net/http reports a request body that
// ends before its Content-Length as io.ErrUnexpectedEOF. That is not the
// end of the upload: nothing is stored.
func TestImportRefusesBodyCutShort(t *testing.T) {
	s, _ := openStore(t)
	for _, n := range []int{4, 100, schema.ChunkSize, 3*schema.ChunkSize + 7} {
		_, err := s.Import(context.Background(), &errAfter{bytes.NewReader(pdf(n, 40)), io.ErrUnexpectedEOF}, 0)
		if !errors.Is(err, schema.ErrInvalid) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%d bytes then ErrUnexpectedEOF: %v, want an invalid-input error wrapping it", n, err)
		}
		if st := stats(t, s); st.Chunks != 0 || st.Blobs != 0 {
			t.Fatalf("a body cut short after %d bytes left %+v", n, st)
		}
	}
}
