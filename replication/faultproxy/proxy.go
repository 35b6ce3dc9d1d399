package faultproxy

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// MaxDatagram is the largest datagram forwarded; a UDP payload never
	// exceeds it.
	MaxDatagram = 64 << 10

	// DefaultMaxInFlight caps the datagrams held inside the proxy, delayed or
	// held back for reordering.
	DefaultMaxInFlight = 10_000

	// DefaultIdleTimeout is how long a client's upstream socket lives without
	// traffic in either direction.
	DefaultIdleTimeout = 2 * time.Minute

	// DefaultReorderDelay is how long a held-back datagram waits for the next
	// one when Faults.ReorderDelay is zero.
	DefaultReorderDelay = 10 * time.Millisecond

	socketBuffer = 4 << 20
)

// Faults says what the proxy does to datagrams. The zero value forwards
// everything unchanged. Probabilities are clamped to [0, 1] and negative
// durations to 0.
type Faults struct {
	Drop      float64       // probability a datagram is dropped (each direction)
	Duplicate float64       // probability a datagram is sent twice
	Reorder   float64       // probability a datagram is held back and sent after the next one (or after ReorderDelay)
	Delay     time.Duration // fixed extra latency
	Jitter    time.Duration // uniform random extra latency in [0, Jitter)
	Cut       bool          // drop everything both ways (link down)

	// ReorderDelay is the longest a held-back datagram waits for the next
	// datagram of its flow; then it is sent anyway. Zero means
	// DefaultReorderDelay.
	ReorderDelay time.Duration
}

func (f Faults) normalized() Faults {
	clamp := func(p float64) float64 {
		if math.IsNaN(p) || p < 0 {
			return 0
		}
		return min(p, 1)
	}
	f.Drop = clamp(f.Drop)
	f.Duplicate = clamp(f.Duplicate)
	f.Reorder = clamp(f.Reorder)
	f.Delay = max(f.Delay, 0)
	f.Jitter = max(f.Jitter, 0)
	f.ReorderDelay = max(f.ReorderDelay, 0)
	return f
}

// Direction is the way a datagram travels through the proxy.
type Direction int

const (
	ToUpstream Direction = iota // client (ward) → upstream (city member)
	ToClient                    // upstream → client
)

func (d Direction) String() string {
	if d == ToUpstream {
		return "to-upstream"
	}
	return "to-client"
}

// DirStats counts datagrams in one direction.
type DirStats struct {
	Received   uint64 // datagrams read by the proxy
	Forwarded  uint64 // datagrams written, duplicates included
	Dropped    uint64 // lost to Faults.Drop
	CutDropped uint64 // lost because the link was cut (on arrival or while delayed)
	Duplicated uint64 // datagrams sent twice
	Reordered  uint64 // datagrams held back for reordering
	Overflow   uint64 // dropped because too many datagrams were in flight
	Errors     uint64 // failed writes and sessions that could not be opened
}

// Stats is a snapshot of the proxy's counters.
type Stats struct {
	ToUpstream DirStats
	ToClient   DirStats
	Sessions   int // clients with an upstream socket
	InFlight   int // datagrams delayed or held back right now
}

type dirCounters struct {
	received, forwarded, dropped, cut, duplicated, reordered, overflow, errors atomic.Uint64
}

func (c *dirCounters) snapshot() DirStats {
	return DirStats{
		Received:   c.received.Load(),
		Forwarded:  c.forwarded.Load(),
		Dropped:    c.dropped.Load(),
		CutDropped: c.cut.Load(),
		Duplicated: c.duplicated.Load(),
		Reordered:  c.reordered.Load(),
		Overflow:   c.overflow.Load(),
		Errors:     c.errors.Load(),
	}
}

