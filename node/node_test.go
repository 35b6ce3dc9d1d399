package node_test

// Shared helpers of the node tests. Every test runs a real node: a badger
// store on disk in t.TempDir(), opened with node.Open, served through
// node.Handler() by httptest. Nothing is mocked; only the wall clock is a
// fake the test moves, so due dates and "newest first" are deterministic.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// testStart is a Tuesday morning in the city, away from any public holiday.
var testStart = time.Date(2026, 3, 10, 9, 0, 0, 0, schema.CityZone)

// fakeClock is the node's wall clock in tests. Every reading moves it on by
// one millisecond, so dossier IDs (ULIDs, millisecond resolution) minted one
// after another always sort in creation order, as they do with a real clock
// on a real disk (an fsync takes longer than a millisecond).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(start time.Time) *fakeClock { return &fakeClock{t: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// Advance moves the clock forward by d.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Peek reads the clock without moving it.
func (c *fakeClock) Peek() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// testWard is the ward every test node belongs to.
func testWard() string { return schema.DefaultWards().All()[0].Code }

// otherWard is a second ward of the registry.
func otherWard() string { return schema.DefaultWards().All()[1].Code }

const testNodeID = "w1a"

// testEnv is one running test node.
type testEnv struct {
	t      testing.TB
	cfg    node.Config
	clock  *fakeClock
	Node   *node.Node
	srv    *httptest.Server
	URL    string
	Admin  string // the admin's bearer token
	Ward   string
	Series string
}

// startNode runs `ward init` into a fresh t.TempDir() for the first ward of
// the embedded registry, opens the node with a fake clock and serves its
// HTTP API. The node and server are closed when the test ends.
func startNode(t testing.TB) *testEnv {
	t.Helper()
	clock := newFakeClock(testStart)
	cfg := node.Config{Dir: t.TempDir(), Now: clock.Now}
	res, err := node.Init(context.Background(), cfg, node.InitParams{Ward: testWard(), Node: testNodeID})
	if err != nil {
		t.Fatalf("node.Init: %v", err)
	}
	if res.Ward != testWard() || res.Node != testNodeID || !strings.HasPrefix(res.AdminToken, "wst_") {
		t.Fatalf("node.Init = %+v", res)
	}
	e := &testEnv{t: t, cfg: cfg, clock: clock, Admin: res.AdminToken, Ward: res.Ward, Series: res.Series}
	e.open()
	t.Cleanup(e.close)
	return e
}

// newTestNode is startNode reduced to what most tests need: the server's
// URL, the admin token and the node.
func newTestNode(t testing.TB) (url, adminToken string, n *node.Node) {
	e := startNode(t)
	return e.URL, e.Admin, e.Node
}

func (e *testEnv) open() {
	e.t.Helper()
	n, err := node.Open(e.cfg)
	if err != nil {
		e.t.Fatalf("node.Open: %v", err)
	}
	e.Node = n
	e.srv = httptest.NewServer(n.Handler())
	e.URL = e.srv.URL
}

func (e *testEnv) close() {
	if e.srv != nil {
		e.srv.Close()
		e.srv = nil
	}
	if e.Node != nil {
		if err := e.Node.Close(); err != nil {
			e.t.Errorf("node.Close: %v", err)
		}
		e.Node = nil
	}
}

// reopen closes the server and the node and opens both again on the same
// data dir, as a restart of `wardsync ward run` would.
func (e *testEnv) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

// lastSeq reads the node's op sequence from the store.
func lastSeq(t testing.TB, n *node.Node) uint64 {
	t.Helper()
	var seq uint64
	if err := n.Store().View(func(tx *store.Tx) (err error) {
		seq, err = tx.LastSeq()
		return err
	}); err != nil {
		t.Fatalf("LastSeq: %v", err)
	}
	return seq
}

// ---- HTTP -------------------------------------------------------------------

// response is a finished HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// reqOpt changes a request before it is sent.
type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func withoutHeader(k string) reqOpt { return func(r *http.Request) { r.Header.Del(k) } }

