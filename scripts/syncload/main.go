// Command syncload drives the ward ↔ city sync benchmarks of issue 4;
// scripts/bench-sync runs it against a real 3-member `wardsync city run`
// cluster. It is a benchmark tool, not part of the product: it is built
// from the main module so it speaks the real wire protocol with the
// project's own packages. Subcommands:
//
//	syncload ports -n N
//	    print N loopback ports free for both TCP and UDP.
//	syncload gen -data DIR -ops N [-workers 64]
//	    fill a STOPPED ward node's data dir with N ops made in-process
//	    through node.CreateDossier and node.Transition (create, then move
//	    to in_review: 2 ops per dossier), as if the office had worked
//	    offline. The ward process must not be running.
//	syncload watch -log FILE -token T -until drained|pulled [-head H] [-t0 NS]
//	    wait for the ward whose stdout is FILE to print its API address,
//	    then poll GET /v1/sync/status every 100 ms until its outbox is
//	    empty (drained) or its pull cursor reaches H (pulled).
//	syncload push -ca DIR -city ADDRS -node ID -ward CODE -ops N
//	    act as a ward node over QUIC (certificate issued in-process by the
//	    CA): push N signed, hash-chained create ops (bodies of about 300
//	    bytes) in OpBatches of -batch ops.
//	syncload fanin -ca DIR -city ADDRS -steps 100,500,... -pids P1,P2,P3
//	    simulate N ward nodes, each with its own UDP socket, QUIC
//	    connection, certificate and op-signing key; measure the city
//	    members' memory per idle connected ward, then push-to-commit
//	    latency with every simulated ward writing 1 op/s.
//
// Every subcommand prints its results as JSON lines on stdout.
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: syncload ports|gen|watch|push|fanin [flags] (see the package comment)")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"ports": cmdPorts, "gen": cmdGen, "watch": cmdWatch, "push": cmdPush, "fanin": cmdFanin,
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "syncload: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "syncload "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func round(x float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(x*f) / f
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ---- ports ----

