package schema

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every layer wraps these; the HTTP layer maps them to
// status codes in one place, so a new error kind is added here first.
var (
	ErrInvalid      = errors.New("invalid input")
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrForbidden    = errors.New("forbidden")
	ErrUnauthorized = errors.New("unauthorized")
	ErrTooLarge     = errors.New("too large")
	// ErrUnsupportedType is content of a type that is not allowed (an
	// attachment that is not a PDF, JPEG, PNG or TIFF).
	ErrUnsupportedType = errors.New("unsupported content type")
	ErrUnknownVersion  = errors.New("unknown encoding version")
	ErrBadSignature    = errors.New("bad signature")
	ErrClockDrift      = errors.New("clock drift beyond limit")
	// ErrUnavailable is a temporary refusal (no leader, no quorum): retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrOutcomeUnknown is a write whose answer was lost once it could go
	// on to be committed (the leader changed or stopped meanwhile): it may
	// have been saved, so sending it again blindly could do it twice.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// FieldError says which input field is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// TransitionError is a workflow move that the current status or the actor's
// role does not allow. It lists the moves that are allowed, so a clerk sees
// what they can do instead.
type TransitionError struct {
	From    Status
	To      Status
	Role    Role
	Allowed []Status // targets this role may move to from From
	// RoleDenied is true when From→To exists in the workflow but the role may
	// not take it: that is a permission problem (403), not a state one (409).
	RoleDenied bool
}

func (e *TransitionError) Error() string {
	allowed := make([]string, len(e.Allowed))
	for i, s := range e.Allowed {
		allowed[i] = string(s)
	}
	if e.RoleDenied {
		return fmt.Sprintf("role %s may not move a dossier from %s to %s (allowed: %s)",
			e.Role, e.From, e.To, strings.Join(allowed, ", "))
	}
	return fmt.Sprintf("cannot move a dossier from %s to %s (allowed: %s)",
		e.From, e.To, strings.Join(allowed, ", "))
}

// Unwrap maps the error to ErrForbidden or ErrConflict.
func (e *TransitionError) Unwrap() error {
	if e.RoleDenied {
		return ErrForbidden
	}
	return ErrConflict
}
