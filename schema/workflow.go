package schema

import "slices"

// Status is where a dossier stands in its workflow.
type Status string

// The workflow's statuses.
const (
	StatusReceived            Status = "received"
	StatusInReview            Status = "in_review"
	StatusSupplementRequested Status = "supplement_requested"
	StatusApproved            Status = "approved"
	StatusRejected            Status = "rejected"
	StatusReturned            Status = "returned"
	StatusWithdrawn           Status = "withdrawn"
)

// Statuses lists every status in workflow order.
var Statuses = []Status{
	StatusReceived, StatusInReview, StatusSupplementRequested,
	StatusApproved, StatusRejected, StatusReturned, StatusWithdrawn,
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool { return slices.Contains(Statuses, s) }

// Open reports whether work on the dossier is still pending: it counts toward
// the overdue list until it is decided or withdrawn.
func (s Status) Open() bool {
	return s == StatusReceived || s == StatusInReview || s == StatusSupplementRequested
}

// Decided reports whether the dossier has been approved or rejected; the
// moment it first gets there is its completion time for the on-time rate.
func (s Status) Decided() bool { return s == StatusApproved || s == StatusRejected }

// Role is an official's role at the ward office.
type Role string

// Roles of officials.
const (
	RoleClerk Role = "clerk" // receives dossiers, reviews, returns results
	RoleHead  Role = "head"  // decides: approves or rejects
	RoleAdmin Role = "admin" // manages officials; may do everything a head does
	// RoleSystem is the city's own origin (portal intake); never a person.
	RoleSystem Role = "system"
)

// Roles lists the roles an official can be given.
var Roles = []Role{RoleClerk, RoleHead, RoleAdmin}

// Valid reports whether r can be given to an official.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// Transition is one allowed workflow move and the roles that may take it.
type Transition struct {
	From  Status
	To    Status
	Roles []Role
}

var (
	anyone    = []Role{RoleClerk, RoleHead, RoleAdmin}
	deciders  = []Role{RoleHead, RoleAdmin}
	withdrawn = []Status{StatusReceived, StatusInReview, StatusSupplementRequested}
)

// Transitions is the whole workflow. Deciding (approve, reject) is for heads
// and admins; everything else a clerk does at the desk.
var Transitions = func() []Transition {
	t := []Transition{
		{StatusReceived, StatusInReview, anyone},
		{StatusInReview, StatusSupplementRequested, anyone},
		{StatusSupplementRequested, StatusInReview, anyone},
		{StatusInReview, StatusApproved, deciders},
		{StatusInReview, StatusRejected, deciders},
		{StatusApproved, StatusReturned, anyone},
		{StatusRejected, StatusReturned, anyone},
	}
	for _, from := range withdrawn {
		t = append(t, Transition{from, StatusWithdrawn, anyone})
	}
	return t
}()

// roleMay reports whether role appears in roles. The system role (portal
// intake at the city) is never allowed to decide.
func roleMay(roles []Role, role Role) bool { return slices.Contains(roles, role) }

// AllowedTransitions lists the statuses role may move a dossier to from from.
func AllowedTransitions(from Status, role Role) []Status {
	var out []Status
	for _, t := range Transitions {
		if t.From == from && roleMay(t.Roles, role) {
			out = append(out, t.To)
		}
	}
	return out
}

// CheckTransition returns nil if role may move a dossier from from to to, or
// a *TransitionError saying why not.
func CheckTransition(from, to Status, role Role) error {
	for _, t := range Transitions {
		if t.From == from && t.To == to {
			if roleMay(t.Roles, role) {
				return nil
			}
			return &TransitionError{From: from, To: to, Role: role,
				Allowed: AllowedTransitions(from, role), RoleDenied: true}
		}
	}
	return &TransitionError{From: from, To: to, Role: role, Allowed: AllowedTransitions(from, role)}
}
