package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/cluster"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// testCA is a city CA whose certificates are good for 127.0.0.1.
type testCA struct {
	tb   testing.TB
	ca   *certs.CA
	pool *x509.CertPool
	now  time.Time
}

func newTestCA(tb testing.TB) *testCA {
	now := time.Now()
	ca, err := certs.InitCA(filepath.Join(tb.TempDir(), "ca"), "", certs.DefaultCAValidity, now)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM()) {
		tb.Fatal("CA PEM")
	}
	return &testCA{tb: tb, ca: ca, pool: pool, now: now}
}

func (c *testCA) issue(id schema.PeerIdentity) tls.Certificate {
	certPEM, keyPEM, err := c.ca.Issue(certs.IssueParams{Identity: id, Validity: 24 * time.Hour, Now: c.now, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		c.tb.Fatal(err)
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.tb.Fatal(err)
	}
	return kp
}

func (c *testCA) leaf(id schema.PeerIdentity) *x509.Certificate {
	kp := c.issue(id)
	l, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		c.tb.Fatal(err)
	}
	return l
}

// endpoint starts city member id's QUIC endpoint on a free loopback port,
// closed at cleanup (after what the test registered later, such as the
// member on it).
func (c *testCA) endpoint(id string) *transport.Endpoint {
	ep, err := transport.New(transport.Config{Addr: "127.0.0.1:0", Cert: c.issue(schema.PeerIdentity{Role: schema.PeerCity, Node: id}), CA: c.pool})
	if err != nil {
		c.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ep.Run(ctx); close(done) }()
	c.tb.Cleanup(func() {
		cancel()
		<-done
		ep.Close()
	})
	return ep
}

// openMember opens a member with short Raft timeouts (unless cfg sets
// them), closed at cleanup.
func openMember(tb testing.TB, cfg cluster.Config) *cluster.Cluster {
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	}
	c, err := cluster.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// Raft's shutdown waits for its replication goroutines; one stuck
		// for good (what TestFollowerCatchesUpAfterARefusedAppend looks
		// for) would hang the test binary instead of failing the test.
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			tb.Errorf("member %s did not close in 30 s", cfg.NodeID)
		}
	})
	return c
}
