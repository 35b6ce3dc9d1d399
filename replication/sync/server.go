package sync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	gosync "sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/cluster"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// Server is the city side of sync on one member.
type Server struct {
	c   *cluster.Cluster
	log *slog.Logger
	m   *serverMetrics

	mu       gosync.Mutex
	sessions map[string]*WardSession // by ward and node (a ward office and its backup both pull a ward)
}

// WardSession is what this member knows of a ward's current link.
type WardSession struct {
	Ward       string    `json:"ward"`
	Node       string    `json:"node"`
	Member     string    `json:"member"`
	Connected  bool      `json:"connected"`
	LastSeen   time.Time `json:"last_seen"`
	PullCursor uint64    `json:"pull_cursor"`
	Pushing    int       `json:"pushing"`
	Pulling    int       `json:"pulling"`
}

// Pull pages stay small enough that a ward applies one in one store
// transaction (its store caps a transaction at ~2.4 MB; each op also
// rewrites its dossier).
const (
	pageOps   = 256
	pageBytes = 512 << 10
	maxFrame  = 16 << 20
)

// NewServer registers the push and pull protocols on a member.
func NewServer(c *cluster.Cluster, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{c: c, log: log, m: newServerMetrics(reg), sessions: map[string]*WardSession{}}
	c.HandleProto(wire.ProtoPush, s.push)
	c.HandleProto(wire.ProtoPull, s.pull)
	c.HandleProto(wire.ProtoLease, s.lease)
	return s
}

// Sessions returns this member's view of the wards it serves.
func (s *Server) Sessions() []WardSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WardSession, 0, len(s.sessions))
	for _, ws := range s.sessions {
		out = append(out, *ws)
	}
	return out
}

func (s *Server) touch(ward, node string, f func(*WardSession)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := ward + "\x00" + node
	ws, ok := s.sessions[key]
	if !ok {
		ws = &WardSession{Ward: ward, Member: s.c.NodeID()}
		s.sessions[key] = ws
	}
	ws.Node, ws.LastSeen = node, time.Now().UTC()
	f(ws)
	ws.Connected = ws.Pushing+ws.Pulling > 0
}

// refuse sends a clear error frame and logs why.
func (s *Server) refuse(w io.Writer, peer schema.PeerIdentity, code, msg string) {
	s.log.Warn("sync: refused", "peer", peer.Node, "code", code, "reason", msg)
	s.m.refused.WithLabelValues(code).Inc()
	wire.SendError(w, code, msg)
}

// hello checks what every sync stream starts with.
func (s *Server) hello(w io.Writer, conn *transport.Conn, h *wire.Hello) (uint8, bool) {
	peer := conn.Peer
	if peer.Role != schema.PeerWard && peer.Role != schema.PeerBackup {
		s.refuse(w, peer, wire.CodeForbidden, fmt.Sprintf("a %s certificate does not sync", peer.Role))
		return 0, false
	}
	if h.Node != peer.Node {
		s.refuse(w, peer, wire.CodeForbidden, fmt.Sprintf("hello names node %q but the certificate is %q's", h.Node, peer.Node))
		return 0, false
	}
	if !peer.MayServe(h.Ward) {
		s.refuse(w, peer, wire.CodeForbidden, fmt.Sprintf("the certificate of %s does not name ward %s", peer.Node, h.Ward))
		return 0, false
	}
	v, err := wire.Negotiate(h.Versions, wire.Version)
	if err != nil {
		s.refuse(w, peer, wire.CodeUnknownVersion, err.Error())
		return 0, false
	}
	return v, true
}

func (s *Server) welcome(w io.Writer, v uint8) error {
	leader, _ := s.c.Leader()
	return wire.WriteMsg(w, &wire.Welcome{Version: v, Node: s.c.NodeID(), Leader: leader})
}

