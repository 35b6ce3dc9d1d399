package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/replication/blob"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// scan makes a PDF-looking file of n random bytes.
func scan(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	copy(b, "%PDF-1.7\n")
	return b
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// attach uploads a file to a dossier on the ward and returns its hash.
func (w *wardNode) attach(t *testing.T, dossier, name string, data []byte) string {
	t.Helper()
	req, _ := http.NewRequest("POST", w.api.base+"/v1/dossiers/"+dossier+"/attachments?name="+url.QueryEscape(name), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+w.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	hc := &http.Client{Timeout: 2 * time.Minute}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("attach %s: %v", name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("attach %s: HTTP %d %s", name, resp.StatusCode, body)
	}
	var a struct {
		Hash string `json:"hash"`
	}
	json.Unmarshal(body, &a)
	if a.Hash != hexSum(data) {
		t.Fatalf("attach %s: hash %q, want %s", name, a.Hash, hexSum(data))
	}
	return a.Hash
}

func (w *wardNode) newDossier(t *testing.T) string {
	t.Helper()
	data := w.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
		"applicant": map[string]string{"name": "Trần Thị Bích", "id_number": "079123456780"}}, 201)
	var d struct {
		ID string `json:"id"`
	}
	json.Unmarshal(data, &d)
	return d.ID
}

// cityBlob downloads a blob from a member's API; here=true refuses to
// fetch it from a peer. It returns the HTTP status and the body's hash.
func (e *cityEnv) cityBlob(member, hash string, here bool) (int, string) {
	u := e.members[member].url + "/v1/blobs/" + hash
	if here {
		u += "?here=true"
	}
	resp, err := e.admin.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	h := sha256.New()
	io.Copy(h, resp.Body)
	return resp.StatusCode, hex.EncodeToString(h.Sum(nil))
}

// holders lists the members that hold blob hash on their own disk.
func (e *cityEnv) holders(members []string, hash string) []string {
	var out []string
	for _, m := range members {
		if code, got := e.cityBlob(m, hash, true); code == 200 && got == hash {
			out = append(out, m)
		}
	}
	return out
}

type cityAttachments struct {
	Status      string `json:"status"`
	Attachments []struct {
		Hash string `json:"hash"`
	} `json:"attachments"`
}

func (e *cityEnv) cityAttachments(member, dossier string) (cityAttachments, bool) {
	code, body := e.call(e.admin, "GET", e.members[member].url+"/v1/dossiers/"+dossier, nil)
	var d cityAttachments
	if code != 200 || json.Unmarshal(body, &d) != nil {
		return d, false
	}
	return d, true
}

// metric reads one unlabelled counter or gauge from a /metrics page.
func metric(t *testing.T, page []byte, name string) float64 {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(page))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return 0
}

