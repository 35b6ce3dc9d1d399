package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/schema"
)

// City IT's lease commands: move a ward to its backup office and back.
// Each change is a compare-and-set on the epoch read just before (or
// given with --expect-epoch), so two operators cannot both win.

var (
	leaseWardFlag   = reqStr("ward", "ward `CODE`", "WARDSYNC_LEASE_WARD")
	leaseReasonFlag = str("reason", "why, for the lease history (e.g. \"flood: office closed\")", "WARDSYNC_LEASE_REASON", "")
	leaseExpectFlag = str("expect-epoch", "only change the lease if it is still at this `EPOCH` (default: the epoch read just before)", "WARDSYNC_LEASE_EXPECT", "")
	leaseWaitFlag   = &cli.BoolFlag{Name: "wait", Value: true, Usage: "wait, showing progress, until the new holder serves the ward (--wait=false: return at once)"}
	leaseTimeout    = str("timeout", "how long --wait waits", "WARDSYNC_LEASE_TIMEOUT", "30m")
)

func opsLeaseCommands() []*cli.Command {
	return []*cli.Command{
		withConfig(&cli.Command{
			Name:  "failover",
			Usage: "move a ward to a backup office (admin certificate): it pulls the ward, then serves its clerks",
			Flags: cityClientFlags(leaseWardFlag,
				reqStr("to", "the backup office's node `ID` (its backup certificate must name the ward)", "WARDSYNC_LEASE_TO"),
				leaseReasonFlag, leaseExpectFlag, leaseWaitFlag, leaseTimeout),
			Action: func(c *cli.Context) error { return leaseChange(c, "failover") },
		}),
		withConfig(&cli.Command{
			Name: "handback",
			Usage: "return a ward to its own office (admin certificate): the backup finishes pushing and turns read-only, " +
				"the office pulls what the backup did, then serves again",
			Flags: cityClientFlags(leaseWardFlag,
				str("to", "the ward office's node `ID` (default: the one the ward came from)", "WARDSYNC_LEASE_TO", ""),
				boolean("force", "move the lease now without waiting for the backup to finish pushing (a backup office that is gone); its late ops still merge", "WARDSYNC_LEASE_FORCE"),
				leaseReasonFlag, leaseExpectFlag, leaseWaitFlag, leaseTimeout),
			Action: func(c *cli.Context) error { return leaseChange(c, "handback") },
		}),
		withConfig(&cli.Command{
			Name:  "lease",
			Usage: "show who serves a ward, and the ward's lease history (admin certificate)",
			Flags: cityClientFlags(leaseWardFlag),
			Action: func(c *cli.Context) error {
				ward := c.String("ward")
				raw, err := cityRequest(c, "GET", "/v1/wards/"+ward+"/lease/history", nil)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, raw)
				}
				cur, err := readLease(c, ward)
				if err != nil {
					return err
				}
				var h struct {
					History []schema.Lease `json:"history"`
				}
				if err := json.Unmarshal(raw, &h); err != nil {
					return err
				}
				printLease(c.App.Writer, cur)
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "\nEPOCH\tACTIVE\tSINCE\tBY\tREASON")
				fmt.Fprintf(tw, "0\t%s\t-\t-\tthe ward's own office\n", orDash(cur.Home))
				for _, l := range h.History {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", l.Epoch, l.Active, fmtTime(l.SinceTime()), orDash(l.By), orDash(l.Reason))
				}
				return tw.Flush()
			},
		}),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func readLease(c *cli.Context, ward string) (schema.Lease, error) {
	var l schema.Lease
	raw, err := cityRequest(c, "GET", "/v1/wards/"+ward+"/lease", nil)
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal(raw, &l)
}

func printLease(w io.Writer, l schema.Lease) {
	switch {
	case l.Epoch == 0:
		fmt.Fprintf(w, "Ward %s: served by its own office (epoch 0)\n", l.Ward)
	case l.HandbackTo != "":
		fmt.Fprintf(w, "Ward %s: served by %s (epoch %d since %s), handing back to %s: %s is read-only and finishing its push\n",
			l.Ward, l.Active, l.Epoch, fmtTime(l.SinceTime()), l.HandbackTo, l.Active)
	default:
		fmt.Fprintf(w, "Ward %s: served by %s (epoch %d since %s; %s)\n", l.Ward, l.Active, l.Epoch, fmtTime(l.SinceTime()), orDash(l.Reason))
	}
}

