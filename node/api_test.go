package node_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardsync/wardsync/node"
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
	if r1, r2 := procs["residence-confirmation"], procs2["residence-confirmation"]; s2.Total != s.Total || s2.Overdue != s.Overdue ||
		r1.Decided != r2.Decided || r1.OnTime != r2.OnTime || *r1.OnTimeRate != *r2.OnTimeRate {
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
	// The auth scheme is case-insensitive.
	e.call("GET", "/v1/me", "", nil, withHeader("Authorization", "bearer "+e.Admin)).want(t, http.StatusOK)

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

// Bad input, for every endpoint: each gets a clear 4xx with the JSON error
// shape, a bad field is named, and the store is exactly as it was.
func TestBadInput(t *testing.T) {
	e := startNode(t)
	clerk, head, _ := e.officials()
	d1 := e.createDossier(clerk.Token, "birth-registration", 1) // received
	d2 := e.createDossier(clerk.Token, "residence-confirmation", 2)
	e.transition(clerk.Token, d2.ID, "in_review")
	unknownID := ulid.Make().String()

	// Everything a bad request could change.
	type snapshot struct {
		seq, commits, writes    uint64
		list, officials, d1, d2 string
		stats, statsOther       string
	}
	snap := func() snapshot {
		t.Helper()
		get := func(path string) string {
			return string(e.call("GET", path, e.Admin, nil).want(t, http.StatusOK).Body)
		}
		return snapshot{
			seq: lastSeq(t, e.Node), commits: e.Node.Store().Commits(), writes: e.Node.Store().WritesCommitted(),
			list: get("/v1/dossiers?limit=500"), officials: get("/v1/officials"),
			d1: get("/v1/dossiers/" + d1.ID), d2: get("/v1/dossiers/" + d2.ID),
			stats: get("/v1/stats"), statsOther: get("/v1/stats?ward=" + otherWard()),
		}
	}
	before := snap()

	type tc struct {
		name   string
		method string
		path   string
		token  string
		body   any // nil: none; string: raw; else JSON
		opts   []reqOpt
		status int
		code   string
		field  string
	}
	var cases []tc

	// Every authenticated endpoint refuses a missing or wrong token.
	endpoints := []struct{ method, path string }{
		{"GET", "/v1/dossiers"},
		{"POST", "/v1/dossiers"},
		{"GET", "/v1/dossiers/" + d1.ID},
		{"GET", "/v1/dossiers/" + d1.ID + "/history"},
		{"POST", "/v1/dossiers/" + d1.ID + "/transitions"},
		{"POST", "/v1/dossiers/" + d1.ID + "/assign"},
		{"POST", "/v1/dossiers/" + d1.ID + "/notes"},
		{"POST", "/v1/dossiers/" + d1.ID + "/resolve"},
		{"GET", "/v1/procedures"},
		{"GET", "/v1/officials"},
		{"POST", "/v1/officials"},
		{"GET", "/v1/me"},
		{"GET", "/v1/stats"},
		{"GET", "/v1/admin/backup"},
	}
	validBody := map[string]any{
		"/v1/dossiers":                           newDossierBody("birth-registration", 9),
		"/v1/dossiers/" + d1.ID + "/transitions": map[string]string{"to": "in_review"},
		"/v1/dossiers/" + d1.ID + "/assign":      map[string]string{"official": clerk.ID},
		"/v1/dossiers/" + d1.ID + "/notes":       map[string]string{"text": "ghi chú"},
		"/v1/dossiers/" + d1.ID + "/resolve":     map[string]string{"conflict": testNodeID + "/1"},
		"/v1/officials":                          map[string]string{"name": "Kẻ Gian", "role": "admin"},
	}
	for _, ep := range endpoints {
		var body any
		if ep.method == "POST" {
			body = validBody[ep.path]
		}
		auths := map[string]reqOpt{
			"no Authorization":     withoutHeader("Authorization"),
			"empty bearer":         withHeader("Authorization", "Bearer "),
			"basic auth":           withHeader("Authorization", "Basic YWRtaW46YWRtaW4="),
			"token without bearer": withHeader("Authorization", e.Admin),
			"unknown token":        withHeader("Authorization", "Bearer wst_"+strings.Repeat("A", 43)),
			"not a token":          withHeader("Authorization", "Bearer hunter2"),
			"token cut short":      withHeader("Authorization", "Bearer "+e.Admin[:len(e.Admin)-1]),
		}
		for name, opt := range auths {
			cases = append(cases, tc{name: ep.method + " " + ep.path + ": " + name, method: ep.method, path: ep.path,
				body: body, opts: []reqOpt{opt}, status: http.StatusUnauthorized, code: "unauthorized"})
		}
	}

	// Malformed bodies, for every endpoint that takes one.
	bodyEndpoints := []struct {
		path      string
		token     string
		valid     string // a valid body, as JSON
		wrongType string // a body with a field of the wrong JSON type
		typeField string
	}{
		{"/v1/dossiers", clerk.Token, `{"procedure":"birth-registration","applicant":{"name":"Ngô Thị Lan","id_number":"079203000009"}}`,
			`{"procedure":5,"applicant":{"name":"Ngô Thị Lan","id_number":"079203000009"}}`, "procedure"},
		{"/v1/dossiers/" + d1.ID + "/transitions", clerk.Token, `{"to":"in_review"}`, `{"to":5}`, "to"},
		{"/v1/dossiers/" + d1.ID + "/assign", clerk.Token, `{"official":"` + clerk.ID + `"}`, `{"official":true}`, "official"},
		{"/v1/dossiers/" + d1.ID + "/notes", clerk.Token, `{"text":"ghi chú"}`, `{"text":["a"]}`, "text"},
		{"/v1/dossiers/" + d1.ID + "/resolve", head.Token, `{"conflict":"w1a/1"}`, `{"conflict":1}`, "conflict"},
		{"/v1/officials", e.Admin, `{"name":"Kẻ Gian","role":"clerk"}`, `{"name":{"first":"Kẻ"},"role":"clerk"}`, "name"},
	}
	big := strings.Repeat("a", node.MaxBodyBytes)
	for _, ep := range bodyEndpoints {
		add := func(name string, body any, opts []reqOpt, status int, code, field string) {
			cases = append(cases, tc{name: "POST " + ep.path + ": " + name, method: "POST", path: ep.path, token: ep.token,
				body: body, opts: opts, status: status, code: code, field: field})
		}
		withField := ep.valid[:len(ep.valid)-1] + `,`
		add("truncated JSON", ep.valid[:len(ep.valid)-3], nil, 400, "malformed_json", "")
		add("syntax error", `{"to" "x"}`, nil, 400, "malformed_json", "")
		add("single quotes", `{'text':'x'}`, nil, 400, "malformed_json", "")
		add("empty body", "", nil, 400, "invalid", "")
		add("whitespace body", " \n\t ", nil, 400, "invalid", "")
		add("two objects", ep.valid+ep.valid, nil, 400, "invalid", "")
		add("trailing garbage", ep.valid+" x", nil, 400, "invalid", "")
		add("trailing comma", ep.valid+",", nil, 400, "invalid", "")
		add("unknown field", withField+`"actor":{"id":"admin","role":"admin"}}`, nil, 400, "invalid_field", "actor")
		add("client-set created_by", withField+`"created_by":"admin"}`, nil, 400, "invalid_field", "created_by")
		add("misspelled field", withField+`"Note_":"x"}`, nil, 400, "invalid_field", "Note_")
		add("wrong type", ep.wrongType, nil, 400, "invalid_field", ep.typeField)
		add("array", `[`+ep.valid+`]`, nil, 400, "", "")
		add("string", `"hello"`, nil, 400, "", "")
		add("number", `42`, nil, 400, "", "")
		add("oversized value", `{"x":"`+big+`"}`, nil, 413, "too_large", "")
		add("oversized trailing space", ep.valid+strings.Repeat(" ", node.MaxBodyBytes), nil, 413, "too_large", "")
		add("text/plain", ep.valid, []reqOpt{withHeader("Content-Type", "text/plain")}, 400, "invalid_field", "Content-Type")
		add("form", "to=approved", []reqOpt{withHeader("Content-Type", "application/x-www-form-urlencoded")}, 400, "invalid_field", "Content-Type")
	}

	// Bad values, field by field.
	createWith := func(mod func(b map[string]any)) map[string]any {
		b := newDossierBody("birth-registration", 7)
		mod(b)
		return b
	}
	applicant := func(k string, v any) map[string]any {
		return createWith(func(b map[string]any) { b["applicant"].(map[string]any)[k] = v })
	}
	manyFields := map[string]string{}
	for i := range schema.MaxFields + 1 {
		manyFields["f"+strconv.Itoa(i)] = "x"
	}
	post := func(name, path, token string, body any, status int, code, field string) {
		cases = append(cases, tc{name: name, method: "POST", path: path, token: token, body: body, status: status, code: code, field: field})
	}
	const create = "/v1/dossiers"
	post("field with an empty name", create, clerk.Token, `{"":"x"}`, 400, "invalid", "")
	post("unknown field with a quote in its name", create, clerk.Token, `{"a\"b":1}`, 400, "invalid_field", `a"b`)
	post("unknown applicant field", create, clerk.Token, applicant("birthday", "2000-01-01"), 400, "invalid_field", "birthday")
	post("unknown procedure", create, clerk.Token, createWith(func(b map[string]any) { b["procedure"] = "visa-application" }), 400, "invalid_field", "procedure")
	post("no procedure", create, clerk.Token, createWith(func(b map[string]any) { delete(b, "procedure") }), 400, "invalid_field", "procedure")
	post("unknown ward", create, clerk.Token, createWith(func(b map[string]any) { b["ward"] = "XYZ999" }), 400, "invalid_field", "ward")
	post("no applicant", create, clerk.Token, createWith(func(b map[string]any) { delete(b, "applicant") }), 400, "invalid_field", "applicant.name")
	post("applicant is a string", create, clerk.Token, createWith(func(b map[string]any) { b["applicant"] = "Nguyễn Văn An" }), 400, "invalid_field", "applicant")
	post("11-digit citizen ID", create, clerk.Token, applicant("id_number", "07920300000"), 400, "invalid_field", "applicant.id_number")
	post("13-digit citizen ID", create, clerk.Token, applicant("id_number", "0792030000012"), 400, "invalid_field", "applicant.id_number")
	post("citizen ID with letters", create, clerk.Token, applicant("id_number", "07920300000A"), 400, "invalid_field", "applicant.id_number")
	post("citizen ID with dashes", create, clerk.Token, applicant("id_number", "079-203-000-001"), 400, "invalid_field", "applicant.id_number")
	post("citizen ID in Arabic-Indic digits", create, clerk.Token, applicant("id_number", "٠٧٩٢٠٣٠٠٠٠٠١"), 400, "invalid_field", "applicant.id_number")
	post("citizen ID as a number", create, clerk.Token, applicant("id_number", 79203000001), 400, "invalid_field", "applicant.id_number")
	post("empty name", create, clerk.Token, applicant("name", ""), 400, "invalid_field", "applicant.name")
	post("blank name", create, clerk.Token, applicant("name", " \t "), 400, "invalid_field", "applicant.name")
	post("201-character name", create, clerk.Token, applicant("name", strings.Repeat("Ễ", 201)), 400, "invalid_field", "applicant.name")
	post("name with a control character", create, clerk.Token, applicant("name", "An\x00Bình"), 400, "invalid_field", "applicant.name")
	post("bad phone", create, clerk.Token, applicant("phone", "call me"), 400, "invalid_field", "applicant.phone")
	post("51 fields", create, clerk.Token, createWith(func(b map[string]any) { b["fields"] = manyFields }), 400, "invalid_field", "fields")
	post("bad field key", create, clerk.Token, createWith(func(b map[string]any) { b["fields"] = map[string]string{"Bad Key": "x"} }), 400, "invalid_field", "fields")
	post("over-long field value", create, clerk.Token, createWith(func(b map[string]any) {
		b["fields"] = map[string]string{"k": strings.Repeat("x", schema.MaxFieldValueLen+1)}
	}), 400, "invalid_field", "fields.k")
	post("field value not a string", create, clerk.Token, createWith(func(b map[string]any) { b["fields"] = map[string]any{"k": 1} }), 400, "invalid_field", "fields")

	tr := func(id string) string { return "/v1/dossiers/" + id + "/transitions" }
	post("transition without to", tr(d1.ID), clerk.Token, map[string]string{"note": "x"}, 400, "invalid_field", "to")
	post("transition to an unknown status", tr(d1.ID), clerk.Token, map[string]string{"to": "done"}, 400, "invalid_field", "to")
	post("transition with an over-long note", tr(d1.ID), clerk.Token, map[string]string{"to": "in_review", "note": strings.Repeat("x", schema.MaxNoteLen+1)}, 400, "invalid_field", "note")
	post("clerk approves", tr(d2.ID), clerk.Token, map[string]string{"to": "approved"}, 403, "role_not_allowed", "")
	post("received to approved", tr(d1.ID), head.Token, map[string]string{"to": "approved"}, 409, "transition_not_allowed", "")
	post("transition of an unknown dossier", tr(unknownID), clerk.Token, map[string]string{"to": "in_review"}, 404, "not_found", "")
	post("transition of a malformed id", tr("not-a-ulid"), clerk.Token, map[string]string{"to": "in_review"}, 404, "not_found", "")

	as := func(id string) string { return "/v1/dossiers/" + id + "/assign" }
	post("assign nobody", as(d1.ID), head.Token, map[string]string{}, 400, "invalid_field", "official")
	post("assign an unknown official", as(d1.ID), head.Token, map[string]string{"official": "off-ghost"}, 400, "invalid_field", "official")
	post("clerk assigns someone else", as(d1.ID), clerk.Token, map[string]string{"official": head.ID}, 403, "forbidden", "")
	post("assign an unknown dossier", as(unknownID), head.Token, map[string]string{"official": clerk.ID}, 404, "not_found", "")
	post("assign a malformed id", as("x"), head.Token, map[string]string{"official": clerk.ID}, 404, "not_found", "")

	nt := func(id string) string { return "/v1/dossiers/" + id + "/notes" }
	post("empty note", nt(d1.ID), clerk.Token, map[string]string{"text": ""}, 400, "invalid_field", "text")
	post("blank note", nt(d1.ID), clerk.Token, map[string]string{"text": "  \n "}, 400, "invalid_field", "text")
	post("over-long note", nt(d1.ID), clerk.Token, map[string]string{"text": strings.Repeat("x", schema.MaxNoteLen+1)}, 400, "invalid_field", "text")
	post("note on an unknown dossier", nt(unknownID), clerk.Token, map[string]string{"text": "x"}, 404, "not_found", "")
	post("note on a malformed id", nt("01ARZ3NDEKTSV4RRFFQ69G5FA"), clerk.Token, map[string]string{"text": "x"}, 404, "not_found", "")

	rs := func(id string) string { return "/v1/dossiers/" + id + "/resolve" }
	post("clerk resolves", rs(d1.ID), clerk.Token, map[string]string{"conflict": testNodeID + "/1"}, 403, "forbidden", "")
	post("resolve a malformed conflict id", rs(d1.ID), head.Token, map[string]string{"conflict": "one"}, 400, "invalid_field", "conflict")
	post("resolve no conflict", rs(d1.ID), head.Token, map[string]string{"conflict": testNodeID + "/1"}, 409, "conflict", "")
	post("resolve on an unknown dossier", rs(unknownID), head.Token, map[string]string{"conflict": testNodeID + "/1"}, 404, "not_found", "")

	const off = "/v1/officials"
	post("clerk adds an official", off, clerk.Token, map[string]string{"name": "Kẻ Gian", "role": "admin"}, 403, "forbidden", "")
	post("head adds an official", off, head.Token, map[string]string{"name": "Kẻ Gian", "role": "admin"}, 403, "forbidden", "")
	post("clerk adds with a bad body", off, clerk.Token, "{", 403, "forbidden", "")
	post("unknown role", off, e.Admin, map[string]string{"name": "X", "role": "king"}, 400, "invalid_field", "role")
	post("system role", off, e.Admin, map[string]string{"name": "X", "role": "system"}, 400, "invalid_field", "role")
	post("no role", off, e.Admin, map[string]string{"name": "X"}, 400, "invalid_field", "role")
	post("official without a name", off, e.Admin, map[string]string{"role": "clerk"}, 400, "invalid_field", "name")
	post("201-character official name", off, e.Admin, map[string]string{"name": strings.Repeat("a", 201), "role": "clerk"}, 400, "invalid_field", "name")
	post("bad official id", off, e.Admin, map[string]string{"id": "Bad ID", "name": "X", "role": "clerk"}, 400, "invalid_field", "id")
	post("taken official id", off, e.Admin, map[string]string{"id": "admin", "name": "X", "role": "admin"}, 409, "conflict", "")

	get := func(name, path, token string, status int, code, field string) {
		cases = append(cases, tc{name: name, method: "GET", path: path, token: token, status: status, code: code, field: field})
	}
	get("get an unknown dossier", "/v1/dossiers/"+unknownID, clerk.Token, 404, "not_found", "")
	get("get a malformed id", "/v1/dossiers/nope", clerk.Token, 404, "not_found", "")
	get("get a key-like id", "/v1/dossiers/..%2Fm%2Fidentity", clerk.Token, 404, "not_found", "")
	get("history of an unknown dossier", "/v1/dossiers/"+unknownID+"/history", clerk.Token, 404, "not_found", "")
	get("history of a malformed id", "/v1/dossiers/x/history", clerk.Token, 404, "not_found", "")
	get("no such route", "/v1/dossiers/"+d1.ID+"/nope", clerk.Token, 404, "not_found", "")
	get("no such api", "/v2/dossiers", clerk.Token, 404, "not_found", "")
	cases = append(cases, tc{name: "DELETE a dossier", method: "DELETE", path: "/v1/dossiers/" + d1.ID, token: e.Admin, status: 404, code: "not_found"})
	get("clerk lists officials", "/v1/officials", clerk.Token, 403, "forbidden", "")
	get("clerk takes a backup", "/v1/admin/backup", clerk.Token, 403, "forbidden", "")
	get("head takes a backup", "/v1/admin/backup", head.Token, 403, "forbidden", "")
	for _, q := range []struct{ query, field string }{
		{"status=nope", "status"},
		{"status=RECEIVED", "status"},
		{"procedure=nope", "procedure"},
		{"ward=nope", "ward"},
		{"limit=0", "limit"},
		{"limit=-1", "limit"},
		{"limit=501", "limit"},
		{"limit=ten", "limit"},
		{"limit=1e2", "limit"},
		{"limit=99999999999999999999", "limit"},
		{"overdue=maybe", "overdue"},
		{"overdue=1", "overdue"},
		{"cursor=%00%01", "cursor"},
		{"cursor=not-base64!", "cursor"},
	} {
		get("list "+q.query, "/v1/dossiers?"+q.query, clerk.Token, 400, "invalid_field", q.field)
	}
	get("stats of an unknown ward", "/v1/stats?ward=nope", clerk.Token, 400, "invalid_field", "ward")

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			res := e.call(c.method, c.path, c.token, c.body, opts...)
			if res.Status < 400 || res.Status >= 500 {
				t.Fatalf("status %d, want a 4xx; body %.300s", res.Status, res.Body)
			}
			ae := res.wantError(t, c.status, c.code, c.field)
			if c.status == http.StatusUnauthorized && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", res.Header.Get("WWW-Authenticate"))
			}
			if c.status == http.StatusBadRequest && ae.Field == "" && ae.Code == "invalid_field" {
				t.Errorf("400 names no field: %s", res.Body)
			}
			if strings.Contains(ae.Message, "schema.") || strings.Contains(ae.Message, "store.") {
				t.Errorf("message leaks Go type names: %q", ae.Message)
			}
		})
	}
	if t.Failed() {
		return
	}
	t.Logf("%d bad requests", len(cases))

	if after := snap(); after != before {
		t.Errorf("bad requests changed the store:\nbefore %+v\nafter  %+v", before, after)
	}
	// And the node still works.
	e.transition(clerk.Token, d1.ID, "in_review")
	if after := snap(); after.seq != before.seq+1 {
		t.Errorf("LastSeq %d after one good request, want %d", after.seq, before.seq+1)
	}
}