func (w *wardNode) metrics(t *testing.T) []byte {
	t.Helper()
	resp, err := http.Get(w.api.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// TestBlobAttachOfflineThenMajority is the "done when": a clerk
// attaches a 20 MB PDF while the ward is cut off; the dossier's status
// changes after the attach go up first (metadata first); the attachment
// is committed only once a majority of members holds the blob; after
// that any one member can be SIGKILLed and the blob is still read from
// the others with a matching hash; and a member added later ends up
// holding it.
func TestBlobAttachOfflineThenMajority(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps, city := e.proxiesFor(ctx, ids, 1)
	setCut(ps, true)
	w := e.initWard("wa", schema.DefaultWards().All()[0].Code)
	// A slow link: 20 MB take ~5 s, long enough to watch the order.
	w.proc = startNode(t, execWard(t, e, w, city, "--blob-bandwidth", "4000000", "--link-timeout", "2s"))
	w.api = newAPI(w.proc.url, w.token)

	id := w.newDossier(t)
	doc := scan(20 << 20)
	hash := w.attach(t, id, "giay-khai-sinh.pdf", doc)
	w.must(t, "POST", "/v1/dossiers/"+id+"/transitions", map[string]any{"to": "in_review"}, 200)
	// Offline, the ward serves the scan itself.
	req, _ := http.NewRequest("GET", w.api.base+"/v1/dossiers/"+id+"/attachments/"+hash, nil)
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, doc) {
		t.Fatalf("offline download: HTTP %d, %d bytes", resp.StatusCode, len(got))
	}

	setCut(ps, false)
	// The status reaches the city before the scan does.
	sawStatusFirst := false
	eventually(t, "the attachment committed at the city", 2*time.Minute, func() error {
		for _, m := range ids {
			d, ok := e.cityAttachments(m, id)
			if !ok {
				continue
			}
			if len(d.Attachments) == 0 {
				if d.Status == "in_review" {
					sawStatusFirst = true
				}
				continue
			}
			// Committed: a majority must hold the blob already.
			if h := e.holders(ids, hash); len(h) < 2 {
				t.Fatalf("member %s shows the attachment but only %v hold the blob", m, h)
			}
			return nil
		}
		return fmt.Errorf("not yet")
	})
	if !sawStatusFirst {
		t.Fatal("never saw the dossier's new status at the city before its attachment: metadata did not go first")
	}
	// Every member gets a copy; then kill any one and read from the others.
	eventually(t, "every member holds the blob", time.Minute, func() error {
		if h := e.holders(ids, hash); len(h) != 3 {
			return fmt.Errorf("holders %v", h)
		}
		return nil
	})
	e.members["c2"].kill9()
	for _, m := range []string{"c1", "c3"} {
		if code, got := e.cityBlob(m, hash, false); code != 200 || got != hash {
			t.Fatalf("with c2 dead, %s serves HTTP %d hash %s", m, code, got)
		}
	}
	// A range read from the city API.
	rq, _ := http.NewRequest("GET", e.members["c1"].url+"/v1/blobs/"+hash, nil)
	rq.Header.Set("Range", "bytes=1048570-1048599")
	rr, err := e.admin.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rr.Body)
	rr.Body.Close()
	if rr.StatusCode != http.StatusPartialContent || !bytes.Equal(part, doc[1048570:1048600]) {
		t.Fatalf("range read: HTTP %d, %d bytes", rr.StatusCode, len(part))
	}
	// Invariant 4 on the blob ALPN: another ward's certificate may not get
	// the blob; the ward's own may.
	other := e.rawPusher(ctx, "wb", schema.DefaultWards().All()[1].Code)
	own := e.rawPusher(ctx, "wa2", w.ward)
	h, _ := schema.ParseHash(hash)
	for _, c := range []struct {
		p     *rawPusher
		allow bool
	}{{other, false}, {own, true}} {
		conn, err := c.p.ep.Dial(ctx, e.quic["c1"], transport.ALPNBlob, schema.PeerCity)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := blobstore.Open(blobstore.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = blob.Get(ctx, conn, c.p.node, c.p.ward, bs, h, blob.Options{})
		st, _ := bs.Stats()
		bs.Close()
		if c.allow && (err != nil || st.Chunks != 20) {
			t.Fatalf("the ward's own certificate could not get its blob: %v (%d chunks)", err, st.Chunks)
		}
		if !c.allow && (!errors.Is(err, schema.ErrForbidden) || st.Chunks != 0) {
			t.Fatalf("another ward's certificate got the blob: %v (%d chunks)", err, st.Chunks)
		}
	}
	// A member added later fetches what it should hold.
	e.start("c4", "--join", e.members["c1"].url)
	eventually(t, "the new member holds the blob", time.Minute, func() error {
		if code, got := e.cityBlob("c4", hash, true); code != 200 || got != hash {
			return fmt.Errorf("c4: HTTP %d\n%s", code, e.members["c4"].stderr.String())
		}
		return nil
	})
}

// startCity3 starts a bootstrapped 3-member city and waits for a leader.
func startCity3(t *testing.T) (*cityEnv, []string) {
	t.Helper()
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", e.bootstrapSpec(ids...))
	}
	e.waitLeader("c1", "")
	return e, ids
}

// execWard is runWard with extra flags.
func execWard(t *testing.T, e *cityEnv, w *wardNode, city string, extra ...string) *exec.Cmd {
	args := append([]string{"ward", "run", "--data", w.dir, "--http", "127.0.0.1:0",
		"--city", city, "--tls", filepath.Join(e.dir, "tls", w.id), "--quic", "127.0.0.1:0"}, extra...)
	return exec.Command(wardsyncBin(t), args...)
}

