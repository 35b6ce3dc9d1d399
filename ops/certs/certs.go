package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// File names in a CA directory (CACertFile, CAKeyFile) and in a node
// bundle directory (CACertFile, NodeCertFile, NodeKeyFile).
const (
	CACertFile   = "ca.crt"
	CAKeyFile    = "ca.key"
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
)

// Defaults.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour // 87600h
	DefaultNodeValidity = 365 * 24 * time.Hour      // 8760h
	DefaultCAName       = "Ho Chi Minh City wardsync CA"

	// ClockSkew is how far before "now" a certificate's validity starts,
	// so a node whose clock runs a little behind accepts it at once.
	ClockSkew = 5 * time.Minute
)

// CA is the city certificate authority: an ECDSA P-256 key and its
// self-signed certificate (IsCA, KeyUsageCertSign|CRLSign, MaxPathLen 0:
// it signs node certificates only, never another CA).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

func fieldErr(field, format string, args ...any) error {
	return &schema.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// InitCA creates a new CA in dir: dir/ca.crt (0644) and dir/ca.key (0600).
// dir is created with mode 0700 if missing. It refuses, with an error
// wrapping fs.ErrExist, if dir already holds a ca.key or ca.crt: a CA is
// never overwritten, since every certificate it issued would stop working.
func InitCA(dir string, name string, validity time.Duration, now time.Time) (*CA, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		name = DefaultCAName
	}
	if len(name) > 64 {
		return nil, fieldErr("name", "%q is longer than 64 bytes", name)
	}
	if validity <= 0 {
		return nil, fieldErr("validity", "%s must be positive", validity)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	for _, p := range []string{keyPath, certPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s: %w: a CA is never overwritten (every certificate it issued would stop working)", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"wardsync"}},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	// The key first, and without replacing anything: of two inits racing
	// for one dir, exactly one wins.
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads dir/ca.crt and dir/ca.key and checks that they belong
// together. Errors name the file.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	b, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	cert, err := firstCert(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", certPath)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := decodeKey(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !publicEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s: key does not belong to %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// IssueParams says whom a node certificate is for. DNSNames and IPs are the
// addresses other nodes dial it at (city members); only those passed are
// included, nothing is added.
type IssueParams struct {
	Identity schema.PeerIdentity
	DNSNames []string
	IPs      []net.IP
	Validity time.Duration
	Now      time.Time
}

var dnsLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabelRe.MatchString(l) {
			return false
		}
	}
	return true
}

// Issue creates an ECDSA P-256 key and a certificate for it signed by the
// CA. The certificate carries p.Identity as its one URI SAN, the node ID
// as its common name, and both the server and client auth extended key
// usages. It is valid from p.Now-ClockSkew to p.Now+p.Validity, capped at
// the CA's own expiry. Bad parameters give a *schema.FieldError naming
// role, node, ward, dns, ip or validity.
func (ca *CA) Issue(p IssueParams) (certPEM, keyPEM []byte, err error) {
	if err := p.Identity.Validate(); err != nil {
		return nil, nil, err
	}
	for _, d := range p.DNSNames {
		if !validDNSName(d) {
			return nil, nil, fieldErr("dns", "%q is not a DNS name", d)
		}
	}
	for _, ip := range p.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, nil, fieldErr("ip", "%q is not an IP address", ip.String())
		}
	}
	if p.Validity <= 0 {
		return nil, nil, fieldErr("validity", "%s must be positive", p.Validity)
	}
	if !p.Now.Before(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("the CA expired at %s: create a new CA and re-issue every certificate",
			ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := p.Now.Add(p.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: p.Identity.Node},
		NotBefore:             p.Now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{p.Identity.URI()},
		DNSNames:              append([]string(nil), p.DNSNames...),
		IPAddresses:           append([]net.IP(nil), p.IPs...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// CertPEM is the CA certificate as PEM, for node bundles.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// WriteBundle writes a node bundle: dir/ca.crt and dir/node.crt (0644) and
// dir/node.key (0600), each written to a temporary file, fsynced and
// renamed, then the directory fsynced. dir is created with mode 0700 if
// missing. It checks first that the key belongs to the certificate and
// that the certificate is signed by the CA. It refuses, with an error
// wrapping fs.ErrExist, to replace an existing node.key unless force, and
// always refuses a dir holding a ca.key: a node bundle must never sit next
// to the CA's key, or copying it to the node would copy the CA key too.
func WriteBundle(dir string, caPEM, certPEM, keyPEM []byte, force bool) error {
	caCert, err := firstCert(caPEM)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("node certificate and key: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("node certificate: %w", err)
	}
	if err := leaf.CheckSignatureFrom(caCert); err != nil {
		return fmt.Errorf("node certificate is not signed by the CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("%s holds %s: write node bundles outside the CA directory", dir, CAKeyFile)
	}
	keyPath := filepath.Join(dir, NodeKeyFile)
	if !force {
		if _, err := os.Lstat(keyPath); err == nil {
			return fmt.Errorf("%s: %w (replace it with force)", keyPath, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CACertFile, caPEM, 0o644},
		{NodeKeyFile, keyPEM, 0o600},
		{NodeCertFile, certPEM, 0o644},
	} {
		if err := writeReplace(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// Info is what `wardsync ops cert show` prints about a certificate.
type Info struct {
	Identity  schema.PeerIdentity // zero for a certificate without one (a CA)
	Subject   string
	Serial    string // hex
	NotBefore time.Time
	NotAfter  time.Time
	Issuer    string
	DNSNames  []string
	IPs       []string
	IsCA      bool
	SHA256    string // fingerprint of the DER certificate, hex, to compare out of band
}

// Inspect describes the first CERTIFICATE block of pemBytes. A certificate
// with no wardsync identity (a CA) has a zero Identity; one whose identity
// does not parse is an error.
func Inspect(pemBytes []byte) (Info, error) {
	cert, err := firstCert(pemBytes)
	if err != nil {
		return Info{}, err
	}
	info := Info{
		Subject:   cert.Subject.String(),
		Serial:    cert.SerialNumber.Text(16),
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		Issuer:    cert.Issuer.String(),
		DNSNames:  cert.DNSNames,
		IsCA:      cert.IsCA,
	}
	sum := sha256.Sum256(cert.Raw)
	info.SHA256 = hex.EncodeToString(sum[:])
	for _, ip := range cert.IPAddresses {
		info.IPs = append(info.IPs, ip.String())
	}
	for _, u := range cert.URIs {
		if u.Scheme == schema.IdentityScheme {
			id, err := schema.PeerFromURIs(cert.URIs)
			if err != nil {
				return Info{}, err
			}
			info.Identity = id
			break
		}
	}
	return info, nil
}

// LoadBundle reads a node bundle dir (ca.crt, node.crt, node.key). It
// checks that the key belongs to node.crt, that node.crt chains to ca.crt
// for both server and client auth and is valid at now, and that it names
// one wardsync identity. It returns the certificate (Leaf set), a pool
// holding the CA, and the node's identity. Errors name the file.
func LoadBundle(dir string, now time.Time) (tls.Certificate, *x509.CertPool, schema.PeerIdentity, error) {
	var none schema.PeerIdentity
	caPath := filepath.Join(dir, CACertFile)
	certPath := filepath.Join(dir, NodeCertFile)
	keyPath := filepath.Join(dir, NodeKeyFile)

	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return tls.Certificate{}, nil, none, err
	}
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for rest := caPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return tls.Certificate{}, nil, none, fmt.Errorf("%s: %w", caPath, err)
		}
		if !c.IsCA {
			return tls.Certificate{}, nil, none, fmt.Errorf("%s: %q is not a CA certificate", caPath, c.Subject)
		}
		pool.AddCert(c)
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: no CERTIFICATE PEM block", caPath)
	}
	for _, c := range cas {
		if now.After(c.NotAfter) {
			return tls.Certificate{}, nil, none, fmt.Errorf("%s: the CA expired at %s", caPath, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}

	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, nil, none, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, nil, none, err
	}
	leaf, err := firstCert(certPEM)
	if err != nil {
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := decodeKey(keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !publicEqual(leaf.PublicKey, key.Public()) {
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: key does not belong to %s", keyPath, certPath)
	}
	switch {
	case now.After(leaf.NotAfter):
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: certificate expired at %s: issue a new one (wardsync ops cert issue)",
			certPath, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: certificate is not valid until %s: check this machine's clock",
			certPath, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			return tls.Certificate{}, nil, none, fmt.Errorf("%s: does not verify against %s: %w", certPath, caPath, err)
		}
	}
	id, err := schema.PeerFromURIs(leaf.URIs)
	if err != nil {
		return tls.Certificate{}, nil, none, fmt.Errorf("%s: %w", certPath, err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, pool, id, nil
}

// firstCert parses the first CERTIFICATE block of b.
func firstCert(b []byte) (*x509.Certificate, error) {
	sawKey := false
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
		sawKey = sawKey || strings.HasSuffix(blk.Type, "PRIVATE KEY")
	}
	if sawKey {
		return nil, errors.New("no CERTIFICATE PEM block (this is a private key)")
	}
	return nil, errors.New("no CERTIFICATE PEM block")
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// decodeKey reads a PKCS #8 ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY")
// PEM key.
func decodeKey(b []byte) (crypto.Signer, error) {
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("no PRIVATE KEY PEM block")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return s, nil
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		}
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// newSerial is a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// writeTemp writes data to a new temporary file beside path with mode,
// fsynced and closed, and returns its name.
func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	// CreateTemp makes the file 0600, so a key is never readable by others,
	// even for a moment.
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// writeNew writes path whole, failing with fs.ErrExist if it exists.
func writeNew(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// A hard link never replaces its target: the check and the write are
	// one step.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, fs.ErrExist)
		}
		return err
	}
	return nil
}

// writeReplace writes path whole, replacing it atomically if it exists.
func writeReplace(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
