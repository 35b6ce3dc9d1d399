package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/wardsync/wardsync/schema"
)

var (
	city1 = schema.PeerIdentity{Role: schema.PeerCity, Node: "c1"}
	city2 = schema.PeerIdentity{Role: schema.PeerCity, Node: "c2"}
	ward1 = schema.PeerIdentity{Role: schema.PeerWard, Node: "hcm001-a", Wards: []string{"HCM001"}}
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// node is a running endpoint and its log.
type node struct {
	*Endpoint
	log *logBuf
	run chan error // Run's result
}

// startNode starts an endpoint on 127.0.0.1:0 with cert, trusting ca, with
// the given handlers. cfg's zero fields are filled in.
func startNode(t *testing.T, cert tls.Certificate, ca *x509.CertPool, handlers map[string]Handler, cfg ...Config) *node {
	t.Helper()
	var c Config
	if len(cfg) > 0 {
		c = cfg[0]
	}
	lb := &logBuf{}
	c.Addr = "127.0.0.1:0"
	c.Cert = cert
	c.CA = ca
	c.Logger = lb.logger()
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	e, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for alpn, h := range handlers {
		e.Handle(alpn, h)
	}
	n := &node{Endpoint: e, log: lb, run: make(chan error, 1)}
	go func() { n.run <- e.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-n.run:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
			n.run <- err
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after Close")
		}
	})
	return n
}

// echo is a handler: for each stream, read everything, answer
// "<alpn> <peer> <data>" and close.
func echo(alpn string, seen chan<- schema.PeerIdentity) Handler {
	return func(ctx context.Context, c *Conn) {
		if seen != nil {
			seen <- c.Peer
		}
		for {
			s, err := c.AcceptStream(ctx)
			if err != nil {
				return
			}
			go func() {
				data, err := io.ReadAll(s)
				if err != nil {
					s.CancelWrite(1)
					return
				}
				_, _ = s.Write([]byte(alpn + " " + c.Peer.String() + " " + string(data)))
				_ = s.Close()
			}()
		}
	}
}

// roundTrip sends msg on a new stream and returns the answer.
func roundTrip(t *testing.T, ctx context.Context, c *Conn, msg string) string {
	t.Helper()
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("OpenStreamSync: %v", err)
	}
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return string(got)
}

func TestCityDialsRaftAndSync(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	seen := make(chan schema.PeerIdentity, 4)
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{
		ALPNRaft: echo("raft", seen),
		ALPNSync: echo("sync", seen),
	})
	cli := startNode(t, ca.issue(t, city2), ca.pool, nil)

	if got := srv.Identity(); got.String() != city1.String() {
		t.Errorf("server Identity = %s, want %s", got, city1)
	}
	for _, tc := range []struct{ alpn, name string }{{ALPNRaft, "raft"}, {ALPNSync, "sync"}} {
		c, err := cli.Dial(ctx, srv.Addr().String(), tc.alpn, schema.PeerCity)
		if err != nil {
			t.Fatalf("Dial %s: %v", tc.alpn, err)
		}
		if c.Peer.String() != city1.String() {
			t.Errorf("client sees peer %s, want %s", c.Peer, city1)
		}
		if got := c.ConnectionState().TLS.NegotiatedProtocol; got != tc.alpn {
			t.Errorf("ALPN = %q, want %q", got, tc.alpn)
		}
		if v := c.ConnectionState().TLS.Version; v != tls.VersionTLS13 {
			t.Errorf("TLS version %x, want 1.3", v)
		}
		if c.ConnectionState().Used0RTT {
			t.Error("0-RTT used")
		}
		select {
		case p := <-seen:
			if p.String() != city2.String() {
				t.Errorf("server sees peer %s, want %s", p, city2)
			}
		case <-ctx.Done():
			t.Fatal("handler not invoked")
		}
		want := tc.name + " " + city2.String() + " hello from c2"
		if got := roundTrip(t, ctx, c, "hello from c2"); got != want {
			t.Errorf("answer %q, want %q", got, want)
		}
		// Streams the other way: the server opens, the client answers.
		_ = c.CloseWithError(0, "")
	}
}

