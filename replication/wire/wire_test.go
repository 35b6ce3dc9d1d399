package wire

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/wardsync/wardsync/schema"
)

var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// testOps makes n signed, chained ops whose bodies are about bodySize
// bytes: repetitive text when compressible, random hex otherwise.
func testOps(n, bodySize int, compressible bool) []schema.Op {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	ops := make([]schema.Op, n)
	var prev [32]byte
	for i := range ops {
		body := schema.MarshalBody(schema.AnnotateBody{Text: strings.Repeat("giay khai sinh so 12/2024; ", bodySize/20+1)[:bodySize]})
		if !compressible {
			// Bytes no compressor can shrink. (The wire does not look
			// inside a body; schema validates it later.)
			body = make([]byte, bodySize)
			for j := range body {
				body[j] = byte(r.Uint32())
			}
		}
		op := schema.Op{
			ID:      schema.OpID{Origin: "w-ba-dinh-1", Seq: uint64(i + 1)},
			Ward:    "ba-dinh",
			Dossier: fmt.Sprintf("01J%023d", i),
			HLC:     schema.NewHLC(1_700_000_000_000+int64(i), uint16(i)),
			Actor:   schema.Actor{ID: "u1", Name: "Nguyễn Văn A", Role: schema.RoleClerk},
			Kind:    schema.KindAnnotate,
			Epoch:   3,
			Body:    body,
			Prev:    prev,
		}
		op.Sign(testKey)
		prev = op.Hash()
		ops[i] = op
	}
	return ops
}

func sampleMsgs() []struct {
	name string
	msg  Msg
} {
	return []struct {
		name string
		msg  Msg
	}{
		{"hello empty", &Hello{}},
		{"hello", &Hello{Proto: ProtoSync, Node: "w-ba-dinh-1", Ward: "ba-dinh", Versions: []uint8{1, 2}}},
		{"hello raft", &Hello{Proto: ProtoRaft, Node: "c1", Versions: []uint8{1}}},
		{"hello max", &Hello{Proto: strings.Repeat("p", MaxName), Node: strings.Repeat("n", MaxName), Ward: strings.Repeat("w", MaxName), Versions: bytes.Repeat([]byte{9}, MaxVersions)}},
		{"welcome", &Welcome{Version: 1, Node: "c2"}},
		{"welcome leader", &Welcome{Version: 1, Node: "c2", Leader: "c1"}},
		{"hello push key", &Hello{Proto: ProtoPush, Node: "hcm001-a", Ward: "HCM001", Versions: []uint8{1}, Key: bytes.Repeat([]byte{7}, 32)}},
		{"cursor", &Cursor{Ward: "HCM001", Since: 1 << 40}},
		{"changes page empty", &ChangesPage{Index: 42}},
		{"lease info", &LeaseInfo{Head: 77, Lease: schema.Lease{Ward: "HCM001", Active: "bk1", Epoch: 3, Since: 1764547200123, Reason: "flood, office closed", By: "admin", Home: "wa", HandbackTo: "wa", Index: 70, Ready: 69}}},
		{"lease info epoch 0", &LeaseInfo{Lease: schema.Lease{Ward: "HCM001"}}},
		{"lease release", &LeaseRelease{Ward: "HCM001", Epoch: 3, LastSeq: 1 << 33}},
		{"changes page", &ChangesPage{Index: 99, Ops: testOps(20, 500, true)}},
		{"welcome empty", &Welcome{}},
		{"error", &Error{Code: CodeForbidden, Message: "ward certificate for hoan-kiem may not push ops for ba-dinh"}},
		{"error long", &Error{Code: CodeInternal, Message: strings.Repeat("x", MaxText)}},
		{"ack", &Ack{Seq: 1<<64 - 1}},
		{"ack zero", &Ack{}},
		{"redirect", &Redirect{Leader: "c3", Address: "10.0.0.3:7443"}},
		{"redirect none", &Redirect{}},
		{"forward", &Forward{Command: []byte{1, 2, 3, 0, 255}}},
		{"forward empty", &Forward{}},
		{"forward result", &ForwardResult{Index: 12345, Result: []byte(`{"ok":true}`)}},
		{"forward result err", &ForwardResult{Err: "no leader", Code: CodeNotLeader}},
		{"op batch empty", &OpBatch{}},
		{"op batch one", &OpBatch{Ops: testOps(1, 100, true)}},
		{"op batch compressible", &OpBatch{Ops: testOps(200, 2000, true)}},
		{"op batch random", &OpBatch{Ops: testOps(50, 2000, false)}},
		{"blob offer", &BlobOffer{Manifest: testManifest(2*schema.ChunkSize+5, schema.TypePDF)}},
		{"blob offer one byte", &BlobOffer{Manifest: testManifest(1, schema.TypePNG)}},
		{"blob offer 20 MB", &BlobOffer{Manifest: testManifest(20_000_000, schema.TypeTIFF)}},
		{"blob get", &BlobGet{Hash: blobHash("get")}},
		{"blob want", &BlobWant{Hash: blobHash("want"), Indexes: []uint32{0, 2, 5, 127, 128, MaxChunkIndexes - 1}}},
		{"blob want none", &BlobWant{Hash: blobHash("none"), Indexes: []uint32{}}},
		{"blob chunk", &BlobChunk{Index: 3, Data: chunkData(4096, 1)}},
		{"blob chunk last", &BlobChunk{Index: MaxChunkIndexes - 1, Data: []byte{'%'}}},
		{"blob ack", &BlobAck{Index: 200}},
		{"blob ack zero", &BlobAck{}},
		{"blob stored", &BlobStored{Hash: blobHash("stored"), Holders: 3}},
		{"blob stored ward", &BlobStored{Hash: blobHash("ward")}},
	}
}

