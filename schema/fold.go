package schema

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Dossier is a dossier's state: the fold of its ops. Times are Unix
// milliseconds. The JSON encoding of this struct is canonical (fixed field
// order, sorted map keys), which is what StateHash hashes.
type Dossier struct {
	ID           string            `json:"id"`
	Ward         string            `json:"ward"`
	Procedure    string            `json:"procedure"`
	ReceiptNo    string            `json:"receipt_no"`
	Origin       string            `json:"origin"`
	Status       Status            `json:"status"`
	Applicant    Applicant         `json:"applicant"`
	Fields       map[string]string `json:"fields,omitempty"`
	ReceivedAt   int64             `json:"received_at"`
	DueAt        int64             `json:"due_at"`
	CompletedAt  int64             `json:"completed_at,omitempty"`
	Assignee     string            `json:"assignee,omitempty"`
	AssigneeName string            `json:"assignee_name,omitempty"`
	CreatedBy    Actor             `json:"created_by"`
	LastHLC      HLC               `json:"last_hlc"`
	History      []Event           `json:"history"`
	Conflicts    []Conflict        `json:"conflicts"`
	// Attachments are in fold order; omitted when empty so the state (and
	// state hash) of a dossier without any is what it was before they
	// existed.
	Attachments []Attachment `json:"attachments,omitempty"`
}

// Event is one op as it shows in a dossier's history.
type Event struct {
	Op       string `json:"op"`
	HLC      HLC    `json:"hlc"`
	At       int64  `json:"at"`
	Actor    Actor  `json:"actor"`
	Kind     Kind   `json:"kind"`
	From     Status `json:"from,omitempty"`
	To       Status `json:"to,omitempty"`
	Official string `json:"official,omitempty"`
	Text     string `json:"text,omitempty"`
	// Conflict marks an op that was not valid under the merged order; it is
	// kept, and listed in Conflicts until an official resolves it.
	Conflict bool `json:"conflict,omitempty"`
}

// Conflict is an op that the merged order made invalid, for example a
// dossier approved at the ward while the backup office rejected it.
type Conflict struct {
	Op     string `json:"op"`
	Kind   Kind   `json:"kind"`
	From   Status `json:"from,omitempty"`
	To     Status `json:"to,omitempty"`
	Actor  Actor  `json:"actor"`
	At     int64  `json:"at"`
	Reason string `json:"reason"`
}

// Created reports whether the dossier's create op has been applied.
func (d *Dossier) Created() bool { return d.Status != "" }

// Overdue reports whether the dossier is still open past its due time.
func (d *Dossier) Overdue(nowMillis int64) bool { return d.Status.Open() && nowMillis > d.DueAt }

// OnTime reports whether a decided dossier was decided by its due time.
func (d *Dossier) OnTime() bool { return d.CompletedAt != 0 && d.CompletedAt <= d.DueAt }

// Check returns nil if op may be applied to d as it stands, or the error a
// clerk would be shown: a *TransitionError, a *FieldError, or an error
// wrapping ErrConflict, ErrForbidden or ErrNotFound. The node calls it before
// it writes an op; the fold calls it to decide what becomes a conflict.
func Check(d *Dossier, op *Op) error {
	_, err := checkOp(d, op)
	return err
}

