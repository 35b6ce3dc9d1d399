package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Tx is a read (View) or read-write (Write) view of the store. In a write,
// Sets are staged and reach badger only if the write function succeeds, and
// reads see the function's own staged writes first.
type Tx struct {
	txn     *badger.Txn
	writing bool
	pending []pendingWrite
	staged  map[string]int
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
	if i, ok := tx.staged[string(key)]; ok {
		w := tx.pending[i]
		return w.val, !w.del, nil
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
	if tx.staged == nil {
		tx.staged = map[string]int{}
	}
	if i, ok := tx.staged[string(w.key)]; ok {
		tx.pending[i] = w
		return
	}
	tx.staged[string(w.key)] = len(tx.pending)
	tx.pending = append(tx.pending, w)
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
// after `after` if it is set. fn returns false to stop.
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
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		k := it.Item().KeyCopy(nil)
		if after != nil && string(k) == string(after) {
			continue
		}
		var v []byte
		if values {
			var err error
			if v, err = it.Item().ValueCopy(nil); err != nil {
				return fmt.Errorf("store: read value: %w", err)
			}
		}
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
