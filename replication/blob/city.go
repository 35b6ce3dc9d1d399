package blob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	gosync "sync"
	"time"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/cluster"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// CityConfig configures the blob service of one city member.
type CityConfig struct {
	Cluster  *cluster.Cluster
	Blobs    *blobstore.Store
	Endpoint *transport.Endpoint
	Logger   *slog.Logger
	// RepairInterval is how often the member looks for stored blobs it
	// lacks (default 30s).
	RepairInterval time.Duration
	// GCInterval (default 1h) and GCGrace (default 24h): blobs no op
	// refers to are removed once older than the grace.
	GCInterval time.Duration
	GCGrace    time.Duration
	// CopyTimeout bounds the wait for a majority of copies (default 2m).
	CopyTimeout time.Duration
}

// City serves blobs on a member: puts from wards (stored on a majority,
// then committed), puts and gets between members, gets by wards, repair,
// scrub and GC.
type City struct {
	cfg   CityConfig
	c     *cluster.Cluster
	bs    *blobstore.Store
	log   *slog.Logger
	m     *metrics
	peers *peerConns
	// copying dedupes concurrent majority copies of one blob.
	mu      gosync.Mutex
	copying map[[32]byte]*copyJob
	closed  bool
	repairs chan struct{}
	bg      gosync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

type copyJob struct {
	done    chan struct{}
	holders uint32
	err     error
}

const infoScrub = "blob_scrub"

// NewCity registers the blob ALPN handler on the endpoint, the blob routes
// on the city API and the scrub request between members. Call before the
// endpoint runs; Run starts repair and GC.
func NewCity(cfg CityConfig) *City {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RepairInterval <= 0 {
		cfg.RepairInterval = 30 * time.Second
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = time.Hour
	}
	if cfg.GCGrace <= 0 {
		cfg.GCGrace = 24 * time.Hour
	}
	if cfg.CopyTimeout <= 0 {
		cfg.CopyTimeout = 2 * time.Minute
	}
	c := &City{cfg: cfg, c: cfg.Cluster, bs: cfg.Blobs, log: cfg.Logger.With("component", "blob"),
		peers: &peerConns{ep: cfg.Endpoint, m: map[string]*transport.Conn{}}, copying: map[[32]byte]*copyJob{},
		repairs: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.m = newMetrics(cfg.Cluster.Registry(), cfg.Blobs, c.missingNow)
	cfg.Endpoint.Handle(transport.ALPNBlob, c.handle)
	cfg.Cluster.RegisterInfo(infoScrub, c.scrubLocal)
	cfg.Cluster.Route("GET /v1/blobs/{hash}", c.handleGet, schema.PeerAdmin, schema.PeerPortal)
	cfg.Cluster.Route("POST /v1/blobs/scrub", c.handleScrub, schema.PeerAdmin)
	return c
}

// Run repairs and collects garbage until ctx ends.
func (c *City) Run(ctx context.Context) error {
	defer c.cancel()
	repair := time.NewTicker(c.cfg.RepairInterval)
	defer repair.Stop()
	gc := time.NewTicker(c.cfg.GCInterval)
	defer gc.Stop()
	c.repairPass(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-repair.C:
		case <-c.repairs:
		case <-gc.C:
			if _, err := c.gc(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("blob gc failed", "err", err)
			}
			continue
		}
		c.repairPass(ctx)
	}
}

// Close stops background copies and closes member connections.
func (c *City) Close() {
	c.mu.Lock()
	c.closed = true
	c.cancel()
	c.mu.Unlock()
	c.bg.Wait()
	c.peers.close()
}

// spawn runs f in the background unless the service is closing (then f
// runs at once, and fails on the canceled context).
func (c *City) spawn(f func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f()
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		f()
	}()
}

