package wire

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/wardsync/wardsync/schema"
)

// Blob transfer (the blob ALPN, Hello.Proto "blob"). One stream carries
// one blob, in one of two directions:
//
//	put: sender → Hello, BlobOffer{manifest}
//	get: asker  → Hello, BlobGet{hash};  holder → BlobOffer{manifest}
//
// then, either way, the receiver sends BlobWant{the chunks it lacks} and
// the sender sends those chunks one BlobChunk at a time, each answered by
// BlobAck{index} once it has arrived in full. At most one chunk is ever in
// flight, so a cut costs at most the chunk it cut. A chunk whose bytes do
// not match its hash is asked for again with another BlobWant. When the
// receiver holds the whole blob durably (on a city member: on a majority
// of members, and recorded through Raft) it sends BlobStored.

// MaxChunkIndexes bounds a BlobWant (and a manifest).
const MaxChunkIndexes = schema.MaxBlobSize / schema.ChunkSize

// BlobOffer carries a blob's manifest.
//
//	hash [32], size uvarint, type string, count uvarint, chunk hashes [32] each
type BlobOffer struct {
	Manifest schema.Manifest
}

func (*BlobOffer) Type() Type { return TypeBlobOffer }

func (m *BlobOffer) appendPayload(e *encoder) {
	if len(m.Manifest.Chunks) > MaxChunkIndexes {
		e.fail(fmt.Errorf("%d chunks, limit %d: %w", len(m.Manifest.Chunks), MaxChunkIndexes, schema.ErrTooLarge))
		return
	}
	if m.Manifest.Size < 0 || m.Manifest.Size > schema.MaxBlobSize {
		e.fail(fmt.Errorf("size %d out of range: %w", m.Manifest.Size, schema.ErrTooLarge))
		return
	}
	e.raw(m.Manifest.Hash[:])
	e.uvarint(uint64(m.Manifest.Size))
	e.string(m.Manifest.Type, MaxName, "type")
	e.uvarint(uint64(len(m.Manifest.Chunks)))
	for _, c := range m.Manifest.Chunks {
		e.raw(c[:])
	}
}

func (m *BlobOffer) decodePayload(d *decoder) {
	d.hash(&m.Manifest.Hash, "hash")
	size := d.uvarint("size")
	if size > schema.MaxBlobSize {
		d.failf("size %d, limit %d", size, schema.MaxBlobSize)
		return
	}
	m.Manifest.Size = int64(size)
	m.Manifest.Type = d.string(MaxName, "type")
	n := d.count(MaxChunkIndexes, 32, "chunks")
	if d.err != nil {
		return
	}
	m.Manifest.Chunks = make([][32]byte, n)
	for i := range m.Manifest.Chunks {
		d.hash(&m.Manifest.Chunks[i], "chunk")
	}
}

// BlobWant lists the chunks (by index in the manifest) the receiver lacks.
// An empty list means it needs nothing more.
//
//	hash [32], count uvarint, indexes uvarint each (strictly increasing)
type BlobWant struct {
	Hash    [32]byte
	Indexes []uint32
}

func (*BlobWant) Type() Type { return TypeBlobWant }

func (m *BlobWant) appendPayload(e *encoder) {
	if len(m.Indexes) > MaxChunkIndexes {
		e.fail(fmt.Errorf("%d indexes, limit %d: %w", len(m.Indexes), MaxChunkIndexes, schema.ErrTooLarge))
		return
	}
	e.raw(m.Hash[:])
	e.uvarint(uint64(len(m.Indexes)))
	for i, x := range m.Indexes {
		if x >= MaxChunkIndexes {
			e.fail(fmt.Errorf("chunk index %d out of range: %w", x, schema.ErrInvalid))
			return
		}
		if i > 0 && x <= m.Indexes[i-1] {
			e.fail(fmt.Errorf("chunk indexes must increase: %w", schema.ErrInvalid))
			return
		}
		e.uvarint(uint64(x))
	}
}

func (m *BlobWant) decodePayload(d *decoder) {
	d.hash(&m.Hash, "hash")
	n := d.count(MaxChunkIndexes, 1, "indexes")
	if d.err != nil {
		return
	}
	m.Indexes = make([]uint32, 0, n)
	for i := 0; i < n; i++ {
		x := d.uvarint("index")
		if x >= MaxChunkIndexes || (i > 0 && uint32(x) <= m.Indexes[i-1]) {
			d.failf("index %d out of order or range", x)
			return
		}
		m.Indexes = append(m.Indexes, uint32(x))
	}
}

