package sync

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

func chain(t *testing.T, key ed25519.PrivateKey, origin string, n int) []schema.Op {
	t.Helper()
	var ops []schema.Op
	var prev [32]byte
	for i := 1; i <= n; i++ {
		op := schema.Op{ID: schema.OpID{Origin: origin, Seq: uint64(i)}, Ward: "HCM001",
			Dossier: fmt.Sprintf("01M845RJX5TY05VRQ5B5H4W%03d", i), HLC: schema.NewHLC(int64(1000+i), 0),
			Actor: schema.Actor{ID: "hoa", Role: schema.RoleClerk}, Kind: schema.KindCreate,
			Body: schema.MarshalBody(schema.CreateBody{Procedure: "certified-copy"}), Prev: prev}
		op.Sign(key)
		prev = op.Hash()
		ops = append(ops, op)
	}
	return ops
}

// TestVerifyBatch: a batch is accepted only as one origin's contiguous,
// hash-chained run whose ends are signed by the registered key; any
// tampering in the middle breaks the chain.
func TestVerifyBatch(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	good := chain(t, key, "w1", 5)
	cases := []struct {
		name string
		ops  func() []schema.Op
		want error
	}{
		{"good", func() []schema.Op { return good }, nil},
		{"one op", func() []schema.Op { return good[:1] }, nil},
		{"empty", func() []schema.Op { return nil }, schema.ErrInvalid},
		{"another origin", func() []schema.Op { return chain(t, key, "w2", 3) }, schema.ErrForbidden},
		{"signed by another key", func() []schema.Op { return chain(t, other, "w1", 3) }, schema.ErrBadSignature},
		{"gap", func() []schema.Op { return []schema.Op{good[0], good[2]} }, schema.ErrInvalid},
		{"middle op changed", func() []schema.Op {
			ops := append([]schema.Op(nil), good...)
			ops[2].Body = schema.MarshalBody(schema.CreateBody{Procedure: "land-use-right-change"})
			return ops
		}, schema.ErrBadSignature},
		{"bad ward code", func() []schema.Op {
			ops := chain(t, key, "w1", 1)
			ops[0].Ward = "HCM001\x00" // a separator smuggled into a key
			ops[0].Sign(key)
			return ops
		}, schema.ErrInvalid},
		{"bad dossier id", func() []schema.Op {
			ops := chain(t, key, "w1", 1)
			ops[0].Dossier = "D1"
			ops[0].Sign(key)
			return ops
		}, schema.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := verifyBatch(c.ops(), "w1", pub)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("verifyBatch = %v, want %v", err, c.want)
			}
		})
	}
}
