package faultproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// testLog writes the proxy's log to the test output when -v is given.
func testLog(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// echoServer echoes every datagram to its sender and remembers the senders.
type echoServer struct {
	conn *net.UDPConn

	mu      sync.Mutex
	n       int
	sources map[netip.AddrPort]int
}

func newEchoServer(t testing.TB) *echoServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	_ = conn.SetWriteBuffer(socketBuffer)
	e := &echoServer{conn: conn, sources: make(map[netip.AddrPort]int)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, MaxDatagram)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.mu.Lock()
			e.n++
			e.sources[from]++
			e.mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return e
}

func (e *echoServer) addr() string { return e.conn.LocalAddr().String() }

func (e *echoServer) received() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

func (e *echoServer) senders() []netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []netip.AddrPort
	for a := range e.sources {
		out = append(out, a)
	}
	return out
}

// startProxy starts a proxy in front of upstream; tweak may change its
// tunables before Run. Cleanup closes it and checks that Run returns.
func startProxy(t testing.TB, upstream string, seed int64, tweak ...func(*Proxy)) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", upstream, seed, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tweak {
		f(p)
	}
	ran := make(chan error, 1)
	go func() { ran <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after Close")
		}
	})
	return p
}

// client is a ward-side UDP socket talking to the proxy.
type client struct {
	t    testing.TB
	conn *net.UDPConn
	got  chan []byte
}

func newClient(t testing.TB, addr string) *client {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	_ = conn.SetWriteBuffer(socketBuffer)
	c := &client{t: t, conn: conn, got: make(chan []byte, 100_000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, MaxDatagram)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			c.got <- append([]byte(nil), buf[:n]...)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return c
}

func seqPayload(i int) []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

func seqOf(b []byte) int { return int(binary.BigEndian.Uint64(b)) }

// sendSeq sends datagrams first..first+n-1 in batches, waiting after each
// batch until the proxy has read it, so that no socket buffer overflows.
func (c *client) sendSeq(p *Proxy, first, n int) {
	c.t.Helper()
	const batch = 50
	base := p.Stats().ToUpstream.Received
	for i := 0; i < n; i++ {
		if _, err := c.conn.Write(seqPayload(first + i)); err != nil {
			c.t.Fatal(err)
		}
		if (i+1)%batch == 0 || i == n-1 {
			want := base + uint64(i+1)
			waitFor(c.t, 5*time.Second, func() bool { return p.Stats().ToUpstream.Received >= want },
				"proxy to read the datagrams sent")
		}
	}
}

// collect returns the datagrams received until n have arrived or wait has
// passed since the last one.
func (c *client) collect(n int, wait time.Duration) [][]byte {
	var out [][]byte
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(out) < n {
		select {
		case b := <-c.got:
			out = append(out, b)
			t.Reset(wait)
		case <-t.C:
			return out
		}
	}
	return out
}

// roundTrip sends one datagram and waits for its echo.
func (c *client) roundTrip(payload []byte, timeout time.Duration) (time.Duration, bool) {
	c.t.Helper()
	start := time.Now()
	if _, err := c.conn.Write(payload); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.After(timeout)
	for {
		select {
		case b := <-c.got:
			if bytes.Equal(b, payload) {
				return time.Since(start), true
			}
		case <-deadline:
			return 0, false
		}
	}
}

func waitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestNoFaultsEchoesEverything(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	c := newClient(t, p.Addr())

	const n = 1000
	c.sendSeq(p, 0, n)
	got := c.collect(n, 2*time.Second)
	if len(got) != n {
		t.Fatalf("got %d echoes, want %d", len(got), n)
	}
	for i, b := range got {
		if seqOf(b) != i {
			t.Fatalf("echo %d is datagram %d: order changed without faults", i, seqOf(b))
		}
	}
	st := p.Stats()
	if st.ToUpstream.Forwarded != n || st.ToClient.Forwarded != n {
		t.Errorf("forwarded up %d down %d, want %d each", st.ToUpstream.Forwarded, st.ToClient.Forwarded, n)
	}
	if st.Sessions != 1 || st.InFlight != 0 {
		t.Errorf("sessions %d in flight %d, want 1 and 0", st.Sessions, st.InFlight)
	}
}

func TestLargeDatagram(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	c := newClient(t, p.Addr())

	big := bytes.Repeat([]byte("wardsync"), 65507/8) // close to the IPv4 UDP maximum of 65,507 bytes
	if _, ok := c.roundTrip(big, 5*time.Second); !ok {
		t.Fatalf("a %d-byte datagram did not come back intact", len(big))
	}
}

func TestDropAll(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	p.Set(Faults{Drop: 1})
	c := newClient(t, p.Addr())

	const n = 200
	c.sendSeq(p, 0, n)
	if got := c.collect(1, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("got %d echoes with Drop 1.0", len(got))
	}
	if e.received() != 0 {
		t.Fatalf("upstream received %d datagrams with Drop 1.0", e.received())
	}
	if st := p.Stats().ToUpstream; st.Dropped != n || st.Forwarded != 0 {
		t.Fatalf("stats %+v, want %d dropped, none forwarded", st, n)
	}
}

// dropRun sends n datagrams through a proxy with Drop 0.3 and the given seed
// and returns its stats once everything has settled.
func dropRun(t *testing.T, seed int64, n int) Stats {
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), seed)
	p.Set(Faults{Drop: 0.3})
	c := newClient(t, p.Addr())
	c.sendSeq(p, 0, n)

	// Everything forwarded up reaches the echo server and comes back to the
	// proxy; everything the proxy forwards down reaches the client.
	waitFor(t, 5*time.Second, func() bool {
		st := p.Stats().ToUpstream
		return int(st.Dropped+st.Forwarded) == n
	}, "proxy to handle every datagram")
	up := int(p.Stats().ToUpstream.Forwarded)
	waitFor(t, 5*time.Second, func() bool { return e.received() == up }, "echo server to get every forwarded datagram")
	waitFor(t, 5*time.Second, func() bool {
		st := p.Stats().ToClient
		return int(st.Dropped+st.Forwarded) == up
	}, "proxy to handle every echo")
	st := p.Stats()
	got := c.collect(int(st.ToClient.Forwarded), 2*time.Second)
	if len(got) != int(st.ToClient.Forwarded) {
		t.Fatalf("client got %d echoes, proxy forwarded %d", len(got), st.ToClient.Forwarded)
	}
	return st
}

