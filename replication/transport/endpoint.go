package transport

import (
	"context"
	"crypto"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/wardsync/wardsync/schema"
)

// The application protocols. A connection speaks exactly one.
const (
	ALPNRaft = "wardsync-raft/1"
	ALPNSync = "wardsync-sync/1"
	ALPNBlob = "wardsync-blob/1"
)

// Config configures an Endpoint.
type Config struct {
	Addr string          // UDP address to listen on, e.g. "127.0.0.1:7001" or "127.0.0.1:0"
	Cert tls.Certificate // this node's certificate (Leaf set, else parsed from Certificate[0]) and key
	CA   *x509.CertPool  // the city CA: peers must chain to it
	// Allow lists, per ALPN, the peer roles that may open it; anything else
	// is refused during the TLS handshake. An ALPN missing from a non-nil
	// map may be opened by nobody. A nil map allows: raft → city;
	// sync → ward, backup, city; blob → ward, backup, city.
	Allow            map[string][]schema.PeerRole
	Logger           *slog.Logger     // default slog.Default()
	IdleTimeout      time.Duration    // default 30s
	KeepAlivePeriod  time.Duration    // default 10s
	HandshakeTimeout time.Duration    // default 10s
	Now              func() time.Time // for certificate validity checks; default time.Now
}

// Defaults for Config.
const (
	defaultIdleTimeout      = 30 * time.Second
	defaultKeepAlivePeriod  = 10 * time.Second
	defaultHandshakeTimeout = 10 * time.Second
)

// Flow control and stream limits. quic-go's defaults (512 KB windows growing
// to 6 MB per stream and 15 MB per connection, 100 streams) throttle bulk
// sync and blob transfer on a long fat link, and raft opens a stream per
// pooled RPC connection.
const (
	initialStreamWindow = 2 << 20  // 2 MiB
	maxStreamWindow     = 8 << 20  // 8 MiB
	initialConnWindow   = 8 << 20  // 8 MiB
	maxConnWindow       = 32 << 20 // 32 MiB
	maxIncomingStreams  = 1000
)

// Application error codes sent in CONNECTION_CLOSE.
const (
	codeDone      quic.ApplicationErrorCode = 0x0 // the handler returned
	codeShutdown  quic.ApplicationErrorCode = 0x1 // the endpoint is closing
	codeNoHandler quic.ApplicationErrorCode = 0x2 // no handler for the negotiated ALPN
	codePanic     quic.ApplicationErrorCode = 0x3 // the handler panicked
	codeDialAbort quic.ApplicationErrorCode = 0x4 // Dial gave up after the TLS handshake
)

// Handler serves one accepted connection. It runs in its own goroutine;
// the endpoint closes the connection when it returns. ctx is canceled when
// the endpoint closes or the connection ends.
type Handler func(ctx context.Context, c *Conn)

// Endpoint is one UDP socket speaking QUIC, for both listening and dialing.
type Endpoint struct {
	cfg    Config
	log    *slog.Logger
	self   schema.PeerIdentity
	allow  map[string][]schema.PeerRole
	qconf  *quic.Config
	udp    *net.UDPConn
	tr     *quic.Transport
	srvTLS *tls.Config

	ctx    context.Context // canceled by Close; parent of every handler's ctx
	cancel context.CancelFunc
	wg     sync.WaitGroup // handler goroutines

	mu       sync.Mutex
	handlers map[string]Handler
	order    []string // registered ALPNs, in registration order
	ln       *quic.Listener
	running  bool
	closed   bool
	conns    map[*quic.Conn]struct{}

	closeOnce sync.Once
	closeErr  error
}