func mustFrame(t testing.TB, m Msg) []byte {
	t.Helper()
	b, err := AppendFrame(nil, m)
	if err != nil {
		t.Fatalf("encode %v: %v", m.Type(), err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	var stream bytes.Buffer
	msgs := sampleMsgs()
	for _, c := range msgs {
		t.Run(c.name, func(t *testing.T) {
			b := mustFrame(t, c.msg)
			if b[0] != Version || Type(b[1]) != c.msg.Type() || int(binary.BigEndian.Uint32(b[2:])) != len(b)-HeaderSize {
				t.Fatalf("bad header % x", b[:HeaderSize])
			}
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, c.msg) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, c.msg)
			}
			if again := mustFrame(t, got); !bytes.Equal(again, b) {
				t.Fatal("re-encoding differs: the encoding is not deterministic")
			}
			if err := WriteMsg(&stream, c.msg); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The same messages back to back on one stream, then a clean EOF.
	r := NewReader(&stream, 0)
	for _, c := range msgs {
		got, err := r.Read()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, c.msg) {
			t.Fatalf("%s: stream round trip differs", c.name)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestOpBatchCompression(t *testing.T) {
	payload := func(m Msg) []byte { return mustFrame(t, m)[HeaderSize:] }
	plain := &OpBatch{Ops: testOps(200, 2000, true)}
	p := payload(plain)
	if p[0] != batchZstd {
		t.Fatalf("a compressible batch went out plain")
	}
	var raw int
	for i := range plain.Ops {
		raw += len(plain.Ops[i].Encode())
	}
	t.Logf("200 ops: %d bytes of ops, %d on the wire", raw, len(p))
	if p := payload(&OpBatch{Ops: testOps(50, 2000, false)}); p[0] != batchPlain {
		t.Fatalf("an incompressible batch was compressed")
	}
	if p := payload(&OpBatch{Ops: testOps(1, 100, true)}); p[0] != batchPlain {
		t.Fatalf("a tiny batch was compressed")
	}
	// An op whose body is one repeated byte would expand more than
	// maxExpansion times: it goes out plain, and still round-trips.
	op := testOps(1, 10, true)[0]
	op.Body = schema.MarshalBody(schema.AnnotateBody{Text: strings.Repeat("a", schema.MaxOpBody-100)})
	op.Sign(testKey)
	bomb := &OpBatch{Ops: []schema.Op{op}}
	b := mustFrame(t, bomb)
	if b[HeaderSize] != batchPlain {
		t.Fatalf("an over-expanding batch was compressed")
	}
	if got, err := Unmarshal(b); err != nil || !reflect.DeepEqual(got, bomb) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestMinOpSize(t *testing.T) {
	op := schema.Op{ID: schema.OpID{Origin: "o", Seq: 1}, Ward: "w", Dossier: "d"}
	enc := op.Encode()
	if _, err := schema.DecodeOp(enc); err != nil {
		t.Fatal(err)
	}
	if len(enc) != minOpSize {
		t.Fatalf("smallest op is %d bytes, minOpSize says %d", len(enc), minOpSize)
	}
}

// Every prefix of every frame is a clean EOF (empty) or an unexpected EOF,
// never a panic or a message.
func TestTruncatedFrames(t *testing.T) {
	for _, c := range sampleMsgs() {
		b := mustFrame(t, c.msg)
		for i := 0; i < len(b); i++ {
			if i > 4<<10 && i < len(b)-4<<10 {
				i += 97 // big frames: every boundary near each end, a stride between
			}
			_, err := NewReader(bytes.NewReader(b[:i]), 0).Read()
			switch {
			case i == 0 && err != io.EOF:
				t.Fatalf("%s: empty stream: %v, want io.EOF", c.name, err)
			case i > 0 && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Fatalf("%s: cut at %d of %d: %v, want io.ErrUnexpectedEOF", c.name, i, len(b), err)
			}
			if i > 0 {
				if _, err := Unmarshal(b[:i]); !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%s: Unmarshal cut at %d: %v", c.name, i, err)
				}
			}
		}
	}
}

// A frame whose header agrees with a payload cut short is a malformed
// payload: refused clearly, and the stream stays in step.
func TestTruncatedPayloads(t *testing.T) {
	next := mustFrame(t, &Ack{Seq: 42})
	for _, c := range sampleMsgs() {
		b := mustFrame(t, c.msg)
		payload := b[HeaderSize:]
		step := 1
		if len(payload) > 4096 {
			step = 97
		}
		for i := 0; i < len(payload); i += step {
			f := append([]byte{Version, byte(c.msg.Type()), 0, 0, 0, 0}, payload[:i]...)
			binary.BigEndian.PutUint32(f[2:], uint32(i))
			r := NewReader(bytes.NewReader(append(f, next...)), 0)
			m, err := r.Read()
			if err == nil {
				t.Fatalf("%s: payload cut at %d of %d decoded as %+v", c.name, i, len(payload), m)
			}
			if !errors.Is(err, ErrMalformed) || !errors.Is(err, schema.ErrInvalid) {
				t.Fatalf("%s: payload cut at %d: %v, want ErrMalformed", c.name, i, err)
			}
			if m, err := r.Read(); err != nil || m.(*Ack).Seq != 42 {
				t.Fatalf("%s: stream out of step after a malformed payload: %v", c.name, err)
			}
		}
	}
}

func TestTrailingBytes(t *testing.T) {
	for _, c := range sampleMsgs() {
		b := append(mustFrame(t, c.msg), 0)
		binary.BigEndian.PutUint32(b[2:], uint32(len(b)-HeaderSize))
		_, err := Unmarshal(b)
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, schema.ErrInvalid) {
			t.Fatalf("%s: trailing byte: %v", c.name, err)
		}
		if c.msg.Type() != TypeOpBatch && c.msg.Type() != TypeChangesPage && !strings.Contains(err.Error(), "trailing") {
			t.Fatalf("%s: error does not say what is wrong: %v", c.name, err)
		}
	}
	// And bytes after the frame, for Unmarshal, which takes one frame.
	b := append(mustFrame(t, &Ack{Seq: 1}), 0)
	if _, err := Unmarshal(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("byte after the frame: %v", err)
	}
}

func TestMalformedPayloads(t *testing.T) {
	frame := func(typ Type, payload ...byte) []byte {
		b := append([]byte{Version, byte(typ), 0, 0, 0, 0}, payload...)
		binary.BigEndian.PutUint32(b[2:], uint32(len(payload)))
		return b
	}
	long := binary.AppendUvarint(nil, MaxName+1)
	long = append(long, make([]byte, MaxName+1)...)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"non-minimal varint", frame(TypeAck, 0x81, 0x00), "non-minimal"},
		{"varint overflow", frame(TypeAck, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "overflows"},
		{"empty ack", frame(TypeAck), "truncated"},
		{"string over its bound", frame(TypeRedirect, long...), "limit 1024"},
		{"length past the payload", frame(TypeForward, 5, 1, 2), "only 2 follow"},
		{"too many versions", frame(TypeHello, 0, 0, 0, MaxVersions+1), "limit 32"},
		{"batch encoding", frame(TypeOpBatch, 7), "unknown batch encoding 7"},
		{"batch count over the bound", frame(TypeOpBatch, append([]byte{0}, binary.AppendUvarint(nil, MaxBatchOps+1)...)...), "limit 10000"},
		{"batch count past the payload", frame(TypeOpBatch, append([]byte{0}, binary.AppendUvarint(nil, MaxBatchOps)...)...), "only 0 bytes follow"},
		{"zstd garbage", frame(TypeOpBatch, 1, 1, 2, 3, 4, 5, 6), "zstd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Unmarshal(c.in)
			if !errors.Is(err, ErrMalformed) || !errors.Is(err, schema.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrMalformed saying %q", err, c.want)
			}
			if CodeFor(err) != CodeBadFrame {
				t.Fatalf("CodeFor = %q", CodeFor(err))
			}
		})
	}
}

func TestOpBatchCorruptOp(t *testing.T) {
	ops := testOps(3, 1000, false)
	b := mustFrame(t, &OpBatch{Ops: ops})
	if b[HeaderSize] != batchPlain {
		t.Fatal("want a plain batch")
	}
	// Find op 2: skip the encoding byte, count, op 1's length and bytes.
	p := b[HeaderSize+2:]
	n, k := binary.Uvarint(p)
	op2 := HeaderSize + 2 + k + int(n)
	_, k2 := binary.Uvarint(b[op2:])
	originLen := op2 + k2 + 1 // after op 2's length and its version byte
	b[originLen] = 0x7f       // origin now claims to run past the op
	_, err := Unmarshal(b)
	if !errors.Is(err, schema.ErrInvalid) || !strings.Contains(err.Error(), "op 2 of 3") {
		t.Fatalf("corrupt op: %v", err)
	}

	// An op of an unknown version inside a batch says so.
	b = mustFrame(t, &OpBatch{Ops: ops})
	b[op2+k2] = 2
	if _, err := Unmarshal(b); !errors.Is(err, schema.ErrUnknownVersion) || CodeFor(err) != CodeUnknownVersion {
		t.Fatalf("op version 2: %v", err)
	}

	// A corrupt byte in a compressed batch is caught by zstd's checksum or
	// by the op decoder: never a wrong batch.
	big := &OpBatch{Ops: testOps(100, 1500, true)}
	z := mustFrame(t, big)
	if z[HeaderSize] != batchZstd {
		t.Fatal("want a compressed batch")
	}
	for _, i := range []int{HeaderSize + 8, len(z) / 2, len(z) - 2} {
		c := bytes.Clone(z)
		c[i] ^= 0x20
		if m, err := Unmarshal(c); !errors.Is(err, schema.ErrInvalid) {
			t.Fatalf("corrupt byte %d of a compressed batch: %v (same batch: %v)", i, err, reflect.DeepEqual(m, big))
		}
	}
}

func TestZstdBounds(t *testing.T) {
	enc, _ := zstd.NewWriter(nil)
	frame := func(z []byte) []byte {
		b := append([]byte{Version, byte(TypeOpBatch), 0, 0, 0, 0, batchZstd}, z...)
		binary.BigEndian.PutUint32(b[2:], uint32(len(b)-HeaderSize))
		return b
	}
	// Content larger than the reader's limit.
	huge := enc.EncodeAll(make([]byte, 2<<20), nil)
	_, err := NewReader(bytes.NewReader(frame(huge)), 1<<20).Read()
	if !errors.Is(err, schema.ErrTooLarge) || CodeFor(err) != CodeTooLarge {
		t.Fatalf("zstd content over the limit: %v", err)
	}
	// Content within the limit but expanding more than maxExpansion times.
	_, err = Unmarshal(frame(enc.EncodeAll(make([]byte, 1<<20), nil)))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "expands") {
		t.Fatalf("zstd bomb: %v", err)
	}
	// Two frames back to back, the second unannounced by the first.
	ok := mustFrame(t, &OpBatch{Ops: testOps(100, 1500, true)})
	two := append(bytes.Clone(ok[HeaderSize+1:]), ok[HeaderSize+1:]...)
	if _, err := Unmarshal(frame(two)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two zstd frames: %v", err)
	}
	// Without a content size.
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf)
	w.Write(make([]byte, 4096))
	w.Close()
	if _, err := Unmarshal(frame(buf.Bytes())); !errors.Is(err, ErrMalformed) {
		t.Fatalf("zstd without content size: %v", err)
	}
}

