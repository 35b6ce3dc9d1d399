package raftlog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wardsync/wardsync/node/store"
)

// copyBadgerDir copies the files of a badger dir, as a kill -9 would leave
// them (the memtable's writes are in its log, *.mem).
func copyBadgerDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func flipOne(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesMidLogDamage: the Raft log went straight to badger.Open,
// which cuts a memtable log at its first bad entry without a word: every
// entry after a flipped byte, acknowledged to the leader (and so counted
// towards a commit), was gone. It now goes through the store's log check
// and refuses.
func TestOpenRefusesMidLogDamage(t *testing.T) {
	s, dir := newStore(t)
	for i := uint64(1); i <= 200; i++ {
		if err := s.StoreLog(testLog(i, 1, "entry")); err != nil {
			t.Fatal(err)
		}
	}
	crashed := copyBadgerDir(t, dir)
	mems, _ := filepath.Glob(filepath.Join(crashed, "*.mem"))
	if len(mems) == 0 {
		t.Fatal("no memtable log")
	}
	b, err := os.ReadFile(mems[0])
	if err != nil {
		t.Fatal(err)
	}
	last := len(b) - 1
	for last > 0 && b[last] == 0 {
		last--
	}
	flipOne(t, mems[0], int64(20+(last-20)/2))
	if _, err := Open(Options{Dir: crashed, Logger: quietLogger()}); !errors.Is(err, store.ErrLogDamaged) {
		t.Fatalf("Open of a Raft log damaged mid-way = %v, want store.ErrLogDamaged", err)
	}
}

// TestOpenRefusesDamagedTable: one flipped byte in a data block of a table
// made badger panic at open (in a goroutine of its own, so the member died
// with a stack trace). It is now an error naming the file.
func TestOpenRefusesDamagedTable(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for i := uint64(1); i <= 500; i++ {
		if err := s.StoreLog(richLog(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil { // flushes the memtable to a table
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table after Close")
	}
	fi, err := os.Stat(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	flipOne(t, tables[0], fi.Size()/3)
	_, err = Open(Options{Dir: dir, Logger: quietLogger()})
	var de *store.DamageError
	if !errors.As(err, &de) || de.File != tables[0] {
		t.Fatalf("Open with a damaged table = %v, want a *store.DamageError for %s", err, tables[0])
	}
}