// TestBlobRoughLink sends 200 MB of scans from a ward to the city through
// the fault proxy, cutting the link every ~16 MB for longer than the
// ward's link timeout (so the connection really dies and every transfer
// is retried on a new one). After each cut at most one chunk is sent
// again, and the blobs' hashes match end to end on every member.
func TestBlobRoughLink(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seed := int64(chaosSeed(t))
	ps, city := e.proxiesFor(ctx, ids, seed)
	setCut(ps, true)
	w := e.initWard("wa", schema.DefaultWards().All()[0].Code)
	w.proc = startNode(t, execWard(t, e, w, city, "--link-timeout", "1s"))
	w.api = newAPI(w.proc.url, w.token)
	var hashes []string
	const files, size = 10, 20 << 20
	for i := range files {
		id := w.newDossier(t)
		hashes = append(hashes, w.attach(t, id, fmt.Sprintf("scan-%02d.pdf", i), scan(size)))
	}
	setCut(ps, false)
	cuts, next := 0, float64(16<<20)
	deadline := time.Now().Add(4 * time.Minute)
	for {
		page := w.metrics(t)
		sent := metric(t, page, "wardsync_blob_sent_bytes_total")
		var st struct {
			Blobs struct {
				PendingUploads int `json:"pending_uploads"`
			} `json:"blobs"`
		}
		json.Unmarshal(w.must(t, "GET", "/v1/sync/status", nil, 200), &st)
		if st.Blobs.PendingUploads == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uploads still pending after 4 minutes (%d left, %d cuts, %.0f bytes sent)\n%s", st.Blobs.PendingUploads, cuts, sent, w.proc.stderr.String())
		}
		if sent >= next {
			setCut(ps, true)
			time.Sleep(1800 * time.Millisecond) // past the 1 s link timeout: the connection dies
			setCut(ps, false)
			cuts++
			next = sent + 16<<20
		}
		time.Sleep(50 * time.Millisecond)
	}
	sentChunks := metric(t, w.metrics(t), "wardsync_blob_sent_bytes_total") / float64(schema.ChunkSize)
	resent := sentChunks - files*size/schema.ChunkSize
	t.Logf("%d cuts; %.0f chunks sent for %d; %.0f sent again", cuts, sentChunks, files*size/schema.ChunkSize, resent)
	if cuts < 5 {
		t.Fatalf("only %d cuts happened; the test did not test resumption", cuts)
	}
	if resent > float64(cuts) {
		t.Fatalf("%.0f chunks sent again over %d cuts: more than one per cut", resent, cuts)
	}
	for _, h := range hashes {
		eventually(t, "every member holds "+h[:8], time.Minute, func() error {
			if got := e.holders(ids, h); len(got) != 3 {
				return fmt.Errorf("holders %v", got)
			}
			return nil
		})
	}
}

