package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

func blobHash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// testManifest is a well-formed manifest of size bytes (made-up hashes).
func testManifest(size int64, typ string) schema.Manifest {
	m := schema.Manifest{Hash: blobHash(fmt.Sprint("blob ", size)), Size: size, Type: typ}
	m.Chunks = make([][32]byte, schema.ChunkCount(size))
	for i := range m.Chunks {
		m.Chunks[i] = blobHash(fmt.Sprint("chunk ", size, " ", i))
	}
	return m
}

func chunkData(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	rand.NewChaCha8(s).Read(b)
	return b
}

func blobFrame(typ Type, payload []byte) []byte {
	b := append([]byte{Version, byte(typ), 0, 0, 0, 0}, payload...)
	binary.BigEndian.PutUint32(b[2:], uint32(len(payload)))
	return b
}

func uvarints(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func wantMalformed(t *testing.T, name string, b []byte, say string) {
	t.Helper()
	m, err := Unmarshal(b)
	if err == nil {
		t.Fatalf("%s: decoded as %+v", name, m)
	}
	if !errors.Is(err, ErrMalformed) || !errors.Is(err, schema.ErrInvalid) || !strings.Contains(err.Error(), say) {
		t.Fatalf("%s: %v, want ErrMalformed saying %q", name, err, say)
	}
	if CodeFor(err) != CodeBadFrame {
		t.Fatalf("%s: CodeFor = %q", name, CodeFor(err))
	}
	// The same through a stream reader, which stays in step.
	r := NewReader(bytes.NewReader(append(bytes.Clone(b), mustFrame(t, &BlobAck{Index: 7})...)), 0)
	if _, err := r.Read(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%s: stream Read: %v", name, err)
	}
	if m, err := r.Read(); err != nil || m.(*BlobAck).Index != 7 {
		t.Fatalf("%s: stream out of step: %v", name, err)
	}
}

// TestBlobTransferOnOneStream: a whole put exchange, with full-size
// chunks, back to back on one stream as a blob stream carries it.
func TestBlobTransferOnOneStream(t *testing.T) {
	data := chunkData(2*schema.ChunkSize+100, 2)
	m := schema.Manifest{Hash: sha256.Sum256(data), Size: int64(len(data)), Type: schema.TypePDF}
	for off := 0; off < len(data); off += schema.ChunkSize {
		m.Chunks = append(m.Chunks, sha256.Sum256(data[off:min(off+schema.ChunkSize, len(data))]))
	}
	msgs := []Msg{
		&Hello{Proto: "blob", Node: "w-ba-dinh-1", Ward: "ba-dinh", Versions: []uint8{1}},
		&BlobOffer{Manifest: m},
		&BlobWant{Hash: m.Hash, Indexes: []uint32{0, 1, 2}},
	}
	for i := range m.Chunks {
		msgs = append(msgs, &BlobChunk{Index: uint32(i), Data: data[i*schema.ChunkSize : min((i+1)*schema.ChunkSize, len(data))]}, &BlobAck{Index: uint32(i)})
	}
	msgs = append(msgs, &BlobWant{Hash: m.Hash, Indexes: []uint32{}}, &BlobStored{Hash: m.Hash, Holders: 2}, &BlobGet{Hash: m.Hash})
	var stream bytes.Buffer
	for _, msg := range msgs {
		if err := WriteMsg(&stream, msg); err != nil {
			t.Fatalf("%v: %v", msg.Type(), err)
		}
	}
	r := NewReader(&stream, 0)
	var got []byte
	for i, want := range msgs {
		msg, err := r.Read()
		if err != nil {
			t.Fatalf("message %d (%v): %v", i, want.Type(), err)
		}
		if !reflect.DeepEqual(msg, want) {
			t.Fatalf("message %d (%v) differs after the round trip", i, want.Type())
		}
		if c, ok := msg.(*BlobChunk); ok {
			if sha256.Sum256(c.Data) != m.Chunks[c.Index] {
				t.Fatalf("chunk %d does not match its hash after the round trip", c.Index)
			}
			got = append(got, c.Data...)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the chunks do not reassemble the blob")
	}
	// A full chunk fits a frame with room to spare, and Unmarshal does not
	// alias the buffer it decodes.
	b := mustFrame(t, &BlobChunk{Index: 0, Data: data[:schema.ChunkSize]})
	if len(b) > DefaultMaxFrame {
		t.Fatalf("a full chunk's frame is %d bytes, over DefaultMaxFrame", len(b))
	}
	msg, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !bytes.Equal(msg.(*BlobChunk).Data, data[:schema.ChunkSize]) {
		t.Fatal("Unmarshal's chunk aliases the frame buffer")
	}
	// Type names, for logs and errors.
	for typ, name := range map[Type]string{TypeBlobOffer: "BlobOffer", TypeBlobWant: "BlobWant", TypeBlobChunk: "BlobChunk", TypeBlobAck: "BlobAck", TypeBlobGet: "BlobGet", TypeBlobStored: "BlobStored"} {
		if typ.String() != name {
			t.Errorf("%#x.String() = %q, want %q", byte(typ), typ.String(), name)
		}
	}
}

func TestBlobWantIndexesMustIncrease(t *testing.T) {
	h := blobHash("w")
	for _, idx := range [][]uint32{{1, 1}, {2, 1}, {0, 5, 3}, {0, 1, 2, 2}, {7, 0}} {
		err := WriteMsg(io.Discard, &BlobWant{Hash: h, Indexes: idx})
		if !errors.Is(err, schema.ErrInvalid) || !strings.Contains(err.Error(), "increase") {
			t.Fatalf("encode %v: %v, want ErrInvalid", idx, err)
		}
	}
	for _, idx := range [][]uint64{{1, 1}, {2, 1}, {0, 5, 3}, {5, 4}} {
		b := blobFrame(TypeBlobWant, cat(h[:], uvarints(uint64(len(idx))), uvarints(idx...)))
		wantMalformed(t, fmt.Sprint("decode ", idx), b, "out of order")
	}
	// In range: below MaxChunkIndexes.
	if err := WriteMsg(io.Discard, &BlobWant{Hash: h, Indexes: []uint32{0, MaxChunkIndexes - 1}}); err != nil {
		t.Fatal(err)
	}
	wantMalformed(t, "index at the bound", blobFrame(TypeBlobWant, cat(h[:], uvarints(1, MaxChunkIndexes))), "out of order or range")
	wantMalformed(t, "index far out", blobFrame(TypeBlobWant, cat(h[:], uvarints(2, 0, 1<<40))), "out of order or range")
	// A uint32 wrap must not make a huge index look small and increasing.
	wantMalformed(t, "index wrapping uint32", blobFrame(TypeBlobWant, cat(h[:], uvarints(2, 0, 1<<32+1))), "out of order or range")
	// Too many indexes, on either side.
	many := make([]uint32, MaxChunkIndexes+1)
	for i := range many {
		many[i] = uint32(i)
	}
	if err := WriteMsg(io.Discard, &BlobWant{Hash: h, Indexes: many}); !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("encode %d indexes: %v", len(many), err)
	}
	wantMalformed(t, "count over the bound", blobFrame(TypeBlobWant, cat(h[:], uvarints(MaxChunkIndexes+1), bytes.Repeat([]byte{1}, MaxChunkIndexes+1))), fmt.Sprintf("limit %d", MaxChunkIndexes))
	wantMalformed(t, "count past the payload", blobFrame(TypeBlobWant, cat(h[:], uvarints(MaxChunkIndexes, 0, 1))), "only 2 bytes follow")
	wantMalformed(t, "hash cut short", blobFrame(TypeBlobWant, h[:20]), "truncated")
}

func TestBlobChunkBounds(t *testing.T) {
	full := chunkData(schema.ChunkSize, 3)
	if err := WriteMsg(io.Discard, &BlobChunk{Index: 1, Data: full}); err != nil {
		t.Fatalf("a full chunk: %v", err)
	}
	over := append(bytes.Clone(full), 0)
	if err := WriteMsg(io.Discard, &BlobChunk{Index: 1, Data: over}); !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("encode a chunk of ChunkSize+1 bytes: %v, want ErrTooLarge", err)
	}
	// Hand-made, within the frame limit: the decoder refuses it too.
	b := blobFrame(TypeBlobChunk, cat(uvarints(1, uint64(len(over))), over))
	wantMalformed(t, "chunk over ChunkSize", b, fmt.Sprintf("limit %d", schema.ChunkSize))
	wantMalformed(t, "chunk index at the bound", blobFrame(TypeBlobChunk, cat(uvarints(MaxChunkIndexes, 1), []byte{9})), "out of range")
	wantMalformed(t, "chunk index wrapping uint32", blobFrame(TypeBlobChunk, cat(uvarints(1<<32, 1), []byte{9})), "out of range")
	wantMalformed(t, "chunk data cut short", blobFrame(TypeBlobChunk, cat(uvarints(0, 10), []byte{1, 2, 3})), "only 3 follow")
	wantMalformed(t, "ack index at the bound", blobFrame(TypeBlobAck, uvarints(MaxChunkIndexes)), "out of range")
	wantMalformed(t, "ack index wrapping uint32", blobFrame(TypeBlobAck, uvarints(1<<32)), "out of range")
	wantMalformed(t, "holders out of range", blobFrame(TypeBlobStored, cat(make([]byte, 32), uvarints(1<<16+1))), "holders")
}

