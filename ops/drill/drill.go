// Package drill rehearses moving a ward to its backup office and back,
// end to end, with real wardsync processes on 127.0.0.1: the failover
// drill of docs/failover.md, run by scripts/drill-failover and by this
// package's test.
//
// Run makes a city CA and certificates, starts 3 city members, the ward
// office's node (wa) and a backup office's node (bk1, whose backup
// certificate names the ward), all linked, then:
//
//  1. open: clerks at the office create dossiers, move them to in_review
//     and add notes;
//  2. close mid-work: while the clerks keep writing, the office's node is
//     SIGKILLed (only writes that got a 2xx count as acknowledged; those
//     in flight are "unknown": saved or not);
//  3. failover: `wardsync ops failover` moves the ward to bk1 and waits
//     until it serves;
//  4. backup: clerks at bk1 create dossiers and take decisions on the
//     office's dossiers, while
//  5. reopen: the office's node restarts, pushes what it took before the
//     kill, learns it is read-only (a write gets 409 read_only naming bk1
//     in X-Wardsync-Active-Node);
//  6. handback: `wardsync ops handback` returns the ward; the office serves
//     again and the backup refuses the ward's writes.
//
// Then it waits (up to Config.Timeout) for the five replicas (c1, c2, c3,
// wa, bk1) to hold the same digest of the ward, and checks every
// acknowledged dossier and op on every replica, the receipt numbers (the
// clerk's, never one twice, each office its own series), and the lease
// behaviour seen on the way. The Report holds the verification table.
//
// The table is taken at the handback, when every replica holds the ward:
// a backup office pulls (and may read) a ward only while it holds the
// ward's lease, so the office's later writes reach the city members but
// not bk1, and bk1's dossiers are checked just before the handback. The
// office's first write after the handback is checked separately (on wa
// and the city members).
package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is what a drill runs with. Only Bin and Dir are required.
type Config struct {
	// Bin is the wardsync binary the drill runs (every node and every ops
	// command).
	Bin string
	// Dir is the work dir: the CA and certificates (tls/), the nodes' data
	// (data/) and their logs (logs/NAME.log). Created if missing; it must
	// not hold an earlier drill.
	Dir string
	// Out gets the drill's progress, the ops commands' output and the
	// verification table (nil: discarded).
	Out io.Writer
	// Log gets diagnostics (process starts, retries; nil: discarded).
	Log *slog.Logger
	// Ward is the ward code (default HCM001, Phường Sài Gòn).
	Ward string
	// Dossiers is how many dossiers the office's clerks make before it
	// closes (default 40).
	Dossiers int
	// Clerks is how many clerks work at once at each office (default 3).
	Clerks int
	// MidWork is how many writes the office acknowledges while closing,
	// before its node is killed (default Dossiers/2).
	MidWork int
	// BackupDossiers is how many dossiers the backup office's clerks make
	// (default Dossiers/2).
	BackupDossiers int
	// Timeout bounds each wait: processes starting, failover and handback,
	// and the replicas converging (default 60s).
	Timeout time.Duration
}

func (c *Config) defaults() error {
	if c.Bin == "" || c.Dir == "" {
		return errors.New("drill: Config.Bin and Config.Dir are required")
	}
	if _, err := os.Stat(c.Bin); err != nil {
		return fmt.Errorf("drill: the wardsync binary: %w", err)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Ward == "" {
		c.Ward = "HCM001"
	}
	if c.Dossiers <= 0 {
		c.Dossiers = 40
	}
	if c.Clerks <= 0 {
		c.Clerks = 3
	}
	if c.MidWork <= 0 {
		c.MidWork = max(1, c.Dossiers/2)
	}
	if c.BackupDossiers <= 0 {
		c.BackupDossiers = max(1, c.Dossiers/2)
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	return nil
}

// Row is one replica's digest of the ward in the verification table.
type Row struct {
	Replica   string // c1, c2, c3, wa, bk1
	Role      string // city member, ward office, backup office
	Dossiers  int
	Ops       int
	Conflicts int
	Hash      string // the full state hash
}

// Check is one verification below the table.
type Check struct {
	Name   string
	OK     bool
	Detail string // why it failed (or "" when it passed)
}

// Report is a drill's result.
type Report struct {
	Ward string
	// Rows are the replicas' digests at the handback: c1, c2, c3, wa, bk1.
	Rows   []Row
	Checks []Check
	// Mismatches describes every failed check; empty when the drill passed.
	Mismatches []string
	Took       time.Duration
}

func (r *Report) check(ok bool, detail, format string, args ...any) {
	name := fmt.Sprintf(format, args...)
	c := Check{Name: name, OK: ok}
	if !ok {
		c.Detail = detail
		r.Mismatches = append(r.Mismatches, name+": "+detail)
	}
	r.Checks = append(r.Checks, c)
}

// Run runs the drill. It returns an error if a step fails or any check
// finds a mismatch; the Report holds whatever was verified.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.defaults(); err != nil {
		return Report{}, err
	}
	d := &drill{cfg: cfg, out: cfg.Out, log: cfg.Log, start: time.Now(), rep: Report{Ward: cfg.Ward},
		led: &ledger{dossiers: map[string]*record{}}, members: map[string]*proc{}, city: map[string]*apiClient{}, quic: map[string]string{}, clients: map[string]*apiClient{}}
	d.logDir = filepath.Join(cfg.Dir, "logs")
	d.tlsDir = filepath.Join(cfg.Dir, "tls")
	defer d.stopAll()
	err := d.run(ctx)
	d.rep.Took = time.Since(d.start).Round(100 * time.Millisecond)
	if err != nil {
		d.say("drill FAILED: %v", err)
		d.say("logs: %s", d.logDir)
		return d.rep, fmt.Errorf("drill: %w (logs in %s)", err, d.logDir)
	}
	if len(d.rep.Mismatches) > 0 {
		d.say("drill FAILED in %s: %d mismatch(es); logs: %s", d.rep.Took, len(d.rep.Mismatches), d.logDir)
		return d.rep, fmt.Errorf("drill: %d mismatch(es): %s", len(d.rep.Mismatches), strings.Join(d.rep.Mismatches, "; "))
	}
	fmt.Fprintf(d.out, "\ndrill passed in %s: every replica holds the same ward %s, nothing acknowledged was lost\n", d.rep.Took, cfg.Ward)
	return d.rep, nil
}