// push receives a ward's ops.
func (s *Server) push(ctx context.Context, conn *transport.Conn, st io.ReadWriteCloser, r *wire.Reader, h *wire.Hello) {
	peer := conn.Peer
	v, ok := s.hello(st, conn, h)
	if !ok {
		return
	}
	key, err := s.register(ctx, peer, h.Key)
	if err != nil {
		s.refuse(st, peer, wire.CodeForbidden, err.Error())
		return
	}
	var hw uint64
	s.c.Store().View(func(tx *store.Tx) error { hw, err = tx.HighWater(peer.Node); return err })
	if err != nil {
		s.refuse(st, peer, wire.CodeInternal, "cannot read high-water mark")
		return
	}
	if s.welcome(st, v) != nil || wire.WriteMsg(st, &wire.Ack{Seq: hw}) != nil {
		return
	}
	s.touch(h.Ward, peer.Node, func(ws *WardSession) { ws.Pushing++ })
	defer s.touch(h.Ward, peer.Node, func(ws *WardSession) { ws.Pushing-- })
	s.m.sessions.WithLabelValues("push").Inc()
	defer s.m.sessions.WithLabelValues("push").Dec()
	pusher := &cluster.Pusher{Node: peer.Node, Wards: peer.Wards, Role: peer.Role}
	for {
		msg, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.refuse(st, peer, wire.CodeFor(err), err.Error())
			}
			return
		}
		b, ok := msg.(*wire.OpBatch)
		if !ok {
			s.refuse(st, peer, wire.CodeBadFrame, fmt.Sprintf("expected OpBatch, got %T", msg))
			return
		}
		size := 0
		for i := range b.Ops {
			size += len(b.Ops[i].Body) + 200
		}
		if size > cluster.MaxPushBytes {
			s.refuse(st, peer, wire.CodeTooLarge, fmt.Sprintf("a pushed batch may hold %d bytes of ops, this one ~%d", cluster.MaxPushBytes, size))
			return
		}
		if err := verifyBatch(b.Ops, peer.Node, key); err != nil {
			s.refuse(st, peer, wire.CodeFor(err), err.Error())
			return
		}
		// Ops this member already holds are committed: do not send them
		// through Raft again (a reconnecting ward resends from its cursor).
		ops, hw := b.Ops, uint64(0)
		if err := s.c.Store().View(func(tx *store.Tx) error { var err error; hw, err = tx.HighWater(peer.Node); return err }); err != nil {
			s.refuse(st, peer, wire.CodeInternal, "cannot read high-water mark")
			return
		}
		for len(ops) > 0 && ops[0].ID.Seq <= hw {
			ops = ops[1:]
		}
		if len(ops) == 0 {
			if wire.WriteMsg(st, &wire.Ack{Seq: hw}) != nil {
				return
			}
			continue
		}
		if err := s.c.DiskLow(); err != nil {
			// The ward keeps its ops and pushes them again later.
			s.refuse(st, peer, wire.CodeUnavailable, err.Error())
			return
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		res, err := s.c.Propose(pctx, cluster.Command{Kind: cluster.KindOps, Ops: ops, Pusher: pusher})
		cancel()
		if err != nil {
			s.refuse(st, peer, wire.CodeUnavailable, err.Error())
			return
		}
		if res.Code != "" {
			code := wire.CodeForbidden
			switch res.Code {
			case "gap", "conflict", "fork":
				code = wire.CodeConflict
			case "invalid":
				code = wire.CodeInvalid
			}
			s.refuse(st, peer, code, res.Err)
			return
		}
		s.m.pushedOps.Add(float64(res.Applied))
		s.m.pushLatency.Observe(time.Since(start).Seconds())
		if err := wire.WriteMsg(st, &wire.Ack{Seq: res.HighWater}); err != nil {
			return
		}
		s.touch(h.Ward, peer.Node, func(*WardSession) {})
	}
}