// handle serves one blob connection: one transfer per stream.
func (c *City) handle(ctx context.Context, conn *transport.Conn) {
	var wg gosync.WaitGroup
	defer wg.Wait()
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() {
			st := newStream(s)
			defer st.close()
			stop := context.AfterFunc(ctx, func() { s.CancelRead(1); s.CancelWrite(1) })
			defer stop()
			c.serve(ctx, conn, st)
		})
	}
}

func (c *City) refuse(w io.Writer, peer schema.PeerIdentity, code, msg string) {
	c.log.Warn("blob: refused", "peer", peer.Node, "code", code, "reason", msg)
	c.m.refused.WithLabelValues(code).Inc()
	wire.SendError(w, code, msg)
}

func (c *City) serve(ctx context.Context, conn *transport.Conn, st *stream) {
	peer := conn.Peer
	msg, err := st.r.Read()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			c.refuse(st.s, peer, wire.CodeFor(err), err.Error())
		}
		return
	}
	h, ok := msg.(*wire.Hello)
	if !ok || (h.Proto != wire.ProtoBlob && h.Proto != wire.ProtoLinkTest) {
		c.refuse(st.s, peer, wire.CodeBadFrame, "a blob stream starts with Hello{proto: blob}")
		return
	}
	if h.Node != peer.Node {
		c.refuse(st.s, peer, wire.CodeForbidden, fmt.Sprintf("hello names node %q but the certificate is %q's", h.Node, peer.Node))
		return
	}
	v, err := wire.Negotiate(h.Versions, wire.Version)
	if err != nil {
		c.refuse(st.s, peer, wire.CodeUnknownVersion, err.Error())
		return
	}
	if peer.Role != schema.PeerCity && !peer.MayServe(h.Ward) {
		c.refuse(st.s, peer, wire.CodeForbidden, fmt.Sprintf("the certificate of %s does not name ward %s", peer.Node, h.Ward))
		return
	}
	if h.Proto == wire.ProtoLinkTest {
		if wire.WriteMsg(st.s, &wire.Welcome{Version: v, Node: c.c.NodeID()}) == nil {
			linkTestSink(st)
		}
		return
	}
	msg, err = st.r.Read()
	if err != nil {
		c.refuse(st.s, peer, wire.CodeFor(err), err.Error())
		return
	}
	switch x := msg.(type) {
	case *wire.BlobOffer:
		m := x.Manifest
		if err := m.Validate(); err != nil {
			c.refuse(st.s, peer, wire.CodeFor(err), err.Error())
			return
		}
		o := c.opts()
		var done func(context.Context) (uint32, error)
		if peer.Role != schema.PeerCity {
			verified, already, err := c.mayPut(peer, &m)
			if err != nil {
				c.refuse(st.s, peer, wire.CodeFor(err), err.Error())
				return
			}
			if already {
				// Done before (the ward missed the answer): say so again.
				// Nothing is released by it; a held op needs an upload.
				if wire.WriteMsg(st.s, &wire.Welcome{Version: v, Node: c.c.NodeID()}) == nil &&
					wire.WriteMsg(st.s, &wire.BlobWant{Hash: m.Hash, Indexes: []uint32{}}) == nil {
					voters, _ := c.c.Voters()
					wire.WriteMsg(st.s, &wire.BlobStored{Hash: m.Hash, Holders: uint32(voters/2 + 1)})
				}
				return
			}
			// From a ward: its content is checked whole (unless it is a
			// blob already verified), it must show it has the content
			// even if the city holds it, and it is acknowledged only once
			// a majority holds it and that is committed.
			o.VerifyWhole, o.Prove = !verified, true
			done = func(ctx context.Context) (uint32, error) { return c.commit(ctx, &m, peer.Node) }
		}
		if wire.WriteMsg(st.s, &wire.Welcome{Version: v, Node: c.c.NodeID()}) != nil {
			return
		}
		start := time.Now()
		err := receive(ctx, st.s, st.r, c.bs, &m, o, done)
		c.m.transfer("in", peer.Role, err, time.Since(start))
		if err != nil && ctx.Err() == nil {
			c.log.Debug("blob: put ended", "peer", peer.Node, "blob", m.HashHex()[:12], "err", err)
		}
	case *wire.BlobGet:
		if err := c.mayRead(peer, x.Hash); err != nil {
			c.refuse(st.s, peer, wire.CodeFor(err), err.Error())
			return
		}
		m, err := c.local(ctx, x.Hash, peer.Role != schema.PeerCity)
		if err != nil {
			c.refuse(st.s, peer, wire.CodeFor(err), err.Error())
			return
		}
		if wire.WriteMsg(st.s, &wire.Welcome{Version: v, Node: c.c.NodeID()}) != nil ||
			wire.WriteMsg(st.s, &wire.BlobOffer{Manifest: m}) != nil {
			return
		}
		start := time.Now()
		_, err = send(ctx, st.s, st.r, c.bs, &m, c.opts())
		c.m.transfer("out", peer.Role, err, time.Since(start))
	default:
		c.refuse(st.s, peer, wire.CodeBadFrame, fmt.Sprintf("expected BlobOffer or BlobGet, got %T", msg))
	}
}

