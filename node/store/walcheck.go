package store

// Why this file exists
//
// When badger v4 opens a directory after a crash it replays every memtable
// write-ahead log (*.mem) and the newest value log (*.vlog). At the first
// entry that does not decode or fails its CRC it stops and truncates the file
// there, without an error and without a log line we can act on (see
// memtable.go UpdateSkipList, logFile.iterate and value.go safeRead.Entry in
// badger v4.9.6). For a torn tail — the last write, never fsynced and so
// never acknowledged — that is exactly right. For damage in the middle of a
// log (bit rot, a bad sector, a zeroed block) it is not: every entry after the
// damage is dropped, acknowledged writes included.
//
// Our rule is: never silently truncate. CheckLogs runs before badger.Open,
// reads the logs the way badger will, and tells the two cases apart. A torn
// tail is reported and badger is allowed to trim it; damage followed by valid
// entries makes the ward refuse to start with a message that says how to
// recover. Quarantine keeps a copy of the damaged files for an operator who
// chooses to accept the loss.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrLogDamaged is returned (wrapped in *LogDamageError) when a log has valid
// entries after a bad one.
var ErrLogDamaged = errors.New("store: log damaged")

// LogDamageError reports a badger log that has a bad entry followed by valid
// ones. Opening the directory with badger would silently drop those entries
// (and also the entries of the transaction the bad entry belongs to, since
// badger cuts at the end of the last complete transaction).
type LogDamageError struct {
	File        string // path of the damaged file
	Offset      int64  // byte offset of the first bad entry
	EntriesLost int    // valid entries found after it (they would be dropped by a truncate)
	// Recovery, when set, replaces the ward's way to recover in the
	// message (a city member's stores set their own: rejoin).
	Recovery string
}

// Error describes the damage and how to recover from it.
func (e *LogDamageError) Error() string {
	dir := filepath.Dir(e.File)
	rec := e.Recovery
	if rec == "" {
		rec = WardRecovery(dir, true)
	}
	return fmt.Sprintf("store: log damaged: %s has a bad entry at byte offset %d "+
		"followed by %d valid log entries that opening the store would silently drop "+
		"(counting badger's per-transaction commit markers); refusing to start. %s",
		e.File, e.Offset, e.EntriesLost, rec)
}

// Unwrap makes errors.Is(err, ErrLogDamaged) true.
func (e *LogDamageError) Unwrap() error { return ErrLogDamaged }

// TornTail describes a harmless partial write at the end of a log (never
// acknowledged). Badger cuts the file when it opens it, at the end of the last
// complete transaction, which is at or before Offset.
type TornTail struct {
	File   string // path of the log file
	Offset int64  // byte offset of the first entry that does not decode
	Bytes  int64  // bytes from Offset up to and including the last non-zero byte
}

// Layout of badger v4 log files (memtable WALs and value logs alike):
//
//	file:  keyID (8) | baseIV (12) | entry | entry | ... | zero padding
//	entry: meta (1) | userMeta (1) | uvarint klen | uvarint vlen |
//	       uvarint expiresAt | key | value | CRC32-C big-endian (4)
//
// The CRC covers header, key and value as they are on disk (encrypted when
// encryption at rest is on). badger decodes the uvarints with
// binary.ReadUvarint and then truncates klen and vlen to uint32; it stops at
// klen > 1<<16, at a short read, at a CRC mismatch, and at an entry with an
// empty key (what an all-zero header decodes to).
const (
	walHeaderSize  = 20      // badger vlogHeaderSize
	walMaxKeyLen   = 1 << 16 // safeRead.Entry: klen above this means "truncate"
	walCRCLen      = 4
	walMinEntryLen = 2 + 1 + 1 + 1 + 1 + walCRCLen // header with 1-byte uvarints, 1-byte key, CRC

	// Meta bits badger v4.9.6 never sets (value.go: bits 0-3, 6 and 7 are used,
	// and bitTxn and bitFinTxn never together). Used only to cut down
	// candidates in the forward search, never when walking the log the way
	// badger does. Re-check when upgrading badger.
	walUnusedMetaBits = 1<<4 | 1<<5
	walTxnMetaBits    = 1<<6 | 1<<7
)

