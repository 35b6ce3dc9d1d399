package cluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// CityOrigin is the origin name of ops the city makes itself (portal
// intake). Its seq is kept by the FSM, so it is gapless across leaders.
const CityOrigin = schema.ReservedOrigin

// CitySeries is the receipt series of portal submissions.
const CitySeries = "CITY"

// fsm applies committed entries to the city store. It implements
// raft.BatchingFSM: up to MaxAppendEntries entries arrive in one call and
// are written in one store write (one fsync).
type fsm struct {
	st  *store.Store
	log *slog.Logger
	m   *metrics
	// notify, if set, learns which ward partitions an apply changed, after
	// the write is on disk (pull sessions wake on it).
	notify func(wards map[string]struct{})
	// restored, if set, is called after a snapshot replaced the state.
	restored func()
	// leased collects the wards whose lease changed in the write being
	// applied (Apply is never concurrent), so their pull sessions wake.
	leased map[string]struct{}
}

// entryResult is what Apply returns for one Raft entry.
type entryResult struct {
	Results []Result
	Err     error // the whole entry failed to decode
}

func (f *fsm) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies entries in commit order. Entries at or below the
// stored applied index were applied before a restart (disk-backed FSM with
// NoSnapshotRestoreOnStart) and are skipped: ops are idempotent anyway,
// but the receipt and city-seq counters must not move twice.
func (f *fsm) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	start := time.Now()
	touched := map[string]struct{}{}
	if err := f.applyChunk(logs, out, touched); err != nil {
		// A committed entry that cannot be stored leaves this member
		// behind the log; continuing would diverge silently. Stop loudly.
		panic(fmt.Sprintf("cluster: fsm cannot store committed entries: %v", err))
	}
	if f.notify != nil && len(touched) > 0 {
		f.notify(touched)
	}
	if f.m != nil {
		f.m.entriesPerApply.Observe(float64(len(logs)))
		f.m.applyDuration.Observe(time.Since(start).Seconds())
	}
	return out
}

// applyChunk applies entries in one store write (one fsync). If that write
// is over the store's transaction limit, it applies each half on its own:
// every write records the index it applied up to, so a crash between them
// resumes exactly where it stopped. (Entries are capped at the proposer, so
// a single entry always fits.)
func (f *fsm) applyChunk(logs []*raft.Log, out []interface{}, touched map[string]struct{}) error {
	mine := map[string]struct{}{}
	f.leased = mine
	defer func() { f.leased = nil }()
	err := f.st.Write(context.Background(), func(tx *store.Tx) error {
		applied, err := tx.Applied()
		if err != nil {
			return err
		}
		// Entries of one batch share a store write. Whatever they decide
		// from the store (a scan included) sees the earlier entries'
		// changes, so every member decides the same however it batches
		// (a leader applies entries as they commit, a follower catching
		// up many at once).
		dossiers := map[string]*dossierWork{}
		for i, l := range logs {
			if l.Type != raft.LogCommand || l.Index <= applied {
				out[i] = &entryResult{}
				continue
			}
			cmds, err := DecodeEntry(l.Data)
			if err != nil {
				f.log.Error("fsm: undecodable entry skipped", "index", l.Index, "err", err)
				out[i] = &entryResult{Err: err}
				continue
			}
			res := &entryResult{Results: make([]Result, len(cmds))}
			for j := range cmds {
				r, err := f.applyCommand(tx, dossiers, l.Index, &cmds[j])
				if err != nil {
					return err // storage error: the FSM cannot go on
				}
				res.Results[j] = r
			}
			out[i] = res
			if f.m != nil {
				f.m.commandsPerEntry.Observe(float64(len(cmds)))
			}
		}
		for id, w := range dossiers {
			if err := w.flush(tx); err != nil {
				return err
			}
			if w.changed && len(w.ops) > 0 {
				mine[w.ops[0].Ward] = struct{}{}
				if t, ok, err := tx.Tracker(id); err != nil {
					return err
				} else if ok {
					mine[t] = struct{}{}
				}
			}
		}
		if last := logs[len(logs)-1].Index; last > applied {
			tx.SetApplied(last)
		}
		return nil
	})
	if errors.Is(err, schema.ErrTooLarge) && len(logs) > 1 {
		h := len(logs) / 2
		if err := f.applyChunk(logs[:h], out[:h], touched); err != nil {
			return err
		}
		return f.applyChunk(logs[h:], out[h:], touched)
	}
	if err != nil {
		return err
	}
	for w := range mine {
		touched[w] = struct{}{}
	}
	return nil
}

