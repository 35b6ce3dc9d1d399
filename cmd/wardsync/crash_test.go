package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/store/crashpoint"
)

// Crash consistency on disk (docs/operations.md, "Crash consistency"):
// real processes are killed at chosen points of the storage code by a
// crash point (node/store/crashpoint: the process SIGKILLs itself there),
// or find one byte of a data file flipped, and must then either start
// with nothing acknowledged lost or refuse to start with a message that
// says how to recover.

// crashSeed is the seed of a crash test's random choices (which hit of a
// point kills), logged so a failure can be replayed.
func crashSeed(t *testing.T) *rand.Rand {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("WARDSYNC_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("WARDSYNC_CRASH_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (rerun with WARDSYNC_CRASH_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x63726173))
}

// unarmedEnv is the environment without a crash point, for the restarts.
func unarmedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, crashpoint.Env+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// startArmed starts cmd with the crash point armed. Unlike startNode it
// does not require the listening line: the point may be reached before
// the node gets there. p.url is empty then.
func startArmed(t *testing.T, cmd *exec.Cmd, point string) *nodeProc {
	t.Helper()
	cmd.Env = append(unarmedEnv(), crashpoint.Env+"="+point)
	p := &nodeProc{t: t, cmd: cmd, stdout: &readyWriter{ready: make(chan string, 1)}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.url = <-p.stdout.ready:
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("armed node neither listened nor died within 30s\nstderr:\n%s", p.stderr.String())
	}
	return p
}

// waitCrashed waits for p to die at point: of SIGKILL, with the crash
// point's line on stderr (so not of some other death).
func (p *nodeProc) waitCrashed(point string, within time.Duration) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("the process did not reach crash point %s within %v\nstderr:\n%s", point, within, tail(p.stderr.String(), 4000))
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		p.t.Fatalf("armed with %s, the process ended with %v, not SIGKILL\nstderr:\n%s", point, p.err, tail(p.stderr.String(), 4000))
	}
	name, _, _ := strings.Cut(point, ":")
	if !strings.Contains(p.stderr.String(), "crashpoint: "+name+" (hit ") {
		p.t.Fatalf("the process died of SIGKILL but not at %s\nstderr:\n%s", point, tail(p.stderr.String(), 4000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// clerks are writers creating dossiers on a ward node and recording every
// 201 in acks. Transport errors are expected (the node is killed under
// them); any other answer than 201 is not.
type clerks struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	failures atomic.Int64
	mu       sync.Mutex
	bad      []string
}

func startClerks(t *testing.T, a *api, acks *ackLog, writers int, tag string) *clerks {
	c := &clerks{stop: make(chan struct{})}
	for w := range writers {
		c.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-c.stop:
					return
				default:
				}
				body := map[string]any{"procedure": "birth-registration", "applicant": map[string]string{
					"name": fmt.Sprintf("Thư ký %s %d-%d", tag, w, i), "id_number": fmt.Sprintf("%012d", 79_400_000_000+w*1_000_000+i)}}
				code, data, err := a.do("POST", "/v1/dossiers", body)
				if err != nil {
					c.failures.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if code != http.StatusCreated {
					c.mu.Lock()
					c.bad = append(c.bad, fmt.Sprintf("HTTP %d: %.300s", code, data))
					c.mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					continue
				}
				var d createdDossier
				if err := json.Unmarshal(data, &d); err != nil || d.ID == "" || d.ReceiptNo == "" {
					c.mu.Lock()
					c.bad = append(c.bad, fmt.Sprintf("201 without id or receipt: %.300s", data))
					c.mu.Unlock()
					continue
				}
				acks.add(d)
			}
		})
	}
	return c
}

// halt stops the writers and fails the test on any answer but 201.
func (c *clerks) halt(t *testing.T) {
	t.Helper()
	close(c.stop)
	c.wg.Wait()
	if len(c.bad) > 0 {
		t.Fatalf("%d creates got an answer other than 201, first: %s", len(c.bad), c.bad[0])
	}
}