func TestUnknownVersion(t *testing.T) {
	b := mustFrame(t, &Hello{Proto: ProtoSync, Versions: []uint8{1}})
	for _, v := range []byte{0, 2, 'G'} {
		c := bytes.Clone(b)
		c[0] = v
		r := NewReader(bytes.NewReader(c), 0)
		_, err := r.Read()
		if !errors.Is(err, ErrUnknownVersion) || !errors.Is(err, schema.ErrUnknownVersion) {
			t.Fatalf("version %d: %v", v, err)
		}
		if want := fmt.Sprintf("frame version %d, this node speaks version %d", v, Version); !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
		if CodeFor(err) != CodeUnknownVersion {
			t.Fatalf("CodeFor = %q", CodeFor(err))
		}
		if _, again := r.Read(); again != err {
			t.Fatalf("the stream is lost, but a second Read says %v", again)
		}
		// One byte is enough to tell.
		if _, err := NewReader(bytes.NewReader(c[:1]), 0).Read(); !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("one byte of version %d: %v", v, err)
		}
	}
}

func TestUnknownType(t *testing.T) {
	var s bytes.Buffer
	s.Write([]byte{Version, 255, 0, 0, 0, 3, 1, 2, 3})
	s.Write([]byte{Version, byte(TypeChanges), 0, 0, 0, 0}) // reserved, not built yet
	WriteMsg(&s, &Ack{Seq: 9})
	r := NewReader(&s, 0)
	for _, want := range []string{"type(0xff)", "Changes"} {
		_, err := r.Read()
		if !errors.Is(err, ErrUnknownType) || !errors.Is(err, schema.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want ErrUnknownType for %s", err, want)
		}
	}
	m, err := r.Read()
	if err != nil || m.(*Ack).Seq != 9 {
		t.Fatalf("after unknown types the stream is still in step: %v %v", m, err)
	}
}

