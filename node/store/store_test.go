package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readKey(t *testing.T, s *Store, k string) (string, bool) {
	t.Helper()
	var v []byte
	var ok bool
	if err := s.View(func(tx *Tx) error {
		var err error
		v, ok, err = tx.get([]byte(k))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return string(v), ok
}

// TestGroupCommitIsolatesFailures: writers that share one commit do not
// share each other's failures. A write function that errors or panics
// loses only its own writes.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTestStore(t)
	const writers = 64
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Write(context.Background(), func(tx *Tx) error {
				tx.set([]byte(fmt.Sprintf("k%02d", i)), []byte("v"))
				switch i % 4 {
				case 1:
					return errors.New("refused")
				case 2:
					panic("bug in a handler")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i := 0; i < writers; i++ {
		_, ok := readKey(t, s, fmt.Sprintf("k%02d", i))
		switch i % 4 {
		case 1, 2:
			if errs[i] == nil || ok {
				t.Errorf("writer %d: err %v, stored %v; want error and nothing stored", i, errs[i], ok)
			}
		default:
			if errs[i] != nil || !ok {
				t.Errorf("writer %d: err %v, stored %v; want stored", i, errs[i], ok)
			}
		}
	}
	if s.Commits() >= writers {
		t.Errorf("%d commits for %d concurrent writers: group commit did not batch", s.Commits(), writers)
	}
}

// TestWriteSeesEarlierWritesOfTheBatch: read-modify-write through Tx is
// serial, so concurrent increments of one counter lose nothing.
func TestWriteSeesEarlierWritesOfTheBatch(t *testing.T) {
	s := openTestStore(t)
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Write(context.Background(), func(tx *Tx) error {
				return tx.addCount([]byte("counter"), 1)
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	v, _ := readKey(t, s, "counter")
	if got := binary.BigEndian.Uint64([]byte(v)); got != 200 {
		t.Fatalf("counter = %d, want 200", got)
	}
}

func TestWriteAfterCloseAndCanceled(t *testing.T) {
	s := openTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Write(ctx, func(tx *Tx) error { tx.set([]byte("x"), nil); return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled write: %v", err)
	}
	if _, ok := readKey(t, s, "x"); ok {
		t.Fatal("a canceled write was stored")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Write(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestOpenRefusesUninitializedDir(t *testing.T) {
	if _, err := Open(Options{Dir: t.TempDir()}); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Open of an empty dir: %v", err)
	}
}

// TestOpenRefusesMidLogDamage: the store does not let badger silently cut
// a damaged log; with SkipLogCheck (ward repair) it opens.
func TestOpenRefusesMidLogDamage(t *testing.T) {
	dir, _ := walCrashCopy(t, 300, 16, 1<<10)
	mem := walOnlyFile(t, dir, ".mem")
	data, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	_, end := walRefWalk(data)
	data[(20+end)/2] ^= 0x5a
	if err := os.WriteFile(mem, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("Open of a damaged log: %v, want ErrLogDamaged", err)
	}
	s, err := Open(Options{Dir: dir, SkipLogCheck: true})
	if err != nil {
		t.Fatalf("Open with SkipLogCheck: %v", err)
	}
	s.Close()
}

// TestOpenClearsHostileTornTail: a torn tail whose garbage header claims a
// value length near 4 GiB would make badger allocate it or panic; the store
// zeroes the tail first and opens with every complete write intact.
func TestOpenClearsHostileTornTail(t *testing.T) {
	dir, keys := walCrashCopy(t, 300, 16, 1<<10)
	mem := walOnlyFile(t, dir, ".mem")
	data, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	_, end := walRefWalk(data)
	// meta, userMeta, klen=4, vlen=0xfffffffe (uvarint), expiresAt=0, then
	// junk: badger adds klen+vlen in 32 bits, gets 2, and slices [:4].
	hostile := []byte{0x40, 0x01, 0x04, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0x00, 'j', 'u', 'n', 'k'}
	copy(data[end:], hostile)
	if err := os.WriteFile(mem, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for k, v := range keys {
		if got, ok := readKey(t, s, k); !ok || got != v {
			t.Fatalf("key %s lost after clearing the torn tail", k)
		}
	}
	s.Close()
}

// TestSnapshotRestoreVerifiesStateHash: a snapshot restores to the same
// state hash while writes go on after it was taken, and a corrupted stream
// is refused.
func TestSnapshotRestoreVerifiesStateHash(t *testing.T) {
	src := openTestStore(t)
	for i := 0; i < 500; i++ {
		if err := src.Write(context.Background(), func(tx *Tx) error {
			tx.set([]byte(fmt.Sprintf("k%04d", i)), []byte(fmt.Sprintf("value %d", i)))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	want, err := src.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	sn := src.Snapshot()
	// A write after the snapshot was taken is not in it.
	if err := src.Write(context.Background(), func(tx *Tx) error { tx.set([]byte("later"), []byte("x")); return nil }); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sum, err := sn.Stream(&buf)
	sn.Release()
	if err != nil || sum != want {
		t.Fatalf("Stream: %v, hash %x want %x", err, sum[:4], want[:4])
	}
	dst := openTestStore(t)
	if err := dst.Write(context.Background(), func(tx *Tx) error { tx.set([]byte("stale"), []byte("y")); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got, _ := dst.StateHash(); got != want {
		t.Fatal("restored state hash differs")
	}
	if dst.Restoring() {
		t.Fatal("a finished restore still says it is restoring")
	}
	if _, ok := readKey(t, dst, "stale"); ok {
		t.Fatal("restore kept a key the snapshot does not have")
	}
	if _, ok := readKey(t, dst, "later"); ok {
		t.Fatal("restore has a key written after the snapshot")
	}
	bad := append([]byte(nil), buf.Bytes()...)
	bad[len(bad)/2] ^= 1
	if err := dst.Restore(bytes.NewReader(bad)); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("corrupted snapshot: %v, want ErrSnapshotCorrupt", err)
	}
	if !dst.Restoring() {
		t.Fatal("a failed restore does not say the state is partial")
	}
}

// TestCommitNeverSplitsOneWrite: a batch of writes larger than badger's
// transaction limit is committed in several transactions, each holding
// whole writes; a single write over the limit is refused whole.
func TestCommitNeverSplitsOneWrite(t *testing.T) {
	s := openTestStore(t)
	val := bytes.Repeat([]byte("v"), 2048)
	err := s.Write(context.Background(), func(tx *Tx) error {
		for i := 0; i < 2000; i++ {
			tx.set([]byte(fmt.Sprintf("big%05d", i)), val)
		}
		return nil
	})
	if !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("oversized write: %v, want ErrTooLarge", err)
	}
	if _, ok := readKey(t, s, "big00000"); ok {
		t.Fatal("part of a refused write was stored")
	}
	var wg sync.WaitGroup
	for w := 0; w < 40; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Write(context.Background(), func(tx *Tx) error {
				for i := 0; i < 100; i++ {
					tx.set([]byte(fmt.Sprintf("w%02d-%03d", w, i)), val)
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for w := 0; w < 40; w++ {
		if _, ok := readKey(t, s, fmt.Sprintf("w%02d-099", w)); !ok {
			t.Fatalf("write %d lost", w)
		}
	}
}
