package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// cityEnv is a city of real `wardsync city run` processes on loopback QUIC,
// with certificates made by the real `ops` commands.
type cityEnv struct {
	t       *testing.T
	dir     string
	quic    map[string]string // member ID → QUIC address
	members map[string]*nodeProc
	mu      sync.Mutex // guards members against writers running during start
	portal  *http.Client
	admin   *http.Client
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func runOK(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(wardsyncBin(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("wardsync %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newCityEnv(t *testing.T, ids ...string) *cityEnv {
	t.Helper()
	e := &cityEnv{t: t, dir: t.TempDir(), quic: map[string]string{}, members: map[string]*nodeProc{}}
	ca := filepath.Join(e.dir, "ca")
	runOK(t, "ops", "ca", "init", "--out", ca)
	for _, id := range append(ids, "c4") {
		runOK(t, "ops", "cert", "issue", "--ca", ca, "--role", "city", "--node", id, "--ip", "127.0.0.1", "--out", filepath.Join(e.dir, "tls", id))
		e.quic[id] = freeUDP(t)
	}
	runOK(t, "ops", "cert", "issue", "--ca", ca, "--role", "portal", "--node", "portal", "--out", filepath.Join(e.dir, "tls", "portal"))
	runOK(t, "ops", "cert", "issue", "--ca", ca, "--role", "admin", "--node", "it-desk", "--out", filepath.Join(e.dir, "tls", "admin"))
	e.portal = e.client("portal")
	e.admin = e.client("admin")
	return e
}

func (e *cityEnv) client(name string) *http.Client {
	cert, pool, _, err := certs.LoadBundle(filepath.Join(e.dir, "tls", name), time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	c := cityHTTPClient(cert, pool)
	c.Timeout = 40 * time.Second
	return c
}

func (e *cityEnv) bootstrapSpec(ids ...string) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, id+"="+e.quic[id])
	}
	return strings.Join(parts, ",")
}

// start runs member id with extra flags (--bootstrap or --join).
func (e *cityEnv) start(id string, extra ...string) *nodeProc {
	e.t.Helper()
	args := append([]string{"city", "run", "--data", filepath.Join(e.dir, "data", id), "--node", id,
		"--quic", e.quic[id], "--http", "127.0.0.1:0", "--tls", filepath.Join(e.dir, "tls", id),
		"--heartbeat-timeout", "400ms", "--election-timeout", "400ms",
		"--snapshot-threshold", "40", "--trailing-logs", "10", "--snapshot-interval", "500ms",
		"--blob-repair-interval", "2s", "--log-level", "info"}, extra...)
	p := startNode(e.t, exec.Command(wardsyncBin(e.t), args...))
	e.mu.Lock()
	e.members[id] = p
	e.mu.Unlock()
	return p
}

type clusterView struct {
	Leader  string `json:"leader"`
	Members []struct {
		ID           string  `json:"id"`
		AppliedIndex *uint64 `json:"applied_index"`
	} `json:"members"`
}

func (e *cityEnv) call(c *http.Client, method, url string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// waitLeader waits until member id reports a leader among want.
func (e *cityEnv) waitLeader(via string, not string) string {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		code, body := e.call(e.admin, "GET", e.members[via].url+"/v1/cluster", nil)
		var v clusterView
		if code == 200 && json.Unmarshal(body, &v) == nil && v.Leader != "" && v.Leader != not {
			return v.Leader
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("no leader seen through %s within 30s\nstderr:\n%s", via, e.members[via].stderr.String())
	return ""
}

type portalDossier struct {
	ID        string `json:"id"`
	ReceiptNo string `json:"receipt_no"`
	Ward      string `json:"ward"`
	Status    string `json:"status"`
}

func (e *cityEnv) submit(via string, i int) (portalDossier, error) {
	body := map[string]any{"procedure": "birth-registration", "ward": testWard(e.t),
		"applicant": map[string]string{"name": fmt.Sprintf("Công dân %d", i), "id_number": fmt.Sprintf("%012d", 79_000_000_000+i)}}
	e.mu.Lock()
	base := e.members[via].url
	e.mu.Unlock()
	code, data := e.call(e.portal, "POST", base+"/v1/dossiers", body)
	if code != http.StatusCreated {
		return portalDossier{}, fmt.Errorf("submit via %s: HTTP %d: %s", via, code, data)
	}
	var d portalDossier
	return d, json.Unmarshal(data, &d)
}

// waitHas waits until member id holds every dossier in acked.
func (e *cityEnv) waitHas(id string, acked map[string]string) {
	e.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for dID, receipt := range acked {
		for {
			code, body := e.call(e.admin, "GET", e.members[id].url+"/v1/dossiers/"+dID, nil)
			if code == 200 {
				var d portalDossier
				json.Unmarshal(body, &d)
				if d.ReceiptNo != receipt {
					e.t.Fatalf("member %s has %s with receipt %s, acknowledged as %s", id, dID, d.ReceiptNo, receipt)
				}
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("member %s lacks acknowledged dossier %s (HTTP %d %s)\nstderr:\n%s", id, dID, code, body, e.members[id].stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestCityClusterSurvivesLeaderKill: portal submissions to any member are
// committed and visible on all; SIGKILL of the leader loses nothing
// committed; the old leader restarts and catches up from a snapshot after
// the log was compacted past it.
func TestCityClusterSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	leader := e.waitLeader("c1", "")
	acked := map[string]string{}
	receipts := map[string]bool{}
	record := func(d portalDossier) {
		if receipts[d.ReceiptNo] {
			t.Fatalf("receipt %s issued twice", d.ReceiptNo)
		}
		receipts[d.ReceiptNo] = true
		acked[d.ID] = d.ReceiptNo
	}
	// Submissions through every member: followers forward to the leader.
	for i := 0; i < 30; i++ {
		var d portalDossier
		var err error
		for try := 0; try < 50; try++ {
			if d, err = e.submit(ids[i%3], i); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // the city origin may still be initializing
		}
		if err != nil {
			t.Fatal(err)
		}
		record(d)
	}
	for _, id := range ids {
		e.waitHas(id, acked)
	}

	// Kill the leader; a new one is elected among the others.
	e.members[leader].kill9()
	var alive []string
	for _, id := range ids {
		if id != leader {
			alive = append(alive, id)
		}
	}
	newLeader := e.waitLeader(alive[0], leader)
	t.Logf("killed leader %s; new leader %s", leader, newLeader)
	// Enough entries while it is down that its log position is compacted
	// away (threshold 40, trailing 10): it must catch up from a snapshot.
	for i := 30; i < 230; i++ {
		d, err := e.submit(alive[i%2], i)
		if err != nil {
			t.Fatal(err)
		}
		record(d)
	}
	for _, id := range alive {
		e.waitHas(id, acked)
	}
	e.start(leader, "--bootstrap", boot) // --bootstrap is ignored: it has state
	e.waitHas(leader, acked)
	if !strings.Contains(e.members[leader].stderr.String(), "restored from snapshot") {
		t.Errorf("the restarted member caught up without a snapshot; the test meant to exercise InstallSnapshot\n%s", e.members[leader].stderr.String())
	}
	for _, id := range ids {
		e.members[id].stop()
	}
}

// TestCityMembershipChangesUnderWrites: a 4th member joins and another is
// removed while portal writes keep flowing; nothing acknowledged is lost.
func TestCityMembershipChangesUnderWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")

	var mu sync.Mutex
	acked := map[string]string{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * 100_000; !stop.Load(); i++ {
				d, err := e.submit("c1", i)
				if err != nil {
					failures.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				mu.Lock()
				acked[d.ID] = d.ReceiptNo
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	e.start("c4", "--join", e.members["c1"].url)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := e.call(e.admin, "GET", e.members["c1"].url+"/v1/cluster", nil)
		var v clusterView
		json.Unmarshal(body, &v)
		if code == 200 && len(v.Members) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("c4 never joined: %s\n%s", body, e.members["c4"].stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := e.call(e.admin, "DELETE", e.members["c1"].url+"/v1/cluster/members/c2", nil); code != 200 {
		t.Fatalf("remove c2: HTTP %d %s", code, body)
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 20 {
		t.Fatalf("only %d writes acknowledged during the membership changes (%d failed)", n, failures.Load())
	}
	t.Logf("%d writes acknowledged during join and remove (%d retried)", n, failures.Load())
	e.waitHas("c4", acked)
	e.waitHas("c3", acked)
	code, body := e.call(e.admin, "GET", e.members["c3"].url+"/v1/cluster", nil)
	if code != 200 || strings.Contains(string(body), `"c2"`) {
		t.Fatalf("c2 still in the configuration: %s", body)
	}
	// Leadership moves on request, and writes follow it.
	// The 200 means the old leader handed over and stepped down; c3 may
	// still name it for a heartbeat or two, and Raft lets another member
	// win the election the transfer starts. Wait for c4, and ask again
	// (as an operator would) if someone else won.
	for attempt := 1; ; attempt++ {
		if code, body := e.call(e.admin, "POST", e.members["c3"].url+"/v1/cluster/leadership", map[string]string{"to": "c4"}); code != 200 {
			t.Fatalf("transfer leadership: HTTP %d %s", code, body)
		}
		l := ""
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if l = e.waitLeader("c3", "c2"); l == "c4" {
				break
			}
		}
		if l == "c4" {
			break
		}
		if attempt == 3 {
			t.Fatalf("leader after %d transfers is %s, want c4", attempt, l)
		}
		t.Logf("transfer %d: %s leads, asking again", attempt, l)
	}
	if _, err := e.submit("c3", 424242); err != nil {
		t.Fatalf("write after leadership transfer: %v", err)
	}
	// A portal certificate may not change membership.
	if code, _ := e.call(e.portal, "DELETE", e.members["c1"].url+"/v1/cluster/members/c3", nil); code != http.StatusForbidden {
		t.Fatalf("portal removing a member: HTTP %d, want 403", code)
	}
}

// TestCityAPIRefusesWithoutCertificate: only /healthz answers a client
// with no certificate; certificates from another CA are refused.
func TestCityAPIRefusesWithoutCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e := newCityEnv(t, "c1")
	e.start("c1", "--bootstrap", e.bootstrapSpec("c1"))
	e.waitLeader("c1", "")
	_, pool, _, err := certs.LoadBundle(filepath.Join(e.dir, "tls", "admin"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	if code, body := e.call(anon, "GET", e.members["c1"].url+"/healthz", nil); code != 200 {
		t.Fatalf("healthz without certificate: HTTP %d %s", code, body)
	}
	code, body := e.call(anon, "GET", e.members["c1"].url+"/v1/cluster", nil)
	if code != http.StatusUnauthorized || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("cluster without certificate: HTTP %d %s", code, body)
	}
	// A client certificate from another CA fails the TLS handshake.
	other := filepath.Join(e.dir, "other")
	runOK(t, "ops", "ca", "init", "--out", other)
	runOK(t, "ops", "cert", "issue", "--ca", other, "--role", "admin", "--node", "intruder", "--out", filepath.Join(e.dir, "tls", "intruder"))
	cert, _, _, err := certs.LoadBundle(filepath.Join(e.dir, "tls", "intruder"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	intruder := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}}}
	if code, _ := e.call(intruder, "GET", e.members["c1"].url+"/v1/cluster", nil); code != 0 {
		t.Fatalf("a certificate from another CA got HTTP %d", code)
	}
	// Bad input to portal intake: a clear 4xx.
	for _, body := range []any{map[string]any{"procedure": "birth-registration", "applicant": map[string]string{"name": "A", "id_number": "079123456789"}},
		map[string]any{"procedure": "nope", "ward": testWard(t), "applicant": map[string]string{"name": "A", "id_number": "079123456789"}}} {
		if code, data := e.call(e.portal, "POST", e.members["c1"].url+"/v1/dossiers", body); code != 400 {
			t.Fatalf("bad portal body: HTTP %d %s", code, data)
		}
	}
}

// TestCityBadFramesOnEveryALPN is invariant 5 at the city: garbage,
// unknown versions and oversized frames on the sync and raft ALPNs get a
// clear error frame (or a closed stream) and never take a member down; the
// blob ALPN, not served yet, is refused at the handshake.
func TestCityBadFramesOnEveryALPN(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e := newCityEnv(t, "c1")
	e.start("c1", "--bootstrap", e.bootstrapSpec("c1"))
	e.waitLeader("c1", "")
	cert, pool, _, err := certs.LoadBundle(filepath.Join(e.dir, "tls", "c4"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ep, err := transport.New(transport.Config{Addr: "127.0.0.1:0", Cert: cert, CA: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go ep.Run(ctx)

	frame := func(version, typ byte, length uint32, payload []byte) []byte {
		b := []byte{version, typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[2:], length)
		return append(b, payload...)
	}
	hello, _ := wire.AppendFrame(nil, &wire.Hello{Proto: "raft", Node: "c4", Versions: []uint8{wire.Version}})
	blobHello, _ := wire.AppendFrame(nil, &wire.Hello{Proto: wire.ProtoBlob, Node: "c4", Versions: []uint8{wire.Version}})
	blobHello = blobHello[:len(blobHello):len(blobHello)] // each append below gets its own copy
	cases := []struct {
		name, alpn string
		send       []byte
		wantCode   string // "" = the stream is just closed
	}{
		{"sync garbage", transport.ALPNSync, []byte("GET / HTTP/1.1\r\n\r\n"), "unknown_version"},
		{"sync version 2", transport.ALPNSync, frame(2, 1, 0, nil), "unknown_version"},
		{"sync 4 GiB frame", transport.ALPNSync, frame(wire.Version, 1, 0xffffffff, nil), "too_large"},
		{"sync unknown type", transport.ALPNSync, frame(wire.Version, 250, 0, nil), "bad_frame"},
		{"sync unknown proto", transport.ALPNSync, mustFrame(t, &wire.Hello{Proto: "nope", Node: "c4", Versions: []uint8{1}}), "unknown_proto"},
		{"sync cluster bad request", transport.ALPNSync, append(mustFrame(t, &wire.Hello{Proto: "cluster", Node: "c4", Versions: []uint8{1}}), mustFrame(t, &wire.Forward{Command: []byte("{nope")})...), "bad_frame"},
		{"raft garbage", transport.ALPNRaft, []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0}, "unknown_version"},
		{"raft hello then garbage rpc", transport.ALPNRaft, append(hello, 0xff, 0xff, 0xff, 0xff, 0xff), ""},
		{"blob garbage", transport.ALPNBlob, []byte("GET / HTTP/1.1\r\n\r\n"), "unknown_version"},
		{"blob hello of another proto", transport.ALPNBlob, mustFrame(t, &wire.Hello{Proto: "push", Node: "c4", Versions: []uint8{1}}), "bad_frame"},
		{"blob unknown type", transport.ALPNBlob, append(blobHello, frame(wire.Version, 250, 0, nil)...), "bad_frame"},
		{"blob offer with a bad manifest", transport.ALPNBlob, append(blobHello, mustFrame(t, &wire.BlobOffer{Manifest: schema.Manifest{Size: 3 << 20, Type: schema.TypePDF, Chunks: make([][32]byte, 1)}})...), "invalid"},
		{"blob offer of an executable", transport.ALPNBlob, append(blobHello, mustFrame(t, &wire.BlobOffer{Manifest: schema.Manifest{Size: 10, Type: "application/x-msdownload", Chunks: make([][32]byte, 1)}})...), "invalid"},
		{"blob get of an unknown blob", transport.ALPNBlob, append(blobHello, mustFrame(t, &wire.BlobGet{})...), "not_found"},
		{"blob chunk before any offer", transport.ALPNBlob, append(blobHello, mustFrame(t, &wire.BlobChunk{Data: []byte("x")})...), "bad_frame"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := ep.Dial(ctx, e.quic["c1"], c.alpn)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.CloseWithError(0, "done")
			s, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.Write(c.send); err != nil {
				t.Fatal(err)
			}
			msg, err := wire.NewReader(s, 1<<20).Read()
			if c.wantCode == "" {
				if err == nil {
					t.Fatalf("stream answered %v, want it closed", msg)
				}
				return
			}
			em, ok := msg.(*wire.Error)
			if err != nil || !ok || em.Code != c.wantCode {
				t.Fatalf("answer %#v, %v; want an Error frame with code %s", msg, err, c.wantCode)
			}
		})
	}
	// The member is still up and still commits.
	if code, body := e.call(e.admin, "GET", e.members["c1"].url+"/healthz", nil); code != 200 {
		t.Fatalf("member unhealthy after bad frames: %d %s", code, body)
	}
	if _, err := e.submit("c1", 1); err != nil {
		t.Fatalf("member no longer commits after bad frames: %v", err)
	}
}

func mustFrame(t *testing.T, m wire.Msg) []byte {
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCityRecoverFromLostMajority: a backup of one member's data dir (taken
// while it is stopped) brings the city back after the other members are
// lost for good: `city recover` rewrites the configuration, and the member
// serves everything it held and takes new writes.
func TestCityRecoverFromLostMajority(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")
	acked := map[string]string{}
	for i := 0; i < 20; i++ {
		var d portalDossier
		var err error
		for try := 0; try < 50; try++ {
			if d, err = e.submit(ids[i%3], i); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		acked[d.ID] = d.ReceiptNo
	}
	for _, id := range ids {
		e.waitHas(id, acked)
	}
	for _, id := range ids {
		e.members[id].stop()
	}
	// c2 and c3 are gone for good; c1's data dir is what is left.
	runOK(t, "city", "recover", "--data", filepath.Join(e.dir, "data", "c1"), "--node", "c1", "--members", "c1="+e.quic["c1"])
	e.start("c1")
	e.waitLeader("c1", "")
	e.waitHas("c1", acked)
	d, err := e.submit("c1", 99)
	if err != nil {
		t.Fatalf("recovered member does not take writes: %v", err)
	}
	if acked[d.ID] != "" {
		t.Fatal("dossier ID reused")
	}
}

// TestCityForwardingDoesNotLeakStreams: more forwarded requests through one
// follower than a QUIC connection's stream limit (1,000) all succeed; a
// stream not released on both sides used to stall forwarding after ~1,000.
func TestCityForwardingDoesNotLeakStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	leader := e.waitLeader("c1", "")
	follower := "c1"
	if leader == "c1" {
		follower = "c2"
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 75; i++ {
				if _, err := e.submit(follower, w*1000+i); err != nil {
					if failed.Add(1) == 1 {
						t.Log(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of 1,200 forwarded submissions failed", n)
	}
}
