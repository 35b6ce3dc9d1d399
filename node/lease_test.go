package node_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Ward leases on a node: which office writes a ward's dossiers. The
// leases come in through node.SetLease (the sync layer's call) and the
// partition through node.ApplyPulled, as they would from the city.

const backupNodeID = "bk1"

// startBackup runs `ward init --backup` into a fresh dir and serves it.
func startBackup(t testing.TB) *testEnv {
	t.Helper()
	clock := newFakeClock(testStart)
	cfg := node.Config{Dir: t.TempDir(), Now: clock.Now}
	res, err := node.Init(context.Background(), cfg, node.InitParams{Backup: true, Node: backupNodeID})
	if err != nil {
		t.Fatalf("node.Init backup: %v", err)
	}
	if res.Ward != "" || res.Role != schema.PeerBackup || res.Series != "BK1" {
		t.Fatalf("node.Init backup = %+v", res)
	}
	e := &testEnv{t: t, cfg: cfg, clock: clock, Admin: res.AdminToken, Series: res.Series}
	e.open()
	t.Cleanup(e.close)
	return e
}

// setLease hands the node a lease as the sync layer would.
func (e *testEnv) setLease(l schema.Lease) {
	e.t.Helper()
	if l.Since == 0 {
		l.Since = e.clock.Peek().UnixMilli()
	}
	changed, err := e.Node.SetLease(context.Background(), l)
	if err != nil || !changed {
		e.t.Fatalf("SetLease(%+v) = %v, %v; want a change", l, changed, err)
	}
}

// pull moves ward's pull cursor to cursor with ops, as a pull would.
func (e *testEnv) pull(ward string, cursor uint64, ops ...schema.Op) {
	e.t.Helper()
	if _, err := e.Node.ApplyPulled(context.Background(), ward, ops, cursor); err != nil {
		e.t.Fatalf("ApplyPulled: %v", err)
	}
}

// mode is the node's mode for ward.
func (e *testEnv) mode(ward string) node.WardMode {
	e.t.Helper()
	m, _, err := e.Node.Mode(ward)
	if err != nil {
		e.t.Fatalf("Mode(%s): %v", ward, err)
	}
	return m
}

// epochs returns the lease epoch of each of origin's ops, in seq order.
func epochs(t testing.TB, n *node.Node, origin string) []uint64 {
	t.Helper()
	var out []uint64
	if err := n.Store().View(func(tx *store.Tx) error {
		ops, err := tx.OpsOf(origin, 0, 1000)
		for _, op := range ops {
			out = append(out, op.Epoch)
		}
		return err
	}); err != nil {
		t.Fatalf("OpsOf: %v", err)
	}
	return out
}

// healthLease is one entry of /healthz "leases".
type healthLease struct {
	Ward       string `json:"ward"`
	ActiveNode string `json:"active_node"`
	Epoch      uint64 `json:"epoch"`
	Mode       string `json:"mode"`
	Since      string `json:"since"`
	Reason     string `json:"reason"`
	HandbackTo string `json:"handback_to"`
}

type healthJSON struct {
	Status string        `json:"status"`
	Node   string        `json:"node"`
	Ward   string        `json:"ward"`
	Role   string        `json:"role"`
	Leases []healthLease `json:"leases"`
}

func (e *testEnv) health() (healthJSON, response) {
	e.t.Helper()
	var h healthJSON
	res := e.call("GET", "/healthz", "", nil).want(e.t, http.StatusOK)
	res.decode(e.t, &h)
	return h, res
}

