package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/wardsync/wardsync/schema"
)

// Records about attachments' blobs. The bytes themselves are in the node's
// blob store (node/blobstore); the state store keeps which dossiers refer
// to which blob, what is still to upload or fetch, and on the city which
// blobs a majority holds.

// AttachManifest returns the manifest of an attach op (false for any
// other kind, or an attach body that does not parse: the fold records that
// one as a conflict, and it refers to no blob).
func AttachManifest(op *schema.Op) (schema.Manifest, bool) {
	if op.Kind != schema.KindAttach {
		return schema.Manifest{}, false
	}
	var b schema.AttachBody
	if json.Unmarshal(op.Body, &b) != nil {
		return schema.Manifest{}, false
	}
	m, err := b.Manifest()
	return m, err == nil
}

// indexBlobRef records that op's dossier refers to op's blob, if op is an
// attach op. Every path that stores an op calls it.
func (tx *Tx) indexBlobRef(op *schema.Op) (schema.Manifest, bool) {
	m, ok := AttachManifest(op)
	if ok {
		tx.set(blobRefKey(m.Hash, op.Dossier), nil)
	}
	return m, ok
}

// BlobRefs returns the dossiers whose attach ops name blob h.
func (tx *Tx) BlobRefs(h [32]byte) ([]string, error) {
	var out []string
	prefix := blobRefPrefix(h)
	err := tx.scan(prefix, nil, false, false, func(k, _ []byte) (bool, error) {
		out = append(out, string(k[len(prefix):]))
		return true, nil
	})
	return out, err
}

// BlobReferenced reports whether any stored op names blob h.
func (tx *Tx) BlobReferenced(h [32]byte) (bool, error) { return tx.anyUnder(blobRefPrefix(h)) }

// blobList reads up to limit hashes of a family keyed by hash alone.
func (tx *Tx) blobList(prefix []byte, limit int) ([][32]byte, error) {
	var out [][32]byte
	if limit <= 0 {
		return nil, nil
	}
	err := tx.scan(prefix, nil, false, false, func(k, _ []byte) (bool, error) {
		if len(k) != len(prefix)+32 {
			return false, fmt.Errorf("store: bad blob key %q", k)
		}
		var h [32]byte
		copy(h[:], k[len(prefix):])
		out = append(out, h)
		return len(out) < limit, nil
	})
	return out, err
}

// MarkUpload records that blob h, named by this node's attach op seq,
// must still reach the city. The blob goes up only once the city holds the
// op (metadata first; and the city takes a ward's blob only for an attach
// op of that ward that waits for it).
func (tx *Tx) MarkUpload(h [32]byte, seq uint64) {
	if cur, ok, _ := tx.UploadSeq(h); ok && cur <= seq {
		return // the earliest op naming it is the one to wait for
	}
	tx.setUint(uploadKey(h), seq)
}

// UploadSeq returns the seq of the attach op blob h's upload waits for.
func (tx *Tx) UploadSeq(h [32]byte) (uint64, bool, error) {
	v, ok, err := tx.get(uploadKey(h))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, true, nil // written before seqs were kept: no wait
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// ClearUpload records that the city holds blob h on a majority.
func (tx *Tx) ClearUpload(h [32]byte) { tx.del(uploadKey(h)) }

// PendingUploads lists up to limit blobs still to upload, in hash order.
func (tx *Tx) PendingUploads(limit int) ([][32]byte, error) { return tx.blobList(prefixUpload, limit) }

// MarkFetch records that blob h, attached to a dossier of this ward by
// another node, should be fetched from the city.
func (tx *Tx) MarkFetch(h [32]byte) { tx.set(fetchKey(h), nil) }

// ClearFetch records that blob h is held here in full.
func (tx *Tx) ClearFetch(h [32]byte) { tx.del(fetchKey(h)) }

// PendingFetches lists up to limit blobs still to fetch.
func (tx *Tx) PendingFetches(limit int) ([][32]byte, error) { return tx.blobList(prefixFetch, limit) }

// On the city FSM only: which blobs a majority of members holds, and the
// attach ops waiting for theirs.

// blobStoredRecord is a stored blob's manifest in the FSM (hex hashes,
// as in an attach body, so it reads in a dump).
type blobStoredRecord struct {
	Size   int64    `json:"size"`
	Type   string   `json:"type"`
	Chunks []string `json:"chunks"`
}

// PutBlobStored records that a majority of members holds blob m.
func (tx *Tx) PutBlobStored(m *schema.Manifest) error {
	b := schema.NewAttachBody("blob", m)
	return setJSON(tx, blobStoredKey(m.Hash), blobStoredRecord{Size: b.Size, Type: b.Type, Chunks: b.Chunks})
}

// BlobStored returns the manifest of blob h if a majority holds it.
func (tx *Tx) BlobStored(h [32]byte) (schema.Manifest, bool, error) {
	var r blobStoredRecord
	ok, err := getJSON(tx, blobStoredKey(h), &r)
	if err != nil || !ok {
		return schema.Manifest{}, false, err
	}
	m, err := r.manifest(h)
	return m, err == nil, err
}

func (r blobStoredRecord) manifest(h [32]byte) (schema.Manifest, error) {
	b := schema.AttachBody{Name: "blob", Hash: fmt.Sprintf("%x", h[:]), Size: r.Size, Type: r.Type, Chunks: r.Chunks}
	return b.Manifest()
}

// StoredBlobs calls fn for every blob a majority holds, in hash order.
func (tx *Tx) StoredBlobs(fn func(m *schema.Manifest) error) error {
	return tx.scan(prefixBlobStored, nil, false, true, func(k, v []byte) (bool, error) {
		if len(k) != len(prefixBlobStored)+32 {
			return false, fmt.Errorf("store: bad blob key %q", k)
		}
		var h [32]byte
		copy(h[:], k[len(prefixBlobStored):])
		var r blobStoredRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return false, err
		}
		m, err := r.manifest(h)
		if err != nil {
			return false, err
		}
		return true, fn(&m)
	})
}

