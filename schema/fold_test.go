package schema

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// randomOps makes a create plus a random mix of ops on one dossier from up
// to three origins with interleaved clocks, as replicas that worked
// offline would produce.
func randomOps(r *rand.Rand) []Op {
	origins := []string{"w1", "w1-backup", "city"}
	roles := []Role{RoleClerk, RoleHead, RoleAdmin}
	seq := map[string]uint64{}
	mk := func(kind Kind, body any) Op {
		o := origins[r.IntN(len(origins))]
		seq[o]++
		return Op{
			ID: OpID{o, seq[o]}, Ward: "W1", Dossier: "D1",
			HLC:   NewHLC(1_000+r.Int64N(50), uint16(r.IntN(3))),
			Actor: Actor{ID: fmt.Sprintf("u%d", r.IntN(3)), Role: roles[r.IntN(3)]},
			Kind:  kind, Body: MarshalBody(body),
		}
	}
	create := mk(KindCreate, CreateBody{Procedure: "birth-registration", ReceiptNo: "R1", ReceivedAt: 1, DueAt: 1_030})
	create.HLC = NewHLC(999, 0) // the create happened before anything else
	ops := []Op{create}
	n := r.IntN(25)
	for i := 0; i < n; i++ {
		switch r.IntN(5) {
		case 0, 1:
			ops = append(ops, mk(KindTransition, TransitionBody{To: Statuses[r.IntN(len(Statuses))], Note: "n"}))
		case 2:
			ops = append(ops, mk(KindAssign, AssignBody{Official: fmt.Sprintf("u%d", r.IntN(3))}))
		case 3:
			ops = append(ops, mk(KindAnnotate, AnnotateBody{Text: fmt.Sprint(i)}))
		case 4:
			target := ops[r.IntN(len(ops))].ID.String()
			ops = append(ops, mk(KindResolve, ResolveBody{Conflict: target, To: Statuses[r.IntN(len(Statuses))]}))
		}
	}
	return ops
}

// TestFoldDeterministic is invariant 2 at the level of one dossier: any two
// replicas holding the same set of ops, received in any order and with any
// duplicates, compute the same state hash.
func TestFoldDeterministic(t *testing.T) {
	for seed := uint64(0); seed < 1000; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		ops := randomOps(r)
		want := Fold(ops)
		wantHash := StateHash(&want)
		for k := 0; k < 5; k++ {
			shuffled := append([]Op(nil), ops...)
			// Duplicates: transfers are retried, so the same op can arrive twice.
			for d := r.IntN(4); d > 0; d-- {
				shuffled = append(shuffled, ops[r.IntN(len(ops))])
			}
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got := Fold(shuffled)
			if StateHash(&got) != wantHash {
				t.Fatalf("seed %d: state hash differs by arrival order:\n%s\n%s", seed, EncodeDossier(&want), EncodeDossier(&got))
			}
		}
		if len(want.History) != len(ops) {
			t.Fatalf("seed %d: history has %d events for %d ops: an op was dropped", seed, len(want.History), len(ops))
		}
	}
}

// TestFoldIncrementalEqualsFull: the node applies its own ops one at a time
// to the stored state; that must equal folding from scratch, because every
// local op has a later HLC than everything the node holds.
func TestFoldIncrementalEqualsFull(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		ops := randomOps(r)
		SortOps(ops)
		var inc Dossier
		for i := range ops {
			Apply(&inc, &ops[i])
		}
		full := Fold(ops)
		if StateHash(&inc) != StateHash(&full) {
			t.Fatalf("seed %d: incremental apply differs from fold", seed)
		}
	}
}

func op(origin string, seq uint64, hlc int64, role Role, kind Kind, body any) Op {
	return Op{ID: OpID{origin, seq}, Ward: "W1", Dossier: "D1", HLC: NewHLC(hlc, 0),
		Actor: Actor{ID: origin + "-official", Role: role}, Kind: kind, Body: MarshalBody(body)}
}