// dossierWork collects one dossier's ops within a batch so it is folded
// once, from all its ops, whatever order they arrived in.
type dossierWork struct {
	old     *schema.Dossier
	ops     []schema.Op
	changed bool
}

func (w *dossierWork) flush(tx *store.Tx) error {
	if !w.changed {
		return nil
	}
	d := schema.Fold(w.ops)
	return tx.PutDossier(w.old, &d)
}

func work(tx *store.Tx, dossiers map[string]*dossierWork, id string) (*dossierWork, error) {
	if w, ok := dossiers[id]; ok {
		return w, nil
	}
	w := &dossierWork{}
	d, ok, err := tx.Dossier(id)
	if err != nil {
		return nil, err
	}
	if ok {
		w.old = &d
		// Only a dossier that has a stored state has ops: a new one (every
		// portal intake, every pushed create) skips the index scan, which
		// costs a badger iterator.
		if w.ops, err = tx.DossierOps(id); err != nil {
			return nil, err
		}
	}
	dossiers[id] = w
	return w, nil
}

func (f *fsm) applyCommand(tx *store.Tx, dossiers map[string]*dossierWork, index uint64, c *Command) (Result, error) {
	switch c.Kind {
	case KindInit:
		if _, err := tx.Identity(); err == nil {
			return Result{}, nil // already initialized by an earlier leader
		}
		id := store.Identity{Node: c.Init.Node, Ward: "CITY", Series: CitySeries, PrivateKey: c.Init.PrivateKey}
		if len(c.Init.PrivateKey) != ed25519.PrivateKeySize {
			return Result{Err: "bad city key", Code: "invalid"}, nil
		}
		id.PublicKey = c.Init.PrivateKey.Public().(ed25519.PublicKey)
		return Result{}, tx.PutIdentity(id)
	case KindPortal:
		return f.applyPortal(tx, dossiers, index, c.Portal)
	case KindRegister:
		r := c.Register
		cur, ok, err := tx.OriginKey(r.Origin)
		if err != nil {
			return Result{}, err
		}
		if ok {
			if !bytes.Equal(cur.Key, r.Key) {
				return Result{Err: fmt.Sprintf("origin %s is registered with another key", r.Origin), Code: "forbidden"}, nil
			}
			if slices.Equal(cur.Wards, r.Wards) && cur.Role == r.Role {
				return Result{}, nil
			}
			// A reissued certificate (a backup office given another ward):
			// lease decisions follow the certificate the node holds now.
			cur.Wards, cur.Role = r.Wards, r.Role
			return Result{}, tx.PutOriginKey(r.Origin, cur)
		}
		return Result{}, tx.PutOriginKey(r.Origin, store.OriginInfo{Key: r.Key, Wards: r.Wards, Role: r.Role, Index: index})
	case KindOps:
		return f.applyOps(tx, dossiers, index, c)
	case KindBlob:
		return f.applyBlob(tx, dossiers, index, c.Blob)
	case KindLease:
		return f.applyLease(tx, index, c.Lease)
	}
	return Result{Err: fmt.Sprintf("unknown command kind %d", c.Kind), Code: "invalid"}, nil
}

