package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// streamLayer carries hashicorp/raft's NetworkTransport over QUIC: each
// raft "connection" is one bidirectional stream on a QUIC connection of the
// raft ALPN, which only city certificates may open. A stream starts with a
// wire Hello so that a member of another protocol version is refused with
// a clear error instead of confusing raft's decoder.
type streamLayer struct {
	ep        *transport.Endpoint
	advertise net.Addr
	self      string
	log       *slog.Logger

	accepted chan net.Conn
	done     chan struct{}
	once     sync.Once

	mu    sync.Mutex
	conns map[string]*transport.Conn // by address, reused across dials
}

func newStreamLayer(ep *transport.Endpoint, advertise net.Addr, self string, log *slog.Logger) *streamLayer {
	return &streamLayer{ep: ep, advertise: advertise, self: self, log: log,
		accepted: make(chan net.Conn, 64), done: make(chan struct{}), conns: map[string]*transport.Conn{}}
}

// handle is the endpoint's handler for the raft ALPN: it hands every
// stream of the connection to raft until the connection ends.
func (l *streamLayer) handle(ctx context.Context, c *transport.Conn) {
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		conn := transport.StreamConn(c, s)
		go func() {
			if err := l.readHello(conn, c.Peer); err != nil {
				l.log.Warn("raft stream refused", "peer", c.Peer.Node, "err", err)
				conn.Close()
				return
			}
			select {
			case l.accepted <- conn:
			case <-l.done:
				conn.Close()
			case <-ctx.Done():
				conn.Close()
			}
		}()
	}
}

// helloTimeout bounds how long a new stream may take to say hello.
const helloTimeout = 10 * time.Second

func (l *streamLayer) readHello(conn net.Conn, peer schema.PeerIdentity) error {
	conn.SetReadDeadline(time.Now().Add(helloTimeout))
	defer conn.SetReadDeadline(time.Time{})
	msg, err := wire.NewReader(conn, 64<<10).Read()
	if err != nil {
		code := wire.CodeBadFrame
		if errors.Is(err, wire.ErrUnknownVersion) {
			code = wire.CodeUnknownVersion
		}
		wire.SendError(conn, code, err.Error())
		return err
	}
	h, ok := msg.(*wire.Hello)
	if !ok || h.Proto != wire.ProtoRaft {
		wire.SendError(conn, wire.CodeBadFrame, "a raft stream must start with Hello{raft}")
		return fmt.Errorf("first frame is %T, want raft hello", msg)
	}
	if h.Node != peer.Node {
		wire.SendError(conn, wire.CodeForbidden, "hello names another node than the certificate")
		return fmt.Errorf("hello from %q over %q's certificate", h.Node, peer.Node)
	}
	return nil
}

// Accept implements net.Listener for raft.
func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	case <-l.done:
		return nil, errors.New("raft stream layer closed")
	}
}

// Close implements net.Listener.
func (l *streamLayer) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address other members reach this one at.
func (l *streamLayer) Addr() net.Addr { return l.advertise }

// Dial opens a raft stream to a member, reusing one QUIC connection per
// member (streams are cheap; handshakes are not).
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := l.conn(ctx, string(address))
	if err != nil {
		return nil, err
	}
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		// The cached connection may be dead: drop it and dial once more.
		l.forget(string(address), c)
		if c, err = l.conn(ctx, string(address)); err != nil {
			return nil, err
		}
		if s, err = c.OpenStreamSync(ctx); err != nil {
			l.forget(string(address), c)
			return nil, err
		}
	}
	conn := transport.StreamConn(c, s)
	if err := wire.WriteMsg(conn, &wire.Hello{Proto: wire.ProtoRaft, Node: l.self, Versions: []uint8{wire.Version}}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (l *streamLayer) conn(ctx context.Context, addr string) (*transport.Conn, error) {
	l.mu.Lock()
	c := l.conns[addr]
	l.mu.Unlock()
	if c != nil && c.Context().Err() == nil {
		return c, nil
	}
	c, err := l.ep.Dial(ctx, addr, transport.ALPNRaft, schema.PeerCity)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if old := l.conns[addr]; old != nil && old != c && old.Context().Err() == nil {
		// Another dial won the race; keep one connection.
		l.mu.Unlock()
		c.CloseWithError(0, "duplicate")
		return old, nil
	}
	l.conns[addr] = c
	l.mu.Unlock()
	return c, nil
}

func (l *streamLayer) forget(addr string, c *transport.Conn) {
	l.mu.Lock()
	if l.conns[addr] == c {
		delete(l.conns, addr)
	}
	l.mu.Unlock()
	c.CloseWithError(0, "reset")
}
