package blob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// WardConfig configures a ward's blob link to the city.
type WardConfig struct {
	Node     *node.Node
	Endpoint *transport.Endpoint
	City     []string // QUIC addresses of city members
	// Ward names the node's ward in stream hellos: its own, or for a
	// backup office the first its certificate names (each blob is still
	// authorized by the ward of the dossier it belongs to).
	Ward     string
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// BytesPerSecond caps this ward's blob traffic, both ways (0: no cap).
	BytesPerSecond int64
	// MetadataPending, if set, reports whether the node has ops the city
	// has not acknowledged yet; blob chunks wait while it does (for at
	// most MetadataWait per chunk), so scans never slow a status change.
	MetadataPending func() bool
	// PushAcked, if set, is the sync client's acknowledged mark, which runs
	// ahead of the stored one while the disk is below its reserve (the
	// push goes on, the mark is not stored): a scan whose attach op the
	// city holds goes up either way.
	PushAcked    func() uint64
	MetadataWait time.Duration // default 2s
	MinBackoff   time.Duration // default 200ms
	MaxBackoff   time.Duration // default 15s
}

// Ward uploads the blobs of the node's own attach ops, fetches the blobs
// of its ward's dossiers made elsewhere, and fetches any other blob on
// demand (node.SetBlobFetcher).
type Ward struct {
	cfg     WardConfig
	log     *slog.Logger
	m       *metrics
	id      string
	ward    string
	limiter *rate.Limiter

	moved atomic.Uint64 // chunks moved either way, to tell a cut from an outage

	mu       gosync.Mutex
	conn     *transport.Conn
	connUp   chan struct{} // closed when conn is set
	progress Progress
	lastErr  string
}

// Progress is the transfer under way, for /v1/sync/status.
type Progress struct {
	Direction string `json:"direction,omitempty"` // "up" or "down"
	Blob      string `json:"blob,omitempty"`
	Chunks    int    `json:"chunks"`
	Done      int    `json:"done"`
}

// WardStatus is the ward's blob link state.
type WardStatus struct {
	Connected       bool     `json:"connected"`
	PendingUploads  int      `json:"pending_uploads"`
	PendingFetches  int      `json:"pending_fetches"`
	Current         Progress `json:"current"`
	BandwidthCapBps int64    `json:"bandwidth_cap_bps"`
	LastError       string   `json:"last_error,omitempty"`
}

