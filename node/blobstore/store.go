package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Key layout (the whole of it):
//
//	c/<sha256:32>   chunk bytes
//	m/<sha256:32>   manifest of a blob: created u64 ms, size u64, type, chunk hashes
var (
	prefixChunk    = []byte("c/")
	prefixManifest = []byte("m/")
)

func chunkKey(h [32]byte) []byte    { return append(append([]byte(nil), prefixChunk...), h[:]...) }
func manifestKey(h [32]byte) []byte { return append(append([]byte(nil), prefixManifest...), h[:]...) }

// ErrBadChunk is a chunk whose bytes do not hash to its name.
var ErrBadChunk = fmt.Errorf("%w: chunk does not match its hash", schema.ErrInvalid)

// ErrMissing is a blob or chunk this node does not hold.
var ErrMissing = fmt.Errorf("%w: blob not held here", schema.ErrNotFound)

// ErrUnsupportedType is content of a type attachments may not have.
var ErrUnsupportedType = fmt.Errorf("%w: not an allowed attachment type", schema.ErrUnsupportedType)

// Options configure a Store.
type Options struct {
	Dir           string
	EncryptionKey []byte
	Logger        *slog.Logger
	Now           func() time.Time
	// GCInterval is how often badger's value log is compacted (0: 10m).
	GCInterval time.Duration
	// RecoverDamage opens a store whose logs are damaged mid-way, keeping
	// a copy of the damaged files, instead of refusing to start: for a city
	// member, whose every blob has copies on its peers. A ward may hold
	// scans nobody else has, and refuses.
	RecoverDamage bool
	// Space, if set, refuses new chunks and manifests (a
	// *diskspace.LowError) while the disk has less than its reserve free.
	Space *diskspace.Guard
}

// Store is a node's blob database.
type Store struct {
	db    *badger.DB
	dir   string
	log   *slog.Logger
	now   func() time.Time
	space *diskspace.Guard
	quit  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	// gcMu keeps GC out while chunks and manifests are written: GC holds
	// it for writing from its first read to its last delete, so it never
	// deletes a chunk that a manifest written meanwhile lists.
	gcMu sync.RWMutex
}

// Open opens (creating if needed) the blob store in o.Dir.
func Open(o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.GCInterval <= 0 {
		o.GCInterval = 10 * time.Minute
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "incoming"), 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	// Leftovers of uploads cut short by a crash were never acknowledged.
	if stale, err := filepath.Glob(filepath.Join(o.Dir, "incoming", "*")); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	dbDir := filepath.Join(o.Dir, "db")
	if err := os.MkdirAll(dbDir, 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := store.PrepareLogs(dbDir, o.Logger); err != nil {
		if !o.RecoverDamage || !errors.Is(err, store.ErrLogDamaged) {
			return nil, fmt.Errorf("blobstore: %w (scans already stored at the city are fetched again if this store is replaced: stop the node, move %s aside, keeping it since it holds any scan not uploaded yet, and start the node)", err, o.Dir)
		}
		// A city member's blobs all have copies on other members: keep the
		// damaged files as evidence, open what is readable, and let the
		// repair loop fetch what the damage cost.
		kept, qerr := store.Quarantine(dbDir, o.Now())
		if qerr != nil {
			return nil, fmt.Errorf("blobstore: %w; and keeping a copy failed: %v", err, qerr)
		}
		o.Logger.Error("blobstore: log damaged; opening without the damaged entries, which are fetched again from peers", "err", err, "copy", kept)
	}
	if err := store.CheckFiles(dbDir, o.EncryptionKey); err != nil {
		var de *store.DamageError
		if errors.As(err, &de) {
			de.Recovery = fmt.Sprintf("To recover, stop the node and move %s aside, keeping it, since it holds any scan not uploaded yet, and start the node: "+
				"scans already stored at the city (or, on a city member, at its peers) are fetched again", o.Dir)
		}
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	bo := badger.DefaultOptions(dbDir).
		// Every write is synced. Sync alone is not enough: badger's Sync
		// flushes only the active memtable's log, and a memtable swapped
		// out meanwhile would lose the pointers to chunks already
		// acknowledged. At 1 MiB per write the fsyncs are cheap.
		WithSyncWrites(true).
		WithVerifyValueChecksum(true).
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithDetectConflicts(false).
		// Chunks go to the value log, keeping the LSM tree tiny.
		WithValueThreshold(4 << 10).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithNumCompactors(2).
		WithValueLogFileSize(256 << 20).
		WithLogger(nil)
	if len(o.EncryptionKey) > 0 {
		bo = bo.WithEncryptionKey(o.EncryptionKey).WithEncryptionKeyRotationDuration(30 * 24 * time.Hour)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", o.Dir, err)
	}
	s := &Store{db: db, dir: o.Dir, log: o.Logger, now: o.Now, space: o.Space, quit: make(chan struct{})}
	s.wg.Go(func() { store.GCValueLog(db, o.GCInterval, s.quit) })
	return s, nil
}

// Close closes the store; it is idempotent.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		s.wg.Wait()
		err = s.db.Close()
	})
	return err
}

