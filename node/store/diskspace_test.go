package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/wardsync/wardsync/node/diskspace"
)

// TestWritesRefusedWhileDiskLow: below the reserve a write is refused
// with diskspace.ErrLow and leaves nothing; the store is not failed for
// good (unlike a failed commit), and writes resume once space is freed.
func TestWritesRefusedWhileDiskLow(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	dir := t.TempDir()
	guard := diskspace.New(dir, 64<<20).WithFree(func(string) (uint64, error) { return free.Load(), nil })
	s, err := Open(Options{Dir: dir, Create: true, Space: guard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(k string) error {
		return s.Write(context.Background(), func(tx *Tx) error { tx.set([]byte(k), []byte("v")); return nil })
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}

	free.Store(10 << 20)
	err = put("while-low")
	var low *diskspace.LowError
	if !errors.Is(err, diskspace.ErrLow) || !errors.As(err, &low) {
		t.Fatalf("write with 10 MiB free of a 64 MiB reserve: got %v, want a diskspace.LowError", err)
	}
	if low.Free != 10<<20 || low.Min != 64<<20 || low.Dir != dir {
		t.Errorf("LowError = %+v", low)
	}
	if _, ok := readKey(t, s, "while-low"); ok {
		t.Error("a write refused for want of space is in the store")
	}
	if err := s.Err(); err != nil {
		t.Errorf("a low disk made the store fail for good: %v", err)
	}
	// A write that finds nothing to change (a lease that did not move)
	// needs no disk and goes through.
	if err := s.Write(context.Background(), func(tx *Tx) error { return nil }); err != nil {
		t.Errorf("a write staging nothing, while low: %v", err)
	}

	free.Store(64 << 20) // exactly the reserve: enough
	if err := put("after"); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	for _, k := range []string{"before", "after"} {
		if _, ok := readKey(t, s, k); !ok {
			t.Errorf("%s: acknowledged but not in the store", k)
		}
	}
}
