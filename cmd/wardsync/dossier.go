package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/wardsync/wardsync/node/diskspace"
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
	Conflicts []struct {
		Op     string                `json:"op"`
		To     string                `json:"to"`
		Actor  struct{ Name string } `json:"actor"`
		Reason string                `json:"reason"`
	} `json:"conflicts"`
	Attachments []attachment `json:"attachments"`
}

// attachment mirrors the API's attachment JSON.
type attachment struct {
	Op   string `json:"op"`
	Name string `json:"name"`
	Hash string `json:"hash"`
	Size int64  `json:"size"`
	Type string `json:"type"`
	By   struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"by"`
	At       string `json:"at"`
	Here     *bool  `json:"here"`
	Uploaded *bool  `json:"uploaded"`
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
					boolean("conflict", "only dossiers with an open conflict to resolve (after two offices decided differently)", ""),
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
				Name: "resolve", Usage: "settle a conflict on a dossier (head or admin): the status it ends in", ArgsUsage: "ID",
				Flags: clientFlags(
					reqStr("conflict", "the conflicting op, `ORIGIN/SEQ`, as `dossier show` lists it", ""),
					reqStr("to", "the `STATUS` the dossier ends in", ""),
					str("note", "why, for the history", "", "")),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "ID")
					if err != nil {
						return err
					}
					return dossierCall(c, "POST", "/v1/dossiers/"+url.PathEscape(id)+"/resolve",
						map[string]string{"conflict": c.String("conflict"), "to": c.String("to"), "note": c.String("note")})
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
			withConfig(&cli.Command{
				Name: "attach", Usage: "attach a scanned document (PDF, JPEG, PNG or TIFF) to a dossier", ArgsUsage: "ID FILE",
				Flags:  clientFlags(str("name", "file `NAME` the attachment shows (default: FILE's base name)", "WARDSYNC_ATTACH_NAME", "")),
				Action: dossierAttach,
			}),
			withConfig(&cli.Command{
				Name: "attachments", Usage: "list a dossier's attachments", ArgsUsage: "ID",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "ID")
					if err != nil {
						return err
					}
					return dossierAttachments(c, id)
				},
			}),
			withConfig(&cli.Command{
				Name: "download", Usage: "download an attachment and check its SHA-256", ArgsUsage: "ID HASH",
				Flags:  clientFlags(reqStr("out", "`FILE` to write (written as FILE.part, renamed once verified)", "WARDSYNC_DOWNLOAD_OUT")),
				Action: dossierDownload,
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
		for _, c := range d.Conflicts {
			fmt.Fprintf(tw, "Conflict\t%s: to %s by %s — %s (settle it: dossier resolve --conflict %s --to STATUS %s)\n", c.Op, orDash(c.To), c.Actor.Name, c.Reason, c.Op, d.ID)
		}
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
	if len(d.Attachments) > 0 {
		fmt.Fprintln(w, "\nAttachments:")
		printAttachments(w, d.Attachments)
	}
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
	if c.Bool("conflict") {
		q.Set("conflict", "true")
	}
	q.Set("limit", strconv.Itoa(c.Int("limit")))
	var raw json.RawMessage
	if err := cl.do("GET", "/v1/dossiers", q, nil, &raw); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	leaseBanner(c, cl)
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

// args returns the command's positional arguments, which must be names.
func args(c *cli.Context, names ...string) ([]string, error) {
	if c.NArg() != len(names) {
		return nil, fmt.Errorf("expected %d arguments, %s (got %d)", len(names), strings.Join(names, " "), c.NArg())
	}
	return c.Args().Slice(), nil
}

// dossierAttach streams FILE to the node as an attachment of dossier ID.
func dossierAttach(c *cli.Context) error {
	a, err := args(c, "ID", "FILE")
	if err != nil {
		return err
	}
	id, path := a[0], a[1]
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("FILE %s: %w", path, pathReason(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("FILE %s: %w", path, pathReason(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("FILE %s: not a regular file", path)
	}
	if st.Size() == 0 {
		return fmt.Errorf("FILE %s: the file is empty", path)
	}
	name := c.String("name")
	if name == "" {
		name = filepath.Base(path)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	status, err := uploadFile(cl, "/v1/dossiers/"+url.PathEscape(id)+"/attachments", url.Values{"name": {name}}, f, st.Size(), &raw)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	var at attachment
	if err := json.Unmarshal(raw, &at); err != nil {
		return err
	}
	if status == http.StatusCreated {
		fmt.Fprintf(c.App.Writer, "Attached %s to dossier %s:\n", path, id)
	} else {
		fmt.Fprintf(c.App.Writer, "Dossier %s already has this content (nothing new stored):\n", id)
	}
	printAttachments(c.App.Writer, []attachment{at})
	return nil
}

// pathReason is an os error without the path, which the caller names.
func pathReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// uploadFile POSTs size bytes of body as a raw request body and decodes
// the JSON answer into out. It has no overall timeout: a large scan on a
// slow LAN takes what it takes (the node bounds it).
func uploadFile(cl *client, path string, query url.Values, body io.Reader, size int64, out any) (int, error) {
	u := *cl.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequest("POST", u.String(), body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+cl.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	hc := *cl.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the node at %s: %w", cl.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error apiErr `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
			return resp.StatusCode, fmt.Errorf("node answered HTTP %d: %.200s", resp.StatusCode, data)
		}
		e.Error.Status = resp.StatusCode
		return resp.StatusCode, &e.Error
	}
	return resp.StatusCode, json.Unmarshal(data, out)
}