func newAckLog() *ackLog {
	return &ackLog{byID: map[string]string{}, byReceipt: map[string]string{}}
}

func (l *ackLog) checkNoDupes(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.dupes {
		t.Error(d)
	}
}

func (l *ackLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

// TestCrashAtGroupCommit kills a ward node under 16 writers at the group
// commit: just before a batch's badger commit (nothing of it on disk) and
// just after it (on disk, no writer answered yet), at a random batch.
// Restarted without the crash point, the node holds every create it
// acknowledged with its receipt number, no receipt twice, and goes on
// numbering without reusing the receipts of the batch that landed
// unacknowledged.
func TestCrashAtGroupCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes; skipped with -short")
	}
	rng := crashSeed(t)
	for _, name := range []string{crashpoint.CommitBeforeSync, crashpoint.CommitAfterSync} {
		t.Run(name, func(t *testing.T) {
			point := fmt.Sprintf("%s:%d", name, 30+rng.IntN(200))
			dataDir := filepath.Join(t.TempDir(), "node")
			token := initNode(t, dataDir)
			acks := newAckLog()

			start := time.Now()
			node := startArmed(t, runWardCmd(t, dataDir), point)
			if node.url == "" {
				t.Fatalf("the node died at %s before it listened:\n%s", point, node.stderr.String())
			}
			load := startClerks(t, newAPI(node.url, token), acks, 16, "a")
			node.waitCrashed(point, 30*time.Second)
			load.halt(t)
			before, inFlight := acks.len(), load.failures.Load()
			if before == 0 {
				t.Fatal("nothing was acknowledged before the crash")
			}

			crashed := time.Since(start)
			restart := runWardCmd(t, dataDir)
			restart.Env = unarmedEnv()
			node = startNode(t, restart)
			restarted := time.Since(start) - crashed
			a := newAPI(node.url, token)
			listed := verifyAcked(t, a, acks.snapshot())
			verified := time.Since(start) - crashed - restarted
			// New receipts after the restart never repeat an old one.
			load = startClerks(t, a, acks, 4, "b")
			for deadline := time.Now().Add(10 * time.Second); acks.len() < before+50 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			load.halt(t)
			verifyAcked(t, a, acks.snapshot())
			acks.checkNoDupes(t)
			t.Logf("%s: %d creates acknowledged before the crash (%d failed in flight), %d listed after the restart (%d landed unacknowledged); %d more after it; "+
				"crash after %v, restart took %v, checks %v",
				point, before, inFlight, listed, listed-before, acks.len()-before, crashed.Round(time.Millisecond), restarted.Round(time.Millisecond), verified.Round(time.Millisecond))
			node.stop()
		})
	}
}

// cityArgs are the flags cityEnv.start gives member id.
func (e *cityEnv) cityArgs(id string, extra ...string) []string {
	return append([]string{"city", "run", "--data", filepath.Join(e.dir, "data", id), "--node", id,
		"--quic", e.quic[id], "--http", "127.0.0.1:0", "--tls", filepath.Join(e.dir, "tls", id),
		"--heartbeat-timeout", "400ms", "--election-timeout", "400ms",
		"--snapshot-threshold", "40", "--trailing-logs", "10", "--snapshot-interval", "500ms",
		"--blob-repair-interval", "2s", "--log-level", "info"}, extra...)
}

// startArmed starts member id with a crash point armed.
func (e *cityEnv) startArmed(id, point string, extra ...string) *nodeProc {
	e.t.Helper()
	p := startArmed(e.t, exec.Command(wardsyncBin(e.t), e.cityArgs(id, extra...)...), point)
	e.mu.Lock()
	e.members[id] = p
	e.mu.Unlock()
	return p
}

