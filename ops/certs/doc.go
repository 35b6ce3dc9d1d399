// Package certs is the city's certificate authority: it creates the CA,
// issues node certificates that carry a schema.PeerIdentity in a URI SAN,
// writes and loads the bundles nodes use for mutual TLS, and inspects
// certificates for operators.
//
// A CA directory holds ca.crt and ca.key; ca.key belongs on an offline
// machine. A node bundle directory holds ca.crt (the city CA, to verify
// peers), node.crt and node.key. Every node certificate is good for both
// server and client authentication, since every node both dials and is
// dialed.
//
// Keys are ECDSA P-256, stored as PKCS #8 "PRIVATE KEY" PEM with mode 0600.
// There is no revocation list yet: a leaked key is dealt with by re-keying
// the CA and re-issuing every certificate (docs/certificates.md).
package certs
