package node_test

// Fuzz targets for the JSON bodies (and the attachment name) the ward API
// takes on an existing dossier, and for POST /v1/officials. Each drives the
// real handler of a real node on disk (opened once per fuzz process) and
// checks, whatever the bytes:
//
//   - never a 5xx, never a panic;
//   - a refusal is a 4xx with the {"error":{...}} shape, and changes
//     nothing: no op is appended (the node's op sequence is unchanged) and
//     the dossier's state hash is what it was;
//   - an acceptance appends exactly one op, and what is stored is what the
//     body asked for.
//
// The dossiers are kept in fixed states ("slots"): one a request changed is
// rebuilt before the next input, so an input does the same thing whatever
// ran before it, and a crasher replays alone.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Fixed official IDs, so seeds can name them.
const (
	fuzzClerk = "clerk-1"
	fuzzHead  = "head-1"
	fuzzAdmin = "admin-1"
)

// conflictMark in a fuzzed body is replaced with the ID of the open
// conflict on the dossier the request goes to (it changes when the dossier
// is rebuilt, so no literal can name it).
const conflictMark = "$CONFLICT"

type deskSlot struct {
	state string // what the slot holds, for failure messages
	id    string
	dirty bool
	// conflict is the open conflict's op ID ("" if none).
	conflict string
	build    func() (id, conflict string)
}

// fuzzDesk is one node with a clerk, a head and an admin, and dossiers in
// every state.
type fuzzDesk struct {
	e      *testEnv
	h      http.Handler
	tokens [3]string // clerk, head, admin
	ids    [3]string
	slots  []*deskSlot
	n      int    // dossiers made, for distinct applicants
	pulls  uint64 // pull cursor; also makes conflict origins distinct
}

func newFuzzDesk(f *testing.F) *fuzzDesk {
	e := startNode(f)
	d := &fuzzDesk{e: e, h: e.Node.Handler()}
	for i, o := range []struct {
		id   string
		role schema.Role
	}{{fuzzClerk, schema.RoleClerk}, {fuzzHead, schema.RoleHead}, {fuzzAdmin, schema.RoleAdmin}} {
		var got officialJSON
		e.call("POST", "/v1/officials", e.Admin, map[string]string{"id": o.id, "name": "Cán bộ " + o.id, "role": string(o.role)}).
			want(f, http.StatusCreated).decode(f, &got)
		d.tokens[i], d.ids[i] = got.Token, got.ID
	}
	// own makes a dossier of this ward and walks it along path (as the admin,
	// who may take every move).
	own := func(path ...string) func() (string, string) {
		return func() (string, string) {
			d.n++
			dj := e.createDossier(d.tokens[2], "birth-registration", d.n)
			for _, to := range path {
				e.transition(d.tokens[2], dj.ID, to)
			}
			return dj.ID, ""
		}
	}
	conflicted := func() (string, string) {
		// Two offices decided it differently while cut off: approved, and
		// a rejection that is now a conflict (see TestConflictListing).
		e.clock.Advance(5 * time.Second) // keep the pulled HLCs near the wall clock
		id, _ := own("in_review")()
		sd, err := e.Node.Dossier(id)
		if err != nil {
			e.t.Fatal(err)
		}
		d.pulls++
		a, b := fmt.Sprintf("fza%d", d.pulls), fmt.Sprintf("fzb%d", d.pulls)
		at := sd.LastHLC.Wall()
		e.pull(e.Ward, d.pulls,
			pulledTransition(a, 1, sd, at+1000, schema.StatusApproved),
			pulledTransition(b, 1, sd, at+2000, schema.StatusRejected))
		got, err := e.Node.Dossier(id)
		if err != nil || len(got.Conflicts) != 1 {
			e.t.Fatalf("conflicted dossier %s: %v %+v", id, err, got.Conflicts)
		}
		return id, got.Conflicts[0].Op
	}
	fixed := func(id string) func() (string, string) { return func() (string, string) { return id, "" } }
	other := func() (string, string) {
		// Received here for another ward: a read-only tracking copy.
		var dj dossierJSON
		body := newDossierBody("birth-registration", 999)
		body["ward"] = otherWard()
		e.call("POST", "/v1/dossiers", d.tokens[0], body).want(e.t, http.StatusCreated).decode(e.t, &dj)
		return dj.ID, ""
	}
	for _, s := range []struct {
		state string
		build func() (string, string)
	}{
		{"received", own()},
		{"in_review", own("in_review")},
		{"supplement_requested", own("in_review", "supplement_requested")},
		{"approved", own("in_review", "approved")},
		{"rejected", own("in_review", "rejected")},
		{"returned", own("in_review", "approved", "returned")},
		{"withdrawn", own("withdrawn")},
		{"conflicted", conflicted},
		{"other ward", other},
		{"unknown", fixed(ulid.Make().String())},
		{"malformed id", fixed("not-a-dossier")},
	} {
		slot := &deskSlot{state: s.state, build: s.build}
		slot.id, slot.conflict = s.build()
		d.slots = append(d.slots, slot)
	}
	return d
}