// leaseChange runs failover or handback and, with --wait, follows it
// until the new holder serves the ward.
func leaseChange(c *cli.Context, op string) error {
	ward := c.String("ward")
	timeout, err := parseDuration(c, "timeout")
	if err != nil {
		return err
	}
	var expect uint64
	if s := c.String("expect-epoch"); s != "" {
		if expect, err = strconv.ParseUint(s, 10, 64); err != nil {
			return fmt.Errorf("--expect-epoch %q: not an epoch number", s)
		}
	} else {
		cur, err := readLease(c, ward)
		if err != nil {
			return err
		}
		expect = cur.Epoch
	}
	body := map[string]any{"to": c.String("to"), "reason": c.String("reason"), "expect_epoch": expect}
	if op == "handback" {
		body["force"] = c.Bool("force")
	}
	raw, err := cityRequest(c, "POST", "/v1/wards/"+ward+"/lease/"+op, body)
	if err != nil {
		return err
	}
	var l schema.Lease
	if err := json.Unmarshal(raw, &l); err != nil {
		return err
	}
	if c.Bool("json") && !c.Bool("wait") {
		return printJSON(c.App.Writer, raw)
	}
	w := c.App.Writer
	if c.Bool("json") {
		w = io.Discard // only the final lease, as JSON, once it serves
	}
	printLease(w, l)
	if !c.Bool("wait") {
		return nil
	}
	deadline := time.Now().Add(timeout)
	if l.HandbackTo != "" {
		fmt.Fprintf(w, "Waiting for %s to push its last ops and scans and release the ward...\n", l.Active)
		target := l.HandbackTo
		for l.HandbackTo != "" {
			if time.Now().After(deadline) {
				return cli.Exit(fmt.Sprintf("handback: %s has not released ward %s within %s; is it running and linked to the city? (`ops handback --force` moves the lease without it)", l.Active, ward, timeout), 1)
			}
			time.Sleep(time.Second)
			if next, err := readLease(c, ward); err == nil {
				l = next
			}
		}
		printLease(w, l)
		if l.Active != target {
			return cli.Exit(fmt.Sprintf("handback: the lease of ward %s went to %s, not %s: someone else changed it (see `ops lease --ward %s`)", ward, l.Active, target, ward), 1)
		}
	}
	if err := waitServing(c, w, l, deadline); err != nil {
		return err
	}
	if c.Bool("json") {
		l, err := readLease(c, ward)
		if err != nil {
			return err
		}
		return json.NewEncoder(c.App.Writer).Encode(l)
	}
	return nil
}

// waitServing shows the new holder catching up on the ward (its pull
// cursor against the lease's ready index, as the city sees it) until it
// serves.
func waitServing(c *cli.Context, w io.Writer, l schema.Lease, deadline time.Time) error {
	start, last := time.Now(), ""
	var from uint64
	first := true
	for {
		var views struct {
			Items []struct {
				Ward    string            `json:"ward"`
				Pullers map[string]uint64 `json:"pullers"`
			} `json:"items"`
			Unreachable []string `json:"unreachable_members"`
		}
		cursor := uint64(0)
		if raw, err := cityRequest(c, "GET", "/v1/wards", nil); err == nil && json.Unmarshal(raw, &views) == nil {
			for _, v := range views.Items {
				if v.Ward == l.Ward {
					cursor = v.Pullers[l.Active]
				}
			}
		}
		if first {
			from, first = cursor, false
		}
		if cursor >= l.Ready {
			fmt.Fprintf(w, "%s has pulled ward %s (index %d) and serves its clerks now.\n", l.Active, l.Ward, l.Ready)
			return nil
		}
		line := fmt.Sprintf("%s catching up on ward %s: %s", l.Active, l.Ward, progressText(from, cursor, l.Ready, time.Since(start)))
		if len(views.Unreachable) > 0 {
			line += fmt.Sprintf(" (no answer from %v: links held there are not counted)", views.Unreachable)
		}
		if line != last {
			fmt.Fprintln(w, line)
			last = line
		}
		if time.Now().After(deadline) {
			return cli.Exit(fmt.Sprintf("%s has not caught up on ward %s in time; the lease is moved all the same, and it serves once it has (see its /v1/sync/status)", l.Active, l.Ward), 1)
		}
		time.Sleep(time.Second)
	}
}

// progressText says how far cursor has come from from towards ready, with
// the time left at the rate so far.
func progressText(from, cursor, ready uint64, took time.Duration) string {
	if ready <= from {
		return "100%"
	}
	done := float64(cursor-min(cursor, from)) / float64(ready-from)
	s := fmt.Sprintf("%.1f%% (index %d of %d)", done*100, cursor, ready)
	if done > 0 {
		eta := time.Duration(float64(took) * (1 - done) / done)
		s += ", ETA " + eta.Round(time.Second).String()
	}
	return s
}