// New checks cfg and binds one UDP socket with one quic.Transport, used for
// both listening (Run) and dialing (Dial).
func New(cfg Config) (*Endpoint, error) {
	if cfg.Addr == "" {
		return nil, errors.New("transport: no listen address")
	}
	if cfg.CA == nil {
		return nil, errors.New("transport: no CA pool")
	}
	if len(cfg.Cert.Certificate) == 0 || cfg.Cert.PrivateKey == nil {
		return nil, errors.New("transport: no certificate or key")
	}
	if cfg.Cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cfg.Cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("transport: own certificate: %w", err)
		}
		cfg.Cert.Leaf = leaf
	}
	self, err := PeerOf(cfg.Cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("transport: own certificate: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	if cfg.KeepAlivePeriod <= 0 {
		cfg.KeepAlivePeriod = defaultKeepAlivePeriod
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	allow := defaultAllow()
	if cfg.Allow != nil {
		allow = make(map[string][]schema.PeerRole, len(cfg.Allow))
		for alpn, roles := range cfg.Allow {
			allow[alpn] = slices.Clone(roles)
		}
	}

	e := &Endpoint{
		cfg:      cfg,
		log:      cfg.Logger,
		self:     self,
		allow:    allow,
		handlers: make(map[string]Handler),
		conns:    make(map[*quic.Conn]struct{}),
		qconf: &quic.Config{
			HandshakeIdleTimeout:           cfg.HandshakeTimeout,
			MaxIdleTimeout:                 cfg.IdleTimeout,
			KeepAlivePeriod:                cfg.KeepAlivePeriod,
			InitialStreamReceiveWindow:     initialStreamWindow,
			MaxStreamReceiveWindow:         maxStreamWindow,
			InitialConnectionReceiveWindow: initialConnWindow,
			MaxConnectionReceiveWindow:     maxConnWindow,
			MaxIncomingStreams:             maxIncomingStreams,
			Allow0RTT:                      false, // and Listen, not ListenEarly: see doc.go
		},
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())

	// A node whose own certificate does not verify still starts (an operator
	// may be replacing it), but every peer will refuse it: say so now.
	chain := make([]*x509.Certificate, 0, len(cfg.Cert.Certificate))
	chain = append(chain, cfg.Cert.Leaf)
	for _, der := range cfg.Cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			chain = append(chain, c)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verifyChain(chain, cfg.CA, cfg.Now(), usage); err != nil {
			e.log.Warn("transport: own certificate will be refused by peers", "identity", self.String(), "reason", err.Error())
			break
		}
	}

	ua, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen address %q: %w", cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	e.udp = udp
	e.tr = &quic.Transport{
		Conn:              udp,
		StatelessResetKey: resetKey(cfg.Cert.PrivateKey),
		ConnContext:       e.connContext,
	}
	e.srvTLS = e.serverTLS()
	return e, nil
}

// resetKey derives the stateless reset key from the node's private key, so
// it survives restarts: a peer still holding a connection to our previous
// incarnation gets a stateless reset and reconnects at once instead of
// waiting out the idle timeout. A key that cannot be marshalled (a hardware
// signer) gets a random reset key.
func resetKey(priv crypto.PrivateKey) *quic.StatelessResetKey {
	var k quic.StatelessResetKey
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err == nil {
		var b []byte
		if b, err = hkdf.Key(sha256.New, der, nil, "wardsync transport stateless reset v1", len(k)); err == nil {
			copy(k[:], b)
			return &k
		}
	}
	_, _ = rand.Read(k[:])
	return &k
}

// connContext runs for every incoming connection attempt. It logs a
// handshake that failed on our side with a TLS alert — a refusal: bad or
// missing certificate, a role that may not open the ALPN, an unknown ALPN.
func (e *Endpoint) connContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	remote := "unknown"
	if ci != nil && ci.RemoteAddr != nil {
		remote = ci.RemoteAddr.String()
	}
	context.AfterFunc(ctx, func() {
		cause := context.Cause(ctx)
		if te, ok := errors.AsType[*quic.TransportError](cause); ok && !te.Remote && te.ErrorCode.IsCryptoError() {
			e.log.Warn("transport: refused connection", "remote", remote, "reason", cause.Error())
		}
	})
	return ctx, nil
}

