package chaos

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The member mesh: the city members' own traffic (Raft, forwarding,
// blob repair) goes through one meshProxy in front of each member. A
// member advertises its proxy's address (city run --advertise), so every
// other member reaches it through the proxy. The proxy knows the members'
// own QUIC addresses, so it can tell which member a datagram comes from
// and drop it by directed pair: that is what partitions a minority, a
// majority or makes a one-way cut. (replication/faultproxy cuts a link as
// a whole, both ways, for every client at once.)

// mesh is the set of directed member pairs that are cut, shared by every
// meshProxy of the run.
type mesh struct {
	mu      sync.RWMutex
	ids     map[netip.AddrPort]string // a member's own QUIC address → its ID
	blocked map[[2]string]int         // (from, to) → how many faults cut it
	dropped atomic.Uint64
}

func newMesh() *mesh {
	return &mesh{ids: map[netip.AddrPort]string{}, blocked: map[[2]string]int{}}
}

// register names the member whose QUIC socket is at addr.
func (m *mesh) register(id, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.ids[ap] = id
	m.mu.Unlock()
	return nil
}

// cut drops datagrams from → to (one way), until uncut.
func (m *mesh) cut(from, to string) {
	m.mu.Lock()
	m.blocked[[2]string{from, to}]++
	m.mu.Unlock()
}

func (m *mesh) uncut(from, to string) {
	m.mu.Lock()
	k := [2]string{from, to}
	if m.blocked[k] > 1 {
		m.blocked[k]--
	} else {
		delete(m.blocked, k)
	}
	m.mu.Unlock()
}

// cutBoth cuts a and b from each other both ways; uncutBoth heals it.
func (m *mesh) cutBoth(a, b string)   { m.cut(a, b); m.cut(b, a) }
func (m *mesh) uncutBoth(a, b string) { m.uncut(a, b); m.uncut(b, a) }

// healAll removes every cut.
func (m *mesh) healAll() {
	m.mu.Lock()
	clear(m.blocked)
	m.mu.Unlock()
}

func (m *mesh) cuts() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.blocked)
}

func (m *mesh) memberAt(ap netip.AddrPort) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ids[ap]
}

func (m *mesh) isCut(from, to string) bool {
	if from == "" || to == "" {
		return false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.blocked[[2]string{from, to}] > 0
}

// meshProxy forwards datagrams to one member (upstream) from anyone, each
// client through its own upstream socket, as faultproxy does; a datagram
// between two members whose pair is cut is dropped.
type meshProxy struct {
	m        *mesh
	member   string // the member it fronts
	log      *slog.Logger
	conn     *net.UDPConn
	upstream *net.UDPAddr

	mu       sync.Mutex
	sessions map[netip.AddrPort]*meshSession
	closed   bool
	wg       sync.WaitGroup
}

type meshSession struct {
	client netip.AddrPort
	from   string // the client's member ID ("" if not a member)
	conn   *net.UDPConn
}

// newMeshProxy listens on listen and forwards to upstream, the member's
// own QUIC address.
func newMeshProxy(m *mesh, member, listen, upstream string, log *slog.Logger) (*meshProxy, error) {
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	p := &meshProxy{m: m, member: member, log: log, conn: conn, upstream: ua, sessions: map[netip.AddrPort]*meshSession{}}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.readClients() }()
	return p, nil
}

// Addr is the address the member advertises.
func (p *meshProxy) Addr() string { return p.conn.LocalAddr().String() }

func (p *meshProxy) readClients() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s, err := p.session(from)
		if err != nil {
			continue
		}
		if p.m.isCut(s.from, p.member) {
			p.m.dropped.Add(1)
			continue
		}
		_, _ = s.conn.Write(buf[:n])
	}
}

func (p *meshProxy) session(client netip.AddrPort) (*meshSession, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.sessions[client]; ok {
		return s, nil
	}
	if p.closed {
		return nil, net.ErrClosed
	}
	conn, err := net.DialUDP("udp", nil, p.upstream)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	s := &meshSession{client: client, from: p.m.memberAt(client), conn: conn}
	p.sessions[client] = s
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.readUpstream(s) }()
	return s, nil
}

// readUpstream passes the member's replies back to one client.
func (p *meshProxy) readUpstream(s *meshSession) {
	buf := make([]byte, 64<<10)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP port unreachable while the member is down: keep the
			// mapping, as a NAT would.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if p.m.isCut(p.member, s.from) {
			p.m.dropped.Add(1)
			continue
		}
		_, _ = p.conn.WriteToUDPAddrPort(buf[:n], s.client)
	}
}

// Close stops the proxy and waits for its goroutines.
func (p *meshProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	_ = p.conn.Close()
	for _, s := range p.sessions {
		_ = s.conn.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
