package cluster_test

// Fuzz targets for the JSON bodies the city API takes: portal intake
// (POST /v1/dossiers), joining (POST /v1/cluster/members) and moving the
// leadership (POST /v1/cluster/leadership). Each drives the real handler
// of a real member (QUIC endpoint, Raft, badger on disk, opened once per
// fuzz process), with a verified client certificate set on the request as
// crypto/tls would set it, and checks: never a 500 or a panic; a refusal
// is a 4xx with the {"error":{...}} shape and changes nothing (the Raft log
// and the FSM's state hash are as they were).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/replication/cluster"
	"github.com/wardsync/wardsync/schema"
)

// fuzzCity is one city member and the client certificates that call it.
type fuzzCity struct {
	c       *cluster.Cluster
	h       http.Handler
	clients map[schema.PeerRole]*x509.Certificate // admin, portal, ward, and city (another member, "c2")
}

// startFuzzCity opens member c1 on loopback. bootstrap makes it a cluster
// of one and waits until it leads and takes portal intake; without, it is
// a member that was never bootstrapped nor joined: it has no leader, so
// nothing it is asked to do can happen.
func startFuzzCity(f *testing.F, bootstrap bool) *fuzzCity {
	ca := newTestCA(f)
	ep := ca.endpoint("c1")
	addr := ep.Addr().String()
	cfg := cluster.Config{Dir: filepath.Join(f.TempDir(), "c1"), NodeID: "c1", Advertise: addr, Endpoint: ep}
	if bootstrap {
		cfg.Bootstrap = []raft.Server{{Suffrage: raft.Voter, ID: "c1", Address: raft.ServerAddress(addr)}}
	}
	c := openMember(f, cfg)
	fc := &fuzzCity{c: c, h: c.Handler(), clients: map[schema.PeerRole]*x509.Certificate{
		schema.PeerAdmin:  ca.leaf(schema.PeerIdentity{Role: schema.PeerAdmin, Node: "ops"}),
		schema.PeerPortal: ca.leaf(schema.PeerIdentity{Role: schema.PeerPortal, Node: "web"}),
		schema.PeerWard:   ca.leaf(schema.PeerIdentity{Role: schema.PeerWard, Node: "w1", Wards: []string{fuzzWard()}}),
		schema.PeerCity:   ca.leaf(schema.PeerIdentity{Role: schema.PeerCity, Node: "c2"}),
	}}
	if bootstrap {
		deadline := time.Now().Add(20 * time.Second)
		for !c.IsLeader() {
			if time.Now().After(deadline) {
				f.Fatal("c1 did not become leader")
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The first submission waits until the new leader has set up the
		// city origin; after it, nothing runs in the background.
		body, _ := json.Marshal(portalBody(0))
		if r := fc.serve(f.Context(), schema.PeerPortal, "POST", "/v1/dossiers", body); r.Code != http.StatusCreated {
			f.Fatalf("first portal submission: %d %s", r.Code, r.Body)
		}
	}
	return fc
}

func fuzzWard() string { return schema.DefaultWards().All()[0].Code }

func portalBody(i int) map[string]any {
	return map[string]any{
		"procedure": "birth-registration", "ward": fuzzWard(),
		"applicant": map[string]string{"name": "Nguyễn Văn An", "id_number": fmt.Sprintf("0792030%05d", i), "phone": "0909 123 456"},
		"fields":    map[string]string{"note": "nộp trực tuyến"},
	}
}

// serve runs one request as role's client certificate.
func (fc *fuzzCity) serve(ctx context.Context, role schema.PeerRole, method, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	cert := fc.clients[role]
	req.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert},
		VerifiedChains: [][]*x509.Certificate{{cert}}}
	rec := httptest.NewRecorder()
	fc.h.ServeHTTP(rec, req)
	return rec
}

// fsmState is what a refused request must leave as it was.
type fsmState struct {
	last, applied uint64
	hash          [32]byte
}

