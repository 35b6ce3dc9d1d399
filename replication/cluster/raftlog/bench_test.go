package raftlog

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftbench "github.com/hashicorp/raft/bench"
)

// BenchmarkStoreLogs appends batches of 64 entries of 2 KB, the shape of a
// leader's dispatch under load (MaxAppendEntries is 64). Each op is one
// StoreLogs call: one badger transaction, one fsync.
func BenchmarkStoreLogs(b *testing.B) {
	const batch, size = 64, 2048
	s, _ := newStore(b)
	logs := make([]*raft.Log, batch)
	for i := range logs {
		data := make([]byte, size)
		rand.Read(data)
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
	}
	next := uint64(1)
	b.SetBytes(batch * size)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for _, l := range logs {
			l.Index = next
			next++
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "logs/s")
}

// BenchmarkStoreLog appends single 2 KB entries (one fsync each): the
// floor set by the disk's fsync latency.
func BenchmarkStoreLog(b *testing.B) {
	s, _ := newStore(b)
	data := make([]byte, 2048)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := s.StoreLog(&raft.Log{Index: uint64(i + 1), Term: 1, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "logs/s")
}

// BenchmarkPersistVote is raft's persistVote: two calls, one transaction.
func BenchmarkPersistVote(b *testing.B) {
	s, _ := newStore(b)
	cand := []byte("192.0.2.10:7000")
	for i := range b.N {
		if err := persistVote(s, uint64(i+1), cand); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetLog2K(b *testing.B) {
	s, _ := newStore(b)
	data := make([]byte, 2048)
	rand.Read(data)
	logs := makeLogs(1, 1024, func(i uint64) *raft.Log { return &raft.Log{Index: i, Term: 1, Data: data} })
	mustStoreLogs(b, s, logs)
	b.ResetTimer()
	var l raft.Log
	for i := range b.N {
		if err := s.GetLog(uint64(i%1024)+1, &l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeleteRange8K is raft's log compaction: each op appends 8192
// entries and deletes the oldest 8192, keeping 1024 trailing entries.
func BenchmarkDeleteRange8K(b *testing.B) {
	s, _ := newStore(b)
	const n, trailing = 8192, 1024
	data := make([]byte, 256)
	mk := func(i uint64) *raft.Log { return &raft.Log{Index: i, Term: 1, Data: data} }
	mustStoreLogs(b, s, makeLogs(1, trailing, mk))
	for range b.N {
		b.StopTimer()
		last, _ := s.LastIndex()
		for from := last + 1; from <= last+n; from += 1024 {
			mustStoreLogs(b, s, makeLogs(from, from+1023, mk))
		}
		first, _ := s.FirstIndex()
		b.StartTimer()
		if err := s.DeleteRange(first, first+n-1); err != nil {
			b.Fatal(err)
		}
	}
}

// The shared suites from hashicorp/raft/bench (raft-boltdb runs the same
// ones). raftbench.StoreLog and DeleteRange write index 0, which this store
// rejects (raft never uses it), so they are replaced by the ones above.
func BenchmarkRaftbenchFirstIndex(b *testing.B) { s, _ := newStore(b); raftbench.FirstIndex(b, s) }
func BenchmarkRaftbenchLastIndex(b *testing.B)  { s, _ := newStore(b); raftbench.LastIndex(b, s) }
func BenchmarkRaftbenchGetLog(b *testing.B)     { s, _ := newStore(b); raftbench.GetLog(b, s) }
func BenchmarkRaftbenchStoreLogs(b *testing.B)  { s, _ := newStore(b); raftbench.StoreLogs(b, s) }
func BenchmarkRaftbenchSet(b *testing.B)        { s, _ := newStore(b); raftbench.Set(b, s) }
func BenchmarkRaftbenchGet(b *testing.B)        { s, _ := newStore(b); raftbench.Get(b, s) }
func BenchmarkRaftbenchSetUint64(b *testing.B)  { s, _ := newStore(b); raftbench.SetUint64(b, s) }
func BenchmarkRaftbenchGetUint64(b *testing.B)  { s, _ := newStore(b); raftbench.GetUint64(b, s) }
