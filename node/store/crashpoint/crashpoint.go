// Package crashpoint kills the process at named points of the storage
// code. It exists for the crash-consistency tests only
// (cmd/wardsync/crash_test.go, docs/operations.md "Crash consistency"):
// a kill -9 sent from outside lands wherever the process happens to be,
// and the windows that matter most — a batch on disk whose writers have
// not been told yet, a snapshot half loaded, a pulled page half applied —
// are far too narrow for a random kill to hit on purpose. A crash point
// names such a window, and a test run with
//
//	WARDSYNC_CRASH_AT=name      (the first time the point is reached)
//	WARDSYNC_CRASH_AT=name:N    (the N-th time)
//
// makes the process SIGKILL itself there: no deferred code, no Close, no
// flush, exactly what kill -9 or a power cut does to the process. (os.Exit
// is not a crash: it still runs the exit path, and a test could not tell
// it from a clean failure.)
//
// The variable is read once, at start. Unset, which is every real run, Hit
// is one load and compare of a package variable.
package crashpoint

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// Env is the environment variable that arms a crash point.
const Env = "WARDSYNC_CRASH_AT"

// The points. Each is reached in one place of the code:
const (
	// CommitBeforeSync: the group committer has a batch staged in a
	// badger transaction and is about to commit it (write and fsync the
	// log). Nothing of the batch is on disk; no writer was answered.
	CommitBeforeSync = "commit-before-sync" // node/store/store.go, commit
	// CommitAfterSync: the batch's transaction is committed and fsynced,
	// but its writers are not acknowledged yet.
	CommitAfterSync = "commit-after-sync" // node/store/store.go, commit
	// RestoreMid: a city member is loading a Raft snapshot into its
	// store: the old state is dropped and the first N entries of the
	// stream are written (and flushed to disk), the rest are not.
	RestoreMid = "restore-mid" // node/store/snapshot.go, Restore
	// PullMid: a ward is applying a page pulled from the city: half of
	// the page's ops are staged in the write, the rest, the refold of the
	// dossiers and the pull cursor are not.
	PullMid = "pull-mid" // node/store/city.go, ApplyPulled
)

// Points lists every crash point.
var Points = []string{CommitBeforeSync, CommitAfterSync, RestoreMid, PullMid}

type point struct {
	name string
	n    int64 // the hit that kills
	hits atomic.Int64
}

// armed is nil unless Env names a point.
var armed = parse(os.Getenv(Env))

func parse(spec string) *point {
	if spec == "" {
		return nil
	}
	name, count, hasCount := strings.Cut(spec, ":")
	p := &point{name: name, n: 1}
	if hasCount {
		n, err := strconv.ParseInt(count, 10, 64)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "crashpoint: %s=%q: the count after ':' must be a positive integer; no crash point armed\n", Env, spec)
			return nil
		}
		p.n = n
	}
	if !slices.Contains(Points, name) {
		fmt.Fprintf(os.Stderr, "crashpoint: %s=%q: unknown point (known: %s); no crash point armed\n", Env, spec, strings.Join(Points, ", "))
		return nil
	}
	fmt.Fprintf(os.Stderr, "crashpoint: %s=%s: this process kills itself at hit %d of %s (for crash tests only)\n", Env, spec, p.n, name)
	return p
}

// Hit kills the process if name is the armed point and this is the hit
// it was armed for.
func Hit(name string) {
	if armed != nil {
		armed.hit(name, nil)
	}
}

// HitAfter is Hit for a point that stands for "this much is on disk":
// when the hit is the fatal one, flush runs first, to put it there.
func HitAfter(name string, flush func()) {
	if armed != nil {
		armed.hit(name, flush)
	}
}

func (p *point) hit(name string, flush func()) {
	if name != p.name || p.hits.Add(1) != p.n {
		return
	}
	if flush != nil {
		flush()
	}
	// Tests look for this line to know the process died here and not
	// somewhere else.
	fmt.Fprintf(os.Stderr, "crashpoint: %s (hit %d): killing the process with SIGKILL\n", name, p.n)
	kill()
}