// applyPortal turns a portal submission into a create op of the city
// origin: seq, chain and signature come from the FSM's state, receipt
// number from its counter, so every member computes the same op.
func (f *fsm) applyPortal(tx *store.Tx, dossiers map[string]*dossierWork, index uint64, p *PortalCmd) (Result, error) {
	id, err := tx.Identity()
	if err != nil {
		return Result{Err: "the city cluster is not initialized yet", Code: "not_initialized"}, nil
	}
	// Look through this batch's pending work too: a dossier created by an
	// earlier entry of the same batch is not in the store yet.
	w, err := work(tx, dossiers, p.Dossier)
	if err != nil {
		return Result{}, err
	}
	for _, op := range w.ops {
		if op.Kind == schema.KindCreate {
			// IDs are minted per request, so the city's own create with the
			// same clock is this very command, proposed again after a
			// leader change: answer it as done, not as a conflict.
			if op.ID.Origin == id.Node && op.HLC == p.HLC {
				d := schema.Fold(w.ops)
				return Result{Dossier: &d}, nil
			}
			return Result{Err: "dossier " + p.Dossier + " exists", Code: "conflict"}, nil
		}
	}
	received := time.UnixMilli(p.ReceivedAt).In(schema.CityZone)
	n, err := tx.NextReceipt(p.Ward + "\x00" + received.Format("20060102"))
	if err != nil {
		return Result{}, err
	}
	body := schema.CreateBody{
		Procedure: p.Procedure, Applicant: p.Applicant, Fields: p.Fields,
		ReceiptNo:  fmt.Sprintf("%s-%s-%s-%04d", p.Ward, received.Format("060102"), CitySeries, n),
		ReceivedAt: p.ReceivedAt, DueAt: p.DueAt,
	}
	op := schema.Op{ID: schema.OpID{Origin: id.Node}, Ward: p.Ward, Dossier: p.Dossier, HLC: p.HLC,
		Actor: p.Actor, Kind: schema.KindCreate, Body: schema.MarshalBody(body)}
	if err := tx.AppendLocal(&op, id.PrivateKey); err != nil {
		return Result{}, err
	}
	if err := tx.IndexChange(&op, index); err != nil {
		return Result{}, err
	}
	w.ops = append(w.ops, op)
	w.changed = true
	d := schema.Fold(w.ops)
	return Result{Dossier: &d}, nil
}

// Snapshot returns at once with a read view; Persist streams it while the
// FSM keeps applying.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{sn: f.st.Snapshot(), log: f.log}, nil
}

// Restore replaces the FSM state with a snapshot (a new member, or one too
// far behind for the log). The store verifies the state hash.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	start := time.Now()
	if err := f.st.Restore(rc); err != nil {
		return err
	}
	h, _ := f.st.StateHash()
	if f.restored != nil {
		f.restored()
	}
	f.log.Info("fsm: restored from snapshot", "state_hash", fmt.Sprintf("%x", h[:8]), "took", time.Since(start))
	return nil
}

type fsmSnapshot struct {
	sn  *store.Snapshot
	log *slog.Logger
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	sum, err := s.sn.Stream(sink)
	if err != nil {
		sink.Cancel()
		return err
	}
	s.log.Info("fsm: snapshot persisted", "id", sink.ID(), "state_hash", fmt.Sprintf("%x", sum[:8]))
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.sn.Release() }