// The drill's node IDs.
const (
	officeID = "wa"
	backupID = "bk1"
	adminID  = "it-drill"
)

var memberIDs = []string{"c1", "c2", "c3"}

type drill struct {
	cfg            Config
	out            io.Writer
	log            *slog.Logger
	start          time.Time
	logDir, tlsDir string

	mu      sync.Mutex
	clients map[string]*apiClient // office clients by address and token

	quic    map[string]string // member → QUIC address
	members map[string]*proc
	city    map[string]*apiClient // member → admin client
	office  *proc
	backup  *proc

	officeToken, backupToken   string
	officeSeries, backupSeries string
	officeClerks, backupClerks []string // officials' tokens
	backupHead                 string

	phase1 []string // the dossiers made while the office was open
	led    *ledger
	seq    atomic.Int64 // applicants' ID numbers

	readOnlyProbe Check        // what the reopened office answered, for the report
	bkBefore      digest       // the backup's digest just before the handback
	dc            dossierCheck // what the replicas' dossiers showed
	rep           Report
}

// say prints a step of the drill.
func (d *drill) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// quote prints a command's output under the step, indented.
func (d *drill) quote(out string) {
	for line := range strings.Lines(strings.TrimRight(out, "\n") + "\n") {
		fmt.Fprintf(d.out, "          | %s", line)
	}
}

