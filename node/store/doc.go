// Package store is a node's durable state on badger: the op log, the
// materialized dossiers and their indexes, counters, officials and the
// node's identity. Every key family is laid out in keys.go and nowhere else.
//
// A write is acknowledged only after it is fsynced. Concurrent writers share
// fsyncs through a group committer: one goroutine gathers the writes that
// arrived while the previous fsync ran and commits them as one badger
// transaction. The store must never silently drop data: it refuses to open
// a damaged log (walcheck.go) and, once a commit fails, refuses every later
// write with that error rather than pretend.
package store