// NewWard builds the ward's blob client and installs its on-demand fetch
// on the node; Run starts it.
func NewWard(cfg WardConfig) (*Ward, error) {
	if len(cfg.City) == 0 {
		return nil, errors.New("blob: no city member addresses")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MetadataWait <= 0 {
		cfg.MetadataWait = 2 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	id := cfg.Node.Identity()
	if cfg.Ward == "" {
		cfg.Ward = id.Ward
	}
	w := &Ward{cfg: cfg, log: cfg.Logger.With("component", "blob"), id: id.Node, ward: cfg.Ward,
		limiter: NewLimiter(cfg.BytesPerSecond), connUp: make(chan struct{})}
	w.m = newMetrics(cfg.Registry, nil, w.missingNow)
	cfg.Node.SetBlobFetcher(w.Fetch)
	return w, nil
}

// Run keeps a blob connection to a city member and moves blobs over it,
// until ctx ends.
func (w *Ward) Run(ctx context.Context) error {
	if _, err := w.cfg.Node.MarkMissingBlobs(ctx); err != nil && ctx.Err() == nil {
		w.log.Error("blob: cannot look for missing blobs", "err", err)
	}
	backoff := w.cfg.MinBackoff
	for i := 0; ctx.Err() == nil; {
		addr := w.cfg.City[i%len(w.cfg.City)]
		before := w.moved.Load()
		connected, err := w.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		w.mu.Lock()
		w.lastErr = err.Error()
		w.mu.Unlock()
		if !connected {
			// Only a member that cannot be reached is left for the next:
			// one that was reached holds this ward's partial transfers, and
			// going back to it resumes them where they were cut.
			i++
		}
		if w.moved.Load() != before {
			backoff = w.cfg.MinBackoff // the link worked: a cut, not an outage
		}
		w.log.Warn("blob: link to the city lost; retrying", "member", addr, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(rand.Int64N(int64(backoff))) + backoff/2):
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
	return nil
}

// session moves blobs over one connection until it fails; connected says
// whether the member was reached at all.
func (w *Ward) session(ctx context.Context, addr string) (bool, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := w.cfg.Endpoint.Dial(dctx, addr, transport.ALPNBlob, schema.PeerCity)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	w.setConn(conn)
	defer w.setConn(nil)
	defer conn.CloseWithError(0, "session over")
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	context.AfterFunc(conn.Context(), stop)
	errc := make(chan error, 2)
	go func() { errc <- w.uploads(sctx, conn) }()
	go func() { errc <- w.fetches(sctx, conn) }()
	err = <-errc
	stop()
	<-errc
	if conn.Context().Err() != nil {
		return true, fmt.Errorf("connection to %s ended: %w", addr, context.Cause(conn.Context()))
	}
	return true, err
}

func (w *Ward) setConn(c *transport.Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn = c
	if c != nil {
		close(w.connUp)
	} else {
		w.connUp = make(chan struct{})
	}
}

// current waits (bounded by ctx) for the blob connection.
func (w *Ward) current(ctx context.Context) (*transport.Conn, error) {
	for {
		w.mu.Lock()
		c, up := w.conn, w.connUp
		w.mu.Unlock()
		if c != nil && c.Context().Err() == nil {
			return c, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no link to the city", schema.ErrUnavailable)
		}
	}
}

func (w *Ward) opts(direction string, m *schema.Manifest) Options {
	o := Options{
		Limiter:  w.limiter,
		Sent:     func(i, n int) { w.m.bytesOut.Add(float64(n)); w.moved.Add(1); w.step(direction, m) },
		Received: func(i, n int) { w.m.bytesIn.Add(float64(n)); w.m.chunksIn.Inc(); w.moved.Add(1); w.step(direction, m) },
		Bad:      func(int) { w.m.badChunks.Inc() },
	}
	if w.cfg.MetadataPending != nil {
		o.Yield = func(ctx context.Context) error {
			deadline := time.Now().Add(w.cfg.MetadataWait)
			for w.cfg.MetadataPending() && time.Now().Before(deadline) {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(25 * time.Millisecond):
				}
			}
			return nil
		}
	}
	return o
}

func (w *Ward) step(direction string, m *schema.Manifest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.progress.Blob != m.HashHex() || w.progress.Direction != direction {
		w.progress = Progress{Direction: direction, Blob: m.HashHex(), Chunks: len(m.Chunks)}
	}
	w.progress.Done++
}

func (w *Ward) begin(direction string, m *schema.Manifest, missing int) {
	w.mu.Lock()
	w.progress = Progress{Direction: direction, Blob: m.HashHex(), Chunks: len(m.Chunks), Done: len(m.Chunks) - missing}
	w.mu.Unlock()
}

// A refused blob (an upload refused, or a fetch of a blob the city does not
// hold yet) is tried again after blobRetryFirst, then after twice as
// long each time, up to blobRetryMax. Most refusals pass quickly: the
// member the ward uploads to may not have applied the attach op that the
// leader already acknowledged ("its ops must reach the city first").
const (
	blobRetryFirst = time.Second
	blobRetryMax   = 30 * time.Second
)

// retries holds when each refused blob may be tried again.
type retries map[[32]byte]retryWait

type retryWait struct {
	at   time.Time
	wait time.Duration
}

// refused records a refusal at now and returns how long the blob waits.
func (r retries) refused(h [32]byte, now time.Time) time.Duration {
	next := retryWait{wait: blobRetryFirst}
	if f, ok := r[h]; ok {
		next.wait = min(2*f.wait, blobRetryMax)
	}
	next.at = now.Add(next.wait)
	r[h] = next
	return next.wait
}

// due reports whether h may be tried at now.
func (r retries) due(h [32]byte, now time.Time) bool {
	f, ok := r[h]
	return !ok || !now.Before(f.at)
}

// uploadsWaiting bounds the uploads that have sent all their chunks and
// wait for the city's BlobStored (a majority copy and a Raft commit).
const uploadsWaiting = 4

// uploads puts every blob of the node's own attach ops the city does not
// yet hold on a majority, in hash order, and clears each once the city
// says BlobStored. One upload sends chunks at a time (so a cut costs at
// most one chunk); the next starts sending as soon as the previous one
// has all its chunks acknowledged and only waits for the city's copies.
func (w *Ward) uploads(ctx context.Context, conn *transport.Conn) error {
	n := w.cfg.Node
	// The push cursor moving (an attach op acknowledged) is not a local
	// write, so a short tick notices it.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	type upDone struct {
		h   [32]byte
		err error
	}
	done := make(chan upDone, uploadsWaiting)
	sending := make(chan struct{}, 1)
	inflight := map[[32]byte]bool{}
	failed := retries{} // refused blobs, retried after a while
	handle := func(d upDone) error {
		delete(inflight, d.h)
		if d.err == nil {
			delete(failed, d.h)
			return nil
		}
		if conn.Context().Err() != nil || ctx.Err() != nil {
			return d.err // the link is gone: the session ends
		}
		// This blob's problem only (refused, or unreadable here): the
		// others go on, and it is tried again later.
		wait := failed.refused(d.h, time.Now())
		w.mu.Lock()
		w.lastErr = d.err.Error()
		w.mu.Unlock()
		w.log.Warn("blob: upload refused; retrying it later", "blob", fmt.Sprintf("%x", d.h[:6]), "in", wait, "err", d.err)
		return nil
	}
	for {
		wake := n.LocalWrites()
		var pending [][32]byte
		var acked uint64
		ready := map[[32]byte]bool{}
		if err := n.Store().View(func(tx *store.Tx) error {
			var err error
			if pending, err = tx.PendingUploads(256); err != nil {
				return err
			}
			if acked, err = tx.PushAcked(); err != nil {
				return err
			}
			if w.cfg.PushAcked != nil {
				acked = max(acked, w.cfg.PushAcked())
			}
			for _, h := range pending {
				// Metadata first: a blob goes up once the city holds the
				// attach op that names it.
				seq, _, err := tx.UploadSeq(h)
				if err != nil {
					return err
				}
				ready[h] = seq <= acked
			}
			return nil
		}); err != nil {
			return err
		}
		started := false
		for _, h := range pending {
			if inflight[h] || len(inflight) >= uploadsWaiting || !ready[h] {
				continue
			}
			if !failed.due(h, time.Now()) {
				continue
			}
			m, ok, err := n.Blobs().Manifest(h)
			if err != nil {
				return err
			}
			if !ok {
				w.log.Error("blob: an attach op's blob is not in the blob store; it cannot be uploaded", "blob", fmt.Sprintf("%x", h[:6]))
				continue
			}
			for acquired := false; !acquired; {
				select {
				case sending <- struct{}{}:
					acquired = true
				case d := <-done:
					if err := handle(d); err != nil {
						return err
					}
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			inflight[h], started = true, true
			go func() {
				var once gosync.Once
				release := func() { once.Do(func() { <-sending }) }
				defer release()
				o := w.opts("up", &m)
				o.SentAll = release
				w.begin("up", &m, len(m.Chunks))
				start := time.Now()
				res, err := Put(ctx, conn, w.id, w.ward, n.Blobs(), &m, o)
				w.m.transfer("out", schema.PeerCity, err, time.Since(start))
				if err == nil {
					err = n.Store().Write(ctx, func(tx *store.Tx) error { tx.ClearUpload(h); return nil })
				}
				if err == nil {
					w.log.Info("blob stored at the city", "blob", m.HashHex()[:12], "bytes", m.Size, "holders", res.Holders, "took", time.Since(start).Round(time.Millisecond))
				}
				done <- upDone{h, err}
			}()
		}
		if started {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case d := <-done:
			if err := handle(d); err != nil {
				return err
			}
		case <-wake:
		case <-tick.C:
		}
	}
}

// fetches gets, in the background, the blobs of this ward's dossiers that
// came down with pulled ops.
func (w *Ward) fetches(ctx context.Context, conn *transport.Conn) error {
	n := w.cfg.Node
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	failed := retries{}
	for {
		var pending [][32]byte
		if err := n.Store().View(func(tx *store.Tx) error {
			var err error
			pending, err = tx.PendingFetches(256)
			return err
		}); err != nil {
			return err
		}
		progressed := false
		for _, h := range pending {
			if !failed.due(h, time.Now()) {
				continue // the city does not have it yet (its upload is under way)
			}
			if err := w.get(ctx, conn, h); err != nil {
				if conn.Context().Err() != nil || ctx.Err() != nil {
					return err
				}
				wait := failed.refused(h, time.Now())
				w.log.Debug("blob: background fetch failed; will retry", "blob", fmt.Sprintf("%x", h[:6]), "in", wait, "err", err)
				continue
			}
			delete(failed, h)
			progressed = true
			if err := n.Store().Write(ctx, func(tx *store.Tx) error { tx.ClearFetch(h); return nil }); err != nil {
				return err
			}
		}
		if progressed {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// get fetches blob h unless it is already held in full.
func (w *Ward) get(ctx context.Context, conn *transport.Conn, h [32]byte) error {
	bs := w.cfg.Node.Blobs()
	if ok, err := bs.Complete(h); err != nil || ok {
		return err
	}
	start := time.Now()
	m, err := Get(ctx, conn, w.id, w.ward, bs, h, w.opts("down", &schema.Manifest{Hash: h}))
	w.m.transfer("in", schema.PeerCity, err, time.Since(start))
	if err == nil {
		w.log.Info("blob fetched from the city", "blob", m.HashHex()[:12], "bytes", m.Size, "took", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// Fetch gets blob h from the city now (a clerk opened a scan this node
// does not hold yet).
func (w *Ward) Fetch(ctx context.Context, h [32]byte) error {
	conn, err := w.current(ctx)
	if err != nil {
		return err
	}
	return w.get(ctx, conn, h)
}

// missingNow counts chunks of blobs waiting to be fetched.
func (w *Ward) missingNow() float64 {
	n := 0
	w.cfg.Node.Store().View(func(tx *store.Tx) error {
		pending, err := tx.PendingFetches(1 << 20)
		for _, h := range pending {
			if m, ok, _ := w.cfg.Node.Blobs().Manifest(h); ok {
				missing, _ := w.cfg.Node.Blobs().Missing(&m)
				n += len(missing)
			}
		}
		return err
	})
	return float64(n)
}

// Status reports the blob link for /v1/sync/status.
func (w *Ward) Status() WardStatus {
	w.mu.Lock()
	st := WardStatus{Connected: w.conn != nil && w.conn.Context().Err() == nil, Current: w.progress,
		BandwidthCapBps: w.cfg.BytesPerSecond, LastError: w.lastErr}
	w.mu.Unlock()
	w.cfg.Node.Store().View(func(tx *store.Tx) error {
		up, _ := tx.PendingUploads(1 << 20)
		down, _ := tx.PendingFetches(1 << 20)
		st.PendingUploads, st.PendingFetches = len(up), len(down)
		return nil
	})
	return st
}
