package blob

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// stream is one blob transfer's QUIC stream.
type stream struct {
	s *quic.Stream
	r *wire.Reader
}

func newStream(s *quic.Stream) *stream {
	r := wire.NewReader(s, maxFrame)
	// Peers are authenticated and frames are mostly whole chunks: one
	// allocation per frame instead of growing it.
	r.Prealloc(maxFrame)
	return &stream{s: s, r: r}
}

// close releases both directions, so the peer's count of open incoming
// streams goes back down (see cluster.handleSync).
func (st *stream) close() {
	st.s.CancelRead(0)
	st.s.Close()
}

// open starts a blob stream on conn: Hello, then first, then the Welcome.
func open(ctx context.Context, conn *transport.Conn, node, ward string, first wire.Msg) (*stream, error) {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	st := newStream(s)
	stop := context.AfterFunc(ctx, func() { s.CancelRead(1); s.CancelWrite(1) })
	ok := false
	defer func() {
		if !ok {
			stop()
			st.close()
		}
	}()
	if err := wire.WriteMsg(s, &wire.Hello{Proto: wire.ProtoBlob, Node: node, Ward: ward, Versions: []uint8{wire.Version}}); err != nil {
		return nil, err
	}
	if err := wire.WriteMsg(s, first); err != nil {
		return nil, err
	}
	msg, err := readMsg(st.r)
	if err != nil {
		return nil, err
	}
	if _, isWelcome := msg.(*wire.Welcome); !isWelcome {
		return nil, fmt.Errorf("%w: expected Welcome, got %T", errProtocol, msg)
	}
	ok = true
	return st, nil
}

// Put sends blob m to the node at the other end of conn and returns what
// its BlobStored said.
func Put(ctx context.Context, conn *transport.Conn, node, ward string, src *blobstore.Store, m *schema.Manifest, o Options) (*wire.BlobStored, error) {
	st, err := open(ctx, conn, node, ward, &wire.BlobOffer{Manifest: *m})
	if err != nil {
		return nil, fmt.Errorf("blob put %s: %w", m.HashHex()[:12], err)
	}
	defer st.close()
	stop := context.AfterFunc(ctx, func() { st.s.CancelRead(1); st.s.CancelWrite(1) })
	defer stop()
	res, err := send(ctx, st.s, st.r, src, m, o)
	if err != nil {
		return nil, fmt.Errorf("blob put %s: %w", m.HashHex()[:12], err)
	}
	return res, nil
}

// Get fetches blob h from the node at the other end of conn into dst. It
// returns the blob's manifest.
func Get(ctx context.Context, conn *transport.Conn, node, ward string, dst *blobstore.Store, h [32]byte, o Options) (schema.Manifest, error) {
	st, err := open(ctx, conn, node, ward, &wire.BlobGet{Hash: h})
	if err != nil {
		return schema.Manifest{}, fmt.Errorf("blob get %x: %w", h[:6], err)
	}
	defer st.close()
	stop := context.AfterFunc(ctx, func() { st.s.CancelRead(1); st.s.CancelWrite(1) })
	defer stop()
	msg, err := readMsg(st.r)
	if err != nil {
		return schema.Manifest{}, fmt.Errorf("blob get %x: %w", h[:6], err)
	}
	offer, ok := msg.(*wire.BlobOffer)
	if !ok || offer.Manifest.Hash != h {
		return schema.Manifest{}, fmt.Errorf("blob get %x: %w: expected its BlobOffer, got %T", h[:6], errProtocol, msg)
	}
	m := offer.Manifest
	if err := receive(ctx, st.s, st.r, dst, &m, o, nil); err != nil {
		return schema.Manifest{}, fmt.Errorf("blob get %x: %w", h[:6], err)
	}
	// The sender waits for BlobStored, which receive sent; let it arrive
	// before the stream is torn down.
	st.s.Close()
	waitPeerDone(st.s, 2*time.Second)
	return m, nil
}

// waitPeerDone waits (briefly) for the peer to end its side of s.
func waitPeerDone(s *quic.Stream, d time.Duration) {
	s.SetReadDeadline(time.Now().Add(d))
	io.Copy(io.Discard, s)
}

// peerConns caches one blob connection per address.
type peerConns struct {
	ep *transport.Endpoint
	mu sync.Mutex
	m  map[string]*transport.Conn
}

func (p *peerConns) get(ctx context.Context, addr string) (*transport.Conn, error) {
	p.mu.Lock()
	c := p.m[addr]
	p.mu.Unlock()
	if c != nil && c.Context().Err() == nil {
		return c, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := p.ep.Dial(dctx, addr, transport.ALPNBlob, schema.PeerCity)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.m[addr]; cur != nil && cur.Context().Err() == nil {
		// Another transfer dialed at the same time and won: share its
		// connection (it may be in use; never close it under them).
		c.CloseWithError(0, "duplicate")
		return cur, nil
	}
	p.m[addr] = c
	return c, nil
}

func (p *peerConns) forget(addr string, c *transport.Conn) {
	p.mu.Lock()
	if p.m[addr] == c {
		delete(p.m, addr)
	}
	p.mu.Unlock()
	c.CloseWithError(0, "reset")
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.m {
		c.CloseWithError(0, "closing")
		delete(p.m, a)
	}
}
