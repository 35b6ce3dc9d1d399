// Package cluster is the city tier: a hashicorp/raft group whose log lives
// in a badger store of its own (raftlog), whose FSM applies batches of ops
// to a node/store on badger, and whose traffic runs over the QUIC endpoint
// (raft on its own ALPN; forwarding from followers to the leader on the
// sync ALPN). It also serves the city's HTTPS API.
//
// The FSM must be deterministic: everything it writes is computed from the
// Raft entry alone (IDs, times and due dates are fixed by the member that
// proposed it), so every member holds byte-identical state. It must never
// import cmd/ or ops/.
package cluster
