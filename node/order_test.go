package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// TestLocalOpsSortAfterPulledOnes: a clerk's note written while a pulled
// op stamped ahead of this node's clock lands on the same dossier (an
// office whose clock runs fast, or a backup whose clock was pushed ahead by
// one) must be stamped after it. The node appends its own op to the
// dossier's state while every other replica folds the ops sorted by HLC;
// an op stamped earlier would sit last here and elsewhere before the
// pulled one, and the replicas' states would differ for good (chaos seed
// 9100031: a backup and the office it stood in for, after a failover with
// a skewed clock). The pull and the note race through one group commit,
// so each round checks the stored state is the fold of the stored ops.
func TestLocalOpsSortAfterPulledOnes(t *testing.T) {
	e := startNode(t)
	clerk, _, _ := e.officials()
	who, err := e.Node.Authenticate(clerk.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for round := range 60 {
		d := e.createDossier(clerk.Token, "birth-registration", round)
		sd, err := e.Node.Dossier(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		// Three minutes ahead of this node's clock (within the drift a
		// replica accepts).
		remote := schema.Op{
			ID: schema.OpID{Origin: "w9", Seq: uint64(round + 1)}, Ward: sd.Ward, Dossier: sd.ID,
			HLC:   schema.NewHLC(sd.LastHLC.Wall()+180_000, 0),
			Actor: schema.Actor{ID: "w9-clerk", Name: "Cán bộ", Role: schema.RoleClerk},
			Kind:  schema.KindAnnotate, Epoch: 0, Body: schema.MarshalBody(schema.AnnotateBody{Text: fmt.Sprint("remote ", round)}),
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := e.Node.ApplyPulled(ctx, e.Ward, []schema.Op{remote}, uint64(round+1)); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if _, err := e.Node.Annotate(ctx, who, sd.ID, fmt.Sprint("local ", round)); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		var stored, folded schema.Dossier
		if err := e.Node.Store().View(func(tx *store.Tx) error {
			var err error
			if stored, _, err = tx.Dossier(sd.ID); err != nil {
				return err
			}
			ops, err := tx.DossierOps(sd.ID)
			folded = schema.Fold(ops)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if schema.StateHash(&stored) != schema.StateHash(&folded) {
			t.Fatalf("round %d: the stored state is not the fold of the stored ops (history %v, fold %v)",
				round, opsOf(stored), opsOf(folded))
		}
	}
}

func opsOf(d schema.Dossier) []string {
	var out []string
	for _, ev := range d.History {
		out = append(out, ev.Op)
	}
	return out
}
