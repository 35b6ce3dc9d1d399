package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// Members talk to each other on the sync ALPN too: every stream starts
// with Hello{Proto}, and the proto picks the handler. "cluster" carries
// requests between members: a follower forwarding a proposal or an admin
// change to the leader, or asking a member for its status. Wards' push and
// pull (issue 4) register their own protos with HandleProto.

// ProtoHandler serves one stream whose Hello named its proto.
type ProtoHandler func(ctx context.Context, c *transport.Conn, s io.ReadWriteCloser, r *wire.Reader, hello *wire.Hello)

// HandleProto registers a handler for streams of proto on the sync ALPN.
// Call before the endpoint runs.
func (c *Cluster) HandleProto(proto string, h ProtoHandler) { c.protos[proto] = h }

const maxRPCFrame = 64 << 20

func (c *Cluster) handleSync(ctx context.Context, conn *transport.Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Close ends our side; CancelRead releases the peer's side too,
			// so quic-go frees the stream. Without it, incoming streams pile
			// up to the connection's limit and forwarding stalls.
			defer func() {
				s.CancelRead(0)
				s.Close()
			}()
			r := wire.NewReader(s, maxRPCFrame)
			msg, err := r.Read()
			if err != nil {
				c.refuse(s, conn, err)
				return
			}
			h, ok := msg.(*wire.Hello)
			if !ok {
				wire.SendError(s, wire.CodeBadFrame, "a stream must start with Hello")
				return
			}
			if h.Proto == wire.ProtoCluster {
				c.serveCluster(ctx, conn, s, r)
				return
			}
			if ph, ok := c.protos[h.Proto]; ok {
				ph(ctx, conn, s, r, h)
				return
			}
			wire.SendError(s, wire.CodeUnknownProto, fmt.Sprintf("no protocol %q on this member", h.Proto))
		}()
	}
}

// refuse answers a bad first frame with a clear error frame.
func (c *Cluster) refuse(w io.Writer, conn *transport.Conn, err error) {
	code := wire.CodeBadFrame
	switch {
	case errors.Is(err, wire.ErrUnknownVersion):
		code = wire.CodeUnknownVersion
	case errors.Is(err, wire.ErrFrameTooLarge):
		code = wire.CodeTooLarge
	case errors.Is(err, io.EOF):
		return
	}
	c.log.Warn("refused a stream", "peer", conn.Peer.Node, "err", err)
	wire.SendError(w, code, err.Error())
}

// rpc is a request between members.
type rpc struct {
	Op      string `json:"op"` // propose, add_voter, remove, transfer, status
	Entry   []byte `json:"entry,omitempty"`
	ID      string `json:"id,omitempty"`
	Address string `json:"address,omitempty"`
}

// MemberStatus is one member's view of itself.
type MemberStatus struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	Leader       string `json:"leader"`
}

func (c *Cluster) serveCluster(ctx context.Context, conn *transport.Conn, s io.ReadWriter, r *wire.Reader) {
	if conn.Peer.Role != schema.PeerCity {
		wire.SendError(s, wire.CodeForbidden, "only city members speak the cluster protocol")
		return
	}
	msg, err := r.Read()
	if err != nil {
		c.refuse(s, conn, err)
		return
	}
	fw, ok := msg.(*wire.Forward)
	if !ok {
		wire.SendError(s, wire.CodeBadFrame, "expected Forward")
		return
	}
	var req rpc
	if err := json.Unmarshal(fw.Command, &req); err != nil {
		wire.SendError(s, wire.CodeBadFrame, "forward request is not JSON: "+err.Error())
		return
	}
	out, err := c.local(ctx, req)
	res := &wire.ForwardResult{Result: out}
	if err != nil {
		res.Err = err.Error()
		res.Code = wire.CodeFor(err)
		switch {
		case errors.Is(err, errMaybeApplied): // before ErrNotLeader: the leadership was lost after appending
			res.Code = wire.CodeOutcomeUnknown
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrShutdown):
			// Not taken: the follower tries the next leader.
			res.Code = wire.CodeNotLeader
		}
	}
	wire.WriteMsg(s, res)
}

// local executes a member request on this member.
func (c *Cluster) local(ctx context.Context, req rpc) ([]byte, error) {
	switch req.Op {
	case "status":
		return json.Marshal(c.Status())
	case "info":
		f, ok := c.infos[req.ID]
		if !ok {
			return nil, fmt.Errorf("no info %q on this member", req.ID)
		}
		return f()
	}
	if !c.IsLeader() {
		return nil, ErrNotLeader
	}
	switch req.Op {
	case "propose":
		cmds, err := DecodeEntry(req.Entry)
		if err != nil || len(cmds) != 1 {
			return nil, fmt.Errorf("bad forwarded entry: %v", err)
		}
		res, err := c.propose(ctx, cmds[0])
		if err != nil {
			return nil, err
		}
		return json.Marshal(res)
	case "add_voter":
		return nil, c.addVoterLocal(req.ID, req.Address)
	case "remove":
		return nil, c.removeLocal(req.ID)
	case "transfer":
		return nil, c.transferLocal(req.ID)
	case "lease":
		return c.barrierRead(func(tx *store.Tx) (any, error) { return tx.Lease(req.ID) })
	case "lease_history":
		return c.barrierRead(func(tx *store.Tx) (any, error) { return tx.LeaseHistory(req.ID) })
	}
	return nil, fmt.Errorf("unknown request %q", req.Op)
}

