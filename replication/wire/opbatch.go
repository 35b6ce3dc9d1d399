package wire

import (
	"fmt"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/wardsync/wardsync/schema"
)

// MaxBatchOps bounds the ops in one OpBatch; bytes are bounded by the frame.
const MaxBatchOps = 10_000

// minOpSize is the fewest bytes an op that DecodeOp accepts can take:
// version, the required strings of one byte, HLC, prev hash and the empty
// fields' lengths. It keeps a count from promising ops that are not there.
const minOpSize = 1 + 2 + 1 + 2 + 2 + 8 + 3 + 1 + 1 + 1 + 32 + 1

// OpBatch is a batch of ops (a push from ward to city). Each op goes in
// schema's canonical encoding, so signatures and hashes hold across the
// wire.
//
//	encoding u8: 0 plain, 1 zstd
//	plain:  count uvarint, then per op: length uvarint, schema encoding
//	zstd:   one zstd frame, with its content size, holding the plain form
//
// WriteMsg compresses when that pays (a batch of at least compressMin
// bytes that shrinks by an eighth or more). The plain form must fit the
// frame limit either way, and a zstd frame may expand at most
// maxExpansion times, so a small frame can never make a reader allocate a
// large one.
type OpBatch struct {
	Ops []schema.Op
}

// Batch encodings.
const (
	batchPlain = 0
	batchZstd  = 1
)

const (
	compressMin  = 1 << 10
	maxExpansion = 64
)

func (*OpBatch) Type() Type { return TypeOpBatch }

func (m *OpBatch) appendPayload(e *encoder) {
	if len(m.Ops) > MaxBatchOps {
		e.fail(fmt.Errorf("%d ops, limit %d: %w", len(m.Ops), MaxBatchOps, schema.ErrTooLarge))
		return
	}
	encoded := make([][]byte, len(m.Ops))
	size := 1 + uvarintLen(uint64(len(m.Ops)))
	for i := range m.Ops {
		encoded[i] = m.Ops[i].Encode()
		size += uvarintLen(uint64(len(encoded[i]))) + len(encoded[i])
		if size > DefaultMaxFrame {
			e.fail(fmt.Errorf("op batch is over %d bytes at op %d of %d: %w", DefaultMaxFrame, i+1, len(m.Ops), schema.ErrTooLarge))
			return
		}
	}
	e.b = slices.Grow(e.b, size)
	flag := len(e.b)
	e.byte(batchPlain)
	e.uvarint(uint64(len(m.Ops)))
	for _, op := range encoded {
		e.bytes(op)
	}
	if z := compress(e.b[flag+1:]); z != nil {
		e.b = append(e.b[:flag], batchZstd)
		e.raw(z)
	}
}

// compress returns plain compressed when that pays, else nil. A sample is
// tried first, so a batch of incompressible bodies (scans are attachments,
// not ops, but bodies may still be dense) costs little CPU.
func compress(plain []byte) []byte {
	const sample = 16 << 10
	if len(plain) < compressMin {
		return nil
	}
	pays := func(in, out int) bool { return out <= in-in/8 && in <= maxExpansion*out }
	enc := zstdEncoder()
	if len(plain) > 4*sample {
		if z := enc.EncodeAll(plain[:sample], make([]byte, 0, sample)); !pays(sample, len(z)) {
			return nil
		}
	}
	z := enc.EncodeAll(plain, make([]byte, 0, len(plain)))
	if !pays(len(plain), len(z)) {
		return nil
	}
	return z
}

func (m *OpBatch) decodePayload(d *decoder) {
	switch enc := d.byte("encoding"); {
	case d.err != nil:
		return
	case enc == batchPlain:
		m.decodePlain(d)
	case enc == batchZstd:
		plain, err := unzstd(d.rest(), d.limit-1)
		if err != nil {
			d.fail(err)
			return
		}
		inner := decoder{b: plain}
		m.decodePlain(&inner)
		inner.done()
		d.fail(inner.err)
	default:
		d.failf("unknown batch encoding %d", enc)
	}
}

func (m *OpBatch) decodePlain(d *decoder) {
	n := d.count(MaxBatchOps, 1+minOpSize, "ops")
	if n == 0 {
		return
	}
	m.Ops = make([]schema.Op, 0, n)
	for i := range n {
		b := d.bytes(frameBound, "op")
		if d.err != nil {
			return
		}
		op, err := schema.DecodeOp(b)
		if err != nil {
			d.fail(fmt.Errorf("op %d of %d: %w", i+1, n, err))
			return
		}
		m.Ops = append(m.Ops, op)
	}
}

// unzstd decompresses one zstd frame of at most limit bytes. The frame
// must state its content size, which must be within limit and within
// maxExpansion times the compressed size; only then is it allocated, and
// the decoder is held to it.
func unzstd(z []byte, limit int) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(z); err != nil {
		return nil, fmt.Errorf("zstd header: %v", err)
	}
	switch {
	case h.Skippable || !h.HasFCS:
		return nil, fmt.Errorf("zstd frame without its content size")
	case h.FrameContentSize > uint64(limit):
		return nil, fmt.Errorf("zstd frame holds %d bytes, limit %d: %w", h.FrameContentSize, limit, schema.ErrTooLarge)
	case h.FrameContentSize > maxExpansion*uint64(len(z)):
		return nil, fmt.Errorf("zstd frame of %d bytes claims %d: expands more than %d times", len(z), h.FrameContentSize, maxExpansion)
	}
	plain, err := zstdDecoder().DecodeAll(z, make([]byte, 0, h.FrameContentSize))
	if err != nil {
		return nil, fmt.Errorf("zstd: %v", err)
	}
	if uint64(len(plain)) != h.FrameContentSize {
		return nil, fmt.Errorf("zstd frame holds %d bytes, says %d", len(plain), h.FrameContentSize)
	}
	return plain, nil
}

// The coders are made on first use: a process that never sends or
// receives a compressed batch does not pay for their state. EncodeAll and
// DecodeAll are safe for concurrent use.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithLowerEncoderMem(true))
		if err != nil {
			panic(fmt.Sprintf("wire: zstd encoder: %v", err))
		}
		return enc
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		dec, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxWindow(uint64(DefaultMaxFrame)))
		if err != nil {
			panic(fmt.Sprintf("wire: zstd decoder: %v", err))
		}
		return dec
	})
)
