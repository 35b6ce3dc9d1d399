package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestClockOffsetFlag: the hidden `ward run --clock-offset` (for fault
// tests: ops/chaos skews and jumps a ward's clock with it) runs the node's
// wall clock off the machine's. A dossier received with +2h is stamped two
// hours ahead; restarted with -2h, the node's time does not go back (its
// clock never issues a timestamp below the last one it stored). A bad
// value is refused, and --help does not show the flag.
func TestClockOffsetFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	token := initNode(t, dir)
	bin := wardsyncBin(t)
	create := func(p *nodeProc, n int) time.Time {
		t.Helper()
		code, data, err := newAPI(p.url, token).do("POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy",
			"applicant": map[string]string{"name": "Đồng Hồ", "id_number": "07920000000" + string(rune('0'+n))}})
		if err != nil || code != 201 {
			t.Fatalf("create: HTTP %d %v %s", code, err, data)
		}
		var d struct {
			ReceivedAt string `json:"received_at"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339, d.ReceivedAt)
		if err != nil {
			t.Fatalf("received_at %q: %v", d.ReceivedAt, err)
		}
		return at
	}

	p := startNode(t, exec.Command(bin, "ward", "run", "--data", dir, "--http", "127.0.0.1:0", "--clock-offset", "2h"))
	ahead := create(p, 1)
	if d := time.Until(ahead); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
		t.Fatalf("received at %s with --clock-offset 2h: %s from now", ahead, d.Round(time.Second))
	}
	if !strings.Contains(p.stderr.String(), "for fault tests only") {
		t.Errorf("no warning about the offset in the log:\n%s", p.stderr.String())
	}
	p.stop()

	p = startNode(t, exec.Command(bin, "ward", "run", "--data", dir, "--http", "127.0.0.1:0", "--clock-offset", "-2h"))
	if back := create(p, 2); back.Before(ahead) {
		t.Fatalf("after a jump back the node stamped %s, before its earlier %s", back, ahead)
	}
	p.stop()

	out, err := exec.Command(bin, "ward", "run", "--data", dir, "--clock-offset", "soon").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--clock-offset") {
		t.Fatalf("--clock-offset soon: %v\n%s", err, out)
	}
	for _, cmd := range []string{"ward", "backup-office"} {
		help, _ := exec.Command(bin, cmd, "run", "--help").CombinedOutput()
		if strings.Contains(string(help), "clock-offset") {
			t.Fatalf("%s run --help shows the test-only flag:\n%s", cmd, help)
		}
	}
}
