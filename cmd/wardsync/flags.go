package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// Every flag of every command is defined here, so names, environment
// variables and config-file keys stay consistent.

var configFlag = newConfigFlag()

func newConfigFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name: "config", Usage: "YAML `FILE` of flag values (keys are flag names)", EnvVars: []string{"WARDSYNC_CONFIG"},
	}
}

func str(name, usage, env, value string) cli.Flag {
	return altsrc.NewStringFlag(&cli.StringFlag{Name: name, Usage: usage, EnvVars: envFor(name, env), Value: value})
}

// reqStr is a string flag the command cannot run without. It is not marked
// Required for urfave/cli, which checks required flags before the command's
// Before hook loads the --config file, so a value from the file would never
// count; withConfig checks it after the file is loaded instead.
func reqStr(name, usage, env string) cli.Flag {
	f := altsrc.NewStringFlag(&cli.StringFlag{Name: name, Usage: usage + " (required)", EnvVars: envFor(name, env)})
	requiredFlags[f] = true
	return f
}

// requiredFlags holds the flags made by reqStr.
var requiredFlags = map[cli.Flag]bool{}

func boolean(name, usage, env string) cli.Flag {
	return altsrc.NewBoolFlag(&cli.BoolFlag{Name: name, Usage: usage, EnvVars: envFor(name, env)})
}

func integer(name, usage, env string, value int) cli.Flag {
	return altsrc.NewIntFlag(&cli.IntFlag{Name: name, Usage: usage, EnvVars: envFor(name, env), Value: value})
}

func strs(name, usage, env string) cli.Flag {
	return altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: envFor(name, env)})
}

// envFor is the flag's environment variable: the one given, or
// WARDSYNC_ and the flag's name upper-cased.
func envFor(name, env string) []string {
	if env == "" {
		env = "WARDSYNC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	}
	return []string{env}
}

// Shared flags.
var (
	dataFlag       = reqStr("data", "node data `DIR`", "WARDSYNC_DATA")
	jsonFlag       = boolean("json", "print JSON for scripts instead of a table", "WARDSYNC_JSON")
	nodeURLFlag    = str("node", "ward node API `URL`", "WARDSYNC_NODE", "http://127.0.0.1:8080")
	tokenFlag      = str("token", "official's bearer `TOKEN`", "WARDSYNC_TOKEN", "")
	proceduresFlag = str("procedures", "procedure catalog JSON `FILE` (default: built in)", "WARDSYNC_PROCEDURES", "")
	wardsFlag      = str("wards", "ward registry JSON `FILE` (default: built in)", "WARDSYNC_WARDS", "")
	holidaysFlag   = str("holidays", "public holiday calendar JSON `FILE` (default: built in)", "WARDSYNC_HOLIDAYS", "")
	encKeyFlag     = str("encryption-key-file", "`FILE` holding a 16, 24 or 32 byte key for encryption at rest", "WARDSYNC_ENCRYPTION_KEY_FILE", "")
	logLevelFlag   = str("log-level", "debug, info, warn or error", "WARDSYNC_LOG_LEVEL", "info")
	logFormatFlag  = str("log-format", "text or json", "WARDSYNC_LOG_FORMAT", "text")
)

// withConfig makes a command read its flags from the --config file too.
// Precedence: command line, then environment, then the file, then defaults.
// It then checks the command's required flags (see reqStr).
func withConfig(cmd *cli.Command) *cli.Command {
	// --config is accepted after the command too (wardsync ward run
	// --config FILE), not only before it (wardsync --config FILE ward run).
	cmd.Flags = append(cmd.Flags, newConfigFlag())
	cmd.Before = func(c *cli.Context) error {
		path := ""
		for _, cc := range c.Lineage() {
			if path = cc.String("config"); path != "" {
				break
			}
		}
		if path != "" {
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("--config: %w", err)
			}
			src, err := altsrc.NewYamlSourceFromFile(path)
			if err != nil {
				return fmt.Errorf("--config %s: %w", path, err)
			}
			if err := altsrc.ApplyInputSourceValues(c, src, cmd.Flags); err != nil {
				return fmt.Errorf("--config %s: %w", path, err)
			}
		}
		for _, f := range cmd.Flags {
			sf, ok := f.(*altsrc.StringFlag)
			if !ok || !requiredFlags[f] {
				continue
			}
			if c.String(sf.Name) == "" {
				return fmt.Errorf("--%s is required (or set %s, or %q in the --config file)",
					sf.Name, strings.Join(sf.EnvVars, ", "), sf.Name+":")
			}
		}
		return nil
	}
	return cmd
}

func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.String("log-format")) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be text or json", c.String("log-format"))
}
