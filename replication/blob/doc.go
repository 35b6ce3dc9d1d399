// Package blob moves attachments' blobs between nodes over QUIC, on the
// blob ALPN, one blob per stream (see wire/blob.go for the messages):
//
//   - a ward puts the blobs of its own attach ops to a city member, and
//     gets the blobs of its ward's dossiers made elsewhere, in the
//     background, and any other blob it may read on demand;
//   - a city member that receives a blob copies it to other members until
//     a majority holds it, and only then proposes the Raft command that
//     lets the FSM apply the attach ops waiting for it; a member missing a
//     stored blob (new, restored, or after a scrub found rot) gets it from
//     its peers.
//
// Only the chunks the receiver lacks move, one in flight at a time, each
// checked against its SHA-256 on arrival: a transfer cut at any byte
// resumes at the first chunk the receiver lacks and re-sends at most the
// chunk that was cut. Blobs never share a stream with ops, so a dossier's
// status never waits behind its scans; a ward also pauses its blob
// transfers while it has ops the city has not acknowledged.
//
// The package decides who may read which blob on the city (a ward: blobs
// referred to by its ward's dossiers or its tracking copies); the stores
// (node/blobstore, node/store) only keep bytes and records.
package blob
