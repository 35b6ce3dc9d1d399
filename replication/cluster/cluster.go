package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/cluster/raftlog"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// Errors callers map to answers.
var (
	ErrNoLeader     = errors.New("cluster: no leader (election in progress or no quorum)")
	ErrNotLeader    = errors.New("cluster: this member is not the leader")
	ErrShutdown     = errors.New("cluster: shutting down")
	ErrBootstrapArg = errors.New("cluster: bad bootstrap configuration")
)

// errMaybeApplied marks a failed attempt that may still take effect: Raft
// had the entry when leadership was lost or it shut down, or a forwarded
// request went out and its answer never came back. Propose tries such a
// command again (the FSM takes a command proposed again as done once:
// pushed ops by their IDs, a portal create by its dossier ID and clock),
// and if it gives up, answers schema.ErrOutcomeUnknown rather than a
// refusal, which would tell the client that nothing was saved.
var errMaybeApplied = errors.New("it may have been carried out")

// maybeApplied is kind (ErrNotLeader, ErrNoLeader, ErrShutdown: what
// Propose decides its retry on) for an attempt that may still take
// effect; detail, if not nil, says what happened.
func maybeApplied(kind error, detail any) error {
	if detail == nil {
		return fmt.Errorf("%w (%w)", kind, errMaybeApplied)
	}
	return fmt.Errorf("%w (%w): %v", kind, errMaybeApplied, detail)
}

// Config configures one member.
type Config struct {
	Dir       string
	NodeID    string
	Advertise string // QUIC address the other members reach this one at
	Endpoint  *transport.Endpoint
	Logger    *slog.Logger
	Registry  *prometheus.Registry
	// Bootstrap is the initial configuration; used only when the data dir
	// has no Raft state, and ignored after.
	Bootstrap []raft.Server
	Catalog   *schema.Catalog
	Calendar  *schema.Calendar
	Wards     *schema.WardRegistry
	Now       func() time.Time

	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms (must be ≤ heartbeat)
	CommitTimeout      time.Duration // default 50ms
	SnapshotThreshold  uint64        // default 8192 entries
	SnapshotInterval   time.Duration // default 2m
	TrailingLogs       uint64        // default 10240
	MaxBatch           int           // commands per Raft entry, default 512
	EncryptionKey      []byte
	// MinFreeDisk is the free space below which this member takes no new
	// ops from wards and no blobs (0: never refuse). Raft's own writes
	// (log, snapshots, the FSM) are not refused: a member must apply the
	// log like its peers, and refusing appends is untested since the
	// pipeline deadlock it ran into was avoided by turning pipelining off
	// (docs/reliability.md, seeds 9100040 and 9200034).
	MinFreeDisk uint64

	// wrapLogs, when set (by tests, through export_test.go), wraps the
	// log store Raft writes to, so a test can make a member's appends
	// fail the way a failing disk would.
	wrapLogs func(raft.LogStore) raft.LogStore
}

// Cluster is one running member of the city cluster.
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	logs  *raftlog.Store
	st    *store.Store
	space *diskspace.Guard
	layer *streamLayer
	trans *raft.NetworkTransport
	fsm   *fsm
	m     *metrics
	clock *schema.Clock
	props chan *proposal
	quit  chan struct{}
	// raftDown closes once Raft has shut down: a batcher stops waiting
	// for its entry then, since Raft may never answer an entry it had
	// queued for the FSM.
	raftDown chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	fwd      *forwarder
	protos   map[string]ProtoHandler
	hub      *changeHub
	infos    map[string]func() ([]byte, error)
	wards    func(context.Context) (any, error)
	routes   []extraRoute

	ulidMu  sync.Mutex
	entropy *ulid.MonotonicEntropy
}

// ParseBootstrap parses "c1=127.0.0.1:7001,c2=...".
func ParseBootstrap(spec string) ([]raft.Server, error) {
	if spec == "" {
		return nil, nil
	}
	var out []raft.Server
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%w: %q is not ID=HOST:PORT", ErrBootstrapArg, part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBootstrapArg, part, err)
		}
		if seen[id] || seen[addr] {
			return nil, fmt.Errorf("%w: %q appears twice", ErrBootstrapArg, part)
		}
		seen[id], seen[addr] = true, true
		out = append(out, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	return out, nil
}

func (cfg *Config) defaults() {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Catalog == nil {
		cfg.Catalog = schema.DefaultCatalog()
	}
	if cfg.Calendar == nil {
		cfg.Calendar = schema.DefaultCalendar()
	}
	if cfg.Wards == nil {
		cfg.Wards = schema.DefaultWards()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = time.Second
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = time.Second
	}
	if cfg.LeaderLeaseTimeout == 0 {
		cfg.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = 50 * time.Millisecond
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 8192
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = 2 * time.Minute
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 10240
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 512
	}
}

