package raftlog

import (
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// deleteChunk bounds the keys deleted per transaction in DeleteRange
// (badger's own limit, ErrTxnTooBig, may split a chunk further).
const deleteChunk = 8192

// FirstIndex returns the first index written, 0 for no entries. It reads
// the in-memory cache and never fails.
func (s *Store) FirstIndex() (uint64, error) { return s.first.Load(), nil }

// LastIndex returns the last index written, 0 for no entries. It reads
// the in-memory cache and never fails.
func (s *Store) LastIndex() (uint64, error) { return s.last.Load(), nil }

// GetLog gets the log entry at index into log. A missing entry gives
// raft.ErrLogNotFound.
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	var k [logKeyLen]byte
	putLogKey(k[:], index)
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k[:])
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("raftlog: get log %d: %w", index, err)
	}
	if err := decodeLog(val, log); err != nil {
		return fmt.Errorf("raftlog: log %d: %w", index, err)
	}
	if log.Index != index {
		return fmt.Errorf("raftlog: log under key %d holds index %d: %w", index, log.Index, errCorrupt)
	}
	return nil
}

// StoreLog stores one log entry.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores log entries in one badger transaction, so one fsync and
// all-or-nothing. Only when the batch exceeds badger's transaction limit
// (ErrTxnTooBig) is it split into several transactions, committed in
// order; a crash then keeps a prefix of the batch, which raft tolerates
// (it has acknowledged none of it).
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	// One allocation for every key and value: badger keeps references to
	// them until the commit has been written.
	size := 0
	for _, l := range logs {
		size += logKeyLen + encodedSize(l)
	}
	buf := make([]byte, 0, size)

	for start := 0; start < len(logs); {
		txn := s.db.NewTransaction(true)
		end := start
		lo, hi := uint64(math.MaxUint64), uint64(0)
		for ; end < len(logs); end++ {
			l := logs[end]
			if l.Index == 0 {
				txn.Discard()
				return errors.New("raftlog: log index 0 is reserved")
			}
			off := len(buf)
			buf = buf[:off+logKeyLen]
			putLogKey(buf[off:], l.Index)
			key := buf[off : off+logKeyLen : off+logKeyLen]
			voff := len(buf)
			buf = appendLog(buf, l)
			val := buf[voff:len(buf):len(buf)]
			err := txn.SetEntry(badger.NewEntry(key, val))
			if errors.Is(err, badger.ErrTxnTooBig) && end > start {
				break // commit what fits; this entry starts the next txn
			}
			if err != nil {
				txn.Discard()
				return fmt.Errorf("raftlog: store log %d: %w", l.Index, err)
			}
			lo, hi = min(lo, l.Index), max(hi, l.Index)
		}
		if err := txn.Commit(); err != nil {
			return fmt.Errorf("raftlog: commit logs %d-%d: %w", logs[start].Index, logs[end-1].Index, err)
		}
		if end < len(logs) {
			s.log.Debug("log batch split on badger's transaction limit",
				"batch", len(logs), "committed", end-start)
		}
		if f := s.first.Load(); f == 0 || lo < f {
			s.first.Store(lo)
		}
		if hi > s.last.Load() {
			s.last.Store(hi)
		}
		start = end
	}
	return nil
}

// DeleteRange deletes the entries with min <= index <= max. raft calls it
// to compact a prefix (often thousands of entries) and to drop a
// conflicting suffix. The range is clipped to [FirstIndex, LastIndex] and
// deleted in chunked transactions (one fsync each):
//
//   - a range that reaches the last entry is deleted from the top down,
//     and any other from the bottom up, so a crash part-way only shortens
//     the log at the end being cut and never leaves a hole among the
//     entries raft still needs;
//   - after each chunk the cached first/last index is re-read from the
//     database (a seek just past the deleted keys), so FirstIndex and
//     LastIndex always describe what is stored, gaps included.
func (s *Store) DeleteRange(minIdx, maxIdx uint64) error {
	if minIdx > maxIdx {
		return nil
	}
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	first, last := s.first.Load(), s.last.Load()
	if last == 0 {
		return nil
	}
	lo, hi := max(minIdx, first), min(maxIdx, last)
	if lo > hi {
		return nil
	}
	topDown := hi == last
	remaining := hi - lo + 1
	next := lo
	if topDown {
		next = hi
	}
	for remaining > 0 {
		txn := s.db.NewTransaction(true)
		n := uint64(0)
		chunkLo, chunkHi := next, next
		// badger holds the keys until commit: a fresh buffer per chunk.
		keys := make([]byte, min(remaining, deleteChunk)*logKeyLen)
		for remaining > 0 && n < deleteChunk {
			k := keys[n*logKeyLen : (n+1)*logKeyLen : (n+1)*logKeyLen]
			putLogKey(k, next)
			err := txn.Delete(k)
			if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
				break
			}
			if err != nil {
				txn.Discard()
				return fmt.Errorf("raftlog: delete log %d: %w", next, err)
			}
			chunkLo, chunkHi = min(chunkLo, next), max(chunkHi, next)
			n++
			remaining--
			if topDown {
				next--
			} else {
				next++
			}
		}
		if err := txn.Commit(); err != nil {
			return fmt.Errorf("raftlog: delete logs %d-%d: %w", chunkLo, chunkHi, err)
		}
		if err := s.refreshBounds(chunkLo, chunkHi); err != nil {
			return err
		}
	}
	return nil
}

// refreshBounds updates the cached first/last index after [lo, hi] has
// been deleted. Called with wmu held. Seeks start right next to the
// deleted keys and only when a stored key lies beyond them, so they never
// wade through the tombstones of earlier compactions.
func (s *Store) refreshBounds(lo, hi uint64) error {
	first, last := s.first.Load(), s.last.Load()
	if lo <= first && hi >= last {
		s.first.Store(0)
		s.last.Store(0)
		return nil
	}
	newFirst, newLast := first, last
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if lo <= first { // hi < last: the key last is still there
			newFirst, err = seekIndex(txn, hi+1, false)
		} else if hi >= last { // lo > first: the key first is still there
			newLast, err = seekIndex(txn, lo-1, true)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("raftlog: find log bounds: %w", err)
	}
	if newFirst == 0 || newLast == 0 {
		// Cannot happen while the cache matches the database; if it did,
		// trust the database.
		if newFirst, newLast, err = s.scanBounds(); err != nil {
			return err
		}
	}
	s.first.Store(newFirst)
	s.last.Store(newLast)
	return nil
}

// scanBounds reads the first and last stored index from the database.
func (s *Store) scanBounds() (first, last uint64, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		var err error
		if first, err = seekIndex(txn, 0, false); err != nil {
			return err
		}
		last, err = seekIndex(txn, math.MaxUint64, true)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("raftlog: find log bounds: %w", err)
	}
	return first, last, nil
}

// seekIndex returns the smallest stored index >= from (reverse: the
// largest <= from), or 0 if there is none.
func seekIndex(txn *badger.Txn, from uint64, reverse bool) (uint64, error) {
	opts := badger.IteratorOptions{
		PrefetchValues: false,
		Reverse:        reverse,
		Prefix:         []byte{prefixLog},
	}
	it := txn.NewIterator(opts)
	defer it.Close()
	it.Seek(logKey(from))
	if !it.Valid() {
		return 0, nil
	}
	return parseLogKey(it.Item().Key())
}