// A ward office's node writes its ward only while the lease lets it:
// before any failover, and after a handback once it has caught up. Reads
// go on in every state; every response names the node serving the ward.
func TestWardNodeWritesFollowLease(t *testing.T) {
	ward := testWard()
	failover := schema.Lease{Ward: ward, Active: backupNodeID, Epoch: 1, Reason: "flooded office", Home: testNodeID, Index: 40, Ready: 39}
	handedBack := schema.Lease{Ward: ward, Active: testNodeID, Epoch: 2, Home: testNodeID, Index: 90, Ready: 88}
	cases := []struct {
		name   string
		leases []schema.Lease
		cursor uint64 // the pull cursor of the ward's partition
		mode   node.WardMode
		status int // of every write on the ward
		code   string
		active string // X-Wardsync-Active-Node
		epoch  uint64 // stamped on the writes, when allowed
		msg    []string
	}{
		{name: "no lease: the ward's own office", mode: node.ModeServing, status: 0, active: testNodeID},
		{name: "epoch 0 pulled", leases: []schema.Lease{{Ward: ward, Home: testNodeID}}, mode: node.ModeServing, active: testNodeID},
		{name: "failed over to a backup", leases: []schema.Lease{failover}, mode: node.ModeReadOnly,
			status: http.StatusConflict, code: "read_only", active: backupNodeID,
			msg: []string{"served by " + backupNodeID, "epoch 1: flooded office", "read-only until handback"}},
		{name: "handback pending to this office", leases: []schema.Lease{failover, {Ward: ward, Active: backupNodeID, Epoch: 1, HandbackTo: testNodeID, Index: 80}},
			mode: node.ModeReadOnly, status: http.StatusConflict, code: "read_only", active: backupNodeID,
			msg: []string{"served by " + backupNodeID, "finish pushing"}},
		{name: "handed back, not caught up", leases: []schema.Lease{failover, handedBack}, cursor: 87,
			mode: node.ModeCatchingUp, status: http.StatusServiceUnavailable, code: "unavailable", active: testNodeID,
			msg: []string{"catching up on ward " + ward}},
		{name: "handed back and caught up", leases: []schema.Lease{failover, handedBack}, cursor: 88,
			mode: node.ModeServing, active: testNodeID, epoch: 2},
		{name: "handing the ward on", leases: []schema.Lease{{Ward: ward, Active: testNodeID, Epoch: 3, HandbackTo: backupNodeID, Ready: 5}}, cursor: 5,
			mode: node.ModeHandingBack, status: http.StatusConflict, code: "read_only", active: testNodeID,
			msg: []string{"handing ward " + ward + " back to " + backupNodeID}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := startNode(t)
			clerk, head, _ := e.officials()
			d := e.createDossier(clerk.Token, "birth-registration", 1)
			for _, l := range c.leases {
				e.setLease(l)
			}
			if c.cursor > 0 {
				e.pull(ward, c.cursor)
			}
			if got := e.mode(ward); got != c.mode {
				t.Fatalf("mode %s, want %s", got, c.mode)
			}
			seq := lastSeq(t, e.Node)
			writes := []struct {
				path, token string
				body        any
			}{
				{"/v1/dossiers", clerk.Token, newDossierBody("birth-registration", 2)},
				{"/v1/dossiers/" + d.ID + "/transitions", clerk.Token, map[string]string{"to": "in_review"}},
				{"/v1/dossiers/" + d.ID + "/notes", clerk.Token, map[string]string{"text": "gọi điện"}},
				{"/v1/dossiers/" + d.ID + "/assign", head.Token, map[string]string{"official": clerk.ID}},
			}
			for _, w := range writes {
				res := e.call("POST", w.path, w.token, w.body)
				if got := res.Header.Get(node.HeaderActiveNode); got != c.active {
					t.Errorf("POST %s: %s %q, want %q", w.path, node.HeaderActiveNode, got, c.active)
				}
				if c.status == 0 {
					if res.Status != http.StatusOK && res.Status != http.StatusCreated {
						t.Fatalf("POST %s: %d %s", w.path, res.Status, res.Body)
					}
					continue
				}
				ae := res.wantError(t, c.status, c.code, "")
				for _, m := range c.msg {
					if !strings.Contains(ae.Message, m) {
						t.Errorf("POST %s: message %q lacks %q", w.path, ae.Message, m)
					}
				}
			}
			if c.status != 0 {
				res := e.attach(clerk.Token, d.ID, "scan.pdf", pdfBytes(t, 10_000))
				res.wantError(t, c.status, c.code, "")
				if got := lastSeq(t, e.Node); got != seq {
					t.Fatalf("refused writes moved the seq from %d to %d", seq, got)
				}
			} else {
				want := []uint64{0, c.epoch, c.epoch, c.epoch, c.epoch}
				if got := epochs(t, e.Node, testNodeID); !slices.Equal(got, want) {
					t.Errorf("op epochs %v, want %v", got, want)
				}
			}

			// Reads always work, and carry the header; so do errors.
			for _, path := range []string{"/v1/dossiers/" + d.ID, "/v1/dossiers", "/v1/stats"} {
				res := e.call("GET", path, clerk.Token, nil).want(t, http.StatusOK)
				if got := res.Header.Get(node.HeaderActiveNode); got != c.active {
					t.Errorf("GET %s: %s %q, want %q", path, node.HeaderActiveNode, got, c.active)
				}
			}
			for _, res := range []response{e.call("GET", "/v1/me", "", nil), e.call("GET", "/nope", clerk.Token, nil)} {
				if got := res.Header.Get(node.HeaderActiveNode); got != c.active {
					t.Errorf("error response: %s %q, want %q", node.HeaderActiveNode, got, c.active)
				}
			}

			// A read-only office is healthy: /healthz is 200 and says who serves.
			h, res := e.health()
			if got := res.Header.Get(node.HeaderActiveNode); got != c.active {
				t.Errorf("/healthz: %s %q, want %q", node.HeaderActiveNode, got, c.active)
			}
			if h.Status != "ok" || h.Role != "ward" || len(h.Leases) != 1 {
				t.Fatalf("healthz %+v", h)
			}
			hl := h.Leases[0]
			if hl.Ward != ward || hl.Mode != string(c.mode) || hl.ActiveNode != c.active {
				t.Errorf("healthz lease %+v, want ward %s mode %s active %s", hl, ward, c.mode, c.active)
			}
			if n := len(c.leases); n > 0 {
				last := c.leases[n-1]
				if hl.Epoch != last.Epoch || hl.Reason != last.Reason || hl.HandbackTo != last.HandbackTo || (last.Epoch > 0 && hl.Since == "") {
					t.Errorf("healthz lease %+v, want %+v", hl, last)
				}
			}
		})
	}
}

