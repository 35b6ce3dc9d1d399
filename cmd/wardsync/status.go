package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

func opsStatusCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name:  "status",
		Usage: "every ward's link to the city: last seen, high-water marks, pull cursor and lag (admin certificate)",
		Flags: cityClientFlags(),
		Action: func(c *cli.Context) error {
			raw, err := cityRequest(c, "GET", "/v1/wards", nil)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, raw)
			}
			var page struct {
				Items []struct {
					Ward          string            `json:"ward"`
					Connected     bool              `json:"connected"`
					Member        string            `json:"member"`
					Node          string            `json:"node"`
					LastSeen      *time.Time        `json:"last_seen"`
					HighWater     map[string]uint64 `json:"high_water"`
					PullCursor    uint64            `json:"pull_cursor"`
					PartitionHead uint64            `json:"partition_head"`
					LagEntries    uint64            `json:"lag_entries"`
					LagSeconds    float64           `json:"lag_seconds"`
				} `json:"items"`
			}
			if err := json.Unmarshal(raw, &page); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WARD\tLINK\tMEMBER\tLAST SEEN\tHIGH-WATER\tPULLED\tHEAD\tLAG")
			for _, w := range page.Items {
				link := "down"
				if w.Connected {
					link = "up"
				}
				seen := "never"
				if w.LastSeen != nil {
					seen = time.Since(*w.LastSeen).Round(time.Second).String() + " ago"
				}
				var hw []string
				for origin, seq := range w.HighWater {
					hw = append(hw, fmt.Sprintf("%s:%d", origin, seq))
				}
				sort.Strings(hw)
				lag := "0"
				if w.LagEntries > 0 {
					lag = fmt.Sprintf("%d commits, %.0fs", w.LagEntries, w.LagSeconds)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", w.Ward, link, w.Member, seen, strings.Join(hw, " "), w.PullCursor, w.PartitionHead, lag)
			}
			return tw.Flush()
		},
	})
}