// Open starts a member: stores, Raft, the batcher and the protocol
// handlers on the endpoint. The endpoint's Run must be started by the
// caller (before or after).
func Open(cfg Config) (*Cluster, error) {
	cfg.defaults()
	log := cfg.Logger.With("member", cfg.NodeID)
	if cfg.Endpoint.Identity().Node != cfg.NodeID || cfg.Endpoint.Identity().Role != schema.PeerCity {
		return nil, fmt.Errorf("cluster: the TLS certificate is for %s, want a city certificate for node %s", cfg.Endpoint.Identity(), cfg.NodeID)
	}
	advertise, err := net.ResolveUDPAddr("udp", cfg.Advertise)
	if err != nil {
		return nil, fmt.Errorf("cluster: advertise address %q: %w", cfg.Advertise, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	space := diskspace.New(cfg.Dir, cfg.MinFreeDisk)
	logs, err := raftlog.Open(raftlog.Options{Dir: filepath.Join(cfg.Dir, "raft"), Logger: log, EncryptionKey: cfg.EncryptionKey})
	if err != nil {
		return nil, cfg.rejoin(err)
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(cfg.Dir, "fsm"), Logger: log, Create: true, EncryptionKey: cfg.EncryptionKey,
		MemTableSize: fsmMemTable})
	if err != nil {
		logs.Close()
		return nil, cfg.rejoin(err)
	}
	hlog := raftLogger(log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "snapshots"), 3, hlog)
	if err != nil {
		st.Close()
		logs.Close()
		return nil, err
	}
	c := &Cluster{cfg: cfg, log: log, logs: logs, st: st, space: space, props: make(chan *proposal, 4*cfg.MaxBatch),
		quit: make(chan struct{}), raftDown: make(chan struct{}), entropy: ulid.Monotonic(rand.Reader, 0), protos: map[string]ProtoHandler{}, infos: map[string]func() ([]byte, error){}}
	c.m = newMetrics(cfg.Registry, func() *raft.Raft { return c.raft })
	cfg.Registry.MustRegister(c.space.Collectors()...)
	c.hub = newChangeHub()
	c.fsm = &fsm{st: st, log: log, m: c.m, notify: c.hub.notify, restored: c.hub.notifyAll}
	var floor schema.HLC
	if err := st.View(func(tx *store.Tx) error { var err error; floor, err = tx.HLCFloor(); return err }); err != nil {
		st.Close()
		logs.Close()
		return nil, err
	}
	c.clock = schema.NewClock(cfg.Now, floor, 0)
	c.layer = newStreamLayer(cfg.Endpoint, advertise, cfg.NodeID, log)
	c.fwd = newForwarder(c)
	cfg.Endpoint.Handle(transport.ALPNRaft, c.layer.handle)
	cfg.Endpoint.Handle(transport.ALPNSync, c.handleSync)
	// MaxRPCsInFlight 1 turns raft's pipelined replication off. In raft
	// v1.8 a pipeline deadlocks when a follower answers one append with
	// Success=false (its log store failed, or the read timed out because
	// it was paused or cut off for longer than Timeout) while new entries
	// are waiting: the response reader has stopped, the transport's decoder
	// blocks handing it the next answer, and the sender blocks handing the
	// decoder its next request. The leader then never sends that follower
	// another entry, and heartbeats (a separate path) keep it from calling
	// an election, so nothing notices (hashicorp/raft#612; seeds 9100040
	// and 9200034 in docs/reliability.md). Without the pipeline a failed
	// append is retried with backoff and logged. The cost is one append in
	// flight per follower, each carrying up to 64 entries of up to MaxBatch
	// commands (docs/benchmarks.md).
	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: c.layer, MaxPool: 4, MaxRPCsInFlight: 1, Timeout: 10 * time.Second, Logger: hlog,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = min(cfg.LeaderLeaseTimeout, cfg.HeartbeatTimeout)
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	// A leader that commits its own removal steps down and stays a
	// follower, as a removed follower does, instead of shutting its Raft
	// down: out of the configuration it calls no election, and if it is
	// added back (a removal whose answer was lost, undone) it takes part
	// again. Shut down, it ran on with no leader until restarted (chaos
	// seed 9800041, TestLeaderRemovedAndAddedBackCatchesUp).
	rc.ShutdownOnRemove = false
	// The FSM is on disk and remembers what it applied; restoring the last
	// snapshot at every start would only throw that away. Unless a restore
	// was cut short, or the FSM is behind the newest snapshot (raft would
	// resume after the snapshot's index and skip what lies between).
	rc.NoSnapshotRestoreOnStart = true
	var applied uint64
	if err := st.View(func(tx *store.Tx) error { var err error; applied, err = tx.Applied(); return err }); err != nil {
		c.closeStores()
		return nil, err
	}
	if metas, err := snaps.List(); err == nil && len(metas) > 0 && metas[0].Index > applied {
		log.Warn("fsm is behind the newest snapshot; restoring it at start", "applied", applied, "snapshot", metas[0].Index)
		rc.NoSnapshotRestoreOnStart = false
	}
	if st.Restoring() {
		log.Warn("a snapshot restore was cut short; restoring again at start")
		rc.NoSnapshotRestoreOnStart = false
	}
	rc.Logger = hlog

	has, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		c.closeStores()
		return nil, err
	}
	if !has && len(cfg.Bootstrap) > 0 {
		in := false
		for _, s := range cfg.Bootstrap {
			in = in || string(s.ID) == cfg.NodeID
		}
		if !in {
			c.closeStores()
			return nil, fmt.Errorf("%w: this member (%s) is not in --bootstrap", ErrBootstrapArg, cfg.NodeID)
		}
		if err := raft.BootstrapCluster(rc, logs, logs, snaps, c.trans, raft.Configuration{Servers: cfg.Bootstrap}); err != nil {
			c.closeStores()
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster", "members", len(cfg.Bootstrap))
	} else if has && len(cfg.Bootstrap) > 0 {
		log.Info("data dir has raft state; --bootstrap ignored")
	}
	var raftLogs raft.LogStore = logs
	if cfg.wrapLogs != nil {
		raftLogs = cfg.wrapLogs(logs)
	}
	r, err := raft.NewRaft(rc, c.fsm, raftLogs, logs, snaps, c.trans)
	if err != nil {
		c.closeStores()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	c.raft = r
	for i := 0; i < 4; i++ { // entries gather for the next append round while one is out
		c.wg.Add(1)
		go c.batcher()
	}
	c.wg.Add(1)
	go c.watchLeadership()
	return c, nil
}

// rejoin gives a damaged store's refusal a member's way to recover. A
// ward's (restore, `ward repair`, a new node) does not apply: a member's
// state is a copy of the city's, and the other members hand it a fresh
// one when it rejoins.
func (cfg Config) rejoin(err error) error {
	rec := fmt.Sprintf("This member's copy of the city is damaged; rejoin it to the cluster: "+
		"from the admin desk run `wardsync city remove --node %[1]s` against another member, "+
		"move %[2]s aside (keep it until the member has caught up), and start the member again "+
		"with an empty --data and `--join https://ANOTHER-MEMBER:PORT`: it receives a snapshot and the log from the others "+
		"(docs/operating-the-city-cluster.md, section 7). If no other member is healthy, see section 8 instead",
		cfg.NodeID, cfg.Dir)
	// The damage error itself, with the member's recovery: a wrapper
	// around it has its message made already. (It names the file, so
	// the wrapper's prefix is not missed.)
	var de *store.DamageError
	var le *store.LogDamageError
	switch {
	case errors.As(err, &de):
		d := *de
		d.Recovery = rec
		return &d
	case errors.As(err, &le):
		l := *le
		l.Recovery = rec
		return &l
	}
	return err
}

func (c *Cluster) closeStores() {
	c.st.Close()
	c.logs.Close()
}

// Close leaves Raft running state cleanly: it stops taking proposals,
// shuts Raft down (a leader steps down), waits for the batchers, then
// closes the stores. Idempotent. Raft goes down before the batchers are
// waited for: a batcher may be waiting on an entry that cannot commit
// (followers that answer heartbeats but refuse appends keep the leader
// in office) or that Raft will never answer, and raftDown, closed after
// the shutdown, is what ends that wait.
func (c *Cluster) Close() error {
	var err error
	c.once.Do(func() {
		close(c.quit)
		if c.raft != nil {
			err = c.raft.Shutdown().Error()
		}
		close(c.raftDown)
		c.wg.Wait()
		c.trans.Close()
		c.layer.Close()
		c.fwd.close()
		if e := c.st.Close(); err == nil {
			err = e
		}
		if e := c.logs.Close(); err == nil {
			err = e
		}
	})
	return err
}

// Store exposes the FSM's store for reads (and for the sync layer).
func (c *Cluster) Store() *store.Store { return c.st }

// DiskSpace is the guard of this member's data disk (--min-free-disk),
// for the blob store beside it.
func (c *Cluster) DiskSpace() *diskspace.Guard { return c.space }

// DiskLow is the *diskspace.LowError new ward data gets here now, or nil.
func (c *Cluster) DiskLow() error { return c.space.Check() }

// Registry is the member's Prometheus registry.
func (c *Cluster) Registry() *prometheus.Registry { return c.cfg.Registry }

// SetWards installs what GET /v1/wards answers (the sync layer's view of
// every ward). Call before serving.
func (c *Cluster) SetWards(f func(context.Context) (any, error)) { c.wards = f }

// Raft exposes the raft instance (status, tests).
func (c *Cluster) Raft() *raft.Raft { return c.raft }

// NodeID is this member's ID.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// Leader returns the leader's ID and QUIC address, empty if unknown.
func (c *Cluster) Leader() (id, addr string) {
	a, i := c.raft.LeaderWithID()
	return string(i), string(a)
}

// Voters counts the voting members of the current configuration, for
// majority decisions outside Raft (blob copies).
func (c *Cluster) Voters() (int, error) {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			n++
		}
	}
	return n, nil
}

