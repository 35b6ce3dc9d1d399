package wire

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/schema"
)

// Values of Hello.Proto: what a stream carries. Several may share an ALPN
// (member-to-member requests run on the sync ALPN beside push and pull);
// the Hello tells the streams apart. Protocols may add more; a server
// refuses one it does not serve with CodeUnknownProto.
const (
	ProtoRaft = "raft" // then the stream is hashicorp/raft's
	ProtoSync = "sync" // reserved
	ProtoPush = "push" // ward → city: OpBatch up, Ack down
	ProtoPull = "pull" // city → ward: Cursor up, ChangesPage and LeaseInfo down, then live
	// ProtoLease: the holder of a ward's lease sends LeaseRelease to
	// finish a handback; the city answers LeaseInfo (the new lease) or
	// Error.
	ProtoLease   = "lease"
	ProtoCluster = "cluster" // member to member: a follower forwarding Raft commands to the leader
	ProtoBlob    = "blob"    // attachments (issue 5)
	// ProtoLinkTest measures a link's raw throughput: after the Welcome
	// the caller streams BlobChunk frames and closes its side; the member
	// discards them and answers Ack{bytes received}. On the blob ALPN.
	ProtoLinkTest = "linktest"
)

// Hello is the first frame on every stream: who is calling, for which
// ward, and which versions of Proto it speaks.
//
//	proto string, node string, ward string, versions bytes
type Hello struct {
	Proto    string
	Node     string
	Ward     string
	Versions []uint8
	// Key is the node's ed25519 op-signing public key (push only): the city
	// records it at first contact and verifies the node's ops with it.
	Key []byte
}

func (*Hello) Type() Type { return TypeHello }

func (m *Hello) appendPayload(e *encoder) {
	e.string(m.Proto, MaxName, "proto")
	e.string(m.Node, MaxName, "node")
	e.string(m.Ward, MaxName, "ward")
	if len(m.Versions) > MaxVersions {
		e.fail(fmt.Errorf("%d versions, limit %d: %w", len(m.Versions), MaxVersions, schema.ErrTooLarge))
		return
	}
	e.bytes(m.Versions)
	if len(m.Key) > MaxKey {
		e.fail(fmt.Errorf("key of %d bytes, limit %d: %w", len(m.Key), MaxKey, schema.ErrTooLarge))
		return
	}
	e.bytes(m.Key)
}

func (m *Hello) decodePayload(d *decoder) {
	m.Proto = d.string(MaxName, "proto")
	m.Node = d.string(MaxName, "node")
	m.Ward = d.string(MaxName, "ward")
	if v := d.bytes(MaxVersions, "versions"); v != nil {
		m.Versions = slices.Clone(v)
	}
	if k := d.bytes(MaxKey, "key"); len(k) > 0 {
		m.Key = slices.Clone(k)
	}
}

// Welcome accepts a Hello: the protocol version chosen (see Negotiate) and
// the answering node.
//
//	version u8, node string
type Welcome struct {
	Version uint8
	Node    string
	Leader  string // the leader as this member knows it ("" if none)
}

func (*Welcome) Type() Type { return TypeWelcome }

func (m *Welcome) appendPayload(e *encoder) {
	e.byte(m.Version)
	e.string(m.Node, MaxName, "node")
	e.string(m.Leader, MaxName, "leader")
}

func (m *Welcome) decodePayload(d *decoder) {
	m.Version = d.byte("version")
	m.Node = d.string(MaxName, "node")
	m.Leader = d.string(MaxName, "leader")
}

// Negotiate picks the highest protocol version that a Hello offers and
// this node supports. With none in common the error (wrapping
// ErrUnknownVersion) says what each side speaks; send it with SendError.
func Negotiate(offered []uint8, supported ...uint8) (uint8, error) {
	best, found := uint8(0), false
	for _, v := range offered {
		if slices.Contains(supported, v) && (!found || v > best) {
			best, found = v, true
		}
	}
	if !found {
		return 0, fmt.Errorf("%w: peer speaks %v, this node speaks %v", ErrUnknownVersion, offered, supported)
	}
	return best, nil
}

// Error codes. A code names the kind of refusal for programs; Message is
// for people.
const (
	CodeUnknownVersion = "unknown_version" // schema.ErrUnknownVersion
	CodeTooLarge       = "too_large"       // schema.ErrTooLarge
	CodeBadFrame       = "bad_frame"       // a frame that did not decode, or not the one expected
	CodeUnknownProto   = "unknown_proto"   // a Hello for a protocol this node does not serve
	CodeInvalid        = "invalid"         // schema.ErrInvalid: decoded, but not valid
	CodeBadSignature   = "bad_signature"   // schema.ErrBadSignature
	CodeForbidden      = "forbidden"       // schema.ErrForbidden / ErrUnauthorized
	CodeNotFound       = "not_found"       // schema.ErrNotFound
	CodeConflict       = "conflict"        // schema.ErrConflict
	CodeNotLeader      = "not_leader"      // this member cannot commit; see Redirect
	CodeUnavailable    = "unavailable"     // shutting down, overloaded: retry later
	CodeOutcomeUnknown = "outcome_unknown" // schema.ErrOutcomeUnknown: it may have been applied
	CodeInternal       = "internal"
)

// Error is a clear refusal sent before closing a stream. *Error is also a
// Go error: a client can return what it received, and errors.Is matches
// the schema sentinel its code stands for.
//
//	code string, message string
type Error struct {
	Code    string
	Message string
}

func (*Error) Type() Type { return TypeError }

func (m *Error) appendPayload(e *encoder) {
	e.string(m.Code, MaxName, "code")
	e.string(m.Message, MaxText, "message")
}

func (m *Error) decodePayload(d *decoder) {
	m.Code = d.string(MaxName, "code")
	m.Message = d.string(MaxText, "message")
}

