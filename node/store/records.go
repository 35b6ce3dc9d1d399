package store

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// Identity is the node's own identity, fixed at `ward init`.
type Identity struct {
	Node       string             `json:"node"`
	Ward       string             `json:"ward"`
	Series     string             `json:"series"` // receipt number series, unique per node
	PublicKey  ed25519.PublicKey  `json:"public_key"`
	PrivateKey ed25519.PrivateKey `json:"private_key"`
	CreatedAt  time.Time          `json:"created_at"`
	// Role is what this node is: "" or ward for a ward office's node,
	// backup for a backup office, which has no Ward of its own and serves
	// the wards whose leases it is given.
	Role schema.PeerRole `json:"role,omitempty"`
}

// Official is a person who may use the node's API.
type Official struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Role      schema.Role `json:"role"`
	TokenHash []byte      `json:"token_hash"` // SHA-256 of the bearer token
	CreatedAt time.Time   `json:"created_at"`
	CreatedBy string      `json:"created_by,omitempty"`
}

// ErrNoIdentity means the store was never initialized with `ward init`.
var ErrNoIdentity = errors.New("store: node identity missing (run `wardsync ward init`)")

func getJSON(tx *Tx, key []byte, v any) (bool, error) {
	b, ok, err := tx.get(key)
	if err != nil || !ok {
		return ok, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("store: decode %q: %w", key, err)
	}
	return true, nil
}

func setJSON(tx *Tx, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tx.set(key, b)
	return nil
}

// Identity returns the node identity.
func (tx *Tx) Identity() (Identity, error) {
	var id Identity
	ok, err := getJSON(tx, keyIdentity, &id)
	if err == nil && !ok {
		err = ErrNoIdentity
	}
	return id, err
}

// PutIdentity writes the node identity; it refuses to replace one.
func (tx *Tx) PutIdentity(id Identity) error {
	if _, ok, err := tx.get(keyIdentity); err != nil || ok {
		if err == nil {
			err = fmt.Errorf("%w: this data dir is already initialized", schema.ErrConflict)
		}
		return err
	}
	return setJSON(tx, keyIdentity, id)
}

// LastSeq returns the seq of the node's latest op (0 if none).
func (tx *Tx) LastSeq() (uint64, error) { return tx.getUint(keySeq) }

// HLCFloor returns the highest HLC the node has written, to seed its clock.
func (tx *Tx) HLCFloor() (schema.HLC, error) {
	n, err := tx.getUint(keyHLC)
	return schema.HLC(n), err
}

// AppendLocal appends an op made on this node to its log: it gives the op
// the next gapless seq and the hash of the previous op, signs it, and stores
// it with the seq, chain head and clock high-water mark, all in this write.
// op.ID.Origin must be the node's ID.
func (tx *Tx) AppendLocal(op *schema.Op, key ed25519.PrivateKey) error {
	seq, err := tx.getUint(keySeq)
	if err != nil {
		return err
	}
	prev, _, err := tx.get(keyPrev)
	if err != nil {
		return err
	}
	op.ID.Seq = seq + 1
	copy(op.Prev[:], prev)
	op.Sign(key)
	enc := op.Encode()
	tx.set(opKey(op.ID), enc)
	tx.set(dossierOpKey(op), opKey(op.ID))
	tx.indexBlobRef(op)
	tx.setUint(keySeq, op.ID.Seq)
	h := sha256.Sum256(enc) // op.Hash(), without encoding it again
	tx.set(keyPrev, h[:])
	floor, err := tx.getUint(keyHLC)
	if err != nil {
		return err
	}
	tx.setUint(keyHLC, max(floor, uint64(op.HLC)))
	return nil
}

// HasOp reports whether the op is stored (ops are applied at most once).
func (tx *Tx) HasOp(id schema.OpID) (bool, error) {
	_, ok, err := tx.get(opKey(id))
	return ok, err
}

// Op returns one stored op.
func (tx *Tx) Op(id schema.OpID) (schema.Op, bool, error) {
	b, ok, err := tx.get(opKey(id))
	if err != nil || !ok {
		return schema.Op{}, ok, err
	}
	op, err := schema.DecodeOp(b)
	return op, err == nil, err
}

// OpsOf returns up to limit ops of origin with seq > after, in seq order.
func (tx *Tx) OpsOf(origin string, after uint64, limit int) ([]schema.Op, error) {
	var out []schema.Op
	prefix := opsOfOriginPrefix(origin)
	err := tx.scan(prefix, opKey(schema.OpID{Origin: origin, Seq: after}), false, true, func(_, v []byte) (bool, error) {
		op, err := schema.DecodeOp(v)
		if err != nil {
			return false, err
		}
		out = append(out, op)
		return len(out) < limit, nil
	})
	return out, err
}

