package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/node/store/crashpoint"
	"github.com/wardsync/wardsync/schema"
)

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// ErrFailed wraps the sticky error every write gets after a commit failed.
var ErrFailed = errors.New("store: storage failed")

// Options configure a Store. The zero value of each tuning field picks a
// default sized for an office PC (a few GiB of RAM shared with a browser and
// an office suite), not for a server.
type Options struct {
	Dir string
	// EncryptionKey, if set (16, 24 or 32 bytes), encrypts data at rest with
	// badger's AES key option. The same key must be given at every open.
	EncryptionKey []byte
	Logger        *slog.Logger
	// MaxBatch caps how many writes share one fsync.
	MaxBatch int
	// SkipLogCheck opens without the damage check; only `ward repair` sets
	// it, after quarantining the damaged files.
	SkipLogCheck bool
	// GCInterval is how often the value log is garbage-collected (0: 10m).
	GCInterval time.Duration
	// MemTableSize overrides the default 16 MB memtable. Badger caps one
	// transaction at ~15% of it; the city FSM, whose Raft entries carry
	// batches of pushed ops, uses a larger one.
	MemTableSize int64
	// Create allows opening a directory that holds no store yet (ward
	// init). Without it, a mistyped --data fails instead of starting an
	// empty node.
	Create bool
	// Space, if set, refuses writes (with a *diskspace.LowError, not the
	// sticky failure) while the disk has less than its reserve free.
	Space *diskspace.Guard
}

// ErrNotInitialized is returned by Open for a directory with no store.
var ErrNotInitialized = errors.New("store: data dir is not initialized (run `wardsync ward init`)")

// Store is a node's badger database plus its group committer.
type Store struct {
	db     *badger.DB
	log    *slog.Logger
	reqs   chan *request
	quit   chan struct{}
	done   sync.WaitGroup
	closed atomic.Bool
	once   sync.Once
	max    int
	space  *diskspace.Guard

	// failed is sticky: after a commit fails, no write is accepted, since
	// the disk state is no longer known to match what the node believes.
	failMu sync.Mutex
	failed error

	commits atomic.Uint64 // badger commits, each one fsync of the WAL
	writes  atomic.Uint64 // write requests committed
	hooks   []func(CommitInfo)
}

// CommitInfo describes one group commit, for metrics.
type CommitInfo struct {
	Writes   int
	Duration time.Duration
	Err      error
}

type request struct {
	ctx  context.Context
	fn   func(*Tx) error
	err  error
	done chan struct{}
}

// badgerOptions holds every badger setting in one place.
func badgerOptions(o Options) badger.Options {
	bo := badger.DefaultOptions(o.Dir).
		// Durability: an acknowledged write is on disk (badger's default is
		// false, which loses acknowledged writes on power loss).
		WithSyncWrites(true).
		// Integrity: verify checksums of values and of table blocks on read.
		WithVerifyValueChecksum(true).
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		// One writer (the group committer) makes conflict detection moot.
		WithDetectConflicts(false).
		// Memory for a small office machine (badger's defaults assume a
		// server: 64 MB memtables x5, 256 MB block cache, 1 GB vlog files).
		WithMemTableSize(16 << 20).
		WithNumMemtables(3).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithNumCompactors(2).
		WithValueLogFileSize(128 << 20).
		WithLogger(badgerLogger{o.Logger})
	if o.MemTableSize > 0 {
		bo = bo.WithMemTableSize(o.MemTableSize)
	}
	if len(o.EncryptionKey) > 0 {
		bo = bo.WithEncryptionKey(o.EncryptionKey).WithEncryptionKeyRotationDuration(30 * 24 * time.Hour)
	}
	return bo
}

// Open opens (creating if needed) the store in o.Dir. It refuses to open a
// data dir whose logs are damaged mid-way (see CheckLogs).
func Open(o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if o.GCInterval <= 0 {
		o.GCInterval = 10 * time.Minute
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "MANIFEST")); err != nil && !o.Create {
		return nil, fmt.Errorf("%w: %s", ErrNotInitialized, o.Dir)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create data dir: %w", err)
	}
	if o.SkipLogCheck {
		if err := removeEmptyLogs(o.Dir, o.Logger); err != nil {
			return nil, err
		}
	} else if err := PrepareLogs(o.Dir, o.Logger); err != nil {
		return nil, err
	}
	// What badger checks at open, checked first where a damaged table is
	// an error and not a crash (filecheck.go).
	if err := CheckFiles(o.Dir, o.EncryptionKey); err != nil {
		return nil, err
	}
	db, err := badger.Open(badgerOptions(o))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", o.Dir, err)
	}
	s := &Store{db: db, log: o.Logger, reqs: make(chan *request, 4*o.MaxBatch), quit: make(chan struct{}), max: o.MaxBatch, space: o.Space}
	if err := s.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	s.done.Add(2)
	go s.commitLoop()
	go s.gcLoop(o.GCInterval)
	return s, nil
}

