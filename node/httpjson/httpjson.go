// Package httpjson holds what the ward API and the city API share: the
// JSON error body, the one mapping from errors to HTTP status codes, and
// strict decoding of request bodies.
package httpjson

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"syscall"

	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Error is the body of every error response. Allowed is omitzero, not
// omitempty: a 409 from a final status must still say "allowed":[]
// (writeError sets a non-nil empty slice for it).
type Error struct {
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Field   string          `json:"field,omitempty"`
	Allowed []schema.Status `json:"allowed,omitzero"`
}

// WriteError is the one place errors become HTTP status codes, for the
// ward API and the city API alike.
func WriteError(w http.ResponseWriter, r *http.Request, err error, log *slog.Logger) {
	status, body := http.StatusInternalServerError, Error{Code: "internal", Message: "internal error"}
	var fe *schema.FieldError
	var te *schema.TransitionError
	var mbe *http.MaxBytesError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		status, body = http.StatusRequestEntityTooLarge, Error{Code: "too_large", Message: fmt.Sprintf("request body is over %d bytes", mbe.Limit)}
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		status, body = http.StatusBadRequest, Error{Code: "malformed_json", Message: "request body is not valid JSON: " + err.Error()}
	case errors.As(err, &typ) && typ.Field == "":
		status, body = http.StatusBadRequest, Error{Code: "invalid", Message: "request body must be a JSON object, not " + typ.Value}
	case errors.As(err, &typ):
		status, body = http.StatusBadRequest, Error{Code: "invalid_field", Field: typ.Field,
			Message: fmt.Sprintf("%s must be %s, not %s", typ.Field, jsonKind(typ.Type), typ.Value)}
	case errors.As(err, &fe):
		status, body = http.StatusBadRequest, Error{Code: "invalid_field", Field: fe.Field, Message: fe.Error()}
	case errors.As(err, &te):
		status = http.StatusConflict
		body = Error{Code: "transition_not_allowed", Message: te.Error(), Allowed: te.Allowed}
		if te.RoleDenied {
			status, body.Code = http.StatusForbidden, "role_not_allowed"
		}
		if body.Allowed == nil {
			body.Allowed = []schema.Status{}
		}
	case errors.Is(err, schema.ErrUnsupportedType):
		status, body = http.StatusUnsupportedMediaType, Error{Code: "unsupported_type", Message: err.Error()}
	case errors.Is(err, schema.ErrInvalid):
		status, body = http.StatusBadRequest, Error{Code: "invalid", Message: err.Error()}
	case errors.Is(err, schema.ErrReadOnly):
		// Before ErrConflict and ErrForbidden: another office serves the
		// ward (the message names it); the client should go there.
		status, body = http.StatusConflict, Error{Code: "read_only", Message: err.Error()}
	case errors.Is(err, schema.ErrUnauthorized):
		status, body = http.StatusUnauthorized, Error{Code: "unauthorized", Message: err.Error()}
	case errors.Is(err, schema.ErrForbidden):
		status, body = http.StatusForbidden, Error{Code: "forbidden", Message: err.Error()}
	case errors.Is(err, schema.ErrNotFound):
		status, body = http.StatusNotFound, Error{Code: "not_found", Message: err.Error()}
	case errors.Is(err, schema.ErrConflict):
		status, body = http.StatusConflict, Error{Code: "conflict", Message: err.Error()}
	case errors.Is(err, schema.ErrTooLarge):
		status, body = http.StatusRequestEntityTooLarge, Error{Code: "too_large", Message: err.Error()}
	case errors.Is(err, schema.ErrOutcomeUnknown):
		// Before ErrUnavailable, and not a 503: a 503 says nothing was
		// saved, and a portal sending a create again would make a second
		// dossier.
		status, body = http.StatusGatewayTimeout, Error{Code: "outcome_unknown", Message: err.Error() + "; it may have been saved: look it up before sending it again"}
	case errors.Is(err, schema.ErrUnavailable):
		status, body = http.StatusServiceUnavailable, Error{Code: "unavailable", Message: err.Error() + "; retry shortly"}
	case errors.Is(err, diskspace.ErrLow):
		// Refused before anything was written; the node carries on by
		// itself once space is freed.
		status, body = http.StatusServiceUnavailable, Error{Code: "disk_full", Message: err.Error() + ". Free space on the node's disk or call city IT."}
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled):
		status, body = http.StatusServiceUnavailable, Error{Code: "unavailable", Message: "the server is shutting down"}
	default:
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		switch {
		case errors.Is(err, store.ErrFailed):
			status, body = http.StatusServiceUnavailable, Error{Code: "storage_failed", Message: "the node's storage failed; nothing was saved. Call city IT."}
		case errors.Is(err, syscall.ENOSPC):
			// A full disk (an upload staged before any op is written):
			// nothing was saved, and it is the disk, not a bug.
			status, body = http.StatusServiceUnavailable, Error{Code: "storage_failed", Message: "the node's disk is full; nothing was saved. Call city IT."}
		}
	}
	WriteJSON(w, status, map[string]Error{"error": body})
}

// jsonKind names the JSON type a Go type decodes from, for error messages
// (a client knows "a string", not "schema.Status").
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a JSON value"
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// DecodeBody reads one JSON object into v: at most max bytes, no
// unknown fields (a typo must not be silently ignored), nothing after it.
func DecodeBody(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &schema.FieldError{Field: "Content-Type", Reason: "must be application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: request body is empty", schema.ErrInvalid)
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			name, uerr := strconv.Unquote(f)
			if uerr != nil {
				name = strings.Trim(f, `"`)
			}
			if name == "" {
				return fmt.Errorf("%w: request body has a field with an empty name", schema.ErrInvalid)
			}
			return &schema.FieldError{Field: name, Reason: "is not a known field"}
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return fmt.Errorf("%w: request body has data after the JSON object", schema.ErrInvalid)
	}
	return nil
}
