package schema

import (
	"errors"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestHLCParts(t *testing.T) {
	h := NewHLC(1_700_000_000_123, 42)
	if h.Wall() != 1_700_000_000_123 || h.Logical() != 42 {
		t.Fatalf("got %d.%d", h.Wall(), h.Logical())
	}
	if NewHLC(5, 65535) >= NewHLC(6, 0) {
		t.Fatal("wall time must dominate the counter")
	}
}

func TestMergeHLCIsASemilattice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.Custom(func(t *rapid.T) HLC {
			return NewHLC(rapid.Int64Range(0, MaxWallMillis).Draw(t, "wall"), rapid.Uint16().Draw(t, "logical"))
		})
		a, b, c := gen.Draw(t, "a"), gen.Draw(t, "b"), gen.Draw(t, "c")
		if MergeHLC(a, b) != MergeHLC(b, a) {
			t.Fatal("not commutative")
		}
		if MergeHLC(MergeHLC(a, b), c) != MergeHLC(a, MergeHLC(b, c)) {
			t.Fatal("not associative")
		}
		if MergeHLC(a, a) != a {
			t.Fatal("not idempotent")
		}
	})
}

// fakeWall is a wall clock that a test moves, including backwards.
type fakeWall struct {
	mu sync.Mutex
	ms int64
}

func (f *fakeWall) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.UnixMilli(f.ms)
}

func (f *fakeWall) set(ms int64) {
	f.mu.Lock()
	f.ms = ms
	f.mu.Unlock()
}

// TestClockMonotonicAndBounded drives a clock with a wall time that jumps
// both ways and with remote timestamps, and checks that every issued
// timestamp is later than everything before it and never further ahead of
// wall time than the drift limit allows.
func TestClockMonotonicAndBounded(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const drift = 60_000
		wall := &fakeWall{ms: 1_000_000}
		c := NewClock(wall.now, 0, drift*time.Millisecond)
		var last HLC
		var maxWall int64 = wall.ms
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			switch rapid.IntRange(0, 2).Draw(t, "action") {
			case 0:
				wall.set(rapid.Int64Range(900_000, 1_200_000).Draw(t, "wall"))
				maxWall = max(maxWall, wall.ms)
			case 1:
				h := c.Now()
				if h <= last {
					t.Fatalf("Now went backwards: %s after %s", h, last)
				}
				last = h
			case 2:
				remote := NewHLC(rapid.Int64Range(900_000, 1_400_000).Draw(t, "remote"), rapid.Uint16().Draw(t, "rl"))
				h, err := c.Update(remote)
				if remote.Wall() > wall.ms+drift {
					if !errors.Is(err, ErrClockDrift) || c.Last() != last {
						t.Fatalf("remote %s beyond drift accepted (err %v)", remote, err)
					}
					continue
				}
				if err != nil || h <= last || h <= remote {
					t.Fatalf("Update(%s) = %s, %v after %s", remote, h, err, last)
				}
				last = h
				maxWall = max(maxWall, remote.Wall())
			}
			// Skew is bounded: the clock is never ahead of the largest wall
			// time it has seen (local or accepted remote) by more than the
			// milliseconds borrowed for counter overflow.
			if c.Last().Wall() > maxWall+1 {
				t.Fatalf("clock %s ahead of max wall %d", c.Last(), maxWall)
			}
		}
	})
}

func TestClockFloorSurvivesRestart(t *testing.T) {
	wall := &fakeWall{ms: 5_000}
	floor := NewHLC(9_000, 7) // persisted before a restart with a wall clock set back
	c := NewClock(wall.now, floor, 0)
	if h := c.Now(); h <= floor {
		t.Fatalf("Now() = %s, must be after persisted floor %s", h, floor)
	}
}

func TestClockCounterOverflowBorrowsMillisecond(t *testing.T) {
	wall := &fakeWall{ms: 10}
	c := NewClock(wall.now, NewHLC(10, 65534), 0)
	a, b := c.Now(), c.Now()
	if a != NewHLC(10, 65535) || b != NewHLC(11, 0) {
		t.Fatalf("got %s then %s", a, b)
	}
}

func TestClockConcurrentUnique(t *testing.T) {
	c := NewClock(nil, 0, 0)
	var mu sync.Mutex
	seen := map[HLC]bool{}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				h := c.Now()
				mu.Lock()
				if seen[h] {
					t.Errorf("duplicate timestamp %s", h)
				}
				seen[h] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