func (c *City) opts() Options {
	return Options{
		Sent:     func(_, n int) { c.m.bytesOut.Add(float64(n)) },
		Received: func(_, n int) { c.m.bytesIn.Add(float64(n)); c.m.chunksIn.Inc() },
		Bad:      func(int) { c.m.badChunks.Inc() },
	}
}

// mayPut decides whether a ward may upload blob m: only for an attach op
// of its own that waits for it (so no ward can fill the city's disks with
// blobs no dossier needs), and only with the manifest the city recorded,
// if it has one. verified says the manifest is that recorded one.
//
// A blob recorded as stored that no op of this ward waits for any more was
// uploaded before and the ward did not hear the answer: already says so,
// and the ward is told BlobStored again without sending anything.
func (c *City) mayPut(peer schema.PeerIdentity, m *schema.Manifest) (verified, already bool, err error) {
	err = c.c.Store().View(func(tx *store.Tx) error {
		held, err := tx.HeldFor(m.Hash, peer.Node)
		if err != nil {
			return err
		}
		rec, stored, err := tx.BlobStored(m.Hash)
		if err != nil {
			return err
		}
		if stored && !rec.Equal(m) {
			return fmt.Errorf("%w: blob %s is recorded with another manifest", schema.ErrInvalid, m.HashHex()[:12])
		}
		switch {
		case held:
			verified = stored
		case stored:
			already = true
		default:
			return fmt.Errorf("%w: no attach op of %s waits for blob %s; its ops must reach the city first", schema.ErrConflict, peer.Node, m.HashHex()[:12])
		}
		return nil
	})
	return verified, already, err
}