// portalLoad submits portal dossiers through the given members until
// stopped, recording every 201 (dossier ID → receipt) and any receipt
// given twice.
type portalLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	acked    map[string]string
	receipts map[string]string
	dupes    []string
	failures atomic.Int64
	next     atomic.Int64
}

func (e *cityEnv) startPortal(writers int, via func() []string) *portalLoad {
	l := &portalLoad{stop: make(chan struct{}), acked: map[string]string{}, receipts: map[string]string{}}
	for w := range writers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				members := via()
				i := int(l.next.Add(1))
				d, err := e.submit(members[(i+w)%len(members)], i)
				if err != nil {
					l.failures.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				l.mu.Lock()
				if other, ok := l.receipts[d.ReceiptNo]; ok && other != d.ID {
					l.dupes = append(l.dupes, fmt.Sprintf("receipt %s given to %s and %s", d.ReceiptNo, other, d.ID))
				}
				l.receipts[d.ReceiptNo] = d.ID
				l.acked[d.ID] = d.ReceiptNo
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *portalLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitCount waits until n submissions are acknowledged.
func (l *portalLoad) waitCount(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for l.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d portal submissions acknowledged in %v (%d failed)", l.count(), n, within, l.failures.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// halt stops the writers and returns what was acknowledged.
func (l *portalLoad) halt(t *testing.T) map[string]string {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for _, d := range l.dupes {
		t.Error(d)
	}
	return l.acked
}

// sameDigest waits until every member in ids holds the same digest of ward
// and the same applied index, and returns the digest.
func (e *cityEnv) sameDigest(t *testing.T, ward string, ids []string, within time.Duration) string {
	t.Helper()
	var last string
	eventually(t, "the members hold the same ward and applied index", within, func() error {
		var first string
		var applied []uint64
		for _, id := range ids {
			d := e.digest(id, ward)
			s := fmt.Sprintf("%d dossiers, %d ops, %d conflicts, hash %.16s", d.Dossiers, d.Ops, d.Conflicts, d.Hash)
			if first == "" {
				first = s
			} else if s != first {
				return fmt.Errorf("%s has %s, %s has %s", ids[0], first, id, s)
			}
			code, body := e.call(e.admin, "GET", e.members[id].url+"/v1/cluster", nil)
			var v clusterView
			if code != 200 || json.Unmarshal(body, &v) != nil {
				return fmt.Errorf("cluster view of %s: HTTP %d %s", id, code, body)
			}
			for _, m := range v.Members {
				if m.ID == id && m.AppliedIndex != nil {
					applied = append(applied, *m.AppliedIndex)
				}
			}
		}
		for _, a := range applied {
			if a != applied[0] {
				return fmt.Errorf("applied indexes %v", applied)
			}
		}
		last = first
		return nil
	})
	return last
}

// TestCrashMidSnapshotRestore: a follower is killed and kept down while
// the others commit enough that its log position is compacted away, so on
// its return the leader sends it a snapshot; it is armed to die halfway
// through loading it (restore-mid: old state dropped, part of the
// snapshot written). Restarted without the point, it restores again at
// start (its store is marked as restoring), catches up, and holds
// exactly what the others hold: every acknowledged submission with its
// receipt, the same ward digest and the same applied index. Portal
// submissions run through the other members the whole time.
func TestCrashMidSnapshotRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes; skipped with -short")
	}
	rng := crashSeed(t)
	e, ids := startCity3(t)
	leader := e.waitLeader("c1", "")
	follower := ""
	var others []string
	for _, id := range ids {
		if id != leader && follower == "" {
			follower = id
		} else {
			others = append(others, id)
		}
	}
	// The city origin initializes after the first election.
	eventually(t, "first portal submission", 15*time.Second, func() error { _, err := e.submit(leader, 0); return err })
	load := e.startPortal(4, func() []string { return others })
	load.waitCount(t, 30, 30*time.Second)
	e.members[follower].kill9()
	killedAt := 0.0
	for _, id := range others {
		killedAt = max(killedAt, e.raftIndex(id, "last"))
	}
	// Threshold 40, trailing 10: 300 more submissions compact the log far
	// past the follower. Every portal dossier is several keys, so the
	// snapshot has well over a thousand entries and the crash at entry
	// 200..599 is in its middle.
	load.waitCount(t, 330, 60*time.Second)
	// Snapshots run on a timer: on a loaded machine the others may not
	// have compacted yet, and the follower would catch up from the log.
	eventually(t, "the others' logs compacted past the follower", 30*time.Second, func() error {
		for _, id := range others {
			if s := e.raftIndex(id, "snapshot"); s <= killedAt+10 {
				return fmt.Errorf("%s's last snapshot is at %v, the follower's log may end at %v", id, s, killedAt)
			}
		}
		return nil
	})
	point := fmt.Sprintf("%s:%d", crashpoint.RestoreMid, 200+rng.IntN(400))
	p := e.startArmed(follower, point)
	p.waitCrashed(point, 30*time.Second)
	if strings.Contains(p.stderr.String(), "restoring it at start") || strings.Contains(p.stderr.String(), "restoring again at start") {
		t.Fatalf("the member restored a snapshot of its own at start; the test meant to crash it in InstallSnapshot\n%s", tail(p.stderr.String(), 3000))
	}
	t.Logf("%s died at %s with %d submissions acknowledged", follower, point, load.count())

	restart := exec.Command(wardsyncBin(t), e.cityArgs(follower)...)
	restart.Env = unarmedEnv()
	p = startNode(t, restart)
	e.mu.Lock()
	e.members[follower] = p
	e.mu.Unlock()
	load.waitCount(t, load.count()+30, 30*time.Second)
	acked := load.halt(t)
	for _, id := range ids {
		e.waitHas(id, acked)
	}
	dg := e.sameDigest(t, testWard(t), ids, 30*time.Second)
	if !strings.Contains(p.stderr.String(), "a snapshot restore was cut short; restoring again at start") {
		t.Errorf("the restarted member did not see its restore was cut short\n%s", tail(p.stderr.String(), 4000))
	}
	t.Logf("%d submissions acknowledged (%d retried); all 3 members hold %s", len(acked), load.failures.Load(), dg)
	for _, id := range ids {
		e.members[id].stop()
	}
}

// TestCrashMidPullApply: a ward comes up to a city holding 1,200 portal
// submissions for it, pulls them in pages and is killed halfway through
// applying its third page (pull-mid: half the page staged in the write,
// neither the rest nor the cursor), while clerks create dossiers on it.
// Restarted without the point, it pulls again from its cursor and ends
// with every portal dossier and every create it acknowledged exactly once,
// and the same ward digest as the city.
func TestCrashMidPullApply(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes; skipped with -short")
	}
	rng := crashSeed(t)
	e := newCityEnv(t, "c1")
	e.start("c1", "--bootstrap", e.bootstrapSpec("c1"))
	e.waitLeader("c1", "")
	eventually(t, "first portal submission", 15*time.Second, func() error { _, err := e.submit("c1", 0); return err })
	const portal = 1200
	load := e.startPortal(8, func() []string { return []string{"c1"} })
	load.waitCount(t, portal, 60*time.Second)
	acked := load.halt(t)

	ward := testWard(t)
	w := e.initWard("wa", ward)
	// Pages are 256 ops: the partition is 5 of them; die in page 2..4.
	point := fmt.Sprintf("%s:%d", crashpoint.PullMid, 2+rng.IntN(3))
	w.proc = startArmed(t, execWard(t, e, w, e.cityQUIC("c1")), point)
	clerkAcks := newAckLog()
	var c *clerks
	if w.proc.url != "" {
		c = startClerks(t, newAPI(w.proc.url, w.token), clerkAcks, 8, "w")
	}
	w.proc.waitCrashed(point, 30*time.Second)
	var inFlight int64
	if c != nil {
		c.halt(t)
		inFlight = c.failures.Load()
	}
	before := clerkAcks.len()

	restart := execWard(t, e, w, e.cityQUIC("c1"))
	restart.Env = unarmedEnv()
	w.proc = startNode(t, restart)
	w.api = newAPI(w.proc.url, w.token)
	c = startClerks(t, w.api, clerkAcks, 4, "x")
	time.Sleep(500 * time.Millisecond)
	c.halt(t)
	clerkAcks.checkNoDupes(t)

	var want, got string
	eventually(t, "the ward holds what the city holds of it", 45*time.Second, func() error {
		cd, wd := e.digest("c1", ward), w.digest(t, ward)
		want = fmt.Sprintf("%d dossiers, %d ops, %d conflicts, hash %.16s", cd.Dossiers, cd.Ops, cd.Conflicts, cd.Hash)
		got = fmt.Sprintf("%d dossiers, %d ops, %d conflicts, hash %.16s", wd.Dossiers, wd.Ops, wd.Conflicts, wd.Hash)
		if want != got {
			return fmt.Errorf("city %s, ward %s", want, got)
		}
		return nil
	})
	all := clerkAcks.snapshot()
	for id, r := range acked {
		all[id] = r
	}
	listed := verifyAcked(t, w.api, all)
	t.Logf("died at %s; %d clerk creates acknowledged before it (%d failed in flight), %d after; ward lists %d dossiers, %d acknowledged; city and ward: %s",
		point, before, inFlight, clerkAcks.len()-before, listed, len(all), got)
	w.proc.stop()
}

