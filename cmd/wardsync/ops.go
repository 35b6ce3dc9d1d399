package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/blob"
	"github.com/wardsync/wardsync/schema"
)

// opsCommand is city IT's tool box. Certificates live here; status,
// failover and backups join as further subcommands.
func opsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ops",
		Usage: "city IT operations: the city CA and node certificates, ward sync status, failover and handback",
		Subcommands: append([]*cli.Command{
			opsCACommand(),
			opsCertCommand(),
			opsStatusCommand(),
			opsScrubCommand(),
		}, opsLeaseCommands()...),
	}
}

func opsCACommand() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "the city certificate authority",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name: "init",
				Usage: "create the city CA: DIR/ca.crt (give to every node) and DIR/ca.key " +
					"(keep offline; never overwritten)",
				Flags: []cli.Flag{
					reqStr("out", "CA `DIR` to create (mode 0700)", "WARDSYNC_CA_OUT"),
					str("name", "the CA's common `NAME`", "WARDSYNC_CA_NAME", certs.DefaultCAName),
					str("validity", "how long the CA is valid: a `DURATION` such as 87600h or 3650d",
						"WARDSYNC_CA_VALIDITY", "87600h"),
				},
				Action: opsCAInit,
			}),
		},
	}
}

func opsCertCommand() *cli.Command {
	return &cli.Command{
		Name:  "cert",
		Usage: "issue and inspect node certificates",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name: "issue",
				Usage: "issue a certificate and key for a node: writes DIR/ca.crt, DIR/node.crt and " +
					"DIR/node.key (0600)",
				Flags: []cli.Flag{
					reqStr("ca", "CA `DIR` made by `ops ca init` (holds ca.crt and ca.key)", "WARDSYNC_CERT_CA"),
					reqStr("role", "the node's `ROLE`: city, ward, backup, admin or portal", "WARDSYNC_CERT_ROLE"),
					reqStr("node", "node `ID`, unique in the city (lower-case letters, digits, -)", "WARDSYNC_CERT_NODE"),
					strs("ward", "ward `CODE` the node serves: exactly one for ward, one or more for backup "+
						"(repeat the flag)", "WARDSYNC_CERT_WARD"),
					strs("dns", "DNS `NAME` other nodes dial this one at (repeat the flag; city members)", "WARDSYNC_CERT_DNS"),
					strs("ip", "IP `ADDR` other nodes dial this one at (repeat the flag; city members)", "WARDSYNC_CERT_IP"),
					str("validity", "how long the certificate is valid: a `DURATION` such as 8760h or 365d "+
						"(never past the CA's own expiry)", "WARDSYNC_CERT_VALIDITY", "8760h"),
					reqStr("out", "bundle `DIR` to write (mode 0700); copy it to the node", "WARDSYNC_CERT_OUT"),
					boolean("force", "replace an existing DIR/node.key (rotation)", "WARDSYNC_CERT_FORCE"),
					wardsFlag,
				},
				Action: opsCertIssue,
			}),
			withConfig(&cli.Command{
				Name:      "show",
				Usage:     "print a certificate's identity, issuer, serial and validity (or an EXPIRED warning)",
				ArgsUsage: "FILE",
				Flags:     []cli.Flag{jsonFlag},
				Action:    opsCertShow,
			}),
		},
	}
}

// parseValidity reads a duration flag: anything time.ParseDuration takes,
// or a whole number of days such as 365d.
func parseValidity(c *cli.Context, flag string) (time.Duration, error) {
	s := strings.TrimSpace(c.String(flag))
	bad := func(why string) error { return fmt.Errorf("--%s %q: %s", flag, s, why) }
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return 0, bad("not a duration (e.g. 8760h or 365d)")
		}
		if days > int64(time.Duration(1<<63-1)/(24*time.Hour)) {
			return 0, bad("too long")
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad("not a duration (e.g. 8760h or 365d)")
		}
	}
	if d <= 0 {
		return 0, bad("must be positive")
	}
	return d, nil
}

// flagErr turns a *schema.FieldError from the certs package into an error
// naming the flag to fix.
func flagErr(err error) error {
	var fe *schema.FieldError
	if errors.As(err, &fe) {
		return fmt.Errorf("--%s: %s", fe.Field, fe.Reason)
	}
	return err
}

