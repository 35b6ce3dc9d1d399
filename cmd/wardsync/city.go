package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/blob"
	"github.com/wardsync/wardsync/replication/cluster"
	wsync "github.com/wardsync/wardsync/replication/sync"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

var tlsDirFlag = reqStr("tls", "`DIR` with ca.crt, node.crt and node.key (from `ops cert issue`)", "WARDSYNC_TLS")

func cityClientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		str("city", "city member API `URL`, e.g. https://127.0.0.1:8443", "WARDSYNC_CITY", "https://127.0.0.1:8443"),
		tlsDirFlag, jsonFlag}, extra...)
}

func cityCommand() *cli.Command {
	return &cli.Command{
		Name:  "city",
		Usage: "run and operate the city cluster",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name:  "run",
				Usage: "run a city member until SIGTERM or SIGINT",
				Flags: []cli.Flag{dataFlag,
					reqStr("node", "member `ID` (must match the city certificate)", "WARDSYNC_NODE_ID"),
					reqStr("quic", "QUIC (UDP) listen `ADDR` for raft and sync, e.g. 127.0.0.1:7001", "WARDSYNC_QUIC"),
					str("advertise", "QUIC `ADDR` other members reach this one at (default: --quic)", "WARDSYNC_ADVERTISE", ""),
					str("http", "HTTPS API listen `ADDR`", "WARDSYNC_HTTP", "127.0.0.1:8443"),
					tlsDirFlag,
					str("bootstrap", "initial members `ID=ADDR,...` (ignored once the data dir has state)", "WARDSYNC_BOOTSTRAP", ""),
					str("join", "API `URL` of an existing member to join through", "WARDSYNC_JOIN", ""),
					str("heartbeat-timeout", "Raft heartbeat timeout", "WARDSYNC_HEARTBEAT_TIMEOUT", "1s"),
					str("election-timeout", "Raft election timeout", "WARDSYNC_ELECTION_TIMEOUT", "1s"),
					integer("snapshot-threshold", "log entries between snapshots", "WARDSYNC_SNAPSHOT_THRESHOLD", 8192),
					integer("trailing-logs", "log entries kept after a snapshot", "WARDSYNC_TRAILING_LOGS", 10240),
					str("snapshot-interval", "how often to check whether to snapshot", "WARDSYNC_SNAPSHOT_INTERVAL", "2m"),
					str("blob-repair-interval", "how often a member looks for stored attachments it lacks and fetches them from peers", "WARDSYNC_BLOB_REPAIR_INTERVAL", "30s"),
					str("blob-gc-grace", "how long a blob no dossier refers to is kept before it is removed", "WARDSYNC_BLOB_GC_GRACE", "24h"),
					minFreeDiskFlag,
					proceduresFlag, wardsFlag, holidaysFlag, encKeyFlag, logLevelFlag, logFormatFlag},
				Action: cityRun,
			}),
			withConfig(&cli.Command{
				Name:  "recover",
				Usage: "disaster recovery: rewrite a STOPPED member's configuration when a majority is lost for good",
				Flags: []cli.Flag{dataFlag,
					reqStr("node", "this member's `ID`", "WARDSYNC_NODE_ID"),
					reqStr("members", "the new configuration `ID=ADDR,...` (this member included)", "WARDSYNC_RECOVER_MEMBERS"),
					encKeyFlag, logLevelFlag, logFormatFlag},
				Action: func(c *cli.Context) error {
					cfg, err := nodeConfig(c)
					if err != nil {
						return err
					}
					servers, err := cluster.ParseBootstrap(c.String("members"))
					if err != nil {
						return fmt.Errorf("--members: %w", err)
					}
					if err := cluster.Recover(c.String("data"), c.String("node"), servers, cfg.Logger, cfg.EncryptionKey); err != nil {
						return fmt.Errorf("--data %s: %w", c.String("data"), err)
					}
					fmt.Fprintf(c.App.Writer, "Recovered %s with %d member(s). Start it (and the others recovered with the same --members) with `city run`.\n", c.String("node"), len(servers))
					return nil
				},
			}),
			withConfig(&cli.Command{
				Name: "status", Usage: "show the members, the leader and applied indexes",
				Flags: cityClientFlags(), Action: cityStatus,
			}),
			withConfig(&cli.Command{
				Name: "join", Usage: "add a member (admin certificate)",
				Flags: cityClientFlags(
					reqStr("node", "new member's `ID`", "WARDSYNC_NODE_ID"),
					reqStr("quic", "new member's QUIC `ADDR`", "WARDSYNC_QUIC")),
				Action: func(c *cli.Context) error {
					return cityCall(c, "POST", "/v1/cluster/members", map[string]string{"id": c.String("node"), "address": c.String("quic")})
				},
			}),
			withConfig(&cli.Command{
				Name: "remove", Usage: "remove a member (admin certificate)",
				Flags: cityClientFlags(reqStr("node", "member `ID` to remove", "WARDSYNC_NODE_ID")),
				Action: func(c *cli.Context) error {
					return cityCall(c, "DELETE", "/v1/cluster/members/"+url.PathEscape(c.String("node")), nil)
				},
			}),
			withConfig(&cli.Command{
				Name: "transfer-leadership", Usage: "hand leadership to another member (admin certificate)",
				Flags: cityClientFlags(str("to", "member `ID` (default: any)", "WARDSYNC_TRANSFER_TO", "")),
				Action: func(c *cli.Context) error {
					return cityCall(c, "POST", "/v1/cluster/leadership", map[string]string{"to": c.String("to")})
				},
			}),
		},
	}
}