// BlobChunk is one chunk's bytes.
//
//	index uvarint, data bytes (at most schema.ChunkSize)
type BlobChunk struct {
	Index uint32
	Data  []byte
}

func (*BlobChunk) Type() Type { return TypeBlobChunk }

func (m *BlobChunk) appendPayload(e *encoder) {
	if m.Index >= MaxChunkIndexes {
		e.fail(fmt.Errorf("chunk index %d out of range: %w", m.Index, schema.ErrInvalid))
		return
	}
	if len(m.Data) > schema.ChunkSize {
		e.fail(fmt.Errorf("chunk of %d bytes, limit %d: %w", len(m.Data), schema.ChunkSize, schema.ErrTooLarge))
		return
	}
	e.uvarint(uint64(m.Index))
	e.bytes(m.Data)
}

func (m *BlobChunk) decodePayload(d *decoder) {
	x := d.uvarint("index")
	if x >= MaxChunkIndexes {
		d.failf("index %d out of range", x)
		return
	}
	m.Index = uint32(x)
	m.Data = d.bytes(schema.ChunkSize, "data")
}

// BlobAck says chunk Index arrived in full.
//
//	index uvarint
type BlobAck struct {
	Index uint32
}

func (*BlobAck) Type() Type { return TypeBlobAck }

func (m *BlobAck) appendPayload(e *encoder) {
	if m.Index >= MaxChunkIndexes {
		e.fail(fmt.Errorf("chunk index %d out of range: %w", m.Index, schema.ErrInvalid))
		return
	}
	e.uvarint(uint64(m.Index))
}

func (m *BlobAck) decodePayload(d *decoder) {
	x := d.uvarint("index")
	if x >= MaxChunkIndexes {
		d.failf("index %d out of range", x)
		return
	}
	m.Index = uint32(x)
}

// BlobGet asks for a blob by hash.
//
//	hash [32]
type BlobGet struct {
	Hash [32]byte
}

func (*BlobGet) Type() Type { return TypeBlobGet }

func (m *BlobGet) appendPayload(e *encoder) { e.raw(m.Hash[:]) }

func (m *BlobGet) decodePayload(d *decoder) { d.hash(&m.Hash, "hash") }

// BlobStored says the receiver holds the whole blob durably. Holders
// counts the city members that hold it (0 from a ward).
//
//	hash [32], holders uvarint
type BlobStored struct {
	Hash    [32]byte
	Holders uint32
}

func (*BlobStored) Type() Type { return TypeBlobStored }

func (m *BlobStored) appendPayload(e *encoder) {
	if m.Holders > 1<<16 {
		e.fail(fmt.Errorf("holders %d out of range: %w", m.Holders, schema.ErrInvalid))
		return
	}
	e.raw(m.Hash[:])
	e.uvarint(uint64(m.Holders))
}

func (m *BlobStored) decodePayload(d *decoder) {
	d.hash(&m.Hash, "hash")
	x := d.uvarint("holders")
	if x > 1<<16 {
		d.failf("holders %d out of range", x)
		return
	}
	m.Holders = uint32(x)
}

// WriteChunk writes BlobChunk{index, data} exactly as WriteMsg would, but
// in two writes (the header, then data as it is), so a 1 MiB chunk is not
// copied into a frame buffer first.
func WriteChunk(w io.Writer, index uint32, data []byte) error {
	if index >= MaxChunkIndexes || len(data) > schema.ChunkSize {
		return WriteMsg(w, &BlobChunk{Index: index, Data: data}) // refuses it, with the reason
	}
	var hdr [HeaderSize + 2*binary.MaxVarintLen64]byte
	hdr[0], hdr[1] = Version, byte(TypeBlobChunk)
	n := HeaderSize
	n += binary.PutUvarint(hdr[n:], uint64(index))
	n += binary.PutUvarint(hdr[n:], uint64(len(data)))
	binary.BigEndian.PutUint32(hdr[2:], uint32(n-HeaderSize+len(data)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}
