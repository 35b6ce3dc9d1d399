package blobstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/diskspace"
)

// TestImportRefusedWhileDiskLow: an attachment uploaded while the disk is
// below its reserve is refused with diskspace.ErrLow and leaves nothing;
// so is a chunk a peer sends. Once space is freed the same upload works.
func TestImportRefusedWhileDiskLow(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 20)
	dir := t.TempDir()
	guard := diskspace.New(dir, 32<<20).WithFree(func(string) (uint64, error) { return free.Load(), nil })
	s, err := blobstore.Open(blobstore.Options{Dir: dir, Space: guard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	data := pdf(3<<20, 7)
	if _, err := s.Import(context.Background(), bytes.NewReader(data), 0); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("Import with 1 MiB free of a 32 MiB reserve: %v, want diskspace.ErrLow", err)
	}
	chunk := data[:1<<20]
	if err := s.PutChunk(sha256.Sum256(chunk), chunk); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("PutChunk while low: %v, want diskspace.ErrLow", err)
	}
	assertNothingStored(t, s, dir)

	free.Store(1 << 30)
	m := mustImport(t, s, data)
	if m.Size != int64(len(data)) {
		t.Fatalf("manifest size %d, want %d", m.Size, len(data))
	}
	if ok, err := s.Complete(m.Hash); err != nil || !ok {
		t.Fatalf("blob imported after space was freed is not complete: %v %v", ok, err)
	}
}
