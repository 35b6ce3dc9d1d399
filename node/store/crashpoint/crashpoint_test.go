package crashpoint

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		spec string
		name string
		n    int64
		nil_ bool
	}{
		{spec: "", nil_: true},
		{spec: "commit-before-sync", name: CommitBeforeSync, n: 1},
		{spec: "commit-after-sync:7", name: CommitAfterSync, n: 7},
		{spec: "restore-mid:300", name: RestoreMid, n: 300},
		{spec: "pull-mid:2", name: PullMid, n: 2},
		{spec: "pull-mid:0", nil_: true},
		{spec: "pull-mid:x", nil_: true},
		{spec: "no-such-point", nil_: true},
	} {
		p := parse(c.spec)
		if c.nil_ {
			if p != nil {
				t.Errorf("parse(%q) = %+v, want nothing armed", c.spec, p)
			}
			continue
		}
		if p == nil || p.name != c.name || p.n != c.n {
			t.Errorf("parse(%q) = %+v, want %s at hit %d", c.spec, p, c.name, c.n)
		}
	}
}

// TestHitCountsAndSparesOtherPoints: only the armed point's N-th hit is
// fatal (checked without dying: the count is looked at, not the kill).
func TestHitCountsAndSparesOtherPoints(t *testing.T) {
	if armed != nil {
		t.Skip(Env + " is set for this process")
	}
	armed = &point{name: PullMid, n: 1 << 40}
	defer func() { armed = nil }()
	for range 3 {
		Hit(CommitBeforeSync)
		Hit(PullMid)
	}
	flushed := false
	HitAfter(PullMid, func() { flushed = true })
	if got := armed.hits.Load(); got != 4 {
		t.Fatalf("hits of the armed point = %d, want 4", got)
	}
	if flushed {
		t.Fatal("flush ran on a hit that does not kill")
	}
}

// TestChild is the body of the subprocess TestKillsWithSIGKILL starts.
func TestChild(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "" {
		t.Skip("runs only as the child of TestKillsWithSIGKILL")
	}
	defer os.WriteFile(os.Getenv("CRASHPOINT_CHILD"), []byte("deferred code ran"), 0o600)
	for i := 1; i <= 5; i++ {
		os.Stdout.WriteString("before hit\n")
		HitAfter(CommitAfterSync, func() { os.Stdout.WriteString("flushed\n") })
	}
	os.Stdout.WriteString("survived\n")
}

// TestKillsWithSIGKILL: an armed point kills the process at the N-th hit
// with SIGKILL (not an exit), after its flush and before any deferred
// code.
func TestKillsWithSIGKILL(t *testing.T) {
	marker := t.TempDir() + "/deferred"
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.v")
	cmd.Env = append(os.Environ(), Env+"="+CommitAfterSync+":3", "CRASHPOINT_CHILD="+marker)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want death by SIGKILL\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	if n := strings.Count(string(out), "before hit"); n != 3 || strings.Count(string(out), "flushed") != 1 || strings.Contains(string(out), "survived") {
		t.Fatalf("child output %q: want 3 hits, one flush, then death", out)
	}
	if !strings.Contains(stderr.String(), "crashpoint: commit-after-sync (hit 3): killing the process with SIGKILL") {
		t.Fatalf("child stderr lacks the crash point line:\n%s", stderr.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("deferred code ran: the crash point exited instead of being killed")
	}
}