// PutChunk stores a chunk after checking that data hashes to h. A chunk
// already held is not written again.
func (s *Store) PutChunk(h [32]byte, data []byte) error {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return s.putChunk(h, data)
}

func (s *Store) putChunk(h [32]byte, data []byte) error {
	if sha256.Sum256(data) != h {
		return ErrBadChunk
	}
	if ok, err := s.HasChunk(h); err != nil || ok {
		return err
	}
	if err := s.space.Check(); err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(chunkKey(h), data) })
}

// HasChunk reports whether the chunk is held.
func (s *Store) HasChunk(h [32]byte) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error { _, err := txn.Get(chunkKey(h)); return err })
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Chunk returns a chunk's bytes, checked against its hash: a chunk that
// rotted on disk is deleted (so it is fetched again) and reported as
// ErrBadChunk, never served.
func (s *Store) Chunk(h [32]byte) ([]byte, error) {
	data, err := s.ChunkForTransfer(h)
	if err != nil {
		return nil, err
	}
	if sha256.Sum256(data) != h {
		s.log.Error("blobstore: stored chunk does not match its hash; deleting it", "chunk", fmt.Sprintf("%x", h[:8]))
		s.deleteChunk(h)
		return nil, ErrBadChunk
	}
	return data, nil
}

// ChunkForTransfer returns a chunk's bytes for sending to a node that
// checks every chunk's hash itself, without hashing it again here (a hash
// pass costs about as much CPU as the network hop). Rot on disk is still
// caught, by badger's value checksum; a chunk the receiver refuses is
// re-read with Chunk, which hashes it and deletes it if it rotted.
func (s *Store) ChunkForTransfer(h [32]byte) ([]byte, error) {
	var data []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(h))
		if err != nil {
			return err
		}
		data, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrMissing
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: read chunk: %w", err)
	}
	return data, nil
}

func (s *Store) deleteChunk(h [32]byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(chunkKey(h)) })
}

// encodeManifest: created ms u64, size u64, type (uvarint len + bytes),
// then the chunk hashes back to back.
func encodeManifest(m *schema.Manifest, created int64) []byte {
	b := make([]byte, 0, 16+binary.MaxVarintLen64+len(m.Type)+32*len(m.Chunks))
	b = binary.BigEndian.AppendUint64(b, uint64(created))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = binary.AppendUvarint(b, uint64(len(m.Type)))
	b = append(b, m.Type...)
	for _, c := range m.Chunks {
		b = append(b, c[:]...)
	}
	return b
}