// slot returns the slot i picks, rebuilt first if a request changed it.
// (The rebuild reports to t: an F's methods may not be called from inside
// the fuzz function.)
func (d *fuzzDesk) slot(t *testing.T, i uint8) *deskSlot {
	s := d.slots[int(i)%len(d.slots)]
	if s.dirty {
		prev := d.e.t
		d.e.t = t
		s.id, s.conflict = s.build()
		d.e.t = prev
		s.dirty = false
	}
	return s
}

// serve runs one request through the node's handler.
func (d *fuzzDesk) serve(method, target, token string, body []byte) response {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	d.h.ServeHTTP(rec, req)
	return response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

// stored is a dossier as the store holds it (whatever the reader may see),
// and its state hash; ok false if there is none.
func (d *fuzzDesk) stored(t *testing.T, id string) (schema.Dossier, [32]byte, bool) {
	t.Helper()
	var sd schema.Dossier
	var ok bool
	if err := d.e.Node.Store().View(func(tx *store.Tx) error {
		var err error
		sd, ok, err = tx.Dossier(id)
		return err
	}); err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	if !ok {
		return schema.Dossier{}, [32]byte{}, false
	}
	return sd, schema.StateHash(&sd), true
}

// checkRefusal holds any answer that is not a success to the rules: a 4xx
// with the JSON error shape, naming the field of an invalid_field.
func checkRefusal(t *testing.T, r response, what string) apiError {
	t.Helper()
	if r.Status >= 500 || r.Status < 400 {
		t.Fatalf("%s: status %d: %s", what, r.Status, r.Body)
	}
	ae, bad := checkErrorShape(r)
	if bad != "" {
		t.Fatalf("%s: error body %s: %s", what, r.Body, bad)
	}
	if r.Status == http.StatusBadRequest && ae.Code == "invalid_field" && ae.Field == "" {
		t.Fatalf("%s: invalid_field names no field: %s", what, r.Body)
	}
	return ae
}

// mutation posts body to route of the dossier in slot as actor, and checks
// the answer against the store. On success it hands the dossier before and
// after to accepted, which checks the change is the one asked for.
func (d *fuzzDesk) mutation(t *testing.T, route string, body []byte, slotIdx, actor uint8,
	accepted func(t *testing.T, s *deskSlot, role schema.Role, before, after *schema.Dossier)) {
	s := d.slot(t, slotIdx)
	who := int(actor) % 3
	body = bytes.ReplaceAll(body, []byte(conflictMark), []byte(s.conflict))
	what := fmt.Sprintf("POST %s to a %s dossier as %s, body %q", route, s.state, d.ids[who], body)

	seq := lastSeq(t, d.e.Node)
	before, hash, existed := d.stored(t, s.id)
	r := d.serve("POST", "/v1/dossiers/"+s.id+"/"+route, d.tokens[who], body)
	after, hashAfter, exists := d.stored(t, s.id)
	seqAfter := lastSeq(t, d.e.Node)

	if r.Status != http.StatusOK {
		checkRefusal(t, r, what)
		if seqAfter != seq || exists != existed || hashAfter != hash {
			t.Fatalf("%s: refused with %d but the store changed (seq %d → %d, state hash changed %v): %s",
				what, r.Status, seq, seqAfter, hashAfter != hash, r.Body)
		}
		return
	}
	s.dirty = true
	if !existed || seqAfter != seq+1 || hashAfter == hash {
		t.Fatalf("%s: 200 but seq %d → %d, state hash changed %v", what, seq, seqAfter, hashAfter != hash)
	}
	var v dossierJSON
	if err := json.Unmarshal(r.Body, &v); err != nil || v.ID != s.id || v.Status != string(after.Status) {
		t.Fatalf("%s: 200 body is not the stored dossier (%v): %s", what, err, r.Body)
	}
	if len(after.History) != len(before.History)+1 {
		t.Fatalf("%s: history grew from %d to %d", what, len(before.History), len(after.History))
	}
	ev := after.History[len(after.History)-1]
	if ev.Conflict || ev.Actor.ID != d.ids[who] || ev.Op != fmt.Sprintf("%s/%d", testNodeID, seqAfter) {
		t.Fatalf("%s: last event %+v", what, ev)
	}
	if len(after.Conflicts) > len(before.Conflicts) {
		t.Fatalf("%s: a local op added a conflict: %+v", what, after.Conflicts)
	}
	accepted(t, s, []schema.Role{schema.RoleClerk, schema.RoleHead, schema.RoleAdmin}[who], &before, &after)
}

// decodeAs reads an accepted body the way the handler did (it passed the
// strict decoder, so the plain one reads the same values).
func decodeAs(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("accepted body %q does not decode: %v", body, err)
	}
}

