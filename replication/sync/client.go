package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	gosync "sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// ClientConfig configures a ward's link to the city.
type ClientConfig struct {
	Node     *node.Node
	Endpoint *transport.Endpoint
	City     []string // QUIC addresses of city members; any one will do
	// Wards are the partitions to pull: a ward office's own ward (the
	// default), or every ward a backup office's certificate names (it
	// receives ops of a ward only while it holds the ward's lease).
	Wards    []string
	Logger   *slog.Logger
	Registry prometheus.Registerer

	MinBackoff time.Duration // first retry delay (default 200ms); doubles to MaxBackoff
	MaxBackoff time.Duration // default 15s
	BatchOps   int           // ops per pushed batch (default 2000)
	BatchBytes int           // bytes per pushed batch (default 1 MiB)
	Window     int           // batches in flight before waiting for acks (default 4)
}

// Client keeps a ward in sync with the city: it pushes the node's own ops
// and pulls its ward's partition, reconnecting on its own.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
	m   *clientMetrics
	id  store.Identity

	mu        gosync.Mutex
	connected bool
	member    string
	leader    string
	acked     uint64
	wards     map[string]*wardPull
	lastAck   time.Time
	lastPull  time.Time
	lastErr   string
}

// wardPull is the client's view of one pulled partition.
type wardPull struct {
	cursor    uint64
	lease     schema.Lease
	head      uint64          // the partition's head at the city, as last told
	releasing *transport.Conn // the session whose goroutine is releasing the ward, if any
	// Catching up after the lease came here: where the cursor started
	// and when, for the progress and ETA shown in status.
	catchFrom uint64
	catchAt   time.Time
}

// WardStatus is one pulled partition in GET /v1/sync/status.
type WardStatus struct {
	Ward       string       `json:"ward"`
	Mode       string       `json:"mode"` // serving, read_only, catching_up, handing_back, not_held
	ActiveNode string       `json:"active_node"`
	Lease      schema.Lease `json:"lease"`
	PullCursor uint64       `json:"pull_cursor"`
	ReadyIndex uint64       `json:"ready_index"`
	CityHead   uint64       `json:"city_head"`
	Percent    float64      `json:"catch_up_percent"`
	ETASeconds *float64     `json:"catch_up_eta_seconds,omitempty"`
}

// Status is a ward's sync state as GET /v1/sync/status shows it.
type Status struct {
	Enabled       bool       `json:"enabled"`
	Connected     bool       `json:"connected"`
	CityMember    string     `json:"city_member"`
	Leader        string     `json:"leader"`
	OutboxDepth   uint64     `json:"outbox_depth"`
	LastPushAckAt *time.Time `json:"last_push_ack_at"`
	LastPullAt    *time.Time `json:"last_pull_at"`
	LagSeconds    float64    `json:"lag_seconds"`
	PushAcked     uint64     `json:"push_acked"`
	LastSeq       uint64     `json:"last_seq"`
	PullCursor    uint64     `json:"pull_cursor"`
	LastError     string     `json:"last_error,omitempty"`
	// Wards says, per pulled ward, who serves it now and whether this
	// node serves it (or is catching up, with percent and ETA).
	Wards []WardStatus `json:"wards"`
}

// NewClient builds a client; Run starts it.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.City) == 0 {
		return nil, errors.New("sync: no city member addresses")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	if cfg.BatchOps <= 0 {
		cfg.BatchOps = 2000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 1 << 20
	}
	if cfg.Window <= 0 {
		cfg.Window = 4
	}
	c := &Client{cfg: cfg, log: cfg.Logger, m: newClientMetrics(cfg.Registry), id: cfg.Node.Identity(), wards: map[string]*wardPull{}}
	if len(c.cfg.Wards) == 0 && c.id.Ward != "" {
		c.cfg.Wards = []string{c.id.Ward}
	}
	if len(c.cfg.Wards) == 0 {
		return nil, errors.New("sync: no wards to pull (a backup office pulls the wards its certificate names)")
	}
	err := cfg.Node.Store().View(func(tx *store.Tx) error {
		var err error
		if c.acked, err = tx.PushAcked(); err != nil {
			return err
		}
		for _, w := range c.cfg.Wards {
			wp := &wardPull{}
			if wp.cursor, err = tx.PullCursor(w); err != nil {
				return err
			}
			if wp.lease, _, err = tx.KnownLease(w); err != nil {
				return err
			}
			c.wards[w] = wp
		}
		return nil
	})
	return c, err
}

