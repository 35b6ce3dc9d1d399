package node

import (
	"encoding/hex"
	"time"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// The JSON shapes of the HTTP API. They are kept apart from schema's types
// so the stored and hashed state can change without breaking clients, and
// so times reach people as local RFC 3339 rather than milliseconds.

// DossierView is a dossier as the APIs (ward and city) show it.
type DossierView struct {
	ID           string            `json:"id"`
	ReceiptNo    string            `json:"receipt_no"`
	Ward         string            `json:"ward"`
	Procedure    string            `json:"procedure"`
	Status       schema.Status     `json:"status"`
	ReceivedAt   string            `json:"received_at"`
	DueAt        string            `json:"due_at"`
	CompletedAt  *string           `json:"completed_at"`
	Overdue      bool              `json:"overdue"`
	Applicant    schema.Applicant  `json:"applicant"`
	Fields       map[string]string `json:"fields"`
	Assignee     *string           `json:"assignee"`
	AssigneeName string            `json:"assignee_name,omitempty"`
	CreatedBy    schema.Actor      `json:"created_by"`
	Origin       string            `json:"origin"`
	History      []eventView       `json:"history,omitempty"`
	Conflicts    []conflictView    `json:"conflicts"`
	StateHash    string            `json:"state_hash,omitempty"`
	Attachments  []AttachmentView  `json:"attachments,omitempty"`
}

// AttachmentView is an attachment as the APIs show it. Here and Uploaded
// are the ward node's: whether the whole blob is in its blob store, and
// whether the city has confirmed it holds the blob (always true for a
// blob this node did not attach). The city API leaves them out.
type AttachmentView struct {
	Op       string       `json:"op"`
	Name     string       `json:"name"`
	Hash     string       `json:"hash"`
	Size     int64        `json:"size"`
	Type     string       `json:"type"`
	By       schema.Actor `json:"by"`
	At       string       `json:"at"`
	Here     *bool        `json:"here,omitempty"`
	Uploaded *bool        `json:"uploaded,omitempty"`
}

func viewAttachment(a *schema.Attachment) AttachmentView {
	return AttachmentView{Op: a.Op, Name: a.Name, Hash: a.Hash, Size: a.Size, Type: a.Type, By: a.By, At: localTime(a.At)}
}

type eventView struct {
	Op       string        `json:"op"`
	At       string        `json:"at"`
	Actor    schema.Actor  `json:"actor"`
	Kind     schema.Kind   `json:"kind"`
	From     schema.Status `json:"from,omitempty"`
	To       schema.Status `json:"to,omitempty"`
	Official string        `json:"official,omitempty"`
	Text     string        `json:"text,omitempty"`
	Conflict bool          `json:"conflict,omitempty"`
}

type conflictView struct {
	Op     string        `json:"op"`
	Kind   schema.Kind   `json:"kind"`
	From   schema.Status `json:"from,omitempty"`
	To     schema.Status `json:"to,omitempty"`
	Actor  schema.Actor  `json:"actor"`
	At     string        `json:"at"`
	Reason string        `json:"reason"`
}

func localTime(ms int64) string {
	return time.UnixMilli(ms).In(schema.CityZone).Format(time.RFC3339)
}

// ViewDossier renders a dossier; full adds its history, attachments and
// state hash.
func ViewDossier(d *schema.Dossier, nowMillis int64, full bool) DossierView {
	v := DossierView{
		ID: d.ID, ReceiptNo: d.ReceiptNo, Ward: d.Ward, Procedure: d.Procedure, Status: d.Status,
		ReceivedAt: localTime(d.ReceivedAt), DueAt: localTime(d.DueAt), Overdue: d.Overdue(nowMillis),
		Applicant: d.Applicant, Fields: d.Fields, AssigneeName: d.AssigneeName,
		CreatedBy: d.CreatedBy, Origin: d.Origin, Conflicts: []conflictView{},
	}
	if v.Fields == nil {
		v.Fields = map[string]string{}
	}
	if d.CompletedAt != 0 {
		s := localTime(d.CompletedAt)
		v.CompletedAt = &s
	}
	if d.Assignee != "" {
		a := d.Assignee
		v.Assignee = &a
	}
	for _, c := range d.Conflicts {
		v.Conflicts = append(v.Conflicts, conflictView{Op: c.Op, Kind: c.Kind, From: c.From, To: c.To, Actor: c.Actor, At: localTime(c.At), Reason: c.Reason})
	}
	if full {
		v.History = viewHistory(d)
		for i := range d.Attachments {
			v.Attachments = append(v.Attachments, viewAttachment(&d.Attachments[i]))
		}
		h := schema.StateHash(d)
		v.StateHash = hex.EncodeToString(h[:])
	}
	return v
}

func viewHistory(d *schema.Dossier) []eventView {
	out := make([]eventView, 0, len(d.History))
	for _, e := range d.History {
		out = append(out, eventView{Op: e.Op, At: localTime(e.At), Actor: e.Actor, Kind: e.Kind, From: e.From, To: e.To, Official: e.Official, Text: e.Text, Conflict: e.Conflict})
	}
	return out
}

type officialView struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Role      schema.Role `json:"role"`
	CreatedAt string      `json:"created_at"`
	Token     string      `json:"token,omitempty"`
}

func viewOfficial(o store.Official, token string) officialView {
	return officialView{ID: o.ID, Name: o.Name, Role: o.Role, CreatedAt: o.CreatedAt.In(schema.CityZone).Format(time.RFC3339), Token: token}
}