// TestCrashCityMemberAtGroupCommit: the city's state machine stores what
// Raft commits through the same group committer as a ward. A follower
// armed at either side of that commit dies there while portal
// submissions flow through the leader; restarted without the point it
// replays from its own applied index, and then holds every acknowledged
// submission once, with the same digest and applied index as the others.
func TestCrashCityMemberAtGroupCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes; skipped with -short")
	}
	rng := crashSeed(t)
	e, ids := startCity3(t)
	leader := e.waitLeader("c1", "")
	var follower string
	var others []string
	for _, id := range ids {
		if id != leader && follower == "" {
			follower = id
		} else {
			others = append(others, id)
		}
	}
	eventually(t, "first portal submission", 15*time.Second, func() error { _, err := e.submit(leader, 0); return err })
	load := e.startPortal(4, func() []string { return others })
	for _, name := range []string{crashpoint.CommitBeforeSync, crashpoint.CommitAfterSync} {
		load.waitCount(t, load.count()+20, 30*time.Second)
		e.members[follower].stop()
		point := fmt.Sprintf("%s:%d", name, 5+rng.IntN(40))
		e.startArmed(follower, point).waitCrashed(point, 30*time.Second)
		restart := exec.Command(wardsyncBin(t), e.cityArgs(follower)...)
		restart.Env = unarmedEnv()
		p := startNode(t, restart)
		e.mu.Lock()
		e.members[follower] = p
		e.mu.Unlock()
		t.Logf("%s died at %s and restarted, %d submissions acknowledged so far", follower, point, load.count())
	}
	load.waitCount(t, load.count()+20, 30*time.Second)
	acked := load.halt(t)
	for _, id := range ids {
		e.waitHas(id, acked)
	}
	t.Logf("%d submissions acknowledged (%d retried); all 3 members hold %s", len(acked), load.failures.Load(), e.sameDigest(t, testWard(t), ids, 30*time.Second))
	for _, id := range ids {
		e.members[id].stop()
	}
}