func parseDuration(c *cli.Context, flag string) (time.Duration, error) {
	d, err := time.ParseDuration(c.String(flag))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--%s %q: must be a positive duration such as 500ms or 2s", flag, c.String(flag))
	}
	return d, nil
}

func cityRun(c *cli.Context) error {
	ncfg, err := nodeConfig(c) // catalog, wards, holidays, key, logger
	if err != nil {
		return err
	}
	log := ncfg.Logger
	cert, pool, self, err := certs.LoadBundle(c.String("tls"), time.Now())
	if err != nil {
		return fmt.Errorf("--tls: %w", err)
	}
	if self.Role != schema.PeerCity || self.Node != c.String("node") {
		return fmt.Errorf("--tls: certificate is for %s; a city member %s needs `ops cert issue --role city --node %s`", self, c.String("node"), c.String("node"))
	}
	boot, err := cluster.ParseBootstrap(c.String("bootstrap"))
	if err != nil {
		return fmt.Errorf("--bootstrap: %w", err)
	}
	hb, err := parseDuration(c, "heartbeat-timeout")
	if err != nil {
		return err
	}
	el, err := parseDuration(c, "election-timeout")
	if err != nil {
		return err
	}
	si, err := parseDuration(c, "snapshot-interval")
	if err != nil {
		return err
	}
	if c.Int("snapshot-threshold") < 1 || c.Int("trailing-logs") < 1 {
		return errors.New("--snapshot-threshold and --trailing-logs must be at least 1")
	}
	advertise := c.String("advertise")
	if advertise == "" {
		advertise = c.String("quic")
	}
	ep, err := transport.New(transport.Config{Addr: c.String("quic"), Cert: cert, CA: pool, Logger: log})
	if err != nil {
		return fmt.Errorf("--quic %s: %w", c.String("quic"), err)
	}
	defer ep.Close()
	cl, err := cluster.Open(cluster.Config{
		Dir: c.String("data"), NodeID: self.Node, Advertise: advertise, Endpoint: ep, Logger: log,
		Bootstrap: boot, Catalog: ncfg.Catalog, Calendar: ncfg.Calendar, Wards: ncfg.Wards,
		HeartbeatTimeout: hb, ElectionTimeout: el, LeaderLeaseTimeout: hb / 2,
		SnapshotThreshold: uint64(c.Int("snapshot-threshold")), TrailingLogs: uint64(c.Int("trailing-logs")),
		SnapshotInterval: si, EncryptionKey: ncfg.EncryptionKey, MinFreeDisk: ncfg.MinFreeDisk,
	})
	if err != nil {
		return err
	}
	defer cl.Close()
	syncSrv := wsync.NewServer(cl, log, cl.Registry())
	cl.SetWards(syncSrv.WardsHandler())
	grace, err := parseDuration(c, "blob-gc-grace")
	if err != nil {
		return err
	}
	repairEvery, err := parseDuration(c, "blob-repair-interval")
	if err != nil {
		return err
	}
	bs, err := blobstore.Open(blobstore.Options{Dir: filepath.Join(c.String("data"), "blobs"), EncryptionKey: ncfg.EncryptionKey, Logger: log, RecoverDamage: true, Space: cl.DiskSpace()})
	if err != nil {
		return fmt.Errorf("--data %s: %w", c.String("data"), err)
	}
	defer bs.Close()
	blobs := blob.NewCity(blob.CityConfig{Cluster: cl, Blobs: bs, Endpoint: ep, Logger: log, GCGrace: grace, RepairInterval: repairEvery})
	defer blobs.Close()
	ctx := c.Context
	epDone := make(chan error, 1)
	go func() { epDone <- ep.Run(ctx) }()
	go blobs.Run(ctx)

	if join := c.String("join"); join != "" {
		go joinThrough(ctx, log, join, cert, pool, self.Node, advertise)
	}

	ln, err := net.Listen("tcp", c.String("http"))
	if err != nil {
		return fmt.Errorf("--http %s: %w", c.String("http"), err)
	}
	srv := &http.Server{
		Handler:           cl.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, ClientCAs: pool,
			// Optional so /healthz and /metrics answer without one; every
			// other route checks the verified chain and the role.
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13,
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.ServeTLS(ln, "", "") }()
	fmt.Fprintf(c.App.Writer, "city member %s: quic %s\nlistening on https://%s\n", self.Node, ep.Addr(), ln.Addr())
	log.Info("city member running", "quic", ep.Addr().String(), "api", ln.Addr().String())

	select {
	case <-ctx.Done():
	case err := <-httpDone:
		return fmt.Errorf("--http: %w", err)
	case err := <-epDone:
		if err != nil {
			return fmt.Errorf("--quic: %w", err)
		}
	}
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shut)
	blobs.Close()
	err = cl.Close()
	ep.Close()
	log.Info("city member stopped cleanly")
	return err
}