// addBodies seeds f with each body sent to a received dossier, to the
// conflicted one and to one more slot in turn, by actors in turn. (Not
// every slot: in fuzzing mode each run first replays every seed, and CI
// fuzzes each target for a few seconds only.)
func addBodies(f *testing.F, d *fuzzDesk, bodies ...string) {
	conflicted := slices.IndexFunc(d.slots, func(s *deskSlot) bool { return s.state == "conflicted" })
	for i, b := range bodies {
		for k, s := range []int{0, conflicted, 1 + i%(len(d.slots)-1)} {
			f.Add([]byte(b), uint8(s), uint8(i+k)%3)
		}
	}
}

// commonBodies are malformed bodies every route must refuse cleanly.
var commonBodies = []string{
	``, `{`, `}`, `null`, `[]`, `{}`, `""`, `0`, `{"":""}`, `{"a\"b":1}`, "\xff\xfe{}",
	`{} {}`, `{}x`, `{"x":1}`, `{"note":"` + strings.Repeat("é", 5000) + `"}`,
}

// FuzzTransitionBody: POST /v1/dossiers/{id}/transitions {to, note}. An
// accepted move is one the workflow allows the actor from the dossier's
// status, and the dossier is now there, with the note in its history.
func FuzzTransitionBody(f *testing.F) {
	d := newFuzzDesk(f)
	bodies := append([]string{
		`{"to":"in_review"}`, `{"to":"approved","note":"đủ hồ sơ"}`, `{"to":"rejected","note":"thiếu giấy tờ"}`,
		`{"to":"supplement_requested","note":"bổ sung CMND"}`, `{"to":"returned"}`, `{"to":"withdrawn","note":"công dân rút"}`,
		`{"to":"received"}`, `{"to":""}`, `{"to":"IN_REVIEW"}`, `{"To":"in_review"}`, `{"to":"in_review","note":"a\u0000b"}`,
		`{"to":"in_review","note":"\ud800"}`, `{"to":"in_review","note":null}`, `{"to":5}`, `{"to":"in_review","to":"approved"}`,
		`{"to":"in_review","note":"` + strings.Repeat("x", schema.MaxNoteLen+1) + `"}`,
		`{"to":"in_review","actor":{"role":"admin"}}`,
	}, commonBodies...)
	addBodies(f, d, bodies...)
	f.Fuzz(func(t *testing.T, body []byte, slot, actor uint8) {
		d.mutation(t, "transitions", body, slot, actor, func(t *testing.T, s *deskSlot, role schema.Role, before, after *schema.Dossier) {
			var in struct {
				To   schema.Status `json:"to"`
				Note string        `json:"note"`
			}
			decodeAs(t, body, &in)
			if err := schema.CheckTransition(before.Status, in.To, role); err != nil {
				t.Fatalf("accepted %s → %s by a %s, which the workflow refuses: %v", before.Status, in.To, role, err)
			}
			if err := schema.ValidateText("note", in.Note, schema.MaxNoteLen, false); err != nil {
				t.Fatalf("accepted a note that does not validate: %v", err)
			}
			ev := after.History[len(after.History)-1]
			if after.Status != in.To || ev.Kind != schema.KindTransition || ev.From != before.Status || ev.To != in.To || ev.Text != in.Note {
				t.Fatalf("accepted %q: status %s, event %+v", body, after.Status, ev)
			}
		})
	})
}

