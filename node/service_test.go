package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

func validNew(i int) schema.NewDossier {
	return schema.NewDossier{
		Procedure: "certified-copy",
		Applicant: schema.Applicant{Name: fmt.Sprintf("Nguyễn Thị Hoa %d", i), IDNumber: fmt.Sprintf("0792%08d", i)},
		Fields:    map[string]string{"copies": strconv.Itoa(i%5 + 1)},
	}
}

func official(t testing.TB, n *node.Node, token string) store.Official {
	t.Helper()
	o, err := n.Authenticate(token)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return o
}

// Many clerks save at once: every create is acknowledged, numbered once,
// in a gapless signed chain, and the writers share fsyncs.
func TestConcurrentCreates(t *testing.T) {
	e := startNode(t)
	n := e.Node
	who := official(t, n, e.Admin)
	ctx := context.Background()

	const workers, each = 32, 4
	const total = workers * each
	commits0, writes0 := n.Store().Commits(), n.Store().WritesCommitted()
	start := make(chan struct{})
	results := make([][]schema.Dossier, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := range each {
				d, err := n.CreateDossier(ctx, who, validNew(w*each+i))
				if err != nil {
					errs[w] = err
					return
				}
				results[w] = append(results[w], d)
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent creates failed: %v", err)
	}

	receipts := map[string]string{} // receipt -> dossier
	counters := map[int]bool{}
	for _, rs := range results {
		for _, d := range rs {
			if prev, dup := receipts[d.ReceiptNo]; dup {
				t.Fatalf("receipt %s issued twice (%s, %s)", d.ReceiptNo, prev, d.ID)
			}
			receipts[d.ReceiptNo] = d.ID
			m := receiptRe.FindStringSubmatch(d.ReceiptNo)
			if m == nil {
				t.Fatalf("receipt %q", d.ReceiptNo)
			}
			c, _ := strconv.Atoi(m[4])
			counters[c] = true
		}
	}
	if len(receipts) != total {
		t.Fatalf("%d receipts, want %d", len(receipts), total)
	}
	for c := 1; c <= total; c++ {
		if !counters[c] {
			t.Errorf("receipt counter %d never issued (counters must be gapless within the day)", c)
		}
	}

	if seq := lastSeq(t, n); seq != total {
		t.Errorf("LastSeq %d, want %d", seq, total)
	}
	commits := n.Store().Commits() - commits0
	writes := n.Store().WritesCommitted() - writes0
	t.Logf("%d creates in %d commits (fsyncs)", total, commits)
	if writes != total {
		t.Errorf("%d writes committed, want %d", writes, total)
	}
	if commits >= total || commits == 0 {
		t.Errorf("%d commits for %d concurrent creates: group commit should share fsyncs", commits, total)
	}

	// The log is a gapless chain of signed ops, one create per dossier.
	pub := n.Identity().PublicKey
	dossiers := map[string]bool{}
	for _, id := range receipts {
		dossiers[id] = true
	}
	if n.Identity().PrivateKey != nil {
		t.Error("Identity() exposes the private key")
	}
	err := n.Store().View(func(tx *store.Tx) error {
		ops, err := tx.OpsOf(testNodeID, 0, total+10)
		if err != nil {
			return err
		}
		if len(ops) != total {
			return fmt.Errorf("%d ops in the log, want %d", len(ops), total)
		}
		var prev [32]byte
		var prevHLC schema.HLC
		for i := range ops {
			op := &ops[i]
			if op.ID.Seq != uint64(i+1) || op.Kind != schema.KindCreate || op.Actor.ID != who.ID {
				return fmt.Errorf("op %d: %v %s by %s", i, op.ID, op.Kind, op.Actor.ID)
			}
			if err := op.Verify(pub); err != nil {
				return err
			}
			if op.Prev != prev {
				return fmt.Errorf("op %v: prev hash does not chain", op.ID)
			}
			if op.HLC <= prevHLC {
				return fmt.Errorf("op %v: HLC %v not after %v", op.ID, op.HLC, prevHLC)
			}
			prev, prevHLC = op.Hash(), op.HLC
			if !dossiers[op.Dossier] {
				return fmt.Errorf("op %v creates %s: not one acknowledged dossier, or created twice", op.ID, op.Dossier)
			}
			delete(dossiers, op.Dossier)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Every acknowledged dossier is there after a restart, with its receipt.
	e.reopen()
	for receipt, id := range receipts {
		d, err := e.Node.Dossier(id)
		if err != nil || d.ReceiptNo != receipt {
			t.Fatalf("after reopen: dossier %s: %v, receipt %q want %q", id, err, d.ReceiptNo, receipt)
		}
	}
	items, next, err := e.Node.List(store.ListQuery{Limit: 500})
	if err != nil || len(items) != total || next != "" {
		t.Fatalf("List after reopen: %d items, next %q, %v", len(items), next, err)
	}
}

// The materialized dossier a node serves is exactly the fold of its ops,
// before and after a restart.
func TestStateIsFoldOfOps(t *testing.T) {
	e := startNode(t)
	ctx := context.Background()
	clerk, head, _ := e.officials()
	n := e.Node
	c, h := official(t, n, clerk.Token), official(t, n, head.Token)

	var ids []string
	for i := range 6 {
		d, err := n.CreateDossier(ctx, c, validNew(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	must := func(_ schema.Dossier, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(n.Transition(ctx, c, ids[0], schema.StatusInReview, "nhận"))
	must(n.Assign(ctx, c, ids[0], c.ID))
	must(n.Annotate(ctx, c, ids[0], "thiếu giấy tờ"))
	must(n.Transition(ctx, c, ids[0], schema.StatusSupplementRequested, ""))
	must(n.Transition(ctx, c, ids[0], schema.StatusInReview, ""))
	must(n.Transition(ctx, h, ids[0], schema.StatusRejected, "không đủ điều kiện"))
	must(n.Transition(ctx, c, ids[0], schema.StatusReturned, ""))
	must(n.Transition(ctx, c, ids[1], schema.StatusWithdrawn, "công dân rút"))
	must(n.Assign(ctx, h, ids[2], c.ID))

	check := func() {
		t.Helper()
		err := e.Node.Store().View(func(tx *store.Tx) error {
			for _, id := range ids {
				d, ok, err := tx.Dossier(id)
				if err != nil || !ok {
					return fmt.Errorf("dossier %s: %v %v", id, ok, err)
				}
				ops, err := tx.DossierOps(id)
				if err != nil {
					return err
				}
				// Fold in a scrambled order with a duplicate: same state.
				scrambled := append(slices.Clone(ops), ops[0])
				slices.Reverse(scrambled)
				f := schema.Fold(scrambled)
				if schema.StateHash(&f) != schema.StateHash(&d) {
					return fmt.Errorf("dossier %s: stored state differs from the fold of its %d ops:\nstored %s\nfolded %s",
						id, len(ops), schema.EncodeDossier(&d), schema.EncodeDossier(&f))
				}
				if len(d.History) != len(ops) {
					return fmt.Errorf("dossier %s: %d history events for %d ops", id, len(d.History), len(ops))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check()
	e.reopen()
	check()
}

// The service's errors are typed, so the HTTP layer (and the CLI) can tell
// a bad field from a missing dossier from a forbidden move, and a failed
// call writes nothing.
func TestServiceErrors(t *testing.T) {
	e := startNode(t)
	ctx := context.Background()
	clerk, _, _ := e.officials()
	n := e.Node
	c := official(t, n, clerk.Token)
	d, err := n.CreateDossier(ctx, c, validNew(1))
	if err != nil {
		t.Fatal(err)
	}
	seq := lastSeq(t, n)

	fieldIs := func(field string) func(error) bool {
		return func(err error) bool {
			var fe *schema.FieldError
			return errors.As(err, &fe) && fe.Field == field && errors.Is(err, schema.ErrInvalid)
		}
	}
	is := func(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }
	roleDenied := func(err error) bool {
		var te *schema.TransitionError
		return errors.As(err, &te) && te.RoleDenied && errors.Is(err, schema.ErrForbidden)
	}
	notInWorkflow := func(err error) bool {
		var te *schema.TransitionError
		return errors.As(err, &te) && !te.RoleDenied && errors.Is(err, schema.ErrConflict) &&
			slices.Equal(te.Allowed, []schema.Status{schema.StatusInReview, schema.StatusWithdrawn})
	}
	bad := func(mod func(*schema.NewDossier)) schema.NewDossier {
		in := validNew(2)
		mod(&in)
		return in
	}
	cases := []struct {
		name string
		call func() error
		ok   func(error) bool
	}{
		{"unknown procedure", func() error {
			_, err := n.CreateDossier(ctx, c, bad(func(in *schema.NewDossier) { in.Procedure = "nope" }))
			return err
		}, fieldIs("procedure")},
		{"11-digit id", func() error {
			_, err := n.CreateDossier(ctx, c, bad(func(in *schema.NewDossier) { in.Applicant.IDNumber = "07920300000" }))
			return err
		}, fieldIs("applicant.id_number")},
		{"201-char name", func() error {
			_, err := n.CreateDossier(ctx, c, bad(func(in *schema.NewDossier) { in.Applicant.Name = strings.Repeat("ễ", 201) }))
			return err
		}, fieldIs("applicant.name")},
		{"unknown ward", func() error {
			_, err := n.CreateDossier(ctx, c, bad(func(in *schema.NewDossier) { in.Ward = "NOPE" }))
			return err
		}, fieldIs("ward")},
		{"unknown dossier", func() error {
			_, err := n.Transition(ctx, c, "01JAAAAAAAAAAAAAAAAAAAAAAA", schema.StatusInReview, "")
			return err
		}, is(schema.ErrNotFound)},
		{"malformed id", func() error { _, err := n.Annotate(ctx, c, "../x", "hi"); return err }, is(schema.ErrNotFound)},
		{"malformed id get", func() error { _, err := n.Dossier("d/x"); return err }, is(schema.ErrNotFound)},
		{"unknown status", func() error { _, err := n.Transition(ctx, c, d.ID, "done", ""); return err }, fieldIs("to")},
		{"not in workflow", func() error { _, err := n.Transition(ctx, c, d.ID, schema.StatusApproved, ""); return err }, notInWorkflow},
		{"clerk assigns another", func() error { _, err := n.Assign(ctx, c, d.ID, "admin"); return err }, is(schema.ErrForbidden)},
		{"assign unknown official", func() error { _, err := n.Assign(ctx, c, d.ID, "nobody"); return err }, fieldIs("official")},
		{"empty note", func() error { _, err := n.Annotate(ctx, c, d.ID, " \n "); return err }, fieldIs("text")},
		{"clerk adds official", func() error {
			_, _, err := n.AddOfficial(ctx, c, "", "X", schema.RoleClerk)
			return err
		}, is(schema.ErrForbidden)},
		{"system role", func() error {
			_, _, err := n.AddOfficial(ctx, official(t, n, e.Admin), "", "X", schema.RoleSystem)
			return err
		}, fieldIs("role")},
		{"bad token", func() error { _, err := n.Authenticate("wst_nope"); return err }, is(schema.ErrUnauthorized)},
		{"token without prefix", func() error { _, err := n.Authenticate(""); return err }, is(schema.ErrUnauthorized)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !tc.ok(err) {
				t.Fatalf("err = %v (%T)", err, err)
			}
		})
	}
	must := func(_ schema.Dossier, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(n.Transition(ctx, c, d.ID, schema.StatusInReview, ""))
	_, err = n.Transition(ctx, c, d.ID, schema.StatusApproved, "")
	if !roleDenied(err) {
		t.Fatalf("clerk approves: %v", err)
	}
	if got := lastSeq(t, n); got != seq+1 {
		t.Errorf("LastSeq %d, want %d: refused calls must write nothing", got, seq+1)
	}

	// After Close, writes are refused, not lost silently.
	e.close()
	if _, err := n.CreateDossier(ctx, c, validNew(3)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("create on a closed node: %v, want store.ErrClosed", err)
	}
}

// The input limits at their boundaries: the largest valid input is taken,
// one more is refused.
func TestCreateBoundaries(t *testing.T) {
	e := startNode(t)
	ctx := context.Background()
	who := official(t, e.Node, e.Admin)
	fields := func(k int) map[string]string {
		m := map[string]string{}
		for i := range k {
			m[fmt.Sprintf("f%02d", i)] = strings.Repeat("ư", schema.MaxFieldValueLen)
		}
		return m
	}
	ok := validNew(1)
	ok.Applicant.Name = strings.Repeat("Ữ", schema.MaxNameLen)
	ok.Applicant.Phone = "+84 909.123-456"
	ok.Fields = fields(schema.MaxFields)
	ok.Ward = otherWard()
	d, err := e.Node.CreateDossier(ctx, who, ok)
	if err != nil {
		t.Fatalf("largest valid dossier refused: %v", err)
	}
	if d.Applicant.Phone != "+84909123456" || len(d.Fields) != schema.MaxFields || d.Ward != otherWard() {
		t.Errorf("dossier %+v", d.Applicant)
	}
	tooMany := validNew(2)
	tooMany.Fields = fields(schema.MaxFields + 1)
	if _, err := e.Node.CreateDossier(ctx, who, tooMany); err == nil {
		t.Error("51 fields accepted")
	}
	long := validNew(3)
	long.Fields = map[string]string{"x": strings.Repeat("a", schema.MaxFieldValueLen+1)}
	if _, err := e.Node.CreateDossier(ctx, who, long); err == nil {
		t.Error("over-long field value accepted")
	}
}

// checkTokensHashed checks that the store keeps each official's token only
// as its SHA-256, then closes the node and looks at every key and value in
// badger, and every byte of the data dir, for the raw tokens. It reopens
// the node before returning.
func checkTokensHashed(t *testing.T, e *testEnv, tokens map[string]string, marker string) {
	t.Helper()
	err := e.Node.Store().View(func(tx *store.Tx) error {
		for id, tok := range tokens {
			o, ok, err := tx.Official(id)
			if err != nil || !ok {
				return fmt.Errorf("official %s: %v %v", id, ok, err)
			}
			sum := sha256.Sum256([]byte(tok))
			if !bytes.Equal(o.TokenHash, sum[:]) {
				return fmt.Errorf("official %s: token hash %x, want sha256(token) %x", id, o.TokenHash, sum)
			}
			if bytes.Contains(o.TokenHash, []byte(tok)) || bytes.Contains([]byte(tok), o.TokenHash) {
				return fmt.Errorf("official %s: the token itself is stored", id)
			}
			byTok, ok, err := tx.OfficialByToken(sum[:])
			if err != nil || !ok || byTok.ID != id {
				return fmt.Errorf("token of %s finds %q %v %v", id, byTok.ID, ok, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	dir := e.cfg.Dir
	e.close()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	sawMarker := false
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			sawMarker = sawMarker || bytes.Contains(v, []byte(marker))
			for id, tok := range tokens {
				if bytes.Contains(k, []byte(tok)) || bytes.Contains(v, []byte(tok)) {
					return fmt.Errorf("the raw token of %s is stored under key %q", id, k)
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if !sawMarker {
		t.Fatalf("the scan never saw the official named %q: it is not looking at the right data", marker)
	}
	err = filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for id, tok := range tokens {
			if bytes.Contains(b, []byte(tok)) {
				return fmt.Errorf("the raw token of %s is in %s", id, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.open()
	// The tokens still work after all that.
	for id, tok := range tokens {
		if o, err := e.Node.Authenticate(tok); err != nil || o.ID != id {
			t.Errorf("token of %s after reopen: %v %v", id, o.ID, err)
		}
	}
}

// The node's clock never runs backwards across a restart, even if the wall
// clock does: new ops sort after old ones.
func TestClockFloorAcrossRestart(t *testing.T) {
	e := startNode(t)
	ctx := context.Background()
	who := official(t, e.Node, e.Admin)
	d, err := e.Node.CreateDossier(ctx, who, validNew(1))
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(-2 * time.Hour) // the office PC's clock is set back
	e.reopen()
	who = official(t, e.Node, e.Admin)
	d2, err := e.Node.Transition(ctx, who, d.ID, schema.StatusInReview, "")
	if err != nil {
		t.Fatal(err)
	}
	if h := d2.History; len(h) != 2 || h[1].HLC <= h[0].HLC {
		t.Fatalf("history HLCs %v then %v: the clock went backwards", h[0].HLC, h[1].HLC)
	}
}

// `ward init` makes a node that answers at once; it refuses to initialize a
// data dir twice, and Open refuses a dir that was never initialized.
func TestInitAndOpen(t *testing.T) {
	url, token, n := newTestNode(t)
	if id := n.Identity(); id.Ward != testWard() || id.Node != testNodeID || id.Series != "W1A" || len(id.PublicKey) == 0 {
		t.Errorf("identity %+v", id)
	}
	doRequest(t, "GET", url+"/v1/me", token, nil).want(t, 200)

	dir := t.TempDir()
	cfg := node.Config{Dir: dir}
	p := node.InitParams{Ward: testWard(), Node: "w2b", Series: "B2"}
	if _, err := node.Init(context.Background(), cfg, p); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Init(context.Background(), cfg, p); !errors.Is(err, schema.ErrConflict) {
		t.Errorf("second init: %v, want a conflict", err)
	}
	for _, bad := range []node.InitParams{
		{Ward: "NOPE", Node: "x"},
		{Ward: testWard(), Node: "Bad Node"},
		{Ward: testWard(), Node: "x", Series: "lower"},
	} {
		if _, err := node.Init(context.Background(), node.Config{Dir: t.TempDir()}, bad); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("Init(%+v): %v, want invalid", bad, err)
		}
	}
	if _, err := node.Open(node.Config{Dir: filepath.Join(t.TempDir(), "typo")}); !errors.Is(err, store.ErrNotInitialized) {
		t.Errorf("Open of an empty dir: %v, want ErrNotInitialized", err)
	}
}
