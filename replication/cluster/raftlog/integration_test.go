package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// countFSM counts distinct commands (a command retried after a leadership
// change may be committed twice) and chains a hash over every applied
// entry, so two members agree only if they applied the same log.
type countFSM struct {
	mu       sync.Mutex
	seen     map[string]bool
	digest   uint64
	restores int
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	f.seen[string(l.Data)] = true
	h := fnv.New64a()
	binary.Write(h, binary.BigEndian, f.digest)
	h.Write(l.Data)
	f.digest = h.Sum64()
	return len(f.seen)
}

func (f *countFSM) state() (count, digest uint64, restores int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return uint64(len(f.seen)), f.digest, f.restores
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, f.digest)
	for k := range f.seen {
		binary.Write(&b, binary.BigEndian, uint32(len(k)))
		b.WriteString(k)
	}
	return countSnapshot(b.Bytes()), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var digest uint64
	if err := binary.Read(rc, binary.BigEndian, &digest); err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		var n uint32
		if err := binary.Read(rc, binary.BigEndian, &n); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		k := make([]byte, n)
		if _, err := io.ReadFull(rc, k); err != nil {
			return err
		}
		seen[string(k)] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen, f.digest = seen, digest
	f.restores++
	return nil
}

type countSnapshot []byte

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// syncBuffer collects raft's logs; they are printed only on failure.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	dir   string
	store *Store
	trans *raft.InmemTransport
	fsm   *countFSM
	raft  *raft.Raft
}

type testCluster struct {
	t     *testing.T
	logs  *syncBuffer
	nodes []*testNode
}

// startTestCluster bootstraps and starts 3 members, shut down at cleanup
// (raft's logs printed if the test failed).
func startTestCluster(t *testing.T) *testCluster {
	c := &testCluster{t: t, logs: &syncBuffer{}}
	for i := range 3 {
		c.nodes = append(c.nodes, &testNode{id: raft.ServerID(fmt.Sprintf("c%d", i+1)), addr: raft.NewInmemAddr(), dir: t.TempDir()})
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.raft != nil {
				n.raft.Shutdown().Error()
				n.store.Close()
			}
		}
		if t.Failed() {
			t.Logf("raft logs:\n%s", c.logs.String())
		}
	})
	for _, n := range c.nodes {
		c.start(n, true)
	}
	return c
}

func (c *testCluster) config(id raft.ServerID) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = id
	// Short, but not so short that a slow fsync on a busy 2-core machine
	// (or -race) deposes the leader; LeaderLeaseTimeout <= HeartbeatTimeout.
	conf.HeartbeatTimeout = 500 * time.Millisecond
	conf.ElectionTimeout = 500 * time.Millisecond
	conf.LeaderLeaseTimeout = 400 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	// Snapshots only when the test asks, so the catch-up path is known.
	conf.SnapshotInterval = time.Hour
	conf.SnapshotThreshold = 1 << 30
	conf.TrailingLogs = 20
	conf.Logger = hclog.New(&hclog.LoggerOptions{
		Name: string(id), Level: hclog.Info, Output: c.logs,
	})
	return conf
}

func (c *testCluster) start(n *testNode, bootstrap bool) {
	t := c.t
	t.Helper()
	n.store = openStore(t, filepath.Join(n.dir, "raftlog"))
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(n.dir, "snapshots"), 2, c.logs)
	if err != nil {
		t.Fatal(err)
	}
	_, n.trans = raft.NewInmemTransport(n.addr)
	for _, o := range c.nodes {
		if o == n || o.trans == nil {
			continue
		}
		o.trans.Disconnect(n.addr) // drop pipelines to the old incarnation
		o.trans.Connect(n.addr, n.trans)
		n.trans.Connect(o.addr, o.trans)
	}
	conf := c.config(n.id)
	if bootstrap {
		var cfg raft.Configuration
		for _, o := range c.nodes {
			cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: o.id, Address: o.addr})
		}
		if err := raft.BootstrapCluster(conf, n.store, n.store, snaps, n.trans, cfg); err != nil {
			t.Fatalf("bootstrap %s: %v", n.id, err)
		}
	}
	n.fsm = &countFSM{}
	n.raft, err = raft.NewRaft(conf, n.fsm, n.store, n.store, snaps, n.trans)
	if err != nil {
		t.Fatalf("NewRaft %s: %v", n.id, err)
	}
}

func (c *testCluster) stop(n *testNode) {
	c.t.Helper()
	if n.raft == nil {
		return
	}
	if err := n.raft.Shutdown().Error(); err != nil {
		c.t.Fatalf("shutdown %s: %v", n.id, err)
	}
	if err := n.store.Close(); err != nil {
		c.t.Fatalf("close store %s: %v", n.id, err)
	}
	n.raft = nil
	// n.trans stays registered with the peers: RPCs to it time out (as to
	// a dead host) instead of failing at once and inflating raft's backoff.
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *testCluster) leader() *testNode {
	c.t.Helper()
	var l *testNode
	waitFor(c.t, "a leader", 10*time.Second, func() bool {
		l = nil
		for _, n := range c.nodes {
			if n.raft != nil && n.raft.State() == raft.Leader {
				l = n
			}
		}
		return l != nil
	})
	return l
}

