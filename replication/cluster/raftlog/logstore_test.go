package raftlog

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/hashicorp/raft"
)

// The cases below mirror hashicorp/raft-boltdb's bolt_store_test.go (the
// de-facto LogStore/StableStore conformance suite; raft itself ships none),
// plus the edge cases raft's callers produce.

func TestEmptyStore(t *testing.T) {
	s, _ := newStore(t)
	checkBounds(t, s, 0, 0)
	checkMissing(t, s, 1)
	checkMissing(t, s, 0)
	if err := s.DeleteRange(1, 100); err != nil {
		t.Fatalf("DeleteRange on empty store: %v", err)
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Fatalf("StoreLogs(nil): %v", err)
	}
	checkBounds(t, s, 0, 0)
}

func TestStoreLogsGetLog(t *testing.T) {
	s, _ := newStore(t)
	logs := makeLogs(1, 100, richLog)
	mustStoreLogs(t, s, logs)
	checkBounds(t, s, 1, 100)
	for _, l := range logs {
		checkHas(t, s, l.Index, l)
	}
	checkMissing(t, s, 101)

	// StoreLog and GetLog overwrite every field of the destination.
	one := &raft.Log{Index: 101, Term: 9, Type: raft.LogNoop}
	if err := s.StoreLog(one); err != nil {
		t.Fatal(err)
	}
	got := *richLog(4) // non-zero fields everywhere
	if err := s.GetLog(101, &got); err != nil {
		t.Fatal(err)
	}
	if !sameLog(&got, one) || got.Data != nil || got.Extensions != nil || !got.AppendedAt.IsZero() {
		t.Fatalf("GetLog left stale fields: %+v", got)
	}
	checkBounds(t, s, 1, 101)
}

func TestStoreLogsRejectsIndexZero(t *testing.T) {
	s, _ := newStore(t)
	if err := s.StoreLog(testLog(0, 1, "x")); err == nil {
		t.Fatal("index 0 accepted")
	}
	checkBounds(t, s, 0, 0)
}

func TestStoreLogsOverwrite(t *testing.T) {
	s, _ := newStore(t)
	mustStoreLogs(t, s, makeLogs(1, 10, func(i uint64) *raft.Log { return testLog(i, 1, "old") }))
	newer := makeLogs(5, 7, func(i uint64) *raft.Log { return testLog(i, 2, "new") })
	mustStoreLogs(t, s, newer)
	checkBounds(t, s, 1, 10)
	checkHas(t, s, 6, newer[1])
	checkHas(t, s, 8, testLog(8, 1, "old"))
}

func TestStoreLogsSplitsOnTxnTooBig(t *testing.T) {
	capture := &captureHandler{}
	s, err := Open(Options{Dir: t.TempDir(), Logger: slog.New(capture)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 48 x 100 KB = 4.8 MB, above badger's 15%-of-memtable batch limit
	// (2.4 MB with 16 MB memtables).
	big := bytes.Repeat([]byte("0123456789"), 10<<10)
	logs := makeLogs(1, 48, func(i uint64) *raft.Log {
		l := testLog(i, 1, "")
		l.Data = append([]byte{byte(i)}, big...)
		return l
	})
	mustStoreLogs(t, s, logs)
	if _, ok := capture.find("log batch split on badger's transaction limit"); !ok {
		t.Fatal("the batch was not split: the test no longer exercises ErrTxnTooBig")
	}
	checkBounds(t, s, 1, 48)
	for _, l := range logs {
		checkHas(t, s, l.Index, l)
	}
}

func TestDeleteRangePrefix(t *testing.T) {
	s, _ := newStore(t)
	mustStoreLogs(t, s, makeLogs(1, 100, richLog))
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 41, 100)
	checkMissing(t, s, 1)
	checkMissing(t, s, 40)
	checkHas(t, s, 41, richLog(41))
	// Ranges below the first index are a no-op; overlapping ones clip.
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(30, 45); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 46, 100)
	if err := s.DeleteRange(50, 10); err != nil { // min > max
		t.Fatal(err)
	}
	checkBounds(t, s, 46, 100)
}

