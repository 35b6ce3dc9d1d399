package store

import (
	"encoding/binary"
	"encoding/json"

	"github.com/wardsync/wardsync/node/store/crashpoint"
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
// at the Raft index that committed it (and the tracking ward's, if the
// dossier has one), and the origin's high-water mark. The caller has
// checked that the op is new (HasOp).
func (tx *Tx) PutRemoteOp(op *schema.Op, index uint64) error {
	tx.set(opKey(op.ID), op.Encode())
	tx.set(dossierOpKey(op), opKey(op.ID))
	tx.indexBlobRef(op)
	return tx.IndexChange(op, index)
}

// IndexChange adds a stored op to its ward's change index (and the
// tracking ward's) and raises the origin's high-water mark.
func (tx *Tx) IndexChange(op *schema.Op, index uint64) error {
	tx.set(changeKey(op.Ward, index, op.ID), opKey(op.ID))
	if tracker, ok, err := tx.get(trackerKey(op.Dossier)); err != nil {
		return err
	} else if ok && string(tracker) != op.Ward {
		tx.set(changeKey(string(tracker), index, op.ID), opKey(op.ID))
	}
	return tx.raiseHighWater(op.ID)
}

// raiseHighWater records that origin's ops are stored up to id.Seq.
func (tx *Tx) raiseHighWater(id schema.OpID) error {
	hw, err := tx.getUint(highWaterKey(id.Origin))
	if err != nil {
		return err
	}
	if id.Seq > hw {
		tx.setUint(highWaterKey(id.Origin), id.Seq)
	}
	return nil
}

// HighWater returns the highest seq committed from origin.
func (tx *Tx) HighWater(origin string) (uint64, error) { return tx.getUint(highWaterKey(origin)) }

// Change is one entry of a ward's change index.
type Change struct {
	Index uint64
	Op    schema.Op
	Key   []byte // position in the index, for ChangesAfter
}

// Changes returns up to limit ops of ward committed at Raft indexes above
// since, in commit order.
func (tx *Tx) Changes(ward string, since uint64, limit int) ([]Change, error) {
	// No key equals start (keys go on past the index), so seeking "after"
	// it lands on the first change above since.
	start := binary.BigEndian.AppendUint64(changePrefix(ward), since+1)
	return tx.ChangesAfter(ward, start, limit)
}

// ChangesAfter returns up to limit changes of ward after index key after
// (a Change.Key), so a reader can page through one commit index that holds
// more ops than a page.
func (tx *Tx) ChangesAfter(ward string, after []byte, limit int) ([]Change, error) {
	var out []Change
	prefix := changePrefix(ward)
	err := tx.scan(prefix, after, false, true, func(k, ref []byte) (bool, error) {
		b, ok, err := tx.get(ref)
		if err != nil || !ok {
			return false, err
		}
		op, err := schema.DecodeOp(b)
		if err != nil {
			return false, err
		}
		out = append(out, Change{Index: binary.BigEndian.Uint64(k[len(prefix):]), Op: op, Key: k})
		return len(out) < limit, nil
	})
	return out, err
}

// SetTracker records that ward keeps a tracking copy of a dossier of
// another ward (it received the citizen), so the dossier's changes reach
// that ward's partition too.
func (tx *Tx) SetTracker(dossier, ward string) { tx.set(trackerKey(dossier), []byte(ward)) }

// OriginInfo is what the city knows of an origin: its op-signing key and
// the wards its certificate named when it registered.
type OriginInfo struct {
	Key   []byte   `json:"key"`
	Wards []string `json:"wards"`
	// Role is the certificate's role at registration (ward or backup):
	// only a ward office's node holds epoch 0 of its ward's lease.
	Role schema.PeerRole `json:"role,omitempty"`
	// Index is the commit index of the registration: the latest-registered
	// ward node of a ward is its home office for a handback.
	Index uint64 `json:"index,omitempty"`
}

// OriginKey returns an origin's registered key.
func (tx *Tx) OriginKey(origin string) (OriginInfo, bool, error) {
	var o OriginInfo
	ok, err := getJSON(tx, originKeyKey(origin), &o)
	return o, ok, err
}

// PutOriginKey registers an origin's key (first registration wins).
func (tx *Tx) PutOriginKey(origin string, o OriginInfo) error {
	return setJSON(tx, originKeyKey(origin), o)
}

// Origins lists every registered origin with its high-water mark.
func (tx *Tx) Origins() (map[string]OriginInfo, map[string]uint64, error) {
	infos, hws := map[string]OriginInfo{}, map[string]uint64{}
	err := tx.scan(prefixOriginKey, nil, false, true, func(k, v []byte) (bool, error) {
		var o OriginInfo
		if err := json.Unmarshal(v, &o); err != nil {
			return false, err
		}
		origin := string(k[len(prefixOriginKey):])
		infos[origin] = o
		hw, err := tx.getUint(highWaterKey(origin))
		hws[origin] = hw
		return err == nil, err
	})
	return infos, hws, err
}

// PartitionHead returns the commit index of a ward's latest change (0 if
// none): the pull cursor a ward that is caught up holds.
func (tx *Tx) PartitionHead(ward string) (uint64, error) {
	var head uint64
	prefix := changePrefix(ward)
	err := tx.scan(prefix, nil, true, false, func(k, _ []byte) (bool, error) {
		head = binary.BigEndian.Uint64(k[len(prefix):])
		return false, nil
	})
	return head, err
}

// Ward-side sync cursors.

// PullCursor is the commit index of a ward partition applied so far.
func (tx *Tx) PullCursor(ward string) (uint64, error) {
	if _, ok, err := tx.get(pullCursorKey(ward)); err != nil || ok {
		if err != nil {
			return 0, err
		}
		return tx.getUint(pullCursorKey(ward))
	}
	// A ward node from before per-ward cursors kept one for its own ward:
	// go on from it rather than pull the whole partition again.
	if id, err := tx.Identity(); err == nil && id.Ward == ward {
		return tx.getUint(keyLegacyPullCursor)
	}
	return 0, nil
}

// PushAcked is the highest own seq the city acknowledged.
func (tx *Tx) PushAcked() (uint64, error) { return tx.getUint(keyPushAcked) }

// SetPushAcked moves the push cursor forward (never back).
func (tx *Tx) SetPushAcked(seq uint64) error {
	cur, err := tx.getUint(keyPushAcked)
	if err != nil {
		return err
	}
	if seq > cur {
		tx.setUint(keyPushAcked, seq)
	}
	return nil
}

// ApplyPulled stores ops that came down from the city (deduplicated by ID:
// ops this node made, or already has, are skipped), refolds the dossiers
// they touch from all their ops, and moves the pull cursor, all in this
// one write. It returns how many ops were new.
func (tx *Tx) ApplyPulled(ward string, ops []schema.Op, cursor uint64) (int, error) {
	type work struct {
		old *schema.Dossier
		ops []schema.Op
	}
	touched := map[string]*work{}
	n := 0
	var maxHLC schema.HLC
	for i := range ops {
		if i == len(ops)/2 {
			// Half the page staged, nothing of it committed.
			crashpoint.Hit(crashpoint.PullMid)
		}
		op := &ops[i]
		seen, err := tx.HasOp(op.ID)
		if err != nil {
			return n, err
		}
		if seen {
			continue
		}
		w, ok := touched[op.Dossier]
		if !ok {
			w = &work{}
			d, found, err := tx.Dossier(op.Dossier)
			if err != nil {
				return n, err
			}
			if found {
				w.old = &d
			}
			if w.ops, err = tx.DossierOps(op.Dossier); err != nil {
				return n, err
			}
			touched[op.Dossier] = w
		}
		tx.set(opKey(op.ID), op.Encode())
		tx.set(dossierOpKey(op), opKey(op.ID))
		if m, ok := tx.indexBlobRef(op); ok && op.Ward == ward {
			// A scan of a dossier of the partition this node serves: fetch
			// it in the background (another ward's, on a tracking copy in
			// the partition, is fetched on demand).
			tx.MarkFetch(m.Hash)
		}
		w.ops = append(w.ops, *op)
		maxHLC = max(maxHLC, op.HLC)
		n++
	}
	// The clock floor covers what came in, so this node's next op is later
	// than every op it has seen, even after a restart.
	floor, err := tx.getUint(keyHLC)
	if err != nil {
		return n, err
	}
	tx.setUint(keyHLC, max(floor, uint64(maxHLC)))
	for _, w := range touched {
		d := schema.Fold(w.ops)
		if err := tx.PutDossier(w.old, &d); err != nil {
			return n, err
		}
	}
	cur, err := tx.getUint(pullCursorKey(ward))
	if err != nil {
		return n, err
	}
	if cursor > cur {
		tx.setUint(pullCursorKey(ward), cursor)
	}
	return n, nil
}

// Tracker returns the ward that keeps a tracking copy of a dossier, if any.
func (tx *Tx) Tracker(dossier string) (string, bool, error) {
	v, ok, err := tx.get(trackerKey(dossier))
	return string(v), ok, err
}
