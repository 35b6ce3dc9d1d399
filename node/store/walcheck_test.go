package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// ---- helpers: real badger on disk -----------------------------------------

func walTestOpts(dir string, valueThreshold int64) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(nil).
		WithMemTableSize(1 << 20).
		WithValueLogFileSize(1 << 20).
		WithValueThreshold(valueThreshold)
}

// walCrashCopy writes n keys in separate transactions, copies the directory
// while the DB is still open (the logs' content is in the page cache, as after
// a process crash), then closes the original. It returns the copy.
func walCrashCopy(t *testing.T, n, valueSize int, valueThreshold int64) (string, map[string]string) {
	t.Helper()
	src := t.TempDir()
	db, err := badger.Open(walTestOpts(src, valueThreshold))
	if err != nil {
		t.Fatal(err)
	}
	keys := make(map[string]string, n)
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("key-%05d", i)
		v := fmt.Sprintf("value-%05d-", i)
		v += strings.Repeat("x", max(0, valueSize-len(v)))
		keys[k] = v
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(k), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	dst := t.TempDir()
	walCopyDirFiles(t, src, dst)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return dst, keys
}

func walCopyDirFiles(t *testing.T, src, dst string) {
	t.Helper()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// walCountKeys opens dir with badger and counts how many of keys read back with
// the right value.
func walCountKeys(t *testing.T, dir string, keys map[string]string, valueThreshold int64) int {
	t.Helper()
	db, err := badger.Open(walTestOpts(dir, valueThreshold))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	found := 0
	err = db.View(func(txn *badger.Txn) error {
		for k, v := range keys {
			item, err := txn.Get([]byte(k))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			got, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if string(got) == v {
				found++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func walOnlyFile(t *testing.T, dir, ext string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil || len(m) != 1 {
		t.Fatalf("want exactly one %s file in %s, got %v (%v)", ext, dir, m, err)
	}
	return m[0]
}

// ---- reference decoder: an independent, streaming copy of badger's
// safeRead.Entry / logFile.iterate decoding, used to cross-check the scanner.

type walHashByteReader struct {
	r *bytes.Reader
	h hash.Hash32
}

func (t *walHashByteReader) ReadByte() (byte, error) {
	b, err := t.r.ReadByte()
	if err != nil {
		return 0, err
	}
	t.h.Write([]byte{b})
	return b, nil
}

// walRefEntry decodes one entry at off; returns its length and meta, or ok=false
// where badger would stop.
func walRefEntry(data []byte, off int) (n int, meta byte, ok bool) {
	if off >= len(data) {
		return 0, 0, false
	}
	r := bytes.NewReader(data[off:])
	tee := &walHashByteReader{r: r, h: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
	meta, err := tee.ReadByte()
	if err != nil {
		return 0, 0, false
	}
	if _, err := tee.ReadByte(); err != nil {
		return 0, 0, false
	}
	klen64, err := binary.ReadUvarint(tee)
	if err != nil {
		return 0, 0, false
	}
	vlen64, err := binary.ReadUvarint(tee)
	if err != nil {
		return 0, 0, false
	}
	if _, err := binary.ReadUvarint(tee); err != nil {
		return 0, 0, false
	}
	klen, vlen := uint32(klen64), uint32(vlen64)
	if klen > 1<<16 || klen == 0 {
		return 0, 0, false
	}
	body := uint64(klen) + uint64(vlen)
	if body > uint64(r.Len()) || body > 1<<32-1 {
		return 0, 0, false
	}
	buf := make([]byte, body)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, 0, false
	}
	tee.h.Write(buf)
	var crc [4]byte
	if _, err := io.ReadFull(r, crc[:]); err != nil {
		return 0, 0, false
	}
	if binary.BigEndian.Uint32(crc[:]) != tee.h.Sum32() {
		return 0, 0, false
	}
	return len(data) - off - r.Len(), meta, true
}

// walRefWalk returns the offsets of the entries badger would replay and where it
// stops.
func walRefWalk(data []byte) (starts []int, stop int) {
	off := 20
	for {
		n, _, ok := walRefEntry(data, off)
		if !ok {
			return starts, off
		}
		starts = append(starts, off)
		off += n
	}
}

// walEncodeEntry mirrors badger's logFile.encodeEntry (unencrypted).
func walEncodeEntry(meta byte, key, value []byte) []byte {
	var hdr [32]byte
	hdr[0], hdr[1] = meta, 0
	i := 2
	i += binary.PutUvarint(hdr[i:], uint64(len(key)))
	i += binary.PutUvarint(hdr[i:], uint64(len(value)))
	i += binary.PutUvarint(hdr[i:], 0)
	out := append([]byte(nil), hdr[:i]...)
	out = append(out, key...)
	out = append(out, value...)
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, walCRCTable))
}

func walWriteMem(t *testing.T, body []byte) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "00001.mem")
	if err := os.WriteFile(path, append(make([]byte, 20), body...), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// ---- the four cases from the design, on real badger files ----------------

func TestCheckLogsCleanCrashCopy(t *testing.T) {
	dir, keys := walCrashCopy(t, 300, 16, 1<<10)
	tails, err := CheckLogs(dir)
	if err != nil {
		t.Fatalf("CheckLogs: %v", err)
	}
	if len(tails) != 0 {
		t.Fatalf("unexpected torn tails: %+v", tails)
	}
	if got := walCountKeys(t, dir, keys, 1<<10); got != len(keys) {
		t.Fatalf("badger found %d of %d keys", got, len(keys))
	}
}

func TestCheckLogsTornTail(t *testing.T) {
	dir, keys := walCrashCopy(t, 300, 16, 1<<10)
	mem := walOnlyFile(t, dir, ".mem")
	data, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	starts, end := walRefWalk(data)
	if len(starts) < 600 { // 300 × (entry + txn commit marker)
		t.Fatalf("only %d entries in %s", len(starts), mem)
	}
	// Non-zero garbage shorter than one entry, right after the last entry.
	rng := rand.New(rand.NewSource(1))
	garbage := make([]byte, 17)
	for i := range garbage {
		garbage[i] = byte(1 + rng.Intn(255))
	}
	copy(data[end:], garbage)
	if err := os.WriteFile(mem, data, 0o600); err != nil {
		t.Fatal(err)
	}

	tails, err := CheckLogs(dir)
	if err != nil {
		t.Fatalf("CheckLogs: %v", err)
	}
	want := []TornTail{{File: mem, Offset: int64(end), Bytes: int64(len(garbage))}}
	if len(tails) != 1 || tails[0] != want[0] {
		t.Fatalf("tails = %+v, want %+v", tails, want)
	}
	if got := walCountKeys(t, dir, keys, 1<<10); got != len(keys) {
		t.Fatalf("badger found %d of %d keys", got, len(keys))
	}
}

func TestCheckLogsFlippedByteInMem(t *testing.T) {
	dir, keys := walCrashCopy(t, 300, 16, 1<<10)
	mem := walOnlyFile(t, dir, ".mem")
	data, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	starts, end := walRefWalk(data)
	pos := (20 + end) / 2
	bad := 0 // index of the entry holding pos
	for i, s := range starts {
		if s <= pos {
			bad = i
		}
	}
	data[pos] ^= 0x5a
	if err := os.WriteFile(mem, data, 0o600); err != nil {
		t.Fatal(err)
	}

	tails, err := CheckLogs(dir)
	if !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("err = %v, want ErrLogDamaged", err)
	}
	var de *LogDamageError
	if !errors.As(err, &de) {
		t.Fatalf("err %T is not *LogDamageError", err)
	}
	if de.File != mem || de.Offset != int64(starts[bad]) {
		t.Fatalf("damage at %s:%d, want %s:%d", de.File, de.Offset, mem, starts[bad])
	}
	if want := len(starts) - bad - 1; de.EntriesLost != want || want == 0 {
		t.Fatalf("EntriesLost = %d, want %d (> 0)", de.EntriesLost, want)
	}
	if len(tails) != 0 {
		t.Fatalf("unexpected torn tails: %+v", tails)
	}
	msg := err.Error()
	for _, s := range []string{mem, fmt.Sprint(de.Offset), fmt.Sprint(de.EntriesLost),
		"docs/operations.md", "wardsync ward repair --data " + dir, "re-sync the ward from the city"} {
		if !strings.Contains(msg, s) {
			t.Errorf("message lacks %q: %s", s, msg)
		}
	}

	// Why this check exists: badger itself opens the damaged copy without an
	// error and silently loses the keys written after the damage.
	if got := walCountKeys(t, dir, keys, 1<<10); got >= len(keys) {
		t.Fatalf("expected badger to silently drop keys, found %d of %d", got, len(keys))
	} else {
		t.Logf("badger opened the damaged log without error and kept %d of %d keys", got, len(keys))
	}
}

func TestCheckLogsFlippedByteInVlog(t *testing.T) {
	// Values above the threshold go to the value log; the WAL holds pointers.
	dir, _ := walCrashCopy(t, 200, 200, 64)
	vlog := walOnlyFile(t, dir, ".vlog")
	data, err := os.ReadFile(vlog)
	if err != nil {
		t.Fatal(err)
	}
	starts, end := walRefWalk(data)
	if len(starts) < 200 {
		t.Fatalf("only %d entries in %s", len(starts), vlog)
	}
	data[(20+end)/2] ^= 0x01
	if err := os.WriteFile(vlog, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = CheckLogs(dir)
	var de *LogDamageError
	if !errors.As(err, &de) || de.File != vlog || de.EntriesLost == 0 {
		t.Fatalf("err = %v, want damage in %s", err, vlog)
	}
}

// A zeroed block in the middle decodes as badger's "all-zero header" clean
// end, but valid entries follow it, so it is damage too.
func TestCheckLogsZeroedBlockInMem(t *testing.T) {
	dir, _ := walCrashCopy(t, 300, 16, 1<<10)
	mem := walOnlyFile(t, dir, ".mem")
	data, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	starts, end := walRefWalk(data)
	// Zero exactly one whole entry in the middle, so badger sees an all-zero header.
	i := len(starts) / 2
	clear(data[starts[i]:starts[i+1]])
	if err := os.WriteFile(mem, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stop := walRefWalk(data); stop != starts[i] {
		t.Fatalf("reference walk stops at %d, want %d", stop, starts[i])
	}
	_, err = CheckLogs(dir)
	var de *LogDamageError
	if !errors.As(err, &de) || de.Offset != int64(starts[i]) || de.EntriesLost != len(starts)-i-1 {
		t.Fatalf("err = %v, want damage at %d losing %d (end %d)", err, starts[i], len(starts)-i-1, end)
	}
}

func TestQuarantine(t *testing.T) {
	dir, _ := walCrashCopy(t, 100, 200, 64)
	// Add a file Quarantine must not copy.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := walHashDir(t, dir, true)

	now := time.Date(2024, 3, 5, 6, 7, 8, 0, time.FixedZone("X", 3600))
	q, err := Quarantine(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	wantDir := filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-damaged-20240305T050708Z")
	if q != wantDir {
		t.Fatalf("Quarantine dir = %s, want %s", q, wantDir)
	}
	fi, err := os.Stat(q)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}

	if after := walHashDir(t, dir, true); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("originals changed:\nbefore %v\nafter  %v", before, after)
	}
	copied := walHashDir(t, q, false)
	wantCopied := 0
	for name, sum := range before {
		keep := strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog") ||
			name == "MANIFEST" || name == "KEYREGISTRY"
		if !keep {
			if _, ok := copied[name]; ok {
				t.Errorf("%s should not be copied", name)
			}
			continue
		}
		wantCopied++
		if content, _, _ := strings.Cut(sum, "@"); copied[name] != content {
			t.Errorf("%s: copy differs from original", name)
		}
	}
	if len(copied) != wantCopied || wantCopied < 3 {
		t.Fatalf("copied %v, want %d files", copied, wantCopied)
	}

	// A second quarantine in the same second gets its own directory.
	q2, err := Quarantine(dir, now)
	if err != nil || q2 == q {
		t.Fatalf("second Quarantine = %s, %v", q2, err)
	}

	// The quarantined copy checks the same as the original.
	if _, err := CheckLogs(q); err != nil {
		t.Fatalf("CheckLogs(quarantine): %v", err)
	}
}

// walHashDir maps file name to content hash (and, with mtime, "@modtime").
func walHashDir(t *testing.T, dir string, mtime bool) map[string]string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := de.Info()
		m[de.Name()] = fmt.Sprintf("%x/%d", sha256.Sum256(b), len(b))
		if mtime {
			m[de.Name()] += fmt.Sprintf("@%d", fi.ModTime().UnixNano())
		}
	}
	return m
}

// ---- synthetic logs ---------------------------------------------------------

func TestCheckLogsMissingOrEmptyDir(t *testing.T) {
	tails, err := CheckLogs(filepath.Join(t.TempDir(), "nope"))
	if tails != nil || err != nil {
		t.Fatalf("missing dir: %v, %v", tails, err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(dir, "00002.mem"), nil, 0o600) // empty: badger re-initialises it
	tails, err = CheckLogs(dir)
	if tails != nil || err != nil {
		t.Fatalf("no logs: %v, %v", tails, err)
	}
}

func TestCheckLogsLongCandidate(t *testing.T) {
	// Damage followed by one valid entry with a 300 KB value: found through the
	// prefix-CRC path, not direct hashing.
	rng := rand.New(rand.NewSource(2))
	var body []byte
	for i := 0; i < 10; i++ {
		body = append(body, walEncodeEntry(0x40, []byte(fmt.Sprintf("k%02d-----tstamp", i)), []byte("v"))...)
	}
	badAt := 20 + len(body)
	junk := make([]byte, 5000)
	rng.Read(junk)
	body = append(body, junk...)
	big := make([]byte, 300<<10)
	rng.Read(big)
	body = append(body, walEncodeEntry(0x42, []byte("long-key-tstamp"), big)...)
	body = append(body, make([]byte, 4096)...)
	dir, path := walWriteMem(t, body)
	_, err := CheckLogs(dir)
	var de *LogDamageError
	if !errors.As(err, &de) || de.File != path || de.Offset != int64(badAt) || de.EntriesLost != 1 {
		t.Fatalf("err = %v, want damage at %d losing 1", err, badAt)
	}
}

func TestCheckLogsPrefixCRC(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	data := make([]byte, 200_000)
	rng.Read(data)
	for _, base := range []int{0, 1, 777} {
		p := newWALPrefixCRC(data, base)
		for k := 0; k < 2000; k++ {
			i := base + rng.Intn(len(data)-base)
			j := i + rng.Intn(len(data)-i+1)
			if k%10 == 0 {
				j = len(data)
			}
			if got, want := p.rangeCRC(i, j), crc32.Checksum(data[i:j], walCRCTable); got != want {
				t.Fatalf("base %d range [%d,%d): got %08x want %08x", base, i, j, got, want)
			}
		}
	}
	// Shifts beyond the low table.
	for _, n := range []uint64{0, 1, 65535, 65536, 65537, 1 << 20, 3<<20 + 17} {
		z := make([]byte, n)
		c := crc32.Checksum([]byte("abc"), walCRCTable)
		// crc(abc || 0^n) = shift(crc(abc), n) ^ crc(0^n)
		if got, want := walCRCShift(c, n)^crc32.Checksum(z, walCRCTable),
			crc32.Update(c, walCRCTable, z); got != want {
			t.Fatalf("shift %d: got %08x want %08x", n, got, want)
		}
	}
}

// ---- fuzzing ---------------------------------------------------------------

func FuzzCheckLogs(f *testing.F) {
	var valid []byte
	for i := 0; i < 5; i++ {
		valid = append(valid, walEncodeEntry(0x40, []byte(fmt.Sprintf("key%d....tstamp", i)), []byte("value"))...)
		valid = append(valid, walEncodeEntry(0x80, []byte("!badger!txn-tstamp"), []byte("12"))...)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Add(valid)
	f.Add(append(append([]byte(nil), valid...), 0xde, 0xad, 0xbe, 0xef))
	flipped := append([]byte(nil), valid...)
	flipped[len(flipped)/3] ^= 0x10
	f.Add(flipped)
	f.Add(append(append(append([]byte(nil), valid[:30]...), make([]byte, 40)...), valid...))
	f.Add([]byte{0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f, 0})

	f.Fuzz(func(t *testing.T, body []byte) {
		dir, path := walWriteMem(t, body)
		tails, err := CheckLogs(dir)

		data := append(make([]byte, 20), body...)
		_, stop := walRefWalk(data)
		// What the scanner must have concluded, by brute force.
		damaged := false
		for p := stop + 1; p < len(data) && !damaged; p++ {
			if _, meta, ok := walRefEntry(data, p); ok && meta&0x30 == 0 && meta&0xc0 != 0xc0 {
				damaged = true
			}
		}
		nonZeroAfter := len(bytes.Trim(data[stop:], "\x00")) > 0

		var de *LogDamageError
		switch {
		case damaged:
			if !errors.As(err, &de) || de.File != path || de.Offset != int64(stop) || de.EntriesLost < 1 || len(tails) != 0 {
				t.Fatalf("want damage at %d, got %v %+v", stop, err, tails)
			}
		case err != nil:
			t.Fatalf("unexpected error %v (stop %d)", err, stop)
		case nonZeroAfter:
			if len(tails) != 1 || tails[0].File != path || tails[0].Offset != int64(stop) || tails[0].Bytes < 1 ||
				tails[0].Offset+tails[0].Bytes > int64(len(data)) || data[tails[0].Offset+tails[0].Bytes-1] == 0 {
				t.Fatalf("want torn tail at %d, got %+v", stop, tails)
			}
		default:
			if len(tails) != 0 {
				t.Fatalf("want clean, got %+v", tails)
			}
		}
	})
}

// ---- performance -------------------------------------------------------------

// BenchmarkCheckLogs256MB: a 256 MB log of valid entries with one flipped byte
// near the start, and a 256 MB log that is random garbage after a few entries
// (the worst case for the forward search).
func BenchmarkCheckLogs256MB(b *testing.B) {
	const size = 256 << 20
	rng := rand.New(rand.NewSource(4))
	val := make([]byte, 300)
	var logData []byte
	logData = append(logData, make([]byte, 20)...)
	for i := 0; len(logData) < size-1024; i++ {
		rng.Read(val)
		logData = append(logData, walEncodeEntry(0x40, []byte(fmt.Sprintf("key-%09d-tstamp", i)), val)...)
	}
	cases := map[string]func([]byte){
		"flip-near-start": func(d []byte) { d[1000] ^= 1 },
		"garbage": func(d []byte) {
			rng.Read(d[1000:])
		},
	}
	for name, mutate := range cases {
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			d := append([]byte(nil), logData...)
			mutate(d)
			if err := os.WriteFile(filepath.Join(dir, "00001.mem"), d, 0o600); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(d)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tails, err := CheckLogs(dir)
				if i == 0 {
					b.Logf("%s: tails=%+v err=%v", name, tails, err)
				}
			}
		})
	}
}

// badger preallocates logs as sparse files; data after a hole must still be
// found (the scanner skips holes with SEEK_DATA where it can).
func TestCheckLogsSparseFile(t *testing.T) {
	var body []byte
	for i := 0; i < 20; i++ {
		body = append(body, walEncodeEntry(0x40, []byte(fmt.Sprintf("k%02d-----tstamp", i)), []byte("v"))...)
	}
	end := 20 + len(body)
	far := walEncodeEntry(0x40, []byte("far-away-tstamp"), []byte("value"))
	for _, tc := range []struct {
		name  string
		at    int64
		tail  []byte
		check func(t *testing.T, tails []TornTail, err error, path string)
	}{
		{"clean", 0, nil, func(t *testing.T, tails []TornTail, err error, _ string) {
			if err != nil || len(tails) != 0 {
				t.Fatalf("got %v %v, want clean", tails, err)
			}
		}},
		{"entry-after-hole", 10 << 20, far, func(t *testing.T, tails []TornTail, err error, path string) {
			var de *LogDamageError
			if !errors.As(err, &de) || de.File != path || de.Offset != int64(end) || de.EntriesLost != 1 {
				t.Fatalf("got %v %v, want damage at %d losing 1", tails, err, end)
			}
		}},
		{"junk-after-hole", 10 << 20, []byte{1, 2, 3}, func(t *testing.T, tails []TornTail, err error, path string) {
			want := TornTail{File: path, Offset: int64(end), Bytes: 10<<20 + 3 - int64(end)}
			if err != nil || len(tails) != 1 || tails[0] != want {
				t.Fatalf("got %v %v, want %+v", tails, err, want)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, path := walWriteMem(t, body)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tail != nil {
				if _, err := f.WriteAt(tc.tail, tc.at); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(16 << 20); err != nil {
				t.Fatal(err)
			}
			f.Close()
			tails, err := CheckLogs(dir)
			tc.check(t, tails, err, path)

			q, err := Quarantine(dir, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(path)
			b, _ := os.ReadFile(filepath.Join(q, filepath.Base(path)))
			if !bytes.Equal(a, b) {
				t.Fatal("quarantined copy of sparse file differs")
			}
		})
	}
}
