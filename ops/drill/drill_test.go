package drill

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDrill runs the whole failover drill with real processes: 3 city
// members, the ward office and a backup office; the office is killed
// mid-work, the ward fails over, the backup works, the office reopens
// read-only and the ward is handed back. Every replica must end with the
// same digest and every acknowledged dossier.
func TestDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds wardsync and starts real processes")
	}
	bin := filepath.Join(t.TempDir(), "wardsync")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/wardsync/wardsync/cmd/wardsync").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, Config{Bin: bin, Dir: dir, Out: &out, Dossiers: 24, Clerks: 3, MidWork: 12, BackupDossiers: 12, Timeout: 45 * time.Second})
	t.Logf("drill took %s:\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
		for _, l := range logs {
			t.Logf("%s (last lines):%s", filepath.Base(l), tail(l, 25))
		}
		t.Fatal(err)
	}
	if len(rep.Mismatches) != 0 {
		t.Fatalf("mismatches: %v", rep.Mismatches)
	}

	want := []string{"c1", "c2", "c3", "wa", "bk1"}
	if len(rep.Rows) != len(want) {
		t.Fatalf("%d replica rows, want %d: %+v", len(rep.Rows), len(want), rep.Rows)
	}
	for i, row := range rep.Rows {
		if row.Replica != want[i] || row.Hash == "" || row.Hash != rep.Rows[0].Hash || row.Dossiers < 24+12 || row.Ops != rep.Rows[0].Ops {
			t.Fatalf("row %d: %+v (first row %+v)", i, row, rep.Rows[0])
		}
	}
	// The printed table says the same: 5 replica rows, one short hash.
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	hashes := map[string]bool{}
	rows := 0
	for line := range strings.Lines(table.String()) {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "c1" || f[0] == "c2" || f[0] == "c3" || f[0] == "wa" || f[0] == "bk1") {
			rows++
			hashes[f[len(f)-1]] = true
		}
	}
	if rows != 5 || len(hashes) != 1 || !strings.Contains(out.String(), table.String()) {
		t.Fatalf("table has %d replica rows and %d distinct hashes:\n%s", rows, len(hashes), table.String())
	}
	for _, c := range rep.Checks {
		if !c.OK {
			t.Fatalf("check failed: %s: %s", c.Name, c.Detail)
		}
	}
	if len(rep.Checks) < 8 {
		t.Fatalf("only %d checks: %+v", len(rep.Checks), rep.Checks)
	}
}

// TestReportMismatch: a failed check shows as MISMATCH in the table and
// in Mismatches.
func TestReportMismatch(t *testing.T) {
	r := Report{Ward: "HCM001", Rows: []Row{{Replica: "c1", Role: "city member", Dossiers: 2, Ops: 3, Hash: "0123456789abcdef"}}}
	r.check(true, "", "fine")
	r.check(false, "c2 lacks X", "%d dossiers everywhere", 2)
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if len(r.Mismatches) != 1 || r.Mismatches[0] != "2 dossiers everywhere: c2 lacks X" ||
		!strings.Contains(s, "MISMATCH  2 dossiers everywhere") || !strings.Contains(s, "c2 lacks X") ||
		!strings.Contains(s, "0123456789ab\n") || strings.Contains(s, "0123456789abc") {
		t.Fatalf("mismatches %q, table:\n%s", r.Mismatches, s)
	}
}

// TestLineWatcher finds the listening line however the output is split.
func TestLineWatcher(t *testing.T) {
	var sink bytes.Buffer
	w := &lineWatcher{w: &sink, ready: make(chan string, 1)}
	text := "time=... level=INFO msg=starting\nlisten"
	w.Write([]byte(text))
	w.Write([]byte("ing on http://127.0.0.1:4242\nlistening on http://127.0.0.1:1\n"))
	select {
	case u := <-w.ready:
		if u != "http://127.0.0.1:4242" {
			t.Fatalf("url %q", u)
		}
	default:
		t.Fatal("no url")
	}
	if !strings.HasPrefix(sink.String(), text) {
		t.Fatalf("output not passed on: %q", sink.String())
	}
}

func TestConfigDefaults(t *testing.T) {
	if _, err := Run(context.Background(), Config{}); err == nil {
		t.Fatal("Run without Bin and Dir")
	}
	if _, err := Run(context.Background(), Config{Bin: filepath.Join(t.TempDir(), "none"), Dir: t.TempDir()}); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing binary: %v", err)
	}
}
