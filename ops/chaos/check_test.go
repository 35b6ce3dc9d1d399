package chaos

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The checker finds each kind of damage a replica may show.
func TestCheckReplicaFindsDamage(t *testing.T) {
	const ward = "HCM001"
	good := func() []dossier {
		d1 := dossier{ID: "D1", ReceiptNo: "HCM001-261201-W1-0001", Ward: ward, History: []event{
			{Op: "w1/1", Kind: "create"},
			{Op: "w1/2", Kind: "annotate", Text: "w1-clerk-1-HCM001-1"},
		}}
		d1.Applicant.IDNumber = "000000000001"
		d2 := dossier{ID: "D2", ReceiptNo: "HCM001-261201-W1-0002", Ward: ward, History: []event{{Op: "w1/3", Kind: "create"}}}
		d2.Applicant.IDNumber = "000000000002" // its create got no answer
		return []dossier{d1, d2}
	}
	cases := []struct {
		name   string
		damage func([]dossier) []dossier
		want   string // in the violation ("" = none)
	}{
		{"intact", func(ds []dossier) []dossier { return ds }, ""},
		{"an acknowledged dossier lost", func(ds []dossier) []dossier { return ds[1:] }, "an acknowledged dossier is missing"},
		{"an acknowledged op lost", func(ds []dossier) []dossier { ds[0].History = ds[0].History[:1]; return ds }, "an acknowledged op is missing"},
		{"an op applied twice", func(ds []dossier) []dossier { ds[0].History = append(ds[0].History, ds[0].History[1]); return ds }, "an op applied twice"},
		{"a write applied twice", func(ds []dossier) []dossier {
			ds[0].History = append(ds[0].History, event{Op: "w1/9", Kind: "annotate", Text: "w1-clerk-1-HCM001-1"})
			return ds
		}, "a write applied twice"},
		{"a refused write there", func(ds []dossier) []dossier {
			ds[0].History = append(ds[0].History, event{Op: "w1/9", Kind: "transition", Text: "w1-clerk-1-HCM001-2"})
			return ds
		}, "a refused write is there"},
		{"a receipt number changed", func(ds []dossier) []dossier { ds[0].ReceiptNo = "HCM001-261201-W1-0009"; return ds }, "another receipt number"},
		{"a receipt number twice", func(ds []dossier) []dossier { ds[1].ReceiptNo = ds[0].ReceiptNo; return ds }, "a receipt number given twice"},
		{"a dossier nobody asked for", func(ds []dossier) []dossier {
			x := dossier{ID: "D3", ReceiptNo: "HCM001-261201-W1-0003", Ward: ward, History: []event{{Op: "w1/4", Kind: "create"}}}
			x.Applicant.IDNumber = "999999999999"
			return append(ds, x)
		}, "a dossier no client asked for"},
		{"a create applied twice", func(ds []dossier) []dossier {
			x := ds[0]
			x.ID, x.ReceiptNo, x.History = "D4", "HCM001-261201-W1-0004", []event{{Op: "w1/5", Kind: "create"}}
			return append(ds, x)
		}, "a create applied twice"},
		{"an op in two dossiers", func(ds []dossier) []dossier { ds[1].History = append(ds[1].History, ds[0].History[1]); return ds }, "an op in two dossiers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds := c.damage(good())
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.URL.Path == "/v1/wards/"+ward+"/dossiers" {
					json.NewEncoder(w).Encode(map[string]any{"items": ds, "next_cursor": nil})
					return
				}
				for _, d := range ds {
					if r.URL.Path == "/v1/dossiers/"+d.ID {
						json.NewEncoder(w).Encode(d)
						return
					}
				}
				http.NotFound(w, r)
			}))
			defer srv.Close()
			d := &driver{log: slog.New(slog.DiscardHandler), t0: time.Now(), led: newLedger(), sum: newSummary(1, time.Second), ctx: context.Background()}
			// What the clients were told.
			created := good()[0]
			d.led.record(&request{node: "w1", ward: ward, kind: "create", tag: "000000000001"}, acked, "", &created, "")
			d.led.record(&request{node: "w1", ward: ward, kind: "note", tag: "w1-clerk-1-HCM001-1", dossier: "D1"}, acked, "", &created, "")
			d.led.record(&request{node: "w1", ward: ward, kind: "transition", tag: "w1-clerk-1-HCM001-2", dossier: "D1"}, refused, "409 transition_not_allowed", nil, "")
			d.led.record(&request{node: "w1", ward: ward, kind: "create", tag: "000000000002"}, unknown, "timeout", nil, "")
			rep := replica{name: "c1", api: &apiClient{base: func() string { return srv.URL }, hc: srv.Client()}, listPath: "/v1/wards/" + ward + "/dossiers"}
			if err := d.checkReplica(context.Background(), ward, rep, map[string]string{}); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(d.sum.Violations, "\n")
			switch {
			case c.want == "" && got != "":
				t.Fatalf("violations on an intact replica:\n%s", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Fatalf("want a violation with %q, got:\n%s", c.want, got)
			}
		})
	}
}

// TestFullAtCoversAnExitReapedJustAfterTheHeal: a process that died of its
// full disk is not a crash, even when its exit is noticed just after the
// filler was removed (seed 7000222: filled at 32.4 s, healed at 32.5 s,
// its exit reaped then); an exit well after the heal, or on another node,
// is one.
func TestFullAtCoversAnExitReapedJustAfterTheHeal(t *testing.T) {
	t0 := time.Now()
	d := &driver{windows: []diskWindow{
		{node: "c1", from: t0, to: t0.Add(100 * time.Millisecond)},
		{node: "w1", from: t0.Add(10 * time.Second)}, // still full
	}}
	cases := []struct {
		node string
		at   time.Duration
		want bool
	}{
		{"c1", 50 * time.Millisecond, true},
		{"c1", 600 * time.Millisecond, true},
		{"c1", 5 * time.Second, false},
		{"c1", -time.Second, false},
		{"c2", 50 * time.Millisecond, false},
		{"w1", 11 * time.Second, true},
		{"w1", 9 * time.Second, false},
	}
	for _, c := range cases {
		if got := d.fullAt(c.node, t0.Add(c.at)); got != c.want {
			t.Errorf("%s exiting at %s: disk full %v, want %v", c.node, c.at, got, c.want)
		}
	}
}