// Handle registers h for connections that negotiate alpn. Register before
// Run: the ALPNs offered to clients are the registered ones, so a client
// asking for another is refused in the handshake. Handle panics on an empty
// ALPN or a nil handler.
func (e *Endpoint) Handle(alpn string, h Handler) {
	if alpn == "" || h == nil {
		panic("transport: Handle needs an ALPN and a handler")
	}
	if _, ok := e.allow[alpn]; !ok {
		e.log.Warn("transport: no peer role may open this ALPN", "alpn", alpn)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.handlers[alpn]; !dup {
		e.order = append(e.order, alpn)
	}
	e.handlers[alpn] = h
}

func (e *Endpoint) protos() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.order)
}

// Run accepts connections and hands each to the handler of its ALPN, until
// ctx ends (Run then closes the endpoint) or Close is called. It returns nil
// on such a clean shutdown.
func (e *Endpoint) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	if e.running {
		e.mu.Unlock()
		return errors.New("transport: Run called twice")
	}
	e.running = true
	// Listen, never ListenEarly: 0-RTT data could be replayed, so the server
	// accepts a connection only once the full handshake has completed.
	ln, err := e.tr.Listen(e.srvTLS, e.qconf)
	if err != nil {
		e.mu.Unlock()
		return fmt.Errorf("transport: listen: %w", err)
	}
	e.ln = ln
	e.mu.Unlock()
	e.log.Info("transport: listening", "addr", e.Addr().String(), "identity", e.self.String(), "alpn", e.protos())

	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				_ = e.Close()
				return nil
			}
			if e.isClosed() {
				return nil
			}
			return fmt.Errorf("transport: accept: %w", err)
		}
		e.accept(qc)
	}
}

// accept starts the handler goroutine for a connection that passed the
// handshake (VerifyConnection has checked its identity and role).
func (e *Endpoint) accept(qc *quic.Conn) {
	cs := qc.ConnectionState().TLS
	alpn := cs.NegotiatedProtocol
	var leaf *x509.Certificate
	if len(cs.PeerCertificates) > 0 {
		leaf = cs.PeerCertificates[0]
	}
	peer, err := PeerOf(leaf)
	if err != nil { // VerifyConnection already refused these; belt and braces
		e.log.Warn("transport: refused connection", "remote", qc.RemoteAddr().String(), "reason", err.Error())
		_ = qc.CloseWithError(codeShutdown, "unauthorized")
		return
	}
	e.mu.Lock()
	h := e.handlers[alpn]
	if e.closed {
		e.mu.Unlock()
		_ = qc.CloseWithError(codeShutdown, "endpoint closing")
		return
	}
	e.trackLocked(qc)
	e.wg.Add(1)
	e.mu.Unlock()
	go e.serve(&Conn{Conn: qc, Peer: peer}, h, alpn)
}