// joinThrough asks an existing member to add this one, retrying until it
// is in (the existing members may still be electing a leader).
func joinThrough(ctx context.Context, log *slog.Logger, base string, cert tls.Certificate, pool *x509.CertPool, id, addr string) {
	hc := cityHTTPClient(cert, pool)
	body, _ := json.Marshal(map[string]string{"id": id, "address": addr})
	for attempt := 0; ctx.Err() == nil; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(base, "/")+"/v1/cluster/members", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err == nil {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				log.Info("joined the cluster", "through", base)
				return
			}
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
		}
		log.Warn("join failed; retrying", "through", base, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
}

// cityHTTPClient presents our certificate and trusts only city members
// certified by the city CA.
func cityHTTPClient(cert tls.Certificate, pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{
		TLSClientConfig: transport.ClientTLS(cert, pool, schema.PeerCity)}}
}

func cityCall(c *cli.Context, method, path string, body any) error {
	out, err := cityRequest(c, method, path, body)
	if err != nil {
		return err
	}
	return printJSON(c.App.Writer, out)
}

func cityRequest(c *cli.Context, method, path string, body any) (json.RawMessage, error) {
	cert, pool, _, err := certs.LoadBundle(c.String("tls"), time.Now())
	if err != nil {
		return nil, fmt.Errorf("--tls: %w", err)
	}
	base, err := url.Parse(c.String("city"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("--city %q: must be an https:// URL of a city member", c.String("city"))
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.Context, method, strings.TrimSuffix(base.String(), "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cityHTTPClient(cert, pool).Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error apiErr `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
			return nil, fmt.Errorf("%s answered HTTP %d: %.200s", base, resp.StatusCode, data)
		}
		e.Error.Status = resp.StatusCode
		return nil, cli.Exit(&e.Error, 1)
	}
	return data, nil
}

func cityStatus(c *cli.Context) error {
	raw, err := cityRequest(c, "GET", "/v1/cluster", nil)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	var st struct {
		Leader  string `json:"leader"`
		Members []struct {
			ID, Address, Suffrage, State, Error string
			AppliedIndex                        *uint64 `json:"applied_index"`
		} `json:"members"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSUFFRAGE\tSTATE\tAPPLIED\tNOTE")
	for _, m := range st.Members {
		applied := "-"
		if m.AppliedIndex != nil {
			applied = fmt.Sprint(*m.AppliedIndex)
		}
		note := m.Error
		if m.ID == st.Leader {
			note = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Address, m.Suffrage, m.State, applied, note)
	}
	return tw.Flush()
}
