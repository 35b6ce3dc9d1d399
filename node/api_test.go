package node_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/schema"
)

// A dossier's whole life over HTTP, with the roles a ward office has.
func TestDossierLifecycleHTTP(t *testing.T) {
	e := startNode(t)
	clerk, head, _ := e.officials()
	clerk2 := e.addOfficial(schema.RoleClerk, "Võ Văn Em")

	// Create, as the clerk.
	body := newDossierBody("judicial-record-certificate", 1)
	res := e.call("POST", "/v1/dossiers", clerk.Token, body).want(t, http.StatusCreated)
	var d dossierJSON
	res.decode(t, &d)
	if loc := res.Header.Get("Location"); loc != "/v1/dossiers/"+d.ID {
		t.Errorf("Location %q, want /v1/dossiers/%s", loc, d.ID)
	}
	m := receiptRe.FindStringSubmatch(d.ReceiptNo)
	if m == nil {
		t.Fatalf("receipt_no %q is not WARD-YYMMDD-SERIES-NNNN", d.ReceiptNo)
	}
	if m[1] != e.Ward || m[2] != testStart.Format("060102") || m[3] != e.Series || m[4] != "0001" {
		t.Errorf("receipt_no %q: want ward %s, date %s, series %s, counter 0001", d.ReceiptNo, e.Ward, testStart.Format("060102"), e.Series)
	}
	if d.Status != "received" || d.Ward != e.Ward || d.Procedure != "judicial-record-certificate" || d.Origin != testNodeID {
		t.Errorf("new dossier %+v", d)
	}
	received, due := parseTime(t, d.ReceivedAt), parseTime(t, d.DueAt)
	if !due.After(received) {
		t.Errorf("due_at %s is not after received_at %s", d.DueAt, d.ReceivedAt)
	}
	// 10 working days from Tue 10 March 2026: due at the end of Tue 24 March.
	if want := time.Date(2026, 3, 24, 23, 59, 59, 0, schema.CityZone); !due.Equal(want) {
		t.Errorf("due_at %s, want %s", due, want)
	}
	if d.Applicant.Name != "Nguyễn Văn An I" || d.Applicant.IDNumber != "079203000001" || d.Applicant.Phone != "0909123456" {
		t.Errorf("applicant %+v (phone should be normalized)", d.Applicant)
	}
	if d.Assignee != nil || d.CompletedAt != nil || d.Overdue || len(d.Conflicts) != 0 || d.StateHash == "" {
		t.Errorf("new dossier %+v", d)
	}
	if len(d.History) != 1 || d.History[0].Kind != "create" || d.History[0].To != "received" {
		t.Fatalf("history %+v, want one create event", d.History)
	}
	if d.CreatedBy.ID != clerk.ID || d.CreatedBy.Role != schema.RoleClerk || d.History[0].Actor.ID != clerk.ID {
		t.Errorf("actor %+v / %+v, want the authenticated clerk %s", d.CreatedBy, d.History[0].Actor, clerk.ID)
	}

	// The actor is never the client's to say.
	for _, field := range []string{"actor", "created_by"} {
		b := newDossierBody("judicial-record-certificate", 2)
		b[field] = map[string]string{"id": "admin", "role": "admin"}
		e.call("POST", "/v1/dossiers", clerk.Token, b).wantError(t, http.StatusBadRequest, "invalid_field", field)
	}
	if seq := lastSeq(t, e.Node); seq != 1 {
		t.Fatalf("LastSeq %d after rejected creates, want 1", seq)
	}

	// A move outside the workflow: 409, listing what the clerk may do.
	ae := e.call("POST", "/v1/dossiers/"+d.ID+"/transitions", clerk.Token, map[string]string{"to": "approved"}).
		wantError(t, http.StatusConflict, "transition_not_allowed", "")
	if !slices.Equal(ae.Allowed, []string{"in_review", "withdrawn"}) {
		t.Errorf("allowed %v, want [in_review withdrawn]", ae.Allowed)
	}

	e.transition(clerk.Token, d.ID, "in_review")
	e.transition(clerk.Token, d.ID, "supplement_requested")
	e.transition(clerk.Token, d.ID, "in_review")

	// A clerk may not decide: 403, and the dossier stays in review.
	ae = e.call("POST", "/v1/dossiers/"+d.ID+"/transitions", clerk.Token, map[string]string{"to": "approved"}).
		wantError(t, http.StatusForbidden, "role_not_allowed", "")
	if !slices.Equal(ae.Allowed, []string{"supplement_requested", "withdrawn"}) {
		t.Errorf("allowed for a clerk in review %v", ae.Allowed)
	}
	if got := e.getDossier(clerk.Token, d.ID); got.Status != "in_review" {
		t.Fatalf("status %s after a refused approval", got.Status)
	}

	// Assignment: a clerk only to themselves, a head to anyone.
	e.call("POST", "/v1/dossiers/"+d.ID+"/assign", clerk.Token, map[string]string{"official": clerk2.ID}).
		wantError(t, http.StatusForbidden, "forbidden", "")
	var a dossierJSON
	e.call("POST", "/v1/dossiers/"+d.ID+"/assign", clerk.Token, map[string]string{"official": clerk.ID}).
		want(t, http.StatusOK).decode(t, &a)
	if a.Assignee == nil || *a.Assignee != clerk.ID || a.AssigneeName != clerk.Name {
		t.Errorf("assignee %v %q, want %s", a.Assignee, a.AssigneeName, clerk.ID)
	}
	e.call("POST", "/v1/dossiers/"+d.ID+"/assign", head.Token, map[string]string{"official": clerk2.ID}).
		want(t, http.StatusOK).decode(t, &a)
	if a.Assignee == nil || *a.Assignee != clerk2.ID {
		t.Errorf("assignee %v, want %s", a.Assignee, clerk2.ID)
	}
	e.call("POST", "/v1/dossiers/"+d.ID+"/assign", head.Token, map[string]string{"official": "off-nobody"}).
		wantError(t, http.StatusBadRequest, "invalid_field", "official")

	// A note.
	var nd dossierJSON
	e.call("POST", "/v1/dossiers/"+d.ID+"/notes", clerk2.Token, map[string]string{"text": "Thiếu bản sao CCCD\nđã gọi điện"}).
		want(t, http.StatusOK).decode(t, &nd)
	if last := nd.History[len(nd.History)-1]; last.Kind != "annotate" || last.Text != "Thiếu bản sao CCCD\nđã gọi điện" || last.Actor.ID != clerk2.ID {
		t.Errorf("note event %+v", last)
	}

	// The head decides; a clerk returns the result.
	approved := e.transition(head.Token, d.ID, "approved")
	if approved.CompletedAt == nil {
		t.Error("approved dossier has no completed_at")
	}
	// Assigning a decided dossier is a conflict.
	e.call("POST", "/v1/dossiers/"+d.ID+"/assign", head.Token, map[string]string{"official": clerk.ID}).
		wantError(t, http.StatusConflict, "conflict", "")
	final := e.transition(clerk.Token, d.ID, "returned")
	if final.CompletedAt == nil || *final.CompletedAt != *approved.CompletedAt {
		t.Errorf("completed_at %v after return, want the approval time %s", final.CompletedAt, *approved.CompletedAt)
	}
	// Nothing follows returned.
	ae = e.call("POST", "/v1/dossiers/"+d.ID+"/transitions", head.Token, map[string]string{"to": "in_review"}).
		wantError(t, http.StatusConflict, "transition_not_allowed", "")
	if ae.Allowed == nil || len(ae.Allowed) != 0 {
		t.Errorf("allowed from returned = %v; want an empty list", ae.Allowed)
	}
	var raw map[string]map[string]json.RawMessage
	e.call("POST", "/v1/dossiers/"+d.ID+"/transitions", head.Token, map[string]string{"to": "in_review"}).decode(t, &raw)
	if string(raw["error"]["allowed"]) != "[]" {
		t.Errorf(`409 from a final status should say "allowed":[], got %s`, raw["error"]["allowed"])
	}

	// History, in order, each event by whoever did it.
	var h struct {
		ID    string      `json:"id"`
		Items []eventJSON `json:"items"`
	}
	e.call("GET", "/v1/dossiers/"+d.ID+"/history", clerk.Token, nil).want(t, http.StatusOK).decode(t, &h)
	type step struct{ kind, to, actor string }
	want := []step{
		{"create", "received", clerk.ID},
		{"transition", "in_review", clerk.ID},
		{"transition", "supplement_requested", clerk.ID},
		{"transition", "in_review", clerk.ID},
		{"assign", "", clerk.ID},
		{"assign", "", head.ID},
		{"annotate", "", clerk2.ID},
		{"transition", "approved", head.ID},
		{"transition", "returned", clerk.ID},
	}
	if h.ID != d.ID || len(h.Items) != len(want) {
		t.Fatalf("history of %s has %d events, want %d: %+v", h.ID, len(h.Items), len(want), h.Items)
	}
	for i, w := range want {
		got := h.Items[i]
		if got.Kind != w.kind || got.To != w.to || got.Actor.ID != w.actor || got.Conflict {
			t.Errorf("event %d = %+v, want %+v", i, got, w)
		}
		if i > 0 && parseTime(t, got.At).Before(parseTime(t, h.Items[i-1].At)) {
			t.Errorf("event %d is earlier than event %d", i, i-1)
		}
	}
	if lastSeq(t, e.Node) != uint64(len(want)) {
		t.Errorf("LastSeq %d, want %d (one op per accepted change)", lastSeq(t, e.Node), len(want))
	}

	// Withdrawal from review.
	w := e.createDossier(clerk.Token, "residence-confirmation", 3)
	if m := receiptRe.FindStringSubmatch(w.ReceiptNo); m == nil || m[4] != "0002" {
		t.Errorf("second receipt %q, want counter 0002", w.ReceiptNo)
	}
	e.transition(clerk.Token, w.ID, "in_review")
	wd := e.transition(clerk.Token, w.ID, "withdrawn")
	if wd.CompletedAt != nil {
		t.Errorf("a withdrawn dossier is not decided, completed_at %v", *wd.CompletedAt)
	}

	// Everything survives a restart, byte for byte.
	before := e.getDossier(e.Admin, d.ID)
	beforeW := e.getDossier(e.Admin, w.ID)
	e.reopen()
	after := e.getDossier(e.Admin, d.ID)
	if after.StateHash != before.StateHash || after.ReceiptNo != d.ReceiptNo || after.Status != "returned" {
		t.Errorf("after reopen: hash %s status %s, want %s returned", after.StateHash, after.Status, before.StateHash)
	}
	if got := e.getDossier(clerk.Token, w.ID); got.StateHash != beforeW.StateHash {
		t.Errorf("withdrawn dossier's hash changed across reopen")
	}
	// And the node goes on numbering after a restart.
	again := e.createDossier(clerk.Token, "birth-registration", 4)
	if m := receiptRe.FindStringSubmatch(again.ReceiptNo); m == nil || m[4] != "0003" {
		t.Errorf("receipt after reopen %q, want counter 0003", again.ReceiptNo)
	}
}