// Cross-ward reception needs no lease: a read-only ward office still
// receives a citizen for another ward (epoch 0), and keeps a read-only
// tracking copy.
func TestCrossWardReceptionWhileReadOnly(t *testing.T) {
	e := startNode(t)
	e.setLease(schema.Lease{Ward: e.Ward, Active: backupNodeID, Epoch: 1})
	b := newDossierBody("birth-registration", 1)
	b["ward"] = otherWard()
	var d dossierJSON
	e.call("POST", "/v1/dossiers", e.Admin, b).want(t, http.StatusCreated).decode(t, &d)
	if !strings.HasPrefix(d.ReceiptNo, e.Ward+"-") || d.Ward != otherWard() {
		t.Errorf("cross-ward dossier %s in ward %s", d.ReceiptNo, d.Ward)
	}
	if got := epochs(t, e.Node, testNodeID); !slices.Equal(got, []uint64{0}) {
		t.Errorf("epochs %v, want [0]", got)
	}
	e.call("POST", "/v1/dossiers/"+d.ID+"/notes", e.Admin, map[string]string{"text": "x"}).
		wantError(t, http.StatusForbidden, "forbidden", "")
	if m := e.mode(otherWard()); m != node.ModeNotHeld {
		t.Errorf("mode of another ward %s, want not_held", m)
	}
}