// FuzzAssignBody: POST /v1/dossiers/{id}/assign {official}. An accepted
// assignment names an official of this office, on an open dossier, and a
// clerk only ever assigns themselves.
func FuzzAssignBody(f *testing.F) {
	d := newFuzzDesk(f)
	bodies := append([]string{
		`{"official":"` + fuzzClerk + `"}`, `{"official":"` + fuzzHead + `"}`, `{"official":"` + fuzzAdmin + `"}`,
		`{"official":"admin"}`, `{"official":""}`, `{"official":"nobody"}`, `{"official":"CLERK-1"}`,
		`{"official":" clerk-1"}`, `{"official":"clerk-1\u0000"}`, `{"official":"clerk-1","note":"x"}`, `{"official":["clerk-1"]}`,
	}, commonBodies...)
	addBodies(f, d, bodies...)
	f.Fuzz(func(t *testing.T, body []byte, slot, actor uint8) {
		d.mutation(t, "assign", body, slot, actor, func(t *testing.T, s *deskSlot, role schema.Role, before, after *schema.Dossier) {
			var in struct {
				Official string `json:"official"`
			}
			decodeAs(t, body, &in)
			var o store.Official
			var ok bool
			if err := d.e.Node.Store().View(func(tx *store.Tx) error {
				var err error
				o, ok, err = tx.Official(in.Official)
				return err
			}); err != nil || !ok {
				t.Fatalf("assigned to %q, who is not an official here (%v)", in.Official, err)
			}
			if !before.Status.Open() {
				t.Fatalf("assigned a %s dossier", before.Status)
			}
			if role == schema.RoleClerk && in.Official != fuzzClerk {
				t.Fatalf("a clerk assigned %q", in.Official)
			}
			if after.Assignee != o.ID || after.AssigneeName != o.Name || after.Status != before.Status {
				t.Fatalf("after assigning %q: %+v", in.Official, after)
			}
		})
	})
}

