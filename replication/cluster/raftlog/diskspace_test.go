package raftlog

import (
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/diskspace"
)

// TestLogWritesWhileDiskLow: below the reserve the store takes no new
// entries and refuses to drop the log's tail (raft drops a conflicting
// suffix and then stores the leader's entries; with the drop refused too,
// raft changes nothing and its view of the log stays true). Compaction
// from the head still runs: it frees space.
func TestLogWritesWhileDiskLow(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	dir := t.TempDir()
	guard := diskspace.New(dir, 64<<20).WithFree(func(string) (uint64, error) { return free.Load(), nil })
	s, err := Open(Options{Dir: filepath.Join(dir, "raft"), Logger: quietLogger(), Space: guard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustStoreLogs(t, s, makeLogs(1, 100, richLog))

	free.Store(1 << 20)
	if err := s.StoreLogs(makeLogs(101, 110, richLog)); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("StoreLogs while low: %v, want diskspace.ErrLow", err)
	}
	if err := s.StoreLog(testLog(101, 9, "one")); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("StoreLog while low: %v, want diskspace.ErrLow", err)
	}
	if err := s.DeleteRange(61, 100); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("dropping the tail while low: %v, want diskspace.ErrLow", err)
	}
	if err := s.DeleteRange(1, 100); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("dropping the whole log while low: %v, want diskspace.ErrLow", err)
	}
	checkBounds(t, s, 1, 100)
	checkHas(t, s, 100, richLog(100))
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatalf("compaction while low: %v", err)
	}
	checkBounds(t, s, 41, 100)
	// The term and vote are not refused: raft panics when it cannot save them.
	if err := s.SetUint64(keyCurrentTerm, 7); err != nil {
		t.Fatalf("saving the term while low: %v", err)
	}

	// The tail dropped with room, then the disk goes under the reserve
	// (the deletes take space too): what replaces the tail is still
	// stored, or raft would believe in entries that are gone. Once.
	free.Store(1 << 30)
	if err := s.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	free.Store(1 << 20)
	replacement := makeLogs(91, 95, func(i uint64) *raft.Log { return testLog(i, 99, "leader's") })
	mustStoreLogs(t, s, replacement)
	checkBounds(t, s, 41, 95)
	checkHas(t, s, 93, replacement[2])
	if err := s.StoreLog(testLog(96, 99, "next")); !errors.Is(err, diskspace.ErrLow) {
		t.Fatalf("the append after the replacement, while low: %v, want diskspace.ErrLow", err)
	}
}
