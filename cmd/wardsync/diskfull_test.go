package main

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