// Proxy forwards UDP datagrams between clients and one upstream address, with
// faults. Its methods are safe for concurrent use.
type Proxy struct {
	log      *slog.Logger
	seed     int64
	conn     *net.UDPConn // the socket clients send to
	upstream *net.UDPAddr

	// Tunables, fixed before Run (tests in this package change them).
	maxInFlight int64
	idleTimeout time.Duration

	setMu  sync.Mutex // serializes read-modify-write of faults
	faults atomic.Pointer[Faults]

	mu       sync.Mutex
	sessions map[netip.AddrPort]*session
	nextFlow uint64 // session counter, seeds the flows' generators

	sched    sched
	inFlight atomic.Int64
	stats    [2]dirCounters

	running   atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New listens on listen (e.g. "127.0.0.1:0") and will forward to upstream
// once [Proxy.Run] is called. seed seeds the random faults; 0 picks a random
// seed. The seed is logged, and returned by [Proxy.Seed]. log may be nil.
func New(listen, upstream string, seed int64, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	up, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream %q: %w", upstream, err)
	}
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen %q: %w", listen, err)
	}
	conn, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	_ = conn.SetReadBuffer(socketBuffer) // best effort; the kernel may cap it
	_ = conn.SetWriteBuffer(socketBuffer)
	if seed == 0 {
		seed = rand.Int64()
	}
	p := &Proxy{
		log:         log.With("proxy", conn.LocalAddr().String()),
		seed:        seed,
		conn:        conn,
		upstream:    up,
		maxInFlight: DefaultMaxInFlight,
		idleTimeout: DefaultIdleTimeout,
		sessions:    make(map[netip.AddrPort]*session),
		done:        make(chan struct{}),
	}
	p.faults.Store(&Faults{})
	p.sched.wake = make(chan struct{}, 1)
	p.log.Info("faultproxy listening", "upstream", up.String(), "seed", seed)
	return p, nil
}

// Addr is the address clients dial instead of the upstream.
func (p *Proxy) Addr() string { return p.conn.LocalAddr().String() }

// Upstream is the address datagrams are forwarded to.
func (p *Proxy) Upstream() string { return p.upstream.String() }

// Seed is the seed of the random faults, to replay a run.
func (p *Proxy) Seed() int64 { return p.seed }

// Set replaces the faults. It takes effect for the next datagram.
func (p *Proxy) Set(f Faults) {
	f = f.normalized()
	p.setMu.Lock()
	p.faults.Store(&f)
	p.setMu.Unlock()
	p.log.Info("faultproxy faults set", "drop", f.Drop, "duplicate", f.Duplicate,
		"reorder", f.Reorder, "delay", f.Delay, "jitter", f.Jitter, "cut", f.Cut)
}

// Faults returns the faults in effect.
func (p *Proxy) Faults() Faults { return *p.faults.Load() }

// Cut takes the link down (true) or up (false), leaving the other faults as
// they are.
func (p *Proxy) Cut(down bool) {
	p.setMu.Lock()
	f := *p.faults.Load()
	changed := f.Cut != down
	f.Cut = down
	p.faults.Store(&f)
	p.setMu.Unlock()
	if changed {
		p.log.Debug("faultproxy link", "cut", down)
	}
}

// Flap toggles Cut on a schedule until ctx ends or the proxy is closed: down
// for `down`, then up for `up`, repeating. It blocks; run it in a goroutine.
// The link is left up when Flap returns.
func (p *Proxy) Flap(ctx context.Context, up, down time.Duration) {
	defer p.Cut(false)
	for cut := true; ; cut = !cut {
		p.Cut(cut)
		d := up
		if cut {
			d = down
		}
		t := time.NewTimer(max(d, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-p.done:
			t.Stop()
			return
		}
	}
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	n := len(p.sessions)
	p.mu.Unlock()
	return Stats{
		ToUpstream: p.stats[ToUpstream].snapshot(),
		ToClient:   p.stats[ToClient].snapshot(),
		Sessions:   n,
		InFlight:   int(p.inFlight.Load()),
	}
}

// Run forwards datagrams until ctx ends or [Proxy.Close] is called, then
// closes the proxy and returns once its goroutines have stopped. It returns
// nil on such a shutdown. Run may be called only once.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("faultproxy: Run called twice")
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	stop := context.AfterFunc(ctx, func() { _ = p.Close() })
	defer stop()

	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.runScheduler() }()
	go func() { defer p.wg.Done(); p.runJanitor() }()

	err := p.readClients()
	_ = p.Close()
	p.wg.Wait()
	p.log.Info("faultproxy stopped", "seed", p.seed)
	return err
}

// Close stops the proxy and closes its sockets. It is idempotent.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.done)
		err = p.conn.Close()
		p.mu.Lock()
		for k, s := range p.sessions {
			s.close()
			delete(p.sessions, k)
		}
		p.mu.Unlock()
	})
	return err
}