func opsCAInit(c *cli.Context) error {
	validity, err := parseValidity(c, "validity")
	if err != nil {
		return err
	}
	dir := c.String("out")
	ca, err := certs.InitCA(dir, c.String("name"), validity, time.Now())
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	if err != nil {
		return flagErr(err)
	}
	info, err := certs.Inspect(ca.CertPEM())
	if err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Created CA %q, valid until %s\n", ca.Cert.Subject.CommonName, fmtTime(ca.Cert.NotAfter))
	fmt.Fprintf(w, "  %s  give to every node (SHA-256 %s)\n", filepath.Join(dir, certs.CACertFile), info.SHA256)
	_, err = fmt.Fprintf(w, "  %s  keep offline and backed up; whoever holds it can certify any node\n",
		filepath.Join(dir, certs.CAKeyFile))
	return err
}

func opsCertIssue(c *cli.Context) error {
	role := schema.PeerRole(c.String("role"))
	if !role.Valid() {
		return fmt.Errorf("--role %q: must be one of city, ward, backup, admin, portal", role)
	}
	id := schema.PeerIdentity{Role: role, Node: c.String("node"), Wards: c.StringSlice("ward")}
	var ips []net.IP
	for _, s := range c.StringSlice("ip") {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return fmt.Errorf("--ip %q: not an IP address", s)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		ips = append(ips, ip)
	}
	validity, err := parseValidity(c, "validity")
	if err != nil {
		return err
	}
	if err := id.Validate(); err != nil {
		return flagErr(err)
	}
	// A ward code that is well formed but not a ward of the city is a typo
	// that would only show at the first sync: catch it now.
	if len(id.Wards) > 0 {
		wards := schema.DefaultWards()
		if path := c.String("wards"); path != "" {
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("--wards: %w", err)
			}
			if wards, err = schema.ParseWards(b); err != nil {
				return fmt.Errorf("--wards %s: %w", path, err)
			}
		}
		for _, w := range id.Wards {
			if _, ok := wards.Lookup(w); !ok {
				return fmt.Errorf("--ward %q: not a ward of %s (see --wards)", w, wards.City())
			}
		}
	}
	caDir := c.String("ca")
	ca, err := certs.LoadCA(caDir)
	if err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.Issue(certs.IssueParams{
		Identity: id, DNSNames: c.StringSlice("dns"), IPs: ips, Validity: validity, Now: now,
	})
	if err != nil {
		return flagErr(err)
	}
	out := c.String("out")
	if err := certs.WriteBundle(out, ca.CertPEM(), certPEM, keyPEM, c.Bool("force")); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("--out: %s already exists; pass --force to replace it (rotation)",
				filepath.Join(out, certs.NodeKeyFile))
		}
		return fmt.Errorf("--out: %w", err)
	}
	info, err := certs.Inspect(certPEM)
	if err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Issued %s\n", id)
	fmt.Fprintf(w, "  valid until %s", fmtTime(info.NotAfter))
	if ca.Cert.NotAfter.Before(now.Add(validity)) {
		fmt.Fprintf(w, " (cut short by the CA's own expiry)")
	}
	fmt.Fprintf(w, "\n  wrote %s, %s and %s (mode 0600)\n", filepath.Join(out, certs.CACertFile),
		filepath.Join(out, certs.NodeCertFile), filepath.Join(out, certs.NodeKeyFile))
	_, err = fmt.Fprintln(w, "  copy the directory to the node over a trusted channel, then delete it here")
	return err
}

