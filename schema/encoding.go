package schema

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// OpVersion is the version byte that starts every encoded op. A decoder
// refuses versions it does not know instead of guessing.
const OpVersion = 1

// Limits on decoded ops. They bound what a malformed or hostile frame can
// make a node allocate.
const (
	MaxOpBody    = 256 << 10 // a create body with 50 fields of 2,000 characters fits
	maxOpString  = 1024      // origin, ward, dossier, actor fields, kind
	maxOpEncoded = MaxOpBody + 16<<10
)

// Encode returns the op's binary encoding:
//
//	version byte
//	origin string, seq uvarint, ward string, dossier string,
//	hlc uint64 big-endian, actor id, name, role strings, kind string,
//	epoch uvarint, body bytes, prev [32]byte, sig bytes
//
// where a string or bytes is a uvarint length then the bytes.
func (op *Op) Encode() []byte {
	n := 1 + 8 + 32 + len(op.Body) + len(op.Sig) + len(op.ID.Origin) + len(op.Ward) +
		len(op.Dossier) + len(op.Actor.ID) + len(op.Actor.Name) + len(op.Actor.Role) + len(op.Kind) + 12*binary.MaxVarintLen64
	b := make([]byte, 0, n)
	b = append(b, OpVersion)
	b = appendString(b, op.ID.Origin)
	b = binary.AppendUvarint(b, op.ID.Seq)
	b = appendString(b, op.Ward)
	b = appendString(b, op.Dossier)
	b = binary.BigEndian.AppendUint64(b, uint64(op.HLC))
	b = appendString(b, op.Actor.ID)
	b = appendString(b, op.Actor.Name)
	b = appendString(b, string(op.Actor.Role))
	b = appendString(b, string(op.Kind))
	b = binary.AppendUvarint(b, op.Epoch)
	b = appendBytes(b, op.Body)
	b = append(b, op.Prev[:]...)
	b = appendBytes(b, op.Sig)
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

var errShort = errors.New("truncated")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	// Only the shortest form is accepted, so an op has exactly one encoding
	// and its hash and signature mean one thing.
	if n != len(binary.AppendUvarint(nil, v)) {
		d.fail(errors.New("non-minimal varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(max int, what string) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail(fmt.Errorf("%s is %d bytes, limit %d: %w", what, n, max, ErrTooLarge))
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail(errShort)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) string(what string) string { return string(d.bytes(maxOpString, what)) }

func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail(errShort)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

// DecodeOp parses an encoded op. It never panics on any input, and refuses
// unknown versions, oversized fields, truncation and trailing bytes.
// Decoding checks shape only; the caller verifies the signature.
func DecodeOp(b []byte) (Op, error) {
	if len(b) == 0 {
		return Op{}, fmt.Errorf("%w: decode op: empty", ErrInvalid)
	}
	if b[0] != OpVersion {
		return Op{}, fmt.Errorf("%w: op version %d (this node reads %d)", ErrUnknownVersion, b[0], OpVersion)
	}
	if len(b) > maxOpEncoded {
		return Op{}, fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, len(b), maxOpEncoded)
	}
	d := decoder{b: b[1:]}
	var op Op
	op.ID.Origin = d.string("origin")
	op.ID.Seq = d.uvarint()
	op.Ward = d.string("ward")
	op.Dossier = d.string("dossier")
	if p := d.fixed(8); p != nil {
		op.HLC = HLC(binary.BigEndian.Uint64(p))
	}
	op.Actor.ID = d.string("actor id")
	op.Actor.Name = d.string("actor name")
	op.Actor.Role = Role(d.string("actor role"))
	op.Kind = Kind(d.string("kind"))
	op.Epoch = d.uvarint()
	if body := d.bytes(MaxOpBody, "body"); body != nil {
		op.Body = append([]byte(nil), body...)
	}
	if p := d.fixed(32); p != nil {
		copy(op.Prev[:], p)
	}
	if sig := d.bytes(64, "signature"); len(sig) > 0 {
		op.Sig = append([]byte(nil), sig...)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		if errors.Is(d.err, ErrTooLarge) {
			return Op{}, fmt.Errorf("decode op: %w", d.err)
		}
		return Op{}, fmt.Errorf("%w: decode op: %v", ErrInvalid, d.err)
	}
	if op.ID.Origin == "" || op.ID.Seq == 0 || op.Dossier == "" || op.Ward == "" {
		return Op{}, fmt.Errorf("%w: decode op: origin, seq, ward and dossier are required", ErrInvalid)
	}
	return op, nil
}
