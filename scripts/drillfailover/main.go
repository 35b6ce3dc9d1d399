// Command drillfailover runs the failover drill (package ops/drill)
// against a built wardsync binary and exits 1 on any mismatch.
// scripts/drill-failover builds both and runs it:
//
//	drillfailover -bin PATH/wardsync [-dir DIR] [-dossiers 60] [-clerks 4]
//	              [-mid-work 30] [-backup-dossiers 30] [-ward HCM001] [-timeout 60s] [-v]
//
// It prints the drill's steps, the ops commands it ran with their output,
// and the verification table on stdout; diagnostics (-v) on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wardsync/wardsync/ops/drill"
)

func main() {
	var cfg drill.Config
	flag.StringVar(&cfg.Bin, "bin", "", "the wardsync binary (required)")
	flag.StringVar(&cfg.Dir, "dir", "", "work dir for certificates, data and logs (default: a new temp dir, removed after a passing drill)")
	flag.IntVar(&cfg.Dossiers, "dossiers", 60, "dossiers made at the office before it closes")
	flag.IntVar(&cfg.Clerks, "clerks", 4, "clerks working at once at each office")
	flag.IntVar(&cfg.MidWork, "mid-work", 0, "writes acknowledged while the office closes, before its node is killed (default dossiers/2)")
	flag.IntVar(&cfg.BackupDossiers, "backup-dossiers", 0, "dossiers made at the backup office (default dossiers/2)")
	flag.StringVar(&cfg.Ward, "ward", "HCM001", "the ward code")
	flag.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "bound on each wait (failover, handback, replicas converging)")
	keep := flag.Bool("keep", false, "keep the temp work dir even when the drill passes (a -dir is always kept)")
	verbose := flag.Bool("v", false, "log diagnostics on stderr")
	flag.Parse()
	if cfg.Bin == "" {
		fmt.Fprintln(os.Stderr, "drillfailover: -bin is required")
		flag.Usage()
		os.Exit(2)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Out = os.Stdout
	temp := cfg.Dir == ""
	if temp {
		dir, err := os.MkdirTemp("", "wardsync-drill-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "drillfailover:", err)
			os.Exit(1)
		}
		cfg.Dir = dir
	}
	if abs, err := filepath.Abs(cfg.Bin); err == nil {
		cfg.Bin = abs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err := drill.Run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "drillfailover: %v\n", err)
		if temp {
			fmt.Fprintf(os.Stderr, "work dir kept: %s\n", cfg.Dir)
		}
		os.Exit(1)
	}
	if temp && !*keep {
		os.RemoveAll(cfg.Dir)
	} else if temp {
		fmt.Printf("work dir: %s\n", cfg.Dir)
	}
}
