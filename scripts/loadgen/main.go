// Command loadgen drives durable writes of about 2 KB at a wardsync city
// cluster (portal intake, POST /v1/dossiers) or at an etcd cluster (Put),
// with the same load shape, and prints one JSON line of results. It is a
// separate module so the main module does not depend on the etcd client.
//
//	loadgen -target wardsync -urls https://127.0.0.1:8443,https://... -tls DIR -concurrency 64 -duration 10s
//	loadgen -target etcd -endpoints 127.0.0.1:2379,... -concurrency 64 -duration 10s
//	loadgen ... -concurrency 256 -rate 5000     # open loop at 5000 requests/s
//
// Load shape, for both targets:
//   - -concurrency workers, each with one request in flight at a time.
//   - Closed loop by default: a worker sends its next request as soon as
//     the previous one is answered.
//   - With -rate R, open loop: request n is due at start + n/R, whoever
//     sends it; latency is measured from when it was due, so a server that
//     falls behind is charged for the queueing (no coordinated omission).
//   - Requests go round-robin over all given URLs or endpoints. For
//     wardsync, followers forward to the leader over QUIC; for etcd, the
//     client balances round-robin over its endpoints and followers forward
//     proposals to the leader the same way.
//   - Every request carries a unique, about 2 KB JSON dossier: for
//     wardsync it is the POST body, for etcd the value, under a unique key.
//
// It exits 1 (after printing the JSON line) if more than 1% of requests
// fail.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BodyBytes is the target size of one request body (wardsync) or value (etcd).
const BodyBytes = 2048

type config struct {
	target      string
	urls        []string
	tlsDir      string
	endpoints   []string
	etcdClients int
	ward        string
	concurrency int
	duration    time.Duration
	requests    int64
	warmup      time.Duration
	rate        float64
	invalid     bool
	timeout     time.Duration
	maxErrRate  float64
}

// sender sends request number n (unique across the run) and reports
// whether it succeeded.
type sender func(ctx context.Context, worker int, n int64) error

type result struct {
	Target      string  `json:"target"`
	Mode        string  `json:"mode,omitempty"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	OpsPerS     float64 `json:"ops_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	BodyBytes   int     `json:"body_bytes"`
	ClientCPUS  float64 `json:"client_cpu_s"` // this process's CPU time in the measured run
}

