package drill

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

// headerActiveNode is the response header naming the node that serves the
// ward now (node.HeaderActiveNode; repeated here so the drill checks the
// wire, not a constant).
const headerActiveNode = "X-Wardsync-Active-Node"

// reply is one HTTP answer.
type reply struct {
	code   int
	header http.Header
	body   []byte
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

// outcome says whether a write took effect.
type outcome int

const (
	acked   outcome = iota // 2xx: the node saved it
	refused                // an answer other than 2xx, or the connection was refused: nothing changed
	unknown                // no answer (the node died mid-request): it may or may not be saved
)

func (o outcome) String() string {
	return [...]string{"acknowledged", "refused", "unknown"}[o]
}

// classify tells from a request's result whether the write took effect.
func classify(r reply, err error) outcome {
	switch {
	case err == nil && r.code/100 == 2:
		return acked
	case err == nil:
		return refused
	case errors.Is(err, syscall.ECONNREFUSED):
		// Nothing reached a process: it certainly did not save it.
		return refused
	default:
		return unknown
	}
}

// apiClient calls a ward or backup office node's API as one official, or a
// city member's API with the admin certificate.
type apiClient struct {
	base  string
	token string // bearer token (office nodes); "" for the city
	hc    *http.Client
}

func officeClient(base, token string) *apiClient {
	return &apiClient{base: base, token: token, hc: &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16},
	}}
}

// cityClient returns an HTTP client for city members' APIs that presents
// the admin certificate in tlsDir and checks that the server is a city
// member of the same CA.
func cityClient(tlsDir string) (*http.Client, error) {
	cert, pool, _, err := certs.LoadBundle(tlsDir, time.Now())
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: transport.ClientTLS(cert, pool, schema.PeerCity)}}, nil
}

func (c *apiClient) do(ctx context.Context, method, path string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{code: resp.StatusCode, header: resp.Header}, err
	}
	return reply{code: resp.StatusCode, header: resp.Header, body: bytes.TrimSpace(data)}, nil
}

// getJSON GETs path and decodes a 200 answer into v.
func (c *apiClient) getJSON(ctx context.Context, path string, v any) error {
	r, err := c.do(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	if r.code != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d %s", path, r.code, r.body)
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

func (d digest) sameAs(o digest) bool {
	return d.Dossiers == o.Dossiers && d.Ops == o.Ops && d.Conflicts == o.Conflicts && d.Hash == o.Hash
}

// dossier is what the drill reads of a dossier.
type dossier struct {
	ID        string            `json:"id"`
	ReceiptNo string            `json:"receipt_no"`
	Ward      string            `json:"ward"`
	Status    string            `json:"status"`
	Origin    string            `json:"origin"`
	History   []json.RawMessage `json:"history"`
	Conflicts []json.RawMessage `json:"conflicts"`
}

// list reads every dossier of ward from a replica's list endpoint (path
// is "/v1/dossiers?ward=W" on an office, "/v1/wards/W/dossiers" at the
// city), following the cursor.
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

// leaseMode is the node's mode for ward, from its /healthz ("" when it
// lists none: a backup office that does not hold the ward).
func (c *apiClient) leaseMode(ctx context.Context, ward string) (mode, active string, err error) {
	var h struct {
		Leases []struct {
			Ward       string `json:"ward"`
			Mode       string `json:"mode"`
			ActiveNode string `json:"active_node"`
		} `json:"leases"`
	}
	if err := c.getJSON(ctx, "/healthz", &h); err != nil {
		return "", "", err
	}
	for _, l := range h.Leases {
		if l.Ward == ward {
			return l.Mode, l.ActiveNode, nil
		}
	}
	return "", "", nil
}

// syncStatus is the part of an office's /v1/sync/status the drill reads.
type syncStatus struct {
	Connected   bool `json:"connected"`
	OutboxDepth int  `json:"outbox_depth"`
}
