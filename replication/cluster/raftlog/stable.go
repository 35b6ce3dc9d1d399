package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The stable keys hashicorp/raft v1.8.0 uses (raft.go).
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

// Term and vote atomicity (hashicorp/raft issue 661)
//
// raft v1.8.0 writes its election state with three StableStore calls:
//
//	setCurrentTerm(T):   SetUint64("CurrentTerm", T)
//	persistVote(T, C):   SetUint64("LastVoteTerm", T); Set("LastVoteCand", C)
//
// electSelf calls setCurrentTerm(T+1) then persistVote for itself;
// requestVote adopts a higher req.Term with setCurrentTerm and later calls
// persistVote for the candidate. A store that applies the two writes of
// persistVote separately can be left, by a crash between them, with
// LastVoteTerm=T next to the candidate of an older vote: on restart the
// node believes it voted in T for someone it never voted for (and a store
// that does not keep write order could even keep the new candidate with the
// old term, forgetting a vote it did cast, which allows a double vote).
//
// This store makes the vote one write:
//
//   - SetUint64("LastVoteTerm", T) only stages T in memory and returns nil.
//   - Set("LastVoteCand", C) commits LastVoteTerm=T and LastVoteCand=C in a
//     single badger transaction: one fsync, and badger replays a
//     transaction entirely or not at all after a crash.
//   - Get and GetUint64 only read committed data; a staged term is
//     invisible, so what raft reads is exactly what would survive a crash.
//   - A staged term whose candidate never arrives (persistVote's Set failed,
//     Close, or a crash) is dropped. Nothing is lost: raft grants a vote (or
//     counts its own) only after persistVote has returned nil.
//
// CurrentTerm is deliberately written on its own, durably, before the vote:
//
//   - raft always writes CurrentTerm=T before persistVote(T, …) (both paths
//     above), each write is fsynced before the call returns, and badger
//     keeps commit order. So the disk always has LastVoteTerm <= CurrentTerm.
//   - A crash between setCurrentTerm and persistVote leaves CurrentTerm=T
//     with the (consistent) vote of an older term: the node restarts in
//     term T without a vote in T. That is true — raft had neither answered
//     the vote request nor counted its own vote yet — and it is Raft's
//     normal state after adopting a term (votedFor = null), so voting once
//     in T after the restart is safe. The hazard needs the vote
//     itself to be torn, which the staging above rules out.
//   - CurrentTerm cannot be staged like LastVoteTerm: raft also sets it
//     with no vote following (AppendEntries and vote replies from a higher
//     term), and announces it in RPCs at once, so it must be durable when
//     SetUint64 returns (raft panics if that write fails).
//
// This depends on raft v1.8.0's call order (the staged key is only ever
// written by persistVote, immediately followed by LastVoteCand); re-check
// persistVote when upgrading raft. SetVote writes the pair directly.

// Set stores val under key. For "LastVoteCand" it also commits the staged
// LastVoteTerm in the same transaction (see above).
func (s *Store) Set(key []byte, val []byte) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	if bytes.Equal(key, keyLastVoteCand) {
		s.vmu.Lock()
		defer s.vmu.Unlock()
		if s.pendingVote {
			term := s.pendingVoteTerm
			s.pendingVote = false
			return s.writeVote(term, val)
		}
		// No staged term: a plain write (raft v1.8.0 never does this).
	}
	return s.put(stableKey(key), bytes.Clone(val))
}

// SetUint64 stores val under key as 8 big-endian bytes. "LastVoteTerm" is
// only staged until the following Set("LastVoteCand") (see above).
func (s *Store) SetUint64(key []byte, val uint64) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	if bytes.Equal(key, keyLastVoteTerm) {
		s.vmu.Lock()
		s.pendingVote, s.pendingVoteTerm = true, val
		s.vmu.Unlock()
		return nil
	}
	return s.put(stableKey(key), binary.BigEndian.AppendUint64(nil, val))
}

// Get returns the value stored under key, or ErrKeyNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.release()
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		val, err = getValue(txn, stableKey(key))
		return err
	})
	if err != nil {
		return nil, s.stableErr(key, err)
	}
	return val, nil
}

// GetUint64 returns the uint64 stored under key, or 0 and ErrKeyNotFound.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: stable key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetVote durably records a vote for cand in term: LastVoteTerm and
// LastVoteCand in one transaction. It discards any staged LastVoteTerm.
func (s *Store) SetVote(term uint64, cand []byte) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	s.vmu.Lock()
	defer s.vmu.Unlock()
	s.pendingVote = false
	return s.writeVote(term, cand)
}

// Vote reads LastVoteTerm and LastVoteCand in one consistent snapshot.
// ok is false when no vote has been recorded.
func (s *Store) Vote() (term uint64, cand []byte, ok bool, err error) {
	if err := s.acquire(); err != nil {
		return 0, nil, false, err
	}
	defer s.release()
	var tv []byte
	err = s.db.View(func(txn *badger.Txn) error {
		var err error
		if tv, err = getValue(txn, stableKey(keyLastVoteTerm)); err != nil {
			return err
		}
		cand, err = getValue(txn, stableKey(keyLastVoteCand))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil, false, nil
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("raftlog: read vote: %w", err)
	}
	if len(tv) != 8 {
		return 0, nil, false, fmt.Errorf("raftlog: LastVoteTerm holds %d bytes, not a uint64", len(tv))
	}
	return binary.BigEndian.Uint64(tv), cand, true, nil
}

// writeVote commits the vote pair in one transaction (one fsync).
func (s *Store) writeVote(term uint64, cand []byte) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(stableKey(keyLastVoteTerm), binary.BigEndian.AppendUint64(nil, term)); err != nil {
			return err
		}
		return txn.Set(stableKey(keyLastVoteCand), bytes.Clone(cand))
	})
	if err != nil {
		return fmt.Errorf("raftlog: persist vote for term %d: %w", term, err)
	}
	return nil
}

func (s *Store) put(k, v []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(k, v) }); err != nil {
		return fmt.Errorf("raftlog: set %q: %w", k[1:], err)
	}
	return nil
}

func (s *Store) stableErr(key []byte, err error) error {
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrKeyNotFound
	}
	return fmt.Errorf("raftlog: get %q: %w", key, err)
}

// getValue returns a copy of the value under k; an empty value is a
// non-nil empty slice, so it is told apart from a missing key.
func getValue(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func stableKey(k []byte) []byte {
	out := make([]byte, 1+len(k))
	out[0] = prefixStable
	copy(out[1:], k)
	return out
}
