package schema

import (
	"errors"
	"net/url"
	"testing"
)

func TestPeerIdentityRoundTrip(t *testing.T) {
	cases := []struct {
		p  PeerIdentity
		ok bool
	}{
		{PeerIdentity{Role: PeerCity, Node: "c1"}, true},
		{PeerIdentity{Role: PeerWard, Node: "hcm001-a", Wards: []string{"HCM001"}}, true},
		{PeerIdentity{Role: PeerBackup, Node: "b7", Wards: []string{"HCM001", "HCM002"}}, true},
		{PeerIdentity{Role: PeerAdmin, Node: "it-desk"}, true},
		{PeerIdentity{Role: PeerPortal, Node: "portal"}, true},
		{PeerIdentity{Role: PeerWard, Node: "w"}, false},                                      // ward without ward
		{PeerIdentity{Role: PeerWard, Node: "w", Wards: []string{"HCM001", "HCM002"}}, false}, // two wards
		{PeerIdentity{Role: PeerCity, Node: "c1", Wards: []string{"HCM001"}}, false},          // city with ward
		{PeerIdentity{Role: "root", Node: "c1"}, false},                                       // unknown role
		{PeerIdentity{Role: PeerCity, Node: "C1"}, false},                                     // bad node
		{PeerIdentity{Role: PeerBackup, Node: "b", Wards: []string{"hcm001"}}, false},         // bad code
	}
	for _, c := range cases {
		err := c.p.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%+v: Validate = %v", c.p, err)
			continue
		}
		if !c.ok {
			continue
		}
		got, err := ParsePeerURI(c.p.URI())
		if err != nil || got.String() != c.p.String() {
			t.Errorf("round trip of %s: %v, %v", c.p, got, err)
		}
	}
}

func TestPeerFromURIs(t *testing.T) {
	a, _ := url.Parse("wardsync://city/c1")
	b, _ := url.Parse("wardsync://city/c2")
	other, _ := url.Parse("https://example.org/x")
	bad, _ := url.Parse("wardsync://city/c1?role=admin")
	if p, err := PeerFromURIs([]*url.URL{other, a}); err != nil || p.Node != "c1" {
		t.Fatalf("one identity among others: %v %v", p, err)
	}
	for _, uris := range [][]*url.URL{nil, {other}, {a, b}} {
		if _, err := PeerFromURIs(uris); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%v: %v, want ErrUnauthorized", uris, err)
		}
	}
	if _, err := PeerFromURIs([]*url.URL{bad}); err == nil {
		t.Error("unknown parameter accepted")
	}
}

func TestMayServe(t *testing.T) {
	w := PeerIdentity{Role: PeerWard, Node: "w", Wards: []string{"HCM001"}}
	bk := PeerIdentity{Role: PeerBackup, Node: "b", Wards: []string{"HCM002", "HCM003"}}
	if !w.MayServe("HCM001") || w.MayServe("HCM002") || !bk.MayServe("HCM003") || bk.MayServe("HCM001") ||
		(PeerIdentity{Role: PeerPortal, Node: "p"}).MayServe("HCM001") || !(PeerIdentity{Role: PeerCity, Node: "c"}).MayServe("HCM009") {
		t.Fatal("MayServe rules broken")
	}
}
