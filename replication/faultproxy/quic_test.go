package faultproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

const testALPN = "faultproxy-test"

func TestMain(m *testing.M) {
	// Loopback tests do not need quic-go's 7 MiB socket buffers.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(m.Run())
}

// testTLS returns a server and a client TLS 1.3 config around a fresh
// self-signed certificate for 127.0.0.1.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "faultproxy test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		NextProtos:   []string{testALPN},
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{
		RootCAs:    pool,
		ServerName: "127.0.0.1",
		NextProtos: []string{testALPN},
		MinVersion: tls.VersionTLS13,
	}
	return server, client
}

// quicPair starts a QUIC listener, a proxy in front of it, and dials through
// the proxy. It returns the proxy and both ends of the connection.
func quicPair(t *testing.T, seed int64, conf *quic.Config) (*Proxy, *quic.Conn, *quic.Conn) {
	t.Helper()
	serverTLS, clientTLS := testTLS(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := startProxy(t, ln.Addr().String(), seed)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan *quic.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Errorf("Accept: %v", err)
		}
		accepted <- c
	}()
	cc, err := quic.DialAddr(ctx, p.Addr(), clientTLS, conf)
	if err != nil {
		t.Fatalf("dial through the proxy: %v", err)
	}
	t.Cleanup(func() { cc.CloseWithError(0, "") })
	sc := <-accepted
	if sc == nil {
		t.FailNow()
	}
	t.Cleanup(func() { sc.CloseWithError(0, "") })
	return p, cc, sc
}

// TestQUICTransferThroughFaults sends 1 MiB over a QUIC stream through a
// lossy, reordering, duplicating link and checks it arrives intact.
func TestQUICTransferThroughFaults(t *testing.T) {
	t.Parallel()
	p, cc, sc := quicPair(t, 5, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	p.Set(Faults{Drop: 0.05, Reorder: 0.1, Duplicate: 0.05})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Server: read everything, answer with its SHA-256.
	served := make(chan error, 1)
	go func() {
		s, err := sc.AcceptStream(ctx)
		if err != nil {
			served <- err
			return
		}
		h := sha256.New()
		if _, err := io.Copy(h, s); err != nil {
			served <- err
			return
		}
		if _, err := s.Write(h.Sum(nil)); err != nil {
			served <- err
			return
		}
		served <- s.Close()
	}()

	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)

	s, err := cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := s.Close(); err != nil { // closes the send side
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read the digest: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	if string(got) != string(want[:]) {
		t.Fatal("1 MiB arrived corrupted")
	}
	st := p.Stats()
	t.Logf("1 MiB in %v; to upstream %+v; to client %+v", time.Since(start), st.ToUpstream, st.ToClient)
	if st.ToUpstream.Dropped == 0 || st.ToUpstream.Reordered == 0 || st.ToUpstream.Duplicated == 0 {
		t.Fatalf("the faults were not exercised: %+v", st.ToUpstream)
	}
}

// TestQUICDiesWhenCut checks that a cut longer than MaxIdleTimeout kills the
// connection with an idle timeout, while keep-alives hold it open before.
func TestQUICDiesWhenCut(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	p, cc, sc := quicPair(t, 1, &quic.Config{MaxIdleTimeout: idle, KeepAlivePeriod: idle / 4})

	// Longer than the idle timeout with the link up: keep-alives keep it.
	time.Sleep(idle + idle/2)
	if err := context.Cause(cc.Context()); err != nil {
		t.Fatalf("connection died with the link up: %v", err)
	}

	p.Cut(true)
	cutAt := time.Now()
	select {
	case <-cc.Context().Done():
	case <-time.After(10 * idle):
		t.Fatal("connection still alive long after the link was cut")
	}
	err := context.Cause(cc.Context())
	var idleErr *quic.IdleTimeoutError
	if !errors.As(err, &idleErr) {
		t.Fatalf("connection died with %v (%T), want an idle timeout", err, err)
	}
	t.Logf("client connection died %v after the cut: %v", time.Since(cutAt), err)

	// The server side times out too.
	select {
	case <-sc.Context().Done():
	case <-time.After(10 * idle):
		t.Fatal("server connection still alive long after the link was cut")
	}
	if err := context.Cause(sc.Context()); !errors.As(err, &idleErr) {
		t.Fatalf("server connection died with %v, want an idle timeout", err)
	}
}
