package raftlog

import (
	"bytes"
	"fmt"
	"testing"
)

func TestStableSetGet(t *testing.T) {
	s, _ := newStore(t)
	// Missing keys: exactly what raft v1.8.0 checks, err.Error() == "not found".
	v, err := s.Get([]byte("bad"))
	if err != ErrKeyNotFound || err.Error() != "not found" || v != nil {
		t.Fatalf("Get(missing) = %q, %v", v, err)
	}
	if u, err := s.GetUint64([]byte("bad")); err != ErrKeyNotFound || u != 0 {
		t.Fatalf("GetUint64(missing) = %d, %v", u, err)
	}

	k, val := []byte("hello"), []byte("world")
	if err := s.Set(k, val); err != nil {
		t.Fatal(err)
	}
	val[0] = 'W' // the store must have copied it
	got, err := s.Get(k)
	if err != nil || string(got) != "world" {
		t.Fatalf("Get = %q, %v", got, err)
	}

	if err := s.Set([]byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get([]byte("empty")); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get(empty) = %#v, %v; want non-nil empty", got, err)
	}
	if _, err := s.GetUint64([]byte("hello")); err == nil {
		t.Fatal("GetUint64 of a 5-byte value succeeded")
	}

	if err := s.SetUint64([]byte("abc"), 123); err != nil {
		t.Fatal(err)
	}
	if u, err := s.GetUint64([]byte("abc")); err != nil || u != 123 {
		t.Fatalf("GetUint64 = %d, %v", u, err)
	}
	if err := s.SetUint64(keyCurrentTerm, 1<<40); err != nil {
		t.Fatal(err)
	}
	if u, err := s.GetUint64(keyCurrentTerm); err != nil || u != 1<<40 {
		t.Fatalf("CurrentTerm = %d, %v", u, err)
	}
	// Stable keys never collide with log keys.
	checkBounds(t, s, 0, 0)
}

// persistVote is raft v1.8.0's persistVote (raft.go), call for call.
func persistVote(s *Store, term uint64, cand []byte) error {
	if err := s.SetUint64(keyLastVoteTerm, term); err != nil {
		return err
	}
	return s.Set(keyLastVoteCand, cand)
}

func checkVote(t *testing.T, s *Store, wantTerm uint64, wantCand string) {
	t.Helper()
	term, err := s.GetUint64(keyLastVoteTerm)
	if err != nil {
		t.Fatalf("LastVoteTerm: %v", err)
	}
	cand, err := s.Get(keyLastVoteCand)
	if err != nil {
		t.Fatalf("LastVoteCand: %v", err)
	}
	if term != wantTerm || string(cand) != wantCand {
		t.Fatalf("vote = (%d, %q), want (%d, %q)", term, cand, wantTerm, wantCand)
	}
	vt, vc, ok, err := s.Vote()
	if err != nil || !ok || vt != term || !bytes.Equal(vc, cand) {
		t.Fatalf("Vote() = %d %q %v %v, disagrees with Get", vt, vc, ok, err)
	}
}

func TestVoteTermStagedUntilCandidate(t *testing.T) {
	s, _ := newStore(t)
	if _, _, ok, err := s.Vote(); ok || err != nil {
		t.Fatalf("fresh store has a vote: %v %v", ok, err)
	}
	if err := s.SetUint64(keyLastVoteTerm, 5); err != nil {
		t.Fatal(err)
	}
	// Staged, not visible: raft reads only what would survive a crash.
	if _, err := s.GetUint64(keyLastVoteTerm); err != ErrKeyNotFound {
		t.Fatalf("staged LastVoteTerm visible: %v", err)
	}
	if err := s.Set(keyLastVoteCand, []byte("node-a")); err != nil {
		t.Fatal(err)
	}
	checkVote(t, s, 5, "node-a")

	// A new staged term does not disturb the recorded vote until its
	// candidate arrives.
	if err := s.SetUint64(keyLastVoteTerm, 6); err != nil {
		t.Fatal(err)
	}
	checkVote(t, s, 5, "node-a")
	if err := s.Set(keyLastVoteCand, []byte("node-b")); err != nil {
		t.Fatal(err)
	}
	checkVote(t, s, 6, "node-b")

	// SetVote writes the pair directly and drops a staged term.
	if err := s.SetUint64(keyLastVoteTerm, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.SetVote(7, []byte("node-c")); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(keyLastVoteCand, []byte("node-d")); err != nil { // nothing staged now
		t.Fatal(err)
	}
	checkVote(t, s, 7, "node-d")
}

// TestVoteCrashBetweenWritesReopen simulates a crash inside persistVote
// (after SetUint64(LastVoteTerm), before Set(LastVoteCand)) by closing and
// reopening the store, and checks the reopened store never pairs a term
// with another term's candidate.
func TestVoteCrashBetweenWritesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	cand := func(term uint64) []byte { return []byte(fmt.Sprintf("cand-of-%d", term)) }

	for term := uint64(1); term <= 5; term++ {
		// raft's electSelf / requestVote order: term first, then the vote.
		if err := s.SetUint64(keyCurrentTerm, term); err != nil {
			t.Fatal(err)
		}
		if err := persistVote(s, term, cand(term)); err != nil {
			t.Fatal(err)
		}
	}
	checkVote(t, s, 5, "cand-of-5")

	// Term 6: CurrentTerm written, then the crash hits between the two
	// writes of persistVote.
	if err := s.SetUint64(keyCurrentTerm, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64(keyLastVoteTerm, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // "crash"
		t.Fatal(err)
	}

	s = openStore(t, dir)
	// The vote of term 5 is intact and consistent; no vote for term 6
	// exists, which is true: raft never granted it.
	checkVote(t, s, 5, "cand-of-5")
	if ct, err := s.GetUint64(keyCurrentTerm); err != nil || ct != 6 {
		t.Fatalf("CurrentTerm = %d, %v", ct, err)
	}
	// The restarted node can vote in term 6 exactly once.
	if err := persistVote(s, 6, []byte("someone-else")); err != nil {
		t.Fatal(err)
	}
	checkVote(t, s, 6, "someone-else")
	// A bare candidate write after reopen (no staged term) must not pick up
	// the term staged before the crash.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	checkVote(t, s, 6, "someone-else")
}
