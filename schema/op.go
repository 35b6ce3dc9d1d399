package schema

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// OpID identifies an op city-wide: the node it was made on and that node's
// gapless counter.
type OpID struct {
	Origin string `json:"origin"`
	Seq    uint64 `json:"seq"`
}

func (id OpID) String() string { return id.Origin + "/" + strconv.FormatUint(id.Seq, 10) }

// ParseOpID parses the "origin/seq" form of an OpID.
func ParseOpID(s string) (OpID, error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return OpID{}, fieldErr("op", "%q is not origin/seq", s)
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return OpID{}, fieldErr("op", "%q is not origin/seq", s)
	}
	return OpID{Origin: s[:i], Seq: seq}, nil
}

// Less orders op IDs by origin then seq; used to break HLC ties.
func (id OpID) Less(o OpID) bool {
	if id.Origin != o.Origin {
		return id.Origin < o.Origin
	}
	return id.Seq < o.Seq
}

// Kind says what an op does to its dossier.
type Kind string

// Op kinds. Withdrawal is a transition to StatusWithdrawn.
const (
	KindCreate     Kind = "create"
	KindTransition Kind = "transition"
	KindAssign     Kind = "assign"
	KindAnnotate   Kind = "annotate"
	KindResolve    Kind = "resolve"
	KindAttach     Kind = "attach"
)

// Actor is the official who made an op, as authenticated at the origin. The
// role is recorded because the fold checks permissions under the merged
// order, long after the official's role may have changed.
type Actor struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// Op is one change to one dossier. Ops are never updated; a dossier's state
// is the fold of its ops.
type Op struct {
	ID      OpID
	Ward    string
	Dossier string
	HLC     HLC
	Actor   Actor
	Kind    Kind
	// Epoch is the ward lease epoch the origin believed it held.
	Epoch uint64
	// Body is the kind's body as canonical JSON (see the *Body types).
	Body []byte
	// Prev is the hash of the origin's previous op (zero for Seq 1), chaining
	// each node's log so a gap or a rewrite is detectable.
	Prev [32]byte
	// Sig is the origin's ed25519 signature over SigningBytes.
	Sig []byte
}

// Bodies of each kind. Times are Unix milliseconds so the fold never depends
// on a time zone or a calendar file.

// CreateBody opens a dossier.
type CreateBody struct {
	Procedure  string            `json:"procedure"`
	Applicant  Applicant         `json:"applicant"`
	Fields     map[string]string `json:"fields,omitempty"`
	ReceiptNo  string            `json:"receipt_no"`
	ReceivedAt int64             `json:"received_at"`
	DueAt      int64             `json:"due_at"`
}

// TransitionBody moves a dossier to another status.
type TransitionBody struct {
	To   Status `json:"to"`
	Note string `json:"note,omitempty"`
}

// AssignBody hands a dossier to an official.
type AssignBody struct {
	Official     string `json:"official"`
	OfficialName string `json:"official_name,omitempty"`
}

// AnnotateBody adds a note.
type AnnotateBody struct {
	Text string `json:"text"`
}

// ResolveBody settles a conflict, optionally setting the status the
// official decided on.
type ResolveBody struct {
	Conflict string `json:"conflict"` // OpID of the conflicting op
	To       Status `json:"to,omitempty"`
	Note     string `json:"note,omitempty"`
}

// MarshalBody encodes an op body. encoding/json is deterministic for these
// types (struct order, sorted map keys), so the same body always has the
// same bytes and the same signature. HTML escaping is off: it would turn
// one '<' into six bytes and let a valid form outgrow the op size limit.
func MarshalBody(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only possible for unsupported types, which the *Body types are not.
		panic(fmt.Sprintf("schema: marshal op body: %v", err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

var (
	dossierIDRe = regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`) // a ULID
	knownKinds  = []Kind{KindCreate, KindTransition, KindAssign, KindAnnotate, KindResolve, KindAttach}
)

// CheckShape checks the fields that become parts of storage keys and
// routing decisions: a ward code, a ULID dossier ID, a node ID origin, a
// known kind, and a body within the size limit. The city runs it on every
// pushed op, so no op can smuggle a separator into another ward's keys.
func (op *Op) CheckShape() error {
	switch {
	case !wardCodeRe.MatchString(op.Ward):
		return fmt.Errorf("%w: op %s: ward %q is not a ward code", ErrInvalid, op.ID, op.Ward)
	case !dossierIDRe.MatchString(op.Dossier):
		return fmt.Errorf("%w: op %s: dossier %q is not a dossier ID", ErrInvalid, op.ID, op.Dossier)
	case !peerNodeRe.MatchString(op.ID.Origin) || op.ID.Seq == 0:
		return fmt.Errorf("%w: op %s: bad origin or seq", ErrInvalid, op.ID)
	case !slices.Contains(knownKinds, op.Kind):
		return fmt.Errorf("%w: op %s: unknown kind %q", ErrInvalid, op.ID, op.Kind)
	case len(op.Body) > MaxOpBody:
		return fmt.Errorf("%w: op %s: body of %d bytes, limit %d", ErrTooLarge, op.ID, len(op.Body), MaxOpBody)
	}
	return nil
}

// SigningBytes is what the origin signs: the encoding without the signature.
func (op *Op) SigningBytes() []byte {
	c := *op
	c.Sig = nil
	return c.Encode()
}

// Sign sets op.Sig with the origin's key.
func (op *Op) Sign(key ed25519.PrivateKey) {
	op.Sig = ed25519.Sign(key, op.SigningBytes())
}

// Verify checks op.Sig against the origin's public key.
func (op *Op) Verify(pub ed25519.PublicKey) error {
	if len(op.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, op.SigningBytes(), op.Sig) {
		return fmt.Errorf("%w: op %s", ErrBadSignature, op.ID)
	}
	return nil
}

// Hash is the SHA-256 of the op's full encoding; the next op of the same
// origin carries it as Prev.
func (op *Op) Hash() [32]byte { return sha256.Sum256(op.Encode()) }
