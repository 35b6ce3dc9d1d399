// Command chaosrun runs chaos schedules (package ops/chaos) against a
// built wardsync binary and prints a summary table; it exits 1 if any run
// found a violation or could not be carried out. scripts/chaos builds both
// and runs it:
//
//	chaosrun -bin PATH/wardsync [-runs 1] [-seed S] [-duration 30s] [-parallel 1] [-dir DIR] [-keep] [-v]
//
// Runs use seeds S, S+1, ... (S random when not given); -parallel N runs N
// of them at a time, each on loopback ports of its own. Each run's work
// dir (certificates, data, logs/, events.log) is removed when it passes
// and kept when it fails, unless -keep keeps them all.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/wardsync/wardsync/ops/chaos"
)

func main() {
	bin := flag.String("bin", "", "the wardsync binary (required)")
	runs := flag.Int("runs", 1, "schedules to run")
	seed := flag.Uint64("seed", 0, "seed of the first run (0: random); the runs use seed, seed+1, ...")
	duration := flag.Duration("duration", chaos.DefaultDuration, "fault phase of each run")
	timeout := flag.Duration("timeout", 90*time.Second, "bound on the waits after healing (a replica not converging by then is a violation)")
	dir := flag.String("dir", "", "parent of the runs' work dirs (default: a new temp dir)")
	keep := flag.Bool("keep", false, "keep every run's work dir, not only the failing ones'")
	noDisk := flag.Bool("no-disk-full", false, "leave out the small disks and the disk-full faults")
	verbose := flag.Bool("v", false, "log the driver's diagnostics on stderr")
	parallel := flag.Int("parallel", 1, "runs going on at the same time (each is ~0.8 of a core)")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "chaosrun: -bin is required")
		flag.Usage()
		os.Exit(2)
	}
	if abs, err := filepath.Abs(*bin); err == nil {
		*bin = abs
	}
	if *seed == 0 {
		*seed = rand.Uint64N(1 << 40)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "wardsync-chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaosrun:", err)
			os.Exit(1)
		}
		*dir = d
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *parallel < 1 || *parallel > 8 {
		fmt.Fprintln(os.Stderr, "chaosrun: -parallel must be 1 to 8")
		os.Exit(2)
	}
	fmt.Printf("chaos: %d run(s) from seed %d, %s of faults each, %d at a time; work dirs under %s\n", *runs, *seed, *duration, *parallel, *dir)
	var (
		mu   sync.Mutex // the campaign, and the seeds handed out
		c    chaos.Campaign
		next int
		wg   sync.WaitGroup
	)
	out := &lockedWriter{w: os.Stdout}
	start := time.Now()
	for slot := range *parallel {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= *runs || ctx.Err() != nil {
					return
				}
				s := *seed + uint64(i)
				runDir := filepath.Join(*dir, fmt.Sprintf("seed-%d", s))
				sum, _ := chaos.Run(ctx, chaos.Config{Bin: *bin, Dir: runDir, Seed: s, Duration: *duration, Timeout: *timeout,
					NoDiskFull: *noDisk, Slot: slot, Slots: *parallel, Out: out, Log: log})
				if ctx.Err() != nil {
					return // interrupted: this run says nothing
				}
				mu.Lock()
				c.Add(sum)
				mu.Unlock()
				if sum.Passed() && !*keep {
					os.RemoveAll(runDir)
				}
			}
		})
	}
	wg.Wait()
	c.Wall, c.Parallel = time.Since(start), *parallel
	if ctx.Err() != nil {
		fmt.Println("chaos: interrupted")
	}
	slices.Sort(c.FailingSeeds)
	fmt.Println()
	if err := c.WriteTable(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chaosrun:", err)
	}
	if len(c.FailingSeeds) > 0 {
		fmt.Println()
		for _, s := range c.FailingSeeds {
			fmt.Printf("replay: %s   (work dir %s)\n", chaos.ReplayCommand(s, *duration), filepath.Join(*dir, fmt.Sprintf("seed-%d", s)))
		}
		os.Exit(1)
	}
	if c.Runs == 0 {
		os.Exit(1)
	}
	if entries, _ := os.ReadDir(*dir); len(entries) == 0 {
		os.Remove(*dir)
	}
}

// lockedWriter keeps the lines of runs going on at the same time whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