// retryable reports errors after which a command may simply be sent to
// the (new) leader again.
func retryable(err error) bool {
	return errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrEnqueueTimeout)
}

// apply commits commands from..from+n-1 through the leader, checking every
// future; commands caught by a leadership change are sent again.
func (c *testCluster) apply(n, from int) {
	c.t.Helper()
	todo := make([]int, n)
	for i := range todo {
		todo[i] = from + i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt == 5 {
			c.t.Fatalf("%d commands still not committed after %d attempts", len(todo), attempt)
		}
		l := c.leader()
		futures := make([]raft.ApplyFuture, len(todo))
		for i, cmd := range todo {
			futures[i] = l.raft.Apply([]byte(fmt.Sprintf("cmd-%06d", cmd)), 5*time.Second)
		}
		var again []int
		for i, f := range futures {
			switch err := f.Error(); {
			case err == nil:
			case retryable(err):
				again = append(again, todo[i])
			default:
				c.t.Fatalf("apply %d on %s: %v", todo[i], l.id, err)
			}
		}
		if len(again) > 0 {
			c.t.Logf("%d commands retried after leadership moved from %s", len(again), l.id)
		}
		todo = again
	}
	for attempt := 0; ; attempt++ {
		err := c.leader().raft.Barrier(5 * time.Second).Error()
		if err == nil {
			return
		}
		if !retryable(err) || attempt == 5 {
			c.t.Fatalf("barrier: %v", err)
		}
	}
}

// converged waits until every running member has applied want commands
// with the same digest.
func (c *testCluster) converged(want uint64) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("all members at %d commands", want), 15*time.Second, func() bool {
		var digest uint64
		for i, n := range c.nodes {
			if n.raft == nil {
				continue
			}
			count, d, _ := n.fsm.state()
			if count != want || (i > 0 && digest != 0 && d != digest) {
				return false
			}
			digest = d
		}
		return true
	})
	var ref uint64
	for _, n := range c.nodes {
		if n.raft == nil {
			continue
		}
		_, d, _ := n.fsm.state()
		if ref != 0 && d != ref {
			c.t.Fatalf("digests differ: %x vs %x", d, ref)
		}
		ref = d
	}
}

func (c *testCluster) follower(not *testNode) *testNode {
	for _, n := range c.nodes {
		if n != not && n.raft != nil {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// checkStoreConsistent checks a stopped member's store on disk.
func checkStoreConsistent(t *testing.T, n *testNode) (last uint64) {
	t.Helper()
	s := openStore(t, filepath.Join(n.dir, "raftlog"))
	defer s.Close()
	first, _ := s.FirstIndex()
	last, _ = s.LastIndex()
	checkBounds(t, s, first, last)
	for i := first; i <= last; i++ {
		checkHas(t, s, i, nil)
	}
	current, err := s.GetUint64(keyCurrentTerm)
	if err != nil || current == 0 {
		t.Fatalf("%s: CurrentTerm %d, %v", n.id, current, err)
	}
	if term, _, ok, err := s.Vote(); err != nil || (ok && term > current) {
		t.Fatalf("%s: vote term %d > CurrentTerm %d (%v)", n.id, term, current, err)
	}
	return last
}

func TestRaftClusterOnStore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-member raft cluster")
	}
	c := startTestCluster(t)

	// 1. 200 commands reach everyone.
	c.apply(200, 0)
	c.converged(200)
	total := 200

	// 2. A follower stops; its store reopens intact; it restarts and
	// catches up from the leader's log.
	leader := c.leader()
	f := c.follower(leader)
	c.stop(f)
	fLast := checkStoreConsistent(t, f)
	if fLast < 200 {
		t.Fatalf("%s's log ends at %d, before the 200 commands", f.id, fLast)
	}
	c.apply(30, total)
	total += 30
	c.start(f, false)
	c.converged(uint64(total))
	if _, _, restores := f.fsm.state(); restores != 0 {
		t.Fatalf("%s caught up from a snapshot, want from the log", f.id)
	}

	// 3. It stops again; the leader snapshots and compacts its log past
	// the follower's end, so the follower must catch up by snapshot.
	c.stop(f)
	fLast = checkStoreConsistent(t, f)
	c.apply(100, total)
	total += 100
	leader = c.leader()
	if err := leader.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if first, _ := leader.store.FirstIndex(); first <= fLast {
		t.Fatalf("leader's log starts at %d, not past the follower's %d", first, fLast)
	}
	c.start(f, false)
	c.converged(uint64(total))
	if _, _, restores := f.fsm.state(); restores == 0 {
		t.Fatalf("%s caught up without installing a snapshot", f.id)
	}

	// 4. The leader stops; the others elect a leader (votes persisted in
	// this store) and go on; the old leader returns and catches up.
	old := c.leader()
	c.stop(old)
	checkStoreConsistent(t, old)
	if c.leader() == old {
		t.Fatal("stopped member still leader")
	}
	c.apply(50, total)
	total += 50
	c.start(old, false)
	c.converged(uint64(total))

	for _, n := range c.nodes {
		first, _ := n.store.FirstIndex()
		last, _ := n.store.LastIndex()
		checkBounds(t, n.store, first, last)
		t.Logf("%s: log [%d, %d], state %s", n.id, first, last, n.raft.State())
	}
}
