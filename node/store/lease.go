package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/wardsync/wardsync/schema"
)

// Ward leases on the city FSM: the current lease and every epoch's lease
// in the history. A ward without a record is at epoch 0, served by its own
// office.

// Lease returns a ward's current lease (epoch 0 if it never moved).
func (tx *Tx) Lease(ward string) (schema.Lease, error) {
	l := schema.Lease{Ward: ward}
	_, err := getJSON(tx, leaseKey(ward), &l)
	return l, err
}

// PutLease stores a ward's current lease, and its history entry when the
// epoch is new. A pending handback changes the lease but not its epoch:
// the history keeps the last state of each epoch.
func (tx *Tx) PutLease(l *schema.Lease) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	tx.set(leaseKey(l.Ward), b)
	tx.set(leaseHistKey(l.Ward, l.Epoch), b)
	return nil
}

// LeaseAt returns the lease a ward had at epoch, if it ever had that epoch.
func (tx *Tx) LeaseAt(ward string, epoch uint64) (schema.Lease, bool, error) {
	var l schema.Lease
	ok, err := getJSON(tx, leaseHistKey(ward, epoch), &l)
	return l, ok, err
}

// LeaseHistory returns every epoch of a ward's lease after epoch 0, oldest
// first.
func (tx *Tx) LeaseHistory(ward string) ([]schema.Lease, error) {
	var out []schema.Lease
	err := tx.scan(leaseHistPrefix(ward), nil, false, true, func(k, v []byte) (bool, error) {
		var l schema.Lease
		if err := json.Unmarshal(v, &l); err != nil {
			return false, fmt.Errorf("store: decode lease %q: %w", k, err)
		}
		out = append(out, l)
		return true, nil
	})
	return out, err
}

// EpochHeld reports whether origin held ward's lease at epoch: epoch 0 is
// held by the ward's own office (a node registered with a ward
// certificate); a later epoch by the one node it names.
func (tx *Tx) EpochHeld(ward, origin string, role schema.PeerRole, epoch uint64) (bool, error) {
	if epoch == 0 {
		return isWardRole(role), nil
	}
	l, ok, err := tx.LeaseAt(ward, epoch)
	return ok && l.Active == origin, err
}

// WardHome returns the ward office node to hand a ward back to: the
// latest-registered node with a ward certificate for it ("" if none).
func (tx *Tx) WardHome(ward string) (string, error) {
	home, at := "", uint64(0)
	err := tx.scan(prefixOriginKey, nil, false, true, func(k, v []byte) (bool, error) {
		var o OriginInfo
		if err := json.Unmarshal(v, &o); err != nil {
			return false, err
		}
		if isWardRole(o.Role) && slices.Contains(o.Wards, ward) && (home == "" || o.Index >= at) {
			home, at = string(k[len(prefixOriginKey):]), o.Index
		}
		return true, nil
	})
	return home, err
}

// isWardRole reports whether a registration or push came from a ward
// office's node. An empty role is one recorded before roles were (only
// ward offices pushed then).
func isWardRole(r schema.PeerRole) bool { return r == schema.PeerWard || r == "" }

// IsWardOffice reports whether the origin registered as a ward office's
// node.
func (o OriginInfo) IsWardOffice() bool { return isWardRole(o.Role) }

// Node-side: the lease as last pulled.

// KnownLease returns the lease this node last pulled for ward (epoch 0 and
// ok false if it never pulled one).
func (tx *Tx) KnownLease(ward string) (schema.Lease, bool, error) {
	l := schema.Lease{Ward: ward}
	ok, err := getJSON(tx, knownLeaseKey(ward), &l)
	return l, ok, err
}

// PutKnownLease records a pulled lease. Leases only move forward: an older
// epoch (from a member that is behind) never replaces a newer one.
func (tx *Tx) PutKnownLease(l *schema.Lease) (bool, error) {
	cur, ok, err := tx.KnownLease(l.Ward)
	if err != nil {
		return false, err
	}
	if ok && (cur.Epoch > l.Epoch || (cur.Epoch == l.Epoch && cur.Index >= l.Index)) {
		return false, nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return false, err
	}
	tx.set(knownLeaseKey(l.Ward), b)
	return true, nil
}

// KnownLeases returns every lease this node has pulled.
func (tx *Tx) KnownLeases() ([]schema.Lease, error) {
	var out []schema.Lease
	err := tx.scan(prefixKnownLease, nil, false, true, func(k, v []byte) (bool, error) {
		var l schema.Lease
		if err := json.Unmarshal(v, &l); err != nil {
			return false, err
		}
		out = append(out, l)
		return true, nil
	})
	return out, err
}

// Digest sums up one ward's partition as a replica holds it: the count of
// its dossiers and ops and a hash over every dossier's state in ID order.
// Two replicas with equal digests hold the same ward.
type Digest struct {
	Ward      string `json:"ward"`
	Dossiers  int    `json:"dossiers"`
	Ops       int    `json:"ops"`
	Conflicts int    `json:"conflicts"`
	Hash      string `json:"state_hash"`
}

// WardDigest computes the digest of ward (its own dossiers, not tracking
// copies of other wards').
func (tx *Tx) WardDigest(ward string) (Digest, error) {
	dg := Digest{Ward: ward}
	var ids []string
	prefix := append(cat(prefixByStatus, ward), sep)
	err := tx.scan(prefix, nil, false, false, func(k, _ []byte) (bool, error) {
		rest := k[len(prefix):]
		for i, c := range rest {
			if c == sep {
				ids = append(ids, string(rest[i+1:]))
				break
			}
		}
		return true, nil
	})
	if err != nil {
		return dg, err
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range ids {
		d, ok, err := tx.Dossier(id)
		if err != nil {
			return dg, err
		}
		if !ok || d.Ward != ward {
			continue
		}
		dg.Dossiers++
		dg.Ops += len(d.History)
		dg.Conflicts += len(d.Conflicts)
		sh := schema.StateHash(&d)
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(id))))
		h.Write([]byte(id))
		h.Write(sh[:])
	}
	dg.Hash = fmt.Sprintf("%x", h.Sum(nil))
	return dg, nil
}