func (fc *fuzzCity) state(t *testing.T) fsmState {
	t.Helper()
	h, err := fc.c.Store().StateHash()
	if err != nil {
		t.Fatal(err)
	}
	return fsmState{last: fc.c.Raft().LastIndex(), applied: fc.c.Raft().AppliedIndex(), hash: h}
}

// checkCityRefusal: a 4xx with exactly {"error":{code, message[, field][, allowed]}}.
func checkCityRefusal(t *testing.T, r *httptest.ResponseRecorder, what string) httpjson.Error {
	t.Helper()
	if r.Code < 400 || r.Code >= 500 {
		t.Fatalf("%s: status %d: %s", what, r.Code, r.Body)
	}
	if ct := r.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s: Content-Type %q", what, ct)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.Body.Bytes(), &body); err != nil || len(body) != 1 || body["error"] == nil {
		t.Fatalf("%s: error body %s (%v)", what, r.Body, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body["error"]))
	dec.DisallowUnknownFields()
	var e httpjson.Error
	if err := dec.Decode(&e); err != nil || e.Code == "" || e.Message == "" {
		t.Fatalf("%s: error object %s (%v)", what, body["error"], err)
	}
	if r.Code == http.StatusBadRequest && e.Code == "invalid_field" && e.Field == "" {
		t.Fatalf("%s: invalid_field names no field: %s", what, r.Body)
	}
	return e
}

// strictDecode reads body as the handler's decoder does (nil error: the
// handler got past decoding).
func strictDecode(body []byte, v any) error {
	req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return httpjson.DecodeBody(httptest.NewRecorder(), req, cluster.MaxBodyBytes, v)
}

