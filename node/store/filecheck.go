package store

// Why this file exists
//
// badger v4.9.6 verifies every table (.sst) when it opens a directory
// (ChecksumVerificationMode OnTableRead or OnTableAndBlockRead). When a
// block fails its checksum, Table.VerifyChecksum wraps the error with the
// offset of the block it did not get (table.go:711, b.offset on a nil b),
// and the nil dereference panics in one of badger's own table-opening
// goroutines, where nothing can recover it: one flipped byte in any block
// of any table and the node dies at start with a stack trace instead of a
// message. A damaged header key ID in a log (.mem, .vlog) stops badger
// with "Invalid datakey id", which says nothing of what to do. And with
// encryption at rest, a damaged IV in a memtable log's header passes every
// check (the CRCs are over the encrypted bytes): badger replays the log
// into garbage keys, and every acknowledged write in it is gone without a
// word.
//
// CheckFiles runs before badger.Open and does badger's open-time checks
// itself, on our goroutines and with recover: the MANIFEST, every table it
// lists (index and every block, through badger's own table code), the key
// ID of every log, and that an encrypted memtable log decrypts. What fails
// becomes a *DamageError that names the file and how to recover. badger's
// own checks at open and on every read stay on, so nothing damaged later is
// served either. The cost is one more read of the tables at start (about
// 0.4 s for 150 MB).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/fb"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrDamaged is returned (wrapped in *DamageError) when a file badger
// reads at open fails its checks.
var ErrDamaged = errors.New("store: data file damaged")

// DamageError reports a file of a badger directory that badger cannot use:
// a table whose index or a block fails its checksum, a log header naming
// an unknown encryption key (or, encrypted, not decrypting its log), a
// MANIFEST that does not decode.
type DamageError struct {
	File   string // path of the damaged file
	Reason string
	// Recovery, when set, replaces the ward's way to recover in the
	// message (a city member's store sets its own: rejoin).
	Recovery string
}

// Error names the damage and how to recover.
func (e *DamageError) Error() string {
	rec := e.Recovery
	if rec == "" {
		rec = WardRecovery(filepath.Dir(e.File), false)
	}
	return fmt.Sprintf("store: data file damaged: %s: %s; refusing to start: badger cannot open the store with it, "+
		"and what it holds may be acknowledged writes. %s", e.File, e.Reason, rec)
}

// Unwrap makes errors.Is(err, ErrDamaged) true.
func (e *DamageError) Unwrap() error { return ErrDamaged }

// WardRecovery says how a ward node recovers a data dir whose store is
// damaged. repair says whether `ward repair` (accept the loss of what
// follows damage in a log) applies.
func WardRecovery(dir string, repair bool) string {
	other := "A node that does not sync restores %[1]s from its latest backup instead (`wardsync ward restore`); " +
		"`wardsync ward repair` does not fix this. See docs/operations.md, \"Crash consistency\""
	if repair {
		other = "A node that does not sync restores %[1]s from its latest backup instead (`wardsync ward restore`), " +
			"or runs `wardsync ward repair --data %[1]s` to keep a copy of the damaged files and accept the loss of what follows the damage " +
			"(a node that syncs must not: the city would hold ops the node no longer has, and pushing stops). " +
			"See docs/operations.md, \"Log damage\""
	}
	return fmt.Sprintf("To recover, re-sync the ward from the city: set up a new node for it "+
		"(`wardsync ward init` in a new --data dir under a new --node ID, with its own certificate) and run it with --city; "+
		"it pulls the ward's whole partition, every op this node pushed included (ops it had not pushed are only in %[1]s: keep the dir). "+
		other, dir)
}