func decodeManifest(h [32]byte, b []byte) (schema.Manifest, int64, error) {
	bad := fmt.Errorf("blobstore: manifest %x is corrupt", h[:8])
	if len(b) < 17 {
		return schema.Manifest{}, 0, bad
	}
	created := int64(binary.BigEndian.Uint64(b))
	m := schema.Manifest{Hash: h, Size: int64(binary.BigEndian.Uint64(b[8:]))}
	n, k := binary.Uvarint(b[16:])
	if k <= 0 || n > uint64(len(b)-16-k) {
		return schema.Manifest{}, 0, bad
	}
	m.Type = string(b[16+k : 16+k+int(n)])
	rest := b[16+k+int(n):]
	if len(rest)%32 != 0 {
		return schema.Manifest{}, 0, bad
	}
	m.Chunks = make([][32]byte, len(rest)/32)
	for i := range m.Chunks {
		copy(m.Chunks[i][:], rest[32*i:])
	}
	return m, created, m.Validate()
}

// PutManifest records a blob's manifest, replacing any earlier one for
// the same hash, and stamps it now: GC's grace period counts from the last
// time the blob was stored, so an old unreferenced blob imported again is
// not collected before its new op refers to it. Callers that must not let
// a manifest be replaced (a city member holding a verified one) check
// first.
func (s *Store) PutManifest(m *schema.Manifest) error {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	return s.putManifest(m)
}

func (s *Store) putManifest(m *schema.Manifest) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := s.space.Check(); err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(manifestKey(m.Hash), encodeManifest(m, s.now().UnixMilli()))
	})
}

// DeleteManifest forgets blob h's manifest (its chunks go with the next
// GC unless another manifest lists them): for content that failed its
// whole-blob hash.
func (s *Store) DeleteManifest(h [32]byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(manifestKey(h)) })
}

// Manifest returns a blob's manifest, if held.
func (s *Store) Manifest(h [32]byte) (schema.Manifest, bool, error) {
	var m schema.Manifest
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(manifestKey(h))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			var err error
			m, _, err = decodeManifest(h, v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return schema.Manifest{}, false, nil
	}
	return m, err == nil, err
}

