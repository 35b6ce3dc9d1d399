package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// initBackup makes a backup office node whose certificate names wards.
func (e *cityEnv) initBackup(id string, wards ...string) *wardNode {
	e.t.Helper()
	w := &wardNode{id: id, dir: filepath.Join(e.dir, "backup-"+id)}
	args := []string{"ops", "cert", "issue", "--ca", filepath.Join(e.dir, "ca"), "--role", "backup", "--node", id, "--out", filepath.Join(e.dir, "tls", id)}
	for _, ward := range wards {
		args = append(args, "--ward", ward)
	}
	runOK(e.t, args...)
	out, err := exec.Command(wardsyncBin(e.t), "backup-office", "init", "--data", w.dir, "--node", id, "--json").Output()
	if err != nil {
		e.t.Fatalf("backup-office init: %v", err)
	}
	var res struct {
		AdminToken string `json:"admin_token"`
	}
	json.Unmarshal(out, &res)
	w.token = res.AdminToken
	return w
}

// runBackup starts a backup office node linked to city.
func (e *cityEnv) runBackup(w *wardNode, city string) {
	e.t.Helper()
	w.proc = startNode(e.t, exec.Command(wardsyncBin(e.t), "backup-office", "run", "--data", w.dir, "--http", "127.0.0.1:0",
		"--city", city, "--tls", filepath.Join(e.dir, "tls", w.id), "--quic", "127.0.0.1:0"))
	w.api = newAPI(w.proc.url, w.token)
}

// ops runs a wardsync ops command against member with the admin
// certificate and returns its output.
func (e *cityEnv) ops(member string, args ...string) (string, error) {
	full := append([]string{"ops"}, args...)
	full = append(full, "--city", e.members[member].url, "--tls", filepath.Join(e.dir, "tls", "admin"))
	out, err := exec.Command(wardsyncBin(e.t), full...).CombinedOutput()
	return string(out), err
}

// digest is a ward's digest as member holds it.
func (e *cityEnv) digest(member, ward string) store.Digest {
	var v struct {
		Digest store.Digest `json:"digest"`
	}
	code, body := e.call(e.admin, "GET", e.members[member].url+"/v1/wards/"+ward+"/digest", nil)
	if code != 200 {
		e.t.Fatalf("digest on %s: HTTP %d %s", member, code, body)
	}
	json.Unmarshal(body, &v)
	return v.Digest
}

func (w *wardNode) digest(t *testing.T, ward string) store.Digest {
	var d store.Digest
	json.Unmarshal(w.must(t, "GET", "/v1/wards/"+ward+"/digest", nil, 200), &d)
	return d
}

// mode is the node's mode for ward, from /healthz.
func (w *wardNode) mode(t *testing.T, ward string) string {
	var h struct {
		Leases []struct {
			Ward string `json:"ward"`
			Mode string `json:"mode"`
		} `json:"leases"`
	}
	json.Unmarshal(w.must(t, "GET", "/healthz", nil, 200), &h)
	for _, l := range h.Leases {
		if l.Ward == ward {
			return l.Mode
		}
	}
	return ""
}

// TestFailoverSmoke: a backup takes a live ward over, serves it, and hands
// it back.
func TestFailoverSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	ward := testWard(t)
	wa := e.initWard("wa", ward)
	bk := e.initBackup("bk1", ward)
	e.runWard(wa, e.cityQUIC(ids...))
	e.runBackup(bk, e.cityQUIC(ids...))
	var made []string
	for i := 0; i < 20; i++ {
		var d syncedDossier
		json.Unmarshal(wa.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
			"applicant": map[string]string{"name": fmt.Sprintf("Người %d", i), "id_number": fmt.Sprintf("%012d", 79_200_000_000+i)}}, 201), &d)
		made = append(made, d.ID)
	}
	eventually(t, "ward pushed", 30*time.Second, func() error {
		if d := e.digest("c1", ward); d.Dossiers != 20 {
			return fmt.Errorf("city has %+v", d)
		}
		return nil
	})
	out, err := e.ops("c2", "failover", "--ward", ward, "--to", "bk1", "--reason", "flood", "--timeout", "60s")
	if err != nil {
		t.Fatalf("failover: %v\n%s", err, out)
	}
	t.Logf("failover:\n%s", out)
	eventually(t, "backup serving", 30*time.Second, func() error {
		if m := bk.mode(t, ward); m != "serving" {
			return fmt.Errorf("backup mode %q", m)
		}
		if m := wa.mode(t, ward); m != "read_only" {
			return fmt.Errorf("ward mode %q", m)
		}
		return nil
	})
	wa.must(t, "POST", "/v1/dossiers/"+made[0]+"/transitions", map[string]string{"to": "in_review"}, 409)
	bk.must(t, "POST", "/v1/dossiers/"+made[0]+"/transitions", map[string]string{"to": "in_review"}, 200)
	out, err = e.ops("c3", "handback", "--ward", ward, "--timeout", "60s")
	if err != nil {
		t.Fatalf("handback: %v\n%s\nbackup:\n%s", err, out, bk.proc.stderr.String())
	}
	t.Logf("handback:\n%s", out)
	eventually(t, "ward serving again", 30*time.Second, func() error {
		if m := wa.mode(t, ward); m != "serving" {
			return fmt.Errorf("ward mode %q", m)
		}
		return nil
	})
	d, _ := wa.get(t, made[0])
	if d.Status != string(schema.StatusInReview) {
		t.Fatalf("the ward does not see the backup's work: %+v", d)
	}
	wa.must(t, "POST", "/v1/dossiers/"+made[0]+"/transitions", map[string]string{"to": "approved"}, 200)
	out, _ = e.ops("c1", "lease", "--ward", ward)
	if !strings.Contains(out, "bk1") {
		t.Fatalf("lease history:\n%s", out)
	}
	t.Logf("lease:\n%s", out)
}