// TestFoldOfflineSplitBecomesConflict: the ward approved offline while the
// backup office rejected; neither decision is lost, the later one in the
// merged order becomes a visible conflict, and a head resolves it.
func TestFoldOfflineSplitBecomesConflict(t *testing.T) {
	ops := []Op{
		op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration", DueAt: 1000}),
		op("w1", 2, 110, RoleClerk, KindTransition, TransitionBody{To: StatusInReview}),
		op("w1", 3, 200, RoleHead, KindTransition, TransitionBody{To: StatusApproved}),
		op("bk", 1, 210, RoleHead, KindTransition, TransitionBody{To: StatusRejected}),
	}
	d := Fold(ops)
	if d.Status != StatusApproved || d.CompletedAt != 200 {
		t.Fatalf("status %s completed %d, want approved at 200", d.Status, d.CompletedAt)
	}
	if len(d.Conflicts) != 1 || d.Conflicts[0].Op != "bk/1" || d.Conflicts[0].To != StatusRejected {
		t.Fatalf("conflicts = %+v, want the backup's rejection", d.Conflicts)
	}
	if !d.History[3].Conflict {
		t.Fatal("the conflicting op must stay in the history, marked")
	}
	ops = append(ops, op("w1", 4, 300, RoleHead, KindResolve, ResolveBody{Conflict: "bk/1", To: StatusRejected, Note: "phone call"}))
	d = Fold(ops)
	if len(d.Conflicts) != 0 || d.Status != StatusRejected {
		t.Fatalf("after resolve: status %s conflicts %+v", d.Status, d.Conflicts)
	}
	// A clerk cannot resolve.
	bad := op("w1", 5, 400, RoleClerk, KindResolve, ResolveBody{Conflict: "bk/1"})
	if Check(&d, &bad) == nil {
		t.Fatal("clerk resolve accepted")
	}
}

func TestFoldOpsBeforeCreateWaitForIt(t *testing.T) {
	create := op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration"})
	move := op("w1", 2, 110, RoleClerk, KindTransition, TransitionBody{To: StatusInReview})
	early := Fold([]Op{move})
	if early.Created() || len(early.Conflicts) != 1 {
		t.Fatalf("op without its create: %+v", early)
	}
	late := Fold([]Op{move, create})
	if late.Status != StatusInReview || len(late.Conflicts) != 0 {
		t.Fatalf("once the create arrives, the op applies: %+v", late)
	}
}