// FuzzNoteBody: POST /v1/dossiers/{id}/notes {text}. An accepted note is
// valid text, stored as sent, and changes nothing but the history.
func FuzzNoteBody(f *testing.F) {
	d := newFuzzDesk(f)
	bodies := append([]string{
		`{"text":"ghi chú"}`, `{"text":"dòng 1\ndòng 2\tcột"}`, `{"text":""}`, `{"text":"   "}`, `{"text":"\r"}`,
		`{"text":"a\u0085b"}`, `{"text":"\u202eabc"}`, `{"text":"\ud800"}`, `{"text":"\\u0000"}`, `{"text":null}`,
		`{"text":"` + strings.Repeat("ễ", schema.MaxNoteLen) + `"}`, `{"text":"` + strings.Repeat("ễ", schema.MaxNoteLen+1) + `"}`,
		`{"text":"x","text":"y"}`, `{"TEXT":"x"}`, `{"text":1e400}`,
	}, commonBodies...)
	addBodies(f, d, bodies...)
	f.Fuzz(func(t *testing.T, body []byte, slot, actor uint8) {
		d.mutation(t, "notes", body, slot, actor, func(t *testing.T, s *deskSlot, role schema.Role, before, after *schema.Dossier) {
			var in struct {
				Text string `json:"text"`
			}
			decodeAs(t, body, &in)
			if err := schema.ValidateText("text", in.Text, schema.MaxNoteLen, true); err != nil {
				t.Fatalf("accepted a note that does not validate: %v", err)
			}
			ev := after.History[len(after.History)-1]
			if ev.Kind != schema.KindAnnotate || ev.Text != in.Text {
				t.Fatalf("note %q stored as %+v", in.Text, ev)
			}
			// Only the history moved.
			b, a := *before, *after
			b.History, a.History, b.LastHLC, a.LastHLC = nil, nil, 0, 0
			if schema.StateHash(&b) != schema.StateHash(&a) {
				t.Fatalf("a note changed more than the history:\n%+v\n%+v", b, a)
			}
		})
	})
}

// FuzzResolveBody: POST /v1/dossiers/{id}/resolve {conflict, to, note}
// ("$CONFLICT" in the body stands for the dossier's open conflict). An
// accepted resolution is a head's or an admin's, of an open conflict,
// which is then gone; a "to" moves the dossier there.
func FuzzResolveBody(f *testing.F) {
	d := newFuzzDesk(f)
	bodies := append([]string{
		`{"conflict":"$CONFLICT"}`, `{"conflict":"$CONFLICT","to":"rejected","note":"giữ quyết định sau"}`,
		`{"conflict":"$CONFLICT","to":"approved"}`, `{"conflict":"$CONFLICT","to":"received"}`, `{"conflict":"$CONFLICT","to":"nope"}`,
		`{"conflict":"$CONFLICT","note":"\u0007"}`, `{"conflict":"w1a/1"}`, `{"conflict":"w1a/0"}`, `{"conflict":"one"}`,
		`{"conflict":"/1"}`, `{"conflict":"fza1/"}`, `{"conflict":"fza1/18446744073709551616"}`, `{"conflict":""}`,
		`{"conflict":"$CONFLICT","to":""}`, `{"conflict":1}`, `{"to":"approved"}`,
	}, commonBodies...)
	addBodies(f, d, bodies...)
	f.Fuzz(func(t *testing.T, body []byte, slot, actor uint8) {
		d.mutation(t, "resolve", body, slot, actor, func(t *testing.T, s *deskSlot, role schema.Role, before, after *schema.Dossier) {
			var in struct {
				Conflict string        `json:"conflict"`
				To       schema.Status `json:"to"`
				Note     string        `json:"note"`
			}
			decodeAs(t, bytes.ReplaceAll(body, []byte(conflictMark), []byte(s.conflict)), &in)
			if role == schema.RoleClerk {
				t.Fatal("a clerk resolved a conflict")
			}
			if !slices.ContainsFunc(before.Conflicts, func(c schema.Conflict) bool { return c.Op == in.Conflict }) ||
				slices.ContainsFunc(after.Conflicts, func(c schema.Conflict) bool { return c.Op == in.Conflict }) {
				t.Fatalf("resolved %q: conflicts before %+v, after %+v", in.Conflict, before.Conflicts, after.Conflicts)
			}
			want := before.Status
			if in.To != "" {
				want = in.To
			}
			if !want.Valid() || after.Status != want {
				t.Fatalf("resolved with to %q: status %s", in.To, after.Status)
			}
			if err := schema.ValidateText("note", in.Note, schema.MaxNoteLen, false); err != nil {
				t.Fatalf("accepted a note that does not validate: %v", err)
			}
		})
	})
}