func TestDropFractionDeterministic(t *testing.T) {
	t.Parallel()
	const n, seed = 2000, 42
	a := dropRun(t, seed, n)
	for _, d := range []struct {
		name string
		s    DirStats
	}{{"to upstream", a.ToUpstream}, {"to client", a.ToClient}} {
		frac := float64(d.s.Dropped) / float64(d.s.Received)
		t.Logf("%s: dropped %d of %d (%.3f)", d.name, d.s.Dropped, d.s.Received, frac)
		if frac < 0.25 || frac > 0.35 {
			t.Errorf("%s: dropped fraction %.3f, want 0.30 ± 0.05", d.name, frac)
		}
		if d.s.Dropped+d.s.Forwarded != d.s.Received {
			t.Errorf("%s: dropped %d + forwarded %d != received %d", d.name, d.s.Dropped, d.s.Forwarded, d.s.Received)
		}
	}
	if a.ToUpstream.Received != n {
		t.Fatalf("proxy received %d, want %d", a.ToUpstream.Received, n)
	}

	// Same seed, same datagrams: same faults.
	b := dropRun(t, seed, n)
	if a.ToUpstream != b.ToUpstream || a.ToClient != b.ToClient {
		t.Fatalf("same seed gave different faults:\n%+v\n%+v", a, b)
	}
}

func TestDuplicateDoubles(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	p.Set(Faults{Duplicate: 1})
	c := newClient(t, p.Addr())

	const n = 100
	c.sendSeq(p, 0, n)
	waitFor(t, 5*time.Second, func() bool { return e.received() == 2*n }, "upstream to get every datagram twice")
	// Each echo is duplicated again on the way back.
	got := c.collect(4*n, 2*time.Second)
	if len(got) != 4*n {
		t.Fatalf("client got %d datagrams, want %d", len(got), 4*n)
	}
	count := make(map[int]int)
	for _, b := range got {
		count[seqOf(b)]++
	}
	for i := range n {
		if count[i] != 4 {
			t.Fatalf("datagram %d arrived %d times, want 4", i, count[i])
		}
	}
	if st := p.Stats(); st.ToUpstream.Duplicated != n || st.ToClient.Duplicated != 2*n || st.ToUpstream.Forwarded != 2*n {
		t.Fatalf("stats %+v", st)
	}
	if e.received() != 2*n {
		t.Fatalf("upstream got %d, want %d", e.received(), 2*n)
	}
}

