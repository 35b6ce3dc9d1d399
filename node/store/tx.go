package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/tidwall/btree"
)

// Tx is a read (View) or read-write (Write) view of the store. In a write,
// Sets are staged and reach badger only if the write function succeeds, and
// reads see the function's own staged writes first.
type Tx struct {
	txn     *badger.Txn
	writing bool
	pending *btree.BTreeG[pendingWrite] // staged changes by key (gets, scans, the commit)
}

type pendingWrite struct {
	key, val []byte
	del      bool
}

func (w pendingWrite) apply(txn *badger.Txn) error {
	if w.del {
		return txn.Delete(w.key)
	}
	return txn.Set(w.key, w.val)
}

var errReadOnly = errors.New("store: write in a read-only transaction")

// get returns the value for key, or nil and false if there is none.
func (tx *Tx) get(key []byte) ([]byte, bool, error) {
	if tx.pending != nil {
		if w, ok := tx.pending.Get(pendingWrite{key: key}); ok {
			return w.val, !w.del, nil
		}
	}
	item, err := tx.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: get: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, fmt.Errorf("store: read value: %w", err)
	}
	return v, true, nil
}

func (tx *Tx) stage(w pendingWrite) {
	if !tx.writing {
		panic(errReadOnly)
	}
	if tx.pending == nil {
		tx.pending = btree.NewBTreeGOptions(lessKey, btree.Options{NoLocks: true})
	}
	tx.pending.Set(w) // a key staged again replaces its earlier change
}

// staged calls fn for each staged change, in key order.
func (tx *Tx) staged(fn func(w pendingWrite)) {
	if tx.pending != nil {
		tx.pending.Scan(func(w pendingWrite) bool { fn(w); return true })
	}
}

func (tx *Tx) set(key, val []byte) { tx.stage(pendingWrite{key: key, val: val}) }
func (tx *Tx) del(key []byte)      { tx.stage(pendingWrite{key: key, del: true}) }

func (tx *Tx) getUint(key []byte) (uint64, error) {
	v, ok, err := tx.get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("store: counter %q has %d bytes", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (tx *Tx) setUint(key []byte, n uint64) { tx.set(key, binary.BigEndian.AppendUint64(nil, n)) }

// addCount adds delta to a signed counter.
func (tx *Tx) addCount(key []byte, delta int64) error {
	n, err := tx.getUint(key)
	if err != nil {
		return err
	}
	tx.setUint(key, uint64(int64(n)+delta))
	return nil
}

// scan calls fn for each key with prefix, in order (or reverse), starting
// after `after` if it is set (a key with the prefix). fn returns false to
// stop. In a write it sees the write's own staged changes too (merged into
// badger's order: a staged value replaces the stored one, a staged delete
// hides it), as get does: a decision made from a scan must not depend on
// whether an earlier change was staged in this write or committed before
// it (the city FSM applies a batch of entries in one write, and members
// batch differently). Like badger's iterator, it goes over a snapshot: what
// fn stages while it runs is not seen by this scan.
func (tx *Tx) scan(prefix, after []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.Reverse = reverse
	opts.PrefetchValues = values
	it := tx.txn.NewIterator(opts)
	defer it.Close()
	seek := prefix
	if after != nil {
		seek = after
	} else if reverse {
		seek = append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff)
	}
	inWrite := tx.stagedIn(prefix, seek, after, reverse)
	// before reports whether a comes first in the scan's direction.
	before := func(a, b []byte) bool {
		if reverse {
			return bytes.Compare(a, b) > 0
		}
		return bytes.Compare(a, b) < 0
	}
	it.Seek(seek)
	for {
		var ik []byte
		if it.ValidForPrefix(prefix) {
			ik = it.Item().Key()
			if after != nil && bytes.Equal(ik, after) {
				it.Next()
				continue
			}
		}
		var k, v []byte
		switch {
		case len(inWrite) > 0 && (ik == nil || !before(ik, inWrite[0].key)):
			w := inWrite[0]
			inWrite = inWrite[1:]
			if ik != nil && bytes.Equal(ik, w.key) {
				it.Next() // the staged change replaces the stored value
			}
			if w.del {
				continue
			}
			k = append([]byte(nil), w.key...)
			if values {
				v = append([]byte(nil), w.val...)
			}
		case ik != nil:
			k = it.Item().KeyCopy(nil)
			if values {
				var err error
				if v, err = it.Item().ValueCopy(nil); err != nil {
					return fmt.Errorf("store: read value: %w", err)
				}
			}
			it.Next()
		default:
			return nil
		}
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
}

// stagedIn returns the staged changes the scan visits, in its order: keys
// with prefix from where badger's iterator starts (the first key >= seek
// going forward, the last key <= seek in reverse), but not after itself.
// A copy, so what the scan's callback stages does not change it.
func (tx *Tx) stagedIn(prefix, seek, after []byte, reverse bool) []pendingWrite {
	if tx.pending == nil || tx.pending.Len() == 0 {
		return nil // nothing staged (a read, or a write before its first change)
	}
	var out []pendingWrite
	visit := func(w pendingWrite) bool {
		if !bytes.HasPrefix(w.key, prefix) {
			return false
		}
		if after == nil || !bytes.Equal(w.key, after) {
			out = append(out, w)
		}
		return true
	}
	if reverse {
		tx.pending.Descend(pendingWrite{key: seek}, visit)
	} else {
		tx.pending.Ascend(pendingWrite{key: seek}, visit)
	}
	return out
}

func lessKey(a, b pendingWrite) bool { return bytes.Compare(a.key, b.key) < 0 }
