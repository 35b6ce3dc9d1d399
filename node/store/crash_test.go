//go:build unix

package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/wardsync/wardsync/node/store/crashpoint"
)

// These tests run this test binary as a child that arms a crash point
// (crashpoint.Env), let it die there, and check what the store holds
// afterwards.

const (
	envChildMode = "STORE_CRASH_CHILD"
	envChildDir  = "STORE_CRASH_DIR"
	envChildSnap = "STORE_CRASH_SNAPSHOT"
)

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(envChildMode)
	if mode == "" {
		t.Skip("only runs as the child of the crash point tests")
	}
	s, err := Open(Options{Dir: os.Getenv(envChildDir), Create: true, MaxBatch: 8})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	switch mode {
	case "write": // writers until the crash point kills the process
		var mu sync.Mutex
		out := bufio.NewWriter(os.Stdout)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					k := fmt.Sprintf("w%d-%06d", w, i)
					if err := s.Write(context.Background(), func(tx *Tx) error {
						tx.set([]byte(k), []byte("v-"+k))
						return nil
					}); err != nil {
						fmt.Println("write:", err)
						os.Exit(2)
					}
					// Acknowledged: say so before anything else is done.
					mu.Lock()
					fmt.Fprintln(out, "ack", k)
					out.Flush()
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	case "restore":
		f, err := os.Open(os.Getenv(envChildSnap))
		if err != nil {
			os.Exit(2)
		}
		err = s.Restore(bufio.NewReader(f))
		fmt.Println("restore returned:", err)
	}
	os.Exit(3) // the crash point should have killed us
}

func runCrashChild(t *testing.T, mode, dir, point string, extra ...string) (stdout string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), envChildMode+"="+mode, envChildDir+"="+dir, crashpoint.Env+"="+point)
	cmd.Env = append(cmd.Env, extra...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child %s at %s: %v, want death by SIGKILL\nstdout:\n%s\nstderr:\n%s", mode, point, err, out, stderr.String())
	}
	name, _, _ := strings.Cut(point, ":")
	if !strings.Contains(stderr.String(), "crashpoint: "+name) {
		t.Fatalf("child died of SIGKILL but not at %s:\n%s", point, stderr.String())
	}
	return string(out)
}

// TestCrashAtGroupCommit: a store killed just before a batch's commit, or
// just after it but before its writers are answered, holds every write
// that was acknowledged, and nothing torn.
func TestCrashAtGroupCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	for _, point := range []string{crashpoint.CommitBeforeSync + ":40", crashpoint.CommitAfterSync + ":40"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			out := runCrashChild(t, "write", dir, point)
			var acked []string
			for line := range strings.Lines(out) {
				if k, ok := strings.CutPrefix(strings.TrimSpace(line), "ack "); ok {
					acked = append(acked, k)
				}
			}
			if len(acked) == 0 {
				t.Fatalf("no write acknowledged before the crash:\n%s", out)
			}
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatalf("reopen after the crash: %v", err)
			}
			defer s.Close()
			for _, k := range acked {
				if v, ok := readKey(t, s, k); !ok || v != "v-"+k {
					t.Fatalf("acknowledged %s lost after the crash (%q, %v)", k, v, ok)
				}
			}
			t.Logf("%d acknowledged writes all there", len(acked))
		})
	}
}

// TestCrashMidRestoreRestoresAgain: a store killed halfway through loading
// a snapshot is left marked as restoring, with part of the snapshot on
// disk; restoring the same snapshot again gives exactly its state.
func TestCrashMidRestoreRestoresAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	src := openTestStore(t)
	for i := 0; i < 2000; i += 100 {
		mustWrite(t, src, func(tx *Tx) error {
			for j := i; j < i+100; j++ {
				tx.set(fmt.Appendf(nil, "k%05d", j), bytes.Repeat([]byte{byte(j)}, 100))
			}
			return nil
		})
	}
	var snap bytes.Buffer
	sn := src.Snapshot()
	want, err := sn.Stream(&snap)
	sn.Release()
	if err != nil {
		t.Fatal(err)
	}
	snapFile := t.TempDir() + "/snap"
	if err := os.WriteFile(snapFile, snap.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	// The old state, which the restore drops.
	old, err := Open(Options{Dir: dir, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, old, func(tx *Tx) error { tx.set([]byte("old"), []byte("state")); return nil })
	old.Close()

	runCrashChild(t, "restore", dir, crashpoint.RestoreMid+":1000", envChildSnap+"="+snapFile)

	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	defer s.Close()
	if !s.Restoring() {
		t.Fatal("a restore cut short is not marked: the next start would trust a partial state")
	}
	n := 0
	s.View(func(tx *Tx) error {
		return tx.scan([]byte("k"), nil, false, false, func(_, _ []byte) (bool, error) { n++; return true, nil })
	})
	if n == 0 || n >= 2000 {
		t.Fatalf("%d of 2000 keys on disk after the crash; want part of the snapshot", n)
	}
	if err := s.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatalf("restore again: %v", err)
	}
	if got, _ := s.StateHash(); got != want || s.Restoring() {
		t.Fatalf("after the second restore: hash %x (want %x), restoring %v", got[:8], want[:8], s.Restoring())
	}
	t.Logf("%d of 2000 keys were on disk at the crash", n)
}
