package schema

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// PeerRole is what a certified node is to the city: it decides which
// protocols the node may speak and which wards it may read and write.
type PeerRole string

// Peer roles named in certificates.
const (
	PeerCity   PeerRole = "city"   // a member of the city cluster
	PeerWard   PeerRole = "ward"   // a ward office's edge node
	PeerBackup PeerRole = "backup" // a backup office that may take wards over
	PeerAdmin  PeerRole = "admin"  // city IT's operator tools
	PeerPortal PeerRole = "portal" // the online portal's intake
)

// PeerRoles lists every role a certificate may carry.
var PeerRoles = []PeerRole{PeerCity, PeerWard, PeerBackup, PeerAdmin, PeerPortal}

// Valid reports whether r is a known peer role.
func (r PeerRole) Valid() bool { return slices.Contains(PeerRoles, r) }

// PeerIdentity is who a certificate says its holder is. It travels in the
// certificate as one URI SAN:
//
//	wardsync://<role>/<node>?ward=<code>&ward=<code>
type PeerIdentity struct {
	Role  PeerRole
	Node  string
	Wards []string
}

// ReservedOrigin is the origin of ops the city makes itself.
const ReservedOrigin = "city"

// IdentityScheme is the URI scheme of a PeerIdentity SAN.
const IdentityScheme = "wardsync"

var (
	peerNodeRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
)

// Validate checks an identity's shape: a known role, a node ID, ward codes
// where the role needs them (ward and backup need at least one; city, admin
// and portal carry none).
func (p PeerIdentity) Validate() error {
	if !p.Role.Valid() {
		return fieldErr("role", "%q is not one of city, ward, backup, admin, portal", p.Role)
	}
	if !peerNodeRe.MatchString(p.Node) {
		return fieldErr("node", "%q must be 1-32 lower-case letters, digits and -", p.Node)
	}
	if p.Node == ReservedOrigin {
		// The city's own ops (portal intake) carry this origin; no
		// certificate may claim it.
		return fieldErr("node", "%q is reserved for the city's own ops", p.Node)
	}
	for _, w := range p.Wards {
		if !wardCodeRe.MatchString(w) {
			return fieldErr("ward", "%q is not a ward code", w)
		}
	}
	switch p.Role {
	case PeerWard, PeerBackup:
		if len(p.Wards) == 0 {
			return fieldErr("ward", "a %s certificate must name at least one ward", p.Role)
		}
		if p.Role == PeerWard && len(p.Wards) != 1 {
			return fieldErr("ward", "a ward certificate names exactly one ward")
		}
	default:
		if len(p.Wards) != 0 {
			return fieldErr("ward", "a %s certificate names no wards", p.Role)
		}
	}
	return nil
}

// URI returns the identity as its SAN URI.
func (p PeerIdentity) URI() *url.URL {
	q := url.Values{}
	for _, w := range p.Wards {
		q.Add("ward", w)
	}
	return &url.URL{Scheme: IdentityScheme, Host: string(p.Role), Path: "/" + p.Node, RawQuery: q.Encode()}
}

func (p PeerIdentity) String() string { return p.URI().String() }

// MayServe reports whether the identity may act for ward: its own ward for
// a ward node, the wards it names for a backup, any ward for the city.
func (p PeerIdentity) MayServe(ward string) bool {
	switch p.Role {
	case PeerCity:
		return true
	case PeerWard, PeerBackup:
		return slices.Contains(p.Wards, ward)
	}
	return false
}

// ParsePeerURI reads an identity from a SAN URI and validates it.
func ParsePeerURI(u *url.URL) (PeerIdentity, error) {
	if u == nil || u.Scheme != IdentityScheme {
		return PeerIdentity{}, fmt.Errorf("%w: not a %s:// identity", ErrInvalid, IdentityScheme)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return PeerIdentity{}, fmt.Errorf("%w: identity %s: %v", ErrInvalid, u, err)
	}
	for k := range q {
		if k != "ward" {
			return PeerIdentity{}, fmt.Errorf("%w: identity %s: unknown parameter %q", ErrInvalid, u, k)
		}
	}
	p := PeerIdentity{Role: PeerRole(u.Host), Node: strings.TrimPrefix(u.Path, "/"), Wards: q["ward"]}
	if err := p.Validate(); err != nil {
		return PeerIdentity{}, fmt.Errorf("identity %s: %w", u, err)
	}
	return p, nil
}

// PeerFromURIs finds the one wardsync identity among a certificate's URI
// SANs. A certificate with none, or with two, identifies nobody.
func PeerFromURIs(uris []*url.URL) (PeerIdentity, error) {
	var found []*url.URL
	for _, u := range uris {
		if u.Scheme == IdentityScheme {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return PeerIdentity{}, fmt.Errorf("%w: certificate carries %d wardsync identities, want 1", ErrUnauthorized, len(found))
	}
	return ParsePeerURI(found[0])
}
