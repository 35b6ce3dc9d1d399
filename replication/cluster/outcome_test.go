package cluster_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/schema"
)

// A portal create that the leader took and then could not answer (it
// stopped before the entry committed) may still be committed by the next
// leader. The member that forwarded it must say so, 504 outcome_unknown
// with the dossier's ID, not 503, which tells the portal nothing was saved
// and makes it send the citizen's dossier again (chaos seed 9500101: a
// 503 for a create that every replica then held).
func TestPortalCreateWhoseLeaderStoppedIsOutcomeUnknown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-member city")
	}
	ca, members := startTestCity(t, 3)
	leader := leaderOf(t, members)
	var via, other *testMember
	for _, m := range members {
		switch {
		case m == leader:
		case via == nil:
			via = m
		default:
			other = m
		}
	}
	fc := &fuzzCity{c: via.c, h: via.c.Handler(), clients: map[schema.PeerRole]*x509.Certificate{
		schema.PeerPortal: ca.leaf(schema.PeerIdentity{Role: schema.PeerPortal, Node: "web"}),
	}}
	body, _ := json.Marshal(portalBody(1))
	// The first create also waits for the city origin of a new cluster.
	if r := fc.serve(t.Context(), schema.PeerPortal, "POST", "/v1/dossiers", body); r.Code != http.StatusCreated {
		t.Fatalf("first create: %d %s", r.Code, r.Body)
	}

	// The followers' disks refuse every append: the leader takes the next
	// create into its log but cannot commit it.
	via.logs.refuse.Store(1 << 30)
	other.logs.refuse.Store(1 << 30)
	before := leader.c.Raft().LastIndex()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	answer := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		body, _ := json.Marshal(portalBody(2))
		answer <- fc.serve(ctx, schema.PeerPortal, "POST", "/v1/dossiers", body)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for leader.c.Raft().LastIndex() == before {
		if time.Now().After(deadline) {
			t.Fatalf("the leader %s never appended the create", leader.id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// It stops with the entry in its log; the others, still refusing
	// appends, cannot settle on a leader before the request gives up.
	leader.c.Close()

	a := <-answer
	var e struct{ Error httpjson.Error }
	if err := json.Unmarshal(a.Body.Bytes(), &e); err != nil {
		t.Fatalf("answer %d is not a JSON error: %s", a.Code, a.Body)
	}
	if a.Code != http.StatusGatewayTimeout || e.Error.Code != "outcome_unknown" {
		t.Fatalf("a create whose leader stopped after taking it answered %d %s (%s); want 504 outcome_unknown: a 503 says nothing was saved",
			a.Code, e.Error.Code, e.Error.Message)
	}
	if !strings.Contains(e.Error.Message, "GET /v1/dossiers/") {
		t.Fatalf("the answer does not name the dossier to look up: %s", e.Error.Message)
	}
}
