package store

import (
	"encoding/binary"

	"github.com/wardsync/wardsync/schema"
)

// Records kept only by the city FSM.

// Applied returns the last Raft index the FSM applied, so a replayed entry
// is recognized and skipped.
func (tx *Tx) Applied() (uint64, error) { return tx.getUint(keyApplied) }

// SetApplied records the last Raft index applied.
func (tx *Tx) SetApplied(index uint64) { tx.setUint(keyApplied, index) }

// PutRemoteOp stores an op made on another node (or by the city origin
// through the FSM): the op, its dossier index entry, the ward change index
// at the Raft index that committed it, and the origin's high-water mark.
// The caller has checked that the op is new (HasOp).
func (tx *Tx) PutRemoteOp(op *schema.Op, index uint64) error {
	tx.set(opKey(op.ID), op.Encode())
	tx.set(dossierOpKey(op), opKey(op.ID))
	tx.set(changeKey(op.Ward, index, op.ID), opKey(op.ID))
	hw, err := tx.getUint(highWaterKey(op.ID.Origin))
	if err != nil {
		return err
	}
	if op.ID.Seq > hw {
		tx.setUint(highWaterKey(op.ID.Origin), op.ID.Seq)
	}
	return nil
}

// IndexChange adds an op already stored by AppendLocal to the ward change
// index and the origin's high-water mark.
func (tx *Tx) IndexChange(op *schema.Op, index uint64) error {
	tx.set(changeKey(op.Ward, index, op.ID), opKey(op.ID))
	hw, err := tx.getUint(highWaterKey(op.ID.Origin))
	if err != nil {
		return err
	}
	if op.ID.Seq > hw {
		tx.setUint(highWaterKey(op.ID.Origin), op.ID.Seq)
	}
	return nil
}

// HighWater returns the highest seq committed from origin.
func (tx *Tx) HighWater(origin string) (uint64, error) { return tx.getUint(highWaterKey(origin)) }

// Change is one entry of a ward's change index.
type Change struct {
	Index uint64
	Op    schema.Op
}

// Changes returns up to limit ops of ward committed at Raft indexes above
// since, in commit order (the pull cursor is the last Index returned).
func (tx *Tx) Changes(ward string, since uint64, limit int) ([]Change, error) {
	var out []Change
	prefix := changePrefix(ward)
	start := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), since+1)
	// No key equals start (keys go on past the index), so seeking "after"
	// it lands on the first change above since.
	err := tx.scan(prefix, start, false, true, func(k, ref []byte) (bool, error) {
		b, ok, err := tx.get(ref)
		if err != nil || !ok {
			return false, err
		}
		op, err := schema.DecodeOp(b)
		if err != nil {
			return false, err
		}
		out = append(out, Change{Index: binary.BigEndian.Uint64(k[len(prefix):]), Op: op})
		return len(out) < limit, nil
	})
	return out, err
}
