// Command chaosrun runs chaos schedules (package ops/chaos) against a
// built wardsync binary and prints a summary table; it exits 1 if any run
// found a violation or could not be carried out. scripts/chaos builds both
// and runs it:
//
//	chaosrun -bin PATH/wardsync [-runs 1] [-seed S] [-duration 30s] [-dir DIR] [-keep] [-v]
//
// Runs use seeds S, S+1, ... (S random when not given). Each run's work
// dir (certificates, data, logs/, events.log) is removed when it passes
// and kept when it fails, unless -keep keeps them all.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
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

	fmt.Printf("chaos: %d run(s) from seed %d, %s of faults each; work dirs under %s\n", *runs, *seed, *duration, *dir)
	var c chaos.Campaign
	for i := range *runs {
		s := *seed + uint64(i)
		runDir := filepath.Join(*dir, fmt.Sprintf("seed-%d", s))
		sum, _ := chaos.Run(ctx, chaos.Config{Bin: *bin, Dir: runDir, Seed: s, Duration: *duration, Timeout: *timeout,
			NoDiskFull: *noDisk, Out: os.Stdout, Log: log})
		if ctx.Err() != nil {
			fmt.Println("chaos: interrupted")
			break
		}
		c.Add(sum)
		if sum.Passed() && !*keep {
			os.RemoveAll(runDir)
		}
	}
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
