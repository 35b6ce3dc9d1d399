package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/schema"
)

// runApp runs the real command tree in this process and returns its error
// and everything it wrote. Not parallel: the flag helpers share a map.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"wardsync"}, args...))
	return out.String(), err
}

// clearWardsyncEnv unsets every WARDSYNC_ variable for the test, so a
// developer's own settings cannot change what a case sees.
func clearWardsyncEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "WARDSYNC_") {
			t.Setenv(k, "") // restores the value after the test
			os.Unsetenv(k)
		}
	}
}

func TestOpsCertCLI(t *testing.T) {
	clearWardsyncEnv(t)
	ward := testWard(t)
	tmp := t.TempDir()
	caDir := filepath.Join(tmp, "ca")

	out, err := runApp(t, "ops", "ca", "init", "--out", caDir, "--validity", "3650d")
	if err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	if !strings.Contains(out, "ca.key") || !strings.Contains(out, "offline") {
		t.Errorf("ca init output:\n%s", out)
	}
	if _, err := runApp(t, "ops", "ca", "init", "--out", caDir); err == nil || !strings.Contains(err.Error(), "--out") {
		t.Fatalf("second ca init: %v, want a refusal naming --out", err)
	}

	wardOut := filepath.Join(tmp, "w1")
	out, err = runApp(t, "ops", "cert", "issue", "--ca", caDir, "--role", "ward", "--node", "w1",
		"--ward", ward, "--validity", "90d", "--out", wardOut)
	if err != nil {
		t.Fatalf("cert issue: %v\n%s", err, out)
	}
	for _, f := range []string{certs.CACertFile, certs.NodeCertFile, certs.NodeKeyFile} {
		if _, err := os.Stat(filepath.Join(wardOut, f)); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := os.Stat(filepath.Join(wardOut, certs.NodeKeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("node.key mode %v", st.Mode().Perm())
	}
	_, _, id, err := certs.LoadBundle(wardOut, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := schema.PeerIdentity{Role: schema.PeerWard, Node: "w1", Wards: []string{ward}}
	if id.String() != want.String() {
		t.Errorf("bundle identity %v, want %v", id, want)
	}

	// A city member with its addresses.
	cityOut := filepath.Join(tmp, "c1")
	if out, err := runApp(t, "ops", "cert", "issue", "--ca", caDir, "--role", "city", "--node", "c1",
		"--ip", "10.0.0.1", "--ip", "::1", "--dns", "c1.city.example", "--out", cityOut); err != nil {
		t.Fatalf("city cert: %v\n%s", err, out)
	}
	cityPEM, _ := os.ReadFile(filepath.Join(cityOut, certs.NodeCertFile))
	info, _ := certs.Inspect(cityPEM)
	if strings.Join(info.IPs, ",") != "10.0.0.1,::1" || strings.Join(info.DNSNames, ",") != "c1.city.example" {
		t.Errorf("city SANs %v %v", info.IPs, info.DNSNames)
	}

	// Re-issuing into the same dir needs --force.
	args := []string{"ops", "cert", "issue", "--ca", caDir, "--role", "ward", "--node", "w1", "--ward", ward, "--out", wardOut}
	if _, err := runApp(t, args...); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("re-issue without --force: %v", err)
	}
	if out, err := runApp(t, append(args, "--force")...); err != nil {
		t.Fatalf("re-issue with --force: %v\n%s", err, out)
	}

	// show, as text and as JSON (flag before or after FILE).
	nodeCrt := filepath.Join(wardOut, certs.NodeCertFile)
	out, err = runApp(t, "ops", "cert", "show", nodeCrt)
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	for _, s := range []string{"wardsync://ward/w1?ward=" + ward, "Role:", "ward", "Node:", "w1", "Wards:", ward,
		"Issuer:", certs.DefaultCAName, "Serial:", "Time left:", "364 days"} {
		if !strings.Contains(out, s) {
			t.Errorf("show output lacks %q:\n%s", s, out)
		}
	}
	for _, a := range [][]string{{"--json", nodeCrt}, {nodeCrt, "--json"}} {
		out, err = runApp(t, append([]string{"ops", "cert", "show"}, a...)...)
		if err != nil {
			t.Fatalf("show %v: %v", a, err)
		}
		var js struct {
			Identity struct {
				Role  string
				Node  string
				Wards []string
			}
			Status      string
			SecondsLeft int64 `json:"seconds_left"`
		}
		if err := json.Unmarshal([]byte(out), &js); err != nil {
			t.Fatalf("show %v: %v\n%s", a, err, out)
		}
		if js.Identity.Role != "ward" || js.Identity.Node != "w1" || len(js.Identity.Wards) != 1 ||
			js.Status != "valid" || js.SecondsLeft <= 0 {
			t.Errorf("show %v JSON: %+v", a, js)
		}
	}
	out, err = runApp(t, "ops", "cert", "show", filepath.Join(caDir, certs.CACertFile))
	if err != nil || !strings.Contains(out, "certificate authority") || !strings.Contains(out, "3649 days") {
		t.Errorf("show CA: %v\n%s", err, out)
	}

	// An expired certificate gets a warning.
	ca, err := certs.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	oldPEM, _, err := ca.Issue(certs.IssueParams{Identity: want, Validity: time.Hour, Now: time.Now().Add(-72 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	oldFile := filepath.Join(tmp, "old.crt")
	os.WriteFile(oldFile, oldPEM, 0o644)
	out, err = runApp(t, "ops", "cert", "show", oldFile)
	if err != nil || !strings.Contains(out, "EXPIRED") {
		t.Errorf("show expired: %v\n%s", err, out)
	}
}

// TestOpsCertCLIBadFlags checks that every mistake names the flag to fix.
func TestOpsCertCLIBadFlags(t *testing.T) {
	clearWardsyncEnv(t)
	ward := testWard(t)
	tmp := t.TempDir()
	caDir := filepath.Join(tmp, "ca")
	if out, err := runApp(t, "ops", "ca", "init", "--out", caDir); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	issue := func(extra ...string) []string {
		return append([]string{"ops", "cert", "issue", "--ca", caDir, "--out", filepath.Join(t.TempDir(), "b")}, extra...)
	}
	for _, c := range []struct {
		flag string
		args []string
	}{
		{`--out`, []string{"ops", "ca", "init"}},
		{`--validity "10y"`, []string{"ops", "ca", "init", "--out", filepath.Join(tmp, "ca2"), "--validity", "10y"}},
		{`--validity "-5d"`, []string{"ops", "ca", "init", "--out", filepath.Join(tmp, "ca3"), "--validity", "-5d"}},
		{`--name`, []string{"ops", "ca", "init", "--out", filepath.Join(tmp, "ca4"), "--name", strings.Repeat("x", 80)}},
		{`--role "root"`, issue("--role", "root", "--node", "x")},
		{`--role`, issue("--node", "x")},
		{`--node`, issue("--role", "city")},
		{`--node`, issue("--role", "city", "--node", "Bad Node")},
		{`--ward`, issue("--role", "ward", "--node", "w1")},
		{`--ward`, issue("--role", "backup", "--node", "b1")},
		{`--ward`, issue("--role", "ward", "--node", "w1", "--ward", ward, "--ward", ward+"X")},
		{`--ward`, issue("--role", "city", "--node", "c1", "--ward", ward)},
		{`--ward "ZZZ999"`, issue("--role", "ward", "--node", "w1", "--ward", "ZZZ999")},
		{`--ward`, issue("--role", "ward", "--node", "w1", "--ward", "lower")},
		{`--ip "x"`, issue("--role", "city", "--node", "c1", "--ip", "x")},
		{`--dns`, issue("--role", "city", "--node", "c1", "--dns", "not a name")},
		{`--validity "1 year"`, issue("--role", "city", "--node", "c1", "--validity", "1 year")},
		{`--validity "0s"`, issue("--role", "city", "--node", "c1", "--validity", "0s")},
		{`--ca`, []string{"ops", "cert", "issue", "--role", "city", "--node", "c1", "--out", filepath.Join(tmp, "x")}},
		{`--ca`, []string{"ops", "cert", "issue", "--ca", filepath.Join(tmp, "nope"), "--role", "city", "--node", "c1",
			"--out", filepath.Join(tmp, "x")}},
		{`--out`, []string{"ops", "cert", "issue", "--ca", caDir, "--role", "city", "--node", "c1"}},
		{`--out`, []string{"ops", "cert", "issue", "--ca", caDir, "--role", "city", "--node", "c1", "--out", caDir}},
		{`--wards`, issue("--role", "ward", "--node", "w1", "--ward", ward, "--wards", filepath.Join(tmp, "nope.json"))},
	} {
		out, err := runApp(t, c.args...)
		if err == nil {
			t.Errorf("%v: succeeded, want an error naming %s\n%s", c.args, c.flag, out)
			continue
		}
		t.Logf("%s", err)
		if !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%v: %v, want it to name %s", c.args, err, c.flag)
		}
	}
	// show: a missing file, a key instead of a certificate, no argument.
	if _, err := runApp(t, "ops", "cert", "show", filepath.Join(tmp, "nope.crt")); err == nil || !strings.Contains(err.Error(), "nope.crt") {
		t.Errorf("show missing file: %v", err)
	}
	keyFile := filepath.Join(caDir, certs.CAKeyFile)
	if _, err := runApp(t, "ops", "cert", "show", keyFile); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Errorf("show key: %v", err)
	}
	if _, err := runApp(t, "ops", "cert", "show"); err == nil || !strings.Contains(err.Error(), "FILE") {
		t.Errorf("show without FILE: %v", err)
	}
}
