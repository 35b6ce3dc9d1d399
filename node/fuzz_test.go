package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/schema"
)

// FuzzCreateDossierBody posts arbitrary bytes as the body of
// POST /v1/dossiers to a real node (opened once for the whole run). Whatever
// the bytes, the node never answers 5xx, every refusal has the JSON error
// shape, and every dossier it accepts holds a valid, normalized applicant.
func FuzzCreateDossierBody(f *testing.F) {
	clock := newFakeClock(testStart)
	cfg := node.Config{Dir: f.TempDir(), Now: clock.Now}
	res, err := node.Init(context.Background(), cfg, node.InitParams{Ward: testWard(), Node: testNodeID})
	if err != nil {
		f.Fatal(err)
	}
	n, err := node.Open(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	h := n.Handler()
	token := res.AdminToken
	catalog, wards := schema.DefaultCatalog(), schema.DefaultWards()

	seed := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	valid := seed(newDossierBody("birth-registration", 1))
	f.Add(valid)
	f.Add(seed(map[string]any{"procedure": "construction-permit", "ward": otherWard(),
		"applicant": map[string]string{"name": "  Trần   Văn\tBa  ", "id_number": " 001099012345 ", "phone": "+84-28.3829.1234"}}))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"A","id_number":"012345678901"},"fields":{"a":"","b_2":"x\ny"}}`))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"A","id_number":"012345678901"},"actor":{"id":"admin"}}`))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"\u0085\u00a0","id_number":"012345678901"}}`))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"\ud800","id_number":"012345678901"}}`))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"A\u0000B","id_number":"012345678901"}}`))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"A","id_number":"012345678901"},"fields":{"A":"x"}}`))
	f.Add([]byte(`{"procedure":"certified-copy","applicant":{"name":"A","id_number":"012345678901"},"applicant":{"name":"B"}}`))
	f.Add([]byte(`{"procedure":5}`))
	f.Add([]byte(`{"":""}`))
	f.Add([]byte(`{"a\"b":1}`))
	f.Add([]byte(`{"fields":[]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{`))
	f.Add([]byte(``))
	f.Add(append(append([]byte(nil), valid...), valid...))
	f.Add([]byte("\xff\xfe{}"))
	f.Add([]byte(`{"procedure":"birth-registration","applicant":{"name":"` + strings.Repeat("Ễ", 200) + `","id_number":"079203000001"}}`))

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/dossiers", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		r := response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}

		if r.Status >= 500 {
			t.Fatalf("status %d for body %q: %s", r.Status, body, r.Body)
		}
		if r.Status != http.StatusCreated {
			if r.Status < 400 {
				t.Fatalf("status %d for body %q", r.Status, body)
			}
			if ae, bad := checkErrorShape(r); bad != "" {
				t.Fatalf("error body %s: %s", r.Body, bad)
			} else if r.Status == http.StatusBadRequest && ae.Code == "invalid_field" && ae.Field == "" {
				t.Fatalf("invalid_field names no field: %s", r.Body)
			}
			return
		}

		var d dossierJSON
		if err := json.Unmarshal(r.Body, &d); err != nil {
			t.Fatalf("201 body is not a dossier: %v: %s", err, r.Body)
		}
		if d.ID == "" || d.Status != "received" || len(d.History) != 1 || receiptRe.FindStringSubmatch(d.ReceiptNo) == nil {
			t.Fatalf("201 dossier %+v", d)
		}
		// What was stored passes validation, and is already normalized.
		in := schema.NewDossier{Procedure: d.Procedure, Applicant: d.Applicant, Fields: d.Fields, Ward: d.Ward}
		if err := in.Validate(catalog, wards); err != nil {
			t.Fatalf("stored dossier fails validation: %v\nbody %q", err, body)
		}
		norm := in
		norm.Normalize()
		if norm.Applicant != in.Applicant || norm.Procedure != in.Procedure || norm.Ward != in.Ward {
			t.Fatalf("stored applicant is not normalized: %+v, normalized %+v", in.Applicant, norm.Applicant)
		}
		// And it reads back the same.
		got, err := n.Dossier(d.ID)
		if err != nil || got.ReceiptNo != d.ReceiptNo || got.Applicant != d.Applicant {
			t.Fatalf("read back %s: %v %+v", d.ID, err, got)
		}
	})
}