// IsLeader reports whether this member leads.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// watchLeadership initializes the city origin the first time this member
// leads a cluster that has none.
func (c *Cluster) watchLeadership() {
	defer c.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		if !c.IsLeader() {
			continue
		}
		initialized := false
		c.st.View(func(tx *store.Tx) error { _, err := tx.Identity(); initialized = err == nil; return nil })
		if initialized {
			return
		}
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = c.propose(ctx, Command{Kind: KindInit, Init: &InitCmd{Node: CityOrigin, PrivateKey: key}})
		cancel()
		if err == nil {
			c.log.Info("city origin initialized")
		}
	}
}

// fsmMemTable is the city store's memtable size. Badger caps a transaction
// at ~15% of it (~9.6 MB here), and one Raft entry must fit one FSM write.
const fsmMemTable = 64 << 20

// maxEntryBytes caps what the batcher puts in one Raft entry (the FSM
// writes each op ~3 times: the op, its indexes, the refolded dossier).
const maxEntryBytes = 2 << 20

// MaxPushBytes is the largest batch of ops a ward may push at once.
const MaxPushBytes = maxEntryBytes

// size estimates a command's bytes in an entry.
func (c *Command) size() int {
	n := 256
	for i := range c.Ops {
		n += len(c.Ops[i].Body) + 200
	}
	return n
}