// FuzzPortalBody posts arbitrary bytes to portal intake as a portal, an
// admin or (refused) a ward certificate. A 201 is a dossier the city now
// holds and serves, valid and normalized, received for the ward asked, with
// one more Raft entry; anything else changes neither the Raft log nor the
// FSM.
func FuzzPortalBody(f *testing.F) {
	fc := startFuzzCity(f, true)
	catalog, wards := schema.DefaultCatalog(), schema.DefaultWards()
	seed := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	valid := seed(portalBody(1))
	noWard := portalBody(2)
	delete(noWard, "ward")
	otherWard := portalBody(3)
	otherWard["ward"] = wards.All()[1].Code
	spaced := portalBody(4)
	spaced["applicant"] = map[string]string{"name": "  Trần   Văn\tBa  ", "id_number": " 001099012345 ", "phone": "+84-28.3829.1234"}
	for i, b := range [][]byte{
		valid, seed(noWard), seed(otherWard), seed(spaced),
		[]byte(`{"procedure":"certified-copy","ward":"` + fuzzWard() + `","applicant":{"name":"A","id_number":"012345678901"}}`),
		[]byte(`{"procedure":"certified-copy","ward":"NOPE","applicant":{"name":"A","id_number":"012345678901"}}`),
		[]byte(`{"procedure":"certified-copy","ward":"` + fuzzWard() + `","applicant":{"name":"A","id_number":"012345678901"},"actor":{"id":"admin"}}`),
		[]byte(`{"procedure":"certified-copy","ward":"` + fuzzWard() + `","applicant":{"name":"\ud800","id_number":"012345678901"}}`),
		[]byte(`{"procedure":"certified-copy","ward":"` + fuzzWard() + `","applicant":{"name":"A","id_number":"012345678901"},"fields":{"A":"x"}}`),
		[]byte(`{"procedure":"certified-copy","ward":"` + fuzzWard() + `","applicant":{"name":"A","id_number":"012345678901"},"fields":{"a":"` + strings.Repeat("ễ", 2000) + `"}}`),
		[]byte(`{"procedure":"certified-copy","ward":" ` + fuzzWard() + ` ","applicant":{"name":"A","id_number":"012345678901"}}`),
		[]byte(`{"procedure":5}`), []byte(`null`), []byte(`[]`), []byte(`{}`), []byte(`{`), []byte(``), []byte("\xff\xfe{}"),
		append(append([]byte(nil), valid...), valid...),
	} {
		f.Add(b, uint8(i))
	}
	roles := []schema.PeerRole{schema.PeerPortal, schema.PeerAdmin, schema.PeerWard}
	f.Fuzz(func(t *testing.T, body []byte, roleIdx uint8) {
		role := roles[int(roleIdx)%len(roles)]
		what := fmt.Sprintf("portal intake as %s, body %q", role, body)
		before := fc.state(t)
		r := fc.serve(t.Context(), role, "POST", "/v1/dossiers", body)
		if r.Code != http.StatusCreated {
			checkCityRefusal(t, r, what)
			if after := fc.state(t); after != before {
				t.Fatalf("%s: refused with %d but the city changed: %+v → %+v: %s", what, r.Code, before, after, r.Body)
			}
			return
		}
		if role == schema.PeerWard {
			t.Fatalf("%s: a ward certificate submitted a dossier", what)
		}
		after := fc.state(t)
		if after.last <= before.last || after.hash == before.hash {
			t.Fatalf("%s: 201 but the city did not change: %+v → %+v", what, before, after)
		}
		var v node.DossierView
		if err := json.Unmarshal(r.Body.Bytes(), &v); err != nil || v.ID == "" || v.Status != schema.StatusReceived || v.Origin != schema.ReservedOrigin {
			t.Fatalf("%s: 201 body (%v): %s", what, err, r.Body)
		}
		var in schema.NewDossier
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("%s: accepted, but does not decode: %v", what, err)
		}
		in.Normalize()
		if v.Ward != in.Ward || v.Procedure != in.Procedure || v.Applicant != in.Applicant {
			t.Fatalf("%s: asked for ward %q procedure %q applicant %+v, got %+v", what, in.Ward, in.Procedure, in.Applicant, v)
		}
		stored := schema.NewDossier{Procedure: v.Procedure, Applicant: v.Applicant, Fields: v.Fields, Ward: v.Ward}
		if err := stored.Validate(catalog, wards); err != nil {
			t.Fatalf("%s: stored dossier fails validation: %v", what, err)
		}
		norm := stored
		norm.Normalize()
		if norm.Applicant != stored.Applicant {
			t.Fatalf("%s: stored applicant %+v is not normalized (%+v)", what, stored.Applicant, norm.Applicant)
		}
		got := fc.serve(t.Context(), schema.PeerPortal, "GET", "/v1/dossiers/"+v.ID, nil)
		var back node.DossierView
		if got.Code != http.StatusOK || json.Unmarshal(got.Body.Bytes(), &back) != nil || back.ReceiptNo != v.ReceiptNo || back.ReceiptNo == "" {
			t.Fatalf("%s: reading %s back: %d %s", what, v.ID, got.Code, got.Body)
		}
	})
}

