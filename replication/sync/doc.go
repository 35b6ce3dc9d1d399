// Package sync moves ops between a ward and the city over QUIC (the sync
// ALPN), in both directions:
//
//   - push (ward → city): Hello → Welcome + Ack{high-water}; then OpBatch
//     frames, each committed through Raft as one entry and answered with
//     Ack{seq}. The ward moves its push cursor on each Ack; its ops stay in
//     its log forever.
//   - pull (city → ward): Hello, Cursor{ward, since} → Welcome; then
//     ChangesPage frames of the ward's partition in commit order, and live
//     pages as new commits land. The ward stores the ops and the cursor in
//     one badger transaction.
//
// Ops are deduplicated by ID everywhere, so any transfer can be cut at any
// byte and retried. The city authorizes every op by the pusher's
// certificate (in the FSM, so all members agree); it verifies a batch's
// signatures through the origin's hash chain: the signature of the last
// op covers the hash of the one before it, and so on back to the first,
// whose own signature is checked too.
//
// The package name shadows the standard library's; import it as wsync.
package sync
