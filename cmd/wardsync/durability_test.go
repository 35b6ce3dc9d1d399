package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// These tests run the real binary as a child process, so that kill -9 hits
// a whole node: its HTTP server, its group committer and badger together.

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// wardsyncBin builds the binary once per test run and returns its path.
func wardsyncBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "wardsync-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "wardsync")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// testWard is a ward code the default registry knows.
func testWard(t testing.TB) string {
	t.Helper()
	all := schema.DefaultWards().All()
	if len(all) == 0 {
		t.Fatal("default ward registry is empty")
	}
	return all[0].Code
}

// lockedBuffer is a bytes.Buffer safe for a child's output copier and the
// test to use at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// readyWriter collects a child's stdout and reports the URL of its first
// "listening on URL" line.
type readyWriter struct {
	lockedBuffer
	once  sync.Once
	ready chan string
}

func (w *readyWriter) Write(p []byte) (int, error) {
	n, err := w.lockedBuffer.Write(p)
	for line := range strings.Lines(w.String()) {
		if u, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on "); ok && strings.HasSuffix(line, "\n") {
			w.once.Do(func() { w.ready <- u })
			break
		}
	}
	return n, err
}

// nodeProc is a `wardsync ward run` child process.
type nodeProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	url    string
	stdout *readyWriter
	stderr *lockedBuffer
	done   chan struct{} // closed when the process has exited and been reaped
	err    error         // Wait's result, set before done closes
}

// runWardCmd returns the command for `ward run` on dataDir at a free port.
func runWardCmd(t testing.TB, dataDir string) *exec.Cmd {
	return exec.Command(wardsyncBin(t), "ward", "run", "--data", dataDir, "--http", "127.0.0.1:0")
}

// startNode starts cmd and waits (30 s at most) for its listening line.
func startNode(t testing.TB, cmd *exec.Cmd) *nodeProc {
	t.Helper()
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
		return p
	case <-p.done:
		t.Fatalf("node exited before listening (%v)\nstdout:\n%s\nstderr:\n%s", p.err, p.stdout.String(), p.stderr.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-p.done
		t.Fatalf("node did not print its listening line within 30s\nstdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
	}
	return nil
}

// kill9 SIGKILLs the node and waits until it is reaped.
func (p *nodeProc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatal("node still running 15s after SIGKILL")
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		p.t.Fatalf("node did not die of SIGKILL: %v\nstderr:\n%s", p.err, p.stderr.String())
	}
}

// stop sends SIGTERM and requires a clean exit (status 0) within 15 s.
func (p *nodeProc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("node still running 15s after SIGTERM\nstderr:\n%s", p.stderr.String())
	}
	if p.err != nil {
		p.t.Fatalf("node did not shut down cleanly on SIGTERM: %v\nstderr:\n%s", p.err, p.stderr.String())
	}
}