// FuzzJoinBody posts arbitrary bytes to POST /v1/cluster/members, as an
// admin or as city member c2, to a member that has no leader (never
// bootstrapped), so a request that passes every check reaches AddVoter,
// which cannot act: the request's context is already cancelled, and the
// answer is 503. So: a body that decodes strictly, with a valid city
// member ID, a resolvable host:port, sent by an admin or by the member
// itself, gets 503; every other body a 4xx with the JSON error shape. The
// configuration stays empty. (Host names resolve from /etc/hosts only:
// the fuzzer must not send DNS queries.)
func FuzzJoinBody(f *testing.F) {
	prev := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS while fuzzing")
	}}
	f.Cleanup(func() { net.DefaultResolver = prev })
	fc := startFuzzCity(f, false)
	for i, b := range []string{
		`{"id":"c2","address":"127.0.0.1:7002"}`, `{"id":"c3","address":"[::1]:7003"}`, `{"id":"c2","address":"localhost:7002"}`,
		`{"id":"c2","address":"city-2.invalid:7002"}`, `{"id":"c2","address":"127.0.0.1"}`, `{"id":"c2","address":"127.0.0.1:"}`,
		`{"id":"c2","address":"127.0.0.1:99999"}`, `{"id":"c2","address":"127.0.0.1:raft"}`, `{"id":"c2","address":""}`,
		`{"id":"","address":"127.0.0.1:7002"}`, `{"id":"C2","address":"127.0.0.1:7002"}`, `{"id":"city","address":"127.0.0.1:7002"}`,
		`{"id":"c2 ","address":"127.0.0.1:7002"}`, `{"id":"c2","address":"127.0.0.1:7002","suffrage":"voter"}`,
		`{"id":"c2","address":"[fe80::1%eth0]:7002"}`, `{"id":"c2","address":"0:0"}`, `{"id":2,"address":"127.0.0.1:7002"}`,
		`{"id":"` + strings.Repeat("c", 33) + `","address":"127.0.0.1:7002"}`, `null`, `{}`, `{`, ``, `[]`,
	} {
		f.Add([]byte(b), i%3 == 0)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, body []byte, asMember bool) {
		role := schema.PeerAdmin
		if asMember {
			role = schema.PeerCity // "c2"
		}
		what := fmt.Sprintf("join as %s, body %q", role, body)
		r := fc.serve(cancelled, role, "POST", "/v1/cluster/members", body)

		var in struct {
			ID      string `json:"id"`
			Address string `json:"address"`
		}
		pass := strictDecode(body, &in) == nil &&
			(schema.PeerIdentity{Role: schema.PeerCity, Node: in.ID}).Validate() == nil
		if pass {
			_, _, err := net.SplitHostPort(in.Address)
			_, rerr := net.ResolveUDPAddr("udp", in.Address)
			pass = err == nil && rerr == nil && (!asMember || in.ID == "c2")
		}
		switch {
		case r.Code == http.StatusServiceUnavailable && pass:
			// Reached AddVoter, which could not act.
		case r.Code == http.StatusServiceUnavailable:
			t.Fatalf("%s: got past the checks: %s", what, r.Body)
		case pass:
			t.Fatalf("%s: a valid join was refused with %d: %s", what, r.Code, r.Body)
		default:
			checkCityRefusal(t, r, what)
		}
		if n, err := fc.c.Voters(); err != nil || n != 0 {
			t.Fatalf("%s: the member now has %d voters (%v)", what, n, err)
		}
	})
}

// FuzzLeadershipBody posts arbitrary bytes to POST /v1/cluster/leadership
// on a cluster of one, as an admin or (refused) a portal. Whatever the
// body, c1 still leads afterwards, nothing is written, and the answer is a
// 200 naming c1 (asked to hand it to itself, the leader) or a 4xx with the
// JSON error shape: with no other member, no transfer can happen.
func FuzzLeadershipBody(f *testing.F) {
	fc := startFuzzCity(f, true)
	for i, b := range []string{
		`{"to":"c1"}`, `{"to":"c2"}`, `{"to":""}`, `{}`, `{"to":"C1"}`, `{"to":" c1"}`, `{"to":"c1","force":true}`,
		`{"to":1}`, `{"to":null}`, `{"To":"c1"}`, `{"to":"c1"}{}`, `null`, `{`, ``, `[]`, `"c1"`,
	} {
		f.Add([]byte(b), i%5 == 4)
	}
	f.Fuzz(func(t *testing.T, body []byte, asPortal bool) {
		role := schema.PeerAdmin
		if asPortal {
			role = schema.PeerPortal
		}
		what := fmt.Sprintf("leadership as %s, body %q", role, body)
		before := fc.state(t)
		r := fc.serve(t.Context(), role, "POST", "/v1/cluster/leadership", body)
		if r.Code == http.StatusOK {
			var in struct {
				To string `json:"to"`
			}
			var out map[string]string
			if role != schema.PeerAdmin || strictDecode(body, &in) != nil || in.To != "c1" ||
				json.Unmarshal(r.Body.Bytes(), &out) != nil || out["leader"] != "c1" {
				t.Fatalf("%s: 200 %s", what, r.Body)
			}
		} else {
			checkCityRefusal(t, r, what)
		}
		if after := fc.state(t); after != before || !fc.c.IsLeader() {
			t.Fatalf("%s: the cluster changed (%+v → %+v, leader %v)", what, before, after, fc.c.IsLeader())
		}
	})
}