// register returns the origin's op-signing key, recording it (through
// Raft) at the node's first push. A node that comes back with another key
// is refused: its ops could not be told from forgeries.
func (s *Server) register(ctx context.Context, peer schema.PeerIdentity, key []byte) (ed25519.PublicKey, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("hello carries no ed25519 op-signing key")
	}
	var info store.OriginInfo
	var ok bool
	err := s.c.Store().View(func(tx *store.Tx) error {
		var err error
		info, ok, err = tx.OriginKey(peer.Node)
		return err
	})
	if err != nil {
		return nil, err
	}
	if ok {
		if !bytes.Equal(info.Key, key) {
			return nil, fmt.Errorf("node %s is registered with another op-signing key", peer.Node)
		}
		if slices.Equal(info.Wards, peer.Wards) && info.Role == peer.Role {
			return info.Key, nil
		}
		// Same node, reissued certificate: record what it names now.
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := s.c.Propose(pctx, cluster.Command{Kind: cluster.KindRegister, Register: &cluster.RegisterCmd{Origin: peer.Node, Key: key, Wards: peer.Wards, Role: peer.Role}})
	if err != nil {
		return nil, err
	}
	if res.Err != "" {
		return nil, errors.New(res.Err)
	}
	return key, nil
}

// verifyBatch checks that a batch is one origin's contiguous, hash-chained
// run of ops, and that the first and last are signed by the origin: with
// the chain, that authenticates every op in between at the cost of two
// signature checks per batch instead of one per op.
func verifyBatch(ops []schema.Op, origin string, key ed25519.PublicKey) error {
	if len(ops) == 0 {
		return fmt.Errorf("%w: empty batch", schema.ErrInvalid)
	}
	for i := range ops {
		op := &ops[i]
		if err := op.CheckShape(); err != nil {
			return err
		}
		if op.ID.Origin != origin {
			return fmt.Errorf("%w: op %s is not %s's; a node pushes only its own ops", schema.ErrForbidden, op.ID, origin)
		}
		if i > 0 {
			if op.ID.Seq != ops[i-1].ID.Seq+1 {
				return fmt.Errorf("%w: batch is not contiguous at %s", schema.ErrInvalid, op.ID)
			}
			if op.Prev != ops[i-1].Hash() {
				return fmt.Errorf("%w: op %s does not chain to the op before it", schema.ErrBadSignature, op.ID)
			}
		}
	}
	if err := ops[0].Verify(key); err != nil {
		return err
	}
	if len(ops) > 1 {
		return ops[len(ops)-1].Verify(key)
	}
	return nil
}

// request checks a stream's hello, reads the one request it must start
// with (a T, for a ward the peer's certificate names) and welcomes it.
func request[T wire.Msg](s *Server, st io.ReadWriteCloser, conn *transport.Conn, r *wire.Reader, h *wire.Hello, ward func(T) string) (T, bool) {
	var none T
	peer := conn.Peer
	v, ok := s.hello(st, conn, h)
	if !ok {
		return none, false
	}
	msg, err := r.Read()
	if err != nil {
		s.refuse(st, peer, wire.CodeFor(err), err.Error())
		return none, false
	}
	m, ok := msg.(T)
	if !ok {
		s.refuse(st, peer, wire.CodeBadFrame, fmt.Sprintf("expected %T, got %T", none, msg))
		return none, false
	}
	if w := ward(m); !peer.MayServe(w) {
		s.refuse(st, peer, wire.CodeForbidden, fmt.Sprintf("the certificate of %s does not name ward %s", peer.Node, w))
		return none, false
	}
	if s.welcome(st, v) != nil {
		return none, false
	}
	return m, true
}

