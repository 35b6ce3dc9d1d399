package wire

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

// FuzzReadMsg feeds arbitrary bytes to Reader.Read: nothing panics, and
// every message it accepts re-encodes to a frame that decodes to the same
// message (and to the same bytes again).
func FuzzReadMsg(f *testing.F) {
	var stream []byte
	for _, c := range sampleMsgs() {
		b := mustFrame(f, c.msg)
		if len(b) < 64<<10 {
			f.Add(b)
		}
		stream = append(stream, b...)
		if len(stream) > 64<<10 {
			f.Add(stream)
			stream = nil
		}
	}
	f.Add(stream)
	f.Add([]byte{Version, 255, 0, 0, 0, 1, 0})
	f.Add([]byte{2, byte(TypeHello), 0, 0, 0, 0})
	f.Add([]byte{Version, byte(TypeForward), 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{Version, byte(TypeOpBatch), 0, 0, 0, 3, batchZstd, 0x28, 0xb5})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 0)
		for range 64 {
			m, err := r.Read()
			if err != nil {
				if r.err != nil {
					return // the stream is lost
				}
				continue // unknown type or malformed payload: still in step
			}
			checkReencode(t, m)
		}
	})
}

// FuzzOpBatch feeds arbitrary OpBatch payloads (plain and zstd) to the
// decoder, with the same property.
func FuzzOpBatch(f *testing.F) {
	for _, m := range []*OpBatch{
		{},
		{Ops: testOps(1, 100, true)},
		{Ops: testOps(3, 300, false)},
		{Ops: testOps(40, 1000, true)}, // compressed
	} {
		f.Add(mustFrame(f, m)[HeaderSize:])
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := decodeMsg(TypeOpBatch, payload, DefaultMaxFrame)
		if err != nil {
			return
		}
		checkReencode(t, m)
	})
}

func checkReencode(t *testing.T, m Msg) {
	t.Helper()
	b, err := AppendFrame(nil, m)
	if err != nil {
		t.Fatalf("decoded %v does not re-encode: %v", m.Type(), err)
	}
	again, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("re-encoded %v does not decode: %v", m.Type(), err)
	}
	if !reflect.DeepEqual(again, m) {
		t.Fatalf("%v round trip differs:\n%+v\n%+v", m.Type(), m, again)
	}
	if b2, _ := AppendFrame(nil, again); !bytes.Equal(b, b2) {
		t.Fatalf("%v encoding is not deterministic", m.Type())
	}
}

// FuzzBlobOffer feeds arbitrary BlobOffer payloads to the decoder: nothing
// panics or allocates for hashes that are not there, and whatever decodes
// re-encodes to the same message and bytes.
func FuzzBlobOffer(f *testing.F) {
	for _, m := range []*BlobOffer{
		{},
		{Manifest: testManifest(1, "image/png")},
		{Manifest: testManifest(3<<20+17, "application/pdf")},
		{Manifest: testManifest(64<<20, "image/tiff")},
	} {
		f.Add(mustFrame(f, m)[HeaderSize:])
	}
	f.Add(make([]byte, 32))
	f.Add(append(make([]byte, 32), 0x80, 0x80, 0x80, 0x80, 0x04, 0, 0x88, 0x08))
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := decodeMsg(TypeBlobOffer, payload, DefaultMaxFrame)
		if err != nil {
			return
		}
		o := m.(*BlobOffer)
		if o.Manifest.Size < 0 || o.Manifest.Size > schema.MaxBlobSize || len(o.Manifest.Chunks) > MaxChunkIndexes {
			t.Fatalf("decoded an offer out of bounds: size %d, %d chunks", o.Manifest.Size, len(o.Manifest.Chunks))
		}
		checkReencode(t, m)
		if b := mustFrame(t, m); !bytes.Equal(b[HeaderSize:], payload) {
			t.Fatalf("accepted payload is not canonical:\n%x\n%x", payload, b[HeaderSize:])
		}
	})
}