// checkOp is Check that also returns the decoded body, so Apply decodes
// each op's JSON once.
func checkOp(d *Dossier, op *Op) (any, error) {
	if op.Kind == KindCreate {
		if d.Created() {
			return nil, fmt.Errorf("%w: dossier %s already exists", ErrConflict, op.Dossier)
		}
		var b CreateBody
		if err := json.Unmarshal(op.Body, &b); err != nil {
			return nil, fieldErr("body", "bad create body: %v", err)
		}
		return b, nil
	}
	if !d.Created() {
		return nil, fmt.Errorf("%w: dossier %s has no create op yet", ErrNotFound, op.Dossier)
	}
	switch op.Kind {
	case KindTransition:
		var b TransitionBody
		if err := json.Unmarshal(op.Body, &b); err != nil {
			return nil, fieldErr("body", "bad transition body: %v", err)
		}
		if !b.To.Valid() {
			return nil, fieldErr("to", "unknown status %q", b.To)
		}
		return b, CheckTransition(d.Status, b.To, op.Actor.Role)
	case KindAssign:
		var b AssignBody
		if err := json.Unmarshal(op.Body, &b); err != nil {
			return nil, fieldErr("body", "bad assign body: %v", err)
		}
		if !d.Status.Open() {
			return nil, fmt.Errorf("%w: dossier is %s; only open dossiers can be assigned", ErrConflict, d.Status)
		}
		if op.Actor.Role == RoleClerk && b.Official != op.Actor.ID {
			return nil, fmt.Errorf("%w: a clerk may assign a dossier only to themselves", ErrForbidden)
		}
		return b, nil
	case KindAnnotate:
		var b AnnotateBody
		if err := json.Unmarshal(op.Body, &b); err != nil {
			return nil, fieldErr("body", "bad annotate body: %v", err)
		}
		return b, nil
	case KindAttach:
		var b AttachBody
		if err := json.Unmarshal(op.Body, &b); err != nil {
			return nil, fieldErr("body", "bad attach body: %v", err)
		}
		if _, err := b.Manifest(); err != nil {
			return nil, err
		}
		return b, nil
	case KindResolve:
		var b ResolveBody
		if err := json.Unmarshal(op.Body, &b); err != nil {
			return nil, fieldErr("body", "bad resolve body: %v", err)
		}
		if op.Actor.Role != RoleHead && op.Actor.Role != RoleAdmin {
			return nil, fmt.Errorf("%w: only a head or an admin resolves conflicts", ErrForbidden)
		}
		if !slices.ContainsFunc(d.Conflicts, func(c Conflict) bool { return c.Op == b.Conflict }) {
			return nil, fmt.Errorf("%w: dossier has no open conflict %q", ErrConflict, b.Conflict)
		}
		if b.To != "" && !b.To.Valid() {
			return nil, fieldErr("to", "unknown status %q", b.To)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: unknown op kind %q", ErrInvalid, op.Kind)
}

// Apply applies one op to d. An op that Check refuses is not dropped: it is
// recorded in the history and as a conflict, so no official's work vanishes.
// Apply returns Check's error when the op became a conflict: the node uses
// it to refuse a local op (discarding d), the fold to ignore it.
func Apply(d *Dossier, op *Op) error {
	at := op.HLC.Wall()
	ev := Event{Op: op.ID.String(), HLC: op.HLC, At: at, Actor: op.Actor, Kind: op.Kind}
	decoded, err := checkOp(d, op)
	if err != nil {
		ev.Conflict = true
		c := Conflict{Op: ev.Op, Kind: op.Kind, From: d.Status, Actor: op.Actor, At: at, Reason: err.Error()}
		if op.Kind == KindTransition {
			var b TransitionBody
			_ = json.Unmarshal(op.Body, &b)
			c.To, ev.To = b.To, b.To
		}
		if !d.Created() && op.Kind != KindCreate {
			// Keep the dossier identifiable until its create arrives.
			d.ID, d.Ward = op.Dossier, op.Ward
		}
		ev.From = d.Status
		ev.Text = err.Error()
		d.Conflicts = append(d.Conflicts, c)
		d.History = append(d.History, ev)
		d.LastHLC = MergeHLC(d.LastHLC, op.HLC)
		return err
	}
	switch b := decoded.(type) {
	case CreateBody:
		d.ID, d.Ward, d.Origin = op.Dossier, op.Ward, op.ID.Origin
		d.Procedure, d.ReceiptNo = b.Procedure, b.ReceiptNo
		d.Applicant, d.Fields = b.Applicant, b.Fields
		d.ReceivedAt, d.DueAt = b.ReceivedAt, b.DueAt
		d.CreatedBy = op.Actor
		d.Status = StatusReceived
		ev.To = StatusReceived
	case TransitionBody:
		ev.From, ev.To, ev.Text = d.Status, b.To, b.Note
		d.setStatus(b.To, at)
	case AssignBody:
		d.Assignee, d.AssigneeName = b.Official, b.OfficialName
		ev.Official = b.Official
	case AnnotateBody:
		ev.Text = b.Text
	case AttachBody:
		ev.Text = b.Name
		// The same content attached again (by two offices, say) is one
		// attachment; the history still shows both ops.
		if !slices.ContainsFunc(d.Attachments, func(a Attachment) bool { return a.Hash == b.Hash }) {
			d.Attachments = append(d.Attachments, Attachment{Op: ev.Op, Name: b.Name, Hash: b.Hash, Size: b.Size, Type: b.Type, By: op.Actor, At: at})
		}
	case ResolveBody:
		d.Conflicts = slices.DeleteFunc(d.Conflicts, func(c Conflict) bool { return c.Op == b.Conflict })
		ev.Text = b.Note
		ev.From = d.Status
		if b.To != "" {
			ev.To = b.To
			d.setStatus(b.To, at)
		}
	}
	d.History = append(d.History, ev)
	d.LastHLC = MergeHLC(d.LastHLC, op.HLC)
	return nil
}

func (d *Dossier) setStatus(to Status, at int64) {
	d.Status = to
	if to.Decided() && d.CompletedAt == 0 {
		d.CompletedAt = at
	}
}

// SortOps orders ops the way every replica folds them: by HLC, then origin,
// then seq. The order is total, so it does not depend on arrival order.
func SortOps(ops []Op) {
	slices.SortFunc(ops, func(a, b Op) int {
		switch {
		case a.HLC < b.HLC:
			return -1
		case a.HLC > b.HLC:
			return 1
		case a.ID == b.ID:
			return 0
		case a.ID.Less(b.ID):
			return -1
		}
		return 1
	})
}

// Fold computes a dossier's state from its ops, in any order and with
// duplicates: it sorts a copy and applies each op ID once.
func Fold(ops []Op) Dossier {
	sorted := slices.Clone(ops)
	SortOps(sorted)
	var d Dossier
	var last OpID
	for i := range sorted {
		if i > 0 && sorted[i].ID == last {
			continue
		}
		last = sorted[i].ID
		Apply(&d, &sorted[i])
	}
	return d
}

// EncodeDossier is the canonical encoding of a dossier's state, used both to
// store it and to hash it.
func EncodeDossier(d *Dossier) []byte {
	b, err := json.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("schema: encode dossier: %v", err))
	}
	return b
}

// DecodeDossier parses EncodeDossier's output.
func DecodeDossier(b []byte) (Dossier, error) {
	var d Dossier
	if err := json.Unmarshal(b, &d); err != nil {
		return Dossier{}, errors.Join(ErrInvalid, fmt.Errorf("decode dossier: %w", err))
	}
	return d, nil
}

// StateHash proves two replicas hold the same state: equal op sets give
// equal hashes.
func StateHash(d *Dossier) [32]byte { return sha256.Sum256(EncodeDossier(d)) }
