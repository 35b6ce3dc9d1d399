// Package raftlog is the city cluster's Raft log and stable store: one
// badger database, in a directory of its own (never the FSM's), that
// implements raft.LogStore and raft.StableStore.
//
// Layout:
//
//	'l' + 8-byte big-endian index  -> encoded raft.Log (see codec.go)
//	's' + raw stable key           -> value (uint64 values: 8 bytes big-endian)
//	'm' + "format"                 -> on-disk format version
//
// Every write is one badger transaction committed with SyncWrites, so each
// StoreLogs call (unless it exceeds badger's transaction limit) and each
// vote is a single atomic write with one fsync. The current term and vote
// are written atomically as described in stable.go (hashicorp/raft issue
// 661). Do not wrap this store in raft.LogCache (hashicorp/raft issue 429):
// the LogCache caches entries before they are stored.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
)

// Options configures Open.
type Options struct {
	// Dir is the badger directory. It must not be shared with any other
	// badger database (in particular not the FSM's).
	Dir string
	// Logger receives the store's and badger's messages; nil means
	// slog.Default(). badger's INFO messages are logged at debug level.
	Logger *slog.Logger
	// EncryptionKey, if set, enables badger's encryption at rest
	// (AES, 16, 24 or 32 bytes). A store must always be reopened with the
	// key it was created with.
	EncryptionKey []byte
}

var (
	// ErrKeyNotFound is returned by Get and GetUint64 for a missing key.
	// Its text is exactly "not found": hashicorp/raft v1.8.0 recognises a
	// missing stable key by err.Error() == "not found" (api.go
	// HasExistingState/NewRaft, raft.go requestVote), the same error
	// raft-boltdb and raft's InmemStore return.
	ErrKeyNotFound = errors.New("not found")
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("raftlog: store is closed")
)

// Sizing for a small machine (an office PC): see LIBRARIES.md, badger.
const (
	memTableSize     = 16 << 20
	numMemtables     = 3
	blockCacheSize   = 16 << 20
	indexCacheSize   = 8 << 20 // only with encryption
	numCompactors    = 2
	valueLogFileSize = 128 << 20

	// Values below badger's ValueThreshold (1 MB) live in the LSM tree,
	// so the value log only holds huge entries; GC it now and then.
	valueLogGCInterval = 10 * time.Minute
	valueLogGCRatio    = 0.5

	formatVersion = 1
)

const (
	prefixLog    = 'l'
	prefixStable = 's'
	prefixMeta   = 'm'
	logKeyLen    = 9
)

var formatKey = []byte{prefixMeta, 'f', 'o', 'r', 'm', 'a', 't'}

// Store is a raft.LogStore and raft.StableStore on badger. It is safe for
// concurrent use.
type Store struct {
	db  *badger.DB
	log *slog.Logger

	// life is read-held by every badger operation and write-held by
	// Close, so Close never races a transaction.
	life   sync.RWMutex
	closed bool

	// wmu serialises log writes (StoreLogs, DeleteRange) so the cached
	// first/last indexes are always those of the committed log.
	wmu   sync.Mutex
	first atomic.Uint64 // 0 when the log is empty
	last  atomic.Uint64 // 0 when the log is empty

	// vmu guards the staged LastVoteTerm (see stable.go).
	vmu             sync.Mutex
	pendingVote     bool
	pendingVoteTerm uint64

	stopOnce sync.Once
	stopGC   chan struct{}
	gcDone   chan struct{}
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// badgerOptions returns the badger options Open uses.
func badgerOptions(o Options, logger *slog.Logger) badger.Options {
	bo := badger.DefaultOptions(o.Dir).
		WithLogger(badgerLogger{logger}).
		// Durability: fsync every commit (badger's default is false,
		// badger issue 2000). Raft acknowledges only after StoreLogs and
		// persistVote return, so they must be on disk.
		WithSyncWrites(true).
		WithVerifyValueChecksum(true).
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithBlockCacheSize(blockCacheSize).
		WithNumCompactors(numCompactors).
		WithValueLogFileSize(valueLogFileSize).
		// Writers are serialised by the Store itself.
		WithDetectConflicts(false)
	if len(o.EncryptionKey) > 0 {
		bo = bo.WithEncryptionKey(o.EncryptionKey).WithIndexCacheSize(indexCacheSize)
	}
	return bo
}

// Open opens (creating if needed) the store in o.Dir.
func Open(o Options) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("raftlog: Options.Dir is required")
	}
	switch len(o.EncryptionKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("raftlog: encryption key must be 16, 24 or 32 bytes, got %d", len(o.EncryptionKey))
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "raftlog", "dir", o.Dir)
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	// The checks every badger database of a node goes through: logs
	// damaged mid-way (which badger would silently cut, acknowledged
	// entries and votes with them) and files badger cannot open (a
	// damaged table would crash it).
	if err := store.PrepareLogs(o.Dir, logger); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	if err := store.CheckFiles(o.Dir, o.EncryptionKey); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	db, err := badger.Open(badgerOptions(o, logger))
	if err != nil {
		return nil, fmt.Errorf("raftlog: open badger in %s: %w", o.Dir, err)
	}
	s := &Store{
		db:     db,
		log:    logger,
		stopGC: make(chan struct{}),
		gcDone: make(chan struct{}),
	}
	if err := s.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	first, last, err := s.scanBounds()
	if err != nil {
		db.Close()
		return nil, err
	}
	s.first.Store(first)
	s.last.Store(last)
	go s.gcLoop(valueLogGCInterval)
	logger.Debug("raft log store opened", "first_index", first, "last_index", last)
	return s, nil
}

// Close closes the store. It is idempotent. A LastVoteTerm staged without
// its LastVoteCand is discarded, exactly as a crash would discard it.
func (s *Store) Close() error {
	s.stopOnce.Do(func() { close(s.stopGC) })
	<-s.gcDone
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.vmu.Lock()
	if s.pendingVote {
		s.log.Debug("discarding staged LastVoteTerm never followed by LastVoteCand", "term", s.pendingVoteTerm)
		s.pendingVote = false
	}
	s.vmu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("raftlog: close: %w", err)
	}
	return nil
}

func (s *Store) acquire() error {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) release() { s.life.RUnlock() }

func (s *Store) checkFormat() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(formatKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(formatKey, []byte{formatVersion})
		}
		if err != nil {
			return fmt.Errorf("raftlog: read format: %w", err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("raftlog: read format: %w", err)
		}
		if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("raftlog: unsupported on-disk format %v (want %d)", v, formatVersion)
		}
		return nil
	})
}

func (s *Store) gcLoop(every time.Duration) {
	defer close(s.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopGC:
			return
		case <-t.C:
			s.runValueLogGC()
		}
	}
}

// runValueLogGC rewrites value-log files while badger finds some worth
// rewriting (badger reclaims at most one file per call).
func (s *Store) runValueLogGC() {
	if s.acquire() != nil {
		return
	}
	defer s.release()
	for range 16 {
		err := s.db.RunValueLogGC(valueLogGCRatio)
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("value log GC failed", "err", err)
			}
			return
		}
		select {
		case <-s.stopGC:
			return
		default:
		}
	}
}

func putLogKey(dst []byte, index uint64) {
	dst[0] = prefixLog
	binary.BigEndian.PutUint64(dst[1:logKeyLen], index)
}

func logKey(index uint64) []byte {
	k := make([]byte, logKeyLen)
	putLogKey(k, index)
	return k
}

func parseLogKey(k []byte) (uint64, error) {
	if len(k) != logKeyLen || k[0] != prefixLog {
		return 0, fmt.Errorf("raftlog: malformed log key %x", k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}
