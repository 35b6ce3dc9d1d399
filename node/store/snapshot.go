package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"

	"github.com/wardsync/wardsync/node/store/crashpoint"
)

// Snapshots stream the whole keyspace as it was at one moment, for Raft.
// The stream is:
//
//	magic "WSNAP1\n"
//	repeated: uvarint key length (>0), key, uvarint value length, value
//	uvarint 0 (end), then 32 bytes: SHA-256 of every key and value, each
//	length-prefixed as above (the state hash)
//
// Restore recomputes the state hash from what it loaded and refuses a
// stream whose hash does not match.

var snapMagic = []byte("WSNAP1\n")

// ErrSnapshotCorrupt is returned when a snapshot stream fails its checks.
var ErrSnapshotCorrupt = errors.New("store: snapshot corrupt")

// Snapshot is a consistent read view of the store, held open until
// Release. Taking one is instant; writes go on meanwhile.
type Snapshot struct{ txn *badger.Txn }

// Snapshot opens a read view at the current state.
func (s *Store) Snapshot() *Snapshot { return &Snapshot{txn: s.db.NewTransaction(false)} }

// Release frees the view.
func (sn *Snapshot) Release() { sn.txn.Discard() }

func hashKV(h hash.Hash, k, v []byte) {
	var lb [binary.MaxVarintLen64]byte
	h.Write(lb[:binary.PutUvarint(lb[:], uint64(len(k)))])
	h.Write(k)
	h.Write(lb[:binary.PutUvarint(lb[:], uint64(len(v)))])
	h.Write(v)
}

// Stream writes the view and returns its state hash.
func (sn *Snapshot) Stream(w io.Writer) ([32]byte, error) {
	var sum [32]byte
	bw := bufio.NewWriterSize(w, 1<<20)
	h := sha256.New()
	if _, err := bw.Write(snapMagic); err != nil {
		return sum, err
	}
	opts := badger.DefaultIteratorOptions
	it := sn.txn.NewIterator(opts)
	defer it.Close()
	var lb [binary.MaxVarintLen64]byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		err := item.Value(func(v []byte) error {
			hashKV(h, k, v)
			bw.Write(lb[:binary.PutUvarint(lb[:], uint64(len(k)))])
			bw.Write(k)
			bw.Write(lb[:binary.PutUvarint(lb[:], uint64(len(v)))])
			_, err := bw.Write(v)
			return err
		})
		if err != nil {
			return sum, fmt.Errorf("store: snapshot: %w", err)
		}
	}
	copy(sum[:], h.Sum(nil))
	bw.Write([]byte{0})
	bw.Write(sum[:])
	return sum, bw.Flush()
}

// StateHash hashes the current keyspace the way snapshots do.
func (s *Store) StateHash() ([32]byte, error) {
	sn := s.Snapshot()
	defer sn.Release()
	var sum [32]byte
	h := sha256.New()
	it := sn.txn.NewIterator(badger.DefaultIteratorOptions)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if err := it.Item().Value(func(v []byte) error { hashKV(h, k, v); return nil }); err != nil {
			return sum, err
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// maxSnapEntry bounds one key or value in a snapshot stream.
const maxSnapEntry = 64 << 20

// Restore replaces the whole store with a snapshot stream. It never loads
// the stream in one transaction (badger's "Txn is too big" has killed
// clusters that did): it drops everything, then streams entries through a
// write batch, and finally checks the state hash of what it loaded. No
// writes may run concurrently; Raft guarantees that for its FSM.
func (s *Store) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || !bytes.Equal(magic, snapMagic) {
		return fmt.Errorf("%w: bad header", ErrSnapshotCorrupt)
	}
	// A marker file says "half restored" until the end: a crash in between
	// leaves it, and the next start restores again instead of trusting a
	// partial state (see Restoring).
	marker := filepath.Join(s.db.Opts().Dir, restoringMarker)
	if err := writeMarker(marker); err != nil {
		return err
	}
	if err := s.db.DropAll(); err != nil {
		return fmt.Errorf("store: restore: drop: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	h := sha256.New()
	readBytes := func(n uint64) ([]byte, error) {
		if n > maxSnapEntry {
			return nil, fmt.Errorf("%w: entry of %d bytes", ErrSnapshotCorrupt, n)
		}
		b := make([]byte, n)
		_, err := io.ReadFull(br, b)
		return b, err
	}
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
		}
		if kl == 0 {
			break
		}
		k, err := readBytes(kl)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
		}
		v, err := readBytes(vl)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
		}
		hashKV(h, k, v)
		if err := wb.Set(k, v); err != nil {
			return fmt.Errorf("store: restore: %w", err)
		}
		// A crash here leaves part of the snapshot loaded: the marker
		// makes the next start restore again.
		crashpoint.HitAfter(crashpoint.RestoreMid, func() { wb.Flush(); s.db.Sync() })
	}
	var want [32]byte
	if _, err := io.ReadFull(br, want[:]); err != nil {
		return fmt.Errorf("%w: missing state hash", ErrSnapshotCorrupt)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("%w: stream does not match its state hash", ErrSnapshotCorrupt)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	// Verify what is now on disk, not only what passed through.
	got, err := s.StateHash()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: restored state hash %x, snapshot says %x", ErrSnapshotCorrupt, got[:8], want[:8])
	}
	if err := os.Remove(marker); err != nil {
		return err
	}
	return syncDir(filepath.Dir(marker))
}

const restoringMarker = "RESTORING"

// Restoring reports whether a snapshot restore began and did not finish:
// the state is partial and must be restored again before use.
func (s *Store) Restoring() bool {
	_, err := os.Stat(filepath.Join(s.db.Opts().Dir, restoringMarker))
	return err == nil
}

func writeMarker(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
