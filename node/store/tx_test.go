package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestScanSeesStagedWrites: a scan inside a write gives what the same scan
// gives once the write is committed, whatever was stored before, staged,
// staged twice or deleted — so nothing decided from a scan depends on
// whether a change was staged in this write or committed in an earlier
// one. (The city FSM applies many entries in one write, and members
// group entries differently: chaos seed 2005, docs/reliability.md.)
func TestScanSeesStagedWrites(t *testing.T) {
	type scanCase struct {
		prefix, after   string
		reverse, values bool
	}
	collect := func(tx *Tx, c scanCase) ([]string, error) {
		var out []string
		var after []byte
		if c.after != "" {
			after = []byte(c.after)
		}
		err := tx.scan([]byte(c.prefix), after, c.reverse, c.values, func(k, v []byte) (bool, error) {
			out = append(out, string(k)+"="+string(v))
			return true, nil
		})
		return out, err
	}
	key := func(r *rand.Rand) string {
		return fmt.Sprintf("%c/%02d", "abc"[r.IntN(3)], r.IntN(30))
	}
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 1))
		s := openTestStore(t)
		ctx := context.Background()
		if err := s.Write(ctx, func(tx *Tx) error {
			for range r.IntN(40) {
				tx.set([]byte(key(r)), fmt.Appendf(nil, "old%d", r.IntN(100)))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var cases []scanCase
		for range 12 {
			c := scanCase{prefix: []string{"a/", "b/", "c/", "b/1", ""}[r.IntN(5)], reverse: r.IntN(2) == 0, values: r.IntN(2) == 0}
			if k := key(r); r.IntN(2) == 0 && strings.HasPrefix(k, c.prefix) {
				c.after = k // callers resume within the prefix
			}
			cases = append(cases, c)
		}
		inside := map[int][]string{}
		if err := s.Write(ctx, func(tx *Tx) error {
			for range r.IntN(40) {
				k := []byte(key(r))
				if r.IntN(3) == 0 {
					tx.del(k)
				} else {
					tx.set(k, fmt.Appendf(nil, "new%d", r.IntN(100)))
				}
				if r.IntN(4) == 0 { // scans between the changes too
					if _, err := collect(tx, cases[0]); err != nil {
						return err
					}
				}
			}
			for i, c := range cases {
				got, err := collect(tx, c)
				if err != nil {
					return err
				}
				inside[i] = got
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.View(func(tx *Tx) error {
			for i, c := range cases {
				want, err := collect(tx, c)
				if err != nil {
					return err
				}
				if !slices.Equal(inside[i], want) {
					t.Errorf("seed %d, scan %+v: inside the write %q, after it %q", seed, c, inside[i], want)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScanIsASnapshot: what the scan's callback stages is not seen by that
// scan, whether the key it changes was stored before or staged earlier in
// the same write (badger's iterator is a snapshot; the staged side must be
// one too, or the answer would depend on the batching again).
func TestScanIsASnapshot(t *testing.T) {
	for _, staged := range []bool{false, true} {
		s := openTestStore(t)
		ctx := context.Background()
		if err := s.Write(ctx, func(tx *Tx) error {
			tx.set([]byte("p/a"), []byte("1"))
			if !staged {
				tx.set([]byte("p/b"), []byte("1"))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var got []string
		if err := s.Write(ctx, func(tx *Tx) error {
			if staged {
				tx.set([]byte("p/b"), []byte("1"))
			}
			return tx.scan([]byte("p/"), nil, false, true, func(k, v []byte) (bool, error) {
				got = append(got, string(k)+"="+string(v))
				if string(k) == "p/a" {
					tx.del([]byte("p/b"))
					tx.set([]byte("p/c"), []byte("new"))
				}
				return true, nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		if want := []string{"p/a=1", "p/b=1"}; !slices.Equal(got, want) {
			t.Errorf("p/b staged earlier in the write: %v: scan gave %q, want %q", staged, got, want)
		}
	}
}

// BenchmarkScanInLargeWrite: a write that stages a few keys and scans, many
// times over (as the FSM does for every op on a dossier that exists): each
// scan costs the keys it visits, not the size of the write.
func BenchmarkScanInLargeWrite(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), Create: true, MemTableSize: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const rounds = 8000
	for range b.N {
		if err := s.Write(context.Background(), func(tx *Tx) error {
			for i := range rounds {
				for j := range 5 {
					tx.set(fmt.Appendf(nil, "k/%06d/%d", i, j), []byte("v"))
				}
				n := 0
				if err := tx.scan(fmt.Appendf(nil, "k/%06d/", i), nil, false, false, func(_, _ []byte) (bool, error) { n++; return true, nil }); err != nil {
					return err
				}
				if n != 5 {
					return fmt.Errorf("scan saw %d keys, want 5", n)
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*rounds)/b.Elapsed().Seconds(), "scans/s")
}
