package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func officialsCommand() *cli.Command {
	return &cli.Command{
		Name:  "officials",
		Usage: "manage the officials who may use a ward node (admin only)",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name: "add", Usage: "add an official and print their token (shown once)",
				Flags: clientFlags(
					reqStr("name", "official's full name", ""),
					reqStr("role", "clerk, head or admin", ""),
					str("id", "official `ID` (default: generated)", "", "")),
				Action: func(c *cli.Context) error {
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					var o struct {
						ID, Name, Role, Token string
					}
					var raw json.RawMessage
					body := map[string]string{"name": c.String("name"), "role": c.String("role"), "id": c.String("id")}
					if err := cl.do("POST", "/v1/officials", nil, body, &raw); err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, raw)
					}
					if err := json.Unmarshal(raw, &o); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "Added %s %q (%s). Token (shown once):\n%s\n", o.Role, o.Name, o.ID, o.Token)
					return nil
				},
			}),
			withConfig(&cli.Command{
				Name: "list", Usage: "list officials",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					return tableCall(c, "/v1/officials", nil, "ID\tNAME\tROLE\tCREATED", func(m map[string]any) string {
						return fmt.Sprintf("%v\t%v\t%v\t%v", m["id"], m["name"], m["role"], m["created_at"])
					})
				},
			}),
		},
	}
}

func proceduresCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name: "procedures", Usage: "list the procedure catalog",
		Flags: clientFlags(),
		Action: func(c *cli.Context) error {
			return tableCall(c, "/v1/procedures", nil, "CODE\tDAYS\tNAME", func(m map[string]any) string {
				return fmt.Sprintf("%v\t%v\t%v / %v", m["code"], m["processing_days"], m["name_vi"], m["name_en"])
			})
		},
	})
}

func statsCommand() *cli.Command {
	return withConfig(&cli.Command{
		Name: "stats", Usage: "counts per status and on-time rate per procedure",
		Flags: clientFlags(str("ward", "ward `CODE` (default: the node's)", "", "")),
		Action: func(c *cli.Context) error {
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			q := url.Values{}
			if w := c.String("ward"); w != "" {
				q.Set("ward", w)
			}
			var raw json.RawMessage
			if err := cl.do("GET", "/v1/stats", q, nil, &raw); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, raw)
			}
			var st struct {
				Ward       string           `json:"ward"`
				Total      int64            `json:"total"`
				Overdue    int64            `json:"overdue"`
				ByStatus   map[string]int64 `json:"by_status"`
				Procedures []struct {
					Code       string   `json:"code"`
					Decided    int64    `json:"decided"`
					OnTime     int64    `json:"on_time"`
					OnTimeRate *float64 `json:"on_time_rate"`
				} `json:"procedures"`
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				return err
			}
			w := c.App.Writer
			fmt.Fprintf(w, "Ward %s: %d dossiers, %d overdue\n\n", st.Ward, st.Total, st.Overdue)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STATUS\tCOUNT")
			keys := make([]string, 0, len(st.ByStatus))
			for k := range st.ByStatus {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%d\n", k, st.ByStatus[k])
			}
			fmt.Fprintln(tw, "\nPROCEDURE\tDECIDED\tON TIME\tRATE")
			for _, p := range st.Procedures {
				rate := "-"
				if p.OnTimeRate != nil {
					rate = fmt.Sprintf("%.0f%%", *p.OnTimeRate*100)
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", p.Code, p.Decided, p.OnTime, rate)
			}
			return tw.Flush()
		},
	})
}

// tableCall fetches {"items":[...]} and prints one row per item.
func tableCall(c *cli.Context, path string, q url.Values, header string, row func(map[string]any) string) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := cl.do("GET", path, q, nil, &raw); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	var page struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(raw, &page); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range page.Items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}