// PrepareLogs makes a badger directory that a crash left behind safe to
// open, before badger.Open: it removes the empty log files a kill -9 can
// leave, clears torn tails (writes that never finished, so were never
// acknowledged), and refuses, with ErrLogDamaged, logs damaged mid-way
// (badger would silently drop the acknowledged writes after the damage).
// Every badger database of a node goes through it.
func PrepareLogs(dir string, log *slog.Logger) error {
	if err := removeEmptyLogs(dir, log); err != nil {
		return err
	}
	torn, err := CheckLogs(dir)
	if err != nil {
		return err
	}
	for _, t := range torn {
		log.Warn("store: discarding unfinished write at end of log", "file", t.File, "offset", t.Offset, "bytes", t.Bytes)
		if err := ClearTornTail(t); err != nil {
			return err
		}
	}
	return nil
}

// removeEmptyLogs deletes zero-length memtable WALs (*.mem) and value logs
// (*.vlog). Badger makes these files in two steps (create, then truncate to
// full size) and deletes them in two (truncate to zero, then unlink), so a
// kill -9 or power cut between the steps leaves an empty file. Such a file
// holds nothing: a new one had no write yet, a deleted one was already
// flushed to a table or rewritten by GC. Badger itself fails to open a dir
// holding one ("while opening memtables ... Create a new file", or "Open
// existing file"), and only succeeds at the next try, so the node would
// refuse to start once after such a crash. Removing the file first is what
// that retry amounts to.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store: read data dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || (filepath.Ext(name) != ".mem" && filepath.Ext(name) != ".vlog") {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() != 0 {
			continue
		}
		path := filepath.Join(dir, name)
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("store: remove empty log %s: %w", path, err)
		}
		log.Warn("store: removed an empty log file left by a crash", "file", path)
	}
	return nil
}

// OnCommit registers a hook called after every group commit (for metrics).
// Call it before any write.
func (s *Store) OnCommit(f func(CommitInfo)) { s.hooks = append(s.hooks, f) }

// Close stops the committer after the writes already queued and closes
// badger. It is idempotent.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		s.done.Wait()
		err = s.db.Close()
	})
	return err
}

// Commits returns how many group commits (fsyncs) ran, and WritesCommitted
// how many write requests they carried; their ratio is the batching factor.
func (s *Store) Commits() uint64         { return s.commits.Load() }
func (s *Store) WritesCommitted() uint64 { return s.writes.Load() }

// Write runs fn inside the next group commit and returns once the batch it
// joined is fsynced. fn must do all its checks before its first Set: if it
// returns an error, its writes are discarded and other writers in the batch
// are unaffected. fn runs on the committer goroutine, so it must be quick
// and must not call Write or View.
func (s *Store) Write(ctx context.Context, fn func(*Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.stickyErr(); err != nil {
		return err
	}
	r := &request{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return ErrClosed
	}
	// Once queued, wait for the outcome even if ctx ends: the write may
	// already be on disk, and the caller must not report it as failed.
	<-r.done
	return r.err
}

// View runs fn on a consistent read-only snapshot.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(txn *badger.Txn) error { return fn(&Tx{txn: txn}) })
}

// Err returns the sticky commit failure, or nil while the store is healthy.
func (s *Store) Err() error { return s.stickyErr() }

func (s *Store) stickyErr() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failed
}