func cmdPorts(args []string) error {
	fs := flag.NewFlagSet("ports", flag.ExitOnError)
	n := fs.Int("n", 1, "how many ports")
	fs.Parse(args)
	seen := map[int]bool{}
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for tries := 0; len(seen) < *n; tries++ {
		if tries > 100**n {
			return errors.New("cannot find free ports")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil || seen[port] {
			continue
		}
		held = append(held, u)
		seen[port] = true
		fmt.Println(port)
	}
	return nil
}

// ---- ops ----

// padding makes create bodies about 300 bytes, like a real intake with an
// address field.
const padding = "Số 12, đường Nguyễn Thị Minh Khai, khu phố 3, phường Bến Thành, Thành phố Hồ Chí Minh (bản sao 2 trang)"

func newDossier(i int64) schema.NewDossier {
	return schema.NewDossier{
		Procedure: "certified-copy",
		Applicant: schema.Applicant{Name: fmt.Sprintf("Nguyễn Văn Tải %d", i), IDNumber: fmt.Sprintf("%012d", 79_000_000_000+i)},
		Fields:    map[string]string{"address": padding},
	}
}

// opMaker makes one origin's signed, hash-chained ops: seq 1, 2, ... each
// carrying the hash of the one before, as a ward node's log does.
type opMaker struct {
	origin, ward string
	key          ed25519.PrivateKey
	seq          uint64
	prev         [32]byte
	clock        *schema.Clock
	entropy      *ulid.MonotonicEntropy
	n            int64
}

func newOpMaker(origin, ward string, key ed25519.PrivateKey) *opMaker {
	return &opMaker{origin: origin, ward: ward, key: key, clock: schema.NewClock(time.Now, 0, 0),
		entropy: ulid.Monotonic(rand.Reader, 0)}
}

// next makes a create op of a new dossier (body about 300 bytes).
func (m *opMaker) next() schema.Op {
	m.n++
	in := newDossier(m.n)
	hlc := m.clock.Now()
	received := hlc.Time().In(schema.CityZone)
	body := schema.CreateBody{
		Procedure: in.Procedure, Applicant: in.Applicant, Fields: in.Fields,
		ReceiptNo:  fmt.Sprintf("%s-%s-%s-%04d", m.ward, received.Format("060102"), "LOAD", m.n),
		ReceivedAt: received.UnixMilli(), DueAt: received.Add(24 * time.Hour).UnixMilli(),
	}
	m.seq++
	op := schema.Op{
		ID: schema.OpID{Origin: m.origin, Seq: m.seq}, Ward: m.ward,
		Dossier: ulid.MustNew(uint64(hlc.Wall()), m.entropy).String(), HLC: hlc,
		Actor: schema.Actor{ID: "admin", Name: "Administrator", Role: schema.RoleAdmin},
		Kind:  schema.KindCreate, Body: schema.MarshalBody(body), Prev: m.prev,
	}
	op.Sign(m.key)
	m.prev = op.Hash()
	return op
}

// ---- certificates and connections ----

type identity struct {
	node, ward string
	cert       tls.Certificate
	opKey      ed25519.PrivateKey
}

func issueWard(ca *certs.CA, nodeID, ward string) (identity, error) {
	certPEM, keyPEM, err := ca.Issue(certs.IssueParams{
		Identity: schema.PeerIdentity{Role: schema.PeerWard, Node: nodeID, Wards: []string{ward}},
		Validity: 24 * time.Hour, Now: time.Now(),
	})
	if err != nil {
		return identity{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return identity{}, err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return identity{}, err
	}
	return identity{node: nodeID, ward: ward, cert: cert, opKey: key}, nil
}

func caPool(ca *certs.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

var quiet = slog.New(slog.DiscardHandler)

// link is one simulated ward node's QUIC connection, from its own UDP
// socket (a transport.Endpoint binds one socket and presents one
// certificate for every dial, so N certificates need N endpoints).
type link struct {
	ep   *transport.Endpoint
	conn *transport.Conn
}

func dialLink(ctx context.Context, id identity, pool *x509.CertPool, addr string) (*link, error) {
	ep, err := transport.New(transport.Config{Addr: "127.0.0.1:0", Cert: id.cert, CA: pool, Logger: quiet})
	if err != nil {
		return nil, err
	}
	conn, err := ep.Dial(ctx, addr, transport.ALPNSync, schema.PeerCity)
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &link{ep: ep, conn: conn}, nil
}

func (l *link) close() {
	l.conn.CloseWithError(0, "bye")
	l.ep.Close()
}

// stream opens a stream, sends hello (and first, if any) and reads the
// Welcome.
func (l *link) stream(ctx context.Context, h *wire.Hello, first wire.Msg) (net.Conn, *wire.Reader, error) {
	s, err := l.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, err
	}
	sc := transport.StreamConn(l.conn, s)
	if err := wire.WriteMsg(sc, h); err != nil {
		sc.Close()
		return nil, nil, err
	}
	if first != nil {
		if err := wire.WriteMsg(sc, first); err != nil {
			sc.Close()
			return nil, nil, err
		}
	}
	r := wire.NewReader(sc, 64<<20)
	msg, err := r.Read()
	if err != nil {
		sc.Close()
		return nil, nil, err
	}
	switch m := msg.(type) {
	case *wire.Welcome:
		return sc, r, nil
	case *wire.Error:
		sc.Close()
		return nil, nil, m
	}
	sc.Close()
	return nil, nil, fmt.Errorf("expected Welcome, got %T", msg)
}

// openPush starts a push stream and returns the city's high-water mark.
func (l *link) openPush(ctx context.Context, id identity) (net.Conn, *wire.Reader, uint64, error) {
	h := &wire.Hello{Proto: wire.ProtoPush, Node: id.node, Ward: id.ward, Versions: []uint8{wire.Version},
		Key: id.opKey.Public().(ed25519.PublicKey)}
	sc, r, err := l.stream(ctx, h, nil)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("push hello: %w", err)
	}
	msg, err := r.Read()
	if err != nil {
		sc.Close()
		return nil, nil, 0, err
	}
	ack, ok := msg.(*wire.Ack)
	if !ok {
		sc.Close()
		if e, ok := msg.(*wire.Error); ok {
			return nil, nil, 0, e
		}
		return nil, nil, 0, fmt.Errorf("expected Ack, got %T", msg)
	}
	return sc, r, ack.Seq, nil
}

// ---- gen ----

func cmdGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	dir := fs.String("data", "", "ward data dir (node stopped)")
	total := fs.Int64("ops", 200_000, "ops to make")
	workers := fs.Int("workers", 64, "concurrent writers (they share fsyncs)")
	fs.Parse(args)
	n, err := node.Open(node.Config{Dir: *dir})
	if err != nil {
		return err
	}
	defer n.Close()
	var admin store.Official
	var ok bool
	if err := n.Store().View(func(tx *store.Tx) error { admin, ok, err = tx.Official("admin"); return err }); err != nil {
		return err
	}
	if !ok {
		return errors.New("no admin official in this data dir")
	}
	var before uint64
	n.Store().View(func(tx *store.Tx) error { before, _ = tx.LastSeq(); return nil })
	ctx := context.Background()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if 2*i >= *total {
					return
				}
				d, err := n.CreateDossier(ctx, admin, newDossier(i))
				if err == nil && 2*i+1 < *total {
					_, err = n.Transition(ctx, admin, d.ID, schema.StatusInReview, "")
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if firstErr != nil {
		return firstErr
	}
	var last uint64
	n.Store().View(func(tx *store.Tx) error { last, _ = tx.LastSeq(); return nil })
	if int64(last-before) != *total {
		return fmt.Errorf("made %d ops, want %d", last-before, *total)
	}
	emit(map[string]any{"ops": *total, "last_seq": last, "seconds": round(secs, 2), "ops_per_s": round(float64(*total)/secs, 0)})
	return n.Close()
}

// ---- watch ----

type syncStatus struct {
	Connected   bool   `json:"connected"`
	CityMember  string `json:"city_member"`
	Leader      string `json:"leader"`
	OutboxDepth uint64 `json:"outbox_depth"`
	PushAcked   uint64 `json:"push_acked"`
	LastSeq     uint64 `json:"last_seq"`
	PullCursor  uint64 `json:"pull_cursor"`
	LastError   string `json:"last_error"`
}

var listenRe = regexp.MustCompile(`listening on (http://[0-9.:]+)`)

func cmdWatch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ExitOnError)
	logFile := fs.String("log", "", "the ward process's stdout (it prints 'listening on http://ADDR')")
	token := fs.String("token", "", "admin bearer token of the ward")
	until := fs.String("until", "drained", "drained (outbox_depth 0) or pulled (pull_cursor >= -head)")
	head := fs.Uint64("head", 0, "partition head to reach (-until pulled)")
	t0 := fs.Int64("t0", 0, "start time in Unix ns (default: now)")
	every := fs.Duration("interval", 100*time.Millisecond, "poll interval")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after")
	fs.Parse(args)
	start := time.Now()
	if *t0 > 0 {
		start = time.Unix(0, *t0)
	}
	deadline := time.Now().Add(*timeout)
	var base string
	for base == "" {
		b, _ := os.ReadFile(*logFile)
		if m := listenRe.FindSubmatch(b); m != nil {
			base = string(m[1])
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never printed its address", *logFile)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(path string, auth bool) ([]byte, error) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s: HTTP %d %s", path, resp.StatusCode, b)
		}
		return b, err
	}
	var st syncStatus
	var connectedAt, progressAt time.Time
	var firstAcked, firstCursor uint64
	polls := 0
	for {
		b, err := get("/v1/sync/status", true)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		now := time.Now()
		if err == nil {
			polls++
			if polls == 1 {
				firstAcked, firstCursor = st.PushAcked, st.PullCursor
			}
			if st.Connected && connectedAt.IsZero() {
				connectedAt = now
			}
			if progressAt.IsZero() && (st.PushAcked > firstAcked || st.PullCursor > firstCursor) {
				progressAt = now
			}
			done := false
			switch *until {
			case "drained":
				done = st.LastSeq > 0 && st.OutboxDepth == 0
			case "pulled":
				done = st.PullCursor >= *head && *head > 0
			default:
				return fmt.Errorf("-until %q: want drained or pulled", *until)
			}
			if done {
				out := map[string]any{"seconds": round(now.Sub(start).Seconds(), 3), "status": st, "url": base}
				if !connectedAt.IsZero() {
					out["connected_after_s"] = round(connectedAt.Sub(start).Seconds(), 3)
				}
				if !progressAt.IsZero() {
					out["first_progress_after_s"] = round(progressAt.Sub(start).Seconds(), 3)
				}
				if m, err := get("/metrics", false); err == nil {
					for _, name := range []string{"wardsync_sync_pulled_ops_total", "wardsync_sync_pushed_ops_total", "wardsync_sync_reconnects_total"} {
						if v, ok := metric(m, name); ok {
							out[strings.TrimPrefix(name, "wardsync_sync_")] = v
						}
					}
				}
				emit(out)
				return nil
			}
		}
		if now.After(deadline) {
			return fmt.Errorf("timed out; last status %+v (err %v)", st, err)
		}
		time.Sleep(*every)
	}
}