// Status reports this member's Raft state.
func (c *Cluster) Status() MemberStatus {
	leader, _ := c.Leader()
	var term uint64
	fmt.Sscan(c.raft.Stats()["term"], &term)
	return MemberStatus{ID: c.cfg.NodeID, State: c.raft.State().String(), Term: term,
		AppliedIndex: c.raft.AppliedIndex(), CommitIndex: c.raft.CommitIndex(), LastIndex: c.raft.LastIndex(), Leader: leader}
}

func (c *Cluster) addVoterLocal(id, addr string) error {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	// Remove any server with the same ID or address first (rqlite's rule):
	// a member re-joining with a new address, or a new member reusing an
	// old address, must not leave a stale entry behind.
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr) {
			return nil // already a member as asked
		}
		if s.ID == raft.ServerID(id) || s.Address == raft.ServerAddress(addr) {
			if err := c.raft.RemoveServer(s.ID, 0, 30*time.Second).Error(); err != nil {
				return err
			}
		}
	}
	return c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 30*time.Second).Error()
}

func (c *Cluster) removeLocal(id string) error {
	return c.raft.RemoveServer(raft.ServerID(id), 0, 30*time.Second).Error()
}

func (c *Cluster) transferLocal(id string) error {
	if id == "" {
		return c.raft.LeadershipTransfer().Error()
	}
	if id == c.cfg.NodeID {
		return nil // already the leader: nothing to move
	}
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			return c.raft.LeadershipTransferToServer(s.ID, s.Address).Error()
		}
	}
	return fmt.Errorf("%w: no member %q", schema.ErrNotFound, id)
}

// AddVoter adds a member (from any member: forwarded to the leader).
func (c *Cluster) AddVoter(ctx context.Context, id, addr string) error {
	_, err := c.onLeader(ctx, rpc{Op: "add_voter", ID: id, Address: addr})
	return err
}

// RemoveServer removes a member.
func (c *Cluster) RemoveServer(ctx context.Context, id string) error {
	_, err := c.onLeader(ctx, rpc{Op: "remove", ID: id})
	return err
}

// TransferLeadership hands leadership to id (or to any member if "").
func (c *Cluster) TransferLeadership(ctx context.Context, id string) error {
	_, err := c.onLeader(ctx, rpc{Op: "transfer", ID: id})
	return err
}

// onLeader runs a request on the leader, here or forwarded, retrying while
// there is no leader until ctx ends.
func (c *Cluster) onLeader(ctx context.Context, req rpc) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		var out []byte
		var err error
		if c.IsLeader() {
			out, err = c.local(ctx, req)
		} else {
			out, err = c.fwd.call(ctx, req)
		}
		if err == nil || !(errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(min(50*time.Millisecond*time.Duration(attempt+1), time.Second)):
		}
	}
}

// MemberStatusOf asks another member for its status.
func (c *Cluster) MemberStatusOf(ctx context.Context, addr string) (MemberStatus, error) {
	var st MemberStatus
	out, err := c.fwd.callAt(ctx, addr, rpc{Op: "status"})
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// forwarder is a follower's client to other members.
type forwarder struct {
	c     *Cluster
	mu    sync.Mutex
	conns map[string]*transport.Conn
}

func newForwarder(c *Cluster) *forwarder {
	return &forwarder{c: c, conns: map[string]*transport.Conn{}}
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.CloseWithError(0, "closing")
	}
}

func (f *forwarder) propose(ctx context.Context, cmd Command) (Result, error) {
	entry, err := EncodeEntry([]Command{cmd})
	if err != nil {
		return Result{}, err
	}
	out, err := f.call(ctx, rpc{Op: "propose", Entry: entry})
	if err != nil {
		f.c.m.forwarded.WithLabelValues("error").Inc()
		return Result{}, err
	}
	f.c.m.forwarded.WithLabelValues("ok").Inc()
	var res Result
	return res, json.Unmarshal(out, &res)
}

// leaderGone is how long call still waits for the answer of a leader that
// is no longer the leader. One that is alive answers at once (Raft fails
// its pending proposals when it steps down); a dead one never does.
const leaderGone = time.Second

