package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// CreateDossier receives a new dossier: it validates the input, mints the
// dossier ID and the receipt number, computes the due time from the
// procedure's legal processing time, and returns once the create op is on
// disk. The actor is the authenticated official, never client input.
func (n *Node) CreateDossier(ctx context.Context, who store.Official, in schema.NewDossier) (schema.Dossier, error) {
	in.Normalize()
	if in.Ward == "" {
		w, err := n.defaultWard(`"ward" in the body`)
		if err != nil {
			return schema.Dossier{}, err
		}
		in.Ward = w
	}
	if err := in.Validate(n.catalog, n.wards); err != nil {
		return schema.Dossier{}, err
	}
	proc, _ := n.catalog.Lookup(in.Procedure)
	var out schema.Dossier
	err := n.store.Write(ctx, func(tx *store.Tx) error {
		epoch, err := n.receiveEpoch(tx, in.Ward)
		if err != nil {
			return err
		}
		hlc := n.clock.Now()
		id := n.newDossierID(hlc)
		received := hlc.Time().In(schema.CityZone)
		date := received.Format("20060102")
		counter, err := tx.NextReceipt(date)
		if err != nil {
			return err
		}
		body := schema.CreateBody{
			Procedure: in.Procedure, Applicant: in.Applicant, Fields: in.Fields,
			ReceiptNo:  n.receiptNo(in.Ward, received.Format("060102"), counter),
			ReceivedAt: received.UnixMilli(),
			DueAt:      n.calendar.DueAt(received, proc.ProcessingDays).UnixMilli(),
		}
		op := schema.Op{
			ID: schema.OpID{Origin: n.id.Node, Seq: 1}, Ward: in.Ward, Dossier: id, HLC: hlc,
			Actor: actorOf(who), Kind: schema.KindCreate, Epoch: epoch, Body: schema.MarshalBody(body),
		}
		// (Seq 1 is a placeholder until AppendLocal gives the real one.)
		// Bytes, not characters, bound an op: refuse a form whose encoding
		// would be too big to sync rather than store an op nobody can read.
		if err := op.CheckShape(); err != nil {
			return err
		}
		if err := tx.AppendLocal(&op, n.id.PrivateKey); err != nil {
			return err
		}
		// Apply checks the op; an error discards this whole write.
		var d schema.Dossier
		if err := schema.Apply(&d, &op); err != nil {
			return err
		}
		out = d
		return tx.PutDossier(nil, &d)
	})
	if err == nil {
		n.metrics.ops.WithLabelValues(string(schema.KindCreate)).Inc()
		n.writes.notify()
	}
	return out, err
}

// receiptNo formats a receipt number: ward code, local date, the node's
// series and a per-day counter, e.g. 26734-261123-W1A-0042. The series is
// fixed per node at init, so two offices never issue the same number, even
// while both are offline (a ward office and the backup serving its ward
// included). The ward code is the receiving office's own; a backup has
// none, so it prints the ward of the dossier it receives for.
func (n *Node) receiptNo(ward, yymmdd string, counter uint64) string {
	if !n.IsBackup() {
		ward = n.id.Ward
	}
	return fmt.Sprintf("%s-%s-%s-%04d", ward, yymmdd, n.id.Series, counter)
}

// mutate appends one op of kind to an existing dossier after checking it
// against the dossier's current state, and returns the new state.
func (n *Node) mutate(ctx context.Context, who store.Official, id string, kind schema.Kind, body any) (schema.Dossier, error) {
	if !ValidDossierID(id) {
		return schema.Dossier{}, errNoDossier
	}
	raw := schema.MarshalBody(body)
	var out schema.Dossier
	err := n.store.Write(ctx, func(tx *store.Tx) error {
		d, err := n.ownDossier(tx, id)
		if err != nil {
			return err
		}
		if _, err := n.appendOp(tx, who, &d, kind, raw); err != nil {
			return err
		}
		out = d
		return nil
	})
	if err == nil {
		n.metrics.ops.WithLabelValues(string(kind)).Inc()
		n.writes.notify()
	}
	return out, err
}

// ownDossier reads dossier id for a change made here: it must exist and,
// on a ward node, belong to its ward. (Whether the node may write that
// ward now is the lease's to say: see writeEpoch.)
func (n *Node) ownDossier(tx *store.Tx, id string) (schema.Dossier, error) {
	d, ok, err := tx.Dossier(id)
	if err != nil {
		return schema.Dossier{}, err
	}
	if !ok {
		return schema.Dossier{}, errNoDossier
	}
	if !n.IsBackup() && d.Ward != n.id.Ward {
		// A dossier received here for another ward: that ward processes
		// it; this office keeps a read-only tracking copy.
		return schema.Dossier{}, fmt.Errorf("%w: dossier %s belongs to ward %s; this office keeps a read-only tracking copy", schema.ErrForbidden, id, d.Ward)
	}
	return d, nil
}

