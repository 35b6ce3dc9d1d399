package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// wardNode is a ward edge node process linked (or not yet) to the city.
type wardNode struct {
	id, ward, dir, token string
	proc                 *nodeProc
	api                  *api
}

func (e *cityEnv) initWard(id, ward string) *wardNode {
	e.t.Helper()
	w := &wardNode{id: id, ward: ward, dir: filepath.Join(e.dir, "ward-"+id)}
	runOK(e.t, "ops", "cert", "issue", "--ca", filepath.Join(e.dir, "ca"), "--role", "ward", "--node", id, "--ward", ward, "--out", filepath.Join(e.dir, "tls", id))
	out, err := exec.Command(wardsyncBin(e.t), "ward", "init", "--data", w.dir, "--ward", ward, "--node", id, "--json").Output()
	if err != nil {
		e.t.Fatalf("ward init: %v", err)
	}
	var res struct {
		AdminToken string `json:"admin_token"`
	}
	json.Unmarshal(out, &res)
	w.token = res.AdminToken
	return w
}

func (e *cityEnv) cityQUIC(ids ...string) string {
	var a []string
	for _, id := range ids {
		a = append(a, e.quic[id])
	}
	return strings.Join(a, ",")
}

func (e *cityEnv) runWard(w *wardNode, city string) {
	e.t.Helper()
	w.proc = startNode(e.t, exec.Command(wardsyncBin(e.t), "ward", "run", "--data", w.dir, "--http", "127.0.0.1:0",
		"--city", city, "--tls", filepath.Join(e.dir, "tls", w.id), "--quic", "127.0.0.1:0"))
	w.api = newAPI(w.proc.url, w.token)
}

func (w *wardNode) must(t *testing.T, method, path string, body any, want int) []byte {
	t.Helper()
	code, data, err := w.api.do(method, path, body)
	if err != nil || code != want {
		t.Fatalf("%s %s on %s: HTTP %d %v %s", method, path, w.id, code, err, data)
	}
	return data
}

type syncedDossier struct {
	ID        string `json:"id"`
	Ward      string `json:"ward"`
	Status    string `json:"status"`
	StateHash string `json:"state_hash"`
	ReceiptNo string `json:"receipt_no"`
}

func (w *wardNode) get(t *testing.T, id string) (syncedDossier, bool) {
	code, data, err := w.api.do("GET", "/v1/dossiers/"+id, nil)
	if err != nil || code != 200 {
		return syncedDossier{}, false
	}
	var d syncedDossier
	json.Unmarshal(data, &d)
	return d, true
}

func (e *cityEnv) cityDossier(member, id string) (syncedDossier, bool) {
	code, body := e.call(e.admin, "GET", e.members[member].url+"/v1/dossiers/"+id, nil)
	if code != 200 {
		return syncedDossier{}, false
	}
	var d syncedDossier
	json.Unmarshal(body, &d)
	return d, true
}