// applyOps stores pushed ops. Every decision is made here, from the FSM's
// own state, so all members decide alike: an op already held is skipped
// (applied at most once); an op must continue its origin's log without a
// gap; and a pusher may write only dossiers of wards its certificate
// names, except a create for another ward (cross-ward reception), whose
// dossier then gets the pusher's ward as tracker. At the first refused op
// the rest of the command is refused too (it would leave a gap), and the
// result names the op and the reason; what came before it stays.
func (f *fsm) applyOps(tx *store.Tx, dossiers map[string]*dossierWork, index uint64, c *Command) (Result, error) {
	res := Result{}
	refuse := func(op *schema.Op, code, format string, args ...any) (Result, error) {
		res.Code, res.Refused = code, op.ID.String()
		res.Err = fmt.Sprintf("op %s refused: %s", op.ID, fmt.Sprintf(format, args...))
		f.log.Warn("fsm: push refused", "origin", op.ID.Origin, "op", op.ID.String(), "code", code, "reason", res.Err)
		return res, nil
	}
	for i := range c.Ops {
		op := &c.Ops[i]
		if c.Pusher != nil {
			if err := op.CheckShape(); err != nil {
				return refuse(op, "invalid", "%v", err)
			}
		}
		stored, seen, err := tx.Op(op.ID)
		if err != nil {
			return Result{}, err
		}
		if seen {
			// Applied at most once. But the same ID with other content is a
			// forked log (a node restored from an old backup reusing seqs):
			// never silently drop what it says.
			if stored.Hash() != op.Hash() {
				return refuse(op, "fork", "the city holds a different op %s; this node's log has forked (restored from an old backup?)", op.ID)
			}
			continue
		}
		hw, err := tx.HighWater(op.ID.Origin)
		if err != nil {
			return Result{}, err
		}
		if op.ID.Seq != hw+1 {
			return refuse(op, "gap", "the city holds %s up to seq %d", op.ID.Origin, hw)
		}
		if hw > 0 && c.Pusher != nil {
			prev, ok, err := tx.Op(schema.OpID{Origin: op.ID.Origin, Seq: hw})
			if err != nil {
				return Result{}, err
			}
			if ok && prev.Hash() != op.Prev {
				return refuse(op, "fork", "op %s does not chain to the city's op %s", op.ID, prev.ID)
			}
		}
		w, err := work(tx, dossiers, op.Dossier)
		if err != nil {
			return Result{}, err
		}
		exists := false
		var ward string
		for _, o := range w.ops {
			if o.Kind == schema.KindCreate {
				exists, ward = true, o.Ward
				break
			}
		}
		if p := c.Pusher; p != nil {
			pusher := schema.PeerIdentity{Role: schema.PeerBackup, Node: p.Node, Wards: p.Wards}
			switch {
			case op.ID.Origin != p.Node:
				return refuse(op, "forbidden", "node %s may push only its own ops", p.Node)
			case exists && op.Ward != ward:
				return refuse(op, "forbidden", "dossier %s belongs to ward %s, not %s", op.Dossier, ward, op.Ward)
			case exists && !pusher.MayServe(ward):
				return refuse(op, "forbidden", "node %s may not write dossier %s of ward %s", p.Node, op.Dossier, ward)
			case !exists && op.Kind != schema.KindCreate:
				return refuse(op, "forbidden", "dossier %s does not exist at the city", op.Dossier)
			case !exists && !pusher.MayServe(op.Ward) && len(p.Wards) > 0:
				// Cross-ward reception: the dossier lives in op.Ward's
				// partition; the receiving ward keeps a tracking copy. No
				// lease is involved: it is not the receiver's ward.
				tx.SetTracker(op.Dossier, p.Wards[0])
			default:
				// Writing for a ward it serves: the origin must have held
				// the lease epoch the op carries. Late ops of a cut-off
				// primary (an epoch it held) merge; an epoch it never held
				// is refused.
				target := ward
				if !exists {
					target = op.Ward
				}
				held, err := tx.EpochHeld(target, op.ID.Origin, p.Role, op.Epoch)
				if err != nil {
					return Result{}, err
				}
				if !held {
					return refuse(op, "epoch", "it is stamped with lease epoch %d of ward %s, which node %s never held", op.Epoch, target, op.ID.Origin)
				}
			}
		}
		if m, ok := store.AttachManifest(op); ok && c.Pusher != nil {
			// Metadata first: the op takes its place in the origin's log
			// now, so the ward's later ops (a status change) are not held
			// up behind a slow scan, but no replica folds it until the
			// ward itself has uploaded the blob and it is on a majority
			// (applyBlob). Even a blob the city holds already: a ward that
			// only knows a hash must not gain a way to read the scan.
			if err := tx.HoldOp(op, m.Hash); err != nil {
				return Result{}, err
			}
			res.Applied++
			continue
		}
		if err := tx.PutRemoteOp(op, index); err != nil {
			return Result{}, err
		}
		w.ops = append(w.ops, *op)
		w.changed = true
		res.Applied++
	}
	if len(c.Ops) > 0 {
		hw, err := tx.HighWater(c.Ops[0].ID.Origin)
		if err != nil {
			return Result{}, err
		}
		res.HighWater = hw
	}
	return res, nil
}

// applyBlob records that a majority holds a blob and applies the attach
// ops that were held for it, at this entry's index.
func (f *fsm) applyBlob(tx *store.Tx, dossiers map[string]*dossierWork, index uint64, b *BlobCmd) (Result, error) {
	m, err := b.Manifest()
	if err != nil {
		return Result{Err: err.Error(), Code: "invalid"}, nil
	}
	if prev, ok, err := tx.BlobStored(m.Hash); err != nil {
		return Result{}, err
	} else if !ok {
		if err := tx.PutBlobStored(&m); err != nil {
			return Result{}, err
		}
	} else if !prev.Equal(&m) {
		return Result{Err: fmt.Sprintf("blob %s is recorded with another manifest", m.HashHex()), Code: "invalid"}, nil
	}
	released, err := tx.ReleaseHeld(m.Hash, b.Origin, index)
	if err != nil {
		return Result{}, err
	}
	for i := range released {
		w, err := work(tx, dossiers, released[i].Dossier)
		if err != nil {
			return Result{}, err
		}
		// A dossier first read in this batch has it already: its ops,
		// read after the release, include it.
		if !slices.ContainsFunc(w.ops, func(o schema.Op) bool { return o.ID == released[i].ID }) {
			w.ops = append(w.ops, released[i])
		}
		w.changed = true
	}
	return Result{Applied: len(released)}, nil
}