func (p *Proxy) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// readClients reads datagrams from clients until the listening socket closes.
func (p *Proxy) readClients() error {
	buf := make([]byte, MaxDatagram)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.closed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			p.log.Warn("faultproxy read from clients", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		st := &p.stats[ToUpstream]
		st.received.Add(1)
		if p.faults.Load().Cut {
			// The link is down: no NAT mapping is made either.
			st.cut.Add(1)
			continue
		}
		s, err := p.session(from)
		if err != nil {
			st.errors.Add(1)
			p.log.Warn("faultproxy upstream socket", "client", from.String(), "err", err)
			continue
		}
		s.touch()
		s.up.handle(buf[:n])
	}
}

// session returns the client's session, opening its upstream socket the
// first time. Only readClients calls it.
func (p *Proxy) session(client netip.AddrPort) (*session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.sessions[client]; ok {
		return s, nil
	}
	if p.closed() {
		return nil, net.ErrClosed
	}
	conn, err := net.DialUDP("udp", nil, p.upstream)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(socketBuffer)
	_ = conn.SetWriteBuffer(socketBuffer)
	id := p.nextFlow
	p.nextFlow++
	s := &session{p: p, client: client, conn: conn, done: make(chan struct{})}
	s.touch()
	s.up = newFlow(s, ToUpstream, p.flowRand(id, ToUpstream))
	s.down = newFlow(s, ToClient, p.flowRand(id, ToClient))
	p.sessions[client] = s
	p.wg.Add(1)
	go func() { defer p.wg.Done(); s.readUpstream() }()
	p.log.Debug("faultproxy session opened", "client", client.String(), "via", conn.LocalAddr().String())
	return s, nil
}

// flowRand is the generator of one flow: a function of the seed, the
// session's number and the direction only.
func (p *Proxy) flowRand(session uint64, dir Direction) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(p.seed), session<<1|uint64(dir)))
}

// runJanitor forgets clients that have been idle for idleTimeout.
func (p *Proxy) runJanitor() {
	every := min(max(p.idleTimeout/4, time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			p.mu.Lock()
			for k, s := range p.sessions {
				if now.Sub(time.Unix(0, s.last.Load())) > p.idleTimeout {
					s.close()
					delete(p.sessions, k)
					p.log.Debug("faultproxy session idle, closed", "client", k.String())
				}
			}
			p.mu.Unlock()
		}
	}
}

// session is one client's NAT mapping: its own upstream socket.
type session struct {
	p      *Proxy
	client netip.AddrPort
	conn   *net.UDPConn // connected to the upstream
	last   atomic.Int64 // unix nanos of the last datagram either way
	up     *flow
	down   *flow

	closeOnce sync.Once
	done      chan struct{}
}

func (s *session) touch() { s.last.Store(time.Now().UnixNano()) }

func (s *session) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.conn.Close()
	})
}

func (s *session) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// readUpstream reads the upstream's replies to this client until the
// session closes.
func (s *session) readUpstream() {
	buf := make([]byte, MaxDatagram)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				// ICMP port unreachable: the upstream is not listening
				// (yet). Keep the mapping, as a NAT would.
				continue
			}
			s.p.log.Warn("faultproxy read from upstream", "client", s.client.String(), "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		st := &s.p.stats[ToClient]
		st.received.Add(1)
		if s.p.faults.Load().Cut {
			st.cut.Add(1)
			continue
		}
		s.touch()
		s.down.handle(buf[:n])
	}
}

// flow is one session in one direction.
type flow struct {
	s   *session
	dir Direction
	rng *rand.Rand // used only by the flow's reading goroutine

	mu        sync.Mutex
	held      *packet // held back for reordering
	heldTimer *time.Timer
}

func newFlow(s *session, dir Direction, rng *rand.Rand) *flow {
	return &flow{s: s, dir: dir, rng: rng}
}

func (f *flow) stats() *dirCounters { return &f.s.p.stats[f.dir] }