func TestCheckRules(t *testing.T) {
	created := Fold([]Op{op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "x"})})
	returned := Fold([]Op{
		op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "x"}),
		op("w1", 2, 101, RoleClerk, KindTransition, TransitionBody{To: StatusInReview}),
		op("w1", 3, 102, RoleHead, KindTransition, TransitionBody{To: StatusApproved}),
		op("w1", 4, 103, RoleClerk, KindTransition, TransitionBody{To: StatusReturned}),
	})
	cases := []struct {
		name string
		d    Dossier
		op   Op
		ok   bool
	}{
		{"second create", created, op("w1", 9, 200, RoleClerk, KindCreate, CreateBody{}), false},
		{"clerk assigns self", created, op("w1", 9, 200, RoleClerk, KindAssign, AssignBody{Official: "w1-official"}), true},
		{"clerk assigns other", created, op("w1", 9, 200, RoleClerk, KindAssign, AssignBody{Official: "other"}), false},
		{"head assigns other", created, op("w1", 9, 200, RoleHead, KindAssign, AssignBody{Official: "other"}), true},
		{"assign closed", returned, op("w1", 9, 200, RoleHead, KindAssign, AssignBody{Official: "x"}), false},
		{"annotate closed", returned, op("w1", 9, 200, RoleClerk, KindAnnotate, AnnotateBody{Text: "hi"}), true},
		{"unknown status", created, op("w1", 9, 200, RoleClerk, KindTransition, TransitionBody{To: "done"}), false},
		{"unknown kind", created, op("w1", 9, 200, RoleClerk, "delete", AnnotateBody{}), false},
		{"resolve missing", created, op("w1", 9, 200, RoleHead, KindResolve, ResolveBody{Conflict: "a/1"}), false},
		{"bad body", created, Op{ID: OpID{"w1", 9}, Kind: KindTransition, Body: []byte("{"), Actor: Actor{Role: RoleHead}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(&c.d, &c.op)
			if (err == nil) != c.ok {
				t.Fatalf("Check = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestOpEncodeRoundTripAndSignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	o := op("w1", 3, 12345, RoleHead, KindTransition, TransitionBody{To: StatusApproved, Note: "ok"})
	o.Epoch = 4
	o.Prev[0] = 9
	o.Sign(priv)
	got, err := DecodeOp(o.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != o.Hash() || got.Verify(pub) != nil {
		t.Fatalf("round trip changed the op: %+v", got)
	}
	got.Body = MarshalBody(TransitionBody{To: StatusRejected})
	if got.Verify(pub) == nil {
		t.Fatal("signature verified over a changed body")
	}
}

// Attachments.

func attachOp(origin string, seq uint64, hlc int64, name string, m *Manifest) Op {
	return op(origin, seq, hlc, RoleClerk, KindAttach, NewAttachBody(name, m))
}

func TestFoldAttach(t *testing.T) {
	scan := testManifest(2*ChunkSize+10, TypePDF)
	ops := []Op{
		op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration", DueAt: 1000}),
		attachOp("w1", 2, 110, "giay-chung-sinh.pdf", &scan),
	}
	d := Fold(ops)
	if len(d.Conflicts) != 0 {
		t.Fatalf("conflicts: %+v", d.Conflicts)
	}
	want := []Attachment{{Op: "w1/2", Name: "giay-chung-sinh.pdf", Hash: scan.HashHex(), Size: scan.Size, Type: TypePDF,
		By: Actor{ID: "w1-official", Role: RoleClerk}, At: 110}}
	if !reflect.DeepEqual(d.Attachments, want) {
		t.Fatalf("attachments = %+v, want %+v", d.Attachments, want)
	}
	if len(d.History) != 2 || d.History[1].Kind != KindAttach || d.History[1].Text != "giay-chung-sinh.pdf" || d.History[1].Conflict {
		t.Fatalf("history = %+v", d.History)
	}
	if d.Status != StatusReceived {
		t.Fatalf("an attachment changed the status to %s", d.Status)
	}
	// The state carries the attachment and decodes back to the same state.
	enc := EncodeDossier(&d)
	if !bytes.Contains(enc, []byte(`"attachments":[`)) {
		t.Fatalf("encoded state lacks the attachment: %s", enc)
	}
	back, err := DecodeDossier(enc)
	if err != nil || StateHash(&back) != StateHash(&d) {
		t.Fatalf("decode of the encoded state: %v", err)
	}
	// Check agrees with Apply.
	var created Dossier
	Apply(&created, &ops[0])
	if err := Check(&created, &ops[1]); err != nil {
		t.Fatalf("Check refuses a good attach op: %v", err)
	}
}

// TestFoldAttachSameContentTwice: the same scan attached by two offices is
// one attachment (the first in the merged order), and two history events.
func TestFoldAttachSameContentTwice(t *testing.T) {
	scan := testManifest(1234, TypeJPEG)
	other := testManifest(99, TypePNG)
	ops := []Op{
		op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration", DueAt: 1000}),
		attachOp("bk", 1, 120, "cccd-copy.jpg", &scan),
		attachOp("w1", 2, 110, "cccd.jpg", &scan),
		attachOp("w1", 3, 130, "photo.png", &other),
		attachOp("bk", 2, 140, "cccd-again.jpg", &scan),
	}
	d := Fold(ops)
	if len(d.Conflicts) != 0 {
		t.Fatalf("a repeated attachment is not a conflict: %+v", d.Conflicts)
	}
	if len(d.Attachments) != 2 {
		t.Fatalf("attachments = %+v, want 2 (one per distinct content)", d.Attachments)
	}
	if a := d.Attachments[0]; a.Op != "w1/2" || a.Name != "cccd.jpg" || a.Hash != scan.HashHex() || a.At != 110 {
		t.Fatalf("first attachment = %+v, want w1/2's", a)
	}
	if a := d.Attachments[1]; a.Op != "w1/3" || a.Hash != other.HashHex() {
		t.Fatalf("second attachment = %+v, want w1/3's", a)
	}
	var attachEvents []string
	for _, ev := range d.History {
		if ev.Kind == KindAttach {
			attachEvents = append(attachEvents, ev.Op+" "+ev.Text)
		}
	}
	if want := []string{"w1/2 cccd.jpg", "bk/1 cccd-copy.jpg", "w1/3 photo.png", "bk/2 cccd-again.jpg"}; !slices.Equal(attachEvents, want) {
		t.Fatalf("attach events = %q, want %q", attachEvents, want)
	}
}

// TestFoldAttachBeforeCreate: an attach op that arrives before its create
// waits for it (like any op), but one ordered before the create is a
// conflict and attaches nothing.
func TestFoldAttachBeforeCreate(t *testing.T) {
	scan := testManifest(10, TypePDF)
	create := op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration"})
	late := attachOp("w1", 2, 110, "a.pdf", &scan)
	early := attachOp("bk", 1, 90, "b.pdf", &scan)

	alone := Fold([]Op{late})
	if alone.Created() || len(alone.Conflicts) != 1 || len(alone.Attachments) != 0 || alone.ID != "D1" {
		t.Fatalf("attach without its create: %+v", alone)
	}
	if !alone.History[0].Conflict || alone.History[0].Kind != KindAttach {
		t.Fatal("the attach op is not marked as a conflict")
	}
	if err := Check(&Dossier{}, &late); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Check of an attach op on no dossier = %v, want ErrNotFound", err)
	}
	if d := Fold([]Op{late, create}); len(d.Conflicts) != 0 || len(d.Attachments) != 1 {
		t.Fatalf("once the create arrives the attach applies: %+v", d)
	}
	d := Fold([]Op{early, create})
	if len(d.Conflicts) != 1 || d.Conflicts[0].Op != "bk/1" || d.Conflicts[0].Kind != KindAttach || len(d.Attachments) != 0 {
		t.Fatalf("attach ordered before the create: conflicts %+v attachments %+v", d.Conflicts, d.Attachments)
	}
	if !d.History[0].Conflict || d.History[1].Kind != KindCreate {
		t.Fatalf("history = %+v", d.History)
	}
	if bytes.Contains(EncodeDossier(&d), []byte(`"attachments"`)) {
		t.Fatal("a refused attach op left an attachments key in the state")
	}
}

func TestFoldAttachBadBodyIsConflict(t *testing.T) {
	create := op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration"})
	good := testManifest(ChunkSize+1, TypePNG)
	body := func(edit func(b *AttachBody)) []byte {
		b := NewAttachBody("scan.png", &good)
		edit(&b)
		return MarshalBody(b)
	}
	cases := []struct {
		name string
		body []byte
	}{
		{"not json", []byte("{")},
		{"wrong json type", []byte(`{"size":"big"}`)},
		{"empty object", []byte(`{}`)},
		{"executable type", body(func(b *AttachBody) { b.Type = "application/x-dosexec" })},
		{"bad hash", body(func(b *AttachBody) { b.Hash = "abc" })},
		{"bad chunk hash", body(func(b *AttachBody) { b.Chunks[0] = "xyz" })},
		{"chunk count off", body(func(b *AttachBody) { b.Chunks = b.Chunks[:1] })},
		{"zero size", body(func(b *AttachBody) { b.Size = 0; b.Chunks = nil })},
		{"over the ceiling", body(func(b *AttachBody) { b.Size = MaxBlobSize + 1 })},
		{"bad name", body(func(b *AttachBody) { b.Name = "a/b.png" })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := Op{ID: OpID{"w1", 2}, Ward: "W1", Dossier: "D1", HLC: NewHLC(110, 0),
				Actor: Actor{ID: "u", Role: RoleClerk}, Kind: KindAttach, Body: c.body}
			var d Dossier
			Apply(&d, &create)
			if err := Check(&d, &bad); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Check = %v, want ErrInvalid (or ErrTooLarge)", err)
			}
			f := Fold([]Op{create, bad})
			if len(f.Attachments) != 0 {
				t.Fatalf("a bad attach body attached %+v", f.Attachments)
			}
			if len(f.Conflicts) != 1 || f.Conflicts[0].Op != "w1/2" || f.Conflicts[0].Reason == "" {
				t.Fatalf("conflicts = %+v, want the attach op with a reason", f.Conflicts)
			}
			if len(f.History) != 2 || !f.History[1].Conflict {
				t.Fatalf("the op must stay in the history, marked: %+v", f.History)
			}
		})
	}
}

// TestFoldAttachHashIsCanonical: one content is one attachment however its
// hash is spelled. ParseHash accepts upper-case hex, so an attach op whose
// body spells the hash in upper case validates; the fold compares the hex
// strings, so it becomes a second attachment of the same content (whose
// Hash no lower-case lookup finds). Either refusing non-canonical hex or
// comparing parsed hashes would do.
func TestFoldAttachHashIsCanonical(t *testing.T) {
	scan := testManifest(10, TypePDF)
	upper := NewAttachBody("b.pdf", &scan)
	upper.Hash = strings.ToUpper(upper.Hash)
	d := Fold([]Op{
		op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration"}),
		attachOp("w1", 2, 110, "a.pdf", &scan),
		op("w1", 3, 120, RoleClerk, KindAttach, upper),
	})
	refused := len(d.Conflicts) == 1 && d.Conflicts[0].Op == "w1/3"
	if len(d.Attachments) != 1 && !refused {
		t.Fatalf("the same content spelled in upper-case hex is a second attachment: %+v", d.Attachments)
	}
	for _, a := range d.Attachments {
		if a.Hash != scan.HashHex() {
			t.Fatalf("attachment hash %q is not the canonical %q", a.Hash, scan.HashHex())
		}
	}
}

// goldenOps is a dossier's ops from before attachments existed.
func goldenOps() []Op {
	return []Op{
		op("w1", 1, 1_700_000_000_000, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration", ReceiptNo: "R-2024-1", ReceivedAt: 1_700_000_000_000, DueAt: 1_700_600_000_000,
			Applicant: Applicant{Name: "Nguyễn Văn A", IDNumber: "001200012345"}, Fields: map[string]string{"child_name": "B"}}),
		op("w1", 2, 1_700_000_001_000, RoleClerk, KindAssign, AssignBody{Official: "w1-official"}),
		op("w1", 3, 1_700_000_002_000, RoleClerk, KindAnnotate, AnnotateBody{Text: "scan to follow"}),
		op("w1", 4, 1_700_000_003_000, RoleClerk, KindTransition, TransitionBody{To: StatusInReview}),
		op("bk", 1, 1_700_000_004_000, RoleHead, KindTransition, TransitionBody{To: StatusApproved}),
		op("w1", 5, 1_700_000_004_000, RoleHead, KindTransition, TransitionBody{To: StatusRejected}),
	}
}

// TestStateHashWithoutAttachmentsUnchanged: replicas running the code from
// before attachments and after must agree on the state hash of a dossier
// that has none. The hash below was computed by the code before this
// feature (commit c5c0b02, the parent of the attachments commit) for
// goldenOps.
func TestStateHashWithoutAttachmentsUnchanged(t *testing.T) {
	const want = "ae366354c21ac5cdee018decbf5aadb1537456424f532fc96e7213e6ac5cd2e4"
	d := Fold(goldenOps())
	if got := StateHash(&d); hex.EncodeToString(got[:]) != want {
		t.Fatalf("state hash of a dossier without attachments changed:\n got %x\nwant %s\n%s", got, want, EncodeDossier(&d))
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(EncodeDossier(&d), &keys); err != nil {
		t.Fatal(err)
	}
	if _, ok := keys["attachments"]; ok {
		t.Fatal(`a dossier without attachments encodes an "attachments" key`)
	}
	// An empty (non-nil) list, as a decoder may leave it, encodes the same.
	d.Attachments = []Attachment{}
	if got := StateHash(&d); hex.EncodeToString(got[:]) != want {
		t.Fatal("an empty attachment list changes the state hash")
	}
	// And the random dossiers of TestFoldDeterministic, which never attach.
	for seed := uint64(0); seed < 100; seed++ {
		ops := randomOps(rand.New(rand.NewPCG(seed, 7)))
		d := Fold(ops)
		if bytes.Contains(EncodeDossier(&d), []byte(`"attachments"`)) {
			t.Fatalf("seed %d: attachments key without attach ops", seed)
		}
	}
}

// attachScenario draws a create and a mix of ops on one dossier from three
// origins, many of them attach ops over a small pool of blobs (so the same
// content is attached more than once), some with bad bodies, some ordered
// before the create.
func attachScenario(t *rapid.T) []Op {
	pool := []Manifest{testManifest(1, TypePDF), testManifest(ChunkSize+1, TypeJPEG), testManifest(3*ChunkSize, TypeTIFF)}
	names := []string{"a.pdf", "cccd.jpg", "scan.tif", "giấy tờ.pdf"}
	origins := []string{"w1", "w1-backup", "city"}
	roles := []Role{RoleClerk, RoleHead, RoleAdmin}
	seq := map[string]uint64{}
	mk := func(kind Kind, body []byte) Op {
		o := rapid.SampledFrom(origins).Draw(t, "origin")
		seq[o]++
		return Op{
			ID: OpID{o, seq[o]}, Ward: "W1", Dossier: "D1",
			HLC:   NewHLC(rapid.Int64Range(990, 1_040).Draw(t, "wall"), rapid.Uint16Range(0, 2).Draw(t, "logical")),
			Actor: Actor{ID: fmt.Sprintf("u%d", rapid.IntRange(0, 2).Draw(t, "actor")), Role: rapid.SampledFrom(roles).Draw(t, "role")},
			Kind:  kind, Body: body,
		}
	}
	create := mk(KindCreate, MarshalBody(CreateBody{Procedure: "birth-registration", ReceiptNo: "R1", ReceivedAt: 1, DueAt: 1_030}))
	create.HLC = NewHLC(1_000, 0)
	ops := []Op{create}
	n := rapid.IntRange(0, 20).Draw(t, "n")
	for i := 0; i < n; i++ {
		switch rapid.IntRange(0, 5).Draw(t, "kind") {
		case 0, 1, 2:
			m := rapid.SampledFrom(pool).Draw(t, "blob")
			ops = append(ops, mk(KindAttach, MarshalBody(NewAttachBody(rapid.SampledFrom(names).Draw(t, "name"), &m))))
		case 3:
			bad := NewAttachBody("x.exe", &pool[0])
			bad.Type = "application/x-msdownload"
			ops = append(ops, mk(KindAttach, MarshalBody(bad)))
		case 4:
			ops = append(ops, mk(KindTransition, MarshalBody(TransitionBody{To: rapid.SampledFrom(Statuses).Draw(t, "to")})))
		case 5:
			ops = append(ops, mk(KindAnnotate, MarshalBody(AnnotateBody{Text: fmt.Sprint(i)})))
		}
	}
	return ops
}

// TestFoldAttachOrderIndependent is invariant 2 with attach ops: any
// arrival order, with any duplicates, folds to the same state hash; and
// the attachments are exactly the distinct blobs of the attach ops that
// apply (valid, ordered after the create), each as its first such op.
func TestFoldAttachOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ops := attachScenario(t)
		want := Fold(ops)
		wantHash := StateHash(&want)

		arrived := rapid.Permutation(ops).Draw(t, "arrival")
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(ops)-1), 0, 5).Draw(t, "dups") {
			arrived = append(arrived, ops[i])
		}
		arrived = rapid.Permutation(arrived).Draw(t, "arrival with dups")
		got := Fold(arrived)
		if StateHash(&got) != wantHash {
			t.Fatalf("state hash differs by arrival order:\n%s\n%s", EncodeDossier(&want), EncodeDossier(&got))
		}
		if len(want.History) != len(ops) {
			t.Fatalf("history has %d events for %d ops", len(want.History), len(ops))
		}

		// The oracle: walk the merged order.
		sorted := slices.Clone(ops)
		SortOps(sorted)
		created := false
		var expect []string
		seen := map[string]bool{}
		for i := range sorted {
			o := &sorted[i]
			switch o.Kind {
			case KindCreate:
				created = true
			case KindAttach:
				var b AttachBody
				if json.Unmarshal(o.Body, &b) != nil {
					continue
				}
				if _, err := b.Manifest(); err != nil || !created || seen[b.Hash] {
					continue
				}
				seen[b.Hash] = true
				expect = append(expect, o.ID.String()+" "+b.Hash)
			}
		}
		var have []string
		for _, a := range want.Attachments {
			have = append(have, a.Op+" "+a.Hash)
		}
		if !slices.Equal(have, expect) {
			t.Fatalf("attachments %q, want %q", have, expect)
		}
		if len(want.Attachments) == 0 && bytes.Contains(EncodeDossier(&want), []byte(`"attachments"`)) {
			t.Fatal(`no attachments, but an "attachments" key`)
		}
	})
}

// TestFoldAttachIncrementalEqualsFull: applying ops one at a time in the
// merged order (what a node does with its own ops) equals the fold.
func TestFoldAttachIncrementalEqualsFull(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ops := attachScenario(t)
		SortOps(ops)
		var inc Dossier
		for i := range ops {
			Apply(&inc, &ops[i])
		}
		full := Fold(ops)
		if StateHash(&inc) != StateHash(&full) {
			t.Fatalf("incremental apply differs from fold:\n%s\n%s", EncodeDossier(&inc), EncodeDossier(&full))
		}
		// And the stored state, decoded, is the same state.
		back, err := DecodeDossier(EncodeDossier(&full))
		if err != nil || StateHash(&back) != StateHash(&full) {
			t.Fatalf("decode/encode of the state changes it: %v", err)
		}
	})
}