func TestFrameTooLarge(t *testing.T) {
	hdr := []byte{Version, byte(TypeForward), 0xff, 0xff, 0xff, 0xff} // 4 GiB - 1
	_, err := NewReader(bytes.NewReader(hdr), 0).Read()
	if !errors.Is(err, ErrFrameTooLarge) || !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("4 GiB frame: %v", err)
	}
	if !strings.Contains(err.Error(), "4294967295 bytes, limit 16777216") {
		t.Fatalf("error does not give size and limit: %v", err)
	}
	if CodeFor(err) != CodeTooLarge {
		t.Fatalf("CodeFor = %q", CodeFor(err))
	}
	// Refused without allocating the claim: a few small objects only.
	allocs := testing.AllocsPerRun(100, func() {
		NewReader(bytes.NewReader(hdr), 0).Read()
	})
	if allocs > 10 {
		t.Fatalf("%v allocations to refuse an oversized frame", allocs)
	}
	if n := allocatedBy(func() { NewReader(bytes.NewReader(hdr), 0).Read() }); n > 16<<10 {
		t.Fatalf("refusing an oversized frame allocated %d bytes", n)
	}

	// A custom limit.
	b := mustFrame(t, &Forward{Command: make([]byte, 100)})
	if _, err := NewReader(bytes.NewReader(b), 50).Read(); !errors.Is(err, ErrFrameTooLarge) || !strings.Contains(err.Error(), "limit 50") {
		t.Fatalf("limit 50: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(b), 102).Read(); err != nil {
		t.Fatalf("limit 102: %v", err)
	}

	// A header claiming the most the limit allows, and nothing after it:
	// memory is spent as bytes arrive, not as the header claims.
	hdr = []byte{Version, byte(TypeForward), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[2:], DefaultMaxFrame)
	var rerr error
	n := allocatedBy(func() { _, rerr = NewReader(bytes.NewReader(hdr), 0).Read() })
	if !errors.Is(rerr, io.ErrUnexpectedEOF) {
		t.Fatalf("header only: %v", rerr)
	}
	if n > 256<<10 {
		t.Fatalf("a bare 16 MiB header made the reader allocate %d bytes", n)
	}

	// The writer refuses what a default reader would.
	if err := WriteMsg(io.Discard, &Forward{Command: make([]byte, DefaultMaxFrame)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("writing an oversized frame: %v", err)
	}
	if err := WriteMsg(io.Discard, &Forward{Command: make([]byte, DefaultMaxFrame-4)}); err != nil {
		t.Fatalf("writing the largest frame: %v", err)
	}
}

func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestWriteRefusesOverBounds(t *testing.T) {
	cases := []Msg{
		&Hello{Node: strings.Repeat("n", MaxName+1)},
		&Hello{Versions: make([]uint8, MaxVersions+1)},
		&Error{Message: strings.Repeat("m", MaxText+1)},
		&Redirect{Address: strings.Repeat("a", MaxName+1)},
		&OpBatch{Ops: make([]schema.Op, MaxBatchOps+1)},
		&OpBatch{Ops: testOps(70, schema.MaxOpBody-1000, false)},
	}
	for _, m := range cases {
		if err := WriteMsg(io.Discard, m); !errors.Is(err, schema.ErrTooLarge) {
			t.Fatalf("%v over its bounds: %v", m.Type(), err)
		}
	}
	if err := WriteMsg(io.Discard, nil); err == nil {
		t.Fatal("nil message written")
	}
}

type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.writes++; return w.Buffer.Write(p) }

