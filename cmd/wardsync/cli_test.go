package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cleanEnv is the test's environment without any WARDSYNC_ variable, so a
// developer's own settings cannot change what a case sees.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARDSYNC_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runCLI runs the binary to completion (20 s at most) and returns its exit
// code and output.
func runCLI(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, wardsyncBin(t), args...)
	cmd.Env = cleanEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("wardsync %v did not finish in 20s\nstderr:\n%s", args, errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("wardsync %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// TestCLIErrors checks the errors a user sees for common mistakes: each
// exits non-zero and names the flag (or file) to fix.
func TestCLIErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	ward := testWard(t)
	inited := filepath.Join(t.TempDir(), "node")
	if code, _, stderr := runCLI(t, nil, "ward", "init", "--data", inited, "--ward", ward, "--node", "n1", "--json"); code != 0 {
		t.Fatalf("ward init: exit %d\n%s", code, stderr)
	}
	missingConfig := filepath.Join(t.TempDir(), "no-such-wardsync.yaml")
	// A config file that fills in every required flag of dossier create,
	// pointing at a port nobody listens on: the command must get past flag
	// checking and fail only on the connection.
	createConfig := filepath.Join(t.TempDir(), "create.yaml")
	if err := os.WriteFile(createConfig, []byte("node: http://127.0.0.1:1\ntoken: wst_test\nprocedure: birth-registration\n"+
		"name: Trần Thị Bình\nid-number: \"079123456789\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A config file naming a working data dir, for precedence cases: the
	// command line and the environment must win over it.
	runConfig := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(runConfig, []byte("data: "+inited+"\nhttp: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nowhere := filepath.Join(t.TempDir(), "nothing-here")

	tests := []struct {
		name string
		env  []string
		args []string
		want []string // substrings of stderr
	}{
		{
			name: "run without --data",
			args: []string{"ward", "run", "--http", "127.0.0.1:0"},
			want: []string{"--data", "WARDSYNC_DATA"},
		},
		{
			name: "run on a dir that is not a node",
			args: []string{"ward", "run", "--data", "/nonexistent/dir", "--http", "127.0.0.1:0"},
			want: []string{"--data /nonexistent/dir", "not initialized", "ward init"},
		},
		{
			name: "run with a negative disk reserve",
			args: []string{"ward", "run", "--data", inited, "--http", "127.0.0.1:0", "--min-free-disk", "-1"},
			want: []string{"--min-free-disk -1", "must be 0"},
		},
		{
			name: "init with an unknown ward",
			args: []string{"ward", "init", "--data", filepath.Join(t.TempDir(), "x"), "--ward", "NOSUCHWARD", "--node", "n1"},
			want: []string{"--ward", "NOSUCHWARD"},
		},
		{
			name: "init twice on one dir",
			args: []string{"ward", "init", "--data", inited, "--ward", ward, "--node", "n2"},
			want: []string{"--data " + inited, "already initialized"},
		},
		{
			name: "init without --node",
			args: []string{"ward", "init", "--data", filepath.Join(t.TempDir(), "x"), "--ward", ward},
			want: []string{"--node", "WARDSYNC_NODE_ID"},
		},
		{
			name: "dossier create without --token",
			args: []string{"dossier", "create", "--node", "http://127.0.0.1:1", "--procedure", "birth-registration",
				"--name", "Trần Thị Bình", "--id-number", "079123456789"},
			want: []string{"--token", "WARDSYNC_TOKEN"},
		},
		{
			name: "dossier create without --procedure",
			args: []string{"dossier", "create", "--token", "x", "--name", "Trần Thị Bình", "--id-number", "079123456789"},
			want: []string{"--procedure"},
		},
		{
			name: "required flags from the config file",
			args: []string{"--config", createConfig, "dossier", "create"},
			want: []string{"cannot reach the node", "127.0.0.1:1"},
		},
		{
			name: "command line overrides the config file",
			args: []string{"--config", runConfig, "ward", "run", "--data", nowhere},
			want: []string{"--data " + nowhere, "not initialized"},
		},
		{
			name: "environment overrides the config file",
			env:  []string{"WARDSYNC_DATA=" + nowhere},
			args: []string{"ward", "run", "--config", runConfig},
			want: []string{"--data " + nowhere, "not initialized"},
		},
		{
			name: "config file that does not exist, before the command",
			args: []string{"--config", missingConfig, "ward", "run"},
			want: []string{"--config", missingConfig},
		},
		{
			name: "config file that does not exist, after the command",
			args: []string{"ward", "run", "--config", missingConfig},
			want: []string{"--config", missingConfig},
		},
		{
			name: "config file from WARDSYNC_CONFIG that does not exist",
			env:  []string{"WARDSYNC_CONFIG=" + missingConfig},
			args: []string{"ward", "run"},
			want: []string{"--config", missingConfig},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tc.env, tc.args...)
			if code == 0 {
				t.Fatalf("wardsync %v: exit 0, want an error\nstderr:\n%s", tc.args, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("wardsync %v: stderr does not mention %q:\n%s", tc.args, w, stderr)
				}
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("wardsync %v crashed:\n%s", tc.args, stderr)
			}
		})
	}
}

// TestCLIRunFromConfigAndEnv checks `ward run` takes its flags from a
// --config file (before or after the command) and from the environment.
func TestCLIRunFromConfigAndEnv(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "node")
	token := initNode(t, data)
	cfg := filepath.Join(dir, "wardsync.yaml")
	if err := os.WriteFile(cfg, []byte("data: "+data+"\nhttp: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := wardsyncBin(t)
	tests := []struct {
		name string
		env  []string
		args []string
	}{
		{"config before the command", nil, []string{"--config", cfg, "ward", "run"}},
		{"config after the command", nil, []string{"ward", "run", "--config", cfg}},
		{"config from WARDSYNC_CONFIG", []string{"WARDSYNC_CONFIG=" + cfg}, []string{"ward", "run"}},
		{"data from WARDSYNC_DATA", []string{"WARDSYNC_DATA=" + data, "WARDSYNC_HTTP=127.0.0.1:0"}, []string{"ward", "run"}},
	}
	for _, tc := range tests {
		// Sequential: each run opens the same badger dir, which takes a lock.
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = cleanEnv(tc.env...)
			p := startNode(t, cmd)
			if code, body, err := newAPI(p.url, token).do("GET", "/v1/me", nil); err != nil || code != 200 {
				t.Errorf("node started from %s does not serve its data dir: HTTP %d %v %.200s", tc.name, code, err, body)
			}
			p.stop()
		})
	}
}