// Leases only move forward, and a change survives a restart.
func TestSetLeaseForwardOnly(t *testing.T) {
	e := startNode(t)
	ctx := context.Background()
	e.setLease(schema.Lease{Ward: e.Ward, Active: backupNodeID, Epoch: 2, Index: 10})
	for _, old := range []schema.Lease{
		{Ward: e.Ward, Active: testNodeID, Epoch: 1, Index: 5},
		{Ward: e.Ward, Active: backupNodeID, Epoch: 2, Index: 10},
	} {
		if changed, err := e.Node.SetLease(ctx, old); err != nil || changed {
			t.Errorf("SetLease(%+v) = %v, %v; want no change", old, changed, err)
		}
	}
	if _, err := e.Node.SetLease(ctx, schema.Lease{Ward: "", Epoch: 3}); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("SetLease without a ward: %v", err)
	}
	wake := e.Node.LeaseChanges()
	e.setLease(schema.Lease{Ward: e.Ward, Active: testNodeID, Epoch: 3, Index: 20})
	select {
	case <-wake:
	default:
		t.Error("LeaseChanges not closed by a lease change")
	}
	e.reopen()
	l, ok, err := e.Node.Lease(e.Ward)
	if err != nil || !ok || l.Epoch != 3 || l.Active != testNodeID {
		t.Fatalf("Lease after restart = %+v, %v, %v", l, ok, err)
	}
	if _, ok, _ := e.Node.Lease(otherWard()); ok {
		t.Error("a lease of a ward never pulled")
	}
}