// HoldOp stores a pushed attach op whose blob no majority holds yet: in
// its origin's log (so the origin's later ops are not held up behind it,
// and the op is never applied twice) but not in its dossier or its ward's
// change index, so no replica folds it before its blob is safe.
func (tx *Tx) HoldOp(op *schema.Op, blob [32]byte) error {
	tx.set(opKey(op.ID), op.Encode())
	tx.set(heldKey(blob, op.ID), opKey(op.ID))
	return tx.raiseHighWater(op.ID)
}

// ReleaseHeld returns origin's ops held for blob h and files each under
// its dossier and its ward's change index at Raft index (ops held earlier
// in the same write included: the scan sees them).
func (tx *Tx) ReleaseHeld(h [32]byte, origin string, index uint64) ([]schema.Op, error) {
	var out []schema.Op
	var keys [][]byte
	err := tx.scan(heldOriginPrefix(h, origin), nil, false, true, func(k, ref []byte) (bool, error) {
		b, ok, err := tx.get(ref)
		if err != nil || !ok {
			return false, fmt.Errorf("store: held op %q missing: %v", ref, err)
		}
		op, err := schema.DecodeOp(b)
		if err != nil {
			return false, err
		}
		out = append(out, op) // one held key per op
		keys = append(keys, k)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		op := &out[i]
		tx.del(keys[i])
		tx.set(dossierOpKey(op), opKey(op.ID))
		tx.indexBlobRef(op)
		if err := tx.IndexChange(op, index); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// HeldOps counts the attach ops waiting for their blobs.
func (tx *Tx) HeldOps() (int, error) {
	n := 0
	err := tx.scan(prefixHeld, nil, false, false, func(_, _ []byte) (bool, error) { n++; return true, nil })
	return n, err
}

// UploadPending reports whether blob h is still to reach the city (marked
// by MarkUpload and not yet cleared).
func (tx *Tx) UploadPending(h [32]byte) (bool, error) {
	_, ok, err := tx.get(uploadKey(h))
	return ok, err
}

// HasHeld reports whether any attach op is waiting for blob h.
func (tx *Tx) HasHeld(h [32]byte) (bool, error) { return tx.anyUnder(heldPrefix(h)) }

// HeldFor reports whether an attach op of origin waits for blob h: a ward
// may upload a blob only for such an op.
func (tx *Tx) HeldFor(h [32]byte, origin string) (bool, error) {
	return tx.anyUnder(heldOriginPrefix(h, origin))
}

// AllBlobRefs calls fn for every blob reference (blob, dossier), in blob
// order.
func (tx *Tx) AllBlobRefs(fn func(h [32]byte, dossier string) error) error {
	return tx.scan(prefixBlobRef, nil, false, false, func(k, _ []byte) (bool, error) {
		rest := k[len(prefixBlobRef):]
		if len(rest) < 34 || rest[32] != sep {
			return false, fmt.Errorf("store: bad blob ref key %q", k)
		}
		var h [32]byte
		copy(h[:], rest[:32])
		return true, fn(h, string(rest[33:]))
	})
}

// anyUnder reports whether any key starts with prefix.
func (tx *Tx) anyUnder(prefix []byte) (bool, error) {
	found := false
	err := tx.scan(prefix, nil, false, false, func(_, _ []byte) (bool, error) {
		found = true
		return false, nil
	})
	return found, err
}

// HoldsFor reports whether an attach op of origin for a dossier of ward
// is still held for its blob. It scans every held op: there are few, and
// only a handback asks.
func (tx *Tx) HoldsFor(origin, ward string) (bool, error) {
	found := false
	err := tx.scan(prefixHeld, nil, false, true, func(k, v []byte) (bool, error) {
		rest := k[len(prefixHeld)+32:]
		if len(rest) <= len(origin) || string(rest[:len(origin)]) != origin || rest[len(origin)] != sep {
			return true, nil
		}
		b, ok, err := tx.get(v)
		if err != nil || !ok {
			return err == nil, err
		}
		op, err := schema.DecodeOp(b)
		if err != nil {
			return false, err
		}
		found = op.Ward == ward
		return !found, nil
	})
	return found, err
}
