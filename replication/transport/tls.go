package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// defaultAllow is the ALPN → roles table used when Config.Allow is nil:
// only city members speak raft; ward, backup and city nodes sync and move
// blobs.
func defaultAllow() map[string][]schema.PeerRole {
	return map[string][]schema.PeerRole{
		ALPNRaft: {schema.PeerCity},
		ALPNSync: {schema.PeerWard, schema.PeerBackup, schema.PeerCity},
		ALPNBlob: {schema.PeerWard, schema.PeerBackup, schema.PeerCity},
	}
}

// PeerOf parses and validates the identity in a verified leaf certificate.
// The certificate must carry exactly one wardsync URI SAN and must not be a
// CA certificate. PeerOf does not check the chain: the caller passes a leaf
// that has already been verified.
func PeerOf(cert *x509.Certificate) (schema.PeerIdentity, error) {
	if cert == nil {
		return schema.PeerIdentity{}, fmt.Errorf("%w: no certificate", schema.ErrUnauthorized)
	}
	if cert.IsCA {
		return schema.PeerIdentity{}, fmt.Errorf("%w: a CA certificate identifies no peer", schema.ErrUnauthorized)
	}
	p, err := schema.PeerFromURIs(cert.URIs)
	if err != nil {
		return schema.PeerIdentity{}, err
	}
	return p, nil
}

// verifyChain checks that leaf (with the intermediates the peer sent) chains
// to the CA, for the given extended key usage, at time now.
func verifyChain(certs []*x509.Certificate, ca *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return fmt.Errorf("%w: peer sent no certificate", schema.ErrUnauthorized)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         ca,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("%w: certificate %q: %v", schema.ErrUnauthorized, certs[0].Subject.CommonName, err)
	}
	return nil
}

// roleAllowed reports whether role is in roles.
func roleAllowed(role schema.PeerRole, roles []schema.PeerRole) bool {
	return slices.Contains(roles, role)
}

// serverTLS is the listening side's TLS configuration. NextProtos is filled
// per connection from the registered handlers (GetConfigForClient), so a
// client offering only unregistered ALPNs fails with no_application_protocol.
func (e *Endpoint) serverTLS() *tls.Config {
	base := &tls.Config{
		MinVersion:   tls.VersionTLS13, // quic-go forces it too
		Certificates: []tls.Certificate{e.cfg.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    e.cfg.CA,
		Time:         e.now,
		// crypto/tls has verified the chain (ClientCAs, clientAuth usage,
		// validity at Time); what is left is who the peer is and whether its
		// role may open this ALPN.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: client certificate not verified", schema.ErrUnauthorized)
			}
			p, err := PeerOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			roles, ok := e.allow[cs.NegotiatedProtocol]
			if !ok || !roleAllowed(p.Role, roles) {
				return fmt.Errorf("%w: %s (role %s) may not open %q", schema.ErrUnauthorized, p, p.Role, cs.NegotiatedProtocol)
			}
			return nil
		},
		// Session tickets are still issued (Dial uses the ticket as the sign
		// that the server accepted the client), but never accepted: every
		// connection does a full handshake with a fresh certificate check,
		// and resumption (hence 0-RTT) never happens.
		UnwrapSession: func([]byte, tls.ConnectionState) (*tls.SessionState, error) {
			return nil, nil
		},
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.NextProtos = e.protos()
		return c, nil
	}
	return cfg
}

// clientTLS is the dialing side's TLS configuration for one Dial.
func (e *Endpoint) clientTLS(serverName, alpn string, want []schema.PeerRole, confirm *confirmCache) *tls.Config {
	cert := e.cfg.Cert
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		ServerName: serverName,
		// Always present our certificate. (With Certificates, crypto/tls
		// sends nothing when the server's acceptable-CA list does not match,
		// which turns "wrong CA" into a less helpful "no certificate".)
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		// Identities are URI SANs, not host names: crypto/tls's host-name
		// verification cannot be used, so it is skipped and the chain is
		// verified below, against the city CA, for serverAuth, at cfg.Now.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyChain(cs.PeerCertificates, e.cfg.CA, e.now(), x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			p, err := PeerOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("server negotiated ALPN %q, want %q", cs.NegotiatedProtocol, alpn)
			}
			if len(want) > 0 && !roleAllowed(p.Role, want) {
				return fmt.Errorf("%w: server %s has role %s, want one of %v", schema.ErrUnauthorized, p, p.Role, want)
			}
			return nil
		},
		Time:               e.now,
		ClientSessionCache: confirm,
	}
}

// confirmCache is a tls.ClientSessionCache that never resumes a session and
// turns the arrival of the server's first session ticket into a signal: a
// TLS 1.3 server sends NewSessionTicket only after it has verified the
// client's certificate and finished its side of the handshake.
type confirmCache struct {
	once sync.Once
	done chan struct{}
}

func newConfirmCache() *confirmCache { return &confirmCache{done: make(chan struct{})} }

func (c *confirmCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

func (c *confirmCache) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.once.Do(func() { close(c.done) })
	}
}

// errNotConfirmed is returned by Dial when the server completed the TLS
// handshake but never showed it accepted our certificate.
var errNotConfirmed = errors.New("server did not confirm the handshake")

// now is the time certificates are checked against (Config.Now).
func (e *Endpoint) now() time.Time { return e.cfg.Now() }

// ClientTLS is a TLS client configuration for talking to wardsync nodes
// over TCP (the city's HTTPS API): it presents cert, and accepts a server
// only if its certificate chains to the city CA and names one of the
// wanted roles. Servers are identified by their wardsync identity, not by
// host name, as on QUIC.
func ClientTLS(cert tls.Certificate, ca *x509.CertPool, want ...schema.PeerRole) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		// Host-name verification is replaced by the chain and identity
		// check below.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs = append(certs, c)
			}
			if err := verifyChain(certs, ca, time.Now(), x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("server certificate is not from the city CA: %w", err)
			}
			p, err := PeerOf(certs[0])
			if err != nil {
				return err
			}
			if len(want) > 0 && !roleAllowed(p.Role, want) {
				return fmt.Errorf("%w: server is %s, want one of %v", schema.ErrUnauthorized, p, want)
			}
			return nil
		},
	}
}
