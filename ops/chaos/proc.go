package chaos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one wardsync process of the run: a city member, a ward office's
// node or the backup office's node. Its ports are fixed for the whole run
// (so a restarted process is found where it was); its stdout and stderr
// are appended to logs/NAME.log across restarts.
type proc struct {
	name string
	log  string // its log file
	url  string // its API base, fixed

	mu       sync.Mutex
	args     []string // the arguments of its next start
	cmd      *exec.Cmd
	done     chan struct{} // closed once the current process has exited and been reaped
	err      error         // Wait's result, set before done closes
	exitedAt time.Time     // when Wait returned, set before done closes
	paused   bool          // SIGSTOPped by a fault
	expected bool          // the driver ended the current process (or means to)
	hold     int           // faults keeping it down or stopped: the supervisor leaves it alone
	retired  bool          // removed from the city for good (a replaced member)
	starts   int
}

// lineWatcher passes a child's output on to w and reports its first
// "listening on URL" line.
type lineWatcher struct {
	w       io.Writer
	mu      sync.Mutex
	partial []byte
	once    sync.Once
	ready   chan string
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		if u, ok := strings.CutPrefix(line, "listening on "); ok && strings.HasPrefix(u, "http") {
			l.once.Do(func() { l.ready <- u })
		}
	}
	if len(l.partial) > 4096 {
		l.partial = l.partial[len(l.partial)-4096:]
	}
	return n, err
}

// start runs the process with its current args and waits (up to wait) for
// its listening line. It fails if the process is running already.
func (p *proc) start(ctx context.Context, bin string, wait time.Duration) error {
	p.mu.Lock()
	if p.runningLocked() {
		p.mu.Unlock()
		return fmt.Errorf("%s is running already", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(p.args, " "))
	lw := &lineWatcher{w: f, ready: make(chan string, 1)}
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout, cmd.Stderr = lw, lw
	// Its own process group: a Ctrl-C of the driver does not reach it
	// before the driver has stopped it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	done := make(chan struct{})
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done, p.err, p.paused, p.expected = cmd, done, nil, false, false
	p.starts++
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err, p.exitedAt = err, time.Now()
		p.mu.Unlock()
		close(done)
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-lw.ready:
		return nil
	case <-done:
		return fmt.Errorf("%s exited before it listened (%v); see %s%s", p.name, p.exitErr(), p.log, tail(p.log, 12))
	case <-timer.C:
		p.kill()
		return fmt.Errorf("%s did not print its listening line within %s; see %s%s", p.name, wait, p.log, tail(p.log, 12))
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
}

func (p *proc) runningLocked() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// running reports whether the process is up (paused or not).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// signal sends sig to the running process.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return fmt.Errorf("%s is not running", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// kill9 SIGKILLs the process and waits until it is reaped.
func (p *proc) kill9() error {
	p.mu.Lock()
	if !p.runningLocked() {
		p.mu.Unlock()
		return fmt.Errorf("%s is not running", p.name)
	}
	p.expected = true
	err := p.cmd.Process.Signal(syscall.SIGKILL)
	done := p.done
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("SIGKILL %s: %w", p.name, err)
	}
	// A process in uninterruptible sleep (an fsync on a slow disk) dies
	// when the call returns.
	select {
	case <-done:
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("%s still running a minute after SIGKILL", p.name)
	}
}

// kill is kill9 for cleanup: it never fails.
func (p *proc) kill() { _ = p.kill9() }

// stop asks the process to shut down (SIGTERM, after a SIGCONT in case it
// is paused) and kills it if it has not within grace.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	if !p.runningLocked() {
		p.mu.Unlock()
		return
	}
	p.expected = true
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	p.paused = false
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(grace):
		p.kill()
	}
}

// pause SIGSTOPs the process; resume SIGCONTs it.
func (p *proc) pause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.paused = true
	return nil
}

func (p *proc) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() && p.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	p.paused = false
}

// tail returns the last n lines of the file at path, indented, after a
// newline ("" if it cannot be read).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "\n    " + strings.Join(lines, "\n    ")
}

// ports hands out loopback ports below the kernel's ephemeral range
// (32768 and up on Linux), so a port the run fixed for a process is never
// taken by some client's outgoing socket while the process is down.
type ports struct {
	mu       sync.Mutex
	used     map[int]bool
	rng      *rand.Rand
	lo, span int
}

// The ports runs draw from: [portsLow, portsLow+portsSpan), below the
// kernel's ephemeral range.
const (
	portsLow  = 20000
	portsSpan = 12000
)

// newPorts draws from slot of slots equal shares of the range, so runs
// going on at the same time never hand out the same port.
func newPorts(slot, slots int) *ports {
	slots = max(slots, 1)
	span := portsSpan / slots
	return &ports{used: map[int]bool{}, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), lo: portsLow + (slot%slots)*span, span: span}
}

// next returns a port free for both TCP and UDP on 127.0.0.1 right now.
func (ps *ports) next() (int, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for range 2000 {
		port := ps.lo + ps.rng.IntN(ps.span)
		if ps.used[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		ps.used[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("chaos: no free loopback port in %d-%d", ps.lo, ps.lo+ps.span-1)
}

func (ps *ports) addr() (string, error) {
	port, err := ps.next()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// logPath is the log file of a process named name in dir.
func logPath(dir, name string) string { return filepath.Join(dir, name+".log") }