func TestReorderKeepsEverything(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 7)
	p.Set(Faults{Reorder: 0.3})
	c := newClient(t, p.Addr())

	const n = 500
	c.sendSeq(p, 0, n)
	got := c.collect(n, 2*time.Second)
	if len(got) != n {
		t.Fatalf("got %d echoes, want %d: reordering lost datagrams", len(got), n)
	}
	seqs := make([]int, n)
	for i, b := range got {
		seqs[i] = seqOf(b)
	}
	if slices.IsSorted(seqs) {
		t.Fatal("order unchanged with Reorder 0.3")
	}
	sorted := slices.Clone(seqs)
	slices.Sort(sorted)
	for i, s := range sorted {
		if s != i {
			t.Fatalf("datagram %d missing or repeated", i)
		}
	}
	if st := p.Stats(); st.ToUpstream.Reordered == 0 || st.ToClient.Reordered == 0 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestReorderHeldDatagramIsReleased(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	// Every datagram is held back; a lone one must still go after ReorderDelay.
	p.Set(Faults{Reorder: 1, ReorderDelay: 20 * time.Millisecond})
	c := newClient(t, p.Addr())
	rtt, ok := c.roundTrip(seqPayload(1), 5*time.Second)
	if !ok {
		t.Fatal("a held-back datagram never left the proxy")
	}
	if rtt < 40*time.Millisecond {
		t.Fatalf("round trip %v, want at least 2×ReorderDelay", rtt)
	}
}

func TestDelay(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	const delay = 50 * time.Millisecond
	p.Set(Faults{Delay: delay})
	c := newClient(t, p.Addr())

	for i := range 3 {
		rtt, ok := c.roundTrip(seqPayload(i), 5*time.Second)
		if !ok {
			t.Fatal("no echo with Delay")
		}
		if rtt < 2*delay { // delayed once each way
			t.Fatalf("round trip %v, want at least %v", rtt, 2*delay)
		}
	}
}

func TestFixedDelayKeepsOrder(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	p.Set(Faults{Delay: 20 * time.Millisecond})
	c := newClient(t, p.Addr())

	const n = 500
	c.sendSeq(p, 0, n)
	got := c.collect(n, 2*time.Second)
	if len(got) != n {
		t.Fatalf("got %d echoes, want %d", len(got), n)
	}
	for i, b := range got {
		if seqOf(b) != i {
			t.Fatalf("echo %d is datagram %d: a fixed delay reordered", i, seqOf(b))
		}
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 3)
	const delay = 10 * time.Millisecond
	p.Set(Faults{Delay: delay, Jitter: 30 * time.Millisecond})
	c := newClient(t, p.Addr())

	const n = 300
	start := time.Now()
	c.sendSeq(p, 0, n)
	got := c.collect(n, 2*time.Second)
	if len(got) != n {
		t.Fatalf("got %d echoes, want %d", len(got), n)
	}
	if since := time.Since(start); since < 2*delay {
		t.Fatalf("all echoes back after %v, want at least %v", since, 2*delay)
	}
}

func TestCutWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	c := newClient(t, p.Addr())

	if _, ok := c.roundTrip(seqPayload(0), 5*time.Second); !ok {
		t.Fatal("no echo before the cut")
	}

	p.Cut(true)
	if !p.Faults().Cut {
		t.Fatal("Faults().Cut false after Cut(true)")
	}
	before := e.received()
	c.sendSeq(p, 100, 20)
	if got := c.collect(1, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("got %d echoes while the link was cut", len(got))
	}
	if e.received() != before {
		t.Fatal("upstream received datagrams while the link was cut")
	}
	if st := p.Stats().ToUpstream; st.CutDropped != 20 {
		t.Fatalf("cut-dropped %d, want 20", st.CutDropped)
	}

	p.Cut(false)
	if _, ok := c.roundTrip(seqPayload(1), 5*time.Second); !ok {
		t.Fatal("traffic did not resume after the link came back")
	}
}

func TestCutDropsDelayedDatagrams(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	p.Set(Faults{Delay: 200 * time.Millisecond})
	c := newClient(t, p.Addr())

	c.sendSeq(p, 0, 10)
	p.Cut(true) // the link goes down while they are in flight
	waitFor(t, 5*time.Second, func() bool { return p.Stats().InFlight == 0 }, "delayed datagrams to leave")
	if e.received() != 0 {
		t.Fatalf("upstream received %d datagrams delayed across a cut", e.received())
	}
	if st := p.Stats().ToUpstream; st.CutDropped != 10 {
		t.Fatalf("cut-dropped %d, want 10", st.CutDropped)
	}
}

