// Package wire frames and encodes the messages of every wardsync protocol:
// sync (push, pull), blob transfer and cluster forwarding. Raft's own RPCs
// are encoded by hashicorp/raft, but a raft stream starts with a wire Hello
// too, so version checks happen in one place for every stream.
//
// A frame is
//
//	[version u8][type u8][length u32 big-endian][payload]
//
// and every payload has one compact, deterministic encoding: uvarint
// lengths and counts (shortest form only), big-endian fixed-width numbers,
// no padding. Decoding is strict: unknown versions and types, oversized
// frames, truncation, out-of-bound lengths and trailing bytes are refused
// with an error that wraps one of schema's sentinels, and no input makes a
// decoder panic or allocate much more than the bytes it was actually sent.
//
// A stream opens with Hello, answered by Welcome or by Error. An Error is a
// clear refusal sent just before the sender closes the stream.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/wardsync/wardsync/schema"
)

// Version is the frame format version this node speaks. It is the first
// byte of every frame; a reader refuses any other value. (What a stream's
// protocol speaks on top is negotiated separately, by Hello.Versions.)
const Version = 1

// DefaultMaxFrame bounds a frame's payload when NewReader is given no limit.
// WriteMsg never writes a larger frame, so any reader with the default limit
// accepts whatever a wardsync node sends. For a compressed OpBatch the limit
// applies to the uncompressed payload.
const DefaultMaxFrame = 16 << 20

// HeaderSize is the size of a frame header.
const HeaderSize = 6

// Errors returned by Reader.Read, Unmarshal and WriteMsg. Each wraps a schema
// sentinel, so errors.Is(err, schema.ErrInvalid) and friends work across
// layers, and CodeFor maps them to Error codes.
var (
	// ErrUnknownVersion: a frame of a version this node does not speak, or
	// a Hello offering no protocol version in common. The stream cannot go on.
	ErrUnknownVersion error = &sentinel{"wire: unknown version", schema.ErrUnknownVersion}
	// ErrFrameTooLarge: a frame header claims more than the reader's limit
	// (nothing of that size is allocated), or a message too large to send.
	ErrFrameTooLarge error = &sentinel{"wire: frame too large", schema.ErrTooLarge}
	// ErrUnknownType: a message type this node does not know. The frame's
	// payload has been consumed, so the stream is still in step.
	ErrUnknownType error = &sentinel{"wire: unknown message type", schema.ErrInvalid}
	// ErrMalformed: a payload that does not decode. The frame has been
	// consumed, so the stream is still in step.
	ErrMalformed error = &sentinel{"wire: malformed payload", schema.ErrInvalid}
)

// sentinel is an error of this package that is also one of schema's, with
// a message of its own.
type sentinel struct {
	msg  string
	wrap error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.wrap }

// Type identifies a message. Numbers go on the wire: never reuse one.
//
//	0x01–0x0f  stream control, every protocol
//	0x10–0x1f  cluster: forwarding Raft commands to the leader
//	0x20–0x2f  sync (issue 4): push and pull
//	0x30–0x3f  blob (issue 5): manifests, have/want, chunks
//	0x40–0xff  unassigned
type Type uint8

// Message types.
const (
	TypeHello    Type = 0x01
	TypeWelcome  Type = 0x02
	TypeError    Type = 0x03
	TypeAck      Type = 0x04
	TypeRedirect Type = 0x05

	TypeForward       Type = 0x10
	TypeForwardResult Type = 0x11

	TypeOpBatch Type = 0x20
	// Reserved for issue 4 (pull): Changes{ward, since} opens a pull,
	// ChangesPage carries a page of a ward partition with its commit index,
	// Cursor moves the ward's pull cursor. 0x24–0x2f are free for sync.
	TypeChanges     Type = 0x21 // reserved
	TypeChangesPage Type = 0x22
	TypeCursor      Type = 0x23
	// LeaseInfo tells a node a ward's lease (on pull streams, whenever it
	// changes; in answer to a LeaseRelease). LeaseRelease is the holder
	// finishing a handback.
	TypeLeaseInfo    Type = 0x24
	TypeLeaseRelease Type = 0x25

	// Blob transfer: see blob.go.
	TypeBlobOffer  Type = 0x30
	TypeBlobWant   Type = 0x31
	TypeBlobChunk  Type = 0x32
	TypeBlobAck    Type = 0x33
	TypeBlobGet    Type = 0x34
	TypeBlobStored Type = 0x35
)

