package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

func wardCommand() *cli.Command {
	return &cli.Command{
		Name:  "ward",
		Usage: "run and manage a ward edge node",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name:  "init",
				Usage: "create a node's data dir, identity and first admin",
				Flags: []cli.Flag{dataFlag,
					reqStr("ward", "ward `CODE` this node serves", "WARDSYNC_WARD"),
					reqStr("node", "node `ID`, unique in the city (lower-case letters, digits, -)", "WARDSYNC_NODE_ID"),
					str("series", "receipt number `SERIES` (default: the node ID upper-cased)", "WARDSYNC_SERIES", ""),
					str("admin-name", "name of the first admin", "WARDSYNC_ADMIN_NAME", "Administrator"),
					wardsFlag, encKeyFlag, jsonFlag, logLevelFlag, logFormatFlag},
				Action: wardInit,
			}),
			withConfig(&cli.Command{
				Name:  "run",
				Usage: "run the node's API until SIGTERM or SIGINT",
				Flags: []cli.Flag{dataFlag,
					str("http", "API listen `ADDR`", "WARDSYNC_HTTP", "127.0.0.1:8080"),
					str("city", "city members' QUIC `ADDR,...` to sync with (none: offline only)", "WARDSYNC_CITY_QUIC", ""),
					str("tls", "`DIR` with the ward certificate (ca.crt, node.crt, node.key); needed with --city", "WARDSYNC_TLS", ""),
					str("quic", "local UDP `ADDR` to sync from", "WARDSYNC_QUIC", "0.0.0.0:0"),
					integer("max-attachment", "largest attachment upload, in `BYTES`", "WARDSYNC_MAX_ATTACHMENT", node.DefaultMaxAttachmentBytes),
					str("link-timeout", "how long a silent link to the city is given before the ward declares it dead and reconnects", "WARDSYNC_LINK_TIMEOUT", "8s"),
					integer("blob-bandwidth", "cap on this ward's attachment traffic to and from the city, in `BYTES` per second (0: none)", "WARDSYNC_BLOB_BANDWIDTH", 0),
					clockOffsetFlag(), minFreeDiskFlag,
					proceduresFlag, wardsFlag, holidaysFlag, encKeyFlag, logLevelFlag, logFormatFlag},
				Action: wardRun,
			}),
			withConfig(&cli.Command{
				Name:   "backup",
				Usage:  "download a full backup from a running node (admin token) and verify it",
				Flags:  clientFlags(reqStr("out", "backup `FILE` to write", "WARDSYNC_BACKUP_OUT")),
				Action: wardBackup,
			}),
			withConfig(&cli.Command{
				Name:  "restore",
				Usage: "restore a backup into a new, empty data dir (node stopped)",
				Flags: []cli.Flag{dataFlag, encKeyFlag, logLevelFlag, logFormatFlag,
					reqStr("from", "backup `FILE` made by `ward backup`", "WARDSYNC_RESTORE_FROM")},
				Action: wardRestore,
			}),
			withConfig(&cli.Command{
				Name:  "reset-token",
				Usage: "issue a new token for an official of a stopped node (e.g. a lost admin token)",
				Flags: []cli.Flag{dataFlag, encKeyFlag, logLevelFlag, logFormatFlag,
					str("official", "official `ID`", "WARDSYNC_RESET_OFFICIAL", "admin")},
				Action: func(c *cli.Context) error {
					cfg, err := nodeConfig(c)
					if err != nil {
						return err
					}
					token, err := node.ResetToken(c.Context, cfg, c.String("official"))
					if errors.Is(err, schema.ErrNotFound) {
						return fmt.Errorf("--official: %w", err)
					}
					if err != nil {
						return fmt.Errorf("--data %s: %w", cfg.Dir, err)
					}
					fmt.Fprintf(c.App.Writer, "New token for %s (the old one no longer works):\n%s\n", c.String("official"), token)
					return nil
				},
			}),
			withConfig(&cli.Command{
				Name:  "repair",
				Usage: "accept the loss after log damage: keep a copy of the damaged files, then open and truncate",
				Flags: []cli.Flag{dataFlag, encKeyFlag, logLevelFlag, logFormatFlag,
					boolean("yes", "confirm that entries after the damage will be dropped", "WARDSYNC_REPAIR_YES")},
				Action: wardRepair,
			}),
		},
	}
}

// defaultMinFreeDisk is the free space a node keeps by default. The guard
// asks before every commit, so it covers what badger may write between
// two asks (a group commit, a 16 or 64 MiB memtable flushed to a table, a
// compaction), with margin; not a whole value-log file, which badger maps
// at full size but fills as it goes.
const defaultMinFreeDisk = 256 << 20

var minFreeDiskFlag = integer("min-free-disk",
	"keep `BYTES` free on the data dir's disk: below that a ward refuses writes (HTTP 503 disk_full) and a city member refuses ward pushes and uploads (0: never refuse)",
	"WARDSYNC_MIN_FREE_DISK", defaultMinFreeDisk)