func (e *Endpoint) serve(c *Conn, h Handler, alpn string) {
	defer e.wg.Done()
	if h == nil {
		_ = c.CloseWithError(codeNoHandler, "no handler for "+alpn)
		return
	}
	e.log.Debug("transport: accepted", "remote", c.RemoteAddr().String(), "peer", c.Peer.String(), "alpn", alpn)
	ctx, cancel := context.WithCancel(e.ctx)
	stop := context.AfterFunc(c.Context(), cancel)
	defer func() {
		stop()
		cancel()
		if r := recover(); r != nil {
			e.log.Error("transport: handler panicked", "alpn", alpn, "peer", c.Peer.String(),
				"remote", c.RemoteAddr().String(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			_ = c.CloseWithError(codePanic, "internal error")
			return
		}
		code, msg := codeDone, ""
		if e.ctx.Err() != nil {
			code, msg = codeShutdown, "endpoint closing"
		}
		_ = c.CloseWithError(code, msg)
	}()
	h(ctx, c)
}

// trackLocked remembers qc until it closes, so Close can close it.
// e.mu must be held.
func (e *Endpoint) trackLocked(qc *quic.Conn) {
	e.conns[qc] = struct{}{}
	context.AfterFunc(qc.Context(), func() {
		e.mu.Lock()
		delete(e.conns, qc)
		e.mu.Unlock()
	})
}

func (e *Endpoint) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Dial opens a mutually authenticated connection to addr from the endpoint's
// own socket, negotiating alpn. The server must chain to the CA and, if want
// is given, have one of those roles. Dial returns only once the server has
// accepted our certificate too, so a refusal by the server is an error here.
// The handshake (including that confirmation) is bounded by
// Config.HandshakeTimeout as well as ctx.
func (e *Endpoint) Dial(ctx context.Context, addr, alpn string, want ...schema.PeerRole) (*Conn, error) {
	if alpn == "" {
		return nil, fmt.Errorf("transport: dial %s: no ALPN", addr)
	}
	if e.isClosed() {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, net.ErrClosed)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	confirm := newConfirmCache()
	tlsConf := e.clientTLS(host, alpn, want, confirm)
	dctx, cancel := context.WithTimeout(ctx, e.cfg.HandshakeTimeout)
	defer cancel()
	// Dial, never DialEarly: no 0-RTT (and the session cache never resumes).
	qc, err := e.tr.Dial(dctx, ua, tlsConf, e.qconf)
	if err != nil {
		return nil, e.dialErr(addr, alpn, err)
	}
	select {
	case <-confirm.done:
	case <-qc.Context().Done():
		return nil, e.dialErr(addr, alpn, context.Cause(qc.Context()))
	case <-dctx.Done():
		err := context.Cause(dctx)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = errNotConfirmed
		}
		_ = qc.CloseWithError(codeDialAbort, "handshake not confirmed")
		return nil, e.dialErr(addr, alpn, err)
	}
	cs := qc.ConnectionState().TLS
	if cs.NegotiatedProtocol != alpn || len(cs.PeerCertificates) == 0 {
		_ = qc.CloseWithError(codeDialAbort, "bad handshake")
		return nil, e.dialErr(addr, alpn, fmt.Errorf("negotiated ALPN %q", cs.NegotiatedProtocol))
	}
	peer, err := PeerOf(cs.PeerCertificates[0])
	if err != nil { // VerifyConnection already checked it
		_ = qc.CloseWithError(codeDialAbort, "bad identity")
		return nil, e.dialErr(addr, alpn, err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = qc.CloseWithError(codeShutdown, "endpoint closing")
		return nil, fmt.Errorf("transport: dial %s: %w", addr, net.ErrClosed)
	}
	e.trackLocked(qc)
	e.mu.Unlock()
	return &Conn{Conn: qc, Peer: peer}, nil
}

// dialErr wraps a Dial failure, and logs it at WARN when it is a refusal
// (a TLS alert, sent by either side).
func (e *Endpoint) dialErr(addr, alpn string, err error) error {
	if te, ok := errors.AsType[*quic.TransportError](err); ok && te.ErrorCode.IsCryptoError() {
		e.log.Warn("transport: handshake refused", "remote", addr, "alpn", alpn, "reason", err.Error())
	}
	return fmt.Errorf("transport: dial %s (%s): %w", addr, alpn, err)
}

// Addr is the local address of the endpoint's UDP socket.
func (e *Endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// Identity is this node's own identity, from its certificate.
func (e *Endpoint) Identity() schema.PeerIdentity {
	p := e.self
	p.Wards = slices.Clone(p.Wards)
	return p
}

// Close stops the endpoint: it closes the listener, closes every connection
// (accepted or dialed) with an application error code, cancels handlers'
// contexts and waits for them to return, then closes the QUIC transport and
// the socket. It is idempotent and safe to call concurrently; it must not be
// called from a handler (it would wait for itself).
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		ln := e.ln
		conns := slices.Collect(maps.Keys(e.conns))
		e.mu.Unlock()

		if ln != nil {
			_ = ln.Close()
		}
		// Close the connections before canceling the handlers' context, so
		// peers see codeShutdown rather than a handler's own close.
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { _ = c.CloseWithError(codeShutdown, "endpoint closing") })
		}
		wg.Wait()
		e.cancel()
		e.wg.Wait()
		e.closeErr = errors.Join(e.tr.Close(), e.udp.Close())
	})
	return e.closeErr
}