// FuzzAddOfficialBody: POST /v1/officials {name, role, id}. Whatever the
// body, a refusal adds nobody; an accepted one adds exactly the official
// asked for (name trimmed, a valid role, the ID asked for if any), whose
// token authenticates as them. Only an admin adds anyone.
func FuzzAddOfficialBody(f *testing.F) {
	d := newFuzzDesk(f)
	for i, b := range append([]string{
		`{"name":"Trần Thị Bình","role":"clerk"}`, `{"name":"  Lê Văn Cường ","role":"head","id":"head-2"}`,
		`{"name":"Phạm Thị Dung","role":"admin","id":"` + fuzzClerk + `"}`, `{"name":"A","role":"admin","id":"admin"}`,
		`{"name":"A","role":"system"}`, `{"name":"A","role":"Clerk"}`, `{"name":"A","role":""}`, `{"name":"","role":"clerk"}`,
		`{"name":" \t","role":"clerk"}`, `{"name":"A\u0000","role":"clerk"}`, `{"name":"A","role":"clerk","id":"Bad ID"}`,
		`{"name":"A","role":"clerk","id":"` + strings.Repeat("a", 33) + `"}`, `{"name":"A","role":"clerk","id":"-a"}`,
		`{"name":"` + strings.Repeat("ư", schema.MaxNameLen+1) + `","role":"clerk"}`, `{"name":"A","role":"clerk","token":"wst_x"}`,
		`{"name":"A","role":"clerk","id":"city"}`,
	}, commonBodies...) {
		f.Add([]byte(b), uint8(2))
		if i%4 == 0 {
			f.Add([]byte(b), uint8(i))
		}
	}
	count := func(t *testing.T) int {
		all, err := d.e.Node.Officials()
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}
	f.Fuzz(func(t *testing.T, body []byte, actor uint8) {
		who := int(actor) % 3
		what := fmt.Sprintf("POST /v1/officials as %s, body %q", d.ids[who], body)
		n := count(t)
		r := d.serve("POST", "/v1/officials", d.tokens[who], body)
		if r.Status != http.StatusCreated {
			checkRefusal(t, r, what)
			if got := count(t); got != n {
				t.Fatalf("%s: refused with %d but officials went from %d to %d", what, r.Status, n, got)
			}
			return
		}
		if who != 2 {
			t.Fatalf("%s: a non-admin added an official", what)
		}
		if got := count(t); got != n+1 {
			t.Fatalf("%s: officials went from %d to %d", what, n, got)
		}
		var in struct {
			ID   string      `json:"id"`
			Name string      `json:"name"`
			Role schema.Role `json:"role"`
		}
		decodeAs(t, body, &in)
		var o officialJSON
		if err := json.Unmarshal(r.Body, &o); err != nil {
			t.Fatalf("%s: 201 body: %v: %s", what, err, r.Body)
		}
		got, err := d.e.Node.Authenticate(o.Token)
		if err != nil {
			t.Fatalf("%s: the new token does not authenticate: %v", what, err)
		}
		if got.ID != o.ID || (in.ID != "" && got.ID != in.ID) || got.Role != in.Role || !in.Role.Valid() ||
			got.Name != strings.TrimSpace(in.Name) || o.Name != got.Name || o.Role != string(got.Role) {
			t.Fatalf("%s: asked for %+v, stored %+v, answered %+v", what, in, got, o)
		}
		if err := schema.ValidateText("name", got.Name, schema.MaxNameLen, true); err != nil {
			t.Fatalf("%s: stored name does not validate: %v", what, err)
		}
	})
}

