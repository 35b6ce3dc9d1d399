package httpjson

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

// A full disk is a 503 storage_failed that says nothing was saved, not a
// 500 internal error (found by the chaos driver: an attachment staged on a
// full disk answered 500).
func TestWriteErrorDiskFull(t *testing.T) {
	err := fmt.Errorf("blobstore: staging file: %w", &fs.PathError{Op: "write", Path: "/data/blobs/incoming/upload-1", Err: syscall.ENOSPC})
	rec := httptest.NewRecorder()
	WriteError(rec, httptest.NewRequest("POST", "/v1/dossiers/X/attachments", nil), err, slog.New(slog.DiscardHandler))
	var got struct {
		Error Error `json:"error"`
	}
	if e := json.Unmarshal(rec.Body.Bytes(), &got); e != nil {
		t.Fatal(e)
	}
	if rec.Code != http.StatusServiceUnavailable || got.Error.Code != "storage_failed" {
		t.Fatalf("HTTP %d %+v, want 503 storage_failed", rec.Code, got.Error)
	}
}

// What a client may do after a 5xx depends on it: 503 says nothing was
// saved (send it again), 504 outcome_unknown that it may have been (look
// first). An error that is both is the second.
func TestWriteErrorSaysWhetherItWasSaved(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"no leader", fmt.Errorf("%w: cluster: no leader", schema.ErrUnavailable), http.StatusServiceUnavailable, "unavailable"},
		{"answer lost", fmt.Errorf("%w: leadership lost while committing", schema.ErrOutcomeUnknown), http.StatusGatewayTimeout, "outcome_unknown"},
		{"answer lost, then unavailable", fmt.Errorf("%w: %w", schema.ErrUnavailable, schema.ErrOutcomeUnknown), http.StatusGatewayTimeout, "outcome_unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, httptest.NewRequest("POST", "/v1/dossiers", nil), c.err, slog.New(slog.DiscardHandler))
			var got struct {
				Error Error `json:"error"`
			}
			if e := json.Unmarshal(rec.Body.Bytes(), &got); e != nil {
				t.Fatal(e)
			}
			if rec.Code != c.status || got.Error.Code != c.code {
				t.Fatalf("HTTP %d %+v, want %d %s", rec.Code, got.Error, c.status, c.code)
			}
		})
	}
}