func opsCertShow(c *cli.Context) error {
	// `show FILE --json` is accepted as well as `show --json FILE`: the
	// flag parser stops at the first argument.
	asJSON := c.Bool("json")
	var files []string
	for _, a := range c.Args().Slice() {
		switch {
		case a == "--json" || a == "-json":
			asJSON = true
		case strings.HasPrefix(a, "-") && a != "-":
			return fmt.Errorf("%s: unknown flag after FILE (flags are --json)", a)
		default:
			files = append(files, a)
		}
	}
	if len(files) != 1 {
		return fmt.Errorf("expected one argument, the certificate FILE (got %d)", len(files))
	}
	file := files[0]
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(c.App.Reader)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	info, err := certs.Inspect(b)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	now := time.Now()
	status, left := "valid", info.NotAfter.Sub(now)
	switch {
	case now.After(info.NotAfter):
		status = "expired"
	case now.Before(info.NotBefore):
		status = "not_yet_valid"
	case left < 30*24*time.Hour:
		status = "expiring"
	}
	w := c.App.Writer
	if asJSON {
		type identity struct {
			URI   string   `json:"uri"`
			Role  string   `json:"role"`
			Node  string   `json:"node"`
			Wards []string `json:"wards"`
		}
		out := struct {
			File        string    `json:"file"`
			Identity    *identity `json:"identity"`
			IsCA        bool      `json:"is_ca"`
			Subject     string    `json:"subject"`
			Issuer      string    `json:"issuer"`
			Serial      string    `json:"serial"`
			SHA256      string    `json:"sha256"`
			NotBefore   time.Time `json:"not_before"`
			NotAfter    time.Time `json:"not_after"`
			Status      string    `json:"status"`
			SecondsLeft int64     `json:"seconds_left"`
			DNSNames    []string  `json:"dns_names"`
			IPs         []string  `json:"ips"`
		}{File: file, IsCA: info.IsCA, Subject: info.Subject, Issuer: info.Issuer, Serial: info.Serial,
			SHA256: info.SHA256, NotBefore: info.NotBefore.UTC(), NotAfter: info.NotAfter.UTC(), Status: status,
			SecondsLeft: int64(left / time.Second), DNSNames: nonNil(info.DNSNames), IPs: nonNil(info.IPs)}
		if info.Identity.Role != "" {
			out.Identity = &identity{URI: info.Identity.String(), Role: string(info.Identity.Role),
				Node: info.Identity.Node, Wards: nonNil(info.Identity.Wards)}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	row := func(k, v string) { fmt.Fprintf(w, "%-11s %s\n", k+":", v) }
	row("File", file)
	if id := info.Identity; id.Role != "" {
		row("Identity", id.String())
		row("Role", string(id.Role))
		row("Node", id.Node)
		if len(id.Wards) > 0 {
			row("Wards", strings.Join(id.Wards, ", "))
		}
	} else if info.IsCA {
		row("Identity", "none: this is a certificate authority")
	} else {
		row("Identity", "none: not a wardsync node certificate")
	}
	row("Subject", info.Subject)
	row("Issuer", info.Issuer)
	row("Serial", info.Serial)
	row("SHA-256", info.SHA256)
	if len(info.DNSNames) > 0 {
		row("DNS names", strings.Join(info.DNSNames, ", "))
	}
	if len(info.IPs) > 0 {
		row("IPs", strings.Join(info.IPs, ", "))
	}
	row("Valid", fmtTime(info.NotBefore)+" to "+fmtTime(info.NotAfter))
	var err2 error
	switch status {
	case "expired":
		_, err2 = fmt.Fprintf(w, "EXPIRED %s ago: issue a new certificate (docs/certificates.md)\n", fmtSpan(-left))
	case "not_yet_valid":
		_, err2 = fmt.Fprintf(w, "NOT YET VALID: starts in %s; check this machine's clock\n", fmtSpan(info.NotBefore.Sub(now)))
	case "expiring":
		_, err2 = fmt.Fprintf(w, "%-11s %s\nWARNING: expires soon; issue a new certificate and restart the node\n", "Time left:", fmtSpan(left))
	default:
		_, err2 = fmt.Fprintf(w, "%-11s %s\n", "Time left:", fmtSpan(left))
	}
	return err2
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") }

// fmtSpan prints a duration in days and hours, or hours and minutes when
// under a day.
func fmtSpan(d time.Duration) string {
	if d < 24*time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	days := int(d / (24 * time.Hour))
	hours := int(d%(24*time.Hour)) / int(time.Hour)
	return fmt.Sprintf("%d days %d hours", days, hours)
}

func opsScrubCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name:  "scrub",
		Usage: "re-verify every stored attachment chunk on every city member and repair damaged ones from peers (admin certificate)",
		Flags: cityClientFlags(),
		Action: func(c *cli.Context) error {
			raw, err := cityRequest(c, "POST", "/v1/blobs/scrub", nil)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, raw)
			}
			var out struct {
				Members []blob.ScrubResult `json:"members"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEMBER	CHUNKS	BYTES	BAD	UNREADABLE	DAMAGED BLOBS	MISSING AFTER REPAIR	TOOK	ERROR")
			bad := false
			for _, m := range out.Members {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", m.Member, m.Report.Chunks, m.Report.Bytes, m.Report.Bad,
					m.Report.Unreadable, len(m.Report.Damaged), m.Missing, m.Duration, m.Error)
				bad = bad || m.Error != "" || m.Missing > 0
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if bad {
				return cli.Exit("scrub: some member could not be checked or still lacks chunks (see above)", 1)
			}
			return nil
		},
	})
}
