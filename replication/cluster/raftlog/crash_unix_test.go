//go:build unix

package raftlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// These tests kill a child process (SIGKILL: no Close, no deferred code)
// while it records votes, then reopen its store and check that
// LastVoteTerm and LastVoteCand always belong to the same vote.

const (
	envCrashMode = "RAFTLOG_CRASH_MODE"
	envCrashDir  = "RAFTLOG_CRASH_DIR"
)

func candFor(term uint64) []byte { return []byte("cand-of-" + strconv.FormatUint(term, 10)) }

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(envCrashMode)
	if mode == "" {
		t.Skip("only runs as the child of the crash tests")
	}
	s, err := Open(Options{Dir: os.Getenv(envCrashDir), Logger: quietLogger()})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	term, err := s.GetUint64(keyCurrentTerm)
	if err != nil && err != ErrKeyNotFound {
		os.Exit(2)
	}
	kill := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	must := func(err error) {
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
	}
	switch mode {
	case "loop": // raft's election writes, over and over, until killed
		fmt.Println("ready")
		for {
			term++
			must(s.SetUint64(keyCurrentTerm, term))
			must(persistVote(s, term, candFor(term)))
		}
	case "between": // one full vote, then die inside the next persistVote
		term++
		must(s.SetUint64(keyCurrentTerm, term))
		must(persistVote(s, term, candFor(term)))
		term++
		must(s.SetUint64(keyCurrentTerm, term))
		must(s.SetUint64(keyLastVoteTerm, term))
		kill()
	case "naive": // what a store writing each key on its own leaves behind
		term++
		must(s.SetUint64(keyCurrentTerm, term))
		must(persistVote(s, term, candFor(term)))
		term++
		must(s.SetUint64(keyCurrentTerm, term))
		must(s.put(stableKey(keyLastVoteTerm), binary.BigEndian.AppendUint64(nil, term)))
		kill()
	}
	os.Exit(2)
}

// runCrashChild runs the child in mode against dir. With killAfter > 0
// the parent kills it that long after it reports ready; otherwise the
// child kills itself.
func runCrashChild(t *testing.T, dir, mode string, killAfter time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashMode+"="+mode, envCrashDir+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if killAfter > 0 {
		sc := bufio.NewScanner(out)
		ready := false
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready = true
				break
			}
		}
		if !ready {
			cmd.Wait()
			t.Fatalf("child never got ready; stderr: %s", stderr.String())
		}
		time.Sleep(killAfter)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	var lines bytes.Buffer
	lines.ReadFrom(out)
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v; stdout %q stderr %s", err, lines.String(), stderr.String())
	}
}

// readVote reopens dir and returns CurrentTerm and the vote.
func readVote(t *testing.T, dir string) (current, term uint64, cand []byte) {
	t.Helper()
	s := openStore(t, dir)
	defer s.Close()
	current, err := s.GetUint64(keyCurrentTerm)
	if err != nil {
		t.Fatalf("CurrentTerm: %v", err)
	}
	term, err = s.GetUint64(keyLastVoteTerm)
	if err != nil {
		t.Fatalf("LastVoteTerm: %v", err)
	}
	cand, err = s.Get(keyLastVoteCand)
	if err != nil {
		t.Fatalf("LastVoteCand: %v", err)
	}
	return current, term, cand
}

func TestVoteCrashBetweenWritesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	runCrashChild(t, dir, "between", 0)
	current, term, cand := readVote(t, dir)
	if current != 2 || term != 1 || !bytes.Equal(cand, candFor(1)) {
		t.Fatalf("after a crash inside persistVote: CurrentTerm %d, vote (%d, %q); want 2, (1, %q)",
			current, term, cand, candFor(1))
	}
}

// TestVoteCrashNaiveStoreDisagrees shows the crash simulation does catch
// issue 661: writing LastVoteTerm on its own leaves it paired with the
// previous term's candidate.
func TestVoteCrashNaiveStoreDisagrees(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	runCrashChild(t, dir, "naive", 0)
	_, term, cand := readVote(t, dir)
	if term != 2 || !bytes.Equal(cand, candFor(1)) {
		t.Fatalf("naive writes: vote (%d, %q); expected the torn pair (2, %q)", term, cand, candFor(1))
	}
}

func TestVoteCrashRandomKills(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	seed := openStore(t, dir) // one recorded vote to start from
	if err := seed.SetUint64(keyCurrentTerm, 1); err != nil {
		t.Fatal(err)
	}
	if err := persistVote(seed, 1, candFor(1)); err != nil {
		t.Fatal(err)
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 661))
	var lastTerm uint64
	for i := range 6 {
		runCrashChild(t, dir, "loop", time.Duration(5+rng.IntN(60))*time.Millisecond)
		current, term, cand := readVote(t, dir)
		if !bytes.Equal(cand, candFor(term)) {
			t.Fatalf("kill %d: LastVoteTerm %d paired with %q", i, term, cand)
		}
		// The term may run ahead of the last vote by more than one: each
		// kill can land after a term was adopted and before its vote, and
		// that is a valid Raft state (a term with no vote yet).
		if term > current {
			t.Fatalf("kill %d: CurrentTerm %d below LastVoteTerm %d", i, current, term)
		}
		if term < lastTerm {
			t.Fatalf("kill %d: vote went back from term %d to %d", i, lastTerm, term)
		}
		lastTerm = term
		t.Logf("kill %d: CurrentTerm %d, vote (%d, %s)", i, current, term, cand)
	}
}