// mayRead decides whether peer may get blob h: a member may get any; a
// ward or backup office one that a dossier of a ward it serves (or keeps a
// tracking copy of) refers to: invariant 4, a node reads only what its
// certificate and the ward's lease allow.
func (c *City) mayRead(peer schema.PeerIdentity, h [32]byte) error {
	if peer.Role == schema.PeerCity {
		return nil
	}
	allowed := false
	err := c.c.Store().View(func(tx *store.Tx) error {
		// A ward office reads its own ward's scans; a backup office only
		// those of wards whose lease it holds now (what it pulls).
		reads := func(ward string) (bool, error) {
			if !peer.MayServe(ward) {
				return false, nil
			}
			if peer.Role != schema.PeerBackup {
				return true, nil
			}
			l, err := tx.Lease(ward)
			return l.Epoch > 0 && l.Active == peer.Node, err
		}
		refs, err := tx.BlobRefs(h)
		if err != nil {
			return err
		}
		for _, id := range refs {
			d, ok, err := tx.Dossier(id)
			if err != nil {
				return err
			}
			if ok {
				if allowed, err = reads(d.Ward); err != nil || allowed {
					return err
				}
			}
			if t, ok, err := tx.Tracker(id); err != nil {
				return err
			} else if ok {
				if allowed, err = reads(t); err != nil || allowed {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !allowed {
		return fmt.Errorf("%w: no dossier that %s may read refers to blob %x", schema.ErrForbidden, peer.Node, h[:6])
	}
	return nil
}

// local returns the manifest of a stored blob held here in full, fetching
// missing chunks from peers first when fetch is set.
func (c *City) local(ctx context.Context, h [32]byte, fetch bool) (schema.Manifest, error) {
	if ok, err := c.bs.Complete(h); err != nil {
		return schema.Manifest{}, err
	} else if ok {
		m, _, err := c.bs.Manifest(h)
		return m, err
	}
	var m schema.Manifest
	var stored bool
	if err := c.c.Store().View(func(tx *store.Tx) error {
		var err error
		m, stored, err = tx.BlobStored(h)
		return err
	}); err != nil {
		return schema.Manifest{}, err
	}
	if !stored || !fetch {
		return schema.Manifest{}, fmt.Errorf("%w: blob %x is not held by member %s", schema.ErrNotFound, h[:6], c.c.NodeID())
	}
	if err := c.fetch(ctx, &m); err != nil {
		return schema.Manifest{}, fmt.Errorf("%w: blob %x: %v", schema.ErrUnavailable, h[:6], err)
	}
	return m, nil
}

// commit makes sure a majority of members holds m, then records that
// through Raft (which applies the attach ops held for it). It returns the
// number of members known to hold it.
func (c *City) commit(ctx context.Context, m *schema.Manifest, origin string) (uint32, error) {
	var stored bool
	if err := c.c.Store().View(func(tx *store.Tx) error {
		var err error
		_, stored, err = tx.BlobStored(m.Hash)
		return err
	}); err != nil {
		return 0, err
	}
	voters, err := c.c.Voters()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
	}
	// A blob already recorded was on a majority then; the repair loop
	// keeps every member up to date. It is recorded again for this
	// origin, which releases this ward's attach ops.
	holders := uint32(voters/2 + 1)
	if !stored {
		if holders, err = c.copyToMajority(ctx, m); err != nil {
			return 0, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.c.Propose(pctx, cluster.Command{Kind: cluster.KindBlob, Blob: cluster.NewBlobCmd(m, origin)})
	if err != nil {
		return 0, fmt.Errorf("%w: record blob: %v", schema.ErrUnavailable, err)
	}
	if res.Err != "" {
		return 0, fmt.Errorf("%w: record blob: %s", schema.ErrInvalid, res.Err)
	}
	c.m.committed.Inc()
	c.log.Info("blob stored on a majority", "blob", m.HashHex()[:12], "bytes", m.Size, "holders", holders, "released_ops", res.Applied)
	return holders, nil
}

// copyToMajority copies m (held here) to the other voters in parallel and
// returns once a majority, this member included, holds it. Copies to the
// rest go on in the background.
func (c *City) copyToMajority(ctx context.Context, m *schema.Manifest) (uint32, error) {
	c.mu.Lock()
	if j, ok := c.copying[m.Hash]; ok {
		c.mu.Unlock()
		select {
		case <-j.done:
			return j.holders, j.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	j := &copyJob{done: make(chan struct{})}
	c.copying[m.Hash] = j
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.copying, m.Hash)
		c.mu.Unlock()
		close(j.done)
	}()
	j.holders, j.err = c.copyRun(ctx, m)
	return j.holders, j.err
}

func (c *City) copyRun(ctx context.Context, m *schema.Manifest) (uint32, error) {
	members, err := c.c.Members()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
	}
	voters, err := c.c.Voters()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
	}
	need := voters/2 + 1
	var peers []string
	for id := range members {
		if id != c.c.NodeID() {
			peers = append(peers, id)
		}
	}
	// Spread the copies: each blob starts at a different peer.
	sort.Strings(peers)
	if len(peers) > 0 {
		k := int(m.Hash[0]) % len(peers)
		peers = append(peers[k:], peers[:k]...)
	}
	// Copy to just enough peers for a majority, in parallel; a failed copy
	// is replaced by the next peer. The members left out fetch the blob
	// with their repair loop, so a bulk upload does not pay for every copy
	// before it is acknowledged.
	results := make(chan error, len(peers))
	next, running := 0, 0
	start := func() {
		id := peers[next]
		next++
		running++
		c.spawn(func() {
			// The copy outlives the ward's request if it must.
			cctx, cancel := context.WithTimeout(c.ctx, c.cfg.CopyTimeout)
			defer cancel()
			err := c.putTo(cctx, members[id], m)
			if err != nil && c.ctx.Err() == nil {
				c.log.Warn("blob: copy to member failed; trying another", "member", id, "blob", m.HashHex()[:12], "err", err)
			}
			results <- err
		})
	}
	holders := 1
	for next < len(peers) && running < need-holders {
		start()
	}
	var last error
	for holders < need {
		if running == 0 {
			return uint32(holders), fmt.Errorf("%w: only %d of the %d members needed hold blob %s (last error: %v)", schema.ErrUnavailable, holders, need, m.HashHex()[:12], last)
		}
		select {
		case err := <-results:
			running--
			if err == nil {
				holders++
			} else {
				last = err
				if next < len(peers) {
					start()
				}
			}
		case <-ctx.Done():
			return uint32(holders), ctx.Err()
		}
	}
	// The others find the blob on their next repair pass.
	return uint32(holders), nil
}

// putTo copies m to the member at addr.
func (c *City) putTo(ctx context.Context, addr string, m *schema.Manifest) error {
	conn, err := c.peers.get(ctx, addr)
	if err != nil {
		return err
	}
	_, err = Put(ctx, conn, c.c.NodeID(), "", c.bs, m, c.opts())
	if err != nil && conn.Context().Err() != nil {
		c.peers.forget(addr, conn)
	}
	return err
}

// fetch gets the chunks of m this member lacks from any peer that has it.
func (c *City) fetch(ctx context.Context, m *schema.Manifest) error {
	members, err := c.c.Members()
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(members))
	for id := range members {
		if id != c.c.NodeID() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var last error = errors.New("no other member")
	for _, id := range ids {
		conn, err := c.peers.get(ctx, members[id])
		if err != nil {
			last = err
			continue
		}
		if _, err := Get(ctx, conn, c.c.NodeID(), "", c.bs, m.Hash, c.opts()); err != nil {
			last = err
			if conn.Context().Err() != nil {
				c.peers.forget(members[id], conn)
			}
			continue
		}
		return nil
	}
	return last
}

// repairPass fetches every stored, referenced blob this member lacks.
func (c *City) repairPass(ctx context.Context) {
	var todo []schema.Manifest
	stored := 0
	err := c.c.Store().View(func(tx *store.Tx) error {
		return tx.StoredBlobs(func(m *schema.Manifest) error {
			stored++
			ref, err := tx.BlobReferenced(m.Hash)
			if err != nil || !ref {
				return err
			}
			missing, err := c.bs.Missing(m)
			if err != nil {
				return err
			}
			if _, ok, err := c.bs.Manifest(m.Hash); err != nil {
				return err
			} else if len(missing) > 0 || !ok {
				todo = append(todo, *m)
			}
			return nil
		})
	})
	if err != nil {
		c.log.Error("blob repair: cannot list stored blobs", "err", err)
		return
	}
	c.log.Debug("blob repair pass", "stored", stored, "missing_here", len(todo))
	for i := range todo {
		if ctx.Err() != nil {
			return
		}
		m := &todo[i]
		if err := c.bs.PutManifest(m); err != nil {
			c.log.Error("blob repair: cannot store manifest", "err", err)
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, c.cfg.CopyTimeout)
		err := c.fetch(fctx, m)
		cancel()
		if err != nil {
			c.log.Warn("blob repair: blob still missing here", "blob", m.HashHex()[:12], "err", err)
			continue
		}
		c.m.repaired.Inc()
		c.log.Info("blob repaired from a peer", "blob", m.HashHex()[:12], "bytes", m.Size)
	}
}

// missingNow counts the chunks of stored, referenced blobs this member
// lacks (the wardsync_blob_missing_chunks gauge).
func (c *City) missingNow() float64 {
	n := 0
	c.c.Store().View(func(tx *store.Tx) error {
		return tx.StoredBlobs(func(m *schema.Manifest) error {
			if ref, err := tx.BlobReferenced(m.Hash); err != nil || !ref {
				return err
			}
			missing, err := c.bs.Missing(m)
			n += len(missing)
			return err
		})
	})
	return float64(n)
}

// gc removes local blobs nothing refers to, after the grace period.
func (c *City) gc(ctx context.Context) (blobstore.GCReport, error) {
	return c.bs.GC(ctx, func(h [32]byte) (bool, error) {
		keep := false
		err := c.c.Store().View(func(tx *store.Tx) error {
			var err error
			if keep, err = tx.BlobReferenced(h); err != nil || keep {
				return err
			}
			if keep, err = tx.HasHeld(h); err != nil || keep {
				return err
			}
			// Recorded as on a majority: never collected behind the
			// record's back.
			_, keep, err = tx.BlobStored(h)
			return err
		})
		return keep, err
	}, c.cfg.GCGrace)
}

// ScrubResult is one member's scrub.
type ScrubResult struct {
	Member   string                `json:"member"`
	Report   blobstore.ScrubReport `json:"report"`
	Missing  int                   `json:"missing_chunks_after_repair"`
	Error    string                `json:"error,omitempty"`
	Duration string                `json:"duration"`
}

// scrubLocal re-verifies every chunk on this member, then repairs.
func (c *City) scrubLocal() ([]byte, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Minute)
	defer cancel()
	rep, err := c.bs.Scrub(ctx)
	res := ScrubResult{Member: c.c.NodeID(), Report: rep}
	if err != nil {
		res.Error = err.Error()
	} else {
		c.repairPass(ctx)
	}
	res.Missing = int(c.missingNow())
	res.Duration = time.Since(start).Round(time.Millisecond).String()
	return json.Marshal(res)
}

func (c *City) handleScrub(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	members, err := c.c.Members()
	if err != nil {
		return fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
	}
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]ScrubResult, len(ids))
	var wg gosync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			var b []byte
			var err error
			if id == c.c.NodeID() {
				b, err = c.scrubLocal()
			} else {
				ctx, cancel := context.WithTimeout(r.Context(), 30*time.Minute)
				b, err = c.c.InfoFrom(ctx, members[id], infoScrub)
				cancel()
			}
			if err == nil {
				err = json.Unmarshal(b, &out[i])
			}
			if err != nil {
				out[i] = ScrubResult{Member: id, Error: err.Error()}
			}
		})
	}
	wg.Wait()
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"members": out})
	return nil
}

// handleGet serves a stored blob from this member (fetching it from a
// peer first if needed), with HTTP ranges.
func (c *City) handleGet(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	h, err := schema.ParseHash(r.PathValue("hash"))
	if err != nil {
		return err
	}
	// ?here=true answers only from this member's own disk (404 if it
	// lacks the blob): how city IT checks where copies are.
	here := r.URL.Query().Get("here")
	if here != "" && here != "true" && here != "false" {
		return &schema.FieldError{Field: "here", Reason: "must be true or false"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	m, err := c.local(ctx, h, here != "true")
	if err != nil {
		return err
	}
	rd, err := c.bs.Open(h)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", m.Type)
	w.Header().Set("ETag", `"`+m.HashHex()+`"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Wardsync-Member", c.c.NodeID())
	http.ServeContent(w, r, "", time.Time{}, rd)
	return nil
}