// clockOffsetFlag is --clock-offset, hidden from --help: it runs the node's
// wall clock (timestamps, receipt dates) off the machine's by a duration,
// so fault tests (ops/chaos) can give a ward a skewed clock and make it
// jump by restarting it with another offset. Never set it in production.
func clockOffsetFlag() cli.Flag {
	f := str("clock-offset", "for fault tests only: run the node's wall clock this `DURATION` ahead of the machine's (negative: behind)", "WARDSYNC_CLOCK_OFFSET", "").(*altsrc.StringFlag)
	f.Hidden = true
	return f
}

// hasFlag reports whether the running command defines flag name.
func hasFlag(c *cli.Context, name string) bool {
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// nodeConfig builds the node config from the flags shared by init and run.
func nodeConfig(c *cli.Context) (node.Config, error) {
	log, err := newLogger(c)
	if err != nil {
		return node.Config{}, err
	}
	cfg := node.Config{Dir: c.String("data"), Logger: log}
	if path := c.String("encryption-key-file"); path != "" {
		key, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("--encryption-key-file: %w", err)
		}
		if n := len(key); n != 16 && n != 24 && n != 32 {
			return cfg, fmt.Errorf("--encryption-key-file %s: key is %d bytes, must be 16, 24 or 32", path, n)
		}
		cfg.EncryptionKey = key
	}
	load := func(flag string, parse func([]byte) error) error {
		path := c.String(flag)
		if path == "" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--%s: %w", flag, err)
		}
		if err := parse(b); err != nil {
			return fmt.Errorf("--%s %s: %w", flag, path, err)
		}
		return nil
	}
	has := func(name string) bool { return hasFlag(c, name) }
	if has("procedures") {
		if err := load("procedures", func(b []byte) (err error) { cfg.Catalog, err = schema.ParseCatalog(b); return }); err != nil {
			return cfg, err
		}
	}
	if has("wards") {
		if err := load("wards", func(b []byte) (err error) { cfg.Wards, err = schema.ParseWards(b); return }); err != nil {
			return cfg, err
		}
	}
	if has("max-attachment") {
		v := c.Int("max-attachment")
		if v <= 0 || v > schema.MaxBlobSize {
			return cfg, fmt.Errorf("--max-attachment %d: must be from 1 to %d bytes", v, schema.MaxBlobSize)
		}
		cfg.MaxAttachmentBytes = int64(v)
	}
	if has("min-free-disk") {
		v := c.Int("min-free-disk")
		if v < 0 {
			return cfg, fmt.Errorf("--min-free-disk %d: must be 0 (never refuse) or a number of bytes", v)
		}
		cfg.MinFreeDisk = uint64(v)
	}
	if has("clock-offset") && c.String("clock-offset") != "" {
		off, err := time.ParseDuration(c.String("clock-offset"))
		if err != nil {
			return cfg, fmt.Errorf("--clock-offset %q: must be a duration such as 90s or -5m (fault tests only)", c.String("clock-offset"))
		}
		if off != 0 {
			cfg.Now = func() time.Time { return time.Now().Add(off) }
			log.Warn("the node's clock is offset from the machine's: for fault tests only", "clock_offset", off.String())
		}
	}
	if has("holidays") {
		if err := load("holidays", func(b []byte) (err error) { cfg.Calendar, err = schema.ParseCalendar(b); return }); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// backupOfficeCommand runs a backup office: a node with a backup
// certificate, serving the wards whose leases the city gives it.
func backupOfficeCommand() *cli.Command {
	w := wardCommand()
	var run *cli.Command
	for _, sc := range w.Subcommands {
		if sc.Name == "run" {
			run = sc
		}
	}
	run.Usage = "run the backup office's API; it takes over the wards city IT fails over to it (`ops failover`)"
	return &cli.Command{
		Name:  "backup-office",
		Usage: "run a backup office node that takes wards over when their offices close",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name:  "init",
				Usage: "create a backup office node's data dir, identity and first admin",
				Flags: []cli.Flag{dataFlag,
					reqStr("node", "node `ID`, unique in the city (as in its backup certificate)", "WARDSYNC_NODE_ID"),
					str("series", "receipt number `SERIES` (default: the node ID upper-cased); never one a ward office uses", "WARDSYNC_SERIES", ""),
					str("admin-name", "name of the first admin", "WARDSYNC_ADMIN_NAME", "Administrator"),
					encKeyFlag, jsonFlag, logLevelFlag, logFormatFlag},
				Action: wardInit,
			}),
			run,
		},
	}
}