func TestOneWritePerFrame(t *testing.T) {
	for _, c := range sampleMsgs() {
		var w countingWriter
		if err := WriteMsg(&w, c.msg); err != nil || w.writes != 1 {
			t.Fatalf("%s: %d writes, %v", c.name, w.writes, err)
		}
	}
}

// After a Hello the rest of the stream is untouched, for raft to take over.
func TestReaderReadsNoFurther(t *testing.T) {
	var s bytes.Buffer
	WriteMsg(&s, &Hello{Proto: ProtoRaft, Node: "c2", Versions: []uint8{1}})
	s.WriteString("raft's own bytes")
	r := NewReader(&s, 0)
	if m, err := r.Read(); err != nil || m.(*Hello).Proto != ProtoRaft {
		t.Fatalf("hello: %v", err)
	}
	if s.String() != "raft's own bytes" {
		t.Fatalf("the reader consumed past its frame: %q left", s.String())
	}
}

func TestErrorsAndCodes(t *testing.T) {
	var b bytes.Buffer
	msg := strings.Repeat("é", MaxText) // 2 bytes a rune: cut mid-rune
	if err := SendError(&b, CodeForbidden, msg); err != nil {
		t.Fatal(err)
	}
	m, err := NewReader(&b, 0).Read()
	if err != nil {
		t.Fatal(err)
	}
	e := m.(*Error)
	if len(e.Message) != MaxText || !strings.HasPrefix(msg, e.Message) {
		t.Fatalf("message cut to %d bytes", len(e.Message))
	}
	if !errors.Is(e, schema.ErrForbidden) || !strings.Contains(e.Error(), "forbidden") {
		t.Fatalf("remote error %v does not match ErrForbidden", e)
	}
	if CodeFor(fmt.Errorf("push: %w", e)) != CodeForbidden {
		t.Fatal("a relayed remote error keeps its code")
	}
	codes := map[error]string{
		nil:                                      "",
		fmt.Errorf("x: %w", schema.ErrForbidden): CodeForbidden,
		schema.ErrUnauthorized:                   CodeForbidden,
		fmt.Errorf("x: %w", schema.ErrInvalid):   CodeInvalid,
		schema.ErrBadSignature:                   CodeBadSignature,
		schema.ErrNotFound:                       CodeNotFound,
		schema.ErrConflict:                       CodeConflict,
		io.ErrUnexpectedEOF:                      CodeBadFrame,
		errors.New("disk on fire"):               CodeInternal,
	}
	for err, want := range codes {
		if got := CodeFor(err); got != want {
			t.Errorf("CodeFor(%v) = %q, want %q", err, got, want)
		}
	}
	if (&Error{Code: CodeNotLeader}).Unwrap() != nil {
		t.Error("not_leader maps to no schema sentinel")
	}
}