var walCRCTable = crc32.MakeTable(crc32.Castagnoli)

// CheckLogs scans every *.mem and *.vlog file in dir (a badger directory; no
// badger instance may have it open for writing at the same time — it is called
// before badger.Open) without modifying anything.
//
// Each file is walked from offset 20 exactly as badger decodes it. Where the
// walk stops, the rest of the file is searched for any offset at which a
// complete, valid entry (correct CRC, non-empty key) decodes. If there is one,
// the stop was damage, not the end of the log, and CheckLogs returns a
// *LogDamageError (for the first damaged file in name order). If there is none
// but non-zero bytes follow the stop, it is a torn tail and is returned in the
// []TornTail result. A stop followed only by zero bytes (badger's preallocated
// padding) or by the end of the file is a clean end.
//
// Missing dir or no log files → nil, nil.
func CheckLogs(dir string) ([]TornTail, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: check logs: %w", err)
	}
	// Badger replays (and cuts) every .mem file but only the newest .vlog;
	// older value logs are never truncated, and damage there surfaces as a
	// checksum error when the value is read (VerifyValueChecksum). So only
	// the files badger may cut are checked: damage elsewhere is not silent,
	// and `ward repair` could not clear it anyway.
	newestVlog := ""
	for _, de := range entries {
		if name := de.Name(); strings.HasSuffix(name, ".vlog") && name > newestVlog {
			newestVlog = name // names are zero-padded file IDs: %06d.vlog
		}
	}
	var tails []TornTail
	var damage error
	for _, de := range entries {
		name := de.Name()
		if !strings.HasSuffix(name, ".mem") && name != newestVlog {
			continue
		}
		if !de.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, name)
		res, err := walCheckFile(path)
		if err != nil {
			return tails, err
		}
		if res.damaged {
			if damage == nil {
				damage = &LogDamageError{File: path, Offset: res.stop, EntriesLost: res.lost}
			}
			continue
		}
		if res.tailBytes > 0 {
			tails = append(tails, TornTail{File: path, Offset: res.stop, Bytes: res.tailBytes})
		}
	}
	return tails, damage
}

// walScan is the verdict for one file.
type walScan struct {
	valid     int   // entries badger will replay
	stop      int64 // offset where badger stops reading
	damaged   bool  // valid entries exist after stop
	lost      int   // how many
	tailBytes int64 // torn tail length (0 when clean)
}

// walCheckFile maps path read-only and scans it.
func walCheckFile(path string) (res walScan, err error) {
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("store: check logs: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("store: check logs: %w", err)
	}
	size := fi.Size()
	if size <= walHeaderSize {
		// badger re-initialises such a file; there are no entries to lose.
		return walScan{stop: size}, nil
	}
	if int64(int(size)) != size {
		return res, fmt.Errorf("store: check logs: %s: file too large to map (%d bytes)", path, size)
	}
	data, err := z.Mmap(f, false, size)
	if err != nil {
		return res, fmt.Errorf("store: check logs: mmap %s: %w", path, err)
	}
	defer z.Munmap(data) //nolint:errcheck // read-only mapping

	// A read error on a mapped file (bad sector, file truncated under us)
	// arrives as SIGBUS. Turn it into an error instead of a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if re, ok := r.(runtime.Error); ok {
				if _, isFault := re.(interface{ Addr() uintptr }); isFault {
					err = fmt.Errorf("store: check logs: %s: read error: %v", path, re)
					return
				}
			}
			panic(r)
		}
	}()
	return walScanData(data, walDataExtents(f, walHeaderSize, size)), nil
}

// walScanData classifies one log file's bytes. It never modifies data. ext lists
// the regions of data that may hold non-zero bytes (ascending, disjoint);
// everything outside them is a hole in a sparse file and reads as zeros.
// badger preallocates logs as sparse files (2×MemTableSize for a WAL,
// 2×ValueLogFileSize for a value log), so after a crash most of a file is
// usually hole, and skipping it saves reading gigabytes of zeros.
func walScanData(data []byte, ext []walExtent) walScan {
	var res walScan
	if len(data) <= walHeaderSize {
		res.stop = int64(len(data))
		return res
	}
	res.valid, res.stop = walWalk(data, walHeaderSize)
	stop := int(res.stop)

	z := walZeros{data: data, ext: ext}
	last := z.last(stop)
	if last < 0 {
		return res // EOF or only zero padding after the last entry: clean end
	}
	s := &walSearcher{data: data, zeros: z, limit: last}
	p, found := s.next(stop + 1)
	if !found {
		res.tailBytes = int64(last + 1 - stop)
		return res
	}
	res.damaged = true
	for found {
		n, end := walWalk(data, p)
		res.lost += n
		p, found = s.next(int(end) + 1)
	}
	return res
}

