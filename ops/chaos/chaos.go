package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wardsync/wardsync/replication/faultproxy"
)

// Config is what one chaos run runs with. Bin and Dir are required.
type Config struct {
	// Bin is the wardsync binary every process and ops command runs.
	Bin string
	// Dir is the run's work dir: certificates (tls/), data (data/), every
	// process's log (logs/NAME.log) and the run's timeline (events.log).
	// Created if missing; it must not hold an earlier run.
	Dir string
	// Seed drives the fault schedule and the clients' choices. The same
	// seed gives the same schedule (the same faults, at the same offsets,
	// on the same picks); process timing still varies from run to run.
	Seed uint64
	// Duration is how long faults are injected (default 30s). Setup,
	// healing and the checks come on top (about 10 s more).
	Duration time.Duration
	// Timeout bounds the waits after healing: processes up, a pending
	// handback released, every replica of a ward converging (default 90s).
	// Not converging in time is a violation.
	Timeout time.Duration
	// Clients is the number of client goroutines per ward office node
	// (default 2: a clerk and a head). The backup office has one head per
	// ward it may take, and one portal client submits at the city.
	Clients int
	// NoDiskFull leaves out the small disks and the disk-full faults.
	NoDiskFull bool
	// Slot and Slots: a run going on at the same time as others (Slots of
	// them, this one numbered Slot from 0) takes its loopback ports from a
	// share of the range of its own. Zero: the whole range.
	Slot, Slots int
	// Out gets a line per phase and, at the end, the run's summary and any
	// violation with its replay command (nil: discarded).
	Out io.Writer
	// Log gets the driver's diagnostics (nil: discarded).
	Log *slog.Logger
}

// DefaultDuration is the fault phase of a run unless Config.Duration says.
const DefaultDuration = 30 * time.Second