func (s *Store) commitLoop() {
	defer s.done.Done()
	batch := make([]*request, 0, s.max)
	for {
		var first *request
		select {
		case first = <-s.reqs:
		case <-s.quit:
			// Drain what is queued so no caller waits forever.
			for {
				select {
				case r := <-s.reqs:
					r.err = ErrClosed
					close(r.done)
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	gather:
		for len(batch) < s.max {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		s.commit(batch)
	}
}

// commit runs a batch's functions and commits their writes with as few
// fsyncs as possible: one badger transaction for the whole batch while it
// fits badger's transaction limit, more when it does not. A request's
// writes are never split across two transactions, so no crash and no
// reader ever sees half of one. A function's error fails only its request.
func (s *Store) commit(batch []*request) {
	start := time.Now()
	if err := s.stickyErr(); err != nil {
		for _, r := range batch {
			r.err = err
			close(r.done)
		}
		return
	}
	// The disk reserve: at most one statfs per group commit, asked when
	// the first request that stages something is reached. A refused
	// request leaves nothing behind; one that stages nothing (a lease
	// that did not change, pulled ops already held) goes through, and
	// the next batch asks again, so writes resume once space is freed.
	// (This is the one place every write of the store passes, pulls and
	// background records included.)
	var low error
	lowChecked := false
	diskLow := func() error {
		if !lowChecked {
			low, lowChecked = s.space.Check(), true
		}
		return low
	}
	// Stay well under badger's limits, estimating each entry generously.
	maxSize, maxCount := s.db.MaxBatchSize()*9/10, s.db.MaxBatchCount()*9/10
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	var size, count int64
	var inTxn []*request
	committed := map[*request]bool{}
	flush := func() error {
		if len(inTxn) == 0 {
			return nil
		}
		crashpoint.Hit(crashpoint.CommitBeforeSync)
		err := txn.Commit()
		s.commits.Add(1)
		if err != nil {
			return err
		}
		// On disk (SyncWrites), but no writer of the batch is answered
		// until the whole batch is.
		crashpoint.Hit(crashpoint.CommitAfterSync)
		for _, r := range inTxn {
			committed[r] = true
		}
		inTxn, size, count = inTxn[:0], 0, 0
		txn = s.db.NewTransaction(true)
		return nil
	}
	var commitErr error
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err // the caller gave up before we started; nothing written
			continue
		}
		tx := &Tx{txn: txn, writing: true}
		r.err = runFn(r.fn, tx)
		if r.err != nil {
			continue
		}
		var rs, rc int64
		tx.staged(func(w pendingWrite) {
			rs += int64(len(w.key)+len(w.val)) + 64
			rc++
		})
		if rs > maxSize || rc > maxCount {
			r.err = fmt.Errorf("%w: one write of %d entries and ~%d bytes exceeds the store's transaction limit", schema.ErrTooLarge, rc, rs)
			continue
		}
		if rc > 0 && diskLow() != nil {
			r.err = low
			continue
		}
		if size+rs > maxSize || count+rc > maxCount {
			// The requests before this one are complete: commit them. What
			// this one read stays true, since they are now committed.
			if commitErr = flush(); commitErr != nil {
				break
			}
		}
		tx.staged(func(w pendingWrite) {
			if commitErr == nil {
				commitErr = w.apply(txn)
			}
		})
		if commitErr != nil {
			break
		}
		inTxn = append(inTxn, r)
		size, count = size+rs, count+rc
	}
	if commitErr == nil {
		commitErr = flush()
	}
	ok := len(committed)
	if commitErr != nil {
		s.failMu.Lock()
		s.failed = fmt.Errorf("%w: commit failed, refusing further writes until restart: %w", ErrFailed, commitErr)
		s.failMu.Unlock()
		s.log.Error("store: commit failed", "err", commitErr)
		for _, r := range batch {
			if r.err == nil && !committed[r] {
				r.err = s.failed
			}
		}
	}
	s.writes.Add(uint64(ok))
	for _, r := range batch {
		close(r.done)
	}
	info := CommitInfo{Writes: ok, Duration: time.Since(start), Err: commitErr}
	for _, h := range s.hooks {
		h(info)
	}
}

// runFn turns a panic in a write function into an error for that request,
// so one bad request cannot take the node down.
func runFn(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return fn(tx)
}

func (s *Store) gcLoop(every time.Duration) {
	defer s.done.Done()
	GCValueLog(s.db, every, s.quit)
}

// GCValueLog reclaims badger's value-log space every interval until quit
// closes: RunValueLogGC, again at once while it reclaims something. Every
// badger database of a node runs it.
func GCValueLog(db *badger.DB, every time.Duration, quit <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
			for db.RunValueLogGC(0.5) == nil {
				select {
				case <-quit:
					return
				default:
				}
			}
		}
	}
}

// Backup streams a consistent full backup (badger's format) to w while the
// node keeps serving.
func (s *Store) Backup(w io.Writer) (uint64, error) {
	return s.db.Backup(w, 0)
}

// Size returns the on-disk size of the LSM tree and the value log.
func (s *Store) Size() (lsm, vlog int64) { return s.db.Size() }

func (s *Store) checkFormat() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyFormat)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(keyFormat, []byte{formatVersion})
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("store: data dir %s has layout version %v, this binary reads %d", s.db.Opts().Dir, v, formatVersion)
		}
		return nil
	})
}

// badgerLogger routes badger's log lines into slog. Badger is chatty at
// info level, so those go to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) log(level slog.Level, f string, a ...any) {
	if b.l != nil {
		b.l.Log(context.Background(), level, "badger: "+fmt.Sprintf(f, a...))
	}
}
func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug-4, f, a...) }

// Restore loads a backup made by Backup into a new, empty data dir. It
// refuses a dir that already holds a store, so a restore can never mix
// two nodes' data. Load streams in batches (never one huge transaction).
func Restore(dir string, r io.Reader, encryptionKey []byte, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
		return fmt.Errorf("store: %s already holds a store; restore into an empty dir", dir)
	}
	o := Options{Dir: dir, EncryptionKey: encryptionKey, Logger: log}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	db, err := badger.Open(badgerOptions(o))
	if err != nil {
		return fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := db.Load(r, 256); err != nil {
		db.Close()
		return fmt.Errorf("store: load backup: %w", err)
	}
	if err := db.Sync(); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}