// walWalk decodes consecutive entries from off the way badger's
// logFile.iterate does and returns how many decoded and where it stopped.
func walWalk(data []byte, off int) (int, int64) {
	n := 0
	for {
		l, ok := walEntryAt(data, off)
		if !ok {
			return n, int64(off)
		}
		n++
		off += l
	}
}

// walDecodeHeader decodes an entry header at data[off:] like header.DecodeFrom
// followed by badger's uint32 conversions. ok is false when the bytes end or a
// uvarint overflows (both stop badger).
func walDecodeHeader(data []byte, off int) (meta byte, hlen int, klen, vlen uint32, ok bool) {
	if off < 0 || off+2 > len(data) {
		return 0, 0, 0, 0, false
	}
	meta = data[off]
	i := off + 2
	k, n := binary.Uvarint(data[i:])
	if n <= 0 {
		return 0, 0, 0, 0, false
	}
	i += n
	v, n := binary.Uvarint(data[i:])
	if n <= 0 {
		return 0, 0, 0, 0, false
	}
	i += n
	if _, n = binary.Uvarint(data[i:]); n <= 0 { // expiresAt
		return 0, 0, 0, 0, false
	}
	i += n
	return meta, i - off, uint32(k), uint32(v), true
}

// walBodyLen checks the decoded lengths the way safeRead.Entry would and returns
// the length of header+key+value, or false when badger would stop here.
func walBodyLen(data []byte, off, hlen int, klen, vlen uint32) (int, bool) {
	if klen == 0 || klen > walMaxKeyLen {
		// klen 0: badger's e.isZero() (or a CRC failure on an all-zero header).
		return 0, false
	}
	kv := uint64(klen) + uint64(vlen)
	if kv > 1<<32-1 {
		// badger computes klen+vlen in uint32; on wraparound it would panic
		// slicing the key. Treat it as a bad entry.
		return 0, false
	}
	m := uint64(hlen) + kv
	if m+walCRCLen > uint64(len(data)-off) {
		return 0, false // short read: badger's errTruncate / ErrUnexpectedEOF
	}
	return int(m), true
}

// walEntryAt reports whether a complete valid entry starts at off and its length.
func walEntryAt(data []byte, off int) (int, bool) {
	_, hlen, klen, vlen, ok := walDecodeHeader(data, off)
	if !ok {
		return 0, false
	}
	m, ok := walBodyLen(data, off, hlen, klen, vlen)
	if !ok {
		return 0, false
	}
	if crc32.Update(0, walCRCTable, data[off:off+m]) != binary.BigEndian.Uint32(data[off+m:]) {
		return 0, false
	}
	return m + walCRCLen, true
}

// walSearcher finds the next offset at which a complete valid entry decodes.
//
// Candidates are filtered cheaply first: the first byte of klen must be
// non-zero (klen > 0), so runs of zeros are skipped a block at a time; the
// header must decode; meta must be one badger can write; klen ≤ 1<<16; the
// entry must fit in the file. Only then is the CRC checked. Short entries are
// hashed directly; long ones (a garbage vlen can claim most of the file) are
// checked in O(1) via prefix CRCs and CRC shifting, so the search is linear in
// the file size and does not allocate per candidate.
type walSearcher struct {
	data  []byte
	zeros walZeros
	limit int // index of the last non-zero byte; no entry can start after limit-2
	pre   *walPrefixCRC
}

// walDirectCRCMax is the body length up to which a candidate is hashed directly.
const walDirectCRCMax = 512