var typeNames = map[Type]string{
	TypeHello:         "Hello",
	TypeWelcome:       "Welcome",
	TypeError:         "Error",
	TypeAck:           "Ack",
	TypeRedirect:      "Redirect",
	TypeForward:       "Forward",
	TypeForwardResult: "ForwardResult",
	TypeOpBatch:       "OpBatch",
	TypeChanges:       "Changes",
	TypeChangesPage:   "ChangesPage",
	TypeCursor:        "Cursor",
	TypeLeaseInfo:     "LeaseInfo",
	TypeLeaseRelease:  "LeaseRelease",
	TypeBlobOffer:     "BlobOffer",
	TypeBlobWant:      "BlobWant",
	TypeBlobChunk:     "BlobChunk",
	TypeBlobAck:       "BlobAck",
	TypeBlobGet:       "BlobGet",
	TypeBlobStored:    "BlobStored",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// newMsg returns an empty message of type t, or nil for a type this node
// cannot decode (including the reserved ones until they are built).
func newMsg(t Type) Msg {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeWelcome:
		return new(Welcome)
	case TypeError:
		return new(Error)
	case TypeAck:
		return new(Ack)
	case TypeRedirect:
		return new(Redirect)
	case TypeForward:
		return new(Forward)
	case TypeForwardResult:
		return new(ForwardResult)
	case TypeOpBatch:
		return new(OpBatch)
	case TypeChangesPage:
		return new(ChangesPage)
	case TypeCursor:
		return new(Cursor)
	case TypeLeaseInfo:
		return new(LeaseInfo)
	case TypeLeaseRelease:
		return new(LeaseRelease)
	case TypeBlobOffer:
		return new(BlobOffer)
	case TypeBlobWant:
		return new(BlobWant)
	case TypeBlobChunk:
		return new(BlobChunk)
	case TypeBlobAck:
		return new(BlobAck)
	case TypeBlobGet:
		return new(BlobGet)
	case TypeBlobStored:
		return new(BlobStored)
	}
	return nil
}

// Msg is a message. Only this package defines messages (the interface is
// sealed), so every protocol's encoding lives here.
type Msg interface {
	Type() Type
	appendPayload(e *encoder)
	decodePayload(d *decoder)
}

// AppendFrame appends m's frame to dst.
func AppendFrame(dst []byte, m Msg) ([]byte, error) {
	if m == nil {
		return dst, errors.New("wire: nil message")
	}
	start := len(dst)
	e := encoder{b: append(dst, Version, byte(m.Type()), 0, 0, 0, 0)}
	m.appendPayload(&e)
	if e.err != nil {
		return dst, fmt.Errorf("wire: encode %v: %w", m.Type(), e.err)
	}
	n := len(e.b) - start - HeaderSize
	if n > DefaultMaxFrame {
		return dst, fmt.Errorf("%w: %v payload is %d bytes, limit %d", ErrFrameTooLarge, m.Type(), n, DefaultMaxFrame)
	}
	binary.BigEndian.PutUint32(e.b[start+2:], uint32(n))
	return e.b, nil
}

