package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/schema"
)

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func newCA(t *testing.T) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitCA(dir, "", DefaultCAValidity, t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca, dir
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// bundle issues a certificate for id and writes it to a new dir.
func bundle(t *testing.T, ca *CA, p IssueParams) string {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := WriteBundle(dir, ca.CertPEM(), certPEM, keyPEM, false); err != nil {
		t.Fatal(err)
	}
	return dir
}

func wardID() schema.PeerIdentity {
	return schema.PeerIdentity{Role: schema.PeerWard, Node: "w-26734", Wards: []string{"26734"}}
}

func TestInitCA(t *testing.T) {
	ca, dir := newCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA %v, MaxPathLen %d, zero %v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage %v", c.KeyUsage)
	}
	if c.Subject.CommonName != DefaultCAName {
		t.Errorf("CA name %q", c.Subject.CommonName)
	}
	if got := c.NotAfter.Sub(t0); got != DefaultCAValidity {
		t.Errorf("CA validity %s", got)
	}
	if m := mode(t, filepath.Join(dir, CAKeyFile)); m != 0o600 {
		t.Errorf("ca.key mode %v", m)
	}
	if m := mode(t, filepath.Join(dir, CACertFile)); m != 0o644 {
		t.Errorf("ca.crt mode %v", m)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("CA dir mode %v", m)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("LoadCA returned another certificate")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("CA dir holds %d entries, want ca.crt and ca.key only", len(entries))
	}
}

func TestInitCATwiceRefused(t *testing.T) {
	_, dir := newCA(t)
	before, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	_, err := InitCA(dir, "Another", DefaultCAValidity, t0)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), CAKeyFile) {
		t.Fatalf("second InitCA: %v, want ErrExist naming ca.key", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if string(before) != string(after) {
		t.Fatal("second InitCA changed ca.key")
	}
	// A lone ca.crt is refused too.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, CACertFile), []byte("x"), 0o644)
	if _, err := InitCA(dir2, "", DefaultCAValidity, t0); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("InitCA over ca.crt: %v", err)
	}
}

func TestInitCABadParams(t *testing.T) {
	var fe *schema.FieldError
	if _, err := InitCA(t.TempDir(), "", 0, t0); !errors.As(err, &fe) || fe.Field != "validity" {
		t.Errorf("zero validity: %v", err)
	}
	if _, err := InitCA(t.TempDir(), strings.Repeat("x", 65), time.Hour, t0); !errors.As(err, &fe) || fe.Field != "name" {
		t.Errorf("long name: %v", err)
	}
}

func TestLoadCAErrorsNameFile(t *testing.T) {
	_, dir := newCA(t)
	_, other := newCA(t)
	key2, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
	os.WriteFile(filepath.Join(dir, CAKeyFile), key2, 0o600)
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), CAKeyFile) {
		t.Errorf("mismatched key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, CACertFile), []byte("garbage"), 0o644)
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), CACertFile) {
		t.Errorf("garbage ca.crt: %v", err)
	}
	if _, err := LoadCA(t.TempDir()); err == nil || !strings.Contains(err.Error(), CACertFile) {
		t.Errorf("empty dir: %v", err)
	}
}

