// Package node is the ward edge node: the dossier service on top of the
// durable store, officials and their tokens, the HTTP API and the metrics.
// It works with no network at all; replication (a later layer) only moves
// the ops this package writes.
//
// It must never import cmd/ or ops/, and never acknowledge a write before
// the store says it is on disk.
package node
