package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{nodeURLFlag, tokenFlag, jsonFlag}, extra...)
}

// dossier mirrors the API's dossier JSON, as far as the CLI prints it.
type dossier struct {
	ID           string `json:"id"`
	ReceiptNo    string `json:"receipt_no"`
	Ward         string `json:"ward"`
	Procedure    string `json:"procedure"`
	Status       string `json:"status"`
	ReceivedAt   string `json:"received_at"`
	DueAt        string `json:"due_at"`
	Overdue      bool   `json:"overdue"`
	Assignee     string `json:"assignee"`
	AssigneeName string `json:"assignee_name"`
	Applicant    struct {
		Name     string `json:"name"`
		IDNumber string `json:"id_number"`
		Phone    string `json:"phone"`
	} `json:"applicant"`
	History []struct {
		Op    string `json:"op"`
		At    string `json:"at"`
		Kind  string `json:"kind"`
		From  string `json:"from"`
		To    string `json:"to"`
		Text  string `json:"text"`
		Actor struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"actor"`
		Official string `json:"official"`
		Conflict bool   `json:"conflict"`
	} `json:"history"`
	Conflicts []json.RawMessage `json:"conflicts"`
}

func dossierCommand() *cli.Command {
	return &cli.Command{
		Name:  "dossier",
		Usage: "receive and process dossiers on a ward node",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{
				Name: "create", Usage: "receive a new dossier",
				Flags: clientFlags(
					reqStr("procedure", "procedure `CODE` (see `wardsync procedures`)", "WARDSYNC_PROCEDURE"),
					reqStr("name", "applicant's full name", "WARDSYNC_APPLICANT_NAME"),
					reqStr("id-number", "applicant's 12-digit citizen ID", "WARDSYNC_APPLICANT_ID"),
					str("phone", "applicant's phone number", "WARDSYNC_APPLICANT_PHONE", ""),
					str("ward", "ward `CODE` the dossier belongs to (default: the node's)", "WARDSYNC_DOSSIER_WARD", ""),
					strs("field", "procedure field as `KEY=VALUE` (repeatable)", "WARDSYNC_FIELDS")),
				Action: func(c *cli.Context) error {
					fields := map[string]string{}
					for _, kv := range c.StringSlice("field") {
						k, v, ok := strings.Cut(kv, "=")
						if !ok || k == "" {
							return fmt.Errorf("--field %q: must be KEY=VALUE", kv)
						}
						fields[k] = v
					}
					body := map[string]any{
						"procedure": c.String("procedure"),
						"applicant": map[string]string{"name": c.String("name"), "id_number": c.String("id-number"), "phone": c.String("phone")},
						"fields":    fields,
						"ward":      c.String("ward"),
					}
					return dossierCall(c, "POST", "/v1/dossiers", body)
				},
			}),
			withConfig(&cli.Command{
				Name: "list", Usage: "list dossiers, newest first",
				Flags: clientFlags(
					str("status", "only this `STATUS`", "", ""),
					str("procedure", "only this procedure `CODE`", "", ""),
					str("assignee", "only dossiers assigned to this official `ID`", "", ""),
					str("ward", "ward `CODE` (default: the node's)", "", ""),
					boolean("overdue", "only open dossiers past their due date", ""),
					integer("limit", "page size (1-500)", "", 50),
					str("cursor", "continue from a previous page's next cursor", "", "")),
				Action: dossierList,
			}),
			withConfig(&cli.Command{
				Name: "show", Usage: "show one dossier and its history", ArgsUsage: "ID",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "ID")
					if err != nil {
						return err
					}
					return dossierCall(c, "GET", "/v1/dossiers/"+url.PathEscape(id), nil)
				},
			}),
			withConfig(&cli.Command{
				Name: "transition", Usage: "move a dossier to another status", ArgsUsage: "ID",
				Flags: clientFlags(
					reqStr("to", "target `STATUS`: in_review, supplement_requested, approved, rejected, returned, withdrawn", ""),
					str("note", "note for the history", "", "")),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "ID")
					if err != nil {
						return err
					}
					return dossierCall(c, "POST", "/v1/dossiers/"+url.PathEscape(id)+"/transitions",
						map[string]string{"to": c.String("to"), "note": c.String("note")})
				},
			}),
			withConfig(&cli.Command{
				Name: "assign", Usage: "assign a dossier to an official", ArgsUsage: "ID",
				Flags: clientFlags(reqStr("official", "official `ID`", "")),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "ID")
					if err != nil {
						return err
					}
					return dossierCall(c, "POST", "/v1/dossiers/"+url.PathEscape(id)+"/assign",
						map[string]string{"official": c.String("official")})
				},
			}),
			withConfig(&cli.Command{
				Name: "note", Usage: "add a note to a dossier", ArgsUsage: "ID",
				Flags: clientFlags(reqStr("text", "the note", "")),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "ID")
					if err != nil {
						return err
					}
					return dossierCall(c, "POST", "/v1/dossiers/"+url.PathEscape(id)+"/notes",
						map[string]string{"text": c.String("text")})
				},
			}),
		},
	}
}

func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("expected one argument, the dossier %s (got %d)", what, c.NArg())
	}
	return c.Args().First(), nil
}

// dossierCall sends a request that answers with one dossier and prints it.
func dossierCall(c *cli.Context, method, path string, body any) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := cl.do(method, path, nil, body, &raw); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	var d dossier
	if err := json.Unmarshal(raw, &d); err != nil {
		return err
	}
	printDossier(c.App.Writer, &d)
	return nil
}

func printDossier(w io.Writer, d *dossier) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	assignee := d.AssigneeName
	if assignee == "" {
		assignee = d.Assignee
	}
	fmt.Fprintf(tw, "ID\t%s\nReceipt\t%s\nWard\t%s\nProcedure\t%s\nStatus\t%s\nApplicant\t%s (%s)\nReceived\t%s\nDue\t%s%s\nAssignee\t%s\n",
		d.ID, d.ReceiptNo, d.Ward, d.Procedure, d.Status, d.Applicant.Name, d.Applicant.IDNumber,
		d.ReceivedAt, d.DueAt, map[bool]string{true: "  OVERDUE", false: ""}[d.Overdue], assignee)
	if len(d.Conflicts) > 0 {
		fmt.Fprintf(tw, "Conflicts\t%d (resolve them in the web UI or API)\n", len(d.Conflicts))
	}
	tw.Flush()
	if len(d.History) == 0 {
		return
	}
	fmt.Fprintln(w, "\nHistory:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tBY\tWHAT\tDETAIL")
	for _, e := range d.History {
		what := e.Kind
		if e.To != "" {
			what = fmt.Sprintf("%s %s→%s", e.Kind, e.From, e.To)
		}
		detail := e.Text
		if e.Official != "" {
			detail = "to " + e.Official
		}
		if e.Conflict {
			what = "CONFLICT " + what
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.At, e.Actor.Name, what, detail)
	}
	tw.Flush()
}

func dossierList(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	q := url.Values{}
	for _, f := range []string{"status", "procedure", "assignee", "ward", "cursor"} {
		if v := c.String(f); v != "" {
			q.Set(f, v)
		}
	}
	if c.Bool("overdue") {
		q.Set("overdue", "true")
	}
	q.Set("limit", strconv.Itoa(c.Int("limit")))
	var raw json.RawMessage
	if err := cl.do("GET", "/v1/dossiers", q, nil, &raw); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	var page struct {
		Items      []dossier `json:"items"`
		NextCursor *string   `json:"next_cursor"`
	}
	if err := json.Unmarshal(raw, &page); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIPT\tPROCEDURE\tSTATUS\tAPPLICANT\tDUE\tASSIGNEE")
	for _, d := range page.Items {
		due := d.DueAt
		if d.Overdue {
			due += " (overdue)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.ReceiptNo, d.Procedure, d.Status, d.Applicant.Name, due, d.Assignee)
	}
	tw.Flush()
	if page.NextCursor != nil {
		fmt.Fprintf(c.App.Writer, "\nmore: --cursor %s\n", *page.NextCursor)
	}
	return nil
}

func printJSON(w io.Writer, raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