// pull streams a ward's partition, then stays open with live changes.
func (s *Server) pull(ctx context.Context, conn *transport.Conn, st io.ReadWriteCloser, r *wire.Reader, h *wire.Hello) {
	peer := conn.Peer
	cur, ok := request(s, st, conn, r, h, func(c *wire.Cursor) string { return c.Ward })
	if !ok {
		return
	}
	s.touch(cur.Ward, peer.Node, func(ws *WardSession) { ws.Pulling++; ws.PullCursor = max(ws.PullCursor, cur.Since) })
	defer s.touch(cur.Ward, peer.Node, func(ws *WardSession) { ws.Pulling-- })
	s.m.sessions.WithLabelValues("pull").Inc()
	defer s.m.sessions.WithLabelValues("pull").Dec()
	// After its first Cursor the node sends one per page it applied (its
	// applied cursor, shown as its catch-up); a read that ends means it
	// left.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			msg, err := r.Read()
			if err != nil {
				return
			}
			if c, ok := msg.(*wire.Cursor); ok && c.Ward == cur.Ward {
				s.touch(cur.Ward, peer.Node, func(ws *WardSession) { ws.PullCursor = max(ws.PullCursor, c.Since) })
			}
		}
	}()
	since := cur.Since // every change at or below it has been delivered
	var after []byte   // index key of the last change sent
	var sent *schema.Lease
	for {
		wake := s.c.WaitChanges(cur.Ward)
		// Lease, head and changes from one read of the state: a page never
		// carries ops committed after a lease change it has not announced,
		// and a backup never gets a page its lease no longer allows.
		var lease schema.Lease
		var head uint64
		var changes []store.Change
		err := s.c.Store().View(func(tx *store.Tx) error {
			var err error
			if lease, err = tx.Lease(cur.Ward); err != nil {
				return err
			}
			if head, err = tx.PartitionHead(cur.Ward); err != nil {
				return err
			}
			// A ward office always pulls its own ward (it is the office's
			// copy, read-only while a backup serves it). A backup reads a
			// ward only while it holds its lease: otherwise the stream
			// carries leases alone, until one names it.
			if peer.Role != schema.PeerWard && !(lease.Epoch > 0 && lease.Active == peer.Node) {
				return nil
			}
			if after == nil {
				changes, err = tx.Changes(cur.Ward, since, pageOps+1)
			} else {
				changes, err = tx.ChangesAfter(cur.Ward, after, pageOps+1)
			}
			return err
		})
		if err != nil {
			s.refuse(st, peer, wire.CodeInternal, "cannot read the partition")
			return
		}
		// The lease first, whenever it changed: the node must know who
		// serves the ward before it sees the ops that came after.
		if sent == nil || lease != *sent {
			if err := wire.WriteMsg(st, &wire.LeaseInfo{Lease: lease, Head: head}); err != nil {
				return
			}
			sent = &lease
		}
		if len(changes) > 0 {
			page, n := &wire.ChangesPage{}, 0
			for size := 0; n < len(changes) && n < pageOps && size < pageBytes; n++ {
				// The ward has its own ops already: skip them, but move
				// past them.
				if op := changes[n].Op; op.ID.Origin != peer.Node {
					page.Ops = append(page.Ops, op)
					size += len(op.Body) + 200
				}
			}
			last := changes[n-1]
			after = last.Key
			// The cursor may only cover commit indexes sent in full: if the
			// next change shares the last one's index, stop one short.
			page.Index = last.Index
			if n < len(changes) && changes[n].Index == last.Index {
				page.Index = max(since, last.Index-1)
			}
			since = page.Index
			if err := wire.WriteMsg(st, page); err != nil {
				return
			}
			s.m.pulledOps.Add(float64(len(page.Ops)))
			continue
		}
		select {
		case <-wake:
		case <-gone:
			return
		case <-ctx.Done():
			return
		}
	}
}

// lease takes a holder's LeaseRelease: the handback it was asked for
// completes once the city holds every op it names.
func (s *Server) lease(ctx context.Context, conn *transport.Conn, st io.ReadWriteCloser, r *wire.Reader, h *wire.Hello) {
	peer := conn.Peer
	rel, ok := request(s, st, conn, r, h, func(m *wire.LeaseRelease) string { return m.Ward })
	if !ok {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := s.c.ReleaseLease(pctx, rel.Ward, peer.Node, rel.Epoch, rel.LastSeq)
	if err != nil {
		s.refuse(st, peer, wire.CodeFor(err), err.Error())
		return
	}
	s.log.Info("sync: ward handed back", "ward", rel.Ward, "by", peer.Node, "epoch", l.Epoch, "active", l.Active)
	wire.WriteMsg(st, &wire.LeaseInfo{Lease: l})
}
