package schema

import (
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"testing"
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