// TestServerOpensStream checks bytes flow when the accepting side opens the
// stream.
func TestServerOpensStream(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{
		ALPNSync: func(ctx context.Context, c *Conn) {
			s, err := c.OpenStreamSync(ctx)
			if err != nil {
				return
			}
			_, _ = s.Write([]byte("to " + c.Peer.Node))
			_ = s.Close()
			_, _ = io.ReadAll(s)
		},
	})
	cli := startNode(t, ca.issue(t, ward1), ca.pool, nil)
	c, err := cli.Dial(ctx, srv.Addr().String(), ALPNSync)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "to hcm001-a" {
		t.Fatalf("read %q, %v", got, err)
	}
	_ = s.Close()
}

// rawDial connects with a bare quic-go client (so the certificate can be
// missing or carry no identity) and reports how the connection ended: nil if
// it was still up after a while. local is the client's socket address.
func rawDial(t *testing.T, addr net.Addr, certs []tls.Certificate, alpn string) (local string, err error) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { _ = tr.Close(); _ = udp.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conf := &tls.Config{Certificates: certs, InsecureSkipVerify: true, NextProtos: []string{alpn}}
	c, err := tr.Dial(ctx, addr, conf, nil)
	if err != nil {
		return udp.LocalAddr().String(), err
	}
	defer c.CloseWithError(0, "")
	select {
	case <-c.Context().Done():
		return udp.LocalAddr().String(), context.Cause(c.Context())
	case <-time.After(2 * time.Second):
		return udp.LocalAddr().String(), nil
	}
}

func isCryptoErr(err error) bool {
	te, ok := errors.AsType[*quic.TransportError](err)
	return ok && te.ErrorCode.IsCryptoError()
}

func TestRefusedAtHandshake(t *testing.T) {
	ca := newTestCA(t, "city CA")
	other := newTestCA(t, "another CA")
	var raftCalls atomic.Int32
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{
		ALPNRaft: func(ctx context.Context, c *Conn) { raftCalls.Add(1) },
		ALPNSync: echo("sync", nil),
	})
	addr := srv.Addr().String()

	// Clients that are endpoints: Dial must fail.
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		alpn   string
		reason string // in the server's WARN line
	}{
		{"other CA", other.issue(t, city2), ALPNRaft, "unknown authority"},
		{"expired", ca.issue(t, city2, leafOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)}), ALPNRaft, "expired"},
		{"not yet valid", ca.issue(t, city2, leafOpts{notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(48 * time.Hour)}), ALPNSync, "not yet valid"},
		{"server auth only", ca.issue(t, city2, leafOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), ALPNSync, "key usage"},
		{"ward opens raft", ca.issue(t, ward1), ALPNRaft, "may not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			cli := startNode(t, tc.cert, ca.pool, nil)
			c, err := cli.Dial(ctx, addr, tc.alpn)
			if err == nil {
				c.CloseWithError(0, "")
				t.Fatal("Dial succeeded")
			}
			if !isCryptoErr(err) {
				t.Errorf("Dial error is not a TLS refusal: %v", err)
			}
			srv.log.waitLog(t, "level=WARN", "refused connection", cli.Addr().String(), tc.reason)
			cli.log.waitLog(t, "level=WARN", "handshake refused", addr)
		})
	}

	// A ward may still sync.
	t.Run("ward syncs", func(t *testing.T) {
		ctx := testCtx(t)
		cli := startNode(t, ca.issue(t, ward1), ca.pool, nil)
		c, err := cli.Dial(ctx, addr, ALPNSync)
		if err != nil {
			t.Fatal(err)
		}
		if got := roundTrip(t, ctx, c, "x"); got != "sync "+ward1.String()+" x" {
			t.Errorf("answer %q", got)
		}
	})

	// Bare clients: no certificate, or one without a wardsync identity.
	noSAN := ca.issue(t, city2, leafOpts{uris: []*url.URL{}})
	otherSAN := ca.issue(t, city2, leafOpts{uris: []*url.URL{{Scheme: "spiffe", Host: "city", Path: "/c2"}}})
	badSAN := ca.issue(t, city2, leafOpts{uris: []*url.URL{{Scheme: "wardsync", Host: "king", Path: "/c2"}}})
	twoSAN := ca.issue(t, city2, leafOpts{uris: []*url.URL{city2.URI(), city1.URI()}})
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		reason string
	}{
		{"no certificate", nil, "certificate"},
		{"no URI SAN", []tls.Certificate{noSAN}, "0 wardsync identities"},
		{"foreign URI SAN", []tls.Certificate{otherSAN}, "0 wardsync identities"},
		{"invalid identity", []tls.Certificate{badSAN}, "role"},
		{"two identities", []tls.Certificate{twoSAN}, "2 wardsync identities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, err := rawDial(t, srv.Addr(), tc.certs, ALPNRaft)
			if err == nil {
				t.Fatal("connection was not refused")
			}
			if !isCryptoErr(err) {
				t.Errorf("not a TLS refusal: %v", err)
			}
			srv.log.waitLog(t, "level=WARN", "refused connection", local, tc.reason)
		})
	}

	// Nothing above reached the raft handler.
	time.Sleep(50 * time.Millisecond)
	if n := raftCalls.Load(); n != 0 {
		t.Errorf("raft handler invoked %d times", n)
	}
}