// GET /v1/dossiers: filters and cursor pagination.
func TestListFiltersAndPagination(t *testing.T) {
	e := startNode(t)
	clerk, head, _ := e.officials()
	procs := []string{"birth-registration", "residence-confirmation", "judicial-record-certificate"}

	const total = 25
	var created []dossierJSON // in creation order
	for i := range total {
		created = append(created, e.createDossier(clerk.Token, procs[i%3], i))
	}
	inReview := map[string]bool{}
	assigned := map[string]bool{}
	for i, d := range created {
		if i%4 == 0 {
			e.transition(clerk.Token, d.ID, "in_review")
			inReview[d.ID] = true
		}
		if i%5 == 0 {
			e.call("POST", "/v1/dossiers/"+d.ID+"/assign", head.Token, map[string]string{"official": clerk.ID}).want(t, http.StatusOK)
			assigned[d.ID] = true
		}
	}
	// One dossier received here for another ward is not this ward's.
	other := newDossierBody("birth-registration", 99)
	other["ward"] = otherWard()
	var od dossierJSON
	e.call("POST", "/v1/dossiers", clerk.Token, other).want(t, http.StatusCreated).decode(t, &od)
	if od.Ward != otherWard() || !strings.HasPrefix(od.ReceiptNo, e.Ward+"-") {
		t.Errorf("dossier for another ward: ward %s receipt %s (the receipt carries the issuing ward)", od.Ward, od.ReceiptNo)
	}

	newestFirst := slices.Clone(ids(created))
	slices.Reverse(newestFirst)

	// Paging by 10: every dossier exactly once, newest first, 10+10+5.
	var pages []int
	cursor := ""
	var seen []string
	for {
		path := "/v1/dossiers?limit=10"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		res := e.call("GET", path, clerk.Token, nil).want(t, http.StatusOK)
		var l listJSON
		res.decode(t, &l)
		pages = append(pages, len(l.Items))
		seen = append(seen, ids(l.Items)...)
		for _, it := range l.Items {
			if it.History != nil || it.StateHash != "" {
				t.Errorf("list items should be summaries, got history/state_hash for %s", it.ID)
			}
		}
		if l.NextCursor == nil {
			if !strings.Contains(string(res.Body), `"next_cursor":null`) {
				t.Errorf("last page: next_cursor is not null: %s", res.Body)
			}
			break
		}
		cursor = *l.NextCursor
		if len(pages) > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if !slices.Equal(pages, []int{10, 10, 5}) {
		t.Errorf("page sizes %v, want [10 10 5]", pages)
	}
	if !slices.Equal(seen, newestFirst) {
		t.Errorf("paged listing\n got %v\nwant %v", seen, newestFirst)
	}

	filter := func(keep func(i int, d dossierJSON) bool) []string {
		var out []string
		for i := len(created) - 1; i >= 0; i-- {
			if keep(i, created[i]) {
				out = append(out, created[i].ID)
			}
		}
		return out
	}
	cases := []struct {
		query string
		want  []string
	}{
		{"status=in_review", filter(func(_ int, d dossierJSON) bool { return inReview[d.ID] })},
		{"status=received", filter(func(_ int, d dossierJSON) bool { return !inReview[d.ID] })},
		{"status=approved", nil},
		{"procedure=residence-confirmation", filter(func(i int, _ dossierJSON) bool { return i%3 == 1 })},
		{"assignee=" + clerk.ID, filter(func(_ int, d dossierJSON) bool { return assigned[d.ID] })},
		{"assignee=" + head.ID, nil},
		{"status=received&procedure=birth-registration", filter(func(i int, d dossierJSON) bool { return !inReview[d.ID] && i%3 == 0 })},
		{"status=in_review&assignee=" + clerk.ID, filter(func(_ int, d dossierJSON) bool { return inReview[d.ID] && assigned[d.ID] })},
		{"overdue=true", nil}, // nothing is late yet
		{"overdue=false", newestFirst},
		{"ward=" + otherWard(), []string{od.ID}},
	}
	for _, c := range cases {
		for _, limit := range []int{3, 500} {
			got := ids(e.listAll(clerk.Token, c.query, limit))
			if !slices.Equal(got, c.want) {
				t.Errorf("%s (limit %d):\n got %v\nwant %v", c.query, limit, got, c.want)
			}
		}
	}

	// The default limit is 50.
	var l listJSON
	e.call("GET", "/v1/dossiers", clerk.Token, nil).want(t, http.StatusOK).decode(t, &l)
	if len(l.Items) != total || l.NextCursor != nil {
		t.Errorf("default listing: %d items, next %v", len(l.Items), l.NextCursor)
	}

	// Cursors: garbage, and one from another listing, are refused.
	e.call("GET", "/v1/dossiers?limit=10&cursor=%21%21garbage%21%21", clerk.Token, nil).wantError(t, http.StatusBadRequest, "", "cursor")
	e.call("GET", "/v1/dossiers?limit=10&cursor=AAAA", clerk.Token, nil).wantError(t, http.StatusBadRequest, "", "cursor")
	e.call("GET", "/v1/dossiers?status=received&limit=2", clerk.Token, nil).want(t, http.StatusOK).decode(t, &l)
	if l.NextCursor == nil {
		t.Fatal("status=received&limit=2 has no next page")
	}
	e.call("GET", "/v1/dossiers?status=in_review&limit=2&cursor="+*l.NextCursor, clerk.Token, nil).
		wantError(t, http.StatusBadRequest, "", "cursor")
}

// overdue=true lists open dossiers past their due time, most overdue first;
// the node's clock is what decides.
func TestListOverdue(t *testing.T) {
	e := startNode(t)
	clerk, head, _ := e.officials()

	// Tue 10 March 2026. birth-registration is same-day (due end of Tue),
	// residence-confirmation 1 working day (end of Wed), judicial-record
	// 10 working days (end of Tue 24 March).
	same1 := e.createDossier(clerk.Token, "birth-registration", 1)
	res1 := e.createDossier(clerk.Token, "residence-confirmation", 2)
	long1 := e.createDossier(clerk.Token, "judicial-record-certificate", 3)
	same2 := e.createDossier(clerk.Token, "birth-registration", 4)
	decided := e.createDossier(clerk.Token, "birth-registration", 5)
	withdrawn := e.createDossier(clerk.Token, "birth-registration", 6)
	review := e.createDossier(clerk.Token, "birth-registration", 7)
	e.transition(clerk.Token, decided.ID, "in_review")
	e.transition(head.Token, decided.ID, "approved")
	e.transition(clerk.Token, withdrawn.ID, "withdrawn")
	e.transition(clerk.Token, review.ID, "in_review")
	e.transition(clerk.Token, review.ID, "supplement_requested")

	overdue := func() []string { return ids(e.listAll(clerk.Token, "overdue=true", 2)) }
	if got := overdue(); len(got) != 0 {
		t.Fatalf("overdue on the day of receipt: %v", got)
	}

	// Wednesday noon: the same-day dossiers still open are late.
	e.clock.Advance(27 * time.Hour)
	got := overdue()
	want := []string{same1.ID, same2.ID, review.ID}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("overdue on Wednesday %v, want %v", got, want)
	}
	if d := e.getDossier(clerk.Token, same1.ID); !d.Overdue {
		t.Error("an overdue dossier does not say overdue:true")
	}
	if d := e.getDossier(clerk.Token, decided.ID); d.Overdue {
		t.Error("a decided dossier says overdue:true")
	}

	// Thursday: the one-day procedure joins, sorted by due time.
	e.clock.Advance(24 * time.Hour)
	got = overdue()
	if len(got) != 4 || got[3] != res1.ID {
		t.Errorf("overdue on Thursday %v, want the 3 same-day ones then %s", got, res1.ID)
	}
	// Filters combine with overdue.
	if got := ids(e.listAll(clerk.Token, "overdue=true&procedure=residence-confirmation", 10)); !slices.Equal(got, []string{res1.ID}) {
		t.Errorf("overdue residence-confirmation %v", got)
	}
	if got := ids(e.listAll(clerk.Token, "overdue=true&status=supplement_requested", 10)); !slices.Equal(got, []string{review.ID}) {
		t.Errorf("overdue supplement_requested %v", got)
	}

	// Moving on does not clear lateness; finishing does.
	e.transition(clerk.Token, same1.ID, "withdrawn")
	// A month later everything still open is late, and the node says so
	// after a restart too.
	e.clock.Advance(30 * 24 * time.Hour)
	e.reopen()
	got = overdue()
	want = []string{same2.ID, review.ID, res1.ID, long1.ID}
	if !slices.Equal(got, want) {
		t.Errorf("overdue a month later %v, want %v (by due time)", got, want)
	}
}