func (m *Error) Error() string { return "peer refused (" + m.Code + "): " + m.Message }

// Unwrap maps the code to its schema sentinel, or nil.
func (m *Error) Unwrap() error {
	switch m.Code {
	case CodeUnknownVersion:
		return schema.ErrUnknownVersion
	case CodeTooLarge:
		return schema.ErrTooLarge
	case CodeBadFrame, CodeInvalid:
		return schema.ErrInvalid
	case CodeBadSignature:
		return schema.ErrBadSignature
	case CodeForbidden:
		return schema.ErrForbidden
	case CodeNotFound:
		return schema.ErrNotFound
	case CodeConflict:
		return schema.ErrConflict
	}
	return nil
}

// CodeFor is the Error code for a local error: what a server sends when
// err ends a stream (and what ForwardResult.Code carries).
func CodeFor(err error) string {
	var remote *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &remote):
		return remote.Code
	case errors.Is(err, schema.ErrUnknownVersion):
		return CodeUnknownVersion
	case errors.Is(err, schema.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrUnknownType), errors.Is(err, io.ErrUnexpectedEOF):
		return CodeBadFrame
	case errors.Is(err, schema.ErrBadSignature):
		return CodeBadSignature
	case errors.Is(err, schema.ErrForbidden), errors.Is(err, schema.ErrUnauthorized):
		return CodeForbidden
	case errors.Is(err, schema.ErrInvalid):
		return CodeInvalid
	case errors.Is(err, schema.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, schema.ErrConflict):
		return CodeConflict
	case errors.Is(err, diskspace.ErrLow):
		return CodeUnavailable // nothing stored; the sender tries again later
	case errors.Is(err, schema.ErrOutcomeUnknown):
		return CodeOutcomeUnknown
	}
	return CodeInternal
}

// SendError writes an Error frame. A message longer than MaxText is cut
// (on a rune boundary) rather than refused, so a refusal always goes out.
func SendError(w io.Writer, code, msg string) error {
	return WriteMsg(w, &Error{Code: truncate(code, MaxName), Message: truncate(msg, MaxText)})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// Ack acknowledges everything up to Seq (push: the origin's ops committed
// up to Seq; as the answer to a push Hello, the highest Seq already held).
//
//	seq uvarint
type Ack struct {
	Seq uint64
}

func (*Ack) Type() Type { return TypeAck }

func (m *Ack) appendPayload(e *encoder) { e.uvarint(m.Seq) }

func (m *Ack) decodePayload(d *decoder) { m.Seq = d.uvarint("seq") }

// Redirect tells a peer to go to the leader instead (Leader is its node
// ID, Address its QUIC address; both empty when no leader is known).
//
//	leader string, address string
type Redirect struct {
	Leader  string
	Address string
}

func (*Redirect) Type() Type { return TypeRedirect }

func (m *Redirect) appendPayload(e *encoder) {
	e.string(m.Leader, MaxName, "leader")
	e.string(m.Address, MaxName, "address")
}

func (m *Redirect) decodePayload(d *decoder) {
	m.Leader = d.string(MaxName, "leader")
	m.Address = d.string(MaxName, "address")
}

// Forward carries a Raft command from a follower to the leader. The
// command's encoding is the cluster's; it is bounded only by the frame.
//
//	command bytes
type Forward struct {
	Command []byte
}

func (*Forward) Type() Type { return TypeForward }

func (m *Forward) appendPayload(e *encoder) { e.bytes(m.Command) }

func (m *Forward) decodePayload(d *decoder) { m.Command = d.bytes(frameBound, "command") }

// ForwardResult answers a Forward: the commit index and the FSM's result,
// or the error (Err for people, Code as in Error for programs).
//
//	index uvarint, result bytes, err string, code string
type ForwardResult struct {
	Index  uint64
	Result []byte
	Err    string
	Code   string
}

func (*ForwardResult) Type() Type { return TypeForwardResult }

func (m *ForwardResult) appendPayload(e *encoder) {
	e.uvarint(m.Index)
	e.bytes(m.Result)
	e.string(m.Err, MaxText, "err")
	e.string(m.Code, MaxName, "code")
}

func (m *ForwardResult) decodePayload(d *decoder) {
	m.Index = d.uvarint("index")
	m.Result = d.bytes(frameBound, "result")
	m.Err = d.string(MaxText, "err")
	m.Code = d.string(MaxName, "code")
}

// MaxKey bounds a public key in a Hello.
const MaxKey = 64

// Cursor opens a pull: the ward's partition and the commit index it has
// applied up to. The city streams ChangesPages after it.
type Cursor struct {
	Ward  string
	Since uint64
}

func (*Cursor) Type() Type { return TypeCursor }

func (m *Cursor) appendPayload(e *encoder) {
	e.string(m.Ward, MaxName, "ward")
	e.uvarint(m.Since)
}

func (m *Cursor) decodePayload(d *decoder) {
	m.Ward = d.string(MaxName, "ward")
	m.Since = d.uvarint("since")
}

// ChangesPage is a page of a ward partition's ops in commit order. Index is
// the cursor after applying the page: the ward stores it in the same
// transaction as the ops. A page with no ops only moves the cursor.
type ChangesPage struct {
	Index uint64
	Ops   []schema.Op
}

func (*ChangesPage) Type() Type { return TypeChangesPage }

func (m *ChangesPage) appendPayload(e *encoder) {
	e.uvarint(m.Index)
	(&OpBatch{Ops: m.Ops}).appendPayload(e)
}

func (m *ChangesPage) decodePayload(d *decoder) {
	m.Index = d.uvarint("index")
	var b OpBatch
	b.decodePayload(d)
	m.Ops = b.Ops
}