func TestBlobOfferBounds(t *testing.T) {
	h := blobHash("offer")
	offer := func(size uint64, typ string, count uint64, chunks int) []byte {
		return blobFrame(TypeBlobOffer, cat(h[:], uvarints(size, uint64(len(typ))), []byte(typ), uvarints(count), make([]byte, 32*chunks)))
	}
	if _, err := Unmarshal(offer(schema.MaxBlobSize, schema.TypePDF, 2, 2)); err != nil {
		t.Fatalf("a well-formed offer: %v", err)
	}
	wantMalformed(t, "size over MaxBlobSize", offer(schema.MaxBlobSize+1, schema.TypePDF, 1, 1), fmt.Sprintf("limit %d", schema.MaxBlobSize))
	wantMalformed(t, "size far over", offer(1<<63, schema.TypePDF, 1, 1), "size")
	wantMalformed(t, "count over MaxChunkIndexes", offer(1, schema.TypePDF, MaxChunkIndexes+1, MaxChunkIndexes+1), fmt.Sprintf("limit %d", MaxChunkIndexes))
	wantMalformed(t, "count past the payload", offer(1, schema.TypePDF, 3, 2), "only 64 bytes follow")
	wantMalformed(t, "partial chunk hash", blobFrame(TypeBlobOffer, cat(offer(1, schema.TypePDF, 1, 0)[HeaderSize:], make([]byte, 31))), "only 31 bytes follow")
	wantMalformed(t, "type over MaxName", offer(1, strings.Repeat("t", MaxName+1), 0, 0), fmt.Sprintf("limit %d", MaxName))
	wantMalformed(t, "hash cut short", blobFrame(TypeBlobOffer, h[:31]), "truncated")

	// A count the payload cannot hold is refused before anything is
	// allocated for it: MaxChunkIndexes hashes would be 32 KiB.
	liar := offer(schema.MaxBlobSize, schema.TypePDF, MaxChunkIndexes, 0)[HeaderSize:]
	var err error
	n := allocatedBy(func() { _, err = decodeMsg(TypeBlobOffer, liar, DefaultMaxFrame) })
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("lying count: %v", err)
	}
	if n > 8<<10 {
		t.Fatalf("refusing a count of %d with no hashes allocated %d bytes", MaxChunkIndexes, n)
	}
	wantLiar := bytes.Clone(liar)
	n = allocatedBy(func() {
		_, err = decodeMsg(TypeBlobWant, cat(h[:], uvarints(MaxChunkIndexes)), DefaultMaxFrame)
	})
	if !errors.Is(err, ErrMalformed) || n > 8<<10 {
		t.Fatalf("lying BlobWant count: %v, %d bytes allocated", err, n)
	}
	if !bytes.Equal(liar, wantLiar) {
		t.Fatal("decoding changed its input")
	}

	// The encoder refuses more chunk hashes than a blob can have.
	m := testManifest(schema.MaxBlobSize, schema.TypePDF)
	m.Chunks = append(m.Chunks, [32]byte{})
	if err := WriteMsg(io.Discard, &BlobOffer{Manifest: m}); !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("encode %d chunk hashes: %v", len(m.Chunks), err)
	}
}

