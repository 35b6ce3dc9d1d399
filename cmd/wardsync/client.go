package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// client talks to a ward node's HTTP API on behalf of an official.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newClient(c *cli.Context) (*client, error) {
	u, err := url.Parse(c.String("node"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--node %q: must be a URL such as http://127.0.0.1:8080", c.String("node"))
	}
	token := c.String("token")
	if token == "" {
		return nil, errors.New("--token (or WARDSYNC_TOKEN) is required: the official's bearer token")
	}
	return &client{base: u, token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// apiErr is an error answer of the API.
type apiErr struct {
	Status  int
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Field   string   `json:"field"`
	Allowed []string `json:"allowed"`
}

func (e *apiErr) Error() string {
	msg := e.Message
	if len(e.Allowed) > 0 {
		msg += "\nallowed next statuses: " + strings.Join(e.Allowed, ", ")
	}
	return fmt.Sprintf("%s (HTTP %d %s)", msg, e.Status, e.Code)
}

// do sends a request and decodes a JSON answer into out.
func (cl *client) do(method, path string, query url.Values, body, out any) error {
	u := *cl.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+cl.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the node at %s: %w", cl.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error apiErr `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
			return fmt.Errorf("node answered HTTP %d: %.200s", resp.StatusCode, data)
		}
		e.Error.Status = resp.StatusCode
		return cli.Exit(&e.Error, 1)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// download streams a GET answer into w and returns the bytes written.
func (cl *client) download(path string, w io.Writer) (int64, error) {
	u := *cl.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	req, err := http.NewRequest("GET", u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+cl.token)
	hc := *cl.http
	hc.Timeout = 0 // a large backup takes as long as it takes
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the node at %s: %w", cl.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error apiErr `json:"error"`
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
			return 0, fmt.Errorf("node answered HTTP %d", resp.StatusCode)
		}
		e.Error.Status = resp.StatusCode
		return 0, &e.Error
	}
	return io.Copy(w, resp.Body)
}