// appendOp checks one op of kind against d, signs and stores it, applies
// it to d and stores d's new state, all inside the caller's write. The op
// carries the lease epoch under which this node writes d's ward.
func (n *Node) appendOp(tx *store.Tx, who store.Official, d *schema.Dossier, kind schema.Kind, raw []byte) (schema.Op, error) {
	// The lease first: a read-only office says so, not that a move is
	// not allowed.
	epoch, err := n.writeEpoch(tx, d.Ward)
	if err != nil {
		return schema.Op{}, err
	}
	// The op is appended to d's state below (Apply), not folded in with
	// d's other ops: that is the order every other replica's Fold gives
	// only if the op is stamped after every op d holds.
	n.clock.Observe(d.LastHLC)
	op := schema.Op{
		ID: schema.OpID{Origin: n.id.Node, Seq: 1}, Ward: d.Ward, Dossier: d.ID, HLC: n.clock.Now(),
		Actor: actorOf(who), Kind: kind, Epoch: epoch, Body: raw,
	}
	// Check before signing: refused moves (409/403) are common at the
	// desk and should not cost a signature.
	if err := schema.Check(d, &op); err != nil {
		return schema.Op{}, err
	}
	if err := op.CheckShape(); err != nil {
		return schema.Op{}, err
	}
	if err := tx.AppendLocal(&op, n.id.PrivateKey); err != nil {
		return schema.Op{}, err
	}
	old := *d
	if err := schema.Apply(d, &op); err != nil {
		return schema.Op{}, err
	}
	return op, tx.PutDossier(&old, d)
}

// Transition moves a dossier to another status (withdrawal included).
func (n *Node) Transition(ctx context.Context, who store.Official, id string, to schema.Status, note string) (schema.Dossier, error) {
	if !to.Valid() {
		return schema.Dossier{}, &schema.FieldError{Field: "to", Reason: fmt.Sprintf("unknown status %q", to)}
	}
	if err := schema.ValidateText("note", note, schema.MaxNoteLen, false); err != nil {
		return schema.Dossier{}, err
	}
	return n.mutate(ctx, who, id, schema.KindTransition, schema.TransitionBody{To: to, Note: note})
}

// Assign hands a dossier to an official of this node.
func (n *Node) Assign(ctx context.Context, who store.Official, id, official string) (schema.Dossier, error) {
	if official == "" {
		return schema.Dossier{}, &schema.FieldError{Field: "official", Reason: "is required"}
	}
	var target store.Official
	var ok bool
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		target, ok, err = tx.Official(official)
		return err
	})
	if err != nil {
		return schema.Dossier{}, err
	}
	if !ok {
		return schema.Dossier{}, &schema.FieldError{Field: "official", Reason: fmt.Sprintf("no official %q at this office", official)}
	}
	return n.mutate(ctx, who, id, schema.KindAssign, schema.AssignBody{Official: target.ID, OfficialName: target.Name})
}

// Annotate adds a note to a dossier.
func (n *Node) Annotate(ctx context.Context, who store.Official, id, text string) (schema.Dossier, error) {
	if err := schema.ValidateText("text", text, schema.MaxNoteLen, true); err != nil {
		return schema.Dossier{}, err
	}
	return n.mutate(ctx, who, id, schema.KindAnnotate, schema.AnnotateBody{Text: text})
}

// Resolve settles a conflict on a dossier.
func (n *Node) Resolve(ctx context.Context, who store.Official, id, conflict string, to schema.Status, note string) (schema.Dossier, error) {
	if _, err := schema.ParseOpID(conflict); err != nil {
		return schema.Dossier{}, &schema.FieldError{Field: "conflict", Reason: "must be an op ID (origin/seq)"}
	}
	if err := schema.ValidateText("note", note, schema.MaxNoteLen, false); err != nil {
		return schema.Dossier{}, err
	}
	return n.mutate(ctx, who, id, schema.KindResolve, schema.ResolveBody{Conflict: conflict, To: to, Note: note})
}