// TestServerCertChecked: the client refuses a server that does not chain to
// its CA or is expired, even though host names are not checked.
func TestServerCertChecked(t *testing.T) {
	ca := newTestCA(t, "city CA")
	other := newTestCA(t, "another CA")
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"other CA", other.issue(t, city1)},
		{"expired", ca.issue(t, city1, leafOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})},
		{"client auth only", ca.issue(t, city1, leafOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			var calls atomic.Int32
			srv := startNode(t, tc.cert, ca.pool, map[string]Handler{ALPNSync: func(context.Context, *Conn) { calls.Add(1) }})
			cli := startNode(t, ca.issue(t, city2), ca.pool, nil)
			if c, err := cli.Dial(ctx, srv.Addr().String(), ALPNSync); err == nil {
				c.CloseWithError(0, "")
				t.Fatal("Dial succeeded")
			} else if !errors.Is(err, schema.ErrUnauthorized) {
				t.Errorf("error does not wrap ErrUnauthorized: %v", err)
			}
			if calls.Load() != 0 {
				t.Error("handler invoked")
			}
		})
	}
}

// TestNowOption: validity is checked at Config.Now on both sides.
func TestNowOption(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	future := func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{ALPNSync: echo("sync", nil)}, Config{Now: future})
	cli := startNode(t, ca.issue(t, city2), ca.pool, nil)
	if _, err := cli.Dial(ctx, srv.Addr().String(), ALPNSync); err == nil {
		t.Fatal("server a week ahead accepted a 1-day certificate")
	}
	srv.log.waitLog(t, "refused connection", "expired")

	srv2 := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{ALPNSync: echo("sync", nil)})
	cli2 := startNode(t, ca.issue(t, city2), ca.pool, nil, Config{Now: future})
	if _, err := cli2.Dial(ctx, srv2.Addr().String(), ALPNSync); err == nil {
		t.Fatal("client a week ahead accepted a 1-day server certificate")
	}
}

func TestDialWantRole(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	srv := startNode(t, ca.issue(t, ward1), ca.pool, map[string]Handler{ALPNSync: echo("sync", nil)})
	cli := startNode(t, ca.issue(t, city1), ca.pool, nil)

	_, err := cli.Dial(ctx, srv.Addr().String(), ALPNSync, schema.PeerCity)
	if err == nil {
		t.Fatal("Dial want=city to a ward succeeded")
	}
	if !errors.Is(err, schema.ErrUnauthorized) || !strings.Contains(err.Error(), "want one of") {
		t.Errorf("error = %v", err)
	}
	c, err := cli.Dial(ctx, srv.Addr().String(), ALPNSync, schema.PeerCity, schema.PeerWard)
	if err != nil {
		t.Fatalf("Dial want=city,ward: %v", err)
	}
	if c.Peer.Role != schema.PeerWard || c.Peer.Wards[0] != "HCM001" {
		t.Errorf("peer %s", c.Peer)
	}
}