func TestClientsGetDistinctUpstreamSources(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	a := newClient(t, p.Addr())
	b := newClient(t, p.Addr())

	for _, c := range []*client{a, b} {
		if _, ok := c.roundTrip([]byte("hello"), 5*time.Second); !ok {
			t.Fatal("no echo")
		}
	}
	srcs := e.senders()
	if len(srcs) != 2 || srcs[0].Port() == srcs[1].Port() {
		t.Fatalf("upstream saw sources %v, want two distinct ports", srcs)
	}
	for _, s := range srcs {
		if s.String() == p.Addr() {
			t.Fatalf("upstream saw the listening address %v as a source", s)
		}
	}
	if st := p.Stats(); st.Sessions != 2 {
		t.Fatalf("sessions %d, want 2", st.Sessions)
	}
}

func TestIdleSessionsAreForgotten(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1, func(p *Proxy) { p.idleTimeout = 100 * time.Millisecond })
	c := newClient(t, p.Addr())

	if _, ok := c.roundTrip([]byte("a"), 5*time.Second); !ok {
		t.Fatal("no echo")
	}
	waitFor(t, 5*time.Second, func() bool { return p.Stats().Sessions == 0 }, "the idle session to close")
	// The client comes back: a new mapping, a new source port.
	if _, ok := c.roundTrip([]byte("b"), 5*time.Second); !ok {
		t.Fatal("no echo after the session was forgotten")
	}
	if n := len(e.senders()); n != 2 {
		t.Fatalf("upstream saw %d sources, want 2 (a new mapping after idling)", n)
	}
}

func TestInFlightCap(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1, func(p *Proxy) { p.maxInFlight = 10 })
	p.Set(Faults{Delay: 300 * time.Millisecond})
	c := newClient(t, p.Addr())

	c.sendSeq(p, 0, 50)
	waitFor(t, 5*time.Second, func() bool { return p.Stats().ToUpstream.Overflow == 40 }, "40 datagrams over the cap")
	if st := p.Stats(); st.ToUpstream.Overflow != 40 || st.InFlight != 10 {
		t.Fatalf("overflow %d in flight %d, want 40 and 10", st.ToUpstream.Overflow, st.InFlight)
	}
	waitFor(t, 5*time.Second, func() bool { return e.received() == 10 }, "the 10 held datagrams to arrive")
}

func TestCloseIsIdempotentAndRunReturns(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p, err := New("127.0.0.1:0", e.addr(), 1, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- p.Run(context.Background()) }()
	c := newClient(t, p.Addr())
	p.Set(Faults{Delay: time.Hour}) // leave a datagram in flight
	c.sendSeq(p, 0, 1)

	for range 3 {
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := p.Run(context.Background()); err == nil {
		t.Fatal("a second Run succeeded")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p, err := New("127.0.0.1:0", e.addr(), 1, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	c := newClient(t, p.Addr())
	c.sendSeq(p, 0, 1)
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close after Run: %v", err)
	}
}

func TestCloseBeforeRun(t *testing.T) {
	t.Parallel()
	p, err := New("127.0.0.1:0", "127.0.0.1:9", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	_ = p.Close()
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run after Close blocked")
	}
}

func TestFlap(t *testing.T) {
	t.Parallel()
	e := newEchoServer(t)
	p := startProxy(t, e.addr(), 1)
	p.Set(Faults{Drop: 0.1})
	ctx, cancel := context.WithCancel(context.Background())
	flapped := make(chan struct{})
	go func() { defer close(flapped); p.Flap(ctx, 20*time.Millisecond, 20*time.Millisecond) }()

	var sawUp, sawDown bool
	deadline := time.Now().Add(5 * time.Second)
	for !(sawUp && sawDown) && time.Now().Before(deadline) {
		if p.Faults().Cut {
			sawDown = true
		} else {
			sawUp = true
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-flapped
	if !sawUp || !sawDown {
		t.Fatalf("Flap: saw up %v, down %v", sawUp, sawDown)
	}
	if f := p.Faults(); f.Cut || f.Drop != 0.1 {
		t.Fatalf("after Flap faults are %+v, want the link up and Drop kept", f)
	}
}

func TestSetNormalizes(t *testing.T) {
	t.Parallel()
	p, err := New("127.0.0.1:0", "127.0.0.1:9", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Seed() == 0 {
		t.Fatal("seed 0 was not replaced by a random seed")
	}
	p.Set(Faults{Drop: 2, Duplicate: -1, Reorder: 0.5, Delay: -time.Second, Jitter: time.Millisecond})
	want := Faults{Drop: 1, Reorder: 0.5, Jitter: time.Millisecond}
	if got := p.Faults(); got != want {
		t.Fatalf("Faults() = %+v, want %+v", got, want)
	}
}
