package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/blob"
	wsync "github.com/wardsync/wardsync/replication/sync"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// startSync links a ward node to the city: one QUIC endpoint with the
// ward's certificate, and the push/pull client. It returns a stop function.
func startSync(c *cli.Context, n *node.Node, log *slog.Logger, city string) (func(), error) {
	if c.String("tls") == "" {
		return nil, fmt.Errorf("--tls: the ward certificate directory is required with --city")
	}
	cert, pool, self, err := certs.LoadBundle(c.String("tls"), time.Now())
	if err != nil {
		return nil, fmt.Errorf("--tls: %w", err)
	}
	id := n.Identity()
	var wards []string // what to pull: the office's own ward, or every ward a backup may cover
	switch {
	case n.IsBackup():
		if self.Node != id.Node || self.Role != schema.PeerBackup {
			return nil, fmt.Errorf("--tls: certificate is for %s, but this node is backup office %s (issue one with `ops cert issue --role backup --node %s --ward CODE --ward CODE`)",
				self, id.Node, id.Node)
		}
		wards = self.Wards
	case self.Node != id.Node || self.Role != schema.PeerWard || !self.MayServe(id.Ward):
		return nil, fmt.Errorf("--tls: certificate is for %s, but this node is %s of ward %s (issue one with `ops cert issue --role ward --node %s --ward %s`)",
			self, id.Node, id.Ward, id.Node, id.Ward)
	default:
		wards = []string{id.Ward}
	}
	var addrs []string
	for _, a := range strings.Split(city, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	// A short idle timeout with frequent keep-alives: when the member this
	// ward talks to dies, the link is declared dead in seconds and the ward
	// moves to another member (QUIC's default would wait 30 s).
	idle, err := parseDuration(c, "link-timeout")
	if err != nil {
		return nil, err
	}
	if c.Int("blob-bandwidth") < 0 {
		return nil, fmt.Errorf("--blob-bandwidth %d: must be 0 (no cap) or a number of bytes per second", c.Int("blob-bandwidth"))
	}
	ep, err := transport.New(transport.Config{Addr: c.String("quic"), Cert: cert, CA: pool, Logger: log,
		IdleTimeout: idle, KeepAlivePeriod: max(idle/4, 100*time.Millisecond)})
	if err != nil {
		return nil, fmt.Errorf("--quic %s: %w", c.String("quic"), err)
	}
	cl, err := wsync.NewClient(wsync.ClientConfig{Node: n, Endpoint: ep, City: addrs, Wards: wards, Logger: log, Registry: n.Registry()})
	if err != nil {
		ep.Close()
		return nil, err
	}
	bw, err := blob.NewWard(blob.WardConfig{Node: n, Endpoint: ep, City: addrs, Ward: wards[0], Logger: log, Registry: n.Registry(),
		BytesPerSecond: int64(c.Int("blob-bandwidth")), MetadataPending: cl.Unacked, PushAcked: cl.PushAcked})
	if err != nil {
		ep.Close()
		return nil, err
	}
	n.SetLinkTest(bw.LinkTest)
	n.SetSyncStatus(func() any {
		return struct {
			wsync.Status
			Blobs blob.WardStatus `json:"blobs"`
		}{cl.Status(), bw.Status()}
	})
	ctx, cancel := context.WithCancel(c.Context)
	done := make(chan struct{}, 3)
	go func() { ep.Run(ctx); done <- struct{}{} }()
	go func() { cl.Run(ctx); done <- struct{}{} }()
	go func() { bw.Run(ctx); done <- struct{}{} }()
	log.Info("syncing with the city", "members", addrs)
	return func() {
		cancel()
		ep.Close()
		<-done
		<-done
		<-done
	}, nil
}