func TestUnknownALPN(t *testing.T) {
	ca := newTestCA(t, "city CA")
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{ALPNRaft: echo("raft", nil)})
	cli := startNode(t, ca.issue(t, city2), ca.pool, nil)
	for _, alpn := range []string{"wardsync-nope/1", ALPNBlob, "h3"} {
		t.Run(alpn, func(t *testing.T) {
			ctx := testCtx(t)
			if c, err := cli.Dial(ctx, srv.Addr().String(), alpn); err == nil {
				c.CloseWithError(0, "")
				t.Fatal("Dial succeeded")
			} else if !isCryptoErr(err) {
				t.Errorf("not a TLS refusal: %v", err)
			}
			srv.log.waitLog(t, "level=WARN", "refused connection", cli.Addr().String(), "application protocol")
		})
	}
	// An ALPN registered with Handle but missing from a non-nil Allow map is
	// refused to everyone.
	ctx := testCtx(t)
	srv2 := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{ALPNRaft: echo("raft", nil), "x-test/1": echo("x", nil)},
		Config{Allow: map[string][]schema.PeerRole{ALPNRaft: {schema.PeerCity}}})
	srv2.log.waitLog(t, "level=WARN", "no peer role may open this ALPN", "x-test/1")
	if _, err := cli.Dial(ctx, srv2.Addr().String(), "x-test/1"); err == nil {
		t.Fatal("Dial x-test/1 succeeded")
	}
	if _, err := cli.Dial(ctx, srv2.Addr().String(), ALPNRaft); err != nil {
		t.Fatalf("Dial raft: %v", err)
	}
}

// streamPair dials srv (whose ALPNSync handler is h) and opens one stream,
// writing first so the server's AcceptStream returns.
func streamPair(t *testing.T, h Handler) (*node, *node, *Conn, *quic.Stream) {
	t.Helper()
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{ALPNSync: h})
	cli := startNode(t, ca.issue(t, city2), ca.pool, nil)
	c, err := cli.Dial(ctx, srv.Addr().String(), ALPNSync)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	return srv, cli, c, s
}

func TestStreamConnReadDeadline(t *testing.T) {
	srv, cli, c, s := streamPair(t, func(ctx context.Context, c *Conn) {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		buf := make([]byte, 5)
		_, _ = io.ReadFull(s, buf)
		<-ctx.Done() // never answer
	})
	nc := StreamConn(c, s)
	if nc.LocalAddr().String() != cli.Addr().String() || nc.RemoteAddr().String() != srv.Addr().String() {
		t.Errorf("addrs %s -> %s, want %s -> %s", nc.LocalAddr(), nc.RemoteAddr(), cli.Addr(), srv.Addr())
	}
	start := time.Now()
	if err := nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := nc.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read error %v is not a net.Error timeout", err)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read error %v does not wrap os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d < 80*time.Millisecond || d > 2*time.Second {
		t.Errorf("Read returned after %v", d)
	}
	// A past deadline fails at once; clearing it makes the stream usable.
	_ = nc.SetDeadline(time.Now().Add(-time.Second))
	if _, err := nc.Write([]byte("x")); err == nil {
		t.Error("Write with past deadline succeeded")
	}
	_ = nc.SetDeadline(time.Time{})
	_ = nc.SetWriteDeadline(time.Time{})
	if _, err := nc.Write([]byte("x")); err != nil {
		t.Errorf("Write after clearing deadline: %v", err)
	}
}