func (c *Config) defaults() error {
	if c.Bin == "" || c.Dir == "" {
		return errors.New("chaos: Config.Bin and Config.Dir are required")
	}
	if _, err := os.Stat(c.Bin); err != nil {
		return fmt.Errorf("chaos: the wardsync binary: %w", err)
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Timeout <= 0 {
		c.Timeout = 90 * time.Second
	}
	if c.Clients <= 0 {
		c.Clients = 2
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ReplayCommand is the command that runs seed's schedule again.
func ReplayCommand(seed uint64, duration time.Duration) string {
	cmd := fmt.Sprintf("scripts/chaos --seed %d --runs 1", seed)
	if duration > 0 && duration != DefaultDuration {
		cmd += " --duration " + duration.String()
	}
	return cmd
}

// The run's topology.
var (
	wardCodes   = []string{"HCM001", "HCM002", "HCM003", "HCM004"}
	backupWards = []string{"HCM001", "HCM002"} // the wards the backup certificate names
)

const (
	backupID = "bk"
	adminID  = "it-chaos"
	portalID = "portal-chaos"
	// spareMembers is how many members may be replaced in one run.
	spareMembers = 2
	// raftTimeout is the members' heartbeat and election timeout (as in
	// cmd/wardsync's city tests): a pause of a few seconds outlasts it.
	raftTimeout = 400 * time.Millisecond
)

func wardNodeID(ward string) string {
	return "w" + strings.TrimLeft(strings.TrimPrefix(ward, "HCM"), "0")
}

// member is one city member of the run (retired once replaced).
type member struct {
	id    string
	quic  string // its own QUIC address
	proxy *meshProxy
	p     *proc
	disk  string // its small disk's mount point, if it has one
}

// office is a ward office's node or the backup office's node.
type office struct {
	id     string
	ward   string // "" for the backup office
	p      *proc
	token  string        // the admin's
	disk   string        // its small disk's mount point, if it has one
	offset time.Duration // --clock-offset of its current start

	mu    sync.Mutex
	links []*link // one per member slot
}

// link is an office's fault proxy to the member in one slot.
type link struct {
	listen string
	p      *faultproxy.Proxy
	done   chan struct{}
	cuts   int // faults cutting it
	lossy  int // faults making it lossy
}

var lossyFaults = faultproxy.Faults{Drop: 0.1, Reorder: 0.05, Duplicate: 0.02, Jitter: 20 * time.Millisecond}

// apply sets the link's proxy from its fault counts.
func (l *link) apply() {
	f := faultproxy.Faults{}
	if l.lossy > 0 {
		f = lossyFaults
	}
	f.Cut = l.cuts > 0
	l.p.Set(f)
}

type driver struct {
	cfg    Config
	log    *slog.Logger
	t0     time.Time
	dir    string
	tlsDir string
	logDir string
	ports  *ports
	mesh   *mesh

	mu       sync.Mutex
	members  []*member // every member ever started
	slots    [3]*member
	spares   []string // member IDs with certificates, not used yet
	offices  map[string]*office
	order    []string // office IDs: w1..w4, bk
	disks    []string // mounted small disks, to unmount
	admin    *http.Client
	portal   *http.Client
	events   *os.File
	sum      *Summary
	windows  []diskWindow
	notes    []string
	restarts map[string]*restartState

	led   *ledger
	lease *leaseLog

	ctx       context.Context // the run's: restarts and heals use it
	replaceMu sync.Mutex      // one member replacement at a time
	leaseMu   map[string]*sync.Mutex
}

func (d *driver) runCtx() context.Context { return d.ctx }

// Run runs one chaos schedule: it starts the city, the offices and their
// proxies, runs the clients while the schedule injects faults for
// cfg.Duration, heals everything and checks. The Summary says what was
// done and lists every violation; the error is non-nil for a violation
// (it names the replay command) or when the run could not be carried out.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if err := cfg.defaults(); err != nil {
		return Summary{}, err
	}
	d := &driver{cfg: cfg, log: cfg.Log.With("seed", cfg.Seed), t0: time.Now(), dir: cfg.Dir,
		ports: newPorts(cfg.Slot, cfg.Slots), mesh: newMesh(), offices: map[string]*office{}, restarts: map[string]*restartState{},
		sum: newSummary(cfg.Seed, cfg.Duration)}
	d.tlsDir = filepath.Join(cfg.Dir, "tls")
	d.logDir = filepath.Join(cfg.Dir, "logs")
	d.led = newLedger()
	d.ctx = ctx
	d.leaseMu = map[string]*sync.Mutex{}
	for _, w := range backupWards {
		d.leaseMu[w] = &sync.Mutex{}
	}
	d.lease = newLeaseLog(d.t0)
	err := d.run(ctx)
	d.teardown()
	s := d.summary()
	if err != nil {
		s.HarnessError = err.Error()
		fmt.Fprintf(cfg.Out, "seed %d: the run could not be carried out: %v (work dir %s)\n", cfg.Seed, err, cfg.Dir)
		return s, fmt.Errorf("chaos seed %d: %w (work dir %s; replay: %s)", cfg.Seed, err, cfg.Dir, s.Replay)
	}
	s.WriteRun(cfg.Out)
	if len(s.Violations) > 0 {
		return s, fmt.Errorf("chaos seed %d: %d violation(s), first: %s (replay: %s)", cfg.Seed, len(s.Violations), s.Violations[0], s.Replay)
	}
	return s, nil
}

func (d *driver) summary() Summary {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := *d.sum
	s.Took = time.Since(d.t0).Round(100 * time.Millisecond)
	s.Dir = d.dir
	s.Replay = ReplayCommand(d.cfg.Seed, d.cfg.Duration)
	d.led.fill(&s)
	s.LeaseOps = d.lease.count()
	s.Notes = append([]string(nil), d.notes...)
	return s
}

// at is the time since the run started, for the timeline.
func (d *driver) at() string { return fmt.Sprintf("%6.1fs", time.Since(d.t0).Seconds()) }

// event writes a line to the timeline (events.log) and the debug log.
func (d *driver) event(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	d.mu.Lock()
	if d.events != nil {
		fmt.Fprintf(d.events, "[%s] %s\n", d.at(), line)
	}
	d.mu.Unlock()
	d.log.Debug(line)
}

// violation records a broken invariant.
func (d *driver) violation(format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	if d.ctx.Err() != nil {
		// The run was interrupted: what fails now says nothing.
		d.event("(interrupted) %s", v)
		return
	}
	d.mu.Lock()
	d.sum.Violations = append(d.sum.Violations, v)
	d.mu.Unlock()
	d.event("VIOLATION: %s", v)
	d.log.Warn("violation", "what", v)
}

// note records something worth knowing that is not a violation.
func (d *driver) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.notes = append(d.notes, n)
	d.mu.Unlock()
	d.event("note: %s", n)
}