func TestNegotiate(t *testing.T) {
	if v, err := Negotiate([]uint8{1, 3, 2}, 1, 2); err != nil || v != 2 {
		t.Fatalf("Negotiate = %d, %v", v, err)
	}
	_, err := Negotiate([]uint8{3, 4}, 1, 2)
	if !errors.Is(err, ErrUnknownVersion) || !strings.Contains(err.Error(), "peer speaks [3 4], this node speaks [1 2]") {
		t.Fatalf("no common version: %v", err)
	}
	if _, err := Negotiate(nil, 1); !errors.Is(err, schema.ErrUnknownVersion) {
		t.Fatalf("nothing offered: %v", err)
	}
}

func TestReadErrorsAreSticky(t *testing.T) {
	b := mustFrame(t, &Ack{Seq: 1})
	var err, err2 error
	r := NewReader(bytes.NewReader(b[:3]), 0)
	_, err = r.Read()
	if _, err2 = r.Read(); !errors.Is(err, io.ErrUnexpectedEOF) || err2 != err {
		t.Fatalf("first %v, then %v", err, err2)
	}
}

// BenchmarkOpBatch measures a batch of 1,000 ops of about 2 KB through
// WriteMsg and Reader.Read, for compressible and incompressible bodies.
func BenchmarkOpBatch(b *testing.B) {
	for _, c := range []struct {
		name         string
		compressible bool
	}{{"text", true}, {"random", false}} {
		m := &OpBatch{Ops: testOps(1000, 2000, c.compressible)}
		frame := mustFrame(b, m)
		b.Run(c.name+"/encode", func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := AppendFrame(nil, m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(m.Ops)*b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(c.name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := Unmarshal(frame); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(m.Ops)*b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// A request the city may have carried out without answering (a ward's
// lease release, say) is refused with outcome_unknown, not internal: the
// ward sends it again, which the city takes once.
func TestCodeForOutcomeUnknown(t *testing.T) {
	err := fmt.Errorf("%w: the leader stopped before answering", schema.ErrOutcomeUnknown)
	if got := CodeFor(err); got != CodeOutcomeUnknown {
		t.Fatalf("CodeFor = %q, want %q", got, CodeOutcomeUnknown)
	}
}