// call sends req to the current leader. If leadership has moved away from
// it for leaderGone while call waits for the answer (the leader died), it
// gives up with ErrNoLeader so that the caller retries with the new
// leader: a dead leader's connection would otherwise hold the request
// until QUIC's idle timeout (30 s), and with it every ward push forwarded
// through this member. This is the same retry as after a lost answer: the
// FSM skips pushed ops it already holds, and answers a portal create
// proposed again as done rather than make it twice.
func (f *forwarder) call(ctx context.Context, req rpc) ([]byte, error) {
	_, addr := f.c.Leader()
	if addr == "" {
		return nil, ErrNoLeader
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	moved := make(chan struct{})
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var since time.Time // when leadership was first seen elsewhere
		for {
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
			}
			if _, now := f.c.Leader(); now == addr {
				since = time.Time{}
			} else if since.IsZero() {
				since = time.Now()
			} else if time.Since(since) >= leaderGone {
				close(moved)
				cancel()
				return
			}
		}
	}()
	out, err := f.callAt(cctx, addr, req)
	if err != nil && ctx.Err() == nil {
		select {
		case <-moved:
			if errors.Is(err, errMaybeApplied) { // the request had gone out
				return nil, maybeApplied(ErrNoLeader, fmt.Sprintf("leadership moved away from %s during the request: %v", addr, err))
			}
			return nil, fmt.Errorf("%w: leadership moved away from %s before the request went out", ErrNoLeader, addr)
		default:
		}
	}
	return out, err
}

func (f *forwarder) callAt(ctx context.Context, addr string, req rpc) ([]byte, error) {
	conn, err := f.conn(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot reach %s: %v", ErrNoLeader, addr, err)
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		f.forget(addr, conn)
		return nil, fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	// One request per stream: release both directions when done, so the
	// member's count of open incoming streams goes back down.
	defer func() {
		s.CancelRead(0)
		s.Close()
	}()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	// A canceled request stops waiting at once.
	defer context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })()
	body, _ := json.Marshal(req)
	if err := wire.WriteMsg(s, &wire.Hello{Proto: wire.ProtoCluster, Node: f.c.cfg.NodeID, Versions: []uint8{wire.Version}}); err != nil {
		return nil, err
	}
	// From here on the leader may have the request: a lost answer is no
	// refusal.
	if err := wire.WriteMsg(s, &wire.Forward{Command: body}); err != nil {
		return nil, maybeApplied(ErrNoLeader, err)
	}
	msg, err := wire.NewReader(s, maxRPCFrame).Read()
	if err != nil {
		return nil, maybeApplied(ErrNoLeader, err)
	}
	switch m := msg.(type) {
	case *wire.ForwardResult:
		switch m.Code {
		case wire.CodeNotLeader:
			return nil, ErrNotLeader
		case wire.CodeOutcomeUnknown:
			return nil, maybeApplied(ErrNotLeader, m.Err)
		}
		if m.Err != "" {
			return nil, errors.New(m.Err)
		}
		return m.Result, nil
	case *wire.Error:
		return nil, fmt.Errorf("member %s refused: %s: %s", addr, m.Code, m.Message)
	}
	return nil, fmt.Errorf("unexpected answer %T", msg)
}

func (f *forwarder) conn(ctx context.Context, addr string) (*transport.Conn, error) {
	f.mu.Lock()
	c := f.conns[addr]
	f.mu.Unlock()
	if c != nil && c.Context().Err() == nil {
		return c, nil
	}
	c, err := f.c.cfg.Endpoint.Dial(ctx, addr, transport.ALPNSync, schema.PeerCity)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.conns[addr] = c
	f.mu.Unlock()
	return c, nil
}

// drop closes and forgets whatever connection to addr is cached.
func (f *forwarder) drop(addr string) {
	f.mu.Lock()
	c := f.conns[addr]
	delete(f.conns, addr)
	f.mu.Unlock()
	if c != nil {
		c.CloseWithError(0, "reset")
	}
}

func (f *forwarder) forget(addr string, c *transport.Conn) {
	f.mu.Lock()
	if f.conns[addr] == c {
		delete(f.conns, addr)
	}
	f.mu.Unlock()
	c.CloseWithError(0, "reset")
}

// RegisterInfo serves a named piece of this member's local state to other
// members (for example the sync sessions it holds). Call before Run.
func (c *Cluster) RegisterInfo(name string, f func() ([]byte, error)) { c.infos[name] = f }

// InfoFrom asks a member for a named piece of its local state.
//
// Each try is bounded (3 s): a connection that went bad while the cluster
// was busy (elections under load) must not hide a member's state for as
// long as the caller waits. A failed try drops the cached connection, and
// the second dials afresh.
func (c *Cluster) InfoFrom(ctx context.Context, addr, name string) ([]byte, error) {
	var out []byte
	var err error
	for try := 0; try < 2 && ctx.Err() == nil; try++ {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		out, err = c.fwd.callAt(tctx, addr, rpc{Op: "info", ID: name})
		cancel()
		if err == nil {
			return out, nil
		}
		c.fwd.drop(addr)
	}
	return out, err
}

// Members lists the current configuration's IDs and addresses.
func (c *Cluster) Members() (map[string]string, error) {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range cf.Configuration().Servers {
		out[string(s.ID)] = string(s.Address)
	}
	return out, nil
}