// Missing returns the indexes of m's chunks this store lacks, in order.
func (s *Store) Missing(m *schema.Manifest) ([]int, error) {
	var out []int
	err := s.db.View(func(txn *badger.Txn) error {
		for i, c := range m.Chunks {
			_, err := txn.Get(chunkKey(c))
			if errors.Is(err, badger.ErrKeyNotFound) {
				out = append(out, i)
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// Complete reports whether the manifest and every chunk of blob h are held.
func (s *Store) Complete(h [32]byte) (bool, error) {
	m, ok, err := s.Manifest(h)
	if err != nil || !ok {
		return false, err
	}
	missing, err := s.Missing(&m)
	return len(missing) == 0, err
}

// Import reads a whole upload, at most max bytes, and stores it as a blob.
// The content type is sniffed from the first bytes (ErrUnsupportedType if
// it is not an allowed one, before the rest is read). Nothing is stored
// unless the whole upload arrived: only io.EOF from r ends it; any other
// error (io.ErrUnexpectedEOF is what net/http returns for a body cut short
// of its Content-Length) refuses it. The upload is staged in a file first,
// so a truncated or oversized upload leaves no chunk behind. Every write
// is synced, so the blob is durable when Import returns.
func (s *Store) Import(ctx context.Context, r io.Reader, max int64) (schema.Manifest, error) {
	if max <= 0 || max > schema.MaxBlobSize {
		max = schema.MaxBlobSize
	}
	// Refuse before staging anything; each chunk asks again as it is stored.
	if err := s.space.Check(); err != nil {
		return schema.Manifest{}, err
	}
	buf := make([]byte, schema.ChunkSize)
	// fill reads into buf[from:] until it is full or r ends; eof reports
	// a clean end.
	fill := func(from int) (n int, eof bool, err error) {
		n = from
		for n < len(buf) {
			k, err := r.Read(buf[n:])
			n += k
			if errors.Is(err, io.EOF) {
				return n, true, nil
			}
			if err != nil {
				return n, false, err
			}
		}
		return n, false, nil
	}
	cut := func(got int64, err error) error {
		var tooBig interface{ Error() string }
		if errors.As(err, &tooBig) && strings.Contains(err.Error(), "request body too large") {
			return fmt.Errorf("%w: the upload is over %d bytes: %w", schema.ErrTooLarge, max, err)
		}
		// A body that ends before its Content-Length says, or a client
		// that went away: incomplete, and nothing is kept.
		return fmt.Errorf("%w: the upload was cut short after %d bytes, nothing was stored: %w", schema.ErrInvalid, got, err)
	}
	n, eof, err := fill(0)
	if err != nil && n < schema.SniffLen {
		return schema.Manifest{}, cut(int64(n), err)
	}
	if n == 0 {
		return schema.Manifest{}, &schema.FieldError{Field: "body", Reason: "the upload is empty"}
	}
	m := schema.Manifest{Type: schema.SniffType(buf[:min(n, schema.SniffLen)])}
	if m.Type == "" {
		return schema.Manifest{}, fmt.Errorf("%w: the content is none of PDF, JPEG, PNG or TIFF (whatever its name or Content-Type says)", ErrUnsupportedType)
	}
	tmp, terr := os.CreateTemp(filepath.Join(s.dir, "incoming"), "upload-*")
	if terr != nil {
		return schema.Manifest{}, fmt.Errorf("blobstore: staging file: %w", terr)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	whole := sha256.New()
	for {
		if err != nil {
			return schema.Manifest{}, cut(m.Size+int64(n), err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return schema.Manifest{}, cerr
		}
		if n > 0 {
			if m.Size+int64(n) > max {
				return schema.Manifest{}, fmt.Errorf("%w: the upload is over %d bytes", schema.ErrTooLarge, max)
			}
			if _, werr := tmp.Write(buf[:n]); werr != nil {
				return schema.Manifest{}, fmt.Errorf("blobstore: staging file: %w", werr)
			}
			whole.Write(buf[:n])
			m.Chunks = append(m.Chunks, sha256.Sum256(buf[:n]))
			m.Size += int64(n)
		}
		if eof {
			break
		}
		n, eof, err = fill(0)
	}
	copy(m.Hash[:], whole.Sum(nil))
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return schema.Manifest{}, err
	}
	// GC must not run between the manifest and its chunks.
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	// The manifest first, so that at every moment each stored chunk is
	// listed by a manifest that GC's grace period protects.
	if err := s.putManifest(&m); err != nil {
		return schema.Manifest{}, err
	}
	for i, h := range m.Chunks {
		part := buf[:schema.ChunkLen(m.Size, i)]
		if _, err := io.ReadFull(tmp, part); err != nil {
			return schema.Manifest{}, fmt.Errorf("blobstore: staging file: %w", err)
		}
		if err := s.putChunk(h, part); err != nil {
			return schema.Manifest{}, err
		}
	}
	return m, nil
}

// Stats counts what the store holds.
type Stats struct {
	Blobs      int   `json:"blobs"`
	Chunks     int   `json:"chunks"`
	ChunkBytes int64 `json:"chunk_bytes"`
}

// Stats walks the keys (not the values) and counts.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			switch {
			case len(k) == len(prefixChunk)+32 && string(k[:2]) == string(prefixChunk):
				st.Chunks++
				st.ChunkBytes += it.Item().ValueSize()
			case len(k) == len(prefixManifest)+32 && string(k[:2]) == string(prefixManifest):
				st.Blobs++
			}
		}
		return nil
	})
	return st, err
}

// Manifests calls fn for every manifest held, with its creation time.
func (s *Store) Manifests(fn func(m *schema.Manifest, created time.Time) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixManifest
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h [32]byte
			k := it.Item().Key()
			if len(k) != len(prefixManifest)+32 {
				continue
			}
			copy(h[:], k[len(prefixManifest):])
			var m schema.Manifest
			var created int64
			if err := it.Item().Value(func(v []byte) error {
				var err error
				m, created, err = decodeManifest(h, v)
				return err
			}); err != nil {
				return err
			}
			if err := fn(&m, time.UnixMilli(created)); err != nil {
				return err
			}
		}
		return nil
	})
}