// call sends one request. body is nil (no body), a string or []byte (sent
// as is), or anything else (sent as JSON). token "" sends no Authorization.
func (e *testEnv) call(method, path, token string, body any, opts ...reqOpt) response {
	e.t.Helper()
	return doRequest(e.t, method, e.URL+path, token, body, opts...)
}

func doRequest(t testing.TB, method, url, token string, body any, opts ...reqOpt) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal request: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, o := range opts {
		o(req)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{Status: res.StatusCode, Header: res.Header, Body: raw}
}

// decode parses the body into v, failing the test if it is not JSON.
func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json (body %s)", ct, r.Body)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// want fails the test unless the response has status code.
func (r response) want(t testing.TB, code int) response {
	t.Helper()
	if r.Status != code {
		t.Fatalf("status %d, want %d; body %s", r.Status, code, r.Body)
	}
	return r
}

// apiError is the body of every error response.
type apiError struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Field   string   `json:"field"`
	Allowed []string `json:"allowed"`
}

// checkErrorShape reports what is wrong with an error response, or "".
// The body must be exactly {"error":{"code":...,"message":...[,"field"][,"allowed"]}}.
func checkErrorShape(r response) (apiError, string) {
	var body map[string]json.RawMessage
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return apiError{}, "Content-Type " + ct
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return apiError{}, "not JSON: " + err.Error()
	}
	if len(body) != 1 || body["error"] == nil {
		return apiError{}, "want exactly one key, error"
	}
	dec := json.NewDecoder(bytes.NewReader(body["error"]))
	dec.DisallowUnknownFields()
	var ae apiError
	if err := dec.Decode(&ae); err != nil {
		return apiError{}, "error object: " + err.Error()
	}
	if ae.Code == "" || ae.Message == "" {
		return ae, "code or message is empty"
	}
	return ae, ""
}

// wantError checks a JSON error response: its status, its code and (for a
// bad field) the field it names. Empty code or field are not checked.
func (r response) wantError(t testing.TB, status int, code, field string) apiError {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	ae, bad := checkErrorShape(r)
	if bad != "" {
		t.Fatalf("error body %s: %s", r.Body, bad)
	}
	if code != "" && ae.Code != code {
		t.Fatalf("error code %q, want %q; body %s", ae.Code, code, r.Body)
	}
	if field != "" && ae.Field != field {
		t.Fatalf("error field %q, want %q; body %s", ae.Field, field, r.Body)
	}
	if status == http.StatusBadRequest && ae.Code == "invalid_field" && ae.Field == "" {
		t.Fatalf("invalid_field error names no field: %s", r.Body)
	}
	return ae
}

// ---- API shapes ---------------------------------------------------------------

type dossierJSON struct {
	ID           string            `json:"id"`
	ReceiptNo    string            `json:"receipt_no"`
	Ward         string            `json:"ward"`
	Procedure    string            `json:"procedure"`
	Status       string            `json:"status"`
	ReceivedAt   string            `json:"received_at"`
	DueAt        string            `json:"due_at"`
	CompletedAt  *string           `json:"completed_at"`
	Overdue      bool              `json:"overdue"`
	Applicant    schema.Applicant  `json:"applicant"`
	Fields       map[string]string `json:"fields"`
	Assignee     *string           `json:"assignee"`
	AssigneeName string            `json:"assignee_name"`
	CreatedBy    schema.Actor      `json:"created_by"`
	Origin       string            `json:"origin"`
	History      []eventJSON       `json:"history"`
	Conflicts    []json.RawMessage `json:"conflicts"`
	StateHash    string            `json:"state_hash"`
}

type eventJSON struct {
	Op       string       `json:"op"`
	At       string       `json:"at"`
	Actor    schema.Actor `json:"actor"`
	Kind     string       `json:"kind"`
	From     string       `json:"from"`
	To       string       `json:"to"`
	Official string       `json:"official"`
	Text     string       `json:"text"`
	Conflict bool         `json:"conflict"`
}