// Run keeps the link up until ctx ends, trying the members in turn with
// jittered exponential backoff. The node works offline meanwhile.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.MinBackoff
	for i := 0; ctx.Err() == nil; i++ {
		addr := c.cfg.City[i%len(c.cfg.City)]
		start := time.Now()
		err := c.session(ctx, addr)
		c.setConnected(false, "", "")
		if ctx.Err() != nil {
			return nil
		}
		c.mu.Lock()
		c.lastErr = err.Error()
		c.mu.Unlock()
		c.m.reconnects.Inc()
		c.log.Warn("sync: link to the city lost; retrying", "member", addr, "err", err, "in", backoff)
		if time.Since(start) > 30*time.Second {
			backoff = c.cfg.MinBackoff // it had been up a while: start over
		}
		// Full jitter: many wards that lost the city together do not all
		// come back in the same instant.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
	return nil
}

func (c *Client) setConnected(up bool, member, leader string) {
	c.mu.Lock()
	c.connected, c.member = up, member
	if leader != "" || !up {
		c.leader = leader
	}
	c.mu.Unlock()
	if up {
		c.m.connected.Set(1)
	} else {
		c.m.connected.Set(0)
	}
}

// session runs push and pull on one connection until either fails.
func (c *Client) session(ctx context.Context, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := c.cfg.Endpoint.Dial(dctx, addr, transport.ALPNSync, schema.PeerCity)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.CloseWithError(0, "session over")
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1+len(c.cfg.Wards))
	go func() { errc <- c.push(sctx, conn) }()
	for _, w := range c.cfg.Wards {
		go func() { errc <- c.pull(sctx, conn, w) }()
	}
	err = <-errc
	stop()
	conn.CloseWithError(0, "session over")
	for range c.cfg.Wards {
		<-errc
	}
	return err
}

// open starts a stream with a Hello and reads the Welcome.
func (c *Client) open(ctx context.Context, conn *transport.Conn, h *wire.Hello, first wire.Msg) (net.Conn, *wire.Reader, *wire.Welcome, error) {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	sc := transport.StreamConn(conn, s)
	go func() { <-ctx.Done(); sc.Close() }()
	h.Node, h.Ward, h.Versions = c.id.Node, c.cfg.Wards[0], []uint8{wire.Version}
	if err := wire.WriteMsg(sc, h); err != nil {
		return nil, nil, nil, err
	}
	if first != nil {
		if err := wire.WriteMsg(sc, first); err != nil {
			return nil, nil, nil, err
		}
	}
	r := wire.NewReader(sc, maxFrame)
	msg, err := r.Read()
	if err != nil {
		return nil, nil, nil, err
	}
	switch m := msg.(type) {
	case *wire.Welcome:
		return sc, r, m, nil
	case *wire.Error:
		return nil, nil, nil, m
	}
	return nil, nil, nil, fmt.Errorf("expected Welcome, got %T", msg)
}

