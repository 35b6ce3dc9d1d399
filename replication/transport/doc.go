// Package transport is wardsync's one network endpoint: a single UDP socket
// carrying QUIC, with mutual TLS 1.3 against the city CA, and ALPN picking
// the protocol a connection speaks (raft, sync, blob).
//
// One [Endpoint] per process both listens and dials from the same socket
// (one quic.Transport), so a peer sees the same address whichever side opened
// the connection.
//
// # Authentication
//
// Every certificate must chain to the city CA and carry exactly one wardsync
// identity URI SAN (see schema.PeerIdentity). Identities are URIs, not host
// names, so neither side checks a host name:
//
//   - The server requires and verifies a client certificate (ClientAuth
//     RequireAndVerifyClientCert, ClientCAs = the CA, extended key usage
//     clientAuth), then in VerifyConnection parses the identity and checks that
//     its role may open the negotiated ALPN (Config.Allow).
//   - The client skips crypto/tls's host-name verification and verifies the
//     server's chain itself, against the same CA, for serverAuth, at
//     Config.Now, then parses the identity and checks the roles Dial wants.
//
// A refusal is a TLS alert during the handshake: the server never hands a
// refused connection to a handler. The server logs every refusal at WARN with
// the remote address and reason.
//
// In TLS 1.3 a client finishes its handshake before the server has checked the
// client's certificate. So that Dial reports the server's refusal as an error
// instead of returning a connection that dies a moment later, Dial waits until
// the server shows it accepted the client: the server's NewSessionTicket, which
// crypto/tls sends only after verifying the client. The ticket is never used to
// resume (the client cache never returns it and the server refuses tickets), so
// every connection does a full handshake and certificate check.
//
// # 0-RTT
//
// 0-RTT data can be replayed by an attacker, so it is refused: the endpoint
// listens with quic.Transport.Listen (never ListenEarly) and dials with
// quic.Transport.Dial (never DialEarly), and no session is ever resumed.
//
// # Streams
//
// quic-go opens a stream lazily: the peer's AcceptStream returns only once the
// opener has written to it (or closed it). A protocol that opens a stream and
// then waits to read must write first.
//
// [StreamConn] adapts a stream to net.Conn for hashicorp/raft's
// NetworkTransport.
//
// # UDP buffers
//
// quic-go wants 7 MiB socket buffers and logs "failed to sufficiently increase
// receive buffer size" when the kernel caps them; docs/udp-buffers.md says how
// to raise net.core.rmem_max and wmem_max.
package transport