func TestDeleteRangeSuffix(t *testing.T) {
	s, _ := newStore(t)
	mustStoreLogs(t, s, makeLogs(1, 100, richLog))
	// raft drops a conflicting suffix: DeleteRange(entry.Index, lastLogIdx).
	if err := s.DeleteRange(61, 100); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 1, 60)
	checkMissing(t, s, 61)
	replacement := makeLogs(61, 70, func(i uint64) *raft.Log { return testLog(i, 99, "leader's") })
	mustStoreLogs(t, s, replacement)
	checkBounds(t, s, 1, 70)
	checkHas(t, s, 65, replacement[4])
	checkMissing(t, s, 71)
}

func TestDeleteRangeAll(t *testing.T) {
	s, _ := newStore(t)
	mustStoreLogs(t, s, makeLogs(1, 50, richLog))
	if err := s.DeleteRange(0, 1000); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 0, 0)
	// After a snapshot restore the log restarts at a high index.
	mustStoreLogs(t, s, makeLogs(200, 210, richLog))
	checkBounds(t, s, 200, 210)
}

func TestDeleteRangeMiddleAndGaps(t *testing.T) {
	s, _ := newStore(t)
	// A follower that installed a snapshot keeps its old logs below a gap.
	mustStoreLogs(t, s, makeLogs(1, 10, richLog))
	mustStoreLogs(t, s, makeLogs(101, 110, richLog))
	checkBounds(t, s, 1, 110)

	if err := s.DeleteRange(4, 6); err != nil { // middle: bounds unchanged
		t.Fatal(err)
	}
	checkBounds(t, s, 1, 110)
	checkMissing(t, s, 5)

	if err := s.DeleteRange(1, 50); err != nil { // prefix across the gap
		t.Fatal(err)
	}
	checkBounds(t, s, 101, 110)

	mustStoreLogs(t, s, makeLogs(201, 205, richLog))
	if err := s.DeleteRange(108, 300); err != nil { // suffix across a gap
		t.Fatal(err)
	}
	checkBounds(t, s, 101, 107)
}

func TestDeleteRangeLarge(t *testing.T) {
	s, _ := newStore(t)
	const n = 3*deleteChunk + 123
	for from := uint64(1); from <= n; from += 1000 {
		mustStoreLogs(t, s, makeLogs(from, min(from+999, n), func(i uint64) *raft.Log { return testLog(i, 1, "x") }))
	}
	checkBounds(t, s, 1, n)
	// Compaction: several chunks, bottom-up.
	if err := s.DeleteRange(1, n-2000); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, n-1999, n)
	// Truncation reaching the end: top-down.
	mustStoreLogs(t, s, makeLogs(n+1, n+deleteChunk+10, func(i uint64) *raft.Log { return testLog(i, 2, "y") }))
	if err := s.DeleteRange(n-1000, n+deleteChunk+10); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, n-1999, n-1001)
}

func TestReopenPersistsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	logs := makeLogs(1, 300, richLog)
	mustStoreLogs(t, s, logs)
	if err := s.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64(keyCurrentTerm, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("hello"), []byte("world")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetVote(7, []byte("node-b")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	checkBounds(t, s, 101, 300)
	for _, l := range logs[100:] {
		checkHas(t, s, l.Index, l)
	}
	checkMissing(t, s, 100)
	if v, err := s.GetUint64(keyCurrentTerm); err != nil || v != 7 {
		t.Fatalf("CurrentTerm = %d, %v", v, err)
	}
	if v, err := s.Get([]byte("hello")); err != nil || string(v) != "world" {
		t.Fatalf("hello = %q, %v", v, err)
	}
	if term, cand, ok, err := s.Vote(); err != nil || !ok || term != 7 || string(cand) != "node-b" {
		t.Fatalf("vote = %d %q %v %v", term, cand, ok, err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	mustStoreLogs(t, s, makeLogs(1, 3, richLog))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.GetLog(1, new(raft.Log)); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetLog after Close: %v", err)
	}
	if err := s.StoreLog(richLog(4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("StoreLog after Close: %v", err)
	}
	if _, err := s.Get([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	// The directory lock is released.
	s2 := openStore(t, dir)
	checkBounds(t, s2, 1, 3)
	s2.Close()
}

func TestEncryption(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	s, err := Open(Options{Dir: dir, Logger: quietLogger(), EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	secret := testLog(1, 1, "PLAINTEXT-MARKER-dossier")
	mustStoreLogs(t, s, []*raft.Log{secret})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir, Logger: quietLogger()}); err == nil {
		t.Fatal("opened an encrypted store without its key")
	}
	if _, err := Open(Options{Dir: dir, Logger: quietLogger(), EncryptionKey: []byte("short")}); err == nil {
		t.Fatal("accepted a 5-byte key")
	}
	s, err = Open(Options{Dir: dir, Logger: quietLogger(), EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkHas(t, s, 1, secret)
}

func TestBadgerOptions(t *testing.T) {
	bo := badgerOptions(Options{Dir: "/x"}, quietLogger())
	switch {
	case !bo.SyncWrites:
		t.Error("SyncWrites off")
	case !bo.VerifyValueChecksum:
		t.Error("VerifyValueChecksum off")
	case bo.ChecksumVerificationMode != options.OnTableAndBlockRead:
		t.Error("checksum mode", bo.ChecksumVerificationMode)
	case bo.MemTableSize != 16<<20 || bo.NumMemtables < 2 || bo.NumMemtables > 3:
		t.Error("memtables", bo.MemTableSize, bo.NumMemtables)
	case bo.BlockCacheSize < 16<<20 || bo.BlockCacheSize > 32<<20:
		t.Error("block cache", bo.BlockCacheSize)
	case bo.NumCompactors != 2:
		t.Error("compactors", bo.NumCompactors)
	case bo.ValueLogFileSize != 128<<20:
		t.Error("value log file size", bo.ValueLogFileSize)
	}
}

func TestBadgerLogRouting(t *testing.T) {
	capture := &captureHandler{}
	bl := badgerLogger{slog.New(capture)}
	bl.Infof("flushed memtable %d\n", 3)
	bl.Warningf("slow %s", "disk")
	r, ok := capture.find("flushed memtable 3")
	if !ok || r.Level != slog.LevelDebug {
		t.Fatalf("badger INFO not routed to slog debug: %+v", capture.recs)
	}
	if r, ok := capture.find("slow disk"); !ok || r.Level != slog.LevelWarn {
		t.Fatalf("badger WARNING: %+v", r)
	}
}

// TestConcurrentUse runs a writer, a compactor and readers together (for
// -race) and checks readers never see a torn or foreign entry.
func TestConcurrentUse(t *testing.T) {
	s, _ := newStore(t)
	const total = 3000
	var wg sync.WaitGroup
	var done atomic.Bool
	wg.Add(1)
	go func() { // raft's main loop: append, then compact
		defer wg.Done()
		defer done.Store(true)
		for from := uint64(1); from <= total; from += 50 {
			if err := s.StoreLogs(makeLogs(from, from+49, richLog)); err != nil {
				t.Error(err)
				return
			}
			if from > 500 && from%250 == 1 {
				if err := s.DeleteRange(1, from-400); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for !done.Load() {
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last == 0 {
					continue
				}
				if first > last {
					t.Errorf("first %d > last %d", first, last)
					return
				}
				idx := last - rng.Uint64N(min(last-first+1, 100))
				var got raft.Log
				err := s.GetLog(idx, &got)
				if err == raft.ErrLogNotFound {
					continue // compacted meanwhile
				}
				if err != nil || !sameLog(&got, richLog(idx)) {
					t.Errorf("GetLog(%d) = %+v, %v", idx, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last, _ := s.LastIndex()
	if last != total {
		t.Fatalf("last = %d", last)
	}
}

func TestOpenRequiresDir(t *testing.T) {
	if _, err := Open(Options{}); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("Open without Dir: %v", err)
	}
}
