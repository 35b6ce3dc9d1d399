package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// filledStore makes a closed store in a new dir holding n keys (a clean
// Close flushes them to a table) and returns the dir and the data.
func filledStore(t *testing.T, n int, key []byte) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Create: true, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i < n; i += 50 {
		if err := s.Write(context.Background(), func(tx *Tx) error {
			for j := i; j < min(i+50, n); j++ {
				k, v := fmt.Sprintf("key-%05d", j), strings.Repeat(fmt.Sprintf("value %d ", j), 8)
				tx.set([]byte(k), []byte(v))
				want[k] = v
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

func filesOf(t *testing.T, dir, ext string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// copyDir copies the regular files of a badger dir.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkSame opens dir and requires exactly want in it.
func checkSame(t *testing.T, dir string, key []byte, want map[string]string) {
	t.Helper()
	s, err := Open(Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	got := map[string]string{}
	if err := s.View(func(tx *Tx) error {
		return tx.scan([]byte("key-"), nil, false, true, func(k, v []byte) (bool, error) {
			got[string(k)] = string(v)
			return true, nil
		})
	}); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// TestDamagedTableIsRefusedNotAPanic is the regression test for a one-byte
// flip in a table (.sst): badger v4.9.6 panicked on it at open (a nil
// block dereferenced in Table.VerifyChecksum's error path, in a goroutine
// of its own, so the node died with a stack trace). Every byte of the
// table is flipped in turn: the store refuses to open with a *DamageError
// naming the file and the recovery, or, if badger's checks cannot see the
// flip, opens with exactly the data it had.
func TestDamagedTableIsRefusedNotAPanic(t *testing.T) {
	for _, enc := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"encrypted", []byte("0123456789abcdef0123456789abcdef")}} {
		t.Run(enc.name, func(t *testing.T) {
			dir, want := filledStore(t, 600, enc.key)
			if err := CheckFiles(dir, enc.key); err != nil {
				t.Fatalf("CheckFiles of an intact store: %v", err)
			}
			tables := filesOf(t, dir, ".sst")
			if len(tables) == 0 {
				t.Fatal("no table after a clean close")
			}
			sst := tables[len(tables)-1]
			fi, err := os.Stat(sst)
			if err != nil {
				t.Fatal(err)
			}
			refused, opened := 0, 0
			step := max(fi.Size()/150, 1) // every byte would take minutes; the tail is done in full
			for off := int64(0); off < fi.Size(); off++ {
				if off%step != 0 && off < fi.Size()-64 {
					continue
				}
				d := copyDir(t, dir)
				flipByte(t, filepath.Join(d, filepath.Base(sst)), off)
				s, err := Open(Options{Dir: d, EncryptionKey: enc.key})
				var de *DamageError
				switch {
				case err == nil:
					s.Close()
					opened++
					checkSame(t, d, enc.key, want)
				case errors.As(err, &de):
					refused++
					if de.File != filepath.Join(d, filepath.Base(sst)) || !strings.Contains(err.Error(), "re-sync the ward from the city") {
						t.Fatalf("offset %d: %v: does not name the file and the recovery", off, err)
					}
				default:
					t.Fatalf("offset %d: Open = %v, want a *DamageError", off, err)
				}
				os.RemoveAll(d)
			}
			t.Logf("%s: %d flips refused, %d invisible to the checks (data read back intact)", filepath.Base(sst), refused, opened)
			if refused == 0 {
				t.Fatal("no flip was refused")
			}
		})
	}
}

// TestDamagedLogHeader: a log's header starts with the key ID badger looks
// up at open. A flipped bit there makes badger fail with "Invalid datakey
// id"; the check says which file and how to recover instead. The rest of
// the header (the IV) is unused without encryption at rest, and a flip in
// it changes nothing.
func TestDamagedLogHeader(t *testing.T) {
	dir, want := filledStore(t, 100, nil)
	logs := filesOf(t, dir, ".vlog")
	if len(logs) == 0 {
		t.Fatal("no value log")
	}
	vlog := filepath.Base(logs[len(logs)-1])

	d := copyDir(t, dir)
	flipByte(t, filepath.Join(d, vlog), 7)
	_, err := Open(Options{Dir: d})
	var de *DamageError
	if !errors.As(err, &de) || de.File != filepath.Join(d, vlog) || !strings.Contains(err.Error(), "encryption key 1") {
		t.Fatalf("key ID flipped: Open = %v, want a *DamageError for %s", err, vlog)
	}

	d = copyDir(t, dir)
	flipByte(t, filepath.Join(d, vlog), 12)
	checkSame(t, d, nil, want)
}

// TestDamagedManifestAndMissingTable: a MANIFEST that fails its checksum,
// and a table it lists that is gone, are refused with a *DamageError.
func TestDamagedManifestAndMissingTable(t *testing.T) {
	dir, _ := filledStore(t, 100, nil)
	d := copyDir(t, dir)
	fi, err := os.Stat(filepath.Join(d, "MANIFEST"))
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(d, "MANIFEST"), fi.Size()-1)
	if _, err := Open(Options{Dir: d}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "MANIFEST") {
		t.Fatalf("damaged MANIFEST: Open = %v, want ErrDamaged", err)
	}
	d = copyDir(t, dir)
	for _, f := range filesOf(t, d, ".sst") {
		os.Remove(f)
	}
	if _, err := Open(Options{Dir: d}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("table gone: Open = %v, want ErrDamaged", err)
	}
	// A wrong encryption key is not damage.
	kd, _ := filledStore(t, 10, []byte("0123456789abcdef"))
	if err := CheckFiles(kd, []byte("fedcba9876543210")); err == nil || errors.Is(err, ErrDamaged) {
		t.Fatalf("wrong key: CheckFiles = %v, want a key error, not damage", err)
	}
}

// TestEncryptedWALWithDamagedIV: with encryption at rest, a log's
// checksums are over the encrypted bytes, so a flipped bit in the IV of
// its header passes them and badger replayed the memtable's log into
// garbage keys: every acknowledged write in it vanished, and the store
// opened as if nothing had happened. Now the store refuses to open.
func TestEncryptedWALWithDamagedIV(t *testing.T) {
	key := []byte("0123456789abcdef")
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Create: true, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := range 20 {
		k := fmt.Sprintf("key-%02d", i)
		mustWrite(t, s, func(tx *Tx) error { tx.set([]byte(k), []byte("value")); return nil })
		want[k] = "value"
	}
	// As a kill -9 leaves it: the writes are only in the memtable's log.
	crashed := copyDir(t, dir)
	s.Close()
	mems := filesOf(t, crashed, ".mem")
	if len(mems) == 0 {
		t.Fatal("no memtable log")
	}
	intact := copyDir(t, crashed)
	checkSame(t, intact, key, want)

	flipByte(t, mems[len(mems)-1], 12)
	_, err = Open(Options{Dir: crashed, EncryptionKey: key})
	var de *DamageError
	if !errors.As(err, &de) || de.File != mems[len(mems)-1] || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("IV flipped: Open = %v, want a *DamageError for %s", err, mems[len(mems)-1])
	}
}
