package blobstore

import "github.com/dgraph-io/badger/v4"

// SetRawChunk writes data under chunk h's key as it is, without the hash
// check PutChunk makes: what a rotted disk or a bug would leave.
func (s *Store) SetRawChunk(h [32]byte, data []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(chunkKey(h), data) })
}
