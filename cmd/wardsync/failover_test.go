package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/blob"
	"github.com/wardsync/wardsync/replication/transport"
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

type conflictedDossier struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	ReceiptNo string `json:"receipt_no"`
	Conflicts []struct {
		Op string `json:"op"`
		To string `json:"to"`
	} `json:"conflicts"`
	History []struct {
		Op   string `json:"op"`
		Kind string `json:"kind"`
		Text string `json:"text"`
	} `json:"history"`
}

// create makes a dossier on a node and returns it.
func (w *wardNode) create(t *testing.T, i int) syncedDossier {
	t.Helper()
	var d syncedDossier
	json.Unmarshal(w.must(t, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
		"applicant": map[string]string{"name": fmt.Sprintf("Người %d", i), "id_number": fmt.Sprintf("%012d", 79_300_000_000+i)}}, 201), &d)
	return d
}

// TestSplitBrainNothingLost: the ward office loses its link, city IT
// fails the ward over, then the backup loses its link too. Both offices
// keep working cut off, with contradicting decisions on the same
// dossiers and notes on others. After the links heal every op of both is
// on every replica, the contradictions are flagged as conflicts, the old
// office turns read-only, and once a head official at the backup resolves
// them every replica holds the same state hash.
func TestSplitBrainNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, ids := startCity3(t)
	ward := testWard(t)
	wa := e.initWard("wa", ward)
	bk := e.initBackup("bk1", ward)
	pa, cityA := e.proxiesFor(ctx, ids, 11)
	pb, cityB := e.proxiesFor(ctx, ids, 21)
	e.runWard(wa, cityA)
	e.runBackup(bk, cityB)

	const n = 30
	var shared []string
	for i := 0; i < n; i++ {
		d := wa.create(t, i)
		wa.must(t, "POST", "/v1/dossiers/"+d.ID+"/transitions", map[string]string{"to": "in_review"}, 200)
		shared = append(shared, d.ID)
	}
	eventually(t, "the city holds the ward's work", 30*time.Second, func() error {
		if d := e.digest("c1", ward); d.Dossiers != n || d.Ops != 2*n {
			return fmt.Errorf("city has %+v", d)
		}
		return nil
	})

	// The office's link goes down; city IT fails the ward over.
	setCut(pa, true)
	if out, err := e.ops("c1", "failover", "--ward", ward, "--to", "bk1", "--reason", "office flooded", "--timeout", "60s"); err != nil {
		t.Fatalf("failover: %v\n%s", err, out)
	}
	eventually(t, "the backup serves the ward", 30*time.Second, func() error {
		if m := bk.mode(t, ward); m != "serving" {
			return fmt.Errorf("backup mode %q", m)
		}
		return nil
	})
	if m := wa.mode(t, ward); m != "serving" {
		t.Fatalf("the cut-off office should still believe it serves the ward, mode %q", m)
	}
	// Now the backup is cut off too, and both work.
	setCut(pb, true)
	const contradicted = 10
	var newAtWard, newAtBackup []syncedDossier
	for i, id := range shared {
		switch {
		case i < contradicted:
			wa.must(t, "POST", "/v1/dossiers/"+id+"/transitions", map[string]string{"to": "approved"}, 200)
			bk.must(t, "POST", "/v1/dossiers/"+id+"/transitions", map[string]string{"to": "rejected"}, 200)
		case i < 2*contradicted:
			wa.must(t, "POST", "/v1/dossiers/"+id+"/notes", map[string]string{"text": "ghi chú tại phường"}, 200)
			bk.must(t, "POST", "/v1/dossiers/"+id+"/notes", map[string]string{"text": "ghi chú tại văn phòng dự phòng"}, 200)
		}
	}
	for i := 0; i < 5; i++ {
		newAtWard = append(newAtWard, wa.create(t, 1000+i))
		newAtBackup = append(newAtBackup, bk.create(t, 2000+i))
	}

	// Heal.
	setCut(pa, false)
	setCut(pb, false)
	replicas := func() map[string]store.Digest {
		out := map[string]store.Digest{"wa": wa.digest(t, ward), "bk1": bk.digest(t, ward)}
		for _, m := range ids {
			out[m] = e.digest(m, ward)
		}
		return out
	}
	allEqual := func(want func(store.Digest) error) error {
		ds := replicas()
		for name, d := range ds {
			if d.Hash != ds["c1"].Hash || d.Ops != ds["c1"].Ops {
				return fmt.Errorf("replicas differ: %s has %+v, c1 %+v", name, d, ds["c1"])
			}
		}
		return want(ds["c1"])
	}
	wantOps := 2*n + 2*contradicted + 2*contradicted + 10
	eventually(t, "every op of both offices on every replica", 60*time.Second, func() error {
		return allEqual(func(d store.Digest) error {
			if d.Dossiers != n+10 || d.Ops != wantOps || d.Conflicts != contradicted {
				return fmt.Errorf("digest %+v, want %d dossiers, %d ops, %d conflicts", d, n+10, wantOps, contradicted)
			}
			return nil
		})
	})
	eventually(t, "the old office learns it is read-only", 30*time.Second, func() error {
		if m := wa.mode(t, ward); m != "read_only" {
			return fmt.Errorf("office mode %q", m)
		}
		return nil
	})
	code, body, _ := wa.api.do("POST", "/v1/dossiers/"+shared[n-1]+"/transitions", map[string]string{"to": "approved"})
	if code != 409 || !strings.Contains(string(body), "read_only") {
		t.Fatalf("write at the old office after heal: HTTP %d %s", code, body)
	}
	// Notes from both offices merged without a conflict.
	var d conflictedDossier
	json.Unmarshal(bk.must(t, "GET", "/v1/dossiers/"+shared[contradicted], nil, 200), &d)
	notes := 0
	for _, h := range d.History {
		if h.Kind == "annotate" {
			notes++
		}
	}
	if notes != 2 || len(d.Conflicts) != 0 {
		t.Fatalf("concurrent notes: %d notes, %d conflicts in %+v", notes, len(d.Conflicts), d)
	}
	// The conflicts are listed, on the backup and at the city.
	var list struct {
		Items []conflictedDossier `json:"items"`
	}
	json.Unmarshal(bk.must(t, "GET", "/v1/dossiers?conflict=true&limit=100", nil, 200), &list)
	if len(list.Items) != contradicted {
		t.Fatalf("backup lists %d conflicted dossiers, want %d", len(list.Items), contradicted)
	}
	code, body = e.call(e.admin, "GET", e.members["c2"].url+"/v1/wards/"+ward+"/dossiers?conflict=true&limit=100", nil)
	var cityList struct {
		Items []conflictedDossier `json:"items"`
	}
	json.Unmarshal(body, &cityList)
	if code != 200 || len(cityList.Items) != contradicted {
		t.Fatalf("city lists %d conflicted dossiers (HTTP %d)", len(cityList.Items), code)
	}
	// The clerk's CLI: a banner at the read-only office, the conflicts
	// listed at the backup, each with the command that settles it.
	cliAt := func(w *wardNode, args ...string) (string, string) {
		// Flags go before the ID: urfave/cli stops at the first argument.
		full := append([]string{args[0], args[1], "--node", w.api.base, "--token", w.token}, args[2:]...)
		cmd := exec.Command(wardsyncBin(t), full...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("wardsync %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	if _, banner := cliAt(wa, "dossier", "list"); !strings.Contains(banner, "READ-ONLY: ward "+ward+" is served by bk1") {
		t.Fatalf("no read-only banner at the old office: %q", banner)
	}
	if out, _ := cliAt(bk, "dossier", "list", "--conflict"); strings.Count(out, "\n") != contradicted+1 {
		t.Fatalf("dossier list --conflict:\n%s", out)
	}
	if out, _ := cliAt(bk, "dossier", "show", list.Items[0].ID); !strings.Contains(out, "dossier resolve --conflict "+list.Items[0].Conflicts[0].Op+" --to STATUS "+list.Items[0].ID) {
		t.Fatalf("dossier show does not say how to settle the conflict:\n%s", out)
	}
	// A head official at the backup resolves each one (the first with the
	// CLI).
	for i, c := range list.Items {
		if len(c.Conflicts) != 1 {
			t.Fatalf("dossier %s has conflicts %+v", c.ID, c.Conflicts)
		}
		if i == 0 {
			cliAt(bk, "dossier", "resolve", "--conflict", c.Conflicts[0].Op, "--to", "approved", "--note", "đã đối chiếu hồ sơ gốc", c.ID)
			continue
		}
		bk.must(t, "POST", "/v1/dossiers/"+c.ID+"/resolve", map[string]string{"conflict": c.Conflicts[0].Op, "to": "approved", "note": "đã đối chiếu hồ sơ gốc"}, 200)
	}
	eventually(t, "every replica shows the same outcome", 60*time.Second, func() error {
		return allEqual(func(d store.Digest) error {
			if d.Conflicts != 0 || d.Ops != wantOps+contradicted {
				return fmt.Errorf("digest %+v", d)
			}
			return nil
		})
	})
	for _, id := range shared[:contradicted] {
		for _, m := range ids {
			if cd, _ := e.cityDossier(m, id); cd.Status != "approved" {
				t.Fatalf("dossier %s on %s after resolution: %+v", id, m, cd)
			}
		}
	}
	// Receipt numbers never collide, though both offices were offline.
	seen := map[string]string{}
	for _, d := range append(newAtWard, newAtBackup...) {
		if other, dup := seen[d.ReceiptNo]; dup {
			t.Fatalf("receipt %s given to %s and %s", d.ReceiptNo, other, d.ID)
		}
		seen[d.ReceiptNo] = d.ID
	}
	if !strings.Contains(newAtBackup[0].ReceiptNo, "-BK1-") || !strings.Contains(newAtWard[0].ReceiptNo, "-WA-") {
		t.Fatalf("receipt series: office %s, backup %s", newAtWard[0].ReceiptNo, newAtBackup[0].ReceiptNo)
	}
}

// TestBackupHoldsSeveralWards: two offices close; one backup office takes
// both wards, pulls their dossiers and scans (it can serve a scan with
// the whole city down), and serves both with each ward's receipt rules.
func TestBackupHoldsSeveralWards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e, ids := startCity3(t)
	wards := schema.DefaultWards().All()
	w1, w2 := wards[0].Code, wards[1].Code
	wa, wb := e.initWard("wa", w1), e.initWard("wb", w2)
	bk := e.initBackup("bk1", w1, w2)
	city := e.cityQUIC(ids...)
	e.runWard(wa, city)
	e.runWard(wb, city)
	e.runBackup(bk, city)
	da, db := wa.create(t, 1), wb.create(t, 2)
	pdf := scan(3 << 20)
	hash := wa.attach(t, da.ID, "giay-khai-sinh.pdf", pdf)
	eventually(t, "both wards and the scan at the city", 60*time.Second, func() error {
		if e.digest("c1", w1).Dossiers != 1 || e.digest("c1", w2).Dossiers != 1 {
			return fmt.Errorf("not yet")
		}
		if got := e.holders(ids, hash); len(got) < 2 {
			return fmt.Errorf("scan on %v", got)
		}
		if c, ok := e.cityAttachments("c1", da.ID); !ok || len(c.Attachments) != 1 {
			return fmt.Errorf("attach op not released yet")
		}
		return nil
	})
	wa.proc.stop()
	wb.proc.stop()
	for _, w := range []string{w1, w2} {
		if out, err := e.ops("c2", "failover", "--ward", w, "--to", "bk1", "--reason", "offices closed", "--timeout", "60s"); err != nil {
			t.Fatalf("failover %s: %v\n%s", w, err, out)
		}
	}
	var st struct {
		Wards []struct {
			Ward    string  `json:"ward"`
			Mode    string  `json:"mode"`
			Active  string  `json:"active_node"`
			Percent float64 `json:"catch_up_percent"`
		} `json:"wards"`
		Blobs struct {
			PendingFetches int `json:"pending_fetches"`
		} `json:"blobs"`
	}
	eventually(t, "the backup serves both wards and has the scan", 60*time.Second, func() error {
		json.Unmarshal(bk.must(t, "GET", "/v1/sync/status", nil, 200), &st)
		if len(st.Wards) != 2 || st.Blobs.PendingFetches != 0 {
			return fmt.Errorf("status %+v", st)
		}
		for _, w := range st.Wards {
			if w.Mode != "serving" || w.Active != "bk1" || w.Percent != 100 {
				return fmt.Errorf("status %+v", st)
			}
		}
		return nil
	})
	// Creates name the ward when a backup holds several.
	body := map[string]any{"procedure": "certified-copy", "applicant": map[string]string{"name": "Lê Văn C", "id_number": "079300000777"}}
	if code, b, _ := bk.api.do("POST", "/v1/dossiers", body); code != 400 || !strings.Contains(string(b), `"ward"`) {
		t.Fatalf("create without a ward at a backup of two: HTTP %d %s", code, b)
	}
	for _, w := range []string{w1, w2} {
		body["ward"] = w
		var d syncedDossier
		json.Unmarshal(bk.must(t, "POST", "/v1/dossiers", body, 201), &d)
		if d.Ward != w || !strings.HasPrefix(d.ReceiptNo, w+"-") || !strings.Contains(d.ReceiptNo, "-BK1-") {
			t.Fatalf("backup's dossier for %s: %+v", w, d)
		}
	}
	bk.must(t, "POST", "/v1/dossiers/"+db.ID+"/transitions", map[string]string{"to": "in_review"}, 200)
	// Invariant 4: another backup office whose certificate names the ward
	// but holds no lease may not read the ward's scans.
	runOK(t, "ops", "cert", "issue", "--ca", filepath.Join(e.dir, "ca"), "--role", "backup", "--node", "bk2", "--ward", w1, "--out", filepath.Join(e.dir, "tls", "bk2"))
	cert, pool, _, err := certs.LoadBundle(filepath.Join(e.dir, "tls", "bk2"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ep, err := transport.New(transport.Config{Addr: "127.0.0.1:0", Cert: cert, CA: pool})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ep.Run(ctx)
	defer ep.Close()
	conn, err := ep.Dial(ctx, e.quic["c1"], transport.ALPNBlob, schema.PeerCity)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := blobstore.Open(blobstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := schema.ParseHash(hash)
	_, err = blob.Get(ctx, conn, "bk2", w1, bs, h, blob.Options{})
	st2, _ := bs.Stats()
	bs.Close()
	if !errors.Is(err, schema.ErrForbidden) || st2.Chunks != 0 {
		t.Fatalf("a backup without the lease got the ward's scan: %v (%d chunks)", err, st2.Chunks)
	}
	// The scan was pulled in the background: the backup serves it with
	// every city member down.
	for _, m := range ids {
		e.members[m].stop()
	}
	req, _ := http.NewRequest("GET", bk.api.base+"/v1/dossiers/"+da.ID+"/attachments/"+hash, nil)
	req.Header.Set("Authorization", "Bearer "+bk.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || hexSum(got) != hash {
		t.Fatalf("scan from the backup with the city down: HTTP %d, %d bytes", resp.StatusCode, len(got))
	}
}