func (s *walSearcher) next(from int) (int, bool) {
	data := s.data
	for p := from; p+walMinEntryLen <= len(data) && p+2 <= s.limit; p++ {
		if data[p+2] == 0 {
			q := s.zeros.next(p + 2)
			p = q - 2
			if p+walMinEntryLen > len(data) || p+2 > s.limit {
				break
			}
		}
		if meta := data[p]; meta&walUnusedMetaBits != 0 || meta&walTxnMetaBits == walTxnMetaBits {
			continue
		}
		_, hlen, klen, vlen, ok := walDecodeHeader(data, p)
		if !ok {
			continue
		}
		m, ok := walBodyLen(data, p, hlen, klen, vlen)
		if !ok {
			continue
		}
		want := binary.BigEndian.Uint32(data[p+m:])
		var got uint32
		if m <= walDirectCRCMax {
			got = crc32.Update(0, walCRCTable, data[p:p+m])
		} else {
			if s.pre == nil {
				s.pre = newWALPrefixCRC(data, from)
			}
			got = s.pre.rangeCRC(p, p+m)
		}
		if got == want {
			return p, true
		}
	}
	return 0, false
}

var walZeroBlock [4096]byte

// walExtent is a byte range [start, end) of a file that may hold data.
type walExtent struct{ start, end int64 }

// walDataExtents lists the data regions of f within [from, size), skipping holes
// with SEEK_DATA/SEEK_HOLE where the OS has them. Without them, or on any
// error, the whole range is one extent. Holes always read as zeros, so
// skipping them never changes a result.
func walDataExtents(f *os.File, from, size int64) []walExtent {
	whole := []walExtent{{from, size}}
	var seekData, seekHole int
	switch runtime.GOOS {
	case "linux", "freebsd", "illumos", "solaris":
		seekData, seekHole = 3, 4
	case "darwin", "ios":
		seekData, seekHole = 4, 3
	default:
		return whole
	}
	var ext []walExtent
	for off := from; off < size; {
		d, err := f.Seek(off, seekData)
		if err != nil {
			// ENXIO means only hole from off to EOF. Confirm that portably
			// (no errno constants on every OS): off must be in a hole.
			if h, herr := f.Seek(off, seekHole); herr == nil && h == off {
				break
			}
			return whole
		}
		if d < off || d > size {
			return whole
		}
		if d == size {
			break
		}
		h, err := f.Seek(d, seekHole)
		if err != nil || h <= d {
			return whole
		}
		h = min(h, size)
		ext = append(ext, walExtent{d, h})
		off = h
		if len(ext) > 1<<16 { // absurdly fragmented; just read it all
			return whole
		}
	}
	return ext
}

// walZeros finds non-zero bytes in data, looking only inside ext.
type walZeros struct {
	data []byte
	ext  []walExtent
}

// next returns the index of the first non-zero byte at or after i, or
// len(data).
func (z walZeros) next(i int) int {
	k := sort.Search(len(z.ext), func(k int) bool { return int(z.ext[k].end) > i })
	for ; k < len(z.ext); k++ {
		start, end := int(z.ext[k].start), int(z.ext[k].end)
		if j := walNextNonZero(z.data[:end], max(i, start)); j < end {
			return j
		}
	}
	return len(z.data)
}

// last returns the index of the last non-zero byte at or after from, or -1.
func (z walZeros) last(from int) int {
	for k := len(z.ext) - 1; k >= 0 && int(z.ext[k].end) > from; k-- {
		start, end := int(z.ext[k].start), int(z.ext[k].end)
		if j := walLastNonZero(z.data[:end], max(from, start)); j >= 0 {
			return j
		}
	}
	return -1
}

// walNextNonZero returns the index of the first non-zero byte in b at or after
// i, or len(b).
func walNextNonZero(b []byte, i int) int {
	for i+len(walZeroBlock) <= len(b) && bytes.Equal(b[i:i+len(walZeroBlock)], walZeroBlock[:]) {
		i += len(walZeroBlock)
	}
	for i+8 <= len(b) && binary.LittleEndian.Uint64(b[i:]) == 0 {
		i += 8
	}
	for i < len(b) && b[i] == 0 {
		i++
	}
	return i
}