// DossierOps returns a dossier's ops in fold order.
func (tx *Tx) DossierOps(id string) ([]schema.Op, error) {
	var out []schema.Op
	err := tx.scan(dossierOpsPrefix(id), nil, false, true, func(_, ref []byte) (bool, error) {
		b, ok, err := tx.get(ref)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("store: dossier %s index points at missing op %q", id, ref)
		}
		op, err := schema.DecodeOp(b)
		if err != nil {
			return false, err
		}
		out = append(out, op)
		return true, nil
	})
	return out, err
}

// Dossier returns a dossier's materialized state.
func (tx *Tx) Dossier(id string) (schema.Dossier, bool, error) {
	b, ok, err := tx.get(dossierKey(id))
	if err != nil || !ok {
		return schema.Dossier{}, ok, err
	}
	d, err := schema.DecodeDossier(b)
	return d, err == nil, err
}

// PutDossier stores a dossier's new state and keeps its indexes and
// counters in step with the change from old (nil for a new dossier).
func (tx *Tx) PutDossier(old, d *schema.Dossier) error {
	if old != nil && old.Created() {
		if err := tx.index(old, -1); err != nil {
			return err
		}
	}
	if d.Created() {
		if err := tx.index(d, +1); err != nil {
			return err
		}
	}
	tx.set(dossierKey(d.ID), schema.EncodeDossier(d))
	return nil
}

// index adds (sign +1) or removes (-1) a dossier's index entries and counts.
func (tx *Tx) index(d *schema.Dossier, sign int64) error {
	put := func(k []byte) {
		if sign > 0 {
			tx.set(k, nil)
		} else {
			tx.del(k)
		}
	}
	put(statusIndexKey(d.Ward, d.Status, d.ID))
	if d.Status.Open() {
		put(dueIndexKey(d.DueAt, d.ID))
	}
	if d.Assignee != "" {
		put(assigneeIndexKey(d.Assignee, d.ID))
	}
	if len(d.Conflicts) > 0 {
		put(conflictIndexKey(d.Ward, d.ID))
	}
	if err := tx.addCount(statusCountKey(d.Ward, d.Status), sign); err != nil {
		return err
	}
	if d.CompletedAt != 0 {
		if err := tx.addCount(procCountKey(d.Ward+"\x00"+d.Procedure, "decided"), sign); err != nil {
			return err
		}
		if d.OnTime() {
			if err := tx.addCount(procCountKey(d.Ward+"\x00"+d.Procedure, "ontime"), sign); err != nil {
				return err
			}
		}
	}
	return nil
}

// NextReceipt returns the next receipt counter for a local date (yyyymmdd).
func (tx *Tx) NextReceipt(date string) (uint64, error) {
	n, err := tx.getUint(receiptKey(date))
	if err != nil {
		return 0, err
	}
	tx.setUint(receiptKey(date), n+1)
	return n + 1, nil
}

// PutOfficial stores an official and indexes their token hash.
func (tx *Tx) PutOfficial(o Official) error {
	if _, ok, err := tx.get(officialKey(o.ID)); err != nil || ok {
		if err == nil {
			err = fmt.Errorf("%w: official %s exists", schema.ErrConflict, o.ID)
		}
		return err
	}
	if err := setJSON(tx, officialKey(o.ID), o); err != nil {
		return err
	}
	tx.set(tokenKey(o.TokenHash), []byte(o.ID))
	return nil
}

// Official returns one official.
func (tx *Tx) Official(id string) (Official, bool, error) {
	var o Official
	ok, err := getJSON(tx, officialKey(id), &o)
	return o, ok, err
}

// OfficialByToken finds the official whose token hashes to hash.
func (tx *Tx) OfficialByToken(hash []byte) (Official, bool, error) {
	id, ok, err := tx.get(tokenKey(hash))
	if err != nil || !ok {
		return Official{}, false, err
	}
	return tx.Official(string(id))
}

// Officials lists every official in ID order.
func (tx *Tx) Officials() ([]Official, error) {
	var out []Official
	err := tx.scan(prefixOfficial, nil, false, true, func(_, v []byte) (bool, error) {
		var o Official
		if err := json.Unmarshal(v, &o); err != nil {
			return false, err
		}
		out = append(out, o)
		return true, nil
	})
	return out, err
}

// ListQuery filters and pages a dossier listing.
type ListQuery struct {
	Ward      string        // required: the ward whose dossiers to list
	Status    schema.Status // "" = any
	Procedure string        // "" = any
	Assignee  string        // "" = anyone
	// OverdueAt, if non-zero, keeps only dossiers still open past their due
	// time at this Unix millisecond, most overdue first.
	OverdueAt int64
	// Conflict keeps only dossiers with an open conflict for an official
	// to resolve.
	Conflict bool
	Limit    int
	Cursor   string // from a previous page's NextCursor
}