// CheckFiles verifies a badger directory before badger.Open (which must
// not have it open): the MANIFEST decodes, every table it lists is there
// and passes badger's checksum checks of its index and every block, and
// every log header names a key the key registry holds. encryptionKey is
// the store's key (nil without encryption at rest). A damaged file gives a
// *DamageError; a wrong encryption key gives badger's error as it is. A
// directory with no MANIFEST (no store yet) passes.
func CheckFiles(dir string, encryptionKey []byte) error {
	mfPath := filepath.Join(dir, badger.ManifestFilename)
	f, err := os.Open(mfPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: check files: %w", err)
	}
	mf, _, err := replayManifest(f, dir)
	f.Close()
	if err != nil {
		return &DamageError{File: mfPath, Reason: err.Error()}
	}
	kr, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: dir, ReadOnly: true, EncryptionKey: encryptionKey})
	if errors.Is(err, badger.ErrEncryptionKeyMismatch) || errors.Is(err, badger.ErrInvalidEncryptionKey) {
		return fmt.Errorf("store: %s: %w (give the key the store was created with)", dir, err)
	}
	if err != nil {
		return &DamageError{File: filepath.Join(dir, badger.KeyRegistryFileName), Reason: err.Error()}
	}
	if err := checkLogHeaders(dir, kr); err != nil {
		return err
	}
	return checkTables(dir, mf, kr)
}

// replayManifest decodes a MANIFEST the way badger.Open does, turning a
// panic on garbage into an error.
func replayManifest(f *os.File, dir string) (mf badger.Manifest, n int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("does not decode: %v", r)
		}
	}()
	return badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir).WithLogger(nil))
}

// logHeaderSize is badger's vlogHeaderSize: keyID (8) | baseIV (12).
const logHeaderSize = 20

// checkLogHeaders checks the key ID at the start of every *.mem and *.vlog.
// badger looks it up in the key registry when it opens the file; an
// unknown one stops it. (A file shorter than the header is re-initialised
// by badger and holds nothing.)
func checkLogHeaders(dir string, kr *badger.KeyRegistry) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store: check files: %w", err)
	}
	for _, de := range entries {
		name := de.Name()
		if !de.Type().IsRegular() || (!strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog")) {
			continue
		}
		path := filepath.Join(dir, name)
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("store: check files: %w", err)
		}
		var hdr [logHeaderSize]byte
		_, err = io.ReadFull(f, hdr[:])
		f.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			continue
		}
		if err != nil {
			return &DamageError{File: path, Reason: fmt.Sprintf("read error: %v", err)}
		}
		id := binary.BigEndian.Uint64(hdr[:8])
		if id == 0 {
			continue // plain text: the IV is not used
		}
		dk, err := kr.DataKey(id)
		if err != nil {
			return &DamageError{File: path, Reason: fmt.Sprintf("the header names encryption key %d, which the key registry does not hold (%v)", id, err)}
		}
		if strings.HasSuffix(name, ".mem") {
			if err := checkWALDecrypts(path, dk.Data, hdr[8:]); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkWALDecrypts checks that an encrypted memtable log decrypts with the
// key and IV its header names. Its checksums are over the encrypted bytes,
// so a damaged IV (or key ID naming another key) passes them, and badger
// would replay garbage keys: every write of the log lost without a word.
// Every transaction in the log ends with an entry whose key is badger's
// "!badger!txn"; the first one must decrypt to it.
func checkWALDecrypts(path string, key, baseIV []byte) (err error) {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: check files: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() <= logHeaderSize || int64(int(fi.Size())) != fi.Size() {
		return err
	}
	data, err := z.Mmap(f, false, fi.Size())
	if err != nil {
		return fmt.Errorf("store: check files: mmap %s: %w", path, err)
	}
	defer z.Munmap(data) //nolint:errcheck // read-only mapping
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &DamageError{File: path, Reason: fmt.Sprintf("read error: %v", r)}
		}
	}()
	for off := logHeaderSize; ; {
		n, ok := walEntryAt(data, off)
		if !ok {
			return nil // no complete transaction: nothing to check (the log check sees the rest)
		}
		if meta, hlen, klen, vlen, _ := walDecodeHeader(data, off); meta&walBitFinTxn != 0 {
			iv := make([]byte, 16)
			copy(iv, baseIV)
			binary.BigEndian.PutUint32(iv[12:], uint32(off))
			kv, err := y.XORBlockAllocate(data[off+hlen:off+hlen+int(klen)+int(vlen)], key, iv)
			if err != nil {
				return fmt.Errorf("store: check files: %s: %w", path, err)
			}
			if !bytes.HasPrefix(kv[:klen], walTxnKey) {
				return &DamageError{File: path, Reason: "the log does not decrypt with the key and IV its header names (the header is damaged)"}
			}
			return nil
		}
		off += n
	}
}

// badger v4.9.6 value.go bitFinTxn and db.go txnKey.
const walBitFinTxn = 1 << 7

