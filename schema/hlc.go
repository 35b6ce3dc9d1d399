package schema

import (
	"fmt"
	"sync"
	"time"
)

// HLC is a hybrid logical clock timestamp: 48 bits of Unix milliseconds and
// a 16-bit logical counter. Ordered as a plain integer, it respects both
// causality (an op made after seeing another is later) and, within the
// drift limit, wall time.
type HLC uint64

const logicalBits = 16

// MaxWallMillis is the largest wall time an HLC can carry (year 10889).
const MaxWallMillis = 1<<48 - 1

// NewHLC builds a timestamp from wall milliseconds and a logical counter.
func NewHLC(wallMillis int64, logical uint16) HLC {
	return HLC(uint64(wallMillis)<<logicalBits | uint64(logical))
}

// Wall returns the wall-clock part in Unix milliseconds.
func (h HLC) Wall() int64 { return int64(h >> logicalBits) }

// Logical returns the logical counter.
func (h HLC) Logical() uint16 { return uint16(h) }

// Time returns the wall-clock part as a time.
func (h HLC) Time() time.Time { return time.UnixMilli(h.Wall()).UTC() }

func (h HLC) String() string { return fmt.Sprintf("%d.%d", h.Wall(), h.Logical()) }

// MergeHLC returns the later of two timestamps. It is commutative,
// associative and idempotent, which is what lets replicas merge clocks in any
// order.
func MergeHLC(a, b HLC) HLC {
	if a > b {
		return a
	}
	return b
}

// DefaultMaxDrift bounds how far ahead of local wall time a remote timestamp
// may be before it is refused: an office PC with a wrong clock must not drag
// every replica's clock into the future.
const DefaultMaxDrift = 5 * time.Minute

// Clock issues HLC timestamps. It is safe for concurrent use. The node
// persists Last() with each write and passes it back as floor at start, so
// timestamps never go backwards across restarts even if the wall clock does.
type Clock struct {
	mu       sync.Mutex
	now      func() time.Time
	last     HLC
	maxDrift time.Duration
}

// NewClock returns a clock that reads wall time from now (time.Now if nil)
// and never issues a timestamp at or below floor.
func NewClock(now func() time.Time, floor HLC, maxDrift time.Duration) *Clock {
	if now == nil {
		now = time.Now
	}
	if maxDrift <= 0 {
		maxDrift = DefaultMaxDrift
	}
	return &Clock{now: now, last: floor, maxDrift: maxDrift}
}

func (c *Clock) physical() int64 {
	ms := c.now().UnixMilli()
	if ms < 0 {
		ms = 0
	}
	if ms > MaxWallMillis {
		ms = MaxWallMillis
	}
	return ms
}

// tick advances last past floor and wall, the one rule both Now and Update
// follow: take the largest wall time seen, and bump the logical counter when
// the wall time did not move.
func (c *Clock) tick(floor HLC) HLC {
	pt := c.physical()
	base := MergeHLC(c.last, floor)
	var next HLC
	if pt > base.Wall() {
		next = NewHLC(pt, 0)
	} else if base.Logical() == 1<<logicalBits-1 {
		// The counter is exhausted: borrow the next millisecond. This only
		// happens at 65,536 events within one millisecond.
		next = NewHLC(base.Wall()+1, 0)
	} else {
		next = base + 1
	}
	c.last = next
	return next
}

// Now returns a timestamp later than every one this clock issued or saw.
func (c *Clock) Now() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tick(0)
}

// Update merges a timestamp received from another node and returns a local
// timestamp later than both. A remote timestamp more than maxDrift ahead of
// local wall time is refused with ErrClockDrift and leaves the clock as it was.
func (c *Clock) Update(remote HLC) (HLC, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if limit := c.physical() + c.maxDrift.Milliseconds(); remote.Wall() > limit {
		return c.last, fmt.Errorf("%w: remote %s is %s ahead of local wall time",
			ErrClockDrift, remote.Time().Format(time.RFC3339), time.Duration(remote.Wall()-limit+c.maxDrift.Milliseconds())*time.Millisecond)
	}
	return c.tick(remote), nil
}

// Observe raises the clock to at least h without the drift check; used at
// start with the persisted high-water mark and for ops already accepted.
func (c *Clock) Observe(h HLC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = MergeHLC(c.last, h)
}

// Last returns the latest timestamp issued or seen.
func (c *Clock) Last() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}