// metric reads an unlabelled sample from a Prometheus text page.
func metric(page []byte, name string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(string(page)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// ---- push ----

func cmdPush(args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	caDir := fs.String("ca", "", "CA dir (ca.crt, ca.key) to issue the ward certificate from")
	city := fs.String("city", "", "city member QUIC address (the first is used)")
	nodeID := fs.String("node", "bulk", "origin node ID (must be new to the city)")
	ward := fs.String("ward", "", "ward code")
	total := fs.Int("ops", 1_000_000, "ops to push")
	batch := fs.Int("batch", 2000, "ops per OpBatch")
	window := fs.Int("window", 4, "batches in flight")
	fs.Parse(args)
	ca, err := certs.LoadCA(*caDir)
	if err != nil {
		return err
	}
	id, err := issueWard(ca, *nodeID, *ward)
	if err != nil {
		return err
	}
	addrs := splitList(*city)
	if len(addrs) == 0 {
		return errors.New("-city: no address")
	}
	ctx := context.Background()
	l, err := dialLink(ctx, id, caPool(ca), addrs[0])
	if err != nil {
		return err
	}
	defer l.close()
	sc, r, hw, err := l.openPush(ctx, id)
	if err != nil {
		return err
	}
	defer sc.Close()
	if hw != 0 {
		return fmt.Errorf("the city already holds %d ops of %s; use a new -node", hw, *nodeID)
	}
	// Make and sign ops ahead of the sender (signing is serial: each op's
	// signature covers the hash of the one before).
	batches := make(chan []schema.Op, 2**window)
	maker := newOpMaker(*nodeID, *ward, id.opKey)
	go func() {
		defer close(batches)
		for made := 0; made < *total; {
			n := min(*batch, *total-made)
			ops := make([]schema.Op, n)
			for i := range ops {
				ops[i] = maker.next()
			}
			made += n
			batches <- ops
		}
	}()
	start := time.Now()
	slots := make(chan struct{}, *window)
	acked := make(chan error, 1)
	go func() {
		for {
			msg, err := r.Read()
			if err != nil {
				acked <- err
				return
			}
			switch m := msg.(type) {
			case *wire.Ack:
				<-slots
				if m.Seq >= uint64(*total) {
					acked <- nil
					return
				}
			case *wire.Error:
				acked <- m
				return
			default:
				acked <- fmt.Errorf("unexpected %T", msg)
				return
			}
		}
	}()
	for ops := range batches {
		select {
		case slots <- struct{}{}:
		case err := <-acked:
			return fmt.Errorf("before the end: %v", err)
		}
		if err := wire.WriteMsg(sc, &wire.OpBatch{Ops: ops}); err != nil {
			return err
		}
	}
	if err := <-acked; err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	emit(map[string]any{"ops": *total, "seconds": round(secs, 2), "ops_per_s": round(float64(*total)/secs, 0), "node": *nodeID, "ward": *ward})
	return nil
}

// ---- fanin ----

// sim is one simulated ward node.
type sim struct {
	id    identity
	link  *link
	push  net.Conn
	r     *wire.Reader
	maker *opMaker
	pull  net.Conn
	dead  atomic.Bool
}

func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// cpuSeconds is user+system CPU time of a process.
func cpuSeconds(pid string) float64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ is 100 on Linux
}

func pctl(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, max(0, int(math.Ceil(p*float64(len(sorted))))-1))
	return round(float64(sorted[i])/1e6, 1)
}