func dossierAttachments(c *cli.Context, id string) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := cl.do("GET", "/v1/dossiers/"+url.PathEscape(id)+"/attachments", nil, nil, &raw); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, raw)
	}
	var l struct {
		Items []attachment `json:"items"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return err
	}
	if len(l.Items) == 0 {
		fmt.Fprintf(c.App.Writer, "Dossier %s has no attachments.\n", id)
		return nil
	}
	printAttachments(c.App.Writer, l.Items)
	return nil
}

func printAttachments(w io.Writer, items []attachment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HASH\tNAME\tTYPE\tSIZE\tBY\tAT\tHERE\tUPLOADED")
	for _, a := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Hash, a.Name, a.Type, diskspace.Bytes(uint64(max(a.Size, 0))), a.By.Name, a.At, yesNo(a.Here), yesNo(a.Uploaded))
	}
	tw.Flush()
}

func yesNo(b *bool) string {
	switch {
	case b == nil:
		return "-"
	case *b:
		return "yes"
	}
	return "no"
}

// dossierDownload writes an attachment to --out: to FILE.part first,
// renamed only once its SHA-256 is the HASH asked for.
func dossierDownload(c *cli.Context) error {
	a, err := args(c, "ID", "HASH")
	if err != nil {
		return err
	}
	id, hash := a[0], strings.ToLower(a[1])
	if _, err := hex.DecodeString(hash); err != nil || len(hash) != 64 {
		return fmt.Errorf("HASH %q: must be the attachment's SHA-256, 64 hex digits (see `wardsync dossier attachments ID`)", a[1])
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	out := c.String("out")
	part := out + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	kept := false
	defer func() {
		if !kept {
			f.Close()
			os.Remove(part)
		}
	}()
	sum := sha256.New()
	n, err := cl.download("/v1/dossiers/"+url.PathEscape(id)+"/attachments/"+hash, io.MultiWriter(f, sum))
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != hash {
		return fmt.Errorf("download: the %d bytes received have SHA-256 %s, not %s; nothing was kept, try again", n, got, hash)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := os.Rename(part, out); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	kept = true
	if c.Bool("json") {
		b, _ := json.Marshal(map[string]any{"file": out, "hash": hash, "size": n})
		return printJSON(c.App.Writer, b)
	}
	fmt.Fprintf(c.App.Writer, "Downloaded %s: %d bytes, SHA-256 %s verified\n", out, n, hash)
	return nil
}

// leaseBanner tells the clerk, above a listing, when this office does not
// serve a ward it shows: after a failover its own office is read-only
// until handback, and a backup may be catching up or handing back.
func leaseBanner(c *cli.Context, cl *client) {
	var h struct {
		Leases []struct {
			Ward       string `json:"ward"`
			Mode       string `json:"mode"`
			ActiveNode string `json:"active_node"`
		} `json:"leases"`
	}
	if cl.do("GET", "/healthz", nil, nil, &h) != nil {
		return
	}
	for _, l := range h.Leases {
		switch l.Mode {
		case "read_only":
			fmt.Fprintf(c.App.ErrWriter, "READ-ONLY: ward %s is served by %s now; this office cannot change its dossiers until handback.\n", l.Ward, l.ActiveNode)
		case "handing_back":
			fmt.Fprintf(c.App.ErrWriter, "READ-ONLY: ward %s is being handed back; this office finishes sending its work.\n", l.Ward)
		case "catching_up":
			fmt.Fprintf(c.App.ErrWriter, "NOT YET: this office is still receiving ward %s's dossiers (see /v1/sync/status); it serves the ward once they are in.\n", l.Ward)
		}
	}
}