// A backup office: no ward of its own; it serves the wards whose leases
// name it, once it has caught up on each, numbers receipts with the
// dossier's ward and its own series, and turns read-only on handback.
func TestBackupOffice(t *testing.T) {
	_, err := node.Init(context.Background(), node.Config{Dir: t.TempDir()}, node.InitParams{Backup: true, Ward: testWard(), Node: "bk9"})
	var fe *schema.FieldError
	if !errors.As(err, &fe) || fe.Field != "ward" {
		t.Fatalf("backup init with a ward: %v, want a field error on ward", err)
	}

	e := startBackup(t)
	a, b := testWard(), otherWard()
	if !e.Node.IsBackup() || e.Node.Identity().Ward != "" || e.Node.Identity().Role != schema.PeerBackup {
		t.Fatalf("identity %+v", e.Node.Identity())
	}
	h, res := e.health()
	if h.Role != "backup" || h.Leases == nil || len(h.Leases) != 0 || res.Header.Get(node.HeaderActiveNode) != "" {
		t.Fatalf("healthz of a backup with no lease %+v, header %q", h, res.Header.Get(node.HeaderActiveNode))
	}
	clerk, head, _ := e.officials()

	// Nothing held: nothing received, and no default ward to list.
	ae := e.call("POST", "/v1/dossiers", clerk.Token, newDossierBody("birth-registration", 1)).wantError(t, http.StatusBadRequest, "invalid_field", "ward")
	if !strings.Contains(ae.Message, "no ward's lease") {
		t.Errorf("message %q", ae.Message)
	}
	withWard := func(ward string, i int) map[string]any {
		body := newDossierBody("birth-registration", i)
		body["ward"] = ward
		return body
	}
	e.call("POST", "/v1/dossiers", clerk.Token, withWard(a, 1)).wantError(t, http.StatusForbidden, "forbidden", "")
	e.call("GET", "/v1/dossiers", clerk.Token, nil).wantError(t, http.StatusBadRequest, "invalid_field", "ward")
	e.call("GET", "/v1/stats", clerk.Token, nil).wantError(t, http.StatusBadRequest, "invalid_field", "ward")

	// Failover of ward a, already caught up: it serves a.
	e.setLease(schema.Lease{Ward: a, Active: backupNodeID, Epoch: 1, Reason: "fire", Ready: 12})
	if m := e.mode(a); m != node.ModeCatchingUp {
		t.Fatalf("mode before the pull %s", m)
	}
	e.call("POST", "/v1/dossiers", clerk.Token, newDossierBody("birth-registration", 2)).wantError(t, http.StatusServiceUnavailable, "unavailable", "")
	e.pull(a, 12)
	res = e.call("POST", "/v1/dossiers", clerk.Token, newDossierBody("birth-registration", 2)).want(t, http.StatusCreated)
	var d dossierJSON
	res.decode(t, &d)
	if got := res.Header.Get(node.HeaderActiveNode); got != backupNodeID {
		t.Errorf("header %q, want %s", got, backupNodeID)
	}
	m := receiptRe.FindStringSubmatch(d.ReceiptNo)
	if m == nil || m[1] != a || m[3] != "BK1" || d.Ward != a || d.Origin != backupNodeID {
		t.Fatalf("dossier at the backup: receipt %q ward %s origin %s", d.ReceiptNo, d.Ward, d.Origin)
	}
	e.transition(clerk.Token, d.ID, "in_review")
	if l := e.listAll(clerk.Token, "", 10); len(l) != 1 || l[0].ID != d.ID {
		t.Errorf("default listing %v", ids(l))
	}
	e.call("GET", "/v1/stats", clerk.Token, nil).want(t, http.StatusOK)
	ae = e.call("POST", "/v1/dossiers", clerk.Token, withWard(b, 3)).wantError(t, http.StatusForbidden, "forbidden", "")
	if !strings.Contains(ae.Message, "does not hold ward "+b) || !strings.Contains(ae.Message, "holds "+a) {
		t.Errorf("refusal %q should name the ward refused and the wards held", ae.Message)
	}

	// A second ward: two held, so the ward must be named.
	e.setLease(schema.Lease{Ward: b, Active: backupNodeID, Epoch: 4, Ready: 3})
	if got := e.Node.ServedWards(); !slices.Equal(got, sortedPair(a, b)) {
		t.Errorf("ServedWards %v", got)
	}
	e.call("POST", "/v1/dossiers", clerk.Token, newDossierBody("birth-registration", 4)).wantError(t, http.StatusBadRequest, "invalid_field", "ward")
	e.call("GET", "/v1/dossiers", clerk.Token, nil).wantError(t, http.StatusBadRequest, "invalid_field", "ward")
	e.call("POST", "/v1/dossiers", clerk.Token, withWard(b, 4)).wantError(t, http.StatusServiceUnavailable, "unavailable", "")
	e.pull(b, 3)
	var db dossierJSON
	e.call("POST", "/v1/dossiers", clerk.Token, withWard(b, 5)).want(t, http.StatusCreated).decode(t, &db)
	if m := receiptRe.FindStringSubmatch(db.ReceiptNo); m == nil || m[1] != b || m[3] != "BK1" {
		t.Errorf("receipt %q, want ward %s series BK1", db.ReceiptNo, b)
	}
	if got := e.call("GET", "/v1/dossiers?ward="+b, clerk.Token, nil).want(t, http.StatusOK).Header.Get(node.HeaderActiveNode); got != backupNodeID {
		t.Errorf("header with ?ward= %q", got)
	}
	if got := e.call("GET", "/v1/me", clerk.Token, nil).Header.Get(node.HeaderActiveNode); got != "" {
		t.Errorf("header with two held wards and no ?ward= %q, want none", got)
	}
	h, _ = e.health()
	if len(h.Leases) != 2 || h.Leases[0].Mode != "serving" || h.Leases[1].Mode != "serving" {
		t.Errorf("healthz leases %+v", h.Leases)
	}
	if got, want := epochs(t, e.Node, backupNodeID), []uint64{1, 1, 4}; !slices.Equal(got, want) {
		t.Errorf("op epochs %v, want %v", got, want)
	}

	// Handback of a: read-only while it pushes, then not held.
	e.setLease(schema.Lease{Ward: a, Active: backupNodeID, Epoch: 1, HandbackTo: testNodeID, Index: 50, Ready: 12})
	ae = e.call("POST", "/v1/dossiers/"+d.ID+"/transitions", head.Token, map[string]string{"to": "approved"}).wantError(t, http.StatusConflict, "read_only", "")
	if !strings.Contains(ae.Message, "handing ward "+a+" back to "+testNodeID) {
		t.Errorf("message %q", ae.Message)
	}
	e.setLease(schema.Lease{Ward: a, Active: testNodeID, Epoch: 2, Home: testNodeID, Index: 60})
	if m := e.mode(a); m != node.ModeNotHeld {
		t.Errorf("mode after handback %s", m)
	}
	e.call("POST", "/v1/dossiers/"+d.ID+"/transitions", head.Token, map[string]string{"to": "approved"}).wantError(t, http.StatusForbidden, "forbidden", "")
	// Nor may it read the ward any more (invariant 4); the header says who
	// serves it.
	if got := e.call("GET", "/v1/dossiers/"+d.ID+"?ward="+a, clerk.Token, nil).want(t, http.StatusForbidden).Header.Get(node.HeaderActiveNode); got != testNodeID {
		t.Errorf("header for a handed-back ward %q, want %s", got, testNodeID)
	}
	// Now b is the only held ward: it is the default again.
	e.call("POST", "/v1/dossiers", clerk.Token, newDossierBody("birth-registration", 6)).want(t, http.StatusCreated)

	// The identity survives a restart.
	e.reopen()
	if !e.Node.IsBackup() || !slices.Equal(e.Node.ServedWards(), []string{b}) {
		t.Errorf("after restart: backup %v, serves %v", e.Node.IsBackup(), e.Node.ServedWards())
	}
}