// Dossier returns one dossier.
func (n *Node) Dossier(id string) (schema.Dossier, error) {
	if !ValidDossierID(id) {
		return schema.Dossier{}, errNoDossier
	}
	var d schema.Dossier
	err := n.store.View(func(tx *store.Tx) error {
		var ok bool
		var err error
		d, ok, err = tx.Dossier(id)
		if err == nil && !ok {
			err = errNoDossier
		}
		if err == nil {
			err = n.mayRead(tx, d.Ward)
		}
		return err
	})
	return d, err
}

// List returns one page of a ward's dossiers (by default the node's ward,
// or a backup's only held ward).
func (n *Node) List(q store.ListQuery) (items []schema.Dossier, next string, err error) {
	if q.Ward == "" {
		if q.Ward, err = n.defaultWard("?ward=CODE"); err != nil {
			return nil, "", err
		}
	}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	err = n.store.View(func(tx *store.Tx) error {
		if err := n.mayRead(tx, q.Ward); err != nil {
			return err
		}
		var err error
		items, next, err = tx.ListDossiers(q)
		return err
	})
	return items, next, err
}

// Stats returns a ward's counts ("": as List defaults).
func (n *Node) Stats(ward string) (store.Stats, int, error) {
	if ward == "" {
		var err error
		if ward, err = n.defaultWard("?ward=CODE"); err != nil {
			return store.Stats{}, 0, err
		}
	}
	var st store.Stats
	overdue := 0
	err := n.store.View(func(tx *store.Tx) error {
		if err := n.mayRead(tx, ward); err != nil {
			return err
		}
		var err error
		if st, err = tx.Stats(ward); err != nil {
			return err
		}
		// Count overdue dossiers a page at a time through the due index.
		q := store.ListQuery{Ward: ward, OverdueAt: n.now().UnixMilli(), Limit: 1000}
		for {
			items, next, err := tx.ListDossiers(q)
			if err != nil {
				return err
			}
			overdue += len(items)
			if next == "" {
				return nil
			}
			q.Cursor = next
		}
	})
	return st, overdue, err
}

// AddOfficial creates an official and returns their bearer token, which is
// shown once and stored only as a hash. Only admins may do this.
func (n *Node) AddOfficial(ctx context.Context, who store.Official, id, name string, role schema.Role) (store.Official, string, error) {
	if who.Role != schema.RoleAdmin {
		return store.Official{}, "", fmt.Errorf("%w: only an admin adds officials", schema.ErrForbidden)
	}
	if err := schema.ValidateText("name", name, schema.MaxNameLen, true); err != nil {
		return store.Official{}, "", err
	}
	if !role.Valid() {
		return store.Official{}, "", &schema.FieldError{Field: "role", Reason: fmt.Sprintf("%q must be clerk, head or admin", role)}
	}
	if id == "" {
		id = "off-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(randomBytes(5)))
	} else if !nodeIDRe.MatchString(id) {
		return store.Official{}, "", &schema.FieldError{Field: "id", Reason: "must be 1-32 lower-case letters, digits and -"}
	}
	token, hash := newToken()
	o := store.Official{ID: id, Name: strings.TrimSpace(name), Role: role, TokenHash: hash, CreatedAt: n.now().UTC(), CreatedBy: who.ID}
	err := n.store.Write(ctx, func(tx *store.Tx) error { return tx.PutOfficial(o) })
	if err != nil {
		return store.Official{}, "", err
	}
	n.log.Info("official added", "official", o.ID, "role", o.Role, "by", who.ID)
	return o, token, nil
}

// Authenticate returns the official a bearer token belongs to.
func (n *Node) Authenticate(token string) (store.Official, error) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return store.Official{}, fmt.Errorf("%w: malformed token", schema.ErrUnauthorized)
	}
	sum := sha256.Sum256([]byte(token))
	var o store.Official
	var ok bool
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		o, ok, err = tx.OfficialByToken(sum[:])
		return err
	})
	if err != nil {
		return store.Official{}, err
	}
	if !ok {
		return store.Official{}, fmt.Errorf("%w: unknown token", schema.ErrUnauthorized)
	}
	return o, nil
}

// Officials lists the office's officials.
func (n *Node) Officials() ([]store.Official, error) {
	var out []store.Official
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		out, err = tx.Officials()
		return err
	})
	return out, err
}

const tokenPrefix = "wst_"

// newToken makes a bearer token and its SHA-256. Tokens carry 256 random
// bits, so a fast hash is enough: there is nothing to brute-force, unlike
// a password.
func newToken() (token string, hash []byte) {
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(randomBytes(32))
	sum := sha256.Sum256([]byte(token))
	return token, sum[:]
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return b
}