func eventually(t *testing.T, what string, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSyncOfflineThenHeal: the city is down while the ward works; when it
// comes up, the city holds exactly the ward's ops and every dossier's
// state hash matches on the ward and on all 3 members. A portal submission
// then reaches the ward, and a cross-ward reception reaches the other ward
// and its status changes come back to the tracking copy.
func TestSyncOfflineThenHeal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	wards := schema.DefaultWards().All()
	a := e.initWard("wa", wards[0].Code)
	b := e.initWard("wb", wards[1].Code)
	// Phase 1: no city. The ward works anyway.
	e.runWard(a, e.cityQUIC(ids...))
	const n = 1000
	var created []string
	for i := 0; i < n; i++ {
		var d syncedDossier
		json.Unmarshal(a.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
			"applicant": map[string]string{"name": fmt.Sprintf("Người %d", i), "id_number": fmt.Sprintf("%012d", 79_100_000_000+i)}}, 201), &d)
		created = append(created, d.ID)
		a.must(t, "POST", "/v1/dossiers/"+d.ID+"/transitions", map[string]string{"to": "in_review"}, 200)
		if i%3 == 0 {
			a.must(t, "POST", "/v1/dossiers/"+d.ID+"/transitions", map[string]string{"to": "approved"}, 200)
		}
	}
	var st struct {
		Connected   bool   `json:"connected"`
		OutboxDepth uint64 `json:"outbox_depth"`
	}
	json.Unmarshal(a.must(t, "GET", "/v1/sync/status", nil, 200), &st)
	if st.Connected || st.OutboxDepth == 0 {
		t.Fatalf("offline status: %+v", st)
	}
	// Phase 2: the city comes up.
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")
	eventually(t, "ward outbox drained", 60*time.Second, func() error {
		json.Unmarshal(a.must(t, "GET", "/v1/sync/status", nil, 200), &st)
		if !st.Connected || st.OutboxDepth != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	for _, id := range created {
		wd, _ := a.get(t, id)
		for _, m := range ids {
			eventually(t, "dossier "+id+" on "+m, 30*time.Second, func() error {
				cd, ok := e.cityDossier(m, id)
				if !ok || cd.StateHash != wd.StateHash {
					return fmt.Errorf("city %s has %+v, ward has %+v", m, cd, wd)
				}
				return nil
			})
		}
	}
	// The city's view of the ward: no lag once everything is pushed.
	eventually(t, "city sees the ward caught up", 30*time.Second, func() error {
		code, body := e.call(e.admin, "GET", e.members["c2"].url+"/v1/wards", nil)
		if code != 200 || !strings.Contains(string(body), `"high_water":{"wa":`+fmt.Sprint(n*2+(n+2)/3)) {
			return fmt.Errorf("HTTP %d %s", code, body)
		}
		return nil
	})

	// The operator's table says the same.
	eventually(t, "ops status shows the ward up with no lag", 30*time.Second, func() error {
		out, err := exec.Command(wardsyncBin(t), "ops", "status", "--city", e.members["c1"].url, "--tls", filepath.Join(e.dir, "tls", "admin")).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == a.ward {
				if f[1] != "up" || f[len(f)-1] != "0" {
					return fmt.Errorf("row %q", line)
				}
				return nil
			}
		}
		return fmt.Errorf("no row for %s in\n%s", a.ward, out)
	})

	// A portal submission at the city reaches the ward.
	var p syncedDossier
	code, body := e.call(e.portal, "POST", e.members["c3"].url+"/v1/dossiers", map[string]any{"procedure": "birth-registration", "ward": a.ward,
		"applicant": map[string]string{"name": "Cổng dịch vụ công", "id_number": "079123450000"}})
	if code != 201 {
		t.Fatalf("portal: %d %s", code, body)
	}
	json.Unmarshal(body, &p)
	eventually(t, "portal dossier on the ward", 30*time.Second, func() error {
		if _, ok := a.get(t, p.ID); !ok {
			return fmt.Errorf("not there yet")
		}
		return nil
	})
	// The ward processes it; that goes back up.
	a.must(t, "POST", "/v1/dossiers/"+p.ID+"/transitions", map[string]string{"to": "in_review"}, 200)
	eventually(t, "ward's move of the portal dossier at the city", 30*time.Second, func() error {
		if cd, _ := e.cityDossier("c1", p.ID); cd.Status != "in_review" {
			return fmt.Errorf("city status %q", cd.Status)
		}
		return nil
	})

	// Cross-ward reception: A receives a citizen of B's ward.
	e.runWard(b, e.cityQUIC(ids...))
	var x syncedDossier
	json.Unmarshal(a.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "residence-confirmation", "ward": b.ward,
		"applicant": map[string]string{"name": "Người ở phường khác", "id_number": "079123459999"}}, 201), &x)
	eventually(t, "cross-ward dossier on B", 30*time.Second, func() error {
		if _, ok := b.get(t, x.ID); !ok {
			return fmt.Errorf("not on B yet")
		}
		return nil
	})
	// A's copy is for tracking only: B processes it.
	a.must(t, "POST", "/v1/dossiers/"+x.ID+"/notes", map[string]string{"text": "nhắc"}, 403)
	b.must(t, "POST", "/v1/dossiers/"+x.ID+"/transitions", map[string]string{"to": "in_review"}, 200)
	eventually(t, "B's status change on A's tracking copy", 30*time.Second, func() error {
		if d, _ := a.get(t, x.ID); d.Status != "in_review" {
			return fmt.Errorf("A's copy is %q", d.Status)
		}
		return nil
	})
	a.proc.stop()
	b.proc.stop()
}