func (d *drill) run(ctx context.Context) error {
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"certificates", d.makeCerts},
		{"city", d.startCity},
		{"offices", d.startOffices},
		{"open", d.open},
		{"close mid-work", d.closeMidWork},
		{"failover", d.failover},
		{"backup and reopen", d.backupAndReopen},
		{"before the handback", d.beforeHandback},
		{"handback", d.handback},
		{"verify", d.verify},
	}
	for _, s := range steps {
		if err := s.f(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

func (d *drill) stopAll() {
	var wg sync.WaitGroup
	for _, p := range append([]*proc{d.office, d.backup}, d.membersList()...) {
		if p != nil {
			wg.Go(func() { p.stop(10 * time.Second) })
		}
	}
	wg.Wait()
}

func (d *drill) membersList() []*proc {
	var out []*proc
	for _, id := range memberIDs {
		if p := d.members[id]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// wardsync runs the binary and returns its combined output.
func (d *drill) wardsync(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.cfg.Bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("wardsync %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ---- setup ----

func (d *drill) makeCerts(ctx context.Context) error {
	for _, dir := range []string{d.cfg.Dir, d.logDir, d.tlsDir, filepath.Join(d.cfg.Dir, "data")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(d.cfg.Dir, "data", officeID)); err == nil {
		return fmt.Errorf("%s holds an earlier drill: use an empty dir", d.cfg.Dir)
	}
	ca := filepath.Join(d.cfg.Dir, "ca")
	t := 30 * time.Second
	if _, err := d.wardsync(ctx, t, "ops", "ca", "init", "--out", ca, "--name", "wardsync drill CA"); err != nil {
		return err
	}
	issue := func(args ...string) error {
		_, err := d.wardsync(ctx, t, append([]string{"ops", "cert", "issue", "--ca", ca}, args...)...)
		return err
	}
	for _, id := range memberIDs {
		if err := issue("--role", "city", "--node", id, "--ip", "127.0.0.1", "--out", filepath.Join(d.tlsDir, id)); err != nil {
			return err
		}
		addr, err := freeUDP()
		if err != nil {
			return err
		}
		d.quic[id] = addr
	}
	if err := issue("--role", "admin", "--node", adminID, "--out", filepath.Join(d.tlsDir, "admin")); err != nil {
		return err
	}
	if err := issue("--role", "ward", "--node", officeID, "--ward", d.cfg.Ward, "--out", filepath.Join(d.tlsDir, officeID)); err != nil {
		return err
	}
	if err := issue("--role", "backup", "--node", backupID, "--ward", d.cfg.Ward, "--out", filepath.Join(d.tlsDir, backupID)); err != nil {
		return err
	}
	d.say("certificates: city CA, members %s, admin %s, ward office %s (ward %s), backup office %s (backup certificate naming %s)",
		strings.Join(memberIDs, " "), adminID, officeID, d.cfg.Ward, backupID, d.cfg.Ward)
	return nil
}

func (d *drill) cityQUIC() string {
	var a []string
	for _, id := range memberIDs {
		a = append(a, d.quic[id])
	}
	return strings.Join(a, ",")
}

func (d *drill) startCity(ctx context.Context) error {
	var boot []string
	for _, id := range memberIDs {
		boot = append(boot, id+"="+d.quic[id])
	}
	hc, err := cityClient(filepath.Join(d.tlsDir, "admin"))
	if err != nil {
		return err
	}
	for _, id := range memberIDs {
		p, err := startProc(ctx, d.log, d.cfg.Bin, d.logDir, id, d.cfg.Timeout,
			"city", "run", "--data", filepath.Join(d.cfg.Dir, "data", id), "--node", id, "--quic", d.quic[id],
			"--http", "127.0.0.1:0", "--tls", filepath.Join(d.tlsDir, id), "--bootstrap", strings.Join(boot, ","))
		d.members[id] = p
		if err != nil {
			return err
		}
		d.city[id] = &apiClient{base: p.url, hc: hc}
	}
	var leader string
	err = d.eventually(ctx, "a city leader", d.cfg.Timeout, func() error {
		var v struct {
			Leader string `json:"leader"`
		}
		if err := d.city["c1"].getJSON(ctx, "/v1/cluster", &v); err != nil {
			return err
		}
		if v.Leader == "" {
			return errors.New("no leader yet")
		}
		leader = v.Leader
		return nil
	})
	if err != nil {
		return err
	}
	d.say("city up: c1 %s, c2 %s, c3 %s; leader %s", d.city["c1"].base, d.city["c2"].base, d.city["c3"].base, leader)
	return nil
}

// initNode runs `ward init` or `backup-office init` and returns the
// admin token and receipt series.
func (d *drill) initNode(ctx context.Context, args ...string) (token, series string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.cfg.Bin, append(args, "--json")...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output() // the JSON alone: warnings go to stderr
	if err != nil {
		return "", "", fmt.Errorf("wardsync %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var res struct {
		AdminToken string `json:"admin_token"`
		Series     string `json:"series"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.AdminToken == "" {
		return "", "", fmt.Errorf("wardsync %s: no admin token in %q", strings.Join(args, " "), out)
	}
	return res.AdminToken, res.Series, nil
}

func (d *drill) officeArgs() []string {
	return []string{"ward", "run", "--data", filepath.Join(d.cfg.Dir, "data", officeID), "--http", "127.0.0.1:0",
		"--city", d.cityQUIC(), "--tls", filepath.Join(d.tlsDir, officeID), "--quic", "127.0.0.1:0"}
}

func (d *drill) officeAPI(token string) *apiClient { return d.client(d.office.url, token) }
func (d *drill) backupAPI(token string) *apiClient { return d.client(d.backup.url, token) }

// client returns the one client for an office node's address and an
// official's token (the office's address changes when it restarts).
func (d *drill) client(base, token string) *apiClient {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := base + " " + token
	c, ok := d.clients[key]
	if !ok {
		c = officeClient(base, token)
		d.clients[key] = c
	}
	return c
}

// Officials' names at the two offices (clerks, then the backup's head).
var (
	officeClerkNames = []string{"Lê Thị Hoa", "Nguyễn Thị Lan", "Trần Văn Tuấn", "Phạm Thị Mai", "Võ Minh Đức", "Đặng Thu Thảo"}
	backupClerkNames = []string{"Huỳnh Văn Nam", "Bùi Thị Vy", "Đỗ Quốc Bảo", "Hồ Ngọc Trâm", "Ngô Thanh Sơn", "Lý Kim Ngân"}
)

// addOfficial adds an official at an office node and returns the token.
func addOfficial(ctx context.Context, admin *apiClient, id, name, role string) (string, error) {
	r, err := admin.do(ctx, "POST", "/v1/officials", map[string]string{"id": id, "name": name, "role": role})
	if err != nil {
		return "", err
	}
	var o struct {
		Token string `json:"token"`
	}
	if r.code != http.StatusCreated || json.Unmarshal(r.body, &o) != nil || o.Token == "" {
		return "", fmt.Errorf("POST /v1/officials %s: HTTP %d %s", id, r.code, r.body)
	}
	return o.Token, nil
}

func (d *drill) startOffices(ctx context.Context) error {
	var err error
	d.officeToken, d.officeSeries, err = d.initNode(ctx, "ward", "init", "--data", filepath.Join(d.cfg.Dir, "data", officeID), "--ward", d.cfg.Ward, "--node", officeID)
	if err != nil {
		return err
	}
	d.backupToken, d.backupSeries, err = d.initNode(ctx, "backup-office", "init", "--data", filepath.Join(d.cfg.Dir, "data", backupID), "--node", backupID)
	if err != nil {
		return err
	}
	if d.office, err = startProc(ctx, d.log, d.cfg.Bin, d.logDir, officeID, d.cfg.Timeout, d.officeArgs()...); err != nil {
		return err
	}
	if d.backup, err = startProc(ctx, d.log, d.cfg.Bin, d.logDir, backupID, d.cfg.Timeout,
		"backup-office", "run", "--data", filepath.Join(d.cfg.Dir, "data", backupID), "--http", "127.0.0.1:0",
		"--city", d.cityQUIC(), "--tls", filepath.Join(d.tlsDir, backupID), "--quic", "127.0.0.1:0"); err != nil {
		return err
	}
	officeAdmin, backupAdmin := d.officeAPI(d.officeToken), d.backupAPI(d.backupToken)
	for i := range d.cfg.Clerks {
		tok, err := addOfficial(ctx, officeAdmin, fmt.Sprintf("clerk-%d", i+1), officeClerkNames[i%len(officeClerkNames)], "clerk")
		if err != nil {
			return err
		}
		d.officeClerks = append(d.officeClerks, tok)
		if tok, err = addOfficial(ctx, backupAdmin, fmt.Sprintf("clerk-%d", i+1), backupClerkNames[i%len(backupClerkNames)], "clerk"); err != nil {
			return err
		}
		d.backupClerks = append(d.backupClerks, tok)
	}
	if d.backupHead, err = addOfficial(ctx, backupAdmin, "head", "Trương Minh Quang", "head"); err != nil {
		return err
	}
	// Both offices linked: the city must have seen the backup's node once
	// before it can be given a lease.
	for _, c := range []*apiClient{officeAdmin, backupAdmin} {
		err := d.eventually(ctx, "linked to the city", d.cfg.Timeout, func() error {
			var st syncStatus
			if err := c.getJSON(ctx, "/v1/sync/status", &st); err != nil {
				return err
			}
			if !st.Connected {
				return errors.New("not connected")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", c.base, err)
		}
	}
	d.say("offices up and linked: ward office %s %s (series %s), backup office %s %s (series %s); %d clerks at each, a head at %s",
		officeID, d.office.url, d.officeSeries, backupID, d.backup.url, d.backupSeries, d.cfg.Clerks, backupID)
	return nil
}

// ---- what the clerks do, and what was acknowledged ----

// record is one acknowledged dossier.
type record struct {
	id, receipt, by string
	ops             int // acknowledged ops on it (its create included)
	unknown         int // ops on it whose outcome is unknown (the office died mid-request)
}

// ledger is what the offices acknowledged.
type ledger struct {
	mu             sync.Mutex
	dossiers       map[string]*record
	ackedOps       int
	unknownOps     int // on acknowledged dossiers
	unknownCreates int // creates that may have been saved, with no ID known
}

func (l *ledger) created(d dossier, by string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dossiers[d.ID] = &record{id: d.ID, receipt: d.ReceiptNo, by: by, ops: 1}
	l.ackedOps++
}

func (l *ledger) wrote(id string, o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.dossiers[id]
	switch o {
	case acked:
		r.ops++
		l.ackedOps++
	case unknown:
		r.unknown++
		l.unknownOps++
	}
}

func (l *ledger) createUnknown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unknownCreates++
}

var procedures = []string{"certified-copy", "birth-registration", "residence-confirmation", "signature-certification", "business-household-registration"}

var applicantNames = []string{"Nguyễn Văn An", "Trần Thị Bích", "Lê Hoàng Cường", "Phạm Thị Dung", "Hoàng Văn Em", "Vũ Thị Giang", "Đinh Công Hải", "Mai Thị Kiều"}

// answerErr describes a write that was not acknowledged.
func answerErr(r reply, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("HTTP %d %s", r.code, r.body)
}

// create makes a dossier at an office, as the official whose token c
// carries, and records the outcome.
func (d *drill) create(ctx context.Context, c *apiClient, node string) (dossier, outcome, error) {
	n := d.seq.Add(1)
	body := map[string]any{"procedure": procedures[int(n)%len(procedures)], "ward": d.cfg.Ward,
		"applicant": map[string]string{"name": applicantNames[int(n)%len(applicantNames)], "id_number": fmt.Sprintf("079%09d", 200_000_000+n)}}
	r, err := c.do(ctx, "POST", "/v1/dossiers", body)
	o := classify(r, err)
	var dd dossier
	switch o {
	case acked:
		if err := json.Unmarshal(r.body, &dd); err != nil || dd.ID == "" {
			return dd, refused, fmt.Errorf("create: unreadable answer %s", r.body)
		}
		d.led.created(dd, node)
		return dd, o, nil
	case unknown:
		d.led.createUnknown()
	}
	return dd, o, answerErr(r, err)
}

// transition moves dossier id to status to, and records the outcome.
func (d *drill) transition(ctx context.Context, c *apiClient, id, to string) (outcome, error) {
	r, err := c.do(ctx, "POST", "/v1/dossiers/"+id+"/transitions", map[string]string{"to": to})
	o := classify(r, err)
	d.led.wrote(id, o)
	if o == acked {
		return o, nil
	}
	return o, answerErr(r, err)
}

// note adds a note to dossier id, and records the outcome.
func (d *drill) note(ctx context.Context, c *apiClient, id, text string) (outcome, error) {
	r, err := c.do(ctx, "POST", "/v1/dossiers/"+id+"/notes", map[string]string{"text": text})
	o := classify(r, err)
	d.led.wrote(id, o)
	if o == acked {
		return o, nil
	}
	return o, answerErr(r, err)
}

// clerks runs f for each of n clerks at once and returns the first error.
func clerks(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ---- the drill's steps ----

// open: the office works normally, and the city gets all of it.
func (d *drill) open(ctx context.Context) error {
	var mu sync.Mutex
	err := clerks(d.cfg.Clerks, func(i int) error {
		c := d.officeAPI(d.officeClerks[i])
		for k := i; k < d.cfg.Dossiers; k += d.cfg.Clerks {
			dd, _, err := d.create(ctx, c, officeID)
			if err != nil {
				return fmt.Errorf("create at the office: %w", err)
			}
			if _, err := d.transition(ctx, c, dd.ID, "in_review"); err != nil {
				return fmt.Errorf("in_review at the office: %w", err)
			}
			if _, err := d.note(ctx, c, dd.ID, "đã kiểm tra giấy tờ"); err != nil {
				return fmt.Errorf("note at the office: %w", err)
			}
			mu.Lock()
			d.phase1 = append(d.phase1, dd.ID)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return err
	}
	office := d.officeAPI(d.officeToken)
	var want digest
	err = d.eventually(ctx, "the city in step with the office", d.cfg.Timeout, func() error {
		if err := office.getJSON(ctx, "/v1/wards/"+d.cfg.Ward+"/digest", &want); err != nil {
			return err
		}
		for _, id := range memberIDs {
			got, err := d.cityDigest(ctx, id)
			if err != nil {
				return err
			}
			if !got.sameAs(want) {
				return fmt.Errorf("%s has %+v, the office %+v", id, got, want)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.say("open: %d clerks at %s made %d dossiers (received → in_review, a note each); c1, c2, c3 hold the same %d ops",
		d.cfg.Clerks, officeID, d.cfg.Dossiers, want.Ops)
	return nil
}

// closeMidWork: the clerks keep working as the office's node is killed.
func (d *drill) closeMidWork(ctx context.Context) error {
	var ackedWrites, unknownWrites, refusedWrites atomic.Int64
	var killed atomic.Bool
	enough := make(chan struct{})
	var once sync.Once
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- clerks(d.cfg.Clerks, func(i int) error {
			c := d.officeAPI(d.officeClerks[i])
			// One write, counted; false once the office stops answering.
			step := func(o outcome, err error) (bool, error) {
				switch o {
				case acked:
					if ackedWrites.Add(1) >= int64(d.cfg.MidWork) {
						once.Do(func() { close(enough) })
					}
					return true, nil
				case unknown:
					unknownWrites.Add(1)
				default:
					refusedWrites.Add(1)
				}
				if !killed.Load() {
					once.Do(func() { close(enough) })
					return false, fmt.Errorf("the office refused a write before it closed: %w", err)
				}
				return false, nil
			}
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				dd, o, err := d.create(ctx, c, officeID)
				if ok, err := step(o, err); !ok {
					return err
				}
				if ok, err := step(d.transition(ctx, c, dd.ID, "in_review")); !ok {
					return err
				}
				target := d.phase1[rand.IntN(len(d.phase1))]
				if ok, err := step(d.note(ctx, c, target, "công dân gọi hỏi tiến độ")); !ok {
					return err
				}
			}
		})
	}()
	select {
	case <-enough:
	case <-time.After(d.cfg.Timeout):
	case <-ctx.Done():
		close(stop)
		<-errc
		return ctx.Err()
	}
	killed.Store(true)
	killErr := d.office.kill9()
	close(stop)
	if err := <-errc; err != nil {
		return err
	}
	if killErr != nil {
		return killErr
	}
	d.say("close mid-work: SIGKILL %s while %d clerks were writing: %d writes acknowledged during the close, %d in flight (outcome unknown), %d refused after the kill",
		officeID, d.cfg.Clerks, ackedWrites.Load(), unknownWrites.Load(), refusedWrites.Load())
	if dg, err := d.cityDigest(ctx, "c1"); err == nil {
		d.led.mu.Lock()
		acked := d.led.ackedOps
		d.led.mu.Unlock()
		if dg.Ops < acked {
			d.say("  c1 held %d of the office's %d acknowledged ops at the kill: the office pushes the other %d when it reopens", dg.Ops, acked, acked-dg.Ops)
		} else {
			d.say("  c1 held all %d of the office's acknowledged ops at the kill", acked)
		}
	}
	return nil
}

// ops runs a `wardsync ops` command against member with the admin
// certificate, printing the command and its output.
func (d *drill) ops(ctx context.Context, member string, args ...string) (string, error) {
	full := append([]string{"ops"}, args...)
	full = append(full, "--city", d.city[member].base, "--tls", filepath.Join(d.tlsDir, "admin"))
	d.say("$ wardsync %s", shellJoin(full))
	out, err := d.wardsync(ctx, d.cfg.Timeout+30*time.Second, full...)
	d.quote(out)
	return out, err
}

// timeoutFlag is Config.Timeout as an ops command's --timeout.
func (d *drill) timeoutFlag() string {
	if d.cfg.Timeout%time.Second == 0 {
		return fmt.Sprintf("%ds", d.cfg.Timeout/time.Second)
	}
	return d.cfg.Timeout.String()
}

func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$;&|*?()<>") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// failover: city IT moves the ward to the backup office.
func (d *drill) failover(ctx context.Context) error {
	// The backup's node is linked, so the city knows it; should its
	// registration still be on the way, the failover is refused with
	// "never connected" and changes nothing: ask again.
	err := d.eventually(ctx, "the failover", d.cfg.Timeout, func() error {
		out, err := d.ops(ctx, "c2", "failover", "--ward", d.cfg.Ward, "--to", backupID, "--reason", "drill: office closed mid-work", "--timeout", d.timeoutFlag())
		if err != nil && !strings.Contains(out, "has never connected") {
			return permanent{err}
		}
		return err
	})
	if err != nil {
		return err
	}
	bk := d.backupAPI(d.backupToken)
	return d.eventually(ctx, backupID+" serving", d.cfg.Timeout, func() error {
		mode, _, err := bk.leaseMode(ctx, d.cfg.Ward)
		if err != nil {
			return err
		}
		if mode != "serving" {
			return fmt.Errorf("%s's mode for %s is %q", backupID, d.cfg.Ward, mode)
		}
		return nil
	})
}

// backupAndReopen: the backup's clerks work while the office's node
// restarts and learns it is read-only.
func (d *drill) backupAndReopen(ctx context.Context) error {
	work := make(chan error, 1)
	var made, decided atomic.Int64
	go func() {
		// The head approves half the office's dossiers; the clerks make new
		// ones, move them to in_review and add notes on the office's.
		head := d.backupAPI(d.backupHead)
		err := clerks(d.cfg.Clerks+1, func(i int) error {
			if i == d.cfg.Clerks {
				for _, id := range d.phase1[:len(d.phase1)/2] {
					if _, err := d.transition(ctx, head, id, "approved"); err != nil {
						return fmt.Errorf("approve at the backup: %w", err)
					}
					decided.Add(1)
				}
				return nil
			}
			c := d.backupAPI(d.backupClerks[i])
			for k := i; k < d.cfg.BackupDossiers; k += d.cfg.Clerks {
				dd, _, err := d.create(ctx, c, backupID)
				if err != nil {
					return fmt.Errorf("create at the backup: %w", err)
				}
				made.Add(1)
				if _, err := d.transition(ctx, c, dd.ID, "in_review"); err != nil {
					return fmt.Errorf("in_review at the backup: %w", err)
				}
				if _, err := d.note(ctx, c, d.phase1[k%len(d.phase1)], "tiếp nhận tại văn phòng dự phòng"); err != nil {
					return fmt.Errorf("note at the backup: %w", err)
				}
			}
			return nil
		})
		work <- err
	}()
	reopenErr := d.reopen(ctx)
	if err := <-work; err != nil {
		return err
	}
	if reopenErr != nil {
		return reopenErr
	}
	d.say("backup: while %s reopened, %d clerks at %s made %d dossiers (→ in_review, notes on the office's), its head approved %d of the office's dossiers",
		officeID, d.cfg.Clerks, backupID, made.Load(), decided.Load())
	return nil
}

// reopen restarts the office's node and checks that it turns read-only.
func (d *drill) reopen(ctx context.Context) error {
	if err := d.office.start(ctx, d.log, d.cfg.Bin, d.cfg.Timeout); err != nil {
		return err
	}
	office := d.officeAPI(d.officeToken)
	err := d.eventually(ctx, officeID+" read-only", d.cfg.Timeout, func() error {
		mode, active, err := office.leaseMode(ctx, d.cfg.Ward)
		if err != nil {
			return err
		}
		if mode != "read_only" || active != backupID {
			return fmt.Errorf("mode %q, active node %q", mode, active)
		}
		var st syncStatus
		if err := office.getJSON(ctx, "/v1/sync/status", &st); err != nil {
			return err
		}
		if st.OutboxDepth != 0 {
			return fmt.Errorf("%d ops still to push", st.OutboxDepth)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A clerk's write there is refused, and says who serves the ward.
	id := d.phase1[len(d.phase1)-1]
	clerk := d.officeAPI(d.officeClerks[0])
	var bad []string
	for _, w := range []struct {
		what, path string
		body       any
	}{
		{"note", "/v1/dossiers/" + id + "/notes", map[string]string{"text": "văn phòng mở cửa lại"}},
		{"create", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
			"applicant": map[string]string{"name": "Phan Văn Lộc", "id_number": "079300000001"}}},
	} {
		r, err := clerk.do(ctx, "POST", w.path, w.body)
		if err != nil {
			return err
		}
		if r.code != http.StatusConflict || r.errorCode() != "read_only" || r.header.Get(headerActiveNode) != backupID {
			bad = append(bad, fmt.Sprintf("%s: HTTP %d %s, %s: %q", w.what, r.code, r.body, headerActiveNode, r.header.Get(headerActiveNode)))
		} else if w.what == "note" {
			var e struct {
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			_ = json.Unmarshal(r.body, &e)
			d.say("reopen: %s restarted at %s, pushed what it took before the kill, and is read-only: a clerk's write gets HTTP 409 read_only, %s: %s, %q",
				officeID, d.office.url, headerActiveNode, r.header.Get(headerActiveNode), e.Error.Message)
		}
	}
	if r, err := clerk.do(ctx, "GET", "/v1/dossiers/"+id, nil); err != nil || r.code != http.StatusOK {
		bad = append(bad, fmt.Sprintf("read: HTTP %d %v", r.code, err))
	}
	d.readOnlyProbe = Check{Name: fmt.Sprintf("reopened office read-only while %s served: writes 409 read_only, %s: %s, reads 200", backupID, headerActiveNode, backupID),
		OK: len(bad) == 0, Detail: strings.Join(bad, "; ")}
	return nil
}

// handback: city IT returns the ward to its office.
func (d *drill) handback(ctx context.Context) error {
	if _, err := d.ops(ctx, "c3", "handback", "--ward", d.cfg.Ward, "--reason", "drill: office reopened", "--timeout", d.timeoutFlag()); err != nil {
		return err
	}
	office, bk := d.officeAPI(d.officeToken), d.backupAPI(d.backupToken)
	return d.eventually(ctx, officeID+" serving, "+backupID+" not", d.cfg.Timeout, func() error {
		if mode, _, err := office.leaseMode(ctx, d.cfg.Ward); err != nil || mode != "serving" {
			return fmt.Errorf("%s: mode %q %v", officeID, mode, err)
		}
		if mode, _, err := bk.leaseMode(ctx, d.cfg.Ward); err != nil || (mode != "" && mode != "not_held") {
			return fmt.Errorf("%s: mode %q %v", backupID, mode, err)
		}
		return nil
	})
}

// ---- verification ----

func (d *drill) cityDigest(ctx context.Context, member string) (digest, error) {
	var v struct {
		Digest digest `json:"digest"`
	}
	err := d.city[member].getJSON(ctx, "/v1/wards/"+d.cfg.Ward+"/digest", &v)
	return v.Digest, err
}

// replica is one holder of the ward, as the verification reads it.
type replica struct {
	name, role string
	api        *apiClient
	listPath   string
	digest     func(context.Context) (digest, error)
}

func (d *drill) replicas() []replica {
	var out []replica
	for _, id := range memberIDs {
		out = append(out, replica{name: id, role: "city member", api: d.city[id],
			listPath: "/v1/wards/" + d.cfg.Ward + "/dossiers",
			digest:   func(ctx context.Context) (digest, error) { return d.cityDigest(ctx, id) }})
	}
	for _, o := range []struct {
		name, role string
		api        *apiClient
	}{{officeID, "ward office", d.officeAPI(d.officeToken)}, {backupID, "backup office", d.backupAPI(d.backupToken)}} {
		out = append(out, replica{name: o.name, role: o.role, api: o.api, listPath: "/v1/dossiers?ward=" + d.cfg.Ward,
			digest: func(ctx context.Context) (digest, error) {
				var dg digest
				err := o.api.getJSON(ctx, "/v1/wards/"+d.cfg.Ward+"/digest", &dg)
				return dg, err
			}})
	}
	return out
}

// converge reads the replicas' digests until they are equal or the
// timeout has passed. It returns the last digests read (nil if some
// replica could not be read at all) and, if they differ, how.
func (d *drill) converge(ctx context.Context, reps []replica) ([]Row, error) {
	var rows []Row
	err := d.eventually(ctx, "the replicas converging", d.cfg.Timeout, func() error {
		rows = rows[:0]
		for _, r := range reps {
			dg, err := r.digest(ctx)
			role := r.role
			if err != nil && r.name == backupID && strings.Contains(err.Error(), "HTTP 403") && d.bkBefore.Hash != "" {
				// A backup may not read a ward it no longer holds: its copy
				// is the one read just before the handback.
				dg, err, role = d.bkBefore, nil, r.role+" (before the handback)"
			}
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			rows = append(rows, Row{Replica: r.name, Role: role, Dossiers: dg.Dossiers, Ops: dg.Ops, Conflicts: dg.Conflicts, Hash: dg.Hash})
		}
		for _, row := range rows[1:] {
			if row.Dossiers != rows[0].Dossiers || row.Ops != rows[0].Ops || row.Conflicts != rows[0].Conflicts || row.Hash != rows[0].Hash {
				return fmt.Errorf("%s has %d dossiers, %d ops, %d conflicts, hash %s; %s %d, %d, %d, %s", row.Replica, row.Dossiers, row.Ops,
					row.Conflicts, short(row.Hash), rows[0].Replica, rows[0].Dossiers, rows[0].Ops, rows[0].Conflicts, short(rows[0].Hash))
			}
		}
		return nil
	})
	if len(rows) < len(reps) {
		return nil, err
	}
	return rows, err
}

// dossierCheck collects what checkDossiers finds on each replica.
type dossierCheck struct {
	missing, receipts, dupes, counts []string
	listed                           int // dossiers of the ward on the last replica read
}

// checkDossiers reads every dossier of the ward on replica r and checks it
// against what the offices acknowledged: every acknowledged dossier there
// with its receipt number, with its acknowledged ops (and at most those
// whose outcome is unknown besides), and no receipt number twice.
func (d *drill) checkDossiers(ctx context.Context, r replica, dc *dossierCheck) error {
	led := d.led
	led.mu.Lock()
	defer led.mu.Unlock()
	items, err := r.api.list(ctx, r.listPath, d.cfg.Ward)
	if err != nil {
		return fmt.Errorf("listing the dossiers on %s: %w", r.name, err)
	}
	dc.listed = len(items)
	byID := map[string]dossier{}
	byReceipt := map[string]string{}
	for _, it := range items {
		byID[it.ID] = it
		if other, dup := byReceipt[it.ReceiptNo]; dup {
			dc.dupes = append(dc.dupes, fmt.Sprintf("%s: %s on %s and %s", r.name, it.ReceiptNo, other, it.ID))
		}
		byReceipt[it.ReceiptNo] = it.ID
	}
	if n := len(led.dossiers); len(items) < n || len(items) > n+led.unknownCreates {
		dc.counts = append(dc.counts, fmt.Sprintf("%s holds %d dossiers, %d acknowledged (+%d unknown)", r.name, len(items), n, led.unknownCreates))
	}
	for _, rec := range led.dossiers {
		it, ok := byID[rec.id]
		switch {
		case !ok:
			dc.missing = append(dc.missing, fmt.Sprintf("%s lacks %s (%s)", r.name, rec.id, rec.receipt))
			continue
		case it.ReceiptNo != rec.receipt:
			dc.receipts = append(dc.receipts, fmt.Sprintf("%s has %s as %s, acknowledged as %s", r.name, rec.id, it.ReceiptNo, rec.receipt))
		}
		var full dossier
		if err := r.api.getJSON(ctx, "/v1/dossiers/"+rec.id, &full); err != nil {
			return fmt.Errorf("reading %s on %s: %w", rec.id, r.name, err)
		}
		if n := len(full.History); n < rec.ops || n > rec.ops+rec.unknown {
			dc.counts = append(dc.counts, fmt.Sprintf("%s: %s has %d ops, %d acknowledged (+%d unknown)", r.name, rec.id, n, rec.ops, rec.unknown))
		}
	}
	return nil
}

// beforeHandback: with every clerk done, the five replicas converge, and
// the backup's dossiers are checked while it still holds the ward (after
// the handback it may no longer read them).
func (d *drill) beforeHandback(ctx context.Context) error {
	reps := d.replicas()
	rows, err := d.converge(ctx, reps)
	if rows == nil {
		return err
	}
	if err != nil {
		d.rep.check(false, err.Error(), "before the handback, c1, c2, c3, %s and %s hold the same ward", officeID, backupID)
	}
	bk := rows[len(rows)-1]
	d.bkBefore = digest{Ward: d.cfg.Ward, Dossiers: bk.Dossiers, Ops: bk.Ops, Conflicts: bk.Conflicts, Hash: bk.Hash}
	if err := d.checkDossiers(ctx, reps[len(reps)-1], &d.dc); err != nil {
		return err
	}
	d.say("before the handback: the 5 replicas agree (%d dossiers, %d ops); %s's dossiers checked while it holds the ward", bk.Dossiers, bk.Ops, backupID)
	return nil
}

func (d *drill) verify(ctx context.Context) error {
	reps := d.replicas()
	// 1. The replicas converge (their digests are read until equal).
	t0 := time.Now()
	rows, converged := d.converge(ctx, reps)
	if rows == nil {
		return converged
	}
	d.rep.Rows = append([]Row(nil), rows...)
	detail := ""
	if converged != nil {
		detail = converged.Error()
	} else {
		d.say("handback done: %s serves again; the 5 replicas agree (after %.1fs)", officeID, time.Since(t0).Seconds())
	}
	d.rep.check(converged == nil, detail, "c1, c2, c3, %s and %s hold the same ward (dossiers, ops, conflicts, state hash)", officeID, backupID)
	d.rep.check(rows[0].Conflicts == 0, fmt.Sprintf("%d conflicts", rows[0].Conflicts), "no conflicts (no office took a contradicting decision)")

	// 2. Every acknowledged dossier and op on every replica (the backup's
	// were read before the handback).
	for _, r := range reps[:len(reps)-1] {
		if err := d.checkDossiers(ctx, r, &d.dc); err != nil {
			return err
		}
	}
	led := d.led
	acked, ackedOps, unknownOps, unknownCreates := len(led.dossiers), led.ackedOps, led.unknownOps, led.unknownCreates
	var series []string
	for _, rec := range led.dossiers {
		want := d.officeSeries
		if rec.by == backupID {
			want = d.backupSeries
		}
		if !strings.Contains(rec.receipt, "-"+want+"-") {
			series = append(series, fmt.Sprintf("%s made at %s: %s", rec.id, rec.by, rec.receipt))
		}
	}
	dc := &d.dc
	d.rep.check(len(dc.missing) == 0 && len(dc.receipts) == 0, firstFew(append(dc.missing, dc.receipts...)),
		"%d acknowledged dossiers on every replica, each with the receipt number the clerk was given", acked)
	d.rep.check(len(dc.counts) == 0, firstFew(dc.counts),
		"%d acknowledged ops on every replica, none twice (in flight at the kill: %s and %s, each there at most once)",
		ackedOps, plural(unknownOps, "note or transition", "notes or transitions"), plural(unknownCreates, "create", "creates"))
	d.rep.check(len(dc.dupes) == 0, firstFew(dc.dupes), "no receipt number given twice (%d dossiers on each replica)", dc.listed)
	d.rep.check(len(series) == 0, firstFew(series), "receipt numbers carry the issuing office's series (-%s- at the office, -%s- at the backup)", d.officeSeries, d.backupSeries)
	if d.readOnlyProbe.Name != "" {
		d.rep.check(d.readOnlyProbe.OK, d.readOnlyProbe.Detail, "%s", d.readOnlyProbe.Name)
	}

	// 3. After the handback: the office serves, the backup refuses.
	if err := d.afterHandback(ctx); err != nil {
		return err
	}
	if out, err := d.ops(ctx, "c1", "lease", "--ward", d.cfg.Ward); err != nil {
		d.rep.check(false, err.Error(), "the lease history shows the failover to %s and the handback", backupID)
	} else {
		d.rep.check(strings.Contains(out, "drill: office closed mid-work") && strings.Contains(out, "drill: office reopened"), out,
			"the lease history shows the failover to %s and the handback", backupID)
	}
	fmt.Fprintln(d.out)
	return d.rep.WriteTable(d.out)
}

// afterHandback checks that the office serves the ward again (a new
// dossier, which reaches the city) and that the backup refuses its writes.
func (d *drill) afterHandback(ctx context.Context) error {
	clerk := d.officeAPI(d.officeClerks[0])
	r, err := clerk.do(ctx, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
		"applicant": map[string]string{"name": "Phan Văn Lộc", "id_number": "079300000002"}})
	if err != nil {
		return err
	}
	var dd dossier
	_ = json.Unmarshal(r.body, &dd)
	if r.code != http.StatusCreated {
		d.rep.check(false, fmt.Sprintf("HTTP %d %s", r.code, r.body), "after the handback the office serves: a new dossier gets 201")
	} else {
		want, _ := d.replicas()[3].digest(ctx)
		err := d.eventually(ctx, "the office's new dossier at the city", d.cfg.Timeout, func() error {
			for _, id := range memberIDs {
				got, err := d.cityDigest(ctx, id)
				if err != nil {
					return err
				}
				if !got.sameAs(want) {
					return fmt.Errorf("%s has %+v, %s %+v", id, got, officeID, want)
				}
			}
			return nil
		})
		detail := ""
		if err != nil {
			detail = err.Error()
		}
		d.rep.check(err == nil, detail, "after the handback the office serves: a new dossier gets 201 (%s), and c1, c2, c3 hold it", dd.ReceiptNo)
	}
	bk := d.backupAPI(d.backupClerks[0])
	var bad []string
	codes := map[string]bool{}
	for _, w := range []struct {
		what, path string
		body       any
	}{
		{"create", "/v1/dossiers", map[string]any{"procedure": "certified-copy", "ward": d.cfg.Ward,
			"applicant": map[string]string{"name": "Phan Văn Lộc", "id_number": "079300000003"}}},
		{"note", "/v1/dossiers/" + d.phase1[0] + "/notes", map[string]string{"text": "sau khi bàn giao"}},
	} {
		r, err := bk.do(ctx, "POST", w.path, w.body)
		if err != nil {
			return err
		}
		if r.code != http.StatusForbidden && r.code != http.StatusConflict {
			bad = append(bad, fmt.Sprintf("%s: HTTP %d %s", w.what, r.code, r.body))
		}
		codes[fmt.Sprintf("%d %s", r.code, r.errorCode())] = true
	}
	var seen []string
	for c := range codes {
		seen = append(seen, c)
	}
	d.rep.check(len(bad) == 0, strings.Join(bad, "; "), "after the handback %s refuses the ward's writes (HTTP %s)", backupID, strings.Join(seen, ", "))
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func firstFew(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], "; ") + fmt.Sprintf("; and %d more", len(s)-5)
	}
	return strings.Join(s, "; ")
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// permanent is an error eventually does not wait out.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// eventually calls f until it returns nil or a permanent error, or within
// has passed.
func (d *drill) eventually(ctx context.Context, what string, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if p, ok := err.(permanent); ok {
			return p.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s: %w", what, within, err)
		}
		d.log.Debug("waiting", "for", what, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