func sortedPair(a, b string) []string {
	s := []string{a, b}
	slices.Sort(s)
	return s
}

// pulledTransition is a transition made at another office, as it comes
// down from the city.
func pulledTransition(origin string, seq uint64, d schema.Dossier, wallMs int64, to schema.Status) schema.Op {
	return schema.Op{
		ID: schema.OpID{Origin: origin, Seq: seq}, Ward: d.Ward, Dossier: d.ID, HLC: schema.NewHLC(wallMs, 0),
		Actor: schema.Actor{ID: origin + "-head", Name: "Trưởng phòng", Role: schema.RoleHead},
		Kind:  schema.KindTransition, Epoch: 1, Body: schema.MarshalBody(schema.TransitionBody{To: to}),
	}
}

// Two offices that decided the same dossier differently while cut off:
// the later decision is a conflict, listed by ?conflict=true until a head
// resolves it. The ward digest counts it.
func TestConflictListing(t *testing.T) {
	e := startNode(t)
	clerk, head, _ := e.officials()
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	calm := e.createDossier(clerk.Token, "birth-registration", 2)
	e.transition(clerk.Token, d.ID, "in_review")
	e.transition(clerk.Token, calm.ID, "in_review")
	sd, err := e.Node.Dossier(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	at := sd.LastHLC.Wall()
	e.pull(e.Ward, 7,
		pulledTransition("bk1", 1, sd, at+1000, schema.StatusApproved),
		pulledTransition("bk2", 1, sd, at+2000, schema.StatusRejected))

	got := e.listAll(clerk.Token, "conflict=true", 10)
	if len(got) != 1 || got[0].ID != d.ID || len(got[0].Conflicts) != 1 || got[0].Status != "approved" {
		t.Fatalf("conflict listing %+v, want only %s, approved with one conflict", got, d.ID)
	}
	if all := e.listAll(clerk.Token, "conflict=false", 10); len(all) != 2 {
		t.Errorf("conflict=false listed %d", len(all))
	}
	for _, bad := range []string{"yes", "1", "TRUE"} {
		e.call("GET", "/v1/dossiers?conflict="+bad, clerk.Token, nil).wantError(t, http.StatusBadRequest, "invalid_field", "conflict")
	}
	var dg store.Digest
	e.call("GET", "/v1/wards/"+e.Ward+"/digest", clerk.Token, nil).want(t, http.StatusOK).decode(t, &dg)
	if dg.Conflicts != 1 || dg.Dossiers != 2 || dg.Ops != 6 {
		t.Errorf("digest %+v, want 2 dossiers, 6 ops, 1 conflict", dg)
	}

	e.call("POST", "/v1/dossiers/"+d.ID+"/resolve", head.Token, map[string]string{"conflict": "bk2/1", "to": "rejected"}).want(t, http.StatusOK)
	if got := e.listAll(clerk.Token, "conflict=true", 10); len(got) != 0 {
		t.Errorf("conflict listing after resolve: %v", ids(got))
	}
	if s := e.getDossier(clerk.Token, d.ID).Status; s != "rejected" {
		t.Errorf("status after resolve %s", s)
	}
}

// GET /v1/wards/{code}/digest is the partition as this node holds it: the
// ward's own dossiers, not tracking copies of other wards'.
func TestWardDigestEndpoint(t *testing.T) {
	e := startNode(t)
	clerk, _, _ := e.officials()
	for i := range 3 {
		e.createDossier(clerk.Token, "birth-registration", i)
	}
	b := newDossierBody("birth-registration", 9)
	b["ward"] = otherWard()
	e.call("POST", "/v1/dossiers", clerk.Token, b).want(t, http.StatusCreated)

	for _, ward := range []string{e.Ward, otherWard()} {
		var got store.Digest
		e.call("GET", "/v1/wards/"+ward+"/digest", clerk.Token, nil).want(t, http.StatusOK).decode(t, &got)
		var want store.Digest
		if err := e.Node.Store().View(func(tx *store.Tx) (err error) {
			want, err = tx.WardDigest(ward)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got != want || got.Ward != ward || len(got.Hash) != 64 {
			t.Errorf("digest of %s = %+v, want %+v", ward, got, want)
		}
	}
	var own store.Digest
	e.call("GET", "/v1/wards/"+e.Ward+"/digest", clerk.Token, nil).decode(t, &own)
	if own.Dossiers != 3 || own.Ops != 3 || own.Conflicts != 0 {
		t.Errorf("own ward digest %+v", own)
	}
	e.call("GET", "/v1/wards/NOPE/digest", clerk.Token, nil).wantError(t, http.StatusNotFound, "not_found", "")
	e.call("GET", "/v1/wards/"+e.Ward+"/digest", "", nil).wantError(t, http.StatusUnauthorized, "unauthorized", "")
}

// A backup keeps and refetches the scans of a ward it served, after the
// ward was handed back too (a ward it never served it fetches on demand).
func TestBackupMarksMissingBlobsOfServedWards(t *testing.T) {
	e := startBackup(t)
	ctx := context.Background()
	ward := testWard()
	e.setLease(schema.Lease{Ward: ward, Active: backupNodeID, Epoch: 1, Ready: 2})
	e.pull(ward, 2)
	id := e.createDossier(e.Admin, "certified-copy", 1).ID
	scan := pdfBytes(t, 100_000)
	if r := e.attach(e.Admin, id, "scan.pdf", scan); r.Status != http.StatusCreated {
		t.Fatalf("attach: %d %s", r.Status, r.Body)
	}
	e.setLease(schema.Lease{Ward: ward, Active: testNodeID, Epoch: 2, Index: 9})
	h := sha256.Sum256(scan)
	// The scan reached the city, then the blob store lost it.
	if err := e.Node.Store().Write(ctx, func(tx *store.Tx) error { tx.ClearUpload(h); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.Node.Blobs().DeleteManifest(h); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Node.MarkMissingBlobs(ctx); err != nil || n != 1 {
		t.Fatalf("MarkMissingBlobs = %d, %v; want 1", n, err)
	}
}
