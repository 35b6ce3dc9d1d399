package cluster

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/diskspace"
)

// TestSnapshotsNeedRoomForTwoCopies: a member starts a snapshot (its own,
// or installing the leader's) only if the disk keeps its reserve after two
// copies of the newest snapshot (the file, and the FSM store rewritten
// from it): an install cannot stop halfway when the disk fills.
func TestSnapshotsNeedRoomForTwoCopies(t *testing.T) {
	const reserve, size = 64 << 20, 1 << 20
	var free atomic.Uint64
	free.Store(1 << 30)
	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStore(dir, 3, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	snaps := guardedSnapshots{files, diskspace.New(dir, reserve).WithFree(func(string) (uint64, error) { return free.Load(), nil })}
	create := func(index uint64) error {
		sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			return err
		}
		if _, err := sink.Write(bytes.Repeat([]byte{'s'}, size)); err != nil {
			t.Fatal(err)
		}
		return sink.Close()
	}
	if err := create(10); err != nil {
		t.Fatalf("first snapshot with room: %v", err)
	}
	for _, c := range []struct {
		free uint64
		ok   bool
	}{
		{reserve - 1, false},
		{reserve + size, false}, // room for one copy, not two
		{reserve + 2*size, true},
		{1 << 30, true},
	} {
		free.Store(c.free)
		err := create(20)
		if ok := err == nil; ok != c.ok {
			t.Errorf("with %d bytes free: err %v, want ok=%v", c.free, err, c.ok)
		}
		if err != nil && !errors.Is(err, diskspace.ErrLow) {
			t.Errorf("refusal %v does not wrap diskspace.ErrLow", err)
		}
	}
}