// handle applies the faults to one datagram read by the flow's goroutine.
// b is the goroutine's read buffer.
func (f *flow) handle(b []byte) {
	p, st := f.s.p, f.stats()
	fl := p.faults.Load()
	if fl.Drop > 0 && f.rng.Float64() < fl.Drop {
		st.dropped.Add(1)
		return
	}
	copies := 1
	if fl.Duplicate > 0 && f.rng.Float64() < fl.Duplicate {
		copies = 2
		st.duplicated.Add(1)
	}
	delay := fl.Delay
	if fl.Jitter > 0 {
		delay += time.Duration(f.rng.Int64N(int64(fl.Jitter)))
	}
	reorder := fl.Reorder > 0 && f.rng.Float64() < fl.Reorder

	pk := &packet{
		at:     time.Now().Add(delay),
		data:   append([]byte(nil), b...),
		copies: copies,
		fl:     f,
	}

	f.mu.Lock()
	if reorder && f.held == nil {
		if !p.reserve() {
			f.mu.Unlock()
			st.overflow.Add(1)
			return
		}
		st.reordered.Add(1)
		f.held = pk
		wait := fl.ReorderDelay
		if wait == 0 {
			wait = DefaultReorderDelay
		}
		f.heldTimer = time.AfterFunc(wait, func() { f.releaseHeld(pk) })
		f.mu.Unlock()
		return
	}
	held := f.held
	if held != nil {
		f.held = nil
		f.heldTimer.Stop()
		f.heldTimer = nil
	}
	f.mu.Unlock()

	p.emit(pk)
	if held != nil {
		// Sent right after pk: same time, later sequence number.
		p.inFlight.Add(-1)
		if held.at.Before(pk.at) {
			held.at = pk.at
		}
		p.emit(held)
	}
}

// releaseHeld sends a held-back datagram no next datagram came for.
func (f *flow) releaseHeld(pk *packet) {
	f.mu.Lock()
	if f.held != pk {
		f.mu.Unlock()
		return
	}
	f.held = nil
	f.heldTimer = nil
	f.mu.Unlock()
	p := f.s.p
	p.inFlight.Add(-1)
	if p.closed() {
		return
	}
	if now := time.Now(); pk.at.Before(now) {
		pk.at = now
	}
	p.emit(pk)
}

// write sends one datagram on the flow's way.
func (f *flow) write(b []byte) error {
	if f.dir == ToUpstream {
		_, err := f.s.conn.Write(b)
		return err
	}
	_, err := f.s.p.conn.WriteToUDPAddrPort(b, f.s.client)
	return err
}

// packet is a datagram on its way.
type packet struct {
	at     time.Time // when to send it
	seq    uint64    // tie-break: earlier scheduled, earlier sent
	data   []byte
	copies int
	fl     *flow
}

// reserve counts one more datagram in flight, unless the cap is reached.
func (p *Proxy) reserve() bool {
	if p.inFlight.Add(1) > p.maxInFlight {
		p.inFlight.Add(-1)
		return false
	}
	return true
}

// emit sends pk now if it is due, or schedules it.
func (p *Proxy) emit(pk *packet) {
	if !pk.at.After(time.Now()) {
		p.send(pk)
		return
	}
	if !p.reserve() {
		pk.fl.stats().overflow.Add(1)
		return
	}
	p.sched.push(pk)
}

// send writes pk (twice if duplicated), unless the link is cut by now.
func (p *Proxy) send(pk *packet) {
	st := pk.fl.stats()
	if p.faults.Load().Cut {
		st.cut.Add(1)
		return
	}
	if pk.fl.s.isClosed() {
		st.errors.Add(1)
		return
	}
	for range pk.copies {
		if err := pk.fl.write(pk.data); err != nil {
			st.errors.Add(1)
			continue
		}
		st.forwarded.Add(1)
	}
}

// sched is a timer heap of delayed datagrams, served by one goroutine so
// that datagrams due at the same time leave in the order they were
// scheduled.
type sched struct {
	mu   sync.Mutex
	h    packetHeap
	seq  uint64
	wake chan struct{}
}

func (s *sched) push(pk *packet) {
	s.mu.Lock()
	pk.seq = s.seq
	s.seq++
	heap.Push(&s.h, pk)
	first := s.h[0] == pk
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (p *Proxy) runScheduler() {
	s := &p.sched
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*packet
	for {
		s.mu.Lock()
		now := time.Now()
		due = due[:0]
		for len(s.h) > 0 && !s.h[0].at.After(now) {
			due = append(due, heap.Pop(&s.h).(*packet))
		}
		next := time.Duration(-1)
		if len(s.h) > 0 {
			next = s.h[0].at.Sub(now)
		}
		s.mu.Unlock()

		for i, pk := range due {
			p.inFlight.Add(-1)
			p.send(pk)
			due[i] = nil
		}
		if next >= 0 {
			t.Reset(next)
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
		case <-s.wake:
		case <-p.done:
			s.mu.Lock()
			p.inFlight.Add(-int64(len(s.h)))
			s.h = nil
			s.mu.Unlock()
			return
		}
	}
}

type packetHeap []*packet

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(*packet)) }
func (h *packetHeap) Pop() any {
	old := *h
	n := len(old)
	pk := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return pk
}