func (c *Client) push(ctx context.Context, conn *transport.Conn) error {
	sc, r, w, err := c.open(ctx, conn, &wire.Hello{Proto: wire.ProtoPush, Key: c.id.PublicKey}, nil)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	c.setConnected(true, w.Node, w.Leader)
	msg, err := r.Read()
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	ack, ok := msg.(*wire.Ack)
	if !ok {
		return fmt.Errorf("push: expected Ack, got %T", msg)
	}
	// Start from what the city holds, whatever this node believed. A city
	// that holds more of this node's ops than the node itself means the
	// node's log was rolled back (restored from an old backup): pushing on
	// would fork it. Stop and say so.
	var last uint64
	c.cfg.Node.Store().View(func(tx *store.Tx) error { last, _ = tx.LastSeq(); return nil })
	if ack.Seq > last {
		c.log.Error("sync: the city holds more of this node's ops than the node; its data dir was rolled back. Pushing is stopped: restore the latest backup, or re-create the node with a new ID",
			"city_high_water", ack.Seq, "local_last_seq", last)
		return fmt.Errorf("push: the city holds ops up to seq %d but this node only has %d (rolled-back data dir)", ack.Seq, last)
	}
	sent := ack.Seq
	if err := c.acknowledge(ctx, ack.Seq); err != nil {
		return err
	}
	window := make(chan struct{}, c.cfg.Window)
	acks := make(chan error, 1)
	go func() {
		for {
			msg, err := r.Read()
			if err != nil {
				acks <- fmt.Errorf("push: %w", err)
				return
			}
			switch m := msg.(type) {
			case *wire.Ack:
				if err := c.acknowledge(ctx, m.Seq); err != nil {
					acks <- err
					return
				}
				select {
				case <-window:
				default:
				}
			case *wire.Error:
				c.log.Error("sync: the city refused a push", "code", m.Code, "reason", m.Message)
				acks <- fmt.Errorf("push refused: %w", m)
				return
			default:
				acks <- fmt.Errorf("push: unexpected %T", msg)
				return
			}
		}
	}()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		wake := c.cfg.Node.LocalWrites()
		ops, err := c.outbox(sent)
		if err != nil {
			return err
		}
		if len(ops) == 0 {
			select {
			case <-wake:
			case <-tick.C:
			case err := <-acks:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case window <- struct{}{}:
		case err := <-acks:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := wire.WriteMsg(sc, &wire.OpBatch{Ops: ops}); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		sent = ops[len(ops)-1].ID.Seq
	}
}

// outbox reads the node's own ops after seq, bounded by count and bytes.
func (c *Client) outbox(after uint64) ([]schema.Op, error) {
	var ops []schema.Op
	err := c.cfg.Node.Store().View(func(tx *store.Tx) error {
		var err error
		ops, err = tx.OpsOf(c.id.Node, after, c.cfg.BatchOps)
		return err
	})
	size := 0
	for i := range ops {
		size += len(ops[i].Body) + 200
		if size > c.cfg.BatchBytes && i > 0 {
			return ops[:i], err
		}
	}
	return ops, err
}

// acknowledge records the city's high-water mark durably. On a disk below
// its reserve it is kept in memory only: the mark is a progress report
// (each push starts from the city's own answer), and stopping the push
// for it would keep a full office's ops off the city just when they
// should leave the machine.
func (c *Client) acknowledge(ctx context.Context, seq uint64) error {
	err := c.cfg.Node.Store().Write(ctx, func(tx *store.Tx) error { return tx.SetPushAcked(seq) })
	if err != nil && !errors.Is(err, diskspace.ErrLow) {
		return err
	}
	c.mu.Lock()
	if seq > c.acked {
		c.m.pushed.Add(float64(seq - c.acked))
	}
	c.acked, c.lastAck = max(c.acked, seq), time.Now().UTC()
	c.mu.Unlock()
	c.m.pushAcked.Set(float64(seq))
	return nil
}

// whileDiskLow runs apply, again every second while the node refuses it
// for want of disk space: the pull waits with what it received in hand
// (the city's stream waits too) rather than end the session, and the
// push with it, which must go on getting the node's ops off the machine.
func (c *Client) whileDiskLow(ctx context.Context, ward string, apply func() error) error {
	var waiting string
	for {
		err := apply()
		if !errors.Is(err, diskspace.ErrLow) {
			if waiting != "" {
				c.mu.Lock()
				if c.lastErr == waiting {
					c.lastErr = "" // it waited, and got through
				}
				c.mu.Unlock()
			}
			return err
		}
		waiting = fmt.Sprintf("pull %s waits for disk space: %v", ward, err)
		c.mu.Lock()
		c.lastErr = waiting
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (c *Client) pull(ctx context.Context, conn *transport.Conn, ward string) error {
	c.mu.Lock()
	wp := c.wards[ward]
	since := wp.cursor
	c.mu.Unlock()
	sc, r, _, err := c.open(ctx, conn, &wire.Hello{Proto: wire.ProtoPull}, &wire.Cursor{Ward: ward, Since: since})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ward, err)
	}
	for {
		msg, err := r.Read()
		if err != nil {
			return fmt.Errorf("pull %s: %w", ward, err)
		}
		switch m := msg.(type) {
		case *wire.ChangesPage:
			var n int
			err := c.whileDiskLow(ctx, ward, func() (err error) {
				n, err = c.applyPage(ctx, ward, m.Ops, since, m.Index)
				return err
			})
			if err != nil {
				return err
			}
			since = max(since, m.Index)
			// Tell the city how far this node has applied: what `ops
			// failover --wait` shows as the new holder's catch-up.
			if err := wire.WriteMsg(sc, &wire.Cursor{Ward: ward, Since: since}); err != nil {
				return fmt.Errorf("pull %s: %w", ward, err)
			}
			c.m.pulled.Add(float64(n))
			c.m.pullCursor.Set(float64(m.Index))
			c.mu.Lock()
			wp.cursor, c.lastPull = max(wp.cursor, m.Index), time.Now().UTC()
			c.mu.Unlock()
		case *wire.LeaseInfo:
			if err := c.whileDiskLow(ctx, ward, func() error { return c.takeLease(ctx, conn, ward, m) }); err != nil {
				return err
			}
		case *wire.Error:
			return fmt.Errorf("pull %s refused: %w", ward, m)
		default:
			return fmt.Errorf("pull %s: unexpected %T", ward, msg)
		}
	}
}

// takeLease records a lease the city sent and acts on it: a node that
// has just received a ward starts catching up (progress from here), and
// a holder asked to hand the ward back finishes pushing and releases it.
func (c *Client) takeLease(ctx context.Context, conn *transport.Conn, ward string, m *wire.LeaseInfo) error {
	changed, err := c.cfg.Node.SetLease(ctx, m.Lease)
	if err != nil {
		return err
	}
	l, _, err := c.cfg.Node.Lease(ward)
	if err != nil {
		return err
	}
	c.mu.Lock()
	wp := c.wards[ward]
	if changed && l.Active == c.id.Node && l.Epoch > 0 {
		wp.catchFrom, wp.catchAt = wp.cursor, time.Now()
	}
	wp.lease, wp.head = l, max(wp.head, m.Head)
	release := l.Epoch > 0 && l.Active == c.id.Node && l.HandbackTo != "" && wp.releasing != conn
	if release {
		wp.releasing = conn
	}
	c.mu.Unlock()
	if changed {
		c.log.Info("sync: ward lease", "ward", ward, "epoch", l.Epoch, "active", l.ActiveName(""), "handback_to", l.HandbackTo)
	}
	if release {
		go c.release(ctx, conn, ward)
	}
	return nil
}

// release finishes a handback. The node stored the pending handback
// before this runs, and from then on refuses writes for the ward, so
// every op of the ward it will ever have has a seq at most its last seq
// now. Once the city has acknowledged up to there, the node tells the
// city it is done, and tries again (the city may refuse while a scan of
// the ward is not uploaded yet, or be without a leader) for as long as the
// lease still asks it to.
func (c *Client) release(ctx context.Context, conn *transport.Conn, ward string) {
	defer func() {
		c.mu.Lock()
		if wp := c.wards[ward]; wp.releasing == conn {
			wp.releasing = nil
		}
		c.mu.Unlock()
	}()
	var last uint64
	c.cfg.Node.Store().View(func(tx *store.Tx) error { last, _ = tx.LastSeq(); return nil })
	backoff := c.cfg.MinBackoff
	for attempt := 0; ctx.Err() == nil; attempt++ {
		l, _, err := c.cfg.Node.Lease(ward)
		if err != nil || l.Epoch == 0 || l.Active != c.id.Node || l.HandbackTo == "" {
			return // released, or the handback was overtaken
		}
		c.mu.Lock()
		acked := c.acked
		c.mu.Unlock()
		if acked < last {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		err = c.sendRelease(ctx, conn, l, last)
		if err == nil {
			return
		}
		if attempt%10 == 0 {
			c.log.Warn("sync: the ward is not handed back yet; retrying", "ward", ward, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// sendRelease asks the city to complete the handback of l's ward.
func (c *Client) sendRelease(ctx context.Context, conn *transport.Conn, l schema.Lease, last uint64) error {
	sctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	sc, r, _, err := c.open(sctx, conn, &wire.Hello{Proto: wire.ProtoLease}, &wire.LeaseRelease{Ward: l.Ward, Epoch: l.Epoch, LastSeq: last})
	if err != nil {
		return err
	}
	defer sc.Close()
	msg, err := r.Read()
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *wire.LeaseInfo:
		if _, err := c.cfg.Node.SetLease(ctx, m.Lease); err != nil {
			return err
		}
		c.log.Info("sync: ward handed back", "ward", l.Ward, "epoch", m.Lease.Epoch, "active", m.Lease.Active)
		return nil
	case *wire.Error:
		return m
	}
	return fmt.Errorf("lease: unexpected %T", msg)
}

// applyPage stores a page with its cursor. A page too big for one store
// transaction is applied in halves; only the last half moves the cursor,
// so a crash in between re-pulls the page (ops are deduplicated by ID).
func (c *Client) applyPage(ctx context.Context, ward string, ops []schema.Op, cur, index uint64) (int, error) {
	n, err := c.cfg.Node.ApplyPulled(ctx, ward, ops, index)
	if errors.Is(err, schema.ErrTooLarge) && len(ops) > 1 {
		h := len(ops) / 2
		a, err := c.applyPage(ctx, ward, ops[:h], cur, cur)
		if err != nil {
			return a, err
		}
		b, err := c.applyPage(ctx, ward, ops[h:], cur, index)
		return a + b, err
	}
	return n, err
}

// PushAcked is the highest seq of this node's ops the city has
// acknowledged, as this client knows it: ahead of the stored mark while
// the disk is too low to store it.
func (c *Client) PushAcked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// Unacked reports whether the node has ops the city has not acknowledged:
// while it does, blob transfers yield to the push (metadata first).
func (c *Client) Unacked() bool {
	c.mu.Lock()
	acked := c.acked
	c.mu.Unlock()
	var last uint64
	c.cfg.Node.Store().View(func(tx *store.Tx) error { last, _ = tx.LastSeq(); return nil })
	return last > acked
}

// Status reports the link for GET /v1/sync/status.
func (c *Client) Status() Status {
	c.mu.Lock()
	st := Status{Enabled: true, Connected: c.connected, CityMember: c.member, Leader: c.leader,
		PushAcked: c.acked, LastError: c.lastErr}
	for _, w := range c.cfg.Wards {
		wp := c.wards[w]
		ws := WardStatus{Ward: w, Lease: wp.lease, ActiveNode: wp.lease.ActiveName(c.homeNode(w)),
			PullCursor: wp.cursor, ReadyIndex: wp.lease.Ready, CityHead: max(wp.head, wp.cursor)}
		ws.Percent, ws.ETASeconds = wp.progress()
		st.Wards = append(st.Wards, ws)
		if w == c.id.Ward || len(c.cfg.Wards) == 1 {
			st.PullCursor = wp.cursor
		}
	}
	if !c.lastAck.IsZero() {
		t := c.lastAck
		st.LastPushAckAt = &t
	}
	if !c.lastPull.IsZero() {
		t := c.lastPull
		st.LastPullAt = &t
	}
	c.mu.Unlock()
	c.cfg.Node.Store().View(func(tx *store.Tx) error {
		st.LastSeq, _ = tx.LastSeq()
		if st.LastSeq > st.PushAcked {
			st.OutboxDepth = st.LastSeq - st.PushAcked
			// Lag: how long the oldest op the city lacks has waited.
			if op, ok, _ := tx.Op(schema.OpID{Origin: c.id.Node, Seq: st.PushAcked + 1}); ok {
				st.LagSeconds = max(0, time.Since(op.HLC.Time()).Seconds())
			}
		}
		return nil
	})
	for i := range st.Wards {
		ws := &st.Wards[i]
		if mode, _, err := c.cfg.Node.Mode(ws.Ward); err == nil {
			ws.Mode = string(mode)
		}
	}
	c.m.outbox.Set(float64(st.OutboxDepth))
	c.m.lag.Set(st.LagSeconds)
	return st
}

// homeNode names this node for its own ward at epoch 0.
func (c *Client) homeNode(ward string) string {
	if ward == c.id.Ward {
		return c.id.Node
	}
	return ""
}

// progress is how far a node that received a ward has caught up on it:
// the share of commit indexes between where it started and the lease's
// ready index, and the time left at the rate so far.
func (wp *wardPull) progress() (float64, *float64) {
	ready := wp.lease.Ready
	if wp.cursor >= ready || ready <= wp.catchFrom {
		return 100, nil
	}
	done := float64(wp.cursor-wp.catchFrom) / float64(ready-wp.catchFrom)
	if done <= 0 || wp.catchAt.IsZero() {
		return 0, nil
	}
	eta := time.Since(wp.catchAt).Seconds() * (1 - done) / done
	return float64(int(done*1000)) / 10, &eta
}