// GET /v1/stats: counts per status and on-time rate per procedure.
func TestStats(t *testing.T) {
	e := startNode(t)
	clerk, head, _ := e.officials()

	a := e.createDossier(clerk.Token, "residence-confirmation", 1) // approved on time, then returned
	b := e.createDossier(clerk.Token, "residence-confirmation", 2) // approved late
	c := e.createDossier(clerk.Token, "certified-copy", 3)         // rejected on time (same day)
	e.createDossier(clerk.Token, "birth-registration", 4)          // still received: overdue later
	w := e.createDossier(clerk.Token, "residence-confirmation", 5) // withdrawn
	for _, d := range []dossierJSON{a, b, c} {
		e.transition(clerk.Token, d.ID, "in_review")
	}
	e.transition(head.Token, a.ID, "approved")
	e.transition(clerk.Token, a.ID, "returned")
	e.transition(head.Token, c.ID, "rejected")
	e.transition(clerk.Token, w.ID, "withdrawn")

	type procStat struct {
		Code       string   `json:"code"`
		Decided    int64    `json:"decided"`
		OnTime     int64    `json:"on_time"`
		OnTimeRate *float64 `json:"on_time_rate"`
	}
	type stats struct {
		Ward       string           `json:"ward"`
		Total      int64            `json:"total"`
		ByStatus   map[string]int64 `json:"by_status"`
		Overdue    int              `json:"overdue"`
		Procedures []procStat       `json:"procedures"`
	}
	get := func(query string) (stats, map[string]procStat) {
		t.Helper()
		var s stats
		e.call("GET", "/v1/stats"+query, clerk.Token, nil).want(t, http.StatusOK).decode(t, &s)
		byCode := map[string]procStat{}
		for _, p := range s.Procedures {
			byCode[p.Code] = p
		}
		if len(byCode) != len(e.Node.Catalog().All()) {
			t.Errorf("stats list %d procedures, the catalog has %d", len(byCode), len(e.Node.Catalog().All()))
		}
		return s, byCode
	}
	checkRate := func(p procStat, decided, onTime int64) {
		t.Helper()
		if p.Decided != decided || p.OnTime != onTime {
			t.Errorf("%s: decided %d on_time %d, want %d %d", p.Code, p.Decided, p.OnTime, decided, onTime)
		}
		switch {
		case decided == 0 && p.OnTimeRate != nil:
			t.Errorf("%s: on_time_rate %v with nothing decided, want null", p.Code, *p.OnTimeRate)
		case decided > 0 && (p.OnTimeRate == nil || *p.OnTimeRate != float64(onTime)/float64(decided)):
			t.Errorf("%s: on_time_rate %v, want %v", p.Code, p.OnTimeRate, float64(onTime)/float64(decided))
		}
	}

	s, procs := get("")
	if s.Ward != e.Ward || s.Total != 5 || s.Overdue != 0 {
		t.Errorf("stats %+v", s)
	}
	checkRate(procs["residence-confirmation"], 1, 1)
	checkRate(procs["certified-copy"], 1, 1)

	// Five days later (Sunday): b is approved late, and the open same-day
	// dossier is overdue.
	e.clock.Advance(5 * 24 * time.Hour)
	e.transition(head.Token, b.ID, "approved")

	s, procs = get("")
	wantStatus := map[string]int64{
		"received": 1, "in_review": 0, "supplement_requested": 0,
		"approved": 1, "rejected": 1, "returned": 1, "withdrawn": 1,
	}
	if len(s.ByStatus) != len(wantStatus) {
		t.Errorf("by_status %v, want every status: %v", s.ByStatus, wantStatus)
	}
	for st, n := range wantStatus {
		if s.ByStatus[st] != n {
			t.Errorf("by_status[%s] = %d, want %d", st, s.ByStatus[st], n)
		}
	}
	if s.Total != 5 || s.Overdue != 1 {
		t.Errorf("total %d overdue %d, want 5 and 1", s.Total, s.Overdue)
	}
	checkRate(procs["residence-confirmation"], 2, 1)
	if r := procs["residence-confirmation"].OnTimeRate; r == nil || *r != 0.5 {
		t.Errorf("residence-confirmation on_time_rate %v, want 0.5", r)
	}
	checkRate(procs["certified-copy"], 1, 1)
	checkRate(procs["birth-registration"], 0, 0)
	checkRate(procs["construction-permit"], 0, 0)

	// The counters are durable.
	e.reopen()
	s2, procs2 := get("")
	if s2.Total != s.Total || s2.Overdue != s.Overdue || procs2["residence-confirmation"] != procs["residence-confirmation"] {
		t.Errorf("stats changed across reopen: %+v -> %+v", s, s2)
	}

	// Another ward's stats are its own (all zero here).
	s, procs = get("?ward=" + otherWard())
	if s.Ward != otherWard() || s.Total != 0 || s.Overdue != 0 || procs["residence-confirmation"].Decided != 0 {
		t.Errorf("other ward's stats %+v", s)
	}
}