// TestBlobScrubRepairsRottedChunk: a chunk rots on a running member's
// disk (a byte flipped under badger). `ops scrub` finds it, deletes it,
// fetches a good copy from a peer and reports nothing missing. Then the
// member's value log is damaged while it is stopped: it starts anyway
// (keeping a copy of the damaged files) and fetches back what it lost.
func TestBlobScrubRepairsRottedChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	w := e.initWard("wa", schema.DefaultWards().All()[0].Code)
	e.runWard(w, e.cityQUIC(ids...))
	id := w.newDossier(t)
	hash := w.attach(t, id, "so-ho-khau.pdf", scan(8<<20))
	eventually(t, "every member holds the blob", time.Minute, func() error {
		if h := e.holders(ids, hash); len(h) != 3 {
			return fmt.Errorf("holders %v", h)
		}
		return nil
	})
	vlogs := func() []string {
		logs, _ := filepath.Glob(filepath.Join(e.dir, "data", "c3", "blobs", "db", "*.vlog"))
		return logs
	}
	flip := func(path string, offs ...int64) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, off := range offs {
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 1. Rot under the running member: inside the chunks (the log starts
	// with the manifest, then 8 MiB of chunks).
	if len(vlogs()) == 0 {
		t.Fatal("no value log on c3")
	}
	flip(vlogs()[0], 3<<20, 5<<20+17)
	out, err := exec.Command(wardsyncBin(t), "ops", "scrub", "--city", e.members["c3"].url, "--tls", filepath.Join(e.dir, "tls", "admin"), "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("ops scrub: %v\n%s", err, out)
	}
	var res struct {
		Members []blob.ScrubResult `json:"members"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ops scrub output: %v\n%s", err, out)
	}
	found := 0
	for _, m := range res.Members {
		if m.Error != "" || m.Missing != 0 {
			t.Fatalf("scrub of %s: %+v", m.Member, m)
		}
		if m.Member == "c3" {
			found = m.Report.Bad + m.Report.Unreadable
		} else if m.Report.Bad+m.Report.Unreadable != 0 {
			t.Fatalf("scrub found damage on healthy member %s: %+v", m.Member, m.Report)
		}
	}
	if found == 0 {
		t.Fatalf("scrub found no damaged chunk on c3: %s", out)
	}
	if code, got := e.cityBlob("c3", hash, true); code != 200 || got != hash {
		t.Fatalf("after the scrub c3 serves HTTP %d hash %s", code, got)
	}
	// 2. Damage while stopped: the member starts, keeps the evidence and
	// fetches back what it lost.
	e.members["c3"].stop()
	for _, f := range vlogs() {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 4<<20 {
			flip(f, fi.Size()/2)
		}
	}
	e.start("c3")
	eventually(t, "c3 holds the blob again", time.Minute, func() error {
		if code, got := e.cityBlob("c3", hash, true); code != 200 || got != hash {
			return fmt.Errorf("c3: HTTP %d", code)
		}
		return nil
	})
	if !strings.Contains(e.members["c3"].stderr.String(), "log damaged") {
		t.Fatal("c3 did not report the damaged log at start")
	}
	if kept, _ := filepath.Glob(filepath.Join(e.dir, "data", "c3", "blobs", "db-damaged-*")); len(kept) == 0 {
		t.Fatal("c3 reported damage but kept no copy of the damaged files")
	}
}

// TestInvariant1AckedAttachmentsSurviveKill9: invariant 1 for scans.
// Clerks upload attachments concurrently; the ward node is SIGKILLed in the
// middle, three times; after each restart every upload that got a 201 is
// there, byte for byte, and the node opens its blob store without help.
func TestInvariant1AckedAttachmentsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test runs the binary; skipped with -short")
	}
	dataDir := filepath.Join(t.TempDir(), "node")
	token := initNode(t, dataDir)
	node := startNode(t, runWardCmd(t, dataDir))
	w := &wardNode{token: token, api: newAPI(node.url, token)}
	dossier := w.newDossier(t)
	acked := map[string][]byte{} // hash → content
	var mu sync.Mutex
	for round := 1; round <= 3; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				hc := &http.Client{Timeout: 30 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					data := scan((1 + mrand.IntN(3)) << 20)
					req, _ := http.NewRequest("POST", w.api.base+"/v1/dossiers/"+dossier+"/attachments?name=scan.pdf", bytes.NewReader(data))
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := hc.Do(req)
					if err != nil {
						return // the node died under us
					}
					resp.Body.Close()
					if resp.StatusCode == http.StatusCreated {
						mu.Lock()
						acked[hexSum(data)] = data
						mu.Unlock()
					}
				}
			})
		}
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= round*8 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		node.kill9()
		close(stop)
		wg.Wait()
		node = startNode(t, runWardCmd(t, dataDir))
		w.api = newAPI(node.url, token)
		mu.Lock()
		for h, data := range acked {
			req, _ := http.NewRequest("GET", w.api.base+"/v1/dossiers/"+dossier+"/attachments/"+h, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, data) {
				t.Fatalf("round %d: acknowledged attachment %s: HTTP %d, %d of %d bytes match", round, h[:12], resp.StatusCode, len(got), len(data))
			}
		}
		t.Logf("round %d: %d acknowledged attachments all intact after kill -9", round, len(acked))
		mu.Unlock()
	}
}