var walTxnKey = []byte("!badger!txn")

// checkTables opens every table the manifest lists with badger's table
// code, checksums verified, a few at a time. It reports the first damaged
// table (in file order) and how many others there are.
func checkTables(dir string, mf badger.Manifest, kr *badger.KeyRegistry) error {
	ids := make([]uint64, 0, len(mf.Tables))
	var cache *ristretto.Cache[uint64, *fb.TableIndex]
	for id, tm := range mf.Tables {
		ids = append(ids, id)
		if tm.KeyID != 0 && cache == nil {
			// badger keeps an encrypted table's decrypted index only in
			// an index cache, so it needs one.
			c, err := ristretto.NewCache(&ristretto.Config[uint64, *fb.TableIndex]{NumCounters: 1 << 12, MaxCost: 16 << 20, BufferItems: 64})
			if err != nil {
				return fmt.Errorf("store: check files: %w", err)
			}
			defer c.Close()
			cache = c
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	errs := make([]error, len(ids))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(4, runtime.NumCPU(), max(len(ids), 1)) {
		wg.Go(func() {
			for i := range work {
				errs[i] = checkTable(table.NewFilename(ids[i], dir), mf.Tables[ids[i]], kr, cache)
			}
		})
	}
	for i := range ids {
		work <- i
	}
	close(work)
	wg.Wait()
	var first *DamageError
	more := 0
	for _, err := range errs {
		var de *DamageError
		switch {
		case err == nil:
		case !errors.As(err, &de):
			return err
		case first == nil:
			first = de
		default:
			more++
		}
	}
	if first == nil {
		return nil
	}
	if more > 0 {
		first.Reason += fmt.Sprintf(" (and %d more damaged tables)", more)
	}
	return first
}

// checkTable opens one table read-only, verifying its index and blocks, and
// closes it. badger's table code panics on some damage (a nil block in an
// error path, a garbage index length, a read fault on a bad sector); here
// that is recovered into a *DamageError.
func checkTable(path string, tm badger.TableManifest, kr *badger.KeyRegistry, cache *ristretto.Cache[uint64, *fb.TableIndex]) (err error) {
	dk, err := kr.DataKey(tm.KeyID)
	if err != nil {
		return &DamageError{File: path, Reason: fmt.Sprintf("the MANIFEST names encryption key %d for it, which the key registry does not hold (%v)", tm.KeyID, err)}
	}
	if fi, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return &DamageError{File: path, Reason: "the MANIFEST lists this table but the file is missing"}
	} else if err != nil {
		return &DamageError{File: path, Reason: err.Error()}
	} else if fi.Size() == 0 {
		return &DamageError{File: path, Reason: "the table is empty"}
	}
	mmap, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return &DamageError{File: path, Reason: err.Error()}
	}
	// OpenTable closes the file itself on some of its errors. Close it
	// here unless it did (a file it closed is also unmapped), so the
	// mapping is released exactly once.
	defer func() {
		if cerr := mmap.Fd.Close(); !errors.Is(cerr, os.ErrClosed) {
			z.Munmap(mmap.Data) //nolint:errcheck // read-only mapping
		}
	}()
	// A read error on the mapping (a bad sector) arrives as a fault.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &DamageError{File: path, Reason: fmt.Sprintf("the table fails its checks (%v)", firstLine(r))}
		}
	}()
	opts := table.Options{
		ReadOnly: true,
		ChkMode:  options.OnTableRead, // VerifyChecksum: the index, then every block
		// Only sizes buffers, but must be set for a compressed table.
		BlockSize: 4 << 10,
		// The table records neither; the manifest and registry do.
		Compression: tm.Compression,
		DataKey:     dk,
		IndexCache:  cache,
	}
	if _, err := table.OpenTable(mmap, opts); err != nil {
		return &DamageError{File: path, Reason: err.Error()}
	}
	// The table is dropped without DecrRef: at zero references badger
	// deletes the file.
	return nil
}

// firstLine is a recovered panic's value, cut to its first line (badger's
// own recover in initBiggestAndSmallest re-panics with a multi-line dump).
func firstLine(r any) string {
	s := fmt.Sprint(r)
	if i := strings.IndexByte(strings.TrimSpace(s), '\n'); i >= 0 {
		return strings.TrimSpace(s)[:i]
	}
	return s
}
