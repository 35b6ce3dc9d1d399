package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// reply is one HTTP answer.
type reply struct {
	code int
	body []byte
}

// errorCode is the "code" of a JSON error body ("" if none).
func (r reply) errorCode() string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// outcome says whether a write took effect, as far as the client can tell.
type outcome int

const (
	acked   outcome = iota // 2xx: the node saved it
	refused                // a 4xx answer, or the connection was refused: nothing changed
	failed                 // a 503 answer: the node says nothing was saved
	unknown                // no answer, or another 5xx: saved or not
)

func (o outcome) String() string {
	return [...]string{"acknowledged", "refused", "failed", "unknown"}[o]
}

// classify tells from a request's result whether the write took effect.
func classify(r reply, err error) outcome {
	switch {
	case err == nil && r.code/100 == 2:
		return acked
	case err == nil && r.code/100 == 4:
		return refused
	case err == nil && r.code == http.StatusServiceUnavailable:
		return failed
	case err == nil:
		return unknown
	case errors.Is(err, syscall.ECONNREFUSED):
		// Nothing reached a process: it certainly did not save it.
		return refused
	default:
		return unknown
	}
}

// errClass names a failed write for the error counts: "409 read_only",
// "503 storage_failed", "timeout", "connection refused", ...
func errClass(r reply, err error) string {
	switch {
	case err == nil:
		if c := r.errorCode(); c != "" {
			return fmt.Sprintf("%d %s", r.code, c)
		}
		return fmt.Sprint(r.code)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "timeout"
	default:
		return "no answer"
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// apiClient calls an office node's API as one official, or a city
// member's API with a client certificate.
type apiClient struct {
	base  func() string // the node's API base
	token string        // bearer token (office nodes); "" for the city
	hc    *http.Client
}

// officeHTTP is an HTTP client for office nodes: no keep-alive, so a
// request to a node that is down is refused (certainly not saved) rather
// than lost on a stale connection (outcome unknown).
func officeHTTP(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

// cityHTTP returns an HTTP client for city members' APIs that presents the
// certificate in tlsDir and checks that the server is a city member.
func cityHTTP(tlsDir string, timeout time.Duration) (*http.Client, error) {
	cert, pool, _, err := certs.LoadBundle(tlsDir, time.Now())
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   transport.ClientTLS(cert, pool, schema.PeerCity)}}, nil
}

func (c *apiClient) do(ctx context.Context, method, path string, body any) (reply, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return reply{}, err
		}
		rd, ctype = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, rd)
	if err != nil {
		return reply{}, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return reply{code: resp.StatusCode}, err
	}
	return reply{code: resp.StatusCode, body: bytes.TrimSpace(data)}, nil
}

// getJSON GETs path and decodes a 200 answer into v.
func (c *apiClient) getJSON(ctx context.Context, path string, v any) error {
	r, err := c.do(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	if r.code != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d %.300s", path, r.code, r.body)
	}
	return json.Unmarshal(r.body, v)
}

// digest is a ward's digest as one replica holds it.
type digest struct {
	Ward      string `json:"ward"`
	Dossiers  int    `json:"dossiers"`
	Ops       int    `json:"ops"`
	Conflicts int    `json:"conflicts"`
	Hash      string `json:"state_hash"`
}

func (d digest) String() string {
	h := d.Hash
	if len(h) > 12 {
		h = h[:12]
	}
	return fmt.Sprintf("%d dossiers, %d ops, %d conflicts, %s", d.Dossiers, d.Ops, d.Conflicts, h)
}

// event is one entry of a dossier's history.
type event struct {
	Op       string `json:"op"`
	Kind     string `json:"kind"`
	To       string `json:"to"`
	Text     string `json:"text"`
	Conflict bool   `json:"conflict"`
}

// dossier is what the driver reads of a dossier.
type dossier struct {
	ID        string  `json:"id"`
	ReceiptNo string  `json:"receipt_no"`
	Ward      string  `json:"ward"`
	Status    string  `json:"status"`
	Origin    string  `json:"origin"`
	History   []event `json:"history"`
	Applicant struct {
		IDNumber string `json:"id_number"`
	} `json:"applicant"`
	Conflicts []struct {
		Op string `json:"op"`
	} `json:"conflicts"`
}

// list reads every dossier of ward on a replica (path is
// "/v1/dossiers?ward=W" on an office, "/v1/wards/W/dossiers" at the city),
// following the cursor.
func (c *apiClient) list(ctx context.Context, path, ward string) ([]dossier, error) {
	var out []dossier
	cursor := ""
	for range 10_000 {
		u, err := url.Parse(path)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("limit", "500")
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		u.RawQuery = q.Encode()
		var page struct {
			Items      []dossier `json:"items"`
			NextCursor *string   `json:"next_cursor"`
		}
		if err := c.getJSON(ctx, u.String(), &page); err != nil {
			return nil, err
		}
		for _, d := range page.Items {
			if d.Ward == ward {
				out = append(out, d)
			}
		}
		if page.NextCursor == nil || *page.NextCursor == "" {
			return out, nil
		}
		cursor = *page.NextCursor
	}
	return nil, fmt.Errorf("listing %s: too many pages", path)
}