// copyTree copies a data dir (regular files and directories).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pick returns the file of dir with extension ext that is largest
// (newest first among equals: names are file IDs).
func pick(t *testing.T, dir, ext string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
	if len(m) == 0 {
		t.Fatalf("no %s file in %s", ext, dir)
	}
	sort.Slice(m, func(i, j int) bool {
		a, _ := os.Stat(m[i])
		b, _ := os.Stat(m[j])
		if a.Size() != b.Size() {
			return a.Size() > b.Size()
		}
		return m[i] > m[j]
	})
	return m[0]
}

// flip flips the lowest bit of one byte of path, at off (negative: from
// the end), and returns the offset.
func flip(t *testing.T, path string, off int64) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return off
}

// lastNonZero is the offset of the last non-zero byte of a (preallocated,
// zero-padded) log file.
func lastNonZero(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return int64(i)
		}
	}
	return -1
}

// expectRefusal runs cmd, which must exit at once with status 1 and a
// message naming the recovery: every string of wants. A panic, a signal
// or a node that starts is a failure.
func expectRefusal(t *testing.T, cmd *exec.Cmd, wants ...string) string {
	t.Helper()
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("a damaged node neither refused nor failed in 30s:\n%s", tail(out.String(), 3000))
	}
	msg := out.String()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Contains(msg, "panic:") || strings.Contains(msg, "goroutine ") {
		t.Fatalf("a damaged node should refuse to start (exit status 1) with a message; it ended with %v:\n%s", err, tail(msg, 3000))
	}
	for _, w := range append([]string{"refusing to start"}, wants...) {
		if !strings.Contains(msg, w) {
			t.Fatalf("the refusal does not say %q:\n%s", w, tail(msg, 3000))
		}
	}
	return msg
}