func TestStreamConnCloseEndsPeerRead(t *testing.T) {
	type result struct {
		data []byte
		err  error
	}
	got := make(chan result, 1)
	_, _, c, s := streamPair(t, func(ctx context.Context, c *Conn) {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		nc := StreamConn(c, s)
		data, err := io.ReadAll(nc) // ends when the client closes
		got <- result{data, err}
		// Now close our side while the client is blocked reading.
		time.Sleep(50 * time.Millisecond)
		_ = nc.Close()
		<-ctx.Done()
	})
	nc := StreamConn(c, s)
	if _, err := nc.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}

	readDone := make(chan error, 1)
	go func() {
		_, err := nc.Read(make([]byte, 10))
		readDone <- err
	}()
	// The client closes first: the server's ReadAll must end with all data.
	// (Close concurrent with a blocked Read in another goroutine.)
	if err := nc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || string(r.data) != "hello world" {
			t.Errorf("server read %q, %v; want %q, nil", r.data, r.err, "hello world")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("server Read did not return after client Close")
	}
	select {
	case err := <-readDone:
		if err == nil {
			t.Error("Read after own Close returned nil error")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("client Read did not return after own Close")
	}
	if _, err := nc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := nc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if err := nc.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStreamConnPeerCloseEndsRead(t *testing.T) {
	_, _, c, s := streamPair(t, func(ctx context.Context, c *Conn) {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		nc := StreamConn(c, s)
		buf := make([]byte, 5)
		_, _ = io.ReadFull(nc, buf)
		_, _ = nc.Write([]byte("bye"))
		time.Sleep(50 * time.Millisecond)
		_ = nc.Close()
		<-ctx.Done()
	})
	nc := StreamConn(c, s)
	done := make(chan struct{})
	var data []byte
	var err error
	go func() {
		defer close(done)
		data, err = io.ReadAll(nc)
	}()
	select {
	case <-done:
		if err != nil || string(data) != "bye" {
			t.Errorf("ReadAll = %q, %v; want bye, nil (EOF)", data, err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Read did not return after the peer closed")
	}
	// The peer cancelled its receive side: our writes now fail.
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := nc.Write([]byte("x")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Write keeps succeeding after the peer closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = nc.Close()
}

// TestStreamConnCloseUnblocksWrite: Close from another goroutine ends a
// Write blocked on flow control.
func TestStreamConnCloseUnblocksWrite(t *testing.T) {
	_, _, c, s := streamPair(t, func(ctx context.Context, c *Conn) {
		if _, err := c.AcceptStream(ctx); err != nil {
			return
		}
		<-ctx.Done() // never read: the client's window fills up
	})
	nc := StreamConn(c, s)
	writeDone := make(chan error, 1)
	go func() {
		_, err := nc.Write(make([]byte, 64<<20))
		writeDone <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-writeDone:
		t.Fatalf("64 MiB Write to a peer that never reads returned early: %v", err)
	default:
	}
	_ = nc.Close()
	select {
	case err := <-writeDone:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked Write returned %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocked Write did not return after Close")
	}
}

func TestCloseStopsRunAndHandlers(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	started := make(chan struct{}, 2)
	var ended atomic.Int32
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{
		ALPNSync: func(ctx context.Context, c *Conn) {
			defer ended.Add(1)
			started <- struct{}{}
			_, _ = c.AcceptStream(ctx) // blocks until Close
		},
		ALPNRaft: func(ctx context.Context, c *Conn) {
			defer ended.Add(1)
			started <- struct{}{}
			<-ctx.Done()
		},
	})
	cli := startNode(t, ca.issue(t, city2), ca.pool, nil)
	var conns []*Conn
	for _, alpn := range []string{ALPNSync, ALPNRaft} {
		c, err := cli.Dial(ctx, srv.Addr().String(), alpn)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		<-started
	}

	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := ended.Load(); n != 2 {
		t.Errorf("%d handlers ended by the time Close returned, want 2", n)
	}
	select {
	case err := <-srv.run:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		srv.run <- err
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, c := range conns {
		select {
		case <-c.Context().Done():
			ae, ok := errors.AsType[*quic.ApplicationError](context.Cause(c.Context()))
			if !ok || ae.ErrorCode != codeShutdown || !ae.Remote {
				t.Errorf("client conn closed with %v, want remote application error %d", context.Cause(c.Context()), codeShutdown)
			}
		case <-time.After(3 * time.Second):
			t.Error("client conn still open after server Close")
		}
	}
	if _, err := srv.Dial(ctx, cli.Addr().String(), ALPNSync); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v, want net.ErrClosed", err)
	}
	if err := srv.Run(ctx); err != nil {
		t.Errorf("Run after Close: %v", err)
	}
}

func TestRunContextCancel(t *testing.T) {
	ca := newTestCA(t, "city CA")
	e, err := New(Config{Addr: "127.0.0.1:0", Cert: ca.issue(t, city1), CA: ca.pool, Logger: (&logBuf{}).logger()})
	if err != nil {
		t.Fatal(err)
	}
	e.Handle(ALPNSync, echo("sync", nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after ctx cancel")
	}
	if !e.isClosed() {
		t.Error("endpoint not closed after Run's ctx ended")
	}
	if err := e.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestHandlerReturnClosesConn(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	srv := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{
		ALPNSync: func(context.Context, *Conn) {},
		ALPNBlob: func(context.Context, *Conn) { panic("boom") },
	})
	cli := startNode(t, ca.issue(t, city2), ca.pool, nil)
	for _, tc := range []struct {
		alpn string
		code quic.ApplicationErrorCode
	}{{ALPNSync, codeDone}, {ALPNBlob, codePanic}} {
		// The server may close before Dial has seen its session ticket: then
		// Dial itself reports the close.
		c, err := cli.Dial(ctx, srv.Addr().String(), tc.alpn)
		if err == nil {
			select {
			case <-c.Context().Done():
				err = context.Cause(c.Context())
			case <-time.After(3 * time.Second):
				t.Errorf("%s: conn still open after the handler returned", tc.alpn)
				continue
			}
		}
		ae, ok := errors.AsType[*quic.ApplicationError](err)
		if !ok || ae.ErrorCode != tc.code || !ae.Remote {
			t.Errorf("%s: closed with %v, want remote application code %d", tc.alpn, err, tc.code)
		}
	}
	srv.log.waitLog(t, "level=ERROR", "handler panicked", "boom")
}

// TestListenAndDialSameSocket: two endpoints each dial the other; every
// connection uses the endpoints' listening sockets.
func TestListenAndDialSameSocket(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t, "city CA")
	type seen struct {
		peer   schema.PeerIdentity
		remote string
	}
	seenA := make(chan seen, 1)
	seenB := make(chan seen, 1)
	handler := func(ch chan seen) Handler {
		inner := echo("raft", nil)
		return func(ctx context.Context, c *Conn) {
			ch <- seen{c.Peer, c.RemoteAddr().String()}
			inner(ctx, c)
		}
	}
	a := startNode(t, ca.issue(t, city1), ca.pool, map[string]Handler{ALPNRaft: handler(seenA)})
	b := startNode(t, ca.issue(t, city2), ca.pool, map[string]Handler{ALPNRaft: handler(seenB)})

	ab, err := a.Dial(ctx, b.Addr().String(), ALPNRaft, schema.PeerCity)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := b.Dial(ctx, a.Addr().String(), ALPNRaft, schema.PeerCity)
	if err != nil {
		t.Fatal(err)
	}
	if ab.LocalAddr().String() != a.Addr().String() || ba.LocalAddr().String() != b.Addr().String() {
		t.Errorf("dialed from %s and %s, want the listening sockets %s and %s", ab.LocalAddr(), ba.LocalAddr(), a.Addr(), b.Addr())
	}
	for _, tc := range []struct {
		ch   chan seen
		want schema.PeerIdentity
		from net.Addr
	}{{seenB, city1, a.Addr()}, {seenA, city2, b.Addr()}} {
		select {
		case s := <-tc.ch:
			if s.peer.String() != tc.want.String() || s.remote != tc.from.String() {
				t.Errorf("handler saw %s from %s, want %s from %s", s.peer, s.remote, tc.want, tc.from)
			}
		case <-ctx.Done():
			t.Fatal("handler not invoked")
		}
	}
	if got := roundTrip(t, ctx, ab, "a->b"); got != "raft "+city1.String()+" a->b" {
		t.Errorf("a->b answer %q", got)
	}
	if got := roundTrip(t, ctx, ba, "b->a"); got != "raft "+city2.String()+" b->a" {
		t.Errorf("b->a answer %q", got)
	}
}

func TestPeerOf(t *testing.T) {
	ca := newTestCA(t, "city CA")
	if _, err := PeerOf(nil); !errors.Is(err, schema.ErrUnauthorized) {
		t.Errorf("nil: %v", err)
	}
	if _, err := PeerOf(ca.cert); err == nil {
		t.Error("CA certificate accepted")
	}
	for _, tc := range []struct {
		name string
		uris []*url.URL
		ok   bool
	}{
		{"none", []*url.URL{}, false},
		{"foreign", []*url.URL{{Scheme: "https", Host: "example.org"}}, false},
		{"two", []*url.URL{city1.URI(), city2.URI()}, false},
		{"bad role", []*url.URL{{Scheme: "wardsync", Host: "king", Path: "/k"}}, false},
		{"ward without ward", []*url.URL{{Scheme: "wardsync", Host: "ward", Path: "/w"}}, false},
		{"ward", []*url.URL{ward1.URI(), {Scheme: "https", Host: "example.org"}}, true},
	} {
		cert := ca.issue(t, city1, leafOpts{uris: tc.uris})
		p, err := PeerOf(cert.Leaf)
		if (err == nil) != tc.ok {
			t.Errorf("%s: PeerOf = %v, %v", tc.name, p, err)
		}
		if tc.ok && p.String() != ward1.String() {
			t.Errorf("%s: got %s", tc.name, p)
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	ca := newTestCA(t, "city CA")
	good := ca.issue(t, city1)
	quiet := (&logBuf{}).logger()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no addr", Config{Cert: good, CA: ca.pool}},
		{"no CA", Config{Addr: "127.0.0.1:0", Cert: good}},
		{"no cert", Config{Addr: "127.0.0.1:0", CA: ca.pool}},
		{"no identity", Config{Addr: "127.0.0.1:0", CA: ca.pool, Cert: ca.issue(t, city1, leafOpts{uris: []*url.URL{}})}},
		{"bad addr", Config{Addr: "nowhere", CA: ca.pool, Cert: good}},
	} {
		tc.cfg.Logger = quiet
		if e, err := New(tc.cfg); err == nil {
			e.Close()
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	// Leaf is parsed when missing; a certificate from another CA only warns.
	noLeaf := good
	noLeaf.Leaf = nil
	e, err := New(Config{Addr: "127.0.0.1:0", Cert: noLeaf, CA: ca.pool, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if e.Identity().String() != city1.String() {
		t.Errorf("Identity %s", e.Identity())
	}
	e.Close()
	lb := &logBuf{}
	other := newTestCA(t, "another CA")
	e, err = New(Config{Addr: "127.0.0.1:0", Cert: other.issue(t, city1), CA: ca.pool, Logger: lb.logger()})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	if !strings.Contains(lb.String(), "own certificate will be refused") {
		t.Errorf("no warning about own certificate; log: %s", lb)
	}
	// Defaults.
	e, err = New(Config{Addr: "127.0.0.1:0", Cert: good, CA: ca.pool, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	q := e.qconf
	if q.MaxIdleTimeout != 30*time.Second || q.KeepAlivePeriod != 10*time.Second || q.HandshakeIdleTimeout != 10*time.Second ||
		q.MaxIncomingStreams != 1000 || q.Allow0RTT {
		t.Errorf("quic config %+v", q)
	}
	if !bytes.Equal(resetKey(good.PrivateKey)[:], resetKey(good.PrivateKey)[:]) {
		t.Error("stateless reset key is not stable for one private key")
	}
}