func main() {
	var cfg config
	var urls, endpoints string
	flag.StringVar(&cfg.target, "target", "", "wardsync or etcd")
	flag.StringVar(&urls, "urls", "", "wardsync: comma-separated https:// URLs of city members (requests go round-robin)")
	flag.StringVar(&cfg.tlsDir, "tls", "", "wardsync: bundle DIR with ca.crt, node.crt, node.key of a portal (or admin) certificate")
	flag.StringVar(&cfg.ward, "ward", "HCM001", "wardsync: ward code of the submissions")
	flag.BoolVar(&cfg.invalid, "invalid", false, "wardsync: send bodies with an unknown procedure and expect 400 (measures HTTPS + JSON decode + validation without Raft)")
	flag.StringVar(&endpoints, "endpoints", "", "etcd: comma-separated HOST:PORT client endpoints")
	flag.IntVar(&cfg.etcdClients, "etcd-clients", 0, "etcd: number of client connections (default: one per 16 workers, at least 1)")
	flag.IntVar(&cfg.concurrency, "concurrency", 16, "concurrent workers, each with one request in flight")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured run length (ignored with -requests)")
	flag.Int64Var(&cfg.requests, "requests", 0, "measure this many requests instead of -duration")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before the measured run")
	flag.Float64Var(&cfg.rate, "rate", 0, "open loop: requests per second across all workers (0: closed loop)")
	flag.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "per-request timeout")
	flag.Float64Var(&cfg.maxErrRate, "max-error-rate", 0.01, "fail (exit 1) above this fraction of failed requests")
	freePorts := flag.Int("free-ports", 0, "print N loopback port numbers free for both TCP and UDP, and exit (for scripts)")
	flag.Parse()
	if *freePorts > 0 {
		if err := printFreePorts(*freePorts); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	cfg.urls = splitList(urls)
	cfg.endpoints = splitList(endpoints)
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
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

func run(cfg config) error {
	if cfg.concurrency < 1 {
		return errors.New("-concurrency must be at least 1")
	}
	if cfg.rate < 0 || cfg.duration <= 0 && cfg.requests <= 0 {
		return errors.New("-rate must be ≥ 0, and -duration or -requests positive")
	}
	var send sender
	var closeFn func()
	switch cfg.target {
	case "wardsync":
		s, err := newWardsync(cfg)
		if err != nil {
			return err
		}
		send, closeFn = s.send, s.close
	case "etcd":
		if cfg.invalid {
			return errors.New("-invalid is for -target wardsync")
		}
		s, err := newEtcd(cfg)
		if err != nil {
			return err
		}
		send, closeFn = s.send, s.close
	default:
		return fmt.Errorf("-target %q: want wardsync or etcd", cfg.target)
	}
	defer closeFn()

	// Request numbers are unique across warmup and run, and across runs
	// (the nanosecond start is in every key and ID number), so no request
	// collides with an earlier one.
	var seq atomic.Int64
	if cfg.warmup > 0 {
		phase(cfg, send, &seq, cfg.warmup, 0)
	}
	cpu0 := cpuTime()
	st := phase(cfg, send, &seq, cfg.duration, cfg.requests)
	cpu := cpuTime() - cpu0

	res := result{Target: cfg.target, Concurrency: cfg.concurrency, Rate: cfg.rate,
		Requests: st.ok + st.failed, Errors: st.failed, Seconds: round(st.elapsed.Seconds(), 3), BodyBytes: st.bodyBytes,
		ClientCPUS: round(cpu.Seconds(), 2)}
	if cfg.invalid {
		res.Mode = "invalid-400"
	}
	if st.elapsed > 0 {
		res.OpsPerS = round(float64(st.ok)/st.elapsed.Seconds(), 1)
	}
	if n := len(st.lat); n > 0 {
		slices.Sort(st.lat)
		res.P50Ms = ms(st.lat[pct(n, 0.50)])
		res.P99Ms = ms(st.lat[pct(n, 0.99)])
		res.MaxMs = ms(st.lat[n-1])
	}
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	if res.Requests == 0 {
		return errors.New("no request completed")
	}
	if res.Errors > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: %d of %d requests failed; first errors:\n  %s\n", res.Errors, res.Requests, strings.Join(st.firstErrs, "\n  "))
	}
	if rate := float64(res.Errors) / float64(res.Requests); rate > cfg.maxErrRate {
		return fmt.Errorf("FAILED: %d of %d requests failed (%.2f%%, limit %.2f%%)", res.Errors, res.Requests, 100*rate, 100*cfg.maxErrRate)
	}
	return nil
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// printFreePorts prints n distinct loopback ports that were free for both
// TCP and UDP a moment ago (a member uses one UDP port for QUIC; etcd and
// HTTPS use TCP).
func printFreePorts(n int) error {
	seen := map[int]bool{}
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for tries := 0; len(seen) < n; tries++ {
		if tries > 100*n {
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

func pct(n int, p float64) int { return min(n-1, int(math.Ceil(p*float64(n)))-1) }

func ms(d time.Duration) float64 { return round(float64(d)/1e6, 2) }

func round(x float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(x*f) / f
}

type stats struct {
	ok, failed int64
	lat        []time.Duration
	elapsed    time.Duration
	firstErrs  []string
	bodyBytes  int
}

// phase runs the workers for d (or until limit requests have been sent)
// and collects their latencies.
func phase(cfg config, send sender, seq *atomic.Int64, d time.Duration, limit int64) stats {
	var (
		mu     sync.Mutex
		st     stats
		wg     sync.WaitGroup
		issued atomic.Int64
	)
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(d)
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	for w := 0; w < cfg.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var lat []time.Duration
			var ok, failed int64
			var errs []string
			for {
				k := issued.Add(1) - 1
				if limit > 0 && k >= limit {
					break
				}
				due := time.Now()
				if interval > 0 {
					due = start.Add(time.Duration(k) * interval)
				}
				if limit <= 0 && !due.Before(deadline) {
					break
				}
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
				err := send(rctx, w, seq.Add(1))
				cancel()
				if err != nil {
					failed++
					if len(errs) < 3 {
						errs = append(errs, err.Error())
					}
					continue
				}
				ok++
				lat = append(lat, time.Since(due))
			}
			mu.Lock()
			st.ok += ok
			st.failed += failed
			st.lat = append(st.lat, lat...)
			for _, e := range errs {
				if len(st.firstErrs) < 5 {
					st.firstErrs = append(st.firstErrs, e)
				}
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	st.bodyBytes = len(dossierBody(cfg.ward, runID, 0, false))
	return st
}

// runID makes request numbers unique across loadgen runs against the same
// cluster.
var runID = time.Now().UnixNano()

// dossierBody is one portal submission of about BodyBytes bytes: a
// birth registration with a few padded fields, unique per (run, n).
func dossierBody(ward string, run, n int64, invalid bool) []byte {
	proc := "birth-registration"
	if invalid {
		proc = "benchmark-no-such-procedure"
	}
	id := fmt.Sprintf("%012d", uint64(run/1000+n)%1_000_000_000_000)
	body := map[string]any{
		"procedure": proc, "ward": ward,
		"applicant": map[string]string{"name": fmt.Sprintf("Nguyen Van Benchmark %d", n), "id_number": id},
		"fields": map[string]string{
			"child_name": fmt.Sprintf("Nguyen Thi Load %d", n), "child_birth_date": "2026-11-23",
			"father_name": "Nguyen Van Cha", "mother_name": "Tran Thi Me",
			"birth_place": "Benh vien Tu Du, 284 Cong Quynh, Phuong Pham Ngu Lao",
			"notes":       "",
		},
	}
	b, _ := json.Marshal(body)
	pad := BodyBytes - len(b)
	if pad > 0 {
		body["fields"].(map[string]string)["notes"] = strings.Repeat("x", pad)
		b, _ = json.Marshal(body)
	}
	return b
}

// ---- wardsync ----

type wardsyncSender struct {
	cfg    config
	client *http.Client
}

func newWardsync(cfg config) (*wardsyncSender, error) {
	if len(cfg.urls) == 0 || cfg.tlsDir == "" {
		return nil, errors.New("-target wardsync needs -urls and -tls")
	}
	for _, u := range cfg.urls {
		if !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("-urls: %q is not an https:// URL", u)
		}
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(cfg.tlsDir, "node.crt"), filepath.Join(cfg.tlsDir, "node.key"))
	if err != nil {
		return nil, fmt.Errorf("-tls: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(cfg.tlsDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("-tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("-tls: no certificate in %s", filepath.Join(cfg.tlsDir, "ca.crt"))
	}
	conns := cfg.concurrency + 8
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
			// The member's certificate names it by a wardsync:// URI SAN,
			// not by host name: check the chain against the city CA and
			// the role here instead (as cityHTTPClient in cmd/wardsync).
			InsecureSkipVerify:    true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error { return verifyCityMember(raw, pool) },
		},
		// One keep-alive connection per worker: a portal keeps its
		// connections, and re-handshaking per request would measure TLS.
		MaxIdleConns: conns * max(1, len(cfg.urls)), MaxIdleConnsPerHost: conns, IdleConnTimeout: 90 * time.Second,
	}
	return &wardsyncSender{cfg: cfg, client: &http.Client{Transport: tr}}, nil
}

func verifyCityMember(raw [][]byte, pool *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("server sent no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("server certificate is not from the city CA: %w", err)
	}
	for _, u := range leaf.URIs {
		if u.Scheme == "wardsync" && u.Host == "city" {
			return nil
		}
	}
	return fmt.Errorf("server certificate %q is not a city member's (no wardsync://city/... URI SAN)", leaf.Subject.CommonName)
}

func (s *wardsyncSender) send(ctx context.Context, worker int, n int64) error {
	url := s.cfg.urls[int(n%int64(len(s.cfg.urls)))] + "/v1/dossiers"
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(dossierBody(s.cfg.ward, runID, n, s.cfg.invalid)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	want := http.StatusCreated
	if s.cfg.invalid {
		want = http.StatusBadRequest
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s: HTTP %d: %.200s", url, resp.StatusCode, bytes.TrimSpace(data))
	}
	return nil
}

func (s *wardsyncSender) close() { s.client.CloseIdleConnections() }

// ---- etcd ----

type etcdSender struct {
	cfg     config
	clients []*clientv3.Client
}

func newEtcd(cfg config) (*etcdSender, error) {
	if len(cfg.endpoints) == 0 {
		return nil, errors.New("-target etcd needs -endpoints")
	}
	n := cfg.etcdClients
	if n <= 0 {
		n = max(1, (cfg.concurrency+15)/16)
	}
	s := &etcdSender{cfg: cfg}
	for i := 0; i < n; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: cfg.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("etcd client: %w", err)
		}
		s.clients = append(s.clients, c)
	}
	return s, nil
}

func (s *etcdSender) send(ctx context.Context, worker int, n int64) error {
	c := s.clients[worker%len(s.clients)]
	key := fmt.Sprintf("/wardsync-bench/%d/%012d", runID, n)
	_, err := c.Put(ctx, key, string(dossierBody(s.cfg.ward, runID, n, false)))
	return err
}

func (s *etcdSender) close() {
	for _, c := range s.clients {
		c.Close()
	}
}
