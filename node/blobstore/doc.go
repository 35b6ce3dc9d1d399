// Package blobstore keeps a node's attachments: content-addressed chunks
// (SHA-256, schema.ChunkSize each) and the manifests that list them, in a
// badger database of their own beside the node's state store.
//
// Blobs live apart from the state store for two reasons. On a city member
// the state store is the Raft FSM, whose snapshots stream the whole
// keyspace: gigabytes of scans would make every snapshot huge, and members
// legitimately differ in which blobs they hold (a majority stores a blob
// before it is committed, the rest catch up), which would break the equal
// state hashes that prove replicas agree. And chunk writes are large and
// bursty: they must not share a group commit with a clerk's create.
//
// Every write is fsynced before it returns (badger's SyncWrites), so a
// blob is durable once its last write returns. Every chunk's hash is checked when it
// is stored, and again by Scrub, so a chunk read back is the chunk that was
// sent. Identical content is stored once: a chunk or manifest already held
// is not written again.
//
// The package must never decide who may read a blob; callers do.
package blobstore