func wardInit(c *cli.Context) error {
	cfg, err := nodeConfig(c)
	if err != nil {
		return err
	}
	announce := func(res node.InitResult) error {
		if c.Bool("json") {
			return json.NewEncoder(c.App.Writer).Encode(res)
		}
		w := c.App.Writer
		if res.Ward == "" {
			fmt.Fprintf(w, "Initialized backup office node %s in %s\n", res.Node, cfg.Dir)
		} else {
			fmt.Fprintf(w, "Initialized node %s for ward %s in %s\n", res.Node, res.Ward, cfg.Dir)
		}
		fmt.Fprintf(w, "Receipt series: %s\n", res.Series)
		_, err := fmt.Fprintf(w, "Admin %q token (shown once; keep it safe):\n%s\n", res.AdminID, res.AdminToken)
		return err
	}
	_, err = node.Init(c.Context, cfg, node.InitParams{
		Ward: c.String("ward"), Node: c.String("node"), Series: c.String("series"), AdminName: c.String("admin-name"),
		Backup: !hasFlag(c, "ward"), Announce: announce, // backup-office init has no --ward
	})
	if err != nil {
		var fe *schema.FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("--%s: %s", fe.Field, fe.Reason)
		}
		if errors.Is(err, schema.ErrConflict) {
			return fmt.Errorf("--data %s: %w", cfg.Dir, err)
		}
		return err
	}
	return nil
}

func wardRun(c *cli.Context) error {
	cfg, err := nodeConfig(c)
	if err != nil {
		return err
	}
	n, err := node.Open(cfg)
	if err != nil {
		if errors.Is(err, store.ErrNotInitialized) {
			return fmt.Errorf("--data %s: %w", cfg.Dir, err)
		}
		return err
	}
	defer n.Close()
	id := n.Identity()
	cfg.Logger.Info("ward node starting", "node", id.Node, "ward", id.Ward, "data", cfg.Dir)
	if city := c.String("city"); city != "" {
		stop, err := startSync(c, n, cfg.Logger, city)
		if err != nil {
			return err
		}
		defer stop()
	}
	err = n.Serve(c.Context, c.String("http"), func(a net.Addr) {
		// A line that scripts and tests wait for.
		fmt.Fprintf(c.App.Writer, "listening on http://%s\n", a)
	})
	if err != nil {
		return fmt.Errorf("--http %s: %w", c.String("http"), err)
	}
	cfg.Logger.Info("ward node stopped cleanly")
	return n.Close()
}

func wardRepair(c *cli.Context) error {
	cfg, err := nodeConfig(c)
	if err != nil {
		return err
	}
	if _, err := store.CheckLogs(cfg.Dir); err == nil {
		fmt.Fprintln(c.App.Writer, "No damage found; nothing to repair.")
		return nil
	} else if !errors.Is(err, store.ErrLogDamaged) {
		return err
	} else if !c.Bool("yes") {
		return fmt.Errorf("%v\n\nRe-run with --yes to keep a copy and drop the entries after the damage", err)
	}
	dir, err := store.Quarantine(cfg.Dir, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Copied the damaged files to %s\n", dir)
	cfg.SkipLogCheck = true
	n, err := node.Open(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, "Opened and truncated the damaged log. If this node syncs with the city, the city may hold ops the log lost, and the node will refuse to push on: set the office up again under a new node ID, which pulls the whole ward back from the city (docs/operations.md).")
	return n.Close()
}

func wardBackup(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	out := c.String("out")
	tmp := out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	defer os.Remove(tmp)
	n, err := cl.download("/v1/admin/backup", f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// A backup that cannot be restored is worse than none: prove it now.
	scratch, err := os.MkdirTemp("", "wardsync-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	id, err := restoreAndCheck(filepath.Join(scratch, "data"), tmp, nil)
	if err != nil {
		return fmt.Errorf("backup downloaded but does not restore: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "Backup of node %s (ward %s): %s, %d bytes, verified by a test restore\n", id.Node, id.Ward, out, n)
	return nil
}

func wardRestore(c *cli.Context) error {
	cfg, err := nodeConfig(c)
	if err != nil {
		return err
	}
	id, err := restoreAndCheck(cfg.Dir, c.String("from"), cfg.EncryptionKey)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Restored node %s (ward %s) into %s\n", id.Node, id.Ward, cfg.Dir)
	return nil
}

// restoreAndCheck loads a backup file into dir and reads the identity back.
func restoreAndCheck(dir, from string, key []byte) (store.Identity, error) {
	f, err := os.Open(from)
	if err != nil {
		return store.Identity{}, fmt.Errorf("--from: %w", err)
	}
	defer f.Close()
	if err := store.Restore(dir, f, key, nil); err != nil {
		return store.Identity{}, fmt.Errorf("--from %s: %w", from, err)
	}
	st, err := store.Open(store.Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		return store.Identity{}, err
	}
	defer st.Close()
	var id store.Identity
	err = st.View(func(tx *store.Tx) error {
		id, err = tx.Identity()
		return err
	})
	if err != nil {
		return id, fmt.Errorf("--from %s: restored data has no node identity: %w", from, err)
	}
	return id, st.Close()
}
