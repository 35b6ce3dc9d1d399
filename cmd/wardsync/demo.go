package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/schema"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a whole city on this machine: a CA, 3 city members, 2 ward nodes and a backup office on 127.0.0.1, until Ctrl-C",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "where to keep the demo's data and certificates (default: a new temp dir)", EnvVars: []string{"WARDSYNC_DEMO_DIR"}},
		},
		Action: runDemo,
	}
}

// demoProc is one child process of the demo.
type demoProc struct {
	name string
	cmd  *exec.Cmd
	url  string
	log  string
}

func freePort(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func runDemo(c *cli.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := c.String("dir")
	if dir == "" {
		if dir, err = os.MkdirTemp("", "wardsync-demo-"); err != nil {
			return err
		}
	}
	w := c.App.Writer
	run := func(args ...string) ([]byte, error) {
		out, err := exec.Command(self, args...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("wardsync %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	wards := schema.DefaultWards().All()[:2]
	ca := filepath.Join(dir, "ca")
	if _, err := os.Stat(filepath.Join(ca, "ca.key")); err != nil {
		fmt.Fprintf(w, "Creating the city CA and certificates in %s ...\n", dir)
		if _, err := run("ops", "ca", "init", "--out", ca); err != nil {
			return err
		}
		issue := [][]string{
			{"--role", "admin", "--node", "it-desk", "--out", filepath.Join(dir, "tls", "admin")},
			{"--role", "portal", "--node", "portal", "--out", filepath.Join(dir, "tls", "portal")},
		}
		for i := 1; i <= 3; i++ {
			issue = append(issue, []string{"--role", "city", "--node", fmt.Sprintf("c%d", i), "--ip", "127.0.0.1", "--out", filepath.Join(dir, "tls", fmt.Sprintf("c%d", i))})
		}
		for i, wd := range wards {
			issue = append(issue, []string{"--role", "ward", "--node", fmt.Sprintf("w%d", i+1), "--ward", wd.Code, "--out", filepath.Join(dir, "tls", fmt.Sprintf("w%d", i+1))})
		}
		for _, a := range issue {
			if _, err := run(append([]string{"ops", "cert", "issue", "--ca", ca}, a...)...); err != nil {
				return err
			}
		}
	}
	// A backup office that may cover both wards (city IT fails a ward
	// over to it with `ops failover`).
	if _, err := os.Stat(filepath.Join(dir, "tls", "bk1")); err != nil {
		args := []string{"ops", "cert", "issue", "--ca", ca, "--role", "backup", "--node", "bk1", "--out", filepath.Join(dir, "tls", "bk1")}
		for _, wd := range wards {
			args = append(args, "--ward", wd.Code)
		}
		if _, err := run(args...); err != nil {
			return err
		}
	}
	tokens := map[string]string{}
	inits := map[string][]string{"bk1": {"backup-office", "init", "--node", "bk1"}}
	for i, wd := range wards {
		name := fmt.Sprintf("w%d", i+1)
		inits[name] = []string{"ward", "init", "--ward", wd.Code, "--node", name}
	}
	for name, args := range inits {
		data := filepath.Join(dir, "data", name)
		tokFile := filepath.Join(dir, name+".token")
		if _, err := os.Stat(data); err != nil {
			out, err := run(append(args, "--data", data, "--json")...)
			if err != nil {
				return err
			}
			var res struct {
				AdminToken string `json:"admin_token"`
			}
			json.Unmarshal(out, &res)
			os.WriteFile(tokFile, []byte(res.AdminToken), 0o600)
		}
		b, _ := os.ReadFile(tokFile)
		tokens[name] = strings.TrimSpace(string(b))
	}
	quic := map[string]string{}
	var boot []string
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("c%d", i)
		if quic[id], err = freePort("udp"); err != nil {
			return err
		}
		boot = append(boot, id+"="+quic[id])
	}
	cityQUIC := strings.Join([]string{quic["c1"], quic["c2"], quic["c3"]}, ",")

	ctx, stop := context.WithCancel(c.Context)
	defer stop()
	var procs []*demoProc
	var wg sync.WaitGroup
	start := func(name string, args ...string) (*demoProc, error) {
		p := &demoProc{name: name, log: filepath.Join(dir, name+".log")}
		logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		p.cmd = exec.Command(self, args...)
		p.cmd.Stderr = logf
		out, _ := p.cmd.StdoutPipe()
		if err := p.cmd.Start(); err != nil {
			return nil, err
		}
		ready := make(chan string, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if u, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
					ready <- u
				}
				fmt.Fprintln(logf, sc.Text())
			}
			io.Copy(logf, out)
			p.cmd.Wait()
			logf.Close()
		}()
		procs = append(procs, p)
		select {
		case p.url = <-ready:
			return p, nil
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("%s did not start; see %s", name, p.log)
		}
	}
	defer func() {
		for _, p := range procs {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
		wg.Wait()
	}()
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("c%d", i)
		if _, err := start(id, "city", "run", "--data", filepath.Join(dir, "data", id), "--node", id, "--quic", quic[id],
			"--http", "127.0.0.1:0", "--tls", filepath.Join(dir, "tls", id), "--bootstrap", strings.Join(boot, ",")); err != nil {
			return err
		}
	}
	for i := range wards {
		name := fmt.Sprintf("w%d", i+1)
		if _, err := start(name, "ward", "run", "--data", filepath.Join(dir, "data", name), "--http", "127.0.0.1:0",
			"--city", cityQUIC, "--tls", filepath.Join(dir, "tls", name), "--quic", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	if _, err := start("bk1", "backup-office", "run", "--data", filepath.Join(dir, "data", "bk1"), "--http", "127.0.0.1:0",
		"--city", cityQUIC, "--tls", filepath.Join(dir, "tls", "bk1"), "--quic", "127.0.0.1:0"); err != nil {
		return err
	}
	city, w1, w2, bk := procs[0].url, procs[3].url, procs[4].url, procs[5].url
	tls := filepath.Join(dir, "tls")
	fmt.Fprintf(w, `
wardsync demo is running (data, logs and certificates in %[1]s).

City members:  %[2]s  %[3]s  %[4]s
Ward %[5]s (node w1): %[6]s   token %[7]s
Ward %[8]s (node w2): %[9]s   token %[10]s
Backup office (node bk1, may cover both): %[12]s   token %[13]s

Try:
  export WARDSYNC_NODE=%[6]s WARDSYNC_TOKEN=%[7]s
  wardsync dossier create --procedure birth-registration --name "Nguyễn Văn An" --id-number 079123456789
  wardsync dossier list
  wardsync dossier attach --name scan.pdf ID ./some.pdf     (a PDF, JPEG, PNG or TIFF)
  wardsync dossier attachments ID                           (UPLOADED turns yes once a majority of members holds it)
  curl -s --cacert %[11]s/admin/ca.crt --cert %[11]s/admin/node.crt --key %[11]s/admin/node.key %[2]s/v1/blobs/HASH | sha256sum
  wardsync ops scrub --city %[2]s --tls %[11]s/admin
  wardsync ops status --city %[2]s --tls %[11]s/admin
  curl --cacert %[11]s/portal/ca.crt --cert %[11]s/portal/node.crt --key %[11]s/portal/node.key \
    -H 'Content-Type: application/json' %[2]s/v1/dossiers \
    -d '{"procedure":"certified-copy","ward":"%[5]s","applicant":{"name":"Trần Thị Bích","id_number":"079123456780"}}'
    (then: wardsync dossier list — the portal dossier is on ward w1)

Fail ward %[5]s over to the backup office and back (docs/failover.md):
  wardsync ops failover --ward %[5]s --to bk1 --reason "office closed" --city %[2]s --tls %[11]s/admin
  WARDSYNC_NODE=%[12]s WARDSYNC_TOKEN=%[13]s wardsync dossier list   (the backup serves the ward now; w1 is read-only)
  wardsync ops handback --ward %[5]s --city %[2]s --tls %[11]s/admin
  wardsync ops lease --ward %[5]s --city %[2]s --tls %[11]s/admin

Ctrl-C stops everything; run again with --dir %[1]s to keep the data.
`, dir, city, procs[1].url, procs[2].url, wards[0].Code, w1, tokens["w1"], wards[1].Code, w2, tokens["w2"], tls, bk, tokens["bk1"])
	<-ctx.Done()
	fmt.Fprintln(w, "stopping ...")
	return nil
}
