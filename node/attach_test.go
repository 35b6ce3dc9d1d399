package node_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Attachments over the real HTTP API of a real node (badger in a temp dir).
// Every refusal is checked twice: what the client is told, and that the
// node stored nothing (no chunk, no manifest, no op, no staging file).

const attachRoute = "POST /v1/dossiers/{id}/attachments"

// startAttachNode is startNode with an attachment limit (0: the default).
func startAttachNode(t *testing.T, max int64) *testEnv {
	t.Helper()
	e := startNode(t)
	if max != 0 {
		e.close()
		e.cfg.MaxAttachmentBytes = max
		e.open()
	}
	return e
}

// pdfBytes is a PDF-looking file of size bytes: the magic, then random.
func pdfBytes(t testing.TB, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	copy(b, "%PDF-1.7\n")
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type attachmentJSON struct {
	Op       string       `json:"op"`
	Name     string       `json:"name"`
	Hash     string       `json:"hash"`
	Size     int64        `json:"size"`
	Type     string       `json:"type"`
	By       schema.Actor `json:"by"`
	At       string       `json:"at"`
	Here     *bool        `json:"here"`
	Uploaded *bool        `json:"uploaded"`
}

func attachPath(id, name string) string {
	return "/v1/dossiers/" + id + "/attachments?name=" + url.QueryEscape(name)
}

// upload posts body as an attachment. size >= 0 sends it with that
// Content-Length; -1 sends it chunked (unknown length). A body that fails
// to send returns the client's error.
func (e *testEnv) upload(token, id, name string, body io.Reader, size int64, opts ...reqOpt) (response, error) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.URL+attachPath(id, name), io.NopCloser(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+token)
	for _, o := range opts {
		o(req)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{Status: res.StatusCode, Header: res.Header, Body: raw}, nil
}

// attach uploads data with its length and fails the test on a transport error.
func (e *testEnv) attach(token, id, name string, data []byte, opts ...reqOpt) response {
	e.t.Helper()
	res, err := e.upload(token, id, name, bytes.NewReader(data), int64(len(data)), opts...)
	if err != nil {
		e.t.Fatalf("upload %s: %v", name, err)
	}
	return res
}

func (e *testEnv) attachments(token, id string) []attachmentJSON {
	e.t.Helper()
	var l struct {
		Items []attachmentJSON `json:"items"`
	}
	e.call("GET", "/v1/dossiers/"+id+"/attachments", token, nil).want(e.t, http.StatusOK).decode(e.t, &l)
	if l.Items == nil {
		e.t.Fatal(`attachments list has no "items" array`)
	}
	return l.Items
}

func blobStats(t testing.TB, n *node.Node) blobstore.Stats {
	t.Helper()
	st, err := n.Blobs().Stats()
	if err != nil {
		t.Fatalf("blob stats: %v", err)
	}
	return st
}

func pendingUploads(t testing.TB, n *node.Node) []string {
	t.Helper()
	var out []string
	if err := n.Store().View(func(tx *store.Tx) error {
		hs, err := tx.PendingUploads(1000)
		for _, h := range hs {
			out = append(out, hex.EncodeToString(h[:]))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// requestsServed is how many requests of route have finished (the
// instrument middleware counts a request after its handler returns).
func requestsServed(t testing.TB, n *node.Node, route string) int {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, mf := range mfs {
		if mf.GetName() != "wardsync_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == route {
					total += int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return total
}

// waitServed waits (10 s at most) until route has served want requests.
func waitServed(t testing.TB, n *node.Node, route string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for requestsServed(t, n, route) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s served %d requests after 10s, want %d", route, requestsServed(t, n, route), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue reads an unlabelled sample from a /metrics body.
func metricValue(t testing.TB, body []byte, name string) float64 {
	t.Helper()
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// aboutSize reports whether the blob store's byte count fits size bytes in
// chunks chunks: badger's value sizes are approximate (a few bytes over).
func aboutSize(got int64, size, chunks int) bool {
	return got >= int64(size) && got <= int64(size+16*chunks)
}

// storedNothing checks that the node holds no blob, no staging file, no
// pending upload, and no op past seq.
func (e *testEnv) storedNothing(what string, seq uint64) {
	e.t.Helper()
	if st := blobStats(e.t, e.Node); st != (blobstore.Stats{}) {
		e.t.Errorf("%s: blob store holds %+v, want nothing", what, st)
	}
	if got := lastSeq(e.t, e.Node); got != seq {
		e.t.Errorf("%s: LastSeq %d, want %d (no new op)", what, got, seq)
	}
	if p := pendingUploads(e.t, e.Node); len(p) != 0 {
		e.t.Errorf("%s: pending uploads %v, want none", what, p)
	}
	staged, _ := filepath.Glob(filepath.Join(e.cfg.Dir, "blobs", "incoming", "*"))
	if len(staged) != 0 {
		e.t.Errorf("%s: staging files left: %v", what, staged)
	}
}

// A 3 MiB PDF: attached, listed, downloaded whole and by range, in the
// history, one new op, marked for upload, and all of it after a restart.
func TestAttachPDF(t *testing.T) {
	e := startAttachNode(t, 0)
	clerk, _, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	seq := lastSeq(t, e.Node)
	data := pdfBytes(t, 3<<20)
	hash := sha256Hex(data)
	name := "Giấy khai sinh – bản chính.pdf"

	// The Content-Type header is ignored: the type is sniffed.
	res := e.attach(clerk.Token, d.ID, name, data, withHeader("Content-Type", "text/plain")).want(t, http.StatusCreated)
	var a attachmentJSON
	res.decode(t, &a)
	if loc := res.Header.Get("Location"); loc != "/v1/dossiers/"+d.ID+"/attachments/"+hash {
		t.Errorf("Location %q", loc)
	}
	if a.Hash != hash || a.Size != int64(len(data)) || a.Type != "application/pdf" || a.Name != name ||
		a.By.ID != clerk.ID || a.Op != testNodeID+"/"+fmt.Sprint(seq+1) {
		t.Errorf("attachment %+v, want hash %s size %d type application/pdf by %s op %s/%d", a, hash, len(data), clerk.ID, testNodeID, seq+1)
	}
	if a.Here == nil || !*a.Here || a.Uploaded == nil || *a.Uploaded {
		t.Errorf("here %v uploaded %v, want here and not uploaded yet", a.Here, a.Uploaded)
	}
	parseTime(t, a.At)
	if got := lastSeq(t, e.Node); got != seq+1 {
		t.Errorf("LastSeq %d, want %d", got, seq+1)
	}
	if p := pendingUploads(t, e.Node); !slices.Equal(p, []string{hash}) {
		t.Errorf("pending uploads %v, want [%s]", p, hash)
	}
	if st := blobStats(t, e.Node); st.Blobs != 1 || st.Chunks != 3 || !aboutSize(st.ChunkBytes, len(data), 3) {
		t.Errorf("blob stats %+v, want 1 blob of 3 chunks, %d bytes", st, len(data))
	}

	check := func(when string) {
		t.Helper()
		list := e.attachments(clerk.Token, d.ID)
		if len(list) != 1 || list[0].Hash != hash || list[0].Name != name || list[0].Size != int64(len(data)) || list[0].Here == nil || !*list[0].Here {
			t.Fatalf("%s: attachments %+v", when, list)
		}
		got := e.getDossier(clerk.Token, d.ID)
		last := got.History[len(got.History)-1]
		if last.Kind != "attach" || last.Text != name || last.Actor.ID != clerk.ID {
			t.Errorf("%s: last history event %+v, want the attach op", when, last)
		}
		var full struct {
			Attachments []attachmentJSON `json:"attachments"`
		}
		e.call("GET", "/v1/dossiers/"+d.ID, clerk.Token, nil).want(t, http.StatusOK).decode(t, &full)
		if len(full.Attachments) != 1 || full.Attachments[0].Hash != hash || full.Attachments[0].Uploaded == nil {
			t.Errorf("%s: dossier attachments %+v", when, full.Attachments)
		}

		dl := e.call("GET", "/v1/dossiers/"+d.ID+"/attachments/"+hash, clerk.Token, nil).want(t, http.StatusOK)
		if !bytes.Equal(dl.Body, data) {
			t.Fatalf("%s: download of %d bytes differs from the %d uploaded", when, len(dl.Body), len(data))
		}
		if sha256Hex(dl.Body) != hash {
			t.Fatalf("%s: SHA-256 of the download is not %s", when, hash)
		}
		for k, want := range map[string]string{
			"Content-Type":           "application/pdf",
			"ETag":                   `"` + hash + `"`,
			"X-Content-Type-Options": "nosniff",
			"Accept-Ranges":          "bytes",
		} {
			if got := dl.Header.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", when, k, got, want)
			}
		}
		cd := dl.Header.Get("Content-Disposition")
		if !strings.HasPrefix(cd, `attachment; filename="`) || !strings.Contains(cd, "filename*=utf-8''") {
			t.Errorf("%s: Content-Disposition %q", when, cd)
		}

		rg := e.call("GET", "/v1/dossiers/"+d.ID+"/attachments/"+hash, clerk.Token, nil,
			withHeader("Range", "bytes=1048570-1048590")).want(t, http.StatusPartialContent)
		if !bytes.Equal(rg.Body, data[1048570:1048591]) {
			t.Errorf("%s: range body %x, want %x", when, rg.Body, data[1048570:1048591])
		}
		if cr := rg.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 1048570-1048590/%d", len(data)) {
			t.Errorf("%s: Content-Range %q", when, cr)
		}
		// A client that has it already gets 304.
		e.call("GET", "/v1/dossiers/"+d.ID+"/attachments/"+hash, clerk.Token, nil,
			withHeader("If-None-Match", `"`+hash+`"`)).want(t, http.StatusNotModified)
	}
	check("after upload")

	res = e.call("GET", "/metrics", "", nil).want(t, http.StatusOK)
	for _, want := range []string{"wardsync_blobs 1", "wardsync_blob_chunks 3", `wardsync_ops_written_total{kind="attach"} 1`} {
		if !strings.Contains(string(res.Body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	st := blobStats(t, e.Node)
	if got := metricValue(t, res.Body, "wardsync_blob_bytes"); got != float64(st.ChunkBytes) {
		t.Errorf("wardsync_blob_bytes %v, want %d", got, st.ChunkBytes)
	}

	e.reopen()
	check("after a restart")
	if p := pendingUploads(t, e.Node); !slices.Equal(p, []string{hash}) {
		t.Errorf("pending uploads after restart %v", p)
	}
}

// Identical content is stored once, however many dossiers it is attached
// to; attaching it again to the same dossier is no new op.
func TestAttachSameContentStoredOnce(t *testing.T) {
	e := startAttachNode(t, 0)
	clerk, _, _ := e.officials()
	d1 := e.createDossier(clerk.Token, "birth-registration", 1)
	d2 := e.createDossier(clerk.Token, "residence-confirmation", 2)
	data := pdfBytes(t, 2<<20+12345)
	hash := sha256Hex(data)
	chunks := schema.ChunkCount(int64(len(data)))

	e.attach(clerk.Token, d1.ID, "scan.pdf", data).want(t, http.StatusCreated)
	e.attach(clerk.Token, d2.ID, "ban-sao.pdf", data).want(t, http.StatusCreated)
	if st := blobStats(t, e.Node); st.Blobs != 1 || st.Chunks != chunks || !aboutSize(st.ChunkBytes, len(data), chunks) {
		t.Errorf("blob stats %+v after attaching the same file twice, want 1 blob of %d chunks", st, chunks)
	}

	seq := lastSeq(t, e.Node)
	for _, name := range []string{"scan.pdf", "scan-again.pdf"} {
		var a attachmentJSON
		res := e.attach(clerk.Token, d1.ID, name, data).want(t, http.StatusOK)
		res.decode(t, &a)
		if a.Hash != hash || a.Name != "scan.pdf" {
			t.Errorf("re-attach as %s: %+v, want the existing attachment scan.pdf", name, a)
		}
		if res.Header.Get("Location") != "" {
			t.Errorf("re-attach answered Location %q", res.Header.Get("Location"))
		}
	}
	if got := lastSeq(t, e.Node); got != seq {
		t.Errorf("LastSeq %d after re-attaching, want %d (no new op)", got, seq)
	}
	if l := e.attachments(clerk.Token, d1.ID); len(l) != 1 {
		t.Errorf("dossier 1 has %d attachments, want 1", len(l))
	}
	if l := e.attachments(clerk.Token, d2.ID); len(l) != 1 || l[0].Name != "ban-sao.pdf" {
		t.Errorf("dossier 2 attachments %+v", l)
	}
	if st := blobStats(t, e.Node); st.Blobs != 1 || st.Chunks != chunks {
		t.Errorf("blob stats %+v, want still 1 blob of %d chunks", st, chunks)
	}
	// Both ops name the one blob.
	var refs []string
	h, _ := schema.ParseHash(hash)
	if err := e.Node.Store().View(func(tx *store.Tx) (err error) { refs, err = tx.BlobRefs(h); return }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(refs)
	want := []string{d1.ID, d2.ID}
	slices.Sort(want)
	if !slices.Equal(refs, want) {
		t.Errorf("blob refs %v, want %v", refs, want)
	}
	// Other allowed types are sniffed too.
	for _, c := range []struct{ head, typ string }{
		{"\xff\xd8\xff\xe0", "image/jpeg"}, {"\x89PNG\r\n\x1a\n", "image/png"}, {"II*\x00", "image/tiff"}, {"MM\x00*", "image/tiff"},
	} {
		img := pdfBytes(t, 5000)
		copy(img, c.head)
		var a attachmentJSON
		e.attach(clerk.Token, d2.ID, "anh."+strings.TrimPrefix(c.typ, "image/"), img).want(t, http.StatusCreated).decode(t, &a)
		if a.Type != c.typ {
			t.Errorf("file starting %q: type %s, want %s", c.head, a.Type, c.typ)
		}
	}
}

// An executable renamed scan.pdf and sent as application/pdf: 415, and
// nothing stored.
func TestAttachDisallowedType(t *testing.T) {
	e := startAttachNode(t, 0)
	clerk, _, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	seq := lastSeq(t, e.Node)
	for _, magic := range []string{"\x7fELF\x02\x01\x01\x00", "MZ\x90\x00\x03\x00\x00\x00", "<html><script>", "PK\x03\x04"} {
		exe := pdfBytes(t, 2<<20)
		copy(exe, magic)
		ae := e.attach(clerk.Token, d.ID, "scan.pdf", exe, withHeader("Content-Type", "application/pdf")).
			wantError(t, http.StatusUnsupportedMediaType, "unsupported_type", "")
		if !strings.Contains(ae.Message, "PDF") {
			t.Errorf("415 message %q does not say what is allowed", ae.Message)
		}
		e.storedNothing(fmt.Sprintf("file starting %q", magic), seq)
	}
	if l := e.attachments(clerk.Token, d.ID); len(l) != 0 {
		t.Errorf("attachments %+v, want none", l)
	}
}

// Over the limit: 413 with a Content-Length (refused before reading) and
// without one (refused at the limit); nothing stored either way.
func TestAttachOversized(t *testing.T) {
	const max = 2 << 20
	e := startAttachNode(t, max)
	clerk, _, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	seq := lastSeq(t, e.Node)
	data := pdfBytes(t, 3<<20)

	e.attach(clerk.Token, d.ID, "big.pdf", data).wantError(t, http.StatusRequestEntityTooLarge, "too_large", "")
	e.storedNothing("3 MiB with Content-Length", seq)

	for _, size := range []int{3 << 20, max + 1} {
		res, err := e.upload(clerk.Token, d.ID, "big.pdf", bytes.NewReader(data[:size]), -1)
		if err != nil {
			t.Fatalf("chunked upload of %d bytes: %v", size, err)
		}
		ae := res.wantError(t, http.StatusRequestEntityTooLarge, "too_large", "")
		if !strings.Contains(ae.Message, fmt.Sprint(max)) {
			t.Errorf("413 message %q does not give the limit", ae.Message)
		}
		e.storedNothing(fmt.Sprintf("%d bytes chunked", size), seq)
	}
	if l := e.attachments(clerk.Token, d.ID); len(l) != 0 {
		t.Errorf("attachments %+v, want none", l)
	}

	// Exactly the limit is fine, with and without a length.
	e.attach(clerk.Token, d.ID, "max.pdf", data[:max]).want(t, http.StatusCreated)
	other := pdfBytes(t, max)
	res, err := e.upload(clerk.Token, d.ID, "max2.pdf", bytes.NewReader(other), -1)
	if err != nil {
		t.Fatal(err)
	}
	res.want(t, http.StatusCreated)
	if n := lastSeq(t, e.Node); n != seq+2 {
		t.Errorf("LastSeq %d, want %d", n, seq+2)
	}
}

// failingReader yields n bytes of data, then fails.
type failingReader struct {
	data []byte
	n    int
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p, r.data[:min(len(p), r.n, len(r.data))])
	r.data, r.n = r.data[k:], r.n-k
	return k, nil
}

// A truncated upload stores nothing: a body shorter than its
// Content-Length, a chunked body cut by a client failure, and a reader
// that reports a truncation to Attach itself.
func TestAttachTruncated(t *testing.T) {
	e := startAttachNode(t, 0)
	clerk, _, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	seq := lastSeq(t, e.Node)
	data := pdfBytes(t, 5_000_000)

	// Raw TCP: a Content-Length of 5,000,000, 1,000,000 bytes, then the
	// client shuts its write side.
	addr := strings.TrimPrefix(e.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/pdf\r\nContent-Length: 5000000\r\n\r\n",
		attachPath(d.ID, "cut.pdf"), addr, clerk.Token)
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(data[:1_000_000]); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if res, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		// The client may get no answer at all; if it does, it is a 400.
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("truncated upload answered %d %s, want 400", res.StatusCode, body)
		}
		t.Logf("truncated upload: %d %s", res.StatusCode, bytes.TrimSpace(body))
	}
	waitServed(t, e.Node, attachRoute, 1)
	e.storedNothing("body of 1,000,000 of 5,000,000 bytes", seq)

	// Chunked, and the client's reader fails after 1.5 MiB: the client
	// drops the connection mid-body.
	fr := &failingReader{data: data, n: 3 << 19, err: errors.New("scanner unplugged")}
	if _, err := e.upload(clerk.Token, d.ID, "cut.pdf", fr, -1); err == nil {
		t.Error("upload with a failing reader succeeded")
	}
	waitServed(t, e.Node, attachRoute, 2)
	e.storedNothing("chunked body cut after 1.5 MiB", seq)

	// The same through the Go API: a reader that ends with
	// io.ErrUnexpectedEOF (as a short request body does) is an error,
	// never a shorter file.
	who := official(t, e.Node, clerk.Token)
	for _, n := range []int{4, 100, 1 << 20, 3<<20 + 7} {
		_, _, err := e.Node.Attach(context.Background(), who, d.ID, "cut.pdf", &failingReader{data: data, n: n, err: io.ErrUnexpectedEOF})
		if !errors.Is(err, schema.ErrInvalid) || !strings.Contains(err.Error(), "cut short") {
			t.Errorf("Attach with a body cut after %d bytes: %v, want an invalid input error saying it was cut short", n, err)
		}
		e.storedNothing(fmt.Sprintf("Attach cut after %d bytes", n), seq)
	}
	if l := e.attachments(clerk.Token, d.ID); len(l) != 0 {
		t.Errorf("attachments %+v, want none", l)
	}
}

// Requests refused before the body is read, and downloads of what is not
// there.
func TestAttachRefusals(t *testing.T) {
	e := startAttachNode(t, 0)
	clerk, _, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	// A dossier received here for another ward: a read-only tracking copy.
	tb := newDossierBody("birth-registration", 2)
	tb["ward"] = otherWard()
	var tracked dossierJSON
	e.call("POST", "/v1/dossiers", clerk.Token, tb).want(t, http.StatusCreated).decode(t, &tracked)
	seq := lastSeq(t, e.Node)
	pdf := pdfBytes(t, 100_000)
	exe := append([]byte("\x7fELF"), pdf[4:]...)

	cases := []struct {
		name, path string
		body       []byte
		status     int
		code       string
		field      string
	}{
		{"no name", "/v1/dossiers/" + d.ID + "/attachments", pdf, 400, "invalid_field", "name"},
		{"empty name", "/v1/dossiers/" + d.ID + "/attachments?name=", pdf, 400, "invalid_field", "name"},
		{"name with a slash", attachPath(d.ID, "../../etc/passwd.pdf"), pdf, 400, "invalid_field", "name"},
		{"name with a quote", attachPath(d.ID, `a".pdf`), pdf, 400, "invalid_field", "name"},
		{"name with a line break", attachPath(d.ID, "a\r\nX-Evil: 1.pdf"), pdf, 400, "invalid_field", "name"},
		{"name too long", attachPath(d.ID, strings.Repeat("a", 300)+".pdf"), pdf, 400, "invalid_field", "name"},
		{"empty body", attachPath(d.ID, "scan.pdf"), nil, 400, "invalid_field", "body"},
		{"unknown dossier", attachPath(ulid.Make().String(), "scan.pdf"), pdf, 404, "not_found", ""},
		{"malformed dossier ID", attachPath("not-a-ulid", "scan.pdf"), pdf, 404, "not_found", ""},
		{"tracking copy of another ward", attachPath(tracked.ID, "scan.pdf"), pdf, 403, "forbidden", ""},
		// The dossier is checked before the body: 403, not 415.
		{"tracking copy, executable", attachPath(tracked.ID, "scan.pdf"), exe, 403, "forbidden", ""},
	}
	for _, c := range cases {
		res := e.call("POST", c.path, clerk.Token, c.body)
		if res.Status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, res.Status, c.status, res.Body)
		} else {
			res.wantError(t, c.status, c.code, c.field)
		}
		e.storedNothing(c.name, seq)
	}
	e.call("POST", attachPath(d.ID, "scan.pdf"), "", pdf).wantError(t, http.StatusUnauthorized, "unauthorized", "")
	e.storedNothing("no token", seq)

	// Downloads: only a hash attached to that very dossier.
	data := pdfBytes(t, 10_000)
	hash := sha256Hex(data)
	e.attach(clerk.Token, d.ID, "scan.pdf", data).want(t, http.StatusCreated)
	other := e.createDossier(clerk.Token, "residence-confirmation", 3)
	for name, path := range map[string]string{
		"hash of another dossier":   "/v1/dossiers/" + other.ID + "/attachments/" + hash,
		"hash attached nowhere":     "/v1/dossiers/" + d.ID + "/attachments/" + sha256Hex([]byte("nothing")),
		"malformed hash":            "/v1/dossiers/" + d.ID + "/attachments/xyz",
		"unknown dossier":           "/v1/dossiers/" + ulid.Make().String() + "/attachments/" + hash,
		"list of unknown dossier":   "/v1/dossiers/" + ulid.Make().String() + "/attachments",
		"list of malformed dossier": "/v1/dossiers/nope/attachments",
	} {
		res := e.call("GET", path, clerk.Token, nil)
		if res.Status != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404: %s", name, res.Status, res.Body)
			continue
		}
		res.wantError(t, http.StatusNotFound, "not_found", "")
	}
	// Upper-case hex names the same blob.
	dl := e.call("GET", "/v1/dossiers/"+d.ID+"/attachments/"+strings.ToUpper(hash), clerk.Token, nil).want(t, http.StatusOK)
	if !bytes.Equal(dl.Body, data) {
		t.Error("download by upper-case hash differs")
	}
	if cd := dl.Header.Get("Content-Disposition"); cd != `attachment; filename="scan.pdf"` {
		t.Errorf("Content-Disposition %q", cd)
	}
}

// A blob the node does not hold (attached elsewhere, or not pulled yet) is
// fetched on demand; without a city, or if the city fails, the download is
// a 503 that says so.
func TestAttachDownloadFetchesMissingBlob(t *testing.T) {
	e := startAttachNode(t, 0)
	clerk, _, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	data := pdfBytes(t, 1<<20+500)
	hash := sha256Hex(data)
	e.attach(clerk.Token, d.ID, "scan.pdf", data).want(t, http.StatusCreated)
	path := "/v1/dossiers/" + d.ID + "/attachments/" + hash

	// Lose the blob: collect everything regardless of references.
	if _, err := e.Node.Blobs().GC(context.Background(), func([32]byte) (bool, error) { return false, nil }, 0); err != nil {
		t.Fatal(err)
	}
	if st := blobStats(t, e.Node); st.Blobs != 0 || st.Chunks != 0 {
		t.Fatalf("blob stats %+v after GC", st)
	}
	if l := e.attachments(clerk.Token, d.ID); len(l) != 1 || l[0].Here == nil || *l[0].Here {
		t.Errorf("attachments %+v, want one that is not here", l)
	}

	ae := e.call("GET", path, clerk.Token, nil).wantError(t, http.StatusServiceUnavailable, "unavailable", "")
	if !strings.Contains(ae.Message, "not on this node") {
		t.Errorf("503 without a city: %q", ae.Message)
	}

	e.Node.SetBlobFetcher(func(ctx context.Context, h [32]byte) error {
		return fmt.Errorf("no route to the city")
	})
	ae = e.call("GET", path, clerk.Token, nil).wantError(t, http.StatusServiceUnavailable, "unavailable", "")
	if !strings.Contains(ae.Message, "city cannot be reached") || !strings.Contains(ae.Message, "no route to the city") {
		t.Errorf("503 with a failing city: %q", ae.Message)
	}

	fetched := 0
	e.Node.SetBlobFetcher(func(ctx context.Context, h [32]byte) error {
		if hex.EncodeToString(h[:]) != hash {
			return fmt.Errorf("asked for %x", h)
		}
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("fetch without a deadline")
		}
		fetched++
		_, err := e.Node.Blobs().Import(ctx, bytes.NewReader(data), 0) // as the city would send it
		return err
	})
	dl := e.call("GET", path, clerk.Token, nil).want(t, http.StatusOK)
	if !bytes.Equal(dl.Body, data) || fetched != 1 {
		t.Errorf("download after fetch: %d bytes, fetched %d times", len(dl.Body), fetched)
	}
	e.call("GET", path, clerk.Token, nil).want(t, http.StatusOK)
	if fetched != 1 {
		t.Errorf("a held blob was fetched again (%d fetches)", fetched)
	}
	e.Node.SetBlobFetcher(nil)
}

// The limit is checked when the node opens.
func TestAttachLimitConfig(t *testing.T) {
	e := startNode(t)
	e.close()
	for _, bad := range []int64{-1, schema.MaxBlobSize + 1} {
		cfg := e.cfg
		cfg.MaxAttachmentBytes = bad
		if n, err := node.Open(cfg); err == nil {
			n.Close()
			t.Errorf("Open with MaxAttachmentBytes %d succeeded", bad)
		}
	}
	e.open()
	if got := e.Node.MaxAttachmentBytes(); got != node.DefaultMaxAttachmentBytes {
		t.Errorf("default limit %d, want %d", got, node.DefaultMaxAttachmentBytes)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.Dir, "blobs")); err != nil {
		t.Errorf("no blob store in the data dir: %v", err)
	}
	// Close is idempotent with the blob store too.
	if err := e.Node.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Node.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	e.Node = nil
}

// TestBlobGCKeepsWhatOpsReferTo: a blob no op refers to (an upload whose
// attach op never came) is removed once older than the grace period; an
// attached one never is.
func TestBlobGCKeepsWhatOpsReferTo(t *testing.T) {
	e := startAttachNode(t, 0)
	id := e.createDossier(e.Admin, "certified-copy", 1).ID
	kept := pdfBytes(t, 2<<20)
	if r := e.attach(e.Admin, id, "kept.pdf", kept); r.Status != 201 {
		t.Fatalf("attach: %d %s", r.Status, r.Body)
	}
	orphan, err := e.Node.Blobs().Import(context.Background(), bytes.NewReader(pdfBytes(t, 3<<20)), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if rep, err := e.Node.CollectBlobs(ctx); err != nil || rep.Blobs != 0 {
		t.Fatalf("GC within the grace period: %+v %v", rep, err)
	}
	e.clock.Advance(25 * time.Hour)
	rep, err := e.Node.CollectBlobs(ctx)
	if err != nil || rep.Blobs != 1 || rep.Chunks != 3 {
		t.Fatalf("GC after the grace period: %+v %v, want the orphan's 1 blob and 3 chunks", rep, err)
	}
	if ok, _ := e.Node.Blobs().Complete(orphan.Hash); ok {
		t.Fatal("the orphan blob survived")
	}
	h := sha256.Sum256(kept)
	if ok, _ := e.Node.Blobs().Complete(h); !ok {
		t.Fatal("GC removed an attached blob")
	}
}

// TestMarkMissingBlobs: after the blob store lost a scan that is already
// at the city (a restore from a backup, which does not carry blobs), the
// node marks it to be fetched again; one still to upload is not marked.
func TestMarkMissingBlobs(t *testing.T) {
	e := startAttachNode(t, 0)
	id := e.createDossier(e.Admin, "certified-copy", 1).ID
	up, down := pdfBytes(t, 1<<20), pdfBytes(t, 2<<20)
	for _, b := range [][]byte{up, down} {
		if r := e.attach(e.Admin, id, "scan.pdf", b); r.Status != 201 {
			t.Fatalf("attach: %d %s", r.Status, r.Body)
		}
	}
	hUp, hDown := sha256.Sum256(up), sha256.Sum256(down)
	ctx := context.Background()
	// down reached the city; then both are lost from the blob store.
	if err := e.Node.Store().Write(ctx, func(tx *store.Tx) error { tx.ClearUpload(hDown); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, h := range [][32]byte{hUp, hDown} {
		if err := e.Node.Blobs().DeleteManifest(h); err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.Node.MarkMissingBlobs(ctx)
	if err != nil || n != 1 {
		t.Fatalf("MarkMissingBlobs = %d, %v; want 1", n, err)
	}
	var fetch [][32]byte
	e.Node.Store().View(func(tx *store.Tx) error { fetch, err = tx.PendingFetches(10); return err })
	if len(fetch) != 1 || fetch[0] != hDown {
		t.Fatalf("pending fetches %x, want only the uploaded one", fetch)
	}
}