// walLastNonZero returns the index of the last non-zero byte in b at or after
// from, or -1.
func walLastNonZero(b []byte, from int) int {
	i := len(b)
	for i-len(walZeroBlock) >= from && bytes.Equal(b[i-len(walZeroBlock):i], walZeroBlock[:]) {
		i -= len(walZeroBlock)
	}
	for i-8 >= from && binary.LittleEndian.Uint64(b[i-8:]) == 0 {
		i -= 8
	}
	for i > from && b[i-1] == 0 {
		i--
	}
	if i <= from {
		return -1
	}
	return i - 1
}

// walPrefixCRC gives the CRC32-C of any data[i:j] (base ≤ i ≤ j) in O(1).
//
// With C(k) = crc(data[base:k]), CRC linearity gives
//
//	crc(data[i:j]) = C(j) ^ shift(C(i), j-i)
//
// where shift multiplies by x^(8n) modulo the polynomial (zlib's
// crc32_combine). C is kept at checkpoints every walPrefixStride bytes, extended
// lazily, and finished with at most walPrefixStride bytes of direct hashing.
type walPrefixCRC struct {
	data []byte
	base int
	cps  []uint32 // cps[k] = crc(data[base : base+k*walPrefixStride])

	// The search asks for the start of the next candidate a few bytes after
	// the previous one; remember the last start to extend it cheaply.
	lastI int
	lastC uint32
}

const walPrefixStride = 512

func newWALPrefixCRC(data []byte, base int) *walPrefixCRC {
	return &walPrefixCRC{data: data, base: base, cps: []uint32{0}, lastI: base}
}

func (p *walPrefixCRC) prefix(i int) uint32 {
	k := (i - p.base) / walPrefixStride
	for len(p.cps) <= k {
		n := len(p.cps) - 1
		start := p.base + n*walPrefixStride
		p.cps = append(p.cps, crc32.Update(p.cps[n], walCRCTable, p.data[start:start+walPrefixStride]))
	}
	start := p.base + k*walPrefixStride
	return crc32.Update(p.cps[k], walCRCTable, p.data[start:i])
}

// start is prefix(i) for ascending i.
func (p *walPrefixCRC) start(i int) uint32 {
	if i < p.lastI || i-p.lastI > walPrefixStride {
		p.lastC = p.prefix(i)
	} else {
		p.lastC = crc32.Update(p.lastC, walCRCTable, p.data[p.lastI:i])
	}
	p.lastI = i
	return p.lastC
}

func (p *walPrefixCRC) rangeCRC(i, j int) uint32 {
	return p.prefix(j) ^ walCRCShift(p.start(i), uint64(j-i))
}

// GF(2) arithmetic for CRC32-C in reflected bit order (as in zlib).
const walCastagnoliReflected = 0x82F63B78

// walGFMul returns a*b modulo the Castagnoli polynomial (branch-free; the
// forward search calls it for every long candidate).
func walGFMul(a, b uint32) uint32 {
	var p uint32
	for i := 31; i >= 0; i-- {
		p ^= b & -(a >> uint(i) & 1)
		b = b>>1 ^ walCastagnoliReflected&-(b&1)
	}
	return p
}

var (
	walShiftOnce sync.Once
	walShiftLo   []uint32 // x^(8n) for n < 1<<16
	walShiftHi   []uint32 // x^(8n·2^16) for n < 1<<16
)

func walBuildShiftTables() {
	const one = uint32(1) << 31 // x^0
	x := uint32(1) << 30        // x^1
	x8 := walGFMul(walGFMul(x, x), walGFMul(x, x))
	x8 = walGFMul(x8, x8) // x^8
	walShiftLo = make([]uint32, 1<<16)
	walShiftLo[0] = one
	for i := 1; i < len(walShiftLo); i++ {
		walShiftLo[i] = walGFMul(x8, walShiftLo[i-1])
	}
	step := walGFMul(x8, walShiftLo[len(walShiftLo)-1]) // x^(8·2^16)
	walShiftHi = make([]uint32, 1<<16)
	walShiftHi[0] = one
	for i := 1; i < len(walShiftHi); i++ {
		walShiftHi[i] = walGFMul(step, walShiftHi[i-1])
	}
}