// corruption is one flipped byte: in which file, where, and what the node
// must then do.
type corruption struct {
	name   string
	file   func(dir string) string // the file to damage, in a copy of the data dir
	off    func(path string) int64 // where (negative: from the end)
	starts bool                    // true: the node starts with nothing lost; false: it refuses
	wants  []string                // what the refusal must say
}

// TestOneByteCorruptionWard flips one byte of a stopped ward node's data
// files, one file at a time, on copies of its data dir: the header of the
// value log (its encryption key ID, then its IV), a data block and the
// index of a table, and, on a node killed with kill -9, the middle of the
// memtable's write-ahead log. Each time the node either starts and serves
// exactly what it had acknowledged (same receipts, same state hashes) or
// refuses to start with a message that names the way to recover. It never
// panics, and never serves changed data.
func TestOneByteCorruptionWard(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes; skipped with -short")
	}
	dataDir := filepath.Join(t.TempDir(), "node")
	token := initNode(t, dataDir)
	node := startNode(t, runWardCmd(t, dataDir))
	a := newAPI(node.url, token)
	acks := newAckLog()
	load := startClerks(t, a, acks, 8, "c")
	for deadline := time.Now().Add(20 * time.Second); acks.len() < 300 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	load.halt(t)
	hashes := map[string]string{}
	for id := range acks.snapshot() {
		var d syncedDossier
		code, body, err := a.do("GET", "/v1/dossiers/"+id, nil)
		if err != nil || code != 200 || json.Unmarshal(body, &d) != nil || d.StateHash == "" {
			t.Fatalf("GET %s: HTTP %d %v %s", id, code, err, body)
		}
		hashes[id] = d.StateHash
	}
	node.stop() // a clean stop: the memtable is flushed into a table
	stopped := filepath.Join(t.TempDir(), "stopped")
	copyTree(t, dataDir, stopped)

	// The same node killed with -9 after more writes: those are only in
	// the memtable's write-ahead log (*.mem).
	node = startNode(t, runWardCmd(t, dataDir))
	killedAcks := newAckLog()
	load = startClerks(t, newAPI(node.url, token), killedAcks, 4, "k")
	for deadline := time.Now().Add(10 * time.Second); killedAcks.len() < 100 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	load.halt(t)
	node.kill9()
	killed := filepath.Join(t.TempDir(), "killed")
	copyTree(t, dataDir, killed)

	resync := []string{"re-sync the ward from the city", "`wardsync ward init`", "new --node ID", "`wardsync ward restore`", "docs/operations.md"}
	cases := []struct {
		corruption
		from string
	}{
		{corruption{name: "value log header: key ID", file: func(d string) string { return pick(t, d, ".vlog") },
			off: func(string) int64 { return 7 }, wants: resync}, stopped},
		{corruption{name: "value log header: IV", file: func(d string) string { return pick(t, d, ".vlog") },
			off: func(string) int64 { return 12 }, starts: true}, stopped},
		{corruption{name: "table: data block", file: func(d string) string { return pick(t, d, ".sst") },
			off: func(p string) int64 { fi, _ := os.Stat(p); return fi.Size() / 3 }, wants: resync}, stopped},
		{corruption{name: "table: index", file: func(d string) string { return pick(t, d, ".sst") },
			off: func(string) int64 { return -40 }, wants: resync}, stopped},
		{corruption{name: "write-ahead log: middle", file: func(d string) string { return pick(t, d, ".mem") },
			off:   func(p string) int64 { return 20 + (lastNonZero(t, p)-20)/2 },
			wants: []string{"log damaged", "re-sync the ward from the city", "`wardsync ward restore`", "wardsync ward repair --data"}}, killed},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, ": ", "-"), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "node")
			copyTree(t, c.from, dir)
			path := c.file(dir)
			off := flip(t, path, c.off(path))
			t.Logf("flipped byte %d of %s", off, filepath.Base(path))
			cmd := runWardCmd(t, dir)
			cmd.Env = unarmedEnv()
			if !c.starts {
				msg := expectRefusal(t, cmd, c.wants...)
				if !strings.Contains(msg, path) {
					t.Fatalf("the refusal does not name the damaged file %s:\n%s", path, msg)
				}
				t.Logf("refused: %s", tail(strings.TrimSpace(msg), 600))
				return
			}
			p := startNode(t, cmd)
			a := newAPI(p.url, token)
			want := acks.snapshot()
			if c.from == killed {
				for id, r := range killedAcks.snapshot() {
					want[id] = r
				}
			}
			verifyAcked(t, a, want)
			for id, h := range hashes {
				var d syncedDossier
				code, body, err := a.do("GET", "/v1/dossiers/"+id, nil)
				if err != nil || code != 200 || json.Unmarshal(body, &d) != nil || d.StateHash != h {
					t.Fatalf("dossier %s after the flip: HTTP %d %v, state hash %q, was %q", id, code, err, d.StateHash, h)
				}
			}
			t.Logf("started; all %d acknowledged dossiers there with their state hashes", len(want))
			p.stop()
		})
	}
}

