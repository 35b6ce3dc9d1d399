// Package diskspace keeps a node from writing its disk full.
//
// badger writes its memtable logs, value log and new tables through memory
// maps of files it sizes up front without allocating them (sparse files).
// When the disk fills, a store into such a page cannot be backed and the
// kernel kills the process with SIGBUS: the node does not get ENOSPC, it
// dies. (Nothing acknowledged is lost — the crash comes before the answer
// — but the office has no node until someone frees space.) A Guard
// refuses new writes while the file system holding the data has less
// free space than a reserve, so a node filling its disk slowly stops
// taking data, says so, and carries on once space is freed. It cannot
// make the crash impossible: a write already past the check, or a disk
// filled faster than one write, can still hit an unbacked page.
package diskspace

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrLow is wrapped by the error of a write refused for want of space.
var ErrLow = errors.New("disk nearly full")

// LowError says how much space there is and how much the node keeps free.
type LowError struct {
	Dir       string
	Free, Min uint64
}

func (e *LowError) Error() string {
	return fmt.Sprintf("disk nearly full: %s has %s free, less than the %s the node keeps free (--min-free-disk); nothing was saved",
		e.Dir, Bytes(e.Free), Bytes(e.Min))
}

func (e *LowError) Unwrap() error { return ErrLow }

// Guard checks the free space of the file system holding Dir. A nil
// *Guard, or one with Min 0, never refuses.
type Guard struct {
	dir  string
	min  uint64
	free func(dir string) (uint64, error)
}

// New guards dir, keeping min bytes free.
func New(dir string, min uint64) *Guard { return &Guard{dir: dir, min: min, free: Free} }

// WithFree returns a copy of g that asks free for the free space instead
// of the file system (tests).
func (g *Guard) WithFree(free func(dir string) (uint64, error)) *Guard {
	c := *g
	c.free = free
	return &c
}

// Min is the reserve in bytes (0 for a nil Guard).
func (g *Guard) Min() uint64 {
	if g == nil {
		return 0
	}
	return g.min
}

// Free is the free space the guard sees now.
func (g *Guard) Free() (uint64, error) {
	if g == nil {
		return 0, errors.New("diskspace: no guard")
	}
	return g.free(g.dir)
}

// Check returns a *LowError when the disk has less than the reserve free.
// It asks the file system every time (one statfs, a few microseconds), so
// a node takes writes again as soon as space is freed. If the file system
// cannot be asked, Check lets the write go on: the guard is a precaution,
// and a failing statfs is no reason to stop an office.
func (g *Guard) Check() error {
	if g == nil || g.min == 0 {
		return nil
	}
	free, err := g.free(g.dir)
	if err != nil || free >= g.min {
		return nil
	}
	return &LowError{Dir: g.dir, Free: free, Min: g.min}
}

// Free is the space an unprivileged process may use on the file system
// holding dir (statfs f_bavail: the blocks reserved for root are not
// counted, so a node running as root keeps that reserve too).
func Free(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	// f_bavail counts fragments (f_frsize); most file systems make them
	// the block size, but not all.
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	return st.Bavail * unit, nil
}

// Bytes formats n for people: "512 B", "64.0 MiB", "1.5 GiB".
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Collectors are the guard's gauges, read at scrape time: the free space
// (what an alert on "disk filling" watches) and the reserve below which
// the node refuses writes.
func (g *Guard) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wardsync_disk_free_bytes", Help: "Free space on the file system of the node's data directory.",
		}, func() float64 {
			free, err := g.Free()
			if err != nil {
				return -1
			}
			return float64(free)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wardsync_disk_reserve_bytes", Help: "Free space below which the node refuses writes (--min-free-disk; 0: never).",
		}, func() float64 { return float64(g.Min()) }),
	}
}
