// Command wardsync is the one binary of wardsync: the ward node, its
// client commands, and (later) the city cluster and operations tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	// SIGTERM and SIGINT cancel ctx; commands that run until stopped shut
	// down cleanly from it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		var exit cli.ExitCoder
		if errors.As(err, &exit) {
			fmt.Fprintln(os.Stderr, "wardsync:", err)
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "wardsync:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "wardsync",
		Usage: "ward office edge nodes that keep working offline and sync to the city",
		Description: "Every flag can also be set by its environment variable (shown in each command's help)\n" +
			"or by a YAML file given with --config, whose keys are the flag names.",
		Flags:                []cli.Flag{configFlag},
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			wardCommand(),
			backupOfficeCommand(),
			cityCommand(),
			dossierCommand(),
			officialsCommand(),
			proceduresCommand(),
			statsCommand(),
			opsCommand(),
			demoCommand(),
		},
	}
}