func (d *driver) say(format string, args ...any) {
	fmt.Fprintf(d.cfg.Out, "seed %d [%s] %s\n", d.cfg.Seed, strings.TrimSpace(d.at()), fmt.Sprintf(format, args...))
}

func (d *driver) run(ctx context.Context) error {
	for _, dir := range []string{d.dir, d.tlsDir, d.logDir, filepath.Join(d.dir, "data")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(d.dir, "data")); len(entries) > 0 {
		return fmt.Errorf("%s holds an earlier run: use an empty dir", d.dir)
	}
	f, err := os.Create(filepath.Join(d.dir, "events.log"))
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.events = f
	d.mu.Unlock()
	sched := makeSchedule(d.cfg.Seed, d.cfg.Duration)
	d.event("seed %d, %d faults scheduled over %s; replay: %s", d.cfg.Seed, len(sched), d.cfg.Duration, ReplayCommand(d.cfg.Seed, d.cfg.Duration))
	for _, ev := range sched {
		d.event("  schedule: at %5.1fs %s for %s (pick %d)", ev.At.Seconds(), ev.Kind, ev.Dur.Round(100*time.Millisecond), ev.Pick%1000)
	}

	if err := d.setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	d.say("up: 3 city members, wards %s, backup office %s; faults for %s", strings.Join(wardCodes, " "), backupID, d.cfg.Duration)

	runCtx, stopRun := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stopRun()
		bg.Wait()
	}()
	bg.Go(func() { d.supervise(runCtx) })
	clientsCtx, stopClients := context.WithCancel(runCtx)
	defer stopClients()
	var clients sync.WaitGroup
	d.startClients(clientsCtx, &clients)
	readerCtx, stopReader := context.WithCancel(runCtx)
	defer stopReader()
	var reader sync.WaitGroup
	reader.Go(func() { d.leaseReader(readerCtx) })

	// The faults: each event waits for its time, injects, holds, heals.
	faultCtx, healNow := context.WithCancel(runCtx)
	defer healNow()
	var faults sync.WaitGroup
	start := time.Now()
	for _, ev := range sched {
		faults.Go(func() { d.runEvent(faultCtx, start, ev) })
	}
	select {
	case <-time.After(d.cfg.Duration):
	case <-ctx.Done():
	}
	stopClients()
	clients.Wait()
	healNow()
	faults.Wait()
	d.say("faults done: %s; healing", d.faultLine())
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := d.healAll(runCtx); err != nil {
		return err
	}
	stopReader()
	reader.Wait()
	d.check(runCtx)
	return ctx.Err() // interrupted: the checks said nothing
}