// proposal is one command waiting for a Raft entry.
type proposal struct {
	cmd  Command
	res  Result
	err  error
	done chan struct{}
}

// propose commits one command through the leader's batcher. It must run
// on the leader.
func (c *Cluster) propose(ctx context.Context, cmd Command) (Result, error) {
	p := &proposal{cmd: cmd, done: make(chan struct{})}
	start := time.Now()
	select {
	case c.props <- p:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-c.quit:
		return Result{}, ErrShutdown
	}
	select {
	case <-p.done:
	case <-c.quit:
		return Result{}, maybeApplied(ErrShutdown, nil)
	}
	c.m.commitLatency.Observe(time.Since(start).Seconds())
	return p.res, p.err
}

// batcher gathers the proposals waiting at this moment into one Raft entry
// (group commit at the consensus level): under load, hundreds of ops share
// one round of AppendEntries and one fsync on every member.
func (c *Cluster) batcher() {
	defer c.wg.Done()
	batch := make([]*proposal, 0, c.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-c.props:
			batch = append(batch, p)
		case <-c.quit:
			return
		}
		size := batch[0].cmd.size()
	gather:
		for len(batch) < c.cfg.MaxBatch && size < maxEntryBytes {
			select {
			case p := <-c.props:
				batch = append(batch, p)
				size += p.cmd.size()
			default:
				break gather
			}
		}
		c.commitBatch(batch)
	}
}

