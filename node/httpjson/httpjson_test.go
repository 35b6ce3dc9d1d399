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