// GET /healthz and /metrics need no token; /metrics is Prometheus text.
func TestHealthAndMetrics(t *testing.T) {
	e := startNode(t)
	e.createDossier(e.Admin, "birth-registration", 1)

	var h map[string]any
	e.call("GET", "/healthz", "", nil).want(t, http.StatusOK).decode(t, &h)
	if h["status"] != "ok" || h["node"] != testNodeID || h["ward"] != e.Ward {
		t.Errorf("healthz %v", h)
	}
	res := e.call("GET", "/metrics", "", nil).want(t, http.StatusOK)
	for _, want := range []string{
		`wardsync_dossiers{status="received"} 1`,
		`wardsync_ops_written_total{kind="create"} 1`,
		`wardsync_store_commits_total`,
		`wardsync_http_requests_total{code="201",route="POST /v1/dossiers"} 1`,
	} {
		if !strings.Contains(string(res.Body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	var me struct {
		Official officialJSON `json:"official"`
		Node     string       `json:"node"`
		Ward     string       `json:"ward"`
	}
	e.call("GET", "/v1/me", e.Admin, nil).want(t, http.StatusOK).decode(t, &me)
	if me.Official.ID != "admin" || me.Official.Role != "admin" || me.Official.Token != "" || me.Node != testNodeID {
		t.Errorf("/v1/me %+v", me)
	}

	var procs struct {
		Items []struct {
			Code           string `json:"code"`
			NameVI         string `json:"name_vi"`
			NameEN         string `json:"name_en"`
			ProcessingDays *int   `json:"processing_days"`
		} `json:"items"`
	}
	e.call("GET", "/v1/procedures", e.Admin, nil).want(t, http.StatusOK).decode(t, &procs)
	if len(procs.Items) < 10 {
		t.Fatalf("%d procedures", len(procs.Items))
	}
	for _, p := range procs.Items {
		if p.Code == "" || p.NameVI == "" || p.NameEN == "" || p.ProcessingDays == nil {
			t.Errorf("procedure %+v", p)
		}
	}
}

// Officials: only an admin adds them; tokens work at once and are stored
// only as SHA-256 hashes.
func TestOfficials(t *testing.T) {
	e := startNode(t)
	listOfficials := func() []byte {
		t.Helper()
		return e.call("GET", "/v1/officials", e.Admin, nil).want(t, http.StatusOK).Body
	}
	before := listOfficials()
	if strings.Contains(string(before), "token") {
		t.Errorf("GET /v1/officials shows tokens: %s", before)
	}

	var clerk officialJSON
	e.call("POST", "/v1/officials", e.Admin, map[string]string{"name": "  Trần Thị Bình ", "role": "clerk"}).
		want(t, http.StatusCreated).decode(t, &clerk)
	if !strings.HasPrefix(clerk.ID, "off-") || clerk.Name != "Trần Thị Bình" || clerk.Role != "clerk" || !strings.HasPrefix(clerk.Token, "wst_") {
		t.Fatalf("new clerk %+v", clerk)
	}
	if parseTime(t, clerk.CreatedAt).IsZero() {
		t.Error("created_at is zero")
	}
	var named officialJSON
	e.call("POST", "/v1/officials", e.Admin, map[string]string{"id": "head-01", "name": "Lê Văn Cường", "role": "head"}).
		want(t, http.StatusCreated).decode(t, &named)
	if named.ID != "head-01" {
		t.Errorf("official with a chosen id got %q", named.ID)
	}

	// The new token works at once.
	var me struct {
		Official officialJSON `json:"official"`
	}
	e.call("GET", "/v1/me", clerk.Token, nil).want(t, http.StatusOK).decode(t, &me)
	if me.Official.ID != clerk.ID || me.Official.Role != "clerk" {
		t.Errorf("/v1/me as the new clerk: %+v", me.Official)
	}
	d := e.createDossier(clerk.Token, "birth-registration", 1)
	if d.CreatedBy.ID != clerk.ID {
		t.Errorf("created_by %+v, want %s", d.CreatedBy, clerk.ID)
	}

	// A clerk or a head cannot add anyone, and nothing is written.
	mid := listOfficials()
	seq, commits := lastSeq(t, e.Node), e.Node.Store().Commits()
	for _, tok := range []string{clerk.Token, named.Token} {
		e.call("POST", "/v1/officials", tok, map[string]string{"id": "sneaky", "name": "Kẻ Gian", "role": "admin"}).
			wantError(t, http.StatusForbidden, "forbidden", "")
		e.call("GET", "/v1/officials", tok, nil).wantError(t, http.StatusForbidden, "forbidden", "")
	}
	if after := listOfficials(); string(after) != string(mid) || strings.Contains(string(after), "sneaky") {
		t.Errorf("officials changed after refused adds:\n%s\n%s", mid, after)
	}
	if lastSeq(t, e.Node) != seq || e.Node.Store().Commits() != commits {
		t.Error("a refused official add wrote to the store")
	}
	// An admin made through the API can add officials too.
	admin2 := e.addOfficial(schema.RoleAdmin, "Phạm Thị Dung")
	marker := "Đỗ Văn Marker-" + strings.ToUpper(admin2.ID)
	clerk3 := e.call("POST", "/v1/officials", admin2.Token, map[string]string{"name": marker, "role": "clerk"}).want(t, http.StatusCreated)
	var c3 officialJSON
	clerk3.decode(t, &c3)

	var all struct {
		Items []officialJSON `json:"items"`
	}
	e.call("GET", "/v1/officials", e.Admin, nil).want(t, http.StatusOK).decode(t, &all)
	var got []string
	for _, o := range all.Items {
		got = append(got, o.ID)
		if o.Token != "" {
			t.Errorf("GET /v1/officials shows %s's token", o.ID)
		}
	}
	wantIDs := []string{"admin", admin2.ID, clerk.ID, c3.ID, "head-01"}
	slices.Sort(wantIDs)
	if !slices.Equal(got, wantIDs) {
		t.Errorf("officials %v, want %v (in id order)", got, wantIDs)
	}

	// Tokens are stored as their SHA-256 only.
	tokens := map[string]string{"admin": e.Admin, clerk.ID: clerk.Token, "head-01": named.Token, admin2.ID: admin2.Token, c3.ID: c3.Token}
	checkTokensHashed(t, e, tokens, marker)
}