func TestIssueVerifiesForBothUsages(t *testing.T) {
	ca, _ := newCA(t)
	certPEM, keyPEM, err := ca.Issue(IssueParams{
		Identity: schema.PeerIdentity{Role: schema.PeerCity, Node: "c1"},
		DNSNames: []string{"c1.city.example"},
		IPs:      []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("::1")},
		Validity: DefaultNodeValidity, Now: t0,
	})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("usage %v: %v", u, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0, DNSName: "c1.city.example"}); err != nil {
		t.Errorf("DNS name: %v", err)
	}
	if err := leaf.VerifyHostname("10.0.0.1"); err != nil {
		t.Errorf("IP: %v", err)
	}
	if leaf.Subject.CommonName != "c1" || leaf.IsCA {
		t.Errorf("CN %q IsCA %v", leaf.Subject.CommonName, leaf.IsCA)
	}
	if got, want := leaf.NotBefore, t0.Add(-ClockSkew); !got.Equal(want) {
		t.Errorf("NotBefore %v, want %v", got, want)
	}
	if got, want := leaf.NotAfter, t0.Add(DefaultNodeValidity); !got.Equal(want) {
		t.Errorf("NotAfter %v, want %v", got, want)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "wardsync://city/c1" {
		t.Errorf("URIs %v", leaf.URIs)
	}
	// Nothing is added that the caller did not pass.
	certPEM, _, err = ca.Issue(IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := Inspect(certPEM)
	if len(info.DNSNames) != 0 || len(info.IPs) != 0 {
		t.Errorf("unasked SANs: %v %v", info.DNSNames, info.IPs)
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	ca, _ := newCA(t)
	for _, id := range []schema.PeerIdentity{
		wardID(),
		{Role: schema.PeerBackup, Node: "b-26740", Wards: []string{"26734", "26737"}},
		{Role: schema.PeerCity, Node: "c1"},
		{Role: schema.PeerAdmin, Node: "it-ops"},
		{Role: schema.PeerPortal, Node: "portal"},
	} {
		t.Run(string(id.Role), func(t *testing.T) {
			p := IssueParams{Identity: id, Validity: DefaultNodeValidity, Now: t0,
				DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}
			dir := bundle(t, ca, p)
			certPEM, _ := os.ReadFile(filepath.Join(dir, NodeCertFile))
			info, err := Inspect(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if info.Identity.String() != id.String() {
				t.Errorf("Inspect identity %v, want %v", info.Identity, id)
			}
			if info.IsCA || info.Subject != "CN="+id.Node || !strings.Contains(info.Issuer, DefaultCAName) {
				t.Errorf("Inspect: %+v", info)
			}
			if !slices.Equal(info.DNSNames, []string{"localhost"}) || !slices.Equal(info.IPs, []string{"127.0.0.1"}) {
				t.Errorf("SANs %v %v", info.DNSNames, info.IPs)
			}
			cert, pool, got, err := LoadBundle(dir, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != id.String() {
				t.Errorf("LoadBundle identity %v, want %v", got, id)
			}
			if cert.Leaf == nil || cert.PrivateKey == nil || pool == nil {
				t.Error("LoadBundle: missing leaf, key or pool")
			}
			if m := mode(t, filepath.Join(dir, NodeKeyFile)); m != 0o600 {
				t.Errorf("node.key mode %v", m)
			}
			if m := mode(t, dir); m != 0o700 {
				t.Errorf("bundle dir mode %v", m)
			}
		})
	}
}

func TestInspectCA(t *testing.T) {
	ca, dir := newCA(t)
	info, err := Inspect(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !info.IsCA || info.Identity.Role != "" || info.Identity.Node != "" {
		t.Errorf("CA info %+v", info)
	}
	key, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if _, err := Inspect(key); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Errorf("Inspect of a key: %v", err)
	}
}

func TestIssueBadParams(t *testing.T) {
	ca, _ := newCA(t)
	for _, c := range []struct {
		field string
		p     IssueParams
	}{
		{"role", IssueParams{Identity: schema.PeerIdentity{Role: "root", Node: "x"}}},
		{"node", IssueParams{Identity: schema.PeerIdentity{Role: schema.PeerCity, Node: "C 1"}}},
		{"ward", IssueParams{Identity: schema.PeerIdentity{Role: schema.PeerWard, Node: "w1"}}},
		{"ward", IssueParams{Identity: schema.PeerIdentity{Role: schema.PeerBackup, Node: "b1"}}},
		{"ward", IssueParams{Identity: schema.PeerIdentity{Role: schema.PeerCity, Node: "c1", Wards: []string{"26734"}}}},
		{"dns", IssueParams{Identity: wardID(), DNSNames: []string{"bad name"}}},
		{"ip", IssueParams{Identity: wardID(), IPs: []net.IP{{1, 2, 3}}}},
		{"validity", IssueParams{Identity: wardID()}},
	} {
		if c.p.Validity == 0 && c.field != "validity" {
			c.p.Validity = time.Hour
		}
		c.p.Now = t0
		_, _, err := ca.Issue(c.p)
		var fe *schema.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%+v: %v, want a FieldError on %s", c.p, err, c.field)
		}
	}
	if _, _, err := ca.Issue(IssueParams{Identity: wardID(), Validity: time.Hour, Now: ca.Cert.NotAfter.Add(time.Hour)}); err == nil ||
		!strings.Contains(err.Error(), "CA expired") {
		t.Errorf("issue after the CA expired: %v", err)
	}
}

func TestValidityCappedAtCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitCA(dir, "Short", 30*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(IssueParams{Identity: wardID(), Validity: DefaultNodeValidity, Now: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := Inspect(certPEM)
	if !info.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want the CA's %v", info.NotAfter, ca.Cert.NotAfter)
	}
}

func TestLoadBundleOtherCA(t *testing.T) {
	ca, _ := newCA(t)
	other, _ := newCA(t)
	dir := bundle(t, ca, IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	// The node was given another city's CA.
	if err := os.WriteFile(filepath.Join(dir, CACertFile), other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := LoadBundle(dir, t0)
	if err == nil || !strings.Contains(err.Error(), NodeCertFile) {
		t.Fatalf("LoadBundle with another CA: %v, want an error naming node.crt", err)
	}
	t.Log(err)
	// WriteBundle refuses the mismatch up front.
	certPEM, keyPEM, _ := other.Issue(IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	if err := WriteBundle(t.TempDir(), ca.CertPEM(), certPEM, keyPEM, false); err == nil {
		t.Fatal("WriteBundle accepted a certificate from another CA")
	}
}

func TestLoadBundleExpired(t *testing.T) {
	ca, _ := newCA(t)
	dir := bundle(t, ca, IssueParams{Identity: wardID(), Validity: 24 * time.Hour, Now: t0})
	_, _, _, err := LoadBundle(dir, t0.Add(48*time.Hour))
	if err == nil || !strings.Contains(err.Error(), NodeCertFile) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	t.Log(err)
	_, _, _, err = LoadBundle(dir, t0.Add(-time.Hour))
	if err == nil || !strings.Contains(err.Error(), "not valid until") {
		t.Fatalf("not yet valid: %v", err)
	}
}

func TestLoadBundleErrorsNameFile(t *testing.T) {
	ca, _ := newCA(t)
	dir := bundle(t, ca, IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	other := bundle(t, ca, IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	otherKey, _ := os.ReadFile(filepath.Join(other, NodeKeyFile))
	os.WriteFile(filepath.Join(dir, NodeKeyFile), otherKey, 0o600)
	if _, _, _, err := LoadBundle(dir, t0); err == nil || !strings.Contains(err.Error(), NodeKeyFile) {
		t.Errorf("mismatched key: %v", err)
	}
	os.Remove(filepath.Join(dir, NodeKeyFile))
	if _, _, _, err := LoadBundle(dir, t0); err == nil || !strings.Contains(err.Error(), NodeKeyFile) {
		t.Errorf("missing key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, CACertFile), []byte("nothing"), 0o644)
	if _, _, _, err := LoadBundle(dir, t0); err == nil || !strings.Contains(err.Error(), CACertFile) {
		t.Errorf("garbage ca.crt: %v", err)
	}
}

func TestWriteBundleRefusals(t *testing.T) {
	ca, caDir := newCA(t)
	certPEM, keyPEM, _ := ca.Issue(IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	dir := bundle(t, ca, IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
	err := WriteBundle(dir, ca.CertPEM(), certPEM, keyPEM, false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), NodeKeyFile) {
		t.Fatalf("overwrite without force: %v", err)
	}
	if err := WriteBundle(dir, ca.CertPEM(), certPEM, keyPEM, true); err != nil {
		t.Fatalf("overwrite with force: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, NodeKeyFile))
	if string(got) != string(keyPEM) {
		t.Fatal("force did not replace node.key")
	}
	if m := mode(t, filepath.Join(dir, NodeKeyFile)); m != 0o600 {
		t.Errorf("replaced node.key mode %v", m)
	}
	if err := WriteBundle(caDir, ca.CertPEM(), certPEM, keyPEM, true); err == nil || !strings.Contains(err.Error(), CAKeyFile) {
		t.Fatalf("bundle into the CA dir: %v", err)
	}
	if err := WriteBundle(t.TempDir(), ca.CertPEM(), certPEM, []byte("no key"), false); err == nil {
		t.Fatal("WriteBundle accepted a bad key")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// TestMutualTLS runs a handshake between two loaded bundles, each side
// requiring the other's certificate, and a third from another CA.
func TestMutualTLS(t *testing.T) {
	ca, _ := newCA(t)
	now := time.Now()
	cityDir := bundle(t, ca, IssueParams{Identity: schema.PeerIdentity{Role: schema.PeerCity, Node: "c1"},
		DNSNames: []string{"localhost"}, Validity: time.Hour, Now: now})
	wardDir := bundle(t, ca, IssueParams{Identity: wardID(), Validity: time.Hour, Now: now})
	other, _ := newCA(t)
	strangerDir := bundle(t, other, IssueParams{Identity: wardID(), Validity: time.Hour, Now: now})

	handshake := func(clientDir string) (schema.PeerIdentity, error) {
		sCert, sPool, _, err := LoadBundle(cityDir, now)
		if err != nil {
			t.Fatal(err)
		}
		cCert, cPool, _, err := LoadBundle(clientDir, now)
		if err != nil {
			t.Fatal(err)
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{sCert}, ClientCAs: sPool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
		cli := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{cCert}, RootCAs: cPool,
			ServerName: "localhost", MinVersion: tls.VersionTLS13})
		done := make(chan error, 1)
		go func() { done <- cli.Handshake(); b.Close() }()
		err = srv.Handshake()
		a.Close()
		<-done
		if err != nil {
			return schema.PeerIdentity{}, err
		}
		return schema.PeerFromURIs(srv.ConnectionState().PeerCertificates[0].URIs)
	}
	id, err := handshake(wardDir)
	if err != nil || id.String() != wardID().String() {
		t.Fatalf("ward to city: %v %v", id, err)
	}
	if _, err := handshake(strangerDir); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
}

// TestLoadBundleSeveralCAs: a ca.crt holding two CA certificates (a
// planned CA renewal) trusts certificates from either.
func TestLoadBundleSeveralCAs(t *testing.T) {
	oldCA, _ := newCA(t)
	newCA2, _ := newCA(t)
	for _, issuer := range []*CA{oldCA, newCA2} {
		dir := bundle(t, issuer, IssueParams{Identity: wardID(), Validity: time.Hour, Now: t0})
		both := append(append([]byte{}, oldCA.CertPEM()...), newCA2.CertPEM()...)
		if err := os.WriteFile(filepath.Join(dir, CACertFile), both, 0o644); err != nil {
			t.Fatal(err)
		}
		_, pool, _, err := LoadBundle(dir, t0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ca := range []*CA{oldCA, newCA2} {
			if _, err := ca.Cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: t0}); err != nil {
				t.Errorf("pool does not hold %s: %v", ca.Cert.Subject, err)
			}
		}
	}
}