func (d *driver) faultLine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d.sum.Faults)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, d.sum.Faults[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// wardsync runs the binary and returns its stdout (stderr on failure).
func (d *driver) wardsync(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.cfg.Bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("wardsync %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// ---- setup ----

func (d *driver) setup(ctx context.Context) error {
	ca := filepath.Join(d.dir, "ca")
	if _, err := d.wardsync(ctx, "ops", "ca", "init", "--out", ca, "--name", "wardsync chaos CA"); err != nil {
		return err
	}
	issue := func(args ...string) error {
		_, err := d.wardsync(ctx, append([]string{"ops", "cert", "issue", "--ca", ca}, args...)...)
		return err
	}
	var ids []string
	for i := range 3 + spareMembers {
		ids = append(ids, fmt.Sprintf("c%d", i+1))
	}
	for _, id := range ids {
		if err := issue("--role", "city", "--node", id, "--ip", "127.0.0.1", "--out", filepath.Join(d.tlsDir, id)); err != nil {
			return err
		}
	}
	d.spares = ids[3:]
	if err := issue("--role", "admin", "--node", adminID, "--out", filepath.Join(d.tlsDir, "admin")); err != nil {
		return err
	}
	if err := issue("--role", "portal", "--node", portalID, "--out", filepath.Join(d.tlsDir, "portal")); err != nil {
		return err
	}
	for _, w := range wardCodes {
		id := wardNodeID(w)
		if err := issue("--role", "ward", "--node", id, "--ward", w, "--out", filepath.Join(d.tlsDir, id)); err != nil {
			return err
		}
	}
	bargs := []string{"--role", "backup", "--node", backupID, "--out", filepath.Join(d.tlsDir, backupID)}
	for _, w := range backupWards {
		bargs = append(bargs, "--ward", w)
	}
	if err := issue(bargs...); err != nil {
		return err
	}
	var err error
	if d.admin, err = cityHTTP(filepath.Join(d.tlsDir, "admin"), 10*time.Second); err != nil {
		return err
	}
	if d.portal, err = cityHTTP(filepath.Join(d.tlsDir, "portal"), 8*time.Second); err != nil {
		return err
	}

	// Disk-full targets: one ward's and one member's data dir on a small
	// disk of its own, chosen by the seed.
	pick := rand.New(rand.NewPCG(d.cfg.Seed, 0x746d7066))
	diskWard, diskMember := wardNodeID(wardCodes[pick.IntN(len(wardCodes))]), ids[pick.IntN(3)]
	disksOK := d.disksAvailable()

	// The members: each behind its mesh proxy, bootstrapped with the
	// proxies' addresses, so all member ↔ member traffic crosses them.
	var boot []string
	for i := range 3 {
		m, err := d.newMember(ids[i])
		if err != nil {
			return err
		}
		d.slots[i] = m
		boot = append(boot, m.id+"="+m.proxy.Addr())
	}
	for _, m := range d.slots {
		if disksOK && m.id == diskMember {
			if m.disk, err = d.mountDisk(d.diskMount(m.id), diskSize); err != nil {
				return err
			}
		}
		m.p.args = d.memberArgs(m, "--bootstrap", strings.Join(boot, ","))
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, m := range d.slots {
		wg.Go(func() { errs[i] = m.p.start(ctx, d.cfg.Bin, d.cfg.Timeout) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if _, err := d.waitLeader(ctx, d.cfg.Timeout); err != nil {
		return err
	}

	// The offices: four ward offices and the backup office, each linked
	// to every member through its own fault proxies.
	for _, w := range append(slices.Clone(wardCodes), "") {
		o := &office{id: backupID, ward: w}
		if w != "" {
			o.id = wardNodeID(w)
		}
		d.offices[o.id] = o
		d.order = append(d.order, o.id)
		if disksOK && o.id == diskWard {
			if o.disk, err = d.mountDisk(d.diskMount(o.id), diskSize); err != nil {
				return err
			}
		}
		data := d.officeData(o.id)
		args := []string{"ward", "init", "--data", data, "--ward", w, "--node", o.id}
		if w == "" {
			args = []string{"backup-office", "init", "--data", data, "--node", o.id}
		}
		out, err := d.wardsync(ctx, append(args, "--json")...)
		if err != nil {
			return err
		}
		var res struct {
			AdminToken string `json:"admin_token"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.AdminToken == "" {
			return fmt.Errorf("%s init: no admin token in %q", o.id, out)
		}
		o.token = res.AdminToken
		for slot, m := range d.slots {
			l := &link{}
			if l.listen, err = d.ports.addr(); err != nil {
				return err
			}
			if err := d.openLink(ctx, o, l, m, slot); err != nil {
				return err
			}
			o.links = append(o.links, l)
		}
		port, err := d.ports.next()
		if err != nil {
			return err
		}
		o.p = &proc{name: o.id, log: logPath(d.logDir, o.id), url: fmt.Sprintf("http://127.0.0.1:%d", port)}
		o.p.args = d.officeArgs(o)
	}
	errs = make([]error, len(d.order))
	for i, id := range d.order {
		o := d.offices[id]
		wg.Go(func() { errs[i] = o.p.start(ctx, d.cfg.Bin, d.cfg.Timeout) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := d.addOfficials(ctx); err != nil {
		return err
	}
	// Every office linked once: the city knows each node (a failover to
	// a node it has never seen is refused).
	for _, id := range d.order {
		o := d.offices[id]
		admin := d.officeAPI(o, o.token)
		err := d.eventually(ctx, o.id+" linked to the city", d.cfg.Timeout, func() error {
			var st struct {
				Connected bool `json:"connected"`
			}
			if err := admin.getJSON(ctx, "/v1/sync/status", &st); err != nil {
				return err
			}
			if !st.Connected {
				return errors.New("not connected")
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	d.event("setup done: members %s (disk-full member %s), offices %s (disk-full ward %s; small disks: %v)",
		strings.Join(ids[:3], " "), diskMember, strings.Join(d.order, " "), diskWard, disksOK)
	return nil
}

// dataDir is node id's data dir: data/ID, or data/ID.disk/data for the
// nodes whose data lives on a small disk (mounted at data/ID.disk: a data
// dir may not be a mount point, init renames it into place).
func (d *driver) dataDir(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if slices.Contains(d.disks, d.diskMount(id)) {
		return filepath.Join(d.diskMount(id), "data")
	}
	return filepath.Join(d.dir, "data", id)
}

func (d *driver) diskMount(id string) string  { return filepath.Join(d.dir, "data", id+".disk") }
func (d *driver) memberData(id string) string { return d.dataDir(id) }
func (d *driver) officeData(id string) string { return d.dataDir(id) }

// newMember prepares member id: its QUIC and API ports and its mesh proxy.
func (d *driver) newMember(id string) (*member, error) {
	quic, err := d.ports.addr()
	if err != nil {
		return nil, err
	}
	if err := d.mesh.register(id, quic); err != nil {
		return nil, err
	}
	// A port found free a moment ago can be taken by the time the proxy
	// binds it (seen once, at the start of a campaign: seed 9800002), so
	// a lost race draws another port instead of failing the run.
	var mp *meshProxy
	for range 5 {
		var listen string
		if listen, err = d.ports.addr(); err != nil {
			return nil, err
		}
		if mp, err = newMeshProxy(d.mesh, id, listen, quic, d.log); !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		d.log.Warn("chaos: a member's mesh proxy lost its port; drawing another", "member", id, "err", err)
	}
	if err != nil {
		return nil, err
	}
	port, err := d.ports.next()
	if err != nil {
		mp.Close()
		return nil, err
	}
	m := &member{id: id, quic: quic, proxy: mp,
		p: &proc{name: id, log: logPath(d.logDir, id), url: fmt.Sprintf("https://127.0.0.1:%d", port)}}
	d.mu.Lock()
	d.members = append(d.members, m)
	d.mu.Unlock()
	return m, nil
}

// smallDiskReserve is --min-free-disk on the nodes with a small disk: the
// default (256 MiB) is more than the whole disk. The faults fill the disk
// at once, so the reserve's size matters less than that there is one.
const smallDiskReserve = "16777216"

func (d *driver) memberArgs(m *member, extra ...string) []string {
	if m.disk != "" {
		extra = append([]string{"--min-free-disk", smallDiskReserve}, extra...)
	}
	return append([]string{"city", "run", "--data", d.memberData(m.id), "--node", m.id,
		"--quic", m.quic, "--advertise", m.proxy.Addr(), "--http", strings.TrimPrefix(m.p.url, "https://"),
		"--tls", filepath.Join(d.tlsDir, m.id),
		"--heartbeat-timeout", raftTimeout.String(), "--election-timeout", raftTimeout.String(),
		"--snapshot-threshold", "200", "--trailing-logs", "50", "--snapshot-interval", "1s",
		"--blob-repair-interval", "2s", "--log-level", "info"}, extra...)
}

func (d *driver) officeArgs(o *office) []string {
	var city []string
	first := slices.Index(d.order, o.id)
	for i := range o.links {
		// Each office tries a different member first.
		city = append(city, o.links[(i+first)%len(o.links)].listen)
	}
	cmd := []string{"ward", "run"}
	if o.ward == "" {
		cmd = []string{"backup-office", "run"}
	}
	args := append(cmd, "--data", d.officeData(o.id), "--http", strings.TrimPrefix(o.p.url, "http://"),
		"--city", strings.Join(city, ","), "--tls", filepath.Join(d.tlsDir, o.id), "--quic", "127.0.0.1:0",
		"--link-timeout", "4s", "--log-level", "info")
	if o.offset != 0 {
		args = append(args, "--clock-offset", o.offset.String())
	}
	if o.disk != "" {
		args = append(args, "--min-free-disk", smallDiskReserve)
	}
	return args
}

// openLink starts the fault proxy l of office o to member m (slot slot).
func (d *driver) openLink(ctx context.Context, o *office, l *link, m *member, slot int) error {
	var p *faultproxy.Proxy
	var err error
	// The listen port was just closed (a replaced member's link): it may
	// take a moment to be free again.
	for range 50 {
		if p, err = faultproxy.New(l.listen, m.quic, int64(d.cfg.Seed>>1)+int64(slot*16+len(o.id))+1, nil); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("fault proxy %s → %s: %w", o.id, m.id, err)
	}
	l.p, l.done = p, make(chan struct{})
	done := l.done
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	l.apply()
	return nil
}

func (d *driver) addOfficials(ctx context.Context) error {
	for _, id := range d.order {
		o := d.offices[id]
		admin := d.officeAPI(o, o.token)
		// A ward office: clerks and heads in turn (a head also settles
		// conflicts); the backup office: a head for each ward it may take.
		var roles []string
		for i := range d.cfg.Clients {
			roles = append(roles, [...]string{"clerk", "head"}[i%2])
		}
		if o.ward == "" {
			roles = nil
			for range backupWards {
				roles = append(roles, "head")
			}
		}
		for i, role := range roles {
			oid := fmt.Sprintf("%s-%d", role, i+1)
			r, err := admin.do(ctx, "POST", "/v1/officials", map[string]string{"id": oid, "name": "Cán bộ " + oid, "role": role})
			if err != nil {
				return err
			}
			var out struct {
				Token string `json:"token"`
			}
			if r.code != http.StatusCreated || json.Unmarshal(r.body, &out) != nil || out.Token == "" {
				return fmt.Errorf("%s: POST /v1/officials %s: HTTP %d %s", o.id, oid, r.code, r.body)
			}
			d.led.addOfficial(o.id, official{id: oid, role: role, token: out.Token})
		}
	}
	return nil
}

// officeAPI is a client of office o's API as the official with token.
func (d *driver) officeAPI(o *office, token string) *apiClient {
	return &apiClient{base: func() string { return o.p.url }, token: token, hc: officeHTTP(8 * time.Second)}
}

// cityAPI is a client of member m's API with the admin certificate.
func (d *driver) cityAPI(m *member) *apiClient {
	return &apiClient{base: func() string { return m.p.url }, hc: d.admin}
}

// currentMembers returns the members in the slots now.
func (d *driver) currentMembers() []*member {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.slots[:])
}

func (d *driver) allProcs() []*proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*proc
	for _, m := range d.members {
		out = append(out, m.p)
	}
	for _, id := range d.order {
		if p := d.offices[id].p; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// leader asks the members who leads (the first answer naming one wins).
func (d *driver) leader(ctx context.Context) (string, error) {
	var last error = errors.New("no member answered")
	for _, m := range d.currentMembers() {
		if !m.p.running() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var v struct {
			Leader string `json:"leader"`
		}
		err := d.cityAPI(m).getJSON(cctx, "/v1/cluster", &v)
		cancel()
		if err == nil && v.Leader != "" {
			return v.Leader, nil
		}
		if err == nil {
			err = fmt.Errorf("%s names no leader", m.id)
		}
		last = err
	}
	return "", last
}

func (d *driver) waitLeader(ctx context.Context, within time.Duration) (string, error) {
	var l string
	err := d.eventually(ctx, "a city leader", within, func() error {
		var err error
		l, err = d.leader(ctx)
		return err
	})
	return l, err
}

// eventually calls f until it returns nil or within has passed.
func (d *driver) eventually(ctx context.Context, what string, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s: %w", what, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ---- small disks ----

// The disk-full targets get a small disk of their own: an ext4 file system
// in an image file, mounted through a loop device. Not a tmpfs: on a tmpfs,
// touching a hole of a memory-mapped sparse file allocates memory, and
// badger maps its logs sparse (hundreds of MB), so after a crash the node's
// start-up log check (which reads those logs through a mapping) fills a
// tmpfs by itself. An ext4 file system behaves like an office's disk.

// diskSize is each small disk's image size (about 115 MiB usable).
const diskSize = 128 << 20

func (d *driver) disksAvailable() bool {
	why := ""
	switch {
	case d.cfg.NoDiskFull:
		why = "disabled (NoDiskFull)"
	case os.Geteuid() != 0:
		why = "skipped: needs root (mkfs.ext4, mount -o loop)"
	default:
		if _, err := exec.LookPath("mkfs.ext4"); err != nil {
			why = "skipped: no mkfs.ext4"
			break
		}
		probe := filepath.Join(d.dir, "data", "probe.disk")
		dir, err := d.mountDisk(probe, 8<<20)
		if err != nil {
			why = "skipped: " + err.Error()
			break
		}
		d.unmount(dir)
	}
	if why != "" {
		d.skip(KindDiskFullWard, why)
		d.skip(KindDiskFullMember, why)
		return false
	}
	return true
}

func (d *driver) skip(kind, why string) {
	d.mu.Lock()
	d.sum.Skipped[kind] = why
	d.mu.Unlock()
}

// mountDisk makes a size-byte ext4 image (dir.img) and mounts it on dir.
func (d *driver) mountDisk(dir string, size int64) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	img := dir + ".img"
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		return "", err
	}
	// No blocks reserved for root: the nodes run as root here.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		os.Remove(img)
		return "", fmt.Errorf("mkfs.ext4 %s: %v %s", img, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		os.Remove(img)
		return "", fmt.Errorf("mount -o loop %s: %v %s", img, err, strings.TrimSpace(string(out)))
	}
	d.mu.Lock()
	d.disks = append(d.disks, dir)
	d.mu.Unlock()
	return dir, nil
}

// unmount unmounts a small disk (lazily if it is busy) and removes its image.
func (d *driver) unmount(dir string) {
	if err := exec.Command("umount", dir).Run(); err != nil {
		_ = exec.Command("umount", "-l", dir).Run()
	}
	os.Remove(dir + ".img")
	os.Remove(dir) // the mount point, if empty
	d.mu.Lock()
	d.disks = slices.DeleteFunc(d.disks, func(x string) bool { return x == dir })
	d.mu.Unlock()
}

// ---- teardown ----

func (d *driver) teardown() {
	var wg sync.WaitGroup
	for _, p := range d.allProcs() {
		wg.Go(func() { p.stop(5 * time.Second) })
	}
	wg.Wait()
	d.mu.Lock()
	members := slices.Clone(d.members)
	var links []*link
	for _, o := range d.offices {
		o.mu.Lock()
		links = append(links, o.links...)
		o.mu.Unlock()
	}
	mounts := slices.Clone(d.disks)
	d.mu.Unlock()
	for _, l := range links {
		if l.p != nil {
			l.p.Close()
			<-l.done
		}
	}
	for _, m := range members {
		m.proxy.Close()
	}
	for _, dir := range mounts {
		d.unmount(dir)
	}
	d.mu.Lock()
	if d.events != nil {
		d.events.Close()
		d.events = nil
	}
	d.mu.Unlock()
}
