package certs

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

// FuzzInspect: `wardsync ops cert show FILE` describes whatever file it is
// given. Whatever the bytes, Inspect never panics; a certificate it reads
// with an identity has exactly that identity in its one wardsync URI,
// valid and stable through a re-encoding; one without any wardsync URI
// reads with a zero identity.
func FuzzInspect(f *testing.F) {
	ca, err := InitCA(filepath.Join(f.TempDir(), "ca"), "", DefaultCAValidity, t0)
	if err != nil {
		f.Fatal(err)
	}
	for _, id := range []schema.PeerIdentity{
		{Role: schema.PeerWard, Node: "w-26734", Wards: []string{"26734"}},
		{Role: schema.PeerBackup, Node: "bk1", Wards: []string{"26734", "26737"}},
		{Role: schema.PeerCity, Node: "c1"},
	} {
		certPEM, keyPEM, err := ca.Issue(IssueParams{Identity: id, Validity: DefaultCAValidity / 2, Now: t0, DNSNames: []string{"c1.city.local"}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(certPEM)
		f.Add(keyPEM)
		f.Add(append(append([]byte(nil), keyPEM...), certPEM...))
	}
	f.Add(ca.CertPEM())
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("not a certificate"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Inspect(data)
		if err != nil {
			return
		}
		cert, err := firstCert(data)
		if err != nil {
			t.Fatalf("Inspect read a certificate firstCert refuses: %v", err)
		}
		var n int
		for _, u := range cert.URIs {
			if u.Scheme == schema.IdentityScheme {
				n++
			}
		}
		zero := reflect.DeepEqual(info.Identity, schema.PeerIdentity{})
		switch {
		case n == 0 && !zero:
			t.Fatalf("identity %+v from a certificate without one", info.Identity)
		case n > 0 && zero:
			t.Fatalf("a certificate with %d wardsync URIs read with no identity and no error", n)
		case n > 1:
			t.Fatalf("a certificate with %d wardsync URIs read as %+v", n, info.Identity)
		case n == 0:
			return
		}
		p := info.Identity
		if err := p.Validate(); err != nil {
			t.Fatalf("Inspect gave identity %+v, which does not validate: %v", p, err)
		}
		again, err := schema.ParsePeerURI(p.URI())
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("identity %+v re-encodes as %s, which reads as %+v, %v", p, p.URI(), again, err)
		}
	})
}