// WriteMsg writes m as one frame with a single Write call.
func WriteMsg(w io.Writer, m Msg) error {
	b, err := AppendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Unmarshal decodes a buffer holding exactly one frame (with the default
// limit). The message does not alias b.
func Unmarshal(b []byte) (Msg, error) {
	if len(b) > 0 && b[0] != Version {
		return nil, versionErr(b[0])
	}
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("wire: frame header cut short after %d of %d bytes: %w", len(b), HeaderSize, io.ErrUnexpectedEOF)
	}
	t, size, err := parseHeader(b, DefaultMaxFrame)
	if err != nil {
		return nil, err
	}
	switch rest := len(b) - HeaderSize; {
	case rest < size:
		return nil, fmt.Errorf("wire: frame payload cut short after %d of %d bytes: %w", rest, size, io.ErrUnexpectedEOF)
	case rest > size:
		return nil, fmt.Errorf("%w: %d bytes after the frame", ErrMalformed, rest-size)
	}
	return decodeMsg(t, bytes.Clone(b[HeaderSize:]), DefaultMaxFrame)
}

// Reader reads frames from a stream. It reads exactly each frame's bytes
// and never beyond, so once a Hello has been read the stream can be handed
// to another protocol (raft) as it is. A Reader is not safe for concurrent
// use.
//
// After ErrUnknownType or ErrMalformed the stream is still in step and Read
// may be called again (though the usual answer is SendError and close).
// After any other error (unknown version, oversized frame, truncation, I/O)
// the stream is lost and Read keeps returning that error.
type Reader struct {
	r   io.Reader
	max int
	hdr [HeaderSize]byte
	err error
	// prealloc: payloads up to this size get their whole buffer at once
	// (see Prealloc).
	prealloc int
}

// Prealloc makes the reader allocate a payload of up to n bytes in one
// go instead of growing it as bytes arrive. It is for streams of an
// authenticated peer whose frames are mostly large (blob chunks), where
// growing costs several copies of every frame; n must not exceed the
// reader's limit.
func (r *Reader) Prealloc(n int) { r.prealloc = min(n, r.max) }

// NewReader returns a Reader that refuses frames whose payload is larger than
// maxFrame bytes; maxFrame <= 0 means DefaultMaxFrame.
func NewReader(r io.Reader, maxFrame int) *Reader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	if uint64(maxFrame) > math.MaxUint32 {
		maxFrame = math.MaxUint32
	}
	return &Reader{r: r, max: maxFrame}
}

// MaxFrame is the reader's payload limit.
func (r *Reader) MaxFrame() int { return r.max }

// Read reads and decodes the next frame. It returns io.EOF when the stream
// ends cleanly between frames, and an error wrapping io.ErrUnexpectedEOF
// when it ends inside one.
func (r *Reader) Read() (Msg, error) {
	if r.err != nil {
		return nil, r.err
	}
	m, err := r.read()
	if err != nil && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrMalformed) {
		r.err = err
	}
	return m, err
}

func (r *Reader) read() (Msg, error) {
	n, err := io.ReadFull(r.r, r.hdr[:])
	if n > 0 && r.hdr[0] != Version {
		// Said first: a peer speaking another version (or another
		// protocol altogether) gets told so, however short its frame.
		return nil, versionErr(r.hdr[0])
	}
	switch {
	case err == io.EOF:
		return nil, io.EOF
	case err == io.ErrUnexpectedEOF:
		return nil, fmt.Errorf("wire: frame header cut short after %d of %d bytes: %w", n, HeaderSize, io.ErrUnexpectedEOF)
	case err != nil:
		return nil, err
	}
	t, size, err := parseHeader(r.hdr[:], r.max)
	if err != nil {
		return nil, err
	}
	step := payloadStep
	if size <= r.prealloc {
		step = size
	}
	payload, err := readPayload(r.r, size, step)
	if err != nil {
		return nil, err
	}
	return decodeMsg(t, payload, r.max)
}

// parseHeader checks a frame header whose version is already known good.
func parseHeader(hdr []byte, max int) (Type, int, error) {
	t := Type(hdr[1])
	size := binary.BigEndian.Uint32(hdr[2:])
	if uint64(size) > uint64(max) {
		return t, 0, fmt.Errorf("%w: %v frame claims %d bytes, limit %d", ErrFrameTooLarge, t, size, max)
	}
	return t, int(size), nil
}

func versionErr(v byte) error {
	return fmt.Errorf("%w: frame version %d, this node speaks version %d", ErrUnknownVersion, v, Version)
}

// payloadStep is how much of a payload is allocated before its bytes
// arrive; beyond it the buffer grows as they do, so a header claiming a
// large frame costs nothing until the peer actually sends it.
const payloadStep = 64 << 10

func readPayload(r io.Reader, n, step int) ([]byte, error) {
	buf := make([]byte, 0, min(n, max(step, payloadStep)))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("wire: frame payload cut short after %d of %d bytes: %w", len(buf), n, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	}
	return buf, nil
}

// decodeMsg decodes a payload of type t. limit bounds what decompression
// may produce. Byte fields of the message may alias payload.
func decodeMsg(t Type, payload []byte, limit int) (Msg, error) {
	m := newMsg(t)
	if m == nil {
		return nil, fmt.Errorf("%w: %v (%d bytes)", ErrUnknownType, t, len(payload))
	}
	d := decoder{b: payload, limit: limit}
	m.decodePayload(&d)
	d.done()
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrMalformed, t, d.err)
	}
	return m, nil
}
