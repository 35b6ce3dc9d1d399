package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/node"
)

// TestCLIDossierAttach runs `dossier attach`, `attachments` and `download`
// in process against a real node served by httptest.
func TestCLIDossierAttach(t *testing.T) {
	clearWardsyncEnv(t)
	// An API error that reaches urfave/cli as an ExitCoder would end the
	// test process.
	exiter := cli.OsExiter
	cli.OsExiter = func(code int) { t.Errorf("the command called os.Exit(%d)", code) }
	t.Cleanup(func() { cli.OsExiter = exiter })
	dir := t.TempDir()
	cfg := node.Config{Dir: filepath.Join(dir, "node")}
	res, err := node.Init(context.Background(), cfg, node.InitParams{Ward: testWard(t), Node: "cli-att"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	srv := httptest.NewServer(n.Handler())
	defer srv.Close()
	run := func(args ...string) (string, error) {
		t.Helper()
		// Flags before the positional arguments.
		cmd := append([]string{"dossier", args[0], "--node", srv.URL, "--token", res.AdminToken}, args[1:]...)
		return runApp(t, cmd...)
	}

	out, err := run("create", "--procedure", "birth-registration", "--name", "Trần Thị Bình", "--id-number", "079123456789", "--json")
	if err != nil {
		t.Fatalf("dossier create: %v\n%s", err, out)
	}
	var d struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.ID == "" {
		t.Fatalf("dossier create --json printed %q: %v", out, err)
	}

	// A FILE that is not there, or not a file: the error names it.
	missing := filepath.Join(dir, "no-such-scan.pdf")
	if out, err := run("attach", d.ID, missing); err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("attach of a missing file: %v\n%s", err, out)
	}
	if out, err := run("attach", d.ID, dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("attach of a directory: %v\n%s", err, out)
	}
	if _, err := run("attach", d.ID); err == nil || !strings.Contains(err.Error(), "ID FILE") {
		t.Errorf("attach without FILE: %v", err)
	}

	data := make([]byte, 1<<20+4321)
	rand.Read(data)
	copy(data, "%PDF-1.4\n")
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	file := filepath.Join(dir, "giấy khai sinh.pdf")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run("attach", d.ID, file)
	if err != nil {
		t.Fatalf("attach: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Attached") || !strings.Contains(out, hash) || !strings.Contains(out, "giấy khai sinh.pdf") || !strings.Contains(out, "application/pdf") {
		t.Errorf("attach printed:\n%s", out)
	}
	out, err = run("attach", "--name", "again.pdf", "--json", d.ID, file)
	if err != nil {
		t.Fatalf("attach again: %v\n%s", err, out)
	}
	var a struct {
		Hash string `json:"hash"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.Hash != hash || a.Name != "giấy khai sinh.pdf" {
		t.Errorf("attach again --json printed %q (%v), want the existing attachment", out, err)
	}
	exe := filepath.Join(dir, "scan.pdf")
	if err := os.WriteFile(exe, append([]byte("MZ\x90\x00"), data[:5000]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("attach", d.ID, exe); err == nil || !strings.Contains(err.Error(), "unsupported_type") {
		t.Errorf("attach of an executable: %v\n%s", err, out)
	}

	out, err = run("attachments", d.ID)
	if err != nil || !strings.Contains(out, hash) || !strings.Contains(out, "HERE") || strings.Count(out, "\n") != 2 {
		t.Errorf("attachments: %v\n%s", err, out)
	}

	dest := filepath.Join(dir, "out", "copy.pdf")
	os.MkdirAll(filepath.Dir(dest), 0o700)
	out, err = run("download", "--out", dest, d.ID, hash)
	if err != nil {
		t.Fatalf("download: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(dest); err != nil || !bytes.Equal(got, data) {
		t.Errorf("downloaded file differs (%v)", err)
	}
	if _, err := os.Stat(dest + ".part"); !os.IsNotExist(err) {
		t.Errorf("%s.part left behind: %v", dest, err)
	}

	// A hash the dossier does not have: an error, and no file.
	other := filepath.Join(dir, "out", "other.pdf")
	if _, err := run("download", "--out", other, d.ID, strings.Repeat("ab", 32)); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("download of an unknown hash: %v", err)
	}
	if _, err := run("download", "--out", other, d.ID, "xyz"); err == nil || !strings.Contains(err.Error(), "HASH") {
		t.Errorf("download of a malformed hash: %v", err)
	}
	if m, _ := filepath.Glob(other + "*"); len(m) != 0 {
		t.Errorf("files left by failed downloads: %v", m)
	}

	// A node that sends other bytes than the hash names: refused, nothing kept.
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(data[:1000])
	}))
	defer liar.Close()
	_, err = runApp(t, "dossier", "download", "--node", liar.URL, "--token", "wst_x", "--out", other, d.ID, hash)
	if err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("download of wrong bytes: %v", err)
	}
	if m, _ := filepath.Glob(other + "*"); len(m) != 0 {
		t.Errorf("files left by a download that failed verification: %v", m)
	}
}