func cmdFanin(args []string) error {
	fs := flag.NewFlagSet("fanin", flag.ExitOnError)
	caDir := fs.String("ca", "", "CA dir (ca.crt, ca.key)")
	city := fs.String("city", "", "city members' QUIC addresses; simulated ward i connects to member i mod 3")
	stepsFlag := fs.String("steps", "100,500,1000,2000,3321", "numbers of simulated wards, increasing")
	duration := fs.Duration("duration", 15*time.Second, "load time per step (1 op/s per simulated ward)")
	warmup := fs.Duration("warmup", 3*time.Second, "first part of each step left out of the latencies")
	settle := fs.Duration("settle", 5*time.Second, "wait after connecting before reading memory")
	pidsFlag := fs.String("pids", "", "city member PIDs, for RSS and CPU")
	prefix := fs.String("node-prefix", "sim", "node ID prefix of the simulated wards")
	wardsMode := fs.String("wards", "registry", "registry: ward codes of schema.DefaultWards() round-robin; unique: one synthetic code per simulated ward")
	pull := fs.Bool("pull", true, "also hold a pull stream per simulated ward, as a real ward does")
	dialers := fs.Int("dialers", 32, "connections set up at once")
	fs.Parse(args)
	var steps []int
	for _, s := range splitList(*stepsFlag) {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return fmt.Errorf("-steps: %q", s)
		}
		steps = append(steps, n)
	}
	if !slices.IsSorted(steps) || len(steps) == 0 {
		return errors.New("-steps must be increasing")
	}
	nmax := steps[len(steps)-1]
	addrs := splitList(*city)
	if len(addrs) == 0 {
		return errors.New("-city: no address")
	}
	var pids []int
	for _, p := range splitList(*pidsFlag) {
		n, _ := strconv.Atoi(p)
		pids = append(pids, n)
	}
	ca, err := certs.LoadCA(*caDir)
	if err != nil {
		return err
	}
	pool := caPool(ca)
	wards := schema.DefaultWards().All()
	wardOf := func(i int) string {
		if *wardsMode == "unique" {
			return fmt.Sprintf("VN%05d", i+1)
		}
		return wards[i%len(wards)].Code
	}
	t := time.Now()
	ids := make([]identity, nmax)
	{
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		for w := 0; w < 4; w++ {
			wg.Go(func() {
				for i := w; i < nmax; i += 4 {
					id, err := issueWard(ca, fmt.Sprintf("%s%05d", *prefix, i), wardOf(i))
					if err != nil {
						select {
						case errs <- err:
						default:
						}
						return
					}
					ids[i] = id
				}
			})
		}
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
		}
	}
	fmt.Fprintf(os.Stderr, "syncload fanin: issued %d ward certificates in %s\n", nmax, time.Since(t).Round(time.Millisecond))

	// Resident memory of the members: all of it (VmRSS), and the anonymous
	// part (RssAnon: Go heap and stacks, without badger's mmapped files),
	// which is what connections cost.
	rss := func() ([]int64, int64) {
		var each []int64
		var sum int64
		for _, p := range pids {
			v := procStatusKB(p, "VmRSS")
			each = append(each, v)
			sum += v
		}
		return each, sum
	}
	anon := func() int64 {
		var sum int64
		for _, p := range pids {
			sum += procStatusKB(p, "RssAnon")
		}
		return sum
	}
	cpu := func() float64 {
		var s float64
		for _, p := range pids {
			s += cpuSeconds(strconv.Itoa(p))
		}
		return s
	}
	each0, rss0 := rss()
	anon0 := anon()
	emit(map[string]any{"phase": "idle", "n": 0, "rss_kb": each0, "rss_total_kb": rss0, "rss_anon_kb": anon0})

	ctx := context.Background()
	sims := make([]*sim, 0, nmax) // nil where the connection failed
	failed := 0
	var lastConnErr error
	connect := func(from, to int) {
		out := make([]*sim, to-from)
		var next atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := 0; w < *dialers; w++ {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= to {
						return
					}
					s, err := connectSim(ctx, ids[i], pool, addrs[i%len(addrs)], *pull)
					if err != nil {
						mu.Lock()
						failed++
						lastConnErr = fmt.Errorf("simulated ward %d (%s): %w", i, ids[i].node, err)
						mu.Unlock()
						continue
					}
					out[i-from] = s
				}
			})
		}
		wg.Wait()
		sims = append(sims, out...)
	}
	defer func() {
		var wg sync.WaitGroup
		for _, s := range sims {
			if s != nil {
				wg.Go(s.link.close)
			}
		}
		wg.Wait()
	}()

	// Phase 1: memory per idle connected ward.
	for _, n := range steps {
		t := time.Now()
		connect(len(sims), n)
		took := time.Since(t)
		time.Sleep(*settle)
		each, sum := rss()
		an := anon()
		connected := n - failed
		perWard, perWardAll := 0.0, 0.0
		if connected > 0 {
			perWard = float64(an-anon0) / float64(connected)
			perWardAll = float64(sum-rss0) / float64(connected)
		}
		row := map[string]any{"phase": "idle", "n": n, "connected": connected, "connect_failed": failed,
			"connect_s": round(took.Seconds(), 2), "rss_kb": each, "rss_total_kb": sum, "rss_anon_kb": an,
			"kb_per_ward": round(perWard, 1), "kb_per_ward_vmrss": round(perWardAll, 1),
			"syncload_rss_kb": procStatusKB(os.Getpid(), "VmRSS")}
		if lastConnErr != nil {
			row["last_error"] = lastConnErr.Error()
		}
		emit(row)
		if failed > n/2 {
			return fmt.Errorf("%d of %d simulated wards could not connect; last: %v", failed, n, lastConnErr)
		}
	}

	// Phase 2: push-to-commit latency, every simulated ward of the step
	// writing 1 op/s (the others stay connected and idle).
	for _, n := range steps {
		var mu sync.Mutex
		var lat []time.Duration
		var errCount, sent atomic.Int64
		var lastErr atomic.Value
		start := time.Now().Add(200 * time.Millisecond)
		end := start.Add(*duration)
		from := start.Add(*warmup)
		c0, self0 := cpu(), cpuSeconds("self")
		var wg sync.WaitGroup
		for i, s := range sims[:n] {
			if s == nil || s.dead.Load() {
				errCount.Add(1)
				continue
			}
			// Spread the simulated wards evenly over each second.
			next := start.Add(time.Duration(i) * time.Second / time.Duration(n))
			wg.Go(func() {
				var mine []time.Duration
				for ; next.Before(end); next = next.Add(time.Second) {
					time.Sleep(time.Until(next))
					op := s.maker.next()
					sent.Add(1)
					s.push.SetDeadline(time.Now().Add(30 * time.Second))
					err := wire.WriteMsg(s.push, &wire.OpBatch{Ops: []schema.Op{op}})
					var msg wire.Msg
					if err == nil {
						msg, err = s.r.Read()
					}
					if err == nil {
						if a, ok := msg.(*wire.Ack); !ok {
							err = fmt.Errorf("got %T %v", msg, msg)
						} else if a.Seq != op.ID.Seq {
							err = fmt.Errorf("ack %d for seq %d", a.Seq, op.ID.Seq)
						}
					}
					if err != nil {
						errCount.Add(1)
						lastErr.Store(fmt.Sprintf("%s: %v", s.id.node, err))
						s.dead.Store(true)
						break
					}
					// From when the op was due, so a city that falls
					// behind is charged for the queueing.
					if !next.Before(from) {
						mine = append(mine, time.Since(next))
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		secs := time.Since(start).Seconds()
		c1, self1 := cpu(), cpuSeconds("self")
		slices.Sort(lat)
		each, sum := rss()
		row := map[string]any{"phase": "load", "n": n, "ops": sent.Load(), "measured": len(lat), "errors": errCount.Load(),
			"ops_per_s": round(float64(sent.Load())/secs, 0),
			"p50_ms":    pctl(lat, 0.50), "p99_ms": pctl(lat, 0.99), "max_ms": pctl(lat, 1),
			"city_cpu_cores": round((c1-c0)/secs, 2), "syncload_cpu_cores": round((self1-self0)/secs, 2),
			"rss_kb": each, "rss_total_kb": sum}
		if v := lastErr.Load(); v != nil {
			row["last_error"] = v
		}
		emit(row)
	}
	return nil
}

func connectSim(ctx context.Context, id identity, pool *x509.CertPool, addr string, pull bool) (*sim, error) {
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	l, err := dialLink(dctx, id, pool, addr)
	if err != nil {
		return nil, err
	}
	push, r, hw, err := l.openPush(dctx, id)
	if err != nil {
		l.close()
		return nil, err
	}
	if hw != 0 {
		l.close()
		return nil, fmt.Errorf("the city already holds %d ops of %s (use another -node-prefix)", hw, id.node)
	}
	s := &sim{id: id, link: l, push: push, r: r, maker: newOpMaker(id.node, id.ward, id.opKey)}
	if pull {
		// A cursor past any commit index: the stream stays open for live
		// changes only, as for a ward that is caught up (the load is about
		// connections and pushes, not about downloading partitions).
		sc, pr, err := l.stream(dctx, &wire.Hello{Proto: wire.ProtoPull, Node: id.node, Ward: id.ward, Versions: []uint8{wire.Version}},
			&wire.Cursor{Ward: id.ward, Since: 1 << 62})
		if err != nil {
			l.close()
			return nil, fmt.Errorf("pull hello: %w", err)
		}
		s.pull = sc
		go func() {
			for {
				if _, err := pr.Read(); err != nil {
					return
				}
			}
		}()
	}
	return s, nil
}