// FuzzAttachName: POST /v1/dossiers/{id}/attachments?name=NAME with
// arbitrary content. A refusal stores no op; an accepted attachment keeps
// the name exactly, its download's Content-Disposition names the same file,
// and the bytes come back as sent.
func FuzzAttachName(f *testing.F) {
	d := newFuzzDesk(f)
	pdf := []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	for i, name := range []string{
		"scan.pdf", "Giấy khai sinh.pdf", "a b;c=d.pdf", "ảnh chụp CMND (mặt trước).png", "%20.pdf", "x%ZZ", "é\u0301.pdf",
		"", " ", ".", "..", "a/b.pdf", `a\b.pdf`, `a"b.pdf`, "a\nb", "a\tb", "a\rb", "a\x00b", "\x7f", "\xff.pdf",
		"\u202egpj.exe", "\ufeff.pdf", "a*b", "filename*=utf-8''x", "'; x='", strings.Repeat("ả", schema.MaxAttachmentName),
		strings.Repeat("a", schema.MaxAttachmentName+1),
	} {
		f.Add(name, pdf, uint8(0))
		f.Add(name, png, uint8(i))
	}
	f.Add("scan.pdf", []byte("plain text"), uint8(0))
	f.Add("scan.pdf", []byte{}, uint8(0))
	f.Add("scan.pdf", []byte("%PDF"), uint8(0))
	f.Fuzz(func(t *testing.T, name string, content []byte, slotIdx uint8) {
		// The slots a clerk may attach to, or must be refused at.
		slots := []int{0, 1, 3, 6, 8, 9, 10} // received, in_review, approved, withdrawn, other ward, unknown, malformed
		s := d.slot(t, uint8(slots[int(slotIdx)%len(slots)]))
		target := "/v1/dossiers/" + s.id + "/attachments?" + url.Values{"name": {name}}.Encode()
		what := fmt.Sprintf("attach %q (%d bytes) to a %s dossier", name, len(content), s.state)

		seq := lastSeq(t, d.e.Node)
		_, hash, _ := d.stored(t, s.id)
		r := d.serve("POST", target, d.tokens[0], content)
		after, hashAfter, _ := d.stored(t, s.id)
		seqAfter := lastSeq(t, d.e.Node)
		if r.Status != http.StatusCreated && r.Status != http.StatusOK {
			checkRefusal(t, r, what)
			if seqAfter != seq || hashAfter != hash {
				t.Fatalf("%s: refused with %d but the store changed (seq %d → %d): %s", what, r.Status, seq, seqAfter, r.Body)
			}
			return
		}
		if r.Status == http.StatusOK && (seqAfter != seq || hashAfter != hash) {
			t.Fatalf("%s: 200 (already attached) but the store changed", what)
		}
		if r.Status == http.StatusCreated {
			s.dirty = true
			if seqAfter != seq+1 {
				t.Fatalf("%s: 201 but seq %d → %d", what, seq, seqAfter)
			}
		}
		if err := schema.ValidateAttachmentName(name); err != nil {
			t.Fatalf("%s: accepted a name that does not validate: %v", what, err)
		}
		var a attachmentJSON
		if err := json.Unmarshal(r.Body, &a); err != nil {
			t.Fatalf("%s: body %s: %v", what, r.Body, err)
		}
		i := slices.IndexFunc(after.Attachments, func(x schema.Attachment) bool { return x.Hash == a.Hash })
		if i < 0 || a.Size != int64(len(content)) || a.Type != schema.SniffType(content) || a.Type == "" {
			t.Fatalf("%s: answered %+v, stored %+v", what, a, after.Attachments)
		}
		if r.Status == http.StatusCreated && (a.Name != name || after.Attachments[i].Name != name) {
			t.Fatalf("%s: name stored as %q, answered %q", what, after.Attachments[i].Name, a.Name)
		}
		dl := d.serve("GET", "/v1/dossiers/"+s.id+"/attachments/"+a.Hash, d.tokens[0], nil)
		if dl.Status != http.StatusOK || !bytes.Equal(dl.Body, content) {
			t.Fatalf("%s: download %d, %d bytes", what, dl.Status, len(dl.Body))
		}
		cd := dl.Header.Get("Content-Disposition")
		disp, params, err := mime.ParseMediaType(cd)
		if err != nil || disp != "attachment" || params["filename"] != after.Attachments[i].Name {
			t.Fatalf("%s: Content-Disposition %q parses as %q %q (%v), want filename %q", what, cd, disp, params, err, after.Attachments[i].Name)
		}
	})
}