func (c *Cluster) commitBatch(batch []*proposal) {
	finish := func(err error) {
		for _, p := range batch {
			p.err = err
			close(p.done)
		}
	}
	cmds := make([]Command, len(batch))
	for i, p := range batch {
		cmds[i] = p.cmd
	}
	data, err := EncodeEntry(cmds)
	if err != nil {
		finish(err)
		return
	}
	f := c.raft.Apply(data, 10*time.Second)
	answered := make(chan error, 1)
	go func() { answered <- f.Error() }()
	select {
	case err = <-answered:
	case <-c.raftDown:
		err = raft.ErrRaftShutdown
	}
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
			errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrAbortedByRestore):
			// Refused before the entry was appended: try the (next) leader.
			err = fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, raft.ErrLeadershipLost):
			// Appended here, maybe on others: the next leader may commit it.
			err = maybeApplied(ErrNotLeader, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			err = maybeApplied(ErrShutdown, nil)
		default:
			err = fmt.Errorf("%w: %v", errMaybeApplied, err)
		}
		finish(err)
		return
	}
	res, ok := f.Response().(*entryResult)
	if !ok || res.Err != nil || len(res.Results) != len(batch) {
		finish(fmt.Errorf("cluster: entry %d was not applied as proposed (%w)", f.Index(), errMaybeApplied))
		return
	}
	for i, p := range batch {
		p.res = res.Results[i]
		close(p.done)
	}
}

// Propose commits a command and returns the FSM's result, from any member:
// a follower forwards it to the leader over QUIC. It retries while an
// election runs, until ctx ends.
func (c *Cluster) Propose(ctx context.Context, cmd Command) (Result, error) {
	var maybe error // the first attempt that may still take effect
	for attempt := 0; ; attempt++ {
		var res Result
		var err error
		if c.IsLeader() {
			res, err = c.propose(ctx, cmd)
		} else {
			res, err = c.fwd.propose(ctx, cmd)
		}
		if err == nil {
			return res, nil
		}
		if maybe == nil && errors.Is(err, errMaybeApplied) {
			maybe = err
		}
		if !(errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)) {
			return Result{}, outcome(err, maybe)
		}
		select {
		case <-ctx.Done():
			return Result{}, outcome(fmt.Errorf("%w (last: %v)", ctx.Err(), err), maybe)
		case <-c.quit:
			return Result{}, outcome(ErrShutdown, maybe)
		case <-time.After(min(50*time.Millisecond*time.Duration(attempt+1), time.Second)):
		}
	}
}

// outcome is Propose's answer when it gives up with err: a refusal,
// unless an attempt (maybe) may still take effect; then nobody knows.
func outcome(err, maybe error) error {
	if maybe == nil {
		return err
	}
	return fmt.Errorf("%w: %v, after an attempt that may still take effect (%v)", schema.ErrOutcomeUnknown, err, maybe)
}

// NewDossierID mints a dossier ID at this member (sortable, unique).
func (c *Cluster) NewDossierID() string {
	c.ulidMu.Lock()
	defer c.ulidMu.Unlock()
	return ulid.MustNew(ulid.Timestamp(c.cfg.Now()), c.entropy).String()
}

// raftLogger is hashicorp/raft's logger, writing into slog.
func raftLogger(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{log}, DisableTime: true})
}

// slogWriter routes hclog's text output (raft's logs) into slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(trimNL(p)))
	level := slog.LevelWarn
	for prefix, l := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[INFO]": slog.LevelInfo, "[DEBUG]": slog.LevelDebug} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			line, level = strings.TrimSpace(rest), l
			break
		}
	}
	w.l.Log(context.Background(), level, line, "component", "raft")
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

var _ io.Writer = slogWriter{}

func resolveUDP(addr string) (*net.UDPAddr, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, err
	}
	return net.ResolveUDPAddr("udp", addr)
}

// Recover rewrites a stopped member's Raft configuration to servers, for
// disaster recovery when a majority is lost for good (hashicorp/raft's
// RecoverCluster, as Consul's peers.json does). Every surviving member that
// will be in the new configuration must be recovered with the same list
// before any of them starts. It does not lose committed entries that this
// member holds; entries only a lost majority held are gone.
func Recover(dir, nodeID string, servers []raft.Server, log *slog.Logger, encryptionKey []byte) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	logs, err := raftlog.Open(raftlog.Options{Dir: filepath.Join(dir, "raft"), Logger: log, EncryptionKey: encryptionKey})
	if err != nil {
		return Config{NodeID: nodeID, Dir: dir}.rejoin(err)
	}
	defer logs.Close()
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "fsm"), Logger: log, EncryptionKey: encryptionKey})
	if err != nil {
		return Config{NodeID: nodeID, Dir: dir}.rejoin(err)
	}
	defer st.Close()
	hlog := raftLogger(log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "snapshots"), 3, hlog)
	if err != nil {
		return err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(nodeID)
	rc.Logger = hlog
	rc.NoSnapshotRestoreOnStart = true
	_, trans := raft.NewInmemTransport(raft.ServerAddress("recover"))
	f := &fsm{st: st, log: log}
	if err := raft.RecoverCluster(rc, f, logs, logs, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
		return fmt.Errorf("cluster: recover: %w", err)
	}
	return nil
}
