package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWardRefusesWritesBelowItsDiskReserve runs a real node whose reserve
// (--min-free-disk) is more than any disk has: it starts, says in
// /healthz that its disk is full, refuses a create with 503 disk_full and
// saves nothing; restarted with the default reserve it takes the create.
// (The chaos campaign fills real ext4 disks; this shows the contract
// without root.)
func TestWardRefusesWritesBelowItsDiskReserve(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	dataDir := filepath.Join(t.TempDir(), "node")
	token := initNode(t, dataDir)
	create := map[string]any{"procedure": "birth-registration",
		"applicant": map[string]string{"name": "Lê Thị Đầy", "id_number": "079123456789"}}

	node := startNode(t, exec.Command(wardsyncBin(t), "ward", "run", "--data", dataDir, "--http", "127.0.0.1:0",
		"--min-free-disk", "4611686018427387904"))
	client := newAPI(node.url, token)

	code, body, err := client.do("GET", "/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	var health struct{ Status, Error string }
	if err := json.Unmarshal(body, &health); err != nil {
		t.Fatalf("/healthz: %v: %s", err, body)
	}
	if code != http.StatusServiceUnavailable || health.Status != "disk_full" || !strings.Contains(health.Error, "--min-free-disk") {
		t.Fatalf("/healthz with the disk below the reserve: HTTP %d %s", code, body)
	}

	code, body, err = client.do("POST", "/v1/dossiers", create)
	if err != nil {
		t.Fatal(err)
	}
	var refused struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &refused); err != nil {
		t.Fatalf("create: %v: %s", err, body)
	}
	if code != http.StatusServiceUnavailable || refused.Error.Code != "disk_full" || !strings.Contains(refused.Error.Message, "nothing was saved") {
		t.Fatalf("create with the disk below the reserve: HTTP %d %s", code, body)
	}
	if code, body, _ := client.do("GET", "/metrics", nil); code != http.StatusOK || !strings.Contains(string(body), "wardsync_disk_reserve_bytes 4.611686018427388e+18") {
		t.Errorf("/metrics lacks the disk reserve gauge (HTTP %d)", code)
	}
	node.stop()

	node = startNode(t, runWardCmd(t, dataDir))
	client = newAPI(node.url, token)
	dossiers := func() int {
		code, body, err := client.do("GET", "/v1/dossiers", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("list: HTTP %d %v %s", code, err, body)
		}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	if n := dossiers(); n != 0 {
		t.Fatalf("the refused create was saved: %d dossiers", n)
	}
	if code, body, err := client.do("POST", "/v1/dossiers", create); err != nil || code != http.StatusCreated {
		t.Fatalf("create with room on the disk: HTTP %d %v %s", code, err, body)
	}
	if n := dossiers(); n != 1 {
		t.Fatalf("after one create: %d dossiers listed", n)
	}
	node.stop()
}

// TestWardShortOfDiskStillPushes: a ward whose disk is below its reserve
// refuses new writes but still sends the city the ops it took while it had
// room — getting them off a failing machine is what matters then — and a
// portal submission for it waits at the city until the ward has room, then
// arrives.
func TestWardShortOfDiskStillPushes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ids := []string{"c1", "c2", "c3"}
	e := newCityEnv(t, ids...)
	a := e.initWard("wa", testWard(t))
	boot := e.bootstrapSpec(ids...)
	for _, id := range ids {
		e.start(id, "--bootstrap", boot)
	}
	e.waitLeader("c1", "")

	// Offline, with room: the clerk takes 20 dossiers.
	a.proc = startNode(t, exec.Command(wardsyncBin(t), "ward", "run", "--data", a.dir, "--http", "127.0.0.1:0"))
	a.api = newAPI(a.proc.url, a.token)
	var created []string
	for i := range 20 {
		var d syncedDossier
		json.Unmarshal(a.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
			"applicant": map[string]string{"name": fmt.Sprintf("Người %d", i), "id_number": fmt.Sprintf("%012d", 79_200_000_000+i)}}, 201), &d)
		created = append(created, d.ID)
	}
	a.proc.stop()

	// Now below its reserve, and linked to the city.
	a.proc = startNode(t, exec.Command(wardsyncBin(t), "ward", "run", "--data", a.dir, "--http", "127.0.0.1:0",
		"--city", e.cityQUIC(ids...), "--tls", filepath.Join(e.dir, "tls", a.id), "--quic", "127.0.0.1:0",
		"--min-free-disk", "4611686018427387904"))
	a.api = newAPI(a.proc.url, a.token)
	a.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
		"applicant": map[string]string{"name": "Người mới", "id_number": "079299999999"}}, http.StatusServiceUnavailable)
	var st struct {
		Connected   bool   `json:"connected"`
		OutboxDepth uint64 `json:"outbox_depth"`
		LastError   string `json:"last_error"`
	}
	eventually(t, "the full ward's outbox drained", 60*time.Second, func() error {
		json.Unmarshal(a.must(t, "GET", "/v1/sync/status", nil, 200), &st)
		if !st.Connected || st.OutboxDepth != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	for _, id := range created {
		for _, m := range ids {
			eventually(t, "dossier "+id+" on "+m, 30*time.Second, func() error {
				if _, ok := e.cityDossier(m, id); !ok {
					return fmt.Errorf("not on %s", m)
				}
				return nil
			})
		}
	}

	pd, err := e.submit("c2", 1)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ward says its pull waits for disk space", 30*time.Second, func() error {
		json.Unmarshal(a.must(t, "GET", "/v1/sync/status", nil, 200), &st)
		if !strings.Contains(st.LastError, "waits for disk space") {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// On loopback the page reaches the ward in milliseconds: 3 s without
	// the dossier is the ward refusing it, not the city being slow.
	for range 15 {
		if _, ok := a.get(t, pd.ID); ok {
			t.Fatalf("portal dossier %s stored on a ward below its disk reserve", pd.ID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.proc.stop()

	e.runWard(a, e.cityQUIC(ids...)) // the default reserve: room again
	eventually(t, "the portal dossier reaches the ward", 60*time.Second, func() error {
		if _, ok := a.get(t, pd.ID); !ok {
			return fmt.Errorf("%s not on the ward", pd.ID)
		}
		return nil
	})
}