type listJSON struct {
	Items      []dossierJSON `json:"items"`
	NextCursor *string       `json:"next_cursor"`
}

type officialJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Role      string `json:"role"`
	CreatedAt string `json:"created_at"`
	Token     string `json:"token"`
}

// receiptRe is WARD-YYMMDD-SERIES-NNNN.
var receiptRe = regexp.MustCompile(`^([0-9A-Z]{3,10})-([0-9]{6})-([A-Z0-9]{1,8})-([0-9]{4,})$`)

func parseTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return tm
}

// newDossierBody is a valid create body; i makes the applicant distinct.
func newDossierBody(procedure string, i int) map[string]any {
	return map[string]any{
		"procedure": procedure,
		"applicant": map[string]any{
			"name":      "Nguyễn Văn An " + strings.Repeat("I", i%5),
			"id_number": "0792030" + pad5(i),
			"phone":     "0909 123 456",
		},
		"fields": map[string]string{"note": "hồ sơ số " + pad5(i)},
	}
}

func pad5(i int) string { return fmt.Sprintf("%05d", i) }

// createDossier posts a valid dossier as token and returns it.
func (e *testEnv) createDossier(token, procedure string, i int) dossierJSON {
	e.t.Helper()
	var d dossierJSON
	e.call("POST", "/v1/dossiers", token, newDossierBody(procedure, i)).want(e.t, http.StatusCreated).decode(e.t, &d)
	return d
}

// transition moves a dossier and expects success.
func (e *testEnv) transition(token, id, to string) dossierJSON {
	e.t.Helper()
	var d dossierJSON
	e.call("POST", "/v1/dossiers/"+id+"/transitions", token, map[string]string{"to": to}).
		want(e.t, http.StatusOK).decode(e.t, &d)
	if d.Status != to {
		e.t.Fatalf("status %s after transition to %s", d.Status, to)
	}
	return d
}

func (e *testEnv) getDossier(token, id string) dossierJSON {
	e.t.Helper()
	var d dossierJSON
	e.call("GET", "/v1/dossiers/"+id, token, nil).want(e.t, http.StatusOK).decode(e.t, &d)
	return d
}

// addOfficial creates an official of role through the API, as the admin.
func (e *testEnv) addOfficial(role schema.Role, name string) officialJSON {
	e.t.Helper()
	var o officialJSON
	e.call("POST", "/v1/officials", e.Admin, map[string]string{"name": name, "role": string(role)}).
		want(e.t, http.StatusCreated).decode(e.t, &o)
	if o.ID == "" || o.Role != string(role) || !strings.HasPrefix(o.Token, "wst_") {
		e.t.Fatalf("new official %+v", o)
	}
	return o
}

// officials makes one official of each role.
func (e *testEnv) officials() (clerk, head, admin officialJSON) {
	e.t.Helper()
	return e.addOfficial(schema.RoleClerk, "Trần Thị Bình"),
		e.addOfficial(schema.RoleHead, "Lê Văn Cường"),
		e.addOfficial(schema.RoleAdmin, "Phạm Thị Dung")
}

// listAll pages through GET /v1/dossiers?query and returns every item.
func (e *testEnv) listAll(token, query string, limit int) []dossierJSON {
	e.t.Helper()
	var all []dossierJSON
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			e.t.Fatal("listing does not end")
		}
		path := "/v1/dossiers?limit=" + strconv.Itoa(limit)
		if query != "" {
			path += "&" + query
		}
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var l listJSON
		e.call("GET", path, token, nil).want(e.t, http.StatusOK).decode(e.t, &l)
		if len(l.Items) > limit {
			e.t.Fatalf("page of %d items, limit %d", len(l.Items), limit)
		}
		all = append(all, l.Items...)
		if l.NextCursor == nil {
			return all
		}
		if *l.NextCursor == "" {
			e.t.Fatal("next_cursor is an empty string, want null or a cursor")
		}
		cursor = *l.NextCursor
	}
}

func ids(ds []dossierJSON) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}