// TestOneByteCorruptionCityMember does the same to a stopped city member:
// its FSM's value log header and a table of its FSM and of its Raft log.
// A refusal must say to rejoin the member; then the test does what it
// says (remove the member, move its data dir aside, start it with --join)
// and the member catches up with everything acknowledged meanwhile.
func TestOneByteCorruptionCityMember(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes; skipped with -short")
	}
	e, ids := startCity3(t)
	leader := e.waitLeader("c1", "")
	victim := "c3"
	if leader == victim {
		victim = "c2"
	}
	var others []string
	for _, id := range ids {
		if id != victim {
			others = append(others, id)
		}
	}
	eventually(t, "first portal submission", 15*time.Second, func() error { _, err := e.submit(leader, 0); return err })
	load := e.startPortal(4, func() []string { return others })
	load.waitCount(t, 60, 30*time.Second)
	acked := load.halt(t)
	e.waitHas(victim, acked)
	e.members[victim].stop()
	memberDir := filepath.Join(e.dir, "data", victim)
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyTree(t, memberDir, pristine)

	rejoin := []string{"rejoin it to the cluster", "wardsync city remove --node " + victim, "--join", "docs/operating-the-city-cluster.md"}
	cases := []corruption{
		{name: "fsm value log header: key ID", file: func(d string) string { return pick(t, filepath.Join(d, "fsm"), ".vlog") },
			off: func(string) int64 { return 7 }, wants: rejoin},
		{name: "fsm table: data block", file: func(d string) string { return pick(t, filepath.Join(d, "fsm"), ".sst") },
			off: func(p string) int64 { fi, _ := os.Stat(p); return fi.Size() / 3 }, wants: rejoin},
		{name: "raft log table: data block", file: func(d string) string { return pick(t, filepath.Join(d, "raft"), ".sst") },
			off: func(p string) int64 { fi, _ := os.Stat(p); return fi.Size() / 3 }, wants: rejoin},
		{name: "raft log table: index", file: func(d string) string { return pick(t, filepath.Join(d, "raft"), ".sst") },
			off: func(string) int64 { return -40 }, wants: rejoin},
		{name: "fsm value log header: IV", file: func(d string) string { return pick(t, filepath.Join(d, "fsm"), ".vlog") },
			off: func(string) int64 { return 12 }, starts: true},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, ": ", "-"), func(t *testing.T) {
			os.RemoveAll(memberDir)
			copyTree(t, pristine, memberDir)
			path := c.file(memberDir)
			off := flip(t, path, c.off(path))
			t.Logf("flipped byte %d of %s", off, path)
			cmd := exec.Command(wardsyncBin(t), e.cityArgs(victim)...)
			cmd.Env = unarmedEnv()
			if !c.starts {
				msg := expectRefusal(t, cmd, c.wants...)
				if !strings.Contains(msg, path) {
					t.Fatalf("the refusal does not name the damaged file %s:\n%s", path, msg)
				}
				t.Logf("refused: %s", tail(strings.TrimSpace(msg), 700))
				return
			}
			p := startNode(t, cmd)
			e.mu.Lock()
			e.members[victim] = p
			e.mu.Unlock()
			e.waitHas(victim, acked)
			t.Logf("started and holds all %d acknowledged submissions; %s", len(acked), e.sameDigest(t, testWard(t), ids, 30*time.Second))
			p.stop()
		})
	}

	// Follow the refusal's recovery on a damaged copy, while submissions
	// go on through the others.
	os.RemoveAll(memberDir)
	copyTree(t, pristine, memberDir)
	flip(t, pick(t, filepath.Join(memberDir, "fsm"), ".sst"), 100)
	load = e.startPortal(4, func() []string { return others })
	if out, err := e.cityCLI(leader, "remove", "--node", victim); err != nil {
		t.Fatalf("city remove: %v\n%s", err, out)
	}
	if err := os.Rename(memberDir, memberDir+"-damaged"); err != nil {
		t.Fatal(err)
	}
	e.start(victim, "--join", e.members[leader].url)
	load.waitCount(t, load.count()+30, 30*time.Second)
	more := load.halt(t)
	for id, r := range acked {
		more[id] = r
	}
	e.waitHas(victim, more)
	t.Logf("rejoined %s holds all %d acknowledged submissions; %s", victim, len(more), e.sameDigest(t, testWard(t), ids, 30*time.Second))
	for _, id := range ids {
		e.members[id].stop()
	}
}

// cityCLI runs a `wardsync city` client command against member with the
// admin certificate.
func (e *cityEnv) cityCLI(member string, args ...string) (string, error) {
	full := append([]string{"city"}, args...)
	full = append(full, "--city", e.members[member].url, "--tls", filepath.Join(e.dir, "tls", "admin"))
	out, err := exec.Command(wardsyncBin(e.t), full...).CombinedOutput()
	return string(out), err
}

// raftIndex reads wardsync_city_raft_index{kind} from member id's metrics
// (0 if it does not answer).
func (e *cityEnv) raftIndex(id, kind string) float64 {
	e.t.Helper()
	code, page := e.call(e.admin, "GET", e.members[id].url+"/metrics", nil)
	if code != http.StatusOK {
		return 0
	}
	return metric(e.t, page, fmt.Sprintf("wardsync_city_raft_index{kind=%q}", kind))
}
