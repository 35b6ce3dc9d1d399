package transport

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// FuzzPeerOf: the identity of every peer comes from its certificate's URI
// SANs. The SANs (one per line of the input) go into a real certificate,
// which is encoded and parsed back as crypto/tls would hand it over, and
// PeerOf reads it. Whatever the SANs, PeerOf never panics and a refusal
// wraps ErrUnauthorized or ErrInvalid; an identity it accepts comes from a
// non-CA certificate with exactly one wardsync URI, validates, and a
// certificate issued for its re-encoding (URI) names the same identity.
func FuzzPeerOf(f *testing.F) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	// certFor returns the parsed certificate carrying uris, or nil if
	// crypto/x509 will not encode or parse one with them.
	certFor := func(uris []*url.URL, isCA bool) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true, IsCA: isCA, URIs: uris,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil
		}
		return c
	}
	for _, s := range []string{
		"wardsync://city/c1", "wardsync://ward/w1a?ward=HCM001", "wardsync://backup/bk1?ward=HCM001&ward=HCM002",
		"wardsync://portal/web\nhttps://example.org/", "wardsync://city/c1\nwardsync://city/c2", "wardsync://city/c1\nwardsync://city/c1",
		"spiffe://city/c1", "", "wardsync://city/city", "wardsync://ward/w1a?ward=HCM001&x=1", "WARDSYNC://city/c1",
		"wardsync://u:p@city/c1", "wardsync://city/c%31#x", "wardsync://city/c1?ward=HCM001", "wardsync://ward/w1a\n\n",
		"wardsync://admin/ops\nmailto:it@example.org", "wardsync://ward/ü", "wardsync://city/c1 ",
	} {
		f.Add(s, false)
	}
	f.Add("wardsync://city/c1", true)
	f.Fuzz(func(t *testing.T, sans string, isCA bool) {
		var uris []*url.URL
		for _, line := range strings.Split(sans, "\n") {
			if line == "" {
				continue
			}
			u, err := url.Parse(line)
			if err != nil {
				return
			}
			uris = append(uris, u)
		}
		cert := certFor(uris, isCA)
		if cert == nil {
			return
		}
		p, err := PeerOf(cert)
		if err != nil {
			if !errors.Is(err, schema.ErrUnauthorized) && !errors.Is(err, schema.ErrInvalid) {
				t.Fatalf("PeerOf(%q) refused with %v, neither unauthorized nor invalid", sans, err)
			}
			return
		}
		if cert.IsCA {
			t.Fatalf("PeerOf accepted a CA certificate (%q) as %s", sans, p)
		}
		var ids []*url.URL
		for _, u := range cert.URIs {
			if u.Scheme == schema.IdentityScheme {
				ids = append(ids, u)
			}
		}
		if len(ids) != 1 {
			t.Fatalf("PeerOf accepted %s from a certificate with %d wardsync URIs: %q", p, len(ids), sans)
		}
		if want, err := schema.ParsePeerURI(ids[0]); err != nil || !reflect.DeepEqual(want, p) {
			t.Fatalf("PeerOf(%q) = %+v, but its URI parses as %+v, %v", sans, p, want, err)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("PeerOf(%q) = %+v, which does not validate: %v", sans, p, err)
		}
		again := certFor([]*url.URL{p.URI()}, false)
		if again == nil {
			t.Fatalf("identity %+v (from %q) cannot be put in a certificate", p, sans)
		}
		if p2, err := PeerOf(again); err != nil || !reflect.DeepEqual(p2, p) || p2.String() != p.String() {
			t.Fatalf("identity %+v (from %q) re-issued reads as %+v, %v", p, sans, p2, err)
		}
	})
}