// initNode runs `ward init` on dataDir and returns the admin token.
func initNode(t testing.TB, dataDir string) string {
	t.Helper()
	cmd := exec.Command(wardsyncBin(t), "ward", "init", "--data", dataDir, "--ward", testWard(t), "--node", "k9", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ward init: %v\n%s", err, stderr.String())
	}
	var res struct {
		Node       string `json:"node"`
		Ward       string `json:"ward"`
		AdminToken string `json:"admin_token"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.AdminToken == "" {
		t.Fatalf("ward init --json printed %q: %v", out, err)
	}
	return res.AdminToken
}

// api is a minimal client of a node's HTTP API.
type api struct {
	base  string
	token string
	http  *http.Client
}

func newAPI(base, token string) *api {
	return &api{base: base, token: token, http: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32},
	}}
}

func (a *api) do(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, bytes.TrimSpace(data), nil
}

type createdDossier struct {
	ID        string `json:"id"`
	ReceiptNo string `json:"receipt_no"`
}

// ackLog records every create the node acknowledged with a 201.
type ackLog struct {
	mu        sync.Mutex
	byID      map[string]string // dossier id -> receipt_no
	byReceipt map[string]string // receipt_no -> dossier id
	dupes     []string
}

func (l *ackLog) add(d createdDossier) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.byReceipt[d.ReceiptNo]; ok && prev != d.ID {
		l.dupes = append(l.dupes, fmt.Sprintf("receipt %s acknowledged for %s and %s", d.ReceiptNo, prev, d.ID))
	}
	if prev, ok := l.byID[d.ID]; ok && prev != d.ReceiptNo {
		l.dupes = append(l.dupes, fmt.Sprintf("dossier %s acknowledged twice, receipts %s and %s", d.ID, prev, d.ReceiptNo))
	}
	l.byID[d.ID] = d.ReceiptNo
	l.byReceipt[d.ReceiptNo] = d.ID
	return len(l.byID)
}

func (l *ackLog) snapshot() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]string, len(l.byID))
	for k, v := range l.byID {
		m[k] = v
	}
	return m
}

// TestInvariant1AckedCreatesSurviveKill9 checks invariant 1 of DESIGN.md:
// an op acknowledged to a clerk survives kill -9 of its node. Writers create
// dossiers concurrently; the node is SIGKILLed mid-stream; after a restart
// every create that got a 201 is there with its receipt number, and no
// receipt number or dossier ID was ever issued twice. Three rounds of kill
// and restart run on one data dir.
func TestInvariant1AckedCreatesSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test runs the binary; skipped with -short")
	}
	const (
		rounds  = 3
		writers = 16
	)
	seed := rand.Uint64()
	if s := os.Getenv("WARDSYNC_KILL9_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("WARDSYNC_KILL9_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (rerun with WARDSYNC_KILL9_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c39))

	dataDir := filepath.Join(t.TempDir(), "node")
	token := initNode(t, dataDir)
	acks := &ackLog{byID: map[string]string{}, byReceipt: map[string]string{}}

	node := startNode(t, runWardCmd(t, dataDir))
	for round := 1; round <= rounds; round++ {
		target := 100 + rng.IntN(301) // acknowledged creates before the kill
		before := len(acks.snapshot())
		client := newAPI(node.url, token)

		var (
			stop      = make(chan struct{})
			reached   = make(chan struct{})
			reachOnce sync.Once
			roundAcks atomic.Int64
			killed    atomic.Bool
			failures  atomic.Int64 // transport errors, expected once killed
			wg        sync.WaitGroup
			badMu     sync.Mutex
			bad       []string // HTTP answers other than 201: never expected
		)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					body := map[string]any{
						"procedure": "birth-registration",
						"applicant": map[string]string{
							"name":      fmt.Sprintf("Nguyễn Văn Thử %d-%d-%d", round, w, i),
							"id_number": fmt.Sprintf("%012d", (uint64(round)*1_000_000_000+uint64(w)*10_000_000+uint64(i))%1_000_000_000_000),
						},
					}
					code, data, err := client.do("POST", "/v1/dossiers", body)
					if err != nil {
						// The node is gone (or going): this create was never
						// acknowledged, so it may or may not have landed.
						if !killed.Load() {
							t.Errorf("round %d: create failed before the kill: %v", round, err)
						}
						failures.Add(1)
						time.Sleep(time.Millisecond)
						continue
					}
					if code != http.StatusCreated {
						badMu.Lock()
						bad = append(bad, fmt.Sprintf("HTTP %d: %.300s", code, data))
						badMu.Unlock()
						continue
					}
					var d createdDossier
					if err := json.Unmarshal(data, &d); err != nil || d.ID == "" || d.ReceiptNo == "" {
						t.Errorf("round %d: 201 with a body lacking id or receipt_no: %.300s", round, data)
						continue
					}
					acks.add(d)
					if roundAcks.Add(1) >= int64(target) {
						reachOnce.Do(func() { close(reached) })
					}
				}
			}()
		}

		select {
		case <-reached:
		case <-node.done:
			close(stop)
			wg.Wait()
			t.Fatalf("round %d: node exited during the writes: %v\nstderr:\n%s", round, node.err, node.stderr.String())
		case <-time.After(30 * time.Second):
			close(stop)
			wg.Wait()
			t.Fatalf("round %d: only %d of %d creates acknowledged in 30s", round, roundAcks.Load(), target)
		}
		// Kill while the writers are still sending.
		killed.Store(true)
		node.kill9()
		close(stop)
		wg.Wait()
		if len(bad) > 0 {
			t.Fatalf("round %d: %d creates got an answer other than 201, first: %s", round, len(bad), bad[0])
		}

		acked := acks.snapshot()
		node = startNode(t, runWardCmd(t, dataDir))
		listed := verifyAcked(t, newAPI(node.url, token), acked)
		t.Logf("round %d: killed after %d acknowledged creates (target %d, %d failed in flight or after the kill); "+
			"total acknowledged %d, listed after restart %d (%d unacknowledged creates landed)",
			round, len(acked)-before, target, failures.Load(), len(acked), listed, listed-len(acked))
		if t.Failed() {
			break
		}
	}
	acks.mu.Lock()
	dupes := acks.dupes
	acks.mu.Unlock()
	for _, d := range dupes {
		t.Error(d)
	}
	node.stop()
}

// verifyAcked checks that every acknowledged create is on the node with its
// receipt number, and that the node's full list has no duplicate ID or
// receipt number. It returns how many dossiers the node lists.
func verifyAcked(t *testing.T, a *api, acked map[string]string) int {
	t.Helper()
	// Each acknowledged dossier, fetched by ID (a few workers in parallel).
	ids := make(chan string)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []string
	report := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		errs = append(errs, fmt.Sprintf(format, args...))
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				code, data, err := a.do("GET", "/v1/dossiers/"+url.PathEscape(id), nil)
				if err != nil || code != http.StatusOK {
					report("acknowledged dossier %s (receipt %s) lost after kill -9: HTTP %d %v %.200s", id, acked[id], code, err, data)
					continue
				}
				var d createdDossier
				if err := json.Unmarshal(data, &d); err != nil {
					report("GET %s: %v", id, err)
					continue
				}
				if d.ID != id || d.ReceiptNo != acked[id] {
					report("dossier %s: after restart id %s receipt %s, acknowledged receipt %s", id, d.ID, d.ReceiptNo, acked[id])
				}
			}
		}()
	}
	for id := range acked {
		ids <- id
	}
	close(ids)
	wg.Wait()
	for i, e := range errs {
		if i == 10 {
			t.Errorf("... and %d more", len(errs)-10)
			break
		}
		t.Error(e)
	}

	// The whole list, page by page.
	seenID := map[string]bool{}
	seenReceipt := map[string]string{}
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatal("list pagination does not end")
		}
		q := url.Values{"limit": {"500"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		code, data, err := a.do("GET", "/v1/dossiers?"+q.Encode(), nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("list page %d: HTTP %d %v %.300s", page, code, err, data)
		}
		var p struct {
			Items      []createdDossier `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		if err := json.Unmarshal(data, &p); err != nil {
			t.Fatalf("list page %d: %v", page, err)
		}
		for _, d := range p.Items {
			if seenID[d.ID] {
				t.Errorf("dossier %s listed twice", d.ID)
			}
			seenID[d.ID] = true
			if other, ok := seenReceipt[d.ReceiptNo]; ok {
				t.Errorf("receipt %s issued twice: dossiers %s and %s", d.ReceiptNo, other, d.ID)
			}
			seenReceipt[d.ReceiptNo] = d.ID
		}
		if p.NextCursor == nil {
			break
		}
		if *p.NextCursor == "" || *p.NextCursor == cursor {
			t.Fatalf("list page %d: next_cursor %q does not move on", page, *p.NextCursor)
		}
		cursor = *p.NextCursor
	}
	if len(seenID) < len(acked) {
		t.Errorf("node lists %d dossiers, fewer than the %d acknowledged", len(seenID), len(acked))
	}
	missing := 0
	for id := range acked {
		if !seenID[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d acknowledged dossiers are missing from the list", missing)
	}
	return len(seenID)
}

// TestKill9DuringInitLeavesNoHalfNode SIGKILLs `ward init` at random points
// (it takes tens of milliseconds) and checks the data dir is never left
// half made: either it is a node that runs, or `ward run` refuses it and a
// second `ward init` completes it.
func TestKill9DuringInitLeavesNoHalfNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	bin := wardsyncBin(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var outcomes []string
	for i := range 6 {
		dataDir := filepath.Join(t.TempDir(), "node")
		cmd := exec.Command(bin, "ward", "init", "--data", dataDir, "--ward", testWard(t), "--node", "k9", "--json")
		var stdout, stderr lockedBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		delay := time.Duration(rng.IntN(80_000)) * time.Microsecond
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		waitErr := cmd.Wait()
		// Once the token is printed the node must be complete.
		printed := strings.Contains(stdout.String(), "admin_token")
		t.Logf("attempt %d: SIGKILL after %v: %v, token printed: %v", i, delay, waitErr, printed)

		// Probe: does the dir run as a node?
		run := runWardCmd(t, dataDir)
		var runErr lockedBuffer
		runOut := &readyWriter{ready: make(chan string, 1)}
		run.Stdout, run.Stderr = runOut, &runErr
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- run.Wait() }()
		select {
		case <-runOut.ready:
			_ = run.Process.Signal(syscall.SIGTERM)
			if err := <-exited; err != nil {
				t.Errorf("attempt %d: node after init did not stop cleanly: %v\n%s", i, err, runErr.String())
			}
			if printed {
				outcomes = append(outcomes, "complete")
			} else {
				// Complete, but the token never reached the user.
				outcomes = append(outcomes, "complete-unprinted")
			}
			continue
		case err := <-exited:
			if printed {
				t.Errorf("attempt %d: init printed a token but `ward run` fails: %v\n%s", i, err, runErr.String())
				continue
			}
			if !strings.Contains(runErr.String(), "init") {
				t.Errorf("attempt %d: `ward run` on a half-initialized dir fails without saying to run init:\n%s", i, runErr.String())
			}
		case <-time.After(30 * time.Second):
			_ = run.Process.Kill()
			<-exited
			t.Fatalf("attempt %d: `ward run` neither listened nor exited in 30s", i)
		}
		// Not a node: init again must complete it.
		token := initNode(t, dataDir)
		p := startNode(t, runWardCmd(t, dataDir))
		if code, _, err := newAPI(p.url, token).do("GET", "/v1/me", nil); err != nil || code != http.StatusOK {
			t.Errorf("attempt %d: re-initialized node rejects its admin token: HTTP %d %v", i, code, err)
		}
		p.stop()
		outcomes = append(outcomes, "reinit")
	}
	t.Logf("outcomes: %v", outcomes)
}

// TestEmptyLogFilesLeftByKill9DoNotBlockStart: badger creates a log file and
// then sizes it, and deletes one by truncating it to zero and then
// unlinking it; a kill -9 between the two steps leaves an empty *.mem or
// *.vlog. The node must still start (badger alone refuses such a dir once).
func TestEmptyLogFilesLeftByKill9DoNotBlockStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	dataDir := filepath.Join(t.TempDir(), "node")
	token := initNode(t, dataDir)
	for _, name := range []string{"00002.mem", "000002.vlog"} {
		if err := os.WriteFile(filepath.Join(dataDir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := startNode(t, runWardCmd(t, dataDir))
	if code, body, err := newAPI(p.url, token).do("GET", "/v1/me", nil); err != nil || code != http.StatusOK {
		t.Errorf("node with empty log files: HTTP %d %v %.200s", code, err, body)
	}
	p.stop()
}