// ErrBadCursor is returned for a cursor that no listing of this query made.
var ErrBadCursor = fmt.Errorf("%w: cursor does not belong to this listing", schema.ErrInvalid)

// maxScan bounds the index entries one page may read, so a filter that
// matches nothing cannot make one request read the whole database; the
// page then comes back short with a cursor to continue.
const maxScan = 20_000

// ListDossiers returns one page of dossiers. It walks the narrowest index
// the query allows (overdue: due time; status: ward+status; assignee;
// otherwise all dossiers, newest first) and filters the rest.
func (tx *Tx) ListDossiers(q ListQuery) (items []schema.Dossier, next string, err error) {
	var prefix []byte
	reverse := true
	switch {
	case q.OverdueAt != 0:
		prefix, reverse = prefixByDue, false
	case q.Conflict:
		prefix = conflictIndexPrefix(q.Ward)
	case q.Status != "":
		prefix = statusIndexPrefix(q.Ward, q.Status)
	case q.Assignee != "":
		prefix = assigneeIndexPrefix(q.Assignee)
	default:
		prefix = prefixDossier
	}
	var after []byte
	if q.Cursor != "" {
		after, err = base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || !bytes.HasPrefix(after, prefix) {
			return nil, "", ErrBadCursor
		}
	}
	scanned := 0
	var last []byte
	err = tx.scan(prefix, after, reverse, false, func(k, _ []byte) (bool, error) {
		scanned++
		last = k
		if q.OverdueAt != 0 {
			// Keys are due-time first: past now, nothing more is overdue.
			due := int64(binary.BigEndian.Uint64(k[len(prefixByDue):]))
			if due >= q.OverdueAt {
				last = nil
				return false, nil
			}
		}
		id := lastPart(k)
		if bytes.Equal(prefix, prefixDossier) {
			id = k[len(prefixDossier):]
		}
		d, ok, err := tx.Dossier(string(id))
		if err != nil || !ok {
			return err == nil, err
		}
		if d.Ward == q.Ward && (q.Status == "" || d.Status == q.Status) &&
			(q.Procedure == "" || d.Procedure == q.Procedure) &&
			(q.Assignee == "" || d.Assignee == q.Assignee) &&
			(q.OverdueAt == 0 || d.Overdue(q.OverdueAt)) &&
			(!q.Conflict || len(d.Conflicts) > 0) {
			items = append(items, d)
		}
		return len(items) < q.Limit && scanned < maxScan, nil
	})
	if err != nil {
		return nil, "", err
	}
	if last != nil && (len(items) == q.Limit || scanned >= maxScan) {
		next = base64.RawURLEncoding.EncodeToString(last)
	}
	return items, next, nil
}

// Stats are a ward's counts, read from counters kept by PutDossier.
type Stats struct {
	ByStatus    map[schema.Status]int64
	ByProcedure map[string]ProcedureStats
}

// ProcedureStats counts decided dossiers and those decided on time.
type ProcedureStats struct {
	Decided int64
	OnTime  int64
}

// Stats returns the counters of one ward.
func (tx *Tx) Stats(ward string) (Stats, error) {
	st := Stats{ByStatus: map[schema.Status]int64{}, ByProcedure: map[string]ProcedureStats{}}
	for _, s := range schema.Statuses {
		n, err := tx.getUint(statusCountKey(ward, s))
		if err != nil {
			return st, err
		}
		st.ByStatus[s] = int64(n)
	}
	prefix := append(cat(prefixProcCnt, ward), sep)
	err := tx.scan(prefix, nil, false, true, func(k, v []byte) (bool, error) {
		rest := k[len(prefix):]
		i := bytes.IndexByte(rest, sep)
		if i < 0 || len(v) != 8 {
			return false, fmt.Errorf("store: bad counter key %q", k)
		}
		proc, what := string(rest[:i]), string(rest[i+1:])
		ps := st.ByProcedure[proc]
		n := int64(binary.BigEndian.Uint64(v))
		if what == "decided" {
			ps.Decided = n
		} else {
			ps.OnTime = n
		}
		st.ByProcedure[proc] = ps
		return true, nil
	})
	return st, err
}

// ReplaceToken gives an official a new token hash; the old token stops
// working in the same write.
func (tx *Tx) ReplaceToken(id string, hash []byte) error {
	o, ok, err := tx.Official(id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no official %q", schema.ErrNotFound, id)
	}
	tx.del(tokenKey(o.TokenHash))
	o.TokenHash = hash
	if err := setJSON(tx, officialKey(id), o); err != nil {
		return err
	}
	tx.set(tokenKey(hash), []byte(id))
	return nil
}
