package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/wardsync/wardsync/schema"
)

// Bounds on decoded fields. An encoder refuses to write past them, so a
// well-behaved peer never sends what the other side refuses.
const (
	MaxName     = 1024     // protocol, node, ward, error code, leader, address
	MaxText     = 64 << 10 // error messages
	MaxVersions = 32       // protocol versions offered in a Hello

	frameBound = math.MaxInt // a field bounded only by its frame
)

// encoder appends a payload, remembering the first error.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

func (e *encoder) byte(v byte)        { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) bytes(p []byte)     { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) fixed64(v uint64)   { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) raw(p []byte)       { e.b = append(e.b, p...) }
func (e *encoder) rawString(s string) { e.b = append(e.b, s...) }

// string appends a length-prefixed string of at most max bytes.
func (e *encoder) string(s string, max int, what string) {
	if len(s) > max {
		e.fail(fmt.Errorf("%s is %d bytes, limit %d: %w", what, len(s), max, schema.ErrTooLarge))
		return
	}
	e.uvarint(uint64(len(s)))
	e.rawString(s)
}

// decoder reads a payload strictly, remembering the first error. Errors
// are plain descriptions; decodeMsg wraps them in ErrMalformed.
type decoder struct {
	b     []byte
	err   error
	limit int // what decompression may produce (the reader's frame limit)
}

var errShort = errors.New("truncated")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) failf(format string, args ...any) { d.fail(fmt.Errorf(format, args...)) }

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.failf("%s: %w", what, errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// uvarint reads a uvarint in its shortest form only, so every message has
// exactly one encoding.
func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.failf("%s: %w", what, errShort)
		return 0
	case n < 0:
		d.failf("%s: varint overflows 64 bits", what)
		return 0
	case n != uvarintLen(v):
		d.failf("%s: non-minimal varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func (d *decoder) fixed64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.failf("%s: %w", what, errShort)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// count reads an element count of at most max, each element taking at
// least minSize bytes, so a count can never promise more than the payload
// holds (and nothing is allocated for elements that are not there).
func (d *decoder) count(max, minSize int, what string) int {
	n := d.uvarint(what + " count")
	if d.err != nil {
		return 0
	}
	if n > uint64(max) {
		d.failf("%s: %d, limit %d", what, n, max)
		return 0
	}
	if n*uint64(minSize) > uint64(len(d.b)) {
		d.failf("%s: %d, but only %d bytes follow: %w", what, n, len(d.b), errShort)
		return 0
	}
	return int(n)
}

// bytes reads a length-prefixed byte string of at most max bytes. The
// result aliases the payload (a fresh buffer per frame); nil when empty.
func (d *decoder) bytes(max int, what string) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.failf("%s: %d bytes, limit %d", what, n, max)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.failf("%s: %d bytes, but only %d follow: %w", what, n, len(d.b), errShort)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	if n == 0 {
		return nil
	}
	return p
}

func (d *decoder) string(max int, what string) string { return string(d.bytes(max, what)) }

// rest takes the remaining bytes.
func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	p := d.b
	d.b = nil
	return p
}

// done refuses trailing bytes.
func (d *decoder) done() {
	if d.err == nil && len(d.b) != 0 {
		d.failf("%d trailing bytes", len(d.b))
	}
}

// hash reads a fixed 32-byte SHA-256.
func (d *decoder) hash(dst *[32]byte, what string) {
	if d.err != nil {
		return
	}
	if len(d.b) < 32 {
		d.failf("%s: %w", what, errShort)
		return
	}
	copy(dst[:], d.b[:32])
	d.b = d.b[32:]
}