// walCRCShift returns crc as if n zero bytes had been appended to the raw CRC
// register, i.e. crc·x^(8n) mod P. n must be < 2^32.
func walCRCShift(crc uint32, n uint64) uint32 {
	walShiftOnce.Do(walBuildShiftTables)
	m := walShiftLo[n&0xFFFF]
	if hi := (n >> 16) & 0xFFFF; hi != 0 {
		m = walGFMul(m, walShiftHi[hi])
	}
	return walGFMul(m, crc)
}

// Quarantine copies every *.mem, *.vlog and MANIFEST file in dir (plus
// KEYREGISTRY, without which encrypted logs cannot be read) into
// dir/../<base>-damaged-<UTC timestamp>/ (0700, files fsynced), so an
// operator who accepts the loss keeps the evidence. Holes in sparse files stay
// holes. The originals are not modified. Returns that directory.
func Quarantine(dir string, now time.Time) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("store: quarantine: %w", err)
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return "", fmt.Errorf("store: quarantine: %w", err)
	}
	var names []string
	for _, de := range entries {
		name := de.Name()
		if !de.Type().IsRegular() {
			continue
		}
		if strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog") ||
			name == "MANIFEST" || name == "KEYREGISTRY" {
			names = append(names, name)
		}
	}
	sort.Strings(names)

	parent := filepath.Dir(abs)
	stem := filepath.Base(abs) + "-damaged-" + now.UTC().Format("20060102T150405Z")
	dest := filepath.Join(parent, stem)
	for i := 2; ; i++ {
		err = os.Mkdir(dest, 0o700)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return "", fmt.Errorf("store: quarantine: %w", err)
		}
		dest = filepath.Join(parent, fmt.Sprintf("%s-%d", stem, i))
	}
	for _, name := range names {
		if err := walCopyFile(filepath.Join(abs, name), filepath.Join(dest, name)); err != nil {
			return dest, fmt.Errorf("store: quarantine: %w", err)
		}
	}
	if err := walSyncDir(dest); err != nil {
		return dest, fmt.Errorf("store: quarantine: %w", err)
	}
	if err := walSyncDir(parent); err != nil {
		return dest, fmt.Errorf("store: quarantine: %w", err)
	}
	return dest, nil
}

// walCopyFile copies src to a new file dst, leaving all-zero blocks as
// holes, and fsyncs dst.
func walCopyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	size := fi.Size()
	buf := make([]byte, 1<<20)
	for _, e := range walDataExtents(in, 0, size) {
		for off := e.start; off < e.end; {
			n := int(min(int64(len(buf)), e.end-off))
			if _, err := in.ReadAt(buf[:n], off); err != nil {
				return fmt.Errorf("%s: %w", src, err)
			}
			for i := 0; i < n; i += len(walZeroBlock) {
				j := min(i+len(walZeroBlock), n)
				if bytes.Equal(buf[i:j], walZeroBlock[:j-i]) {
					continue // leave a hole
				}
				if _, err := out.WriteAt(buf[i:j], off+int64(i)); err != nil {
					return err
				}
			}
			off += int64(n)
		}
	}
	// Extend over trailing holes; a file that changed size under us is an error.
	if fi2, err := in.Stat(); err != nil {
		return err
	} else if fi2.Size() != size {
		return fmt.Errorf("%s changed size while copying (%d → %d bytes)", src, size, fi2.Size())
	}
	if err := out.Truncate(size); err != nil {
		return err
	}
	return out.Sync()
}

func walSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && runtime.GOOS != "windows" {
		return err
	}
	return nil
}

// ClearTornTail zeroes a torn tail in place and fsyncs the file, so badger
// sees a clean end there. Badger would cut it anyway, but it decodes the
// garbage first, and a garbage length can make it allocate gigabytes or
// panic (lengths are added in 32 bits). The bytes are a write that never
// finished, so never an acknowledged one.
func ClearTornTail(t TornTail) error {
	f, err := os.OpenFile(t.File, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("store: clear torn tail: %w", err)
	}
	defer f.Close()
	zeros := make([]byte, 64<<10)
	for off, end := t.Offset, t.Offset+t.Bytes; off < end; {
		n := min(int64(len(zeros)), end-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("store: clear torn tail: %w", err)
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: clear torn tail: %w", err)
	}
	return f.Close()
}
