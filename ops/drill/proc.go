package drill

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one wardsync process the drill started: a city member, the
// ward office's node or the backup office's node. Its stdout and stderr
// are appended to logs/NAME.log in the work dir (across restarts).
type proc struct {
	name string
	args []string
	log  string // path of its log file
	url  string // its API address, from its "listening on URL" line
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and been reaped
	err  error         // Wait's result, set before done closes
}

// lineWatcher passes a child's output on to w and reports the URL of its
// first "listening on URL" line.
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

// startProc runs bin with args and waits (up to wait) for its listening
// line.
func startProc(ctx context.Context, log *slog.Logger, bin, logDir, name string, wait time.Duration, args ...string) (*proc, error) {
	p := &proc{name: name, args: args, log: filepath.Join(logDir, name+".log")}
	return p, p.start(ctx, log, bin, wait)
}

func (p *proc) start(ctx context.Context, log *slog.Logger, bin string, wait time.Duration) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(p.args, " "))
	lw := &lineWatcher{w: f, ready: make(chan string, 1)}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = lw, lw
	p.done = make(chan struct{})
	p.url = ""
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	log.Debug("started", "proc", p.name, "pid", p.cmd.Process.Pid, "args", p.args)
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case p.url = <-lw.ready:
		log.Debug("listening", "proc", p.name, "url", p.url)
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited before it listened (%v); see %s%s", p.name, p.err, p.log, tail(p.log, 15))
	case <-timer.C:
		p.kill()
		return fmt.Errorf("%s did not print its listening line within %s; see %s%s", p.name, wait, p.log, tail(p.log, 15))
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
}

// running reports whether the process is still up.
func (p *proc) running() bool {
	if p == nil || p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 SIGKILLs the process (no shutdown at all) and waits until it is
// reaped.
func (p *proc) kill9() error {
	if !p.running() {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("SIGKILL %s: %w", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s still running 15s after SIGKILL", p.name)
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		return fmt.Errorf("%s exited before the SIGKILL (%v)", p.name, p.err)
	}
	return nil
}

// kill is kill9 for cleanup: it never fails.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stop asks the process to shut down (SIGTERM) and kills it if it has
// not within grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
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

// freeUDP returns a loopback UDP address free right now (for a city
// member's QUIC address, which the bootstrap list must name in advance).
func freeUDP() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}