// TestBlobTrailingBytes: one byte after each blob message's payload is
// refused, and says so.
func TestBlobTrailingBytes(t *testing.T) {
	for _, msg := range []Msg{
		&BlobOffer{Manifest: testManifest(10, schema.TypeJPEG)},
		&BlobWant{Hash: blobHash("x"), Indexes: []uint32{4}},
		&BlobWant{Hash: blobHash("x"), Indexes: []uint32{}},
		&BlobChunk{Index: 2, Data: []byte("chunk")},
		&BlobAck{Index: 9},
		&BlobGet{Hash: blobHash("g")},
		&BlobStored{Hash: blobHash("s"), Holders: 5},
	} {
		b := mustFrame(t, msg)
		wantMalformed(t, msg.Type().String(), blobFrame(msg.Type(), append(bytes.Clone(b[HeaderSize:]), 0)), "1 trailing bytes")
	}
}

// TestBlobEncodeOnlyWhatDecodes: the codec's promise ("an encoder refuses
// to write past them, so a well-behaved peer never sends what the other
// side refuses") for the blob messages: whatever WriteMsg accepts, Unmarshal
// accepts.
func TestBlobEncodeOnlyWhatDecodes(t *testing.T) {
	big := testManifest(schema.MaxBlobSize, schema.TypePDF)
	big.Size = schema.MaxBlobSize + 1
	negative := testManifest(1, schema.TypePDF)
	negative.Size = -1
	for _, c := range []struct {
		name string
		msg  Msg
	}{
		{"offer over MaxBlobSize", &BlobOffer{Manifest: big}},
		{"offer of negative size", &BlobOffer{Manifest: negative}},
		{"want index at MaxChunkIndexes", &BlobWant{Hash: blobHash("w"), Indexes: []uint32{MaxChunkIndexes}}},
		{"chunk index at MaxChunkIndexes", &BlobChunk{Index: MaxChunkIndexes, Data: []byte{1}}},
		{"ack index at MaxChunkIndexes", &BlobAck{Index: MaxChunkIndexes}},
		{"stored holders over 65536", &BlobStored{Holders: 1<<16 + 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := AppendFrame(nil, c.msg)
			if err != nil {
				return // refused at the source: fine
			}
			if _, err := Unmarshal(b); err != nil {
				t.Errorf("WriteMsg sends what every reader refuses: %v", err)
			}
		})
	}
}

// TestWriteChunkIsWriteMsg: the two-write chunk encoder writes exactly the
// frame WriteMsg writes, and refuses what it refuses.
func TestWriteChunkIsWriteMsg(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 16383, 16384, schema.ChunkSize} {
		for _, index := range []uint32{0, 1, 200, MaxChunkIndexes - 1} {
			data := bytes.Repeat([]byte{byte(size)}, size)
			var a, b bytes.Buffer
			if err := WriteMsg(&a, &BlobChunk{Index: index, Data: data}); err != nil {
				t.Fatal(err)
			}
			if err := WriteChunk(&b, index, data); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatalf("size %d index %d: WriteChunk differs from WriteMsg", size, index)
			}
		}
	}
	var b bytes.Buffer
	if err := WriteChunk(&b, 0, make([]byte, schema.ChunkSize+1)); err == nil || b.Len() != 0 {
		t.Fatalf("an oversized chunk: %v, %d bytes written", err, b.Len())
	}
	if err := WriteChunk(&b, MaxChunkIndexes, nil); err == nil || b.Len() != 0 {
		t.Fatalf("an index out of range: %v, %d bytes written", err, b.Len())
	}
}
