package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Log entry encoding (version 1). Deterministic: the same raft.Log always
// yields the same bytes, and there is no reflection or schema negotiation.
//
//	byte     version (= 1)
//	uvarint  Index
//	uvarint  Term
//	byte     Type
//	uvarint  len(Data)        then Data
//	uvarint  len(Extensions)  then Extensions
//	byte     0 = AppendedAt is the zero time (nothing follows)
//	         1 = varint Unix seconds, uvarint nanoseconds (< 1e9)
//
// A nil and an empty Data (or Extensions) encode alike and decode as nil.
// AppendedAt decodes in UTC; the instant is exact, the location is not kept
// (raft only reports it, it never compares it).
const codecVersion = 1

var errCorrupt = errors.New("raftlog: corrupt log entry")

// encodedSize returns an upper bound of the encoded length of l.
func encodedSize(l *raft.Log) int {
	return 1 + 3*binary.MaxVarintLen64 + 1 + len(l.Data) + binary.MaxVarintLen64 +
		len(l.Extensions) + 1 + 2*binary.MaxVarintLen64
}

// appendLog appends the encoding of l to dst.
func appendLog(dst []byte, l *raft.Log) []byte {
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	if l.AppendedAt.IsZero() {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
		dst = binary.AppendVarint(dst, l.AppendedAt.Unix())
		dst = binary.AppendUvarint(dst, uint64(l.AppendedAt.Nanosecond()))
	}
	return dst
}

// encodeLog returns the encoding of l in a new slice.
func encodeLog(l *raft.Log) []byte {
	return appendLog(make([]byte, 0, encodedSize(l)), l)
}

// decodeLog decodes buf into out, overwriting every field. Data and
// Extensions alias buf (capacity-limited), so buf must not be reused.
func decodeLog(buf []byte, out *raft.Log) error {
	d := decoder{buf: buf}
	if v := d.byte(); v != codecVersion {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("raftlog: unknown log encoding version %d", v)
	}
	var l raft.Log
	l.Index = d.uvarint()
	l.Term = d.uvarint()
	l.Type = raft.LogType(d.byte())
	l.Data = d.bytes()
	l.Extensions = d.bytes()
	switch d.byte() {
	case 0:
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= uint64(time.Second) {
			return errCorrupt
		}
		l.AppendedAt = time.Unix(sec, int64(nsec)).UTC()
	default:
		return errCorrupt
	}
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.buf))
	}
	*out = l
	return nil
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail()
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}
