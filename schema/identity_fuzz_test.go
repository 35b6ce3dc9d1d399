package schema

import (
	"errors"
	"net/url"
	"reflect"
	"testing"
)

// FuzzParsePeerURI: a certificate's identity SAN is parsed on every
// connection. Whatever the URI, ParsePeerURI never panics and a refusal
// wraps ErrInvalid; an identity it accepts validates, and re-encodes (URI)
// into a URI that parses back to the same identity, with the same string.
func FuzzParsePeerURI(f *testing.F) {
	for _, s := range []string{
		"wardsync://city/c1", "wardsync://ward/w1a?ward=HCM001", "wardsync://backup/bk1?ward=HCM001&ward=HCM002",
		"wardsync://admin/ops", "wardsync://portal/web", "wardsync://city/city", "wardsync://ward/w1a",
		"wardsync://ward/w1a?ward=HCM001&ward=HCM002", "wardsync://city/c1?ward=HCM001", "wardsync://city/c1?x=1",
		"wardsync://CITY/c1", "WARDSYNC://city/c1", "wardsync://city/C1", "wardsync://city/c1/", "wardsync://city//c1",
		"wardsync://city", "wardsync://city/", "wardsync:city/c1", "wardsync:///c1", "wardsync://user@city/c1",
		"wardsync://city:80/c1", "wardsync://c%69ty/c1", "wardsync://city/c%31", "wardsync://city/c1#frag",
		"wardsync://ward/w1a?ward=HCM001;ward=HCM002", "wardsync://ward/w1a?ward=HCM%30%301", "wardsync://ward/w1a?ward=",
		"wardsync://ward/w1a?ward", "wardsync://backup/bk1?ward=HCM001&ward=HCM001", "wardsync://city/-c1",
		"wardsync://city/" + "a23456789012345678901234567890123", "spiffe://city/c1", "", "%", "wardsync://city/c1\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		p, err := ParsePeerURI(u)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParsePeerURI(%q) refused with %v, which does not wrap ErrInvalid", s, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParsePeerURI(%q) accepted %+v, which does not validate: %v", s, p, err)
		}
		enc := p.URI().String()
		back, err := url.Parse(enc)
		if err != nil {
			t.Fatalf("identity %+v (from %q) encodes as %q, which does not parse: %v", p, s, enc, err)
		}
		p2, err := ParsePeerURI(back)
		if err != nil {
			t.Fatalf("identity %+v (from %q) encodes as %q, which is refused: %v", p, s, enc, err)
		}
		if !reflect.DeepEqual(p, p2) || p2.String() != enc {
			t.Fatalf("round trip of %q: %+v → %q → %+v", s, p, enc, p2)
		}
		// A certificate carrying it (and a URI of another scheme) names it.
		other, _ := url.Parse("https://example.org/x")
		if got, err := PeerFromURIs([]*url.URL{other, u}); err != nil || !reflect.DeepEqual(got, p) {
			t.Fatalf("PeerFromURIs(%q) = %+v, %v; want %+v", s, got, err, p)
		}
		if _, err := PeerFromURIs([]*url.URL{u, back}); err == nil {
			t.Fatalf("a certificate with two identities (%q, %q) was accepted", s, enc)
		}
	})
}
