package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Ward leases: which office serves a ward. A lease moves only through a
// KindLease command, a compare-and-set on the epoch decided in the FSM;
// reads go to the leader after a Raft barrier, so they are linearizable.

// applyLease decides a lease change from the FSM's own state.
func (f *fsm) applyLease(tx *store.Tx, index uint64, c *LeaseCmd) (Result, error) {
	if c == nil || !schema.ValidWardCode(c.Ward) {
		return Result{Err: "lease command without a valid ward", Code: "invalid"}, nil
	}
	cur, err := tx.Lease(c.Ward)
	if err != nil {
		return Result{}, err
	}
	refuse := func(code, format string, args ...any) (Result, error) {
		msg := fmt.Sprintf(format, args...)
		f.log.Warn("fsm: lease change refused", "ward", c.Ward, "op", c.Op, "by", c.By, "code", code, "reason", msg)
		return Result{Err: msg, Code: code, Lease: &cur}, nil
	}
	// The same command proposed again (the proposer retried across a
	// leader change after it had committed): answer it as done, with the
	// epoch it made, even if the lease has moved on since. Its ID tells it
	// from another request, even one by the same operator in the same
	// millisecond, which must be refused if it read the same epoch.
	if c.ID != "" {
		done, ok, err := tx.LeaseAt(c.Ward, c.Expect+1)
		if err != nil {
			return Result{}, err
		}
		if ok && done.Change == c.ID {
			return Result{Lease: &done}, nil
		}
	} else if cur.Epoch == c.Expect+1 && cur.Since == c.At && cur.By == c.By && c.Op != LeaseHandback {
		// A command from before IDs: the rule it was applied with.
		return Result{Lease: &cur}, nil
	}
	if c.Op == LeaseHandback && !c.Force && c.ID != "" {
		// A handback that only marked the lease pending is in the history
		// of the epoch it read, whatever happened since.
		asked, ok, err := tx.LeaseAt(c.Ward, c.Expect)
		if err != nil {
			return Result{}, err
		}
		if ok && asked.HandbackID == c.ID {
			return Result{Lease: &cur}, nil
		}
	}
	if c.Expect != cur.Epoch {
		return refuse("conflict", "the lease of ward %s is at epoch %d, not %d: it changed since you read it (read it again)", c.Ward, cur.Epoch, c.Expect)
	}
	// A pending handback keeps the epoch, so the epoch alone does not
	// protect it: only the holder's release, or a forced handback, may
	// change the lease meanwhile.
	if cur.HandbackTo != "" && c.Op != LeaseRelease && !(c.Op == LeaseHandback && c.Force) {
		if c.Op == LeaseHandback && orDefault(c.To, cur.HandbackTo) == cur.HandbackTo {
			return Result{Lease: &cur}, nil // the same handback, asked again
		}
		return refuse("conflict", "a handback of ward %s to %s is in progress (asked by %s); wait for %s to release it, or force it with `ops handback --force`", c.Ward, cur.HandbackTo, orDefault(cur.HandbackBy, "an operator"), cur.Active)
	}
	next := schema.Lease{Ward: c.Ward, Epoch: cur.Epoch + 1, Since: c.At, Reason: c.Reason, By: c.By, Home: cur.Home, Index: index, Change: c.ID}
	if next.Home == "" {
		if next.Home, err = tx.WardHome(c.Ward); err != nil {
			return Result{}, err
		}
	}
	if next.Ready, err = tx.PartitionHead(c.Ward); err != nil {
		return Result{}, err
	}
	switch c.Op {
	case LeaseFailover:
		info, ok, err := tx.OriginKey(c.To)
		if err != nil {
			return Result{}, err
		}
		switch {
		case !ok:
			return refuse("not_found", "node %s has never connected to the city: start the backup office's node first, so the city knows its certificate", c.To)
		case info.Role != schema.PeerBackup:
			return refuse("forbidden", "node %s has a %s certificate; only a backup office's node may take a ward's lease (fail over to a backup office, hand back with `ops handback`)", c.To, orDefault(string(info.Role), "ward"))
		case !slices.Contains(info.Wards, c.Ward):
			return refuse("forbidden", "the backup certificate of %s does not name ward %s (it names %v)", c.To, c.Ward, info.Wards)
		case cur.Epoch > 0 && cur.Active == c.To:
			return refuse("conflict", "%s already holds ward %s", c.To, c.Ward)
		}
		next.Active = c.To
	case LeaseHandback:
		if cur.Epoch == 0 || cur.Active == cur.Home && cur.Home != "" {
			return refuse("conflict", "ward %s is served by its own office already", c.Ward)
		}
		// By default the ward goes to its office's latest node: an office
		// that lost its disk comes back as a new node ID.
		to := c.To
		if to == "" {
			if to, err = tx.WardHome(c.Ward); err != nil {
				return Result{}, err
			}
			to = orDefault(to, next.Home)
		}
		if to == "" {
			return refuse("not_found", "no node of ward %s's own office has connected to the city yet: start it (it syncs while read-only), then hand back", c.Ward)
		}
		info, ok, err := tx.OriginKey(to)
		if err != nil {
			return Result{}, err
		}
		if !ok || !info.IsWardOffice() || !slices.Contains(info.Wards, c.Ward) {
			return refuse("forbidden", "%s is not a ward office node of %s known to the city; a handback returns the ward to its own office", to, c.Ward)
		}
		if cur.Active == to {
			return refuse("conflict", "%s already holds ward %s", to, c.Ward)
		}
		if !c.Force {
			// Wait for the holder: it turns read-only, pushes everything
			// and releases (LeaseRelease). The epoch stays.
			// Index moves with every change, so nodes (which keep the
			// newest lease they see) take this one over the last.
			cur.HandbackTo, cur.HandbackReason, cur.Index = to, orDefault(c.Reason, "handback"), index
			cur.HandbackBy, cur.HandbackID = c.By, c.ID
			if err := tx.PutLease(&cur); err != nil {
				return Result{}, err
			}
			f.leased[c.Ward] = struct{}{}
			return Result{Lease: &cur}, nil
		}
		next.Active, next.Home = to, to
		next.Reason = orDefault(c.Reason, "handback (forced)")
	case LeaseRelease:
		switch {
		case cur.Epoch == 0 || cur.Active != c.By:
			return refuse("forbidden", "%s does not hold ward %s", c.By, c.Ward)
		case cur.HandbackTo == "":
			return refuse("conflict", "no handback of ward %s is in progress", c.Ward)
		}
		hw, err := tx.HighWater(c.By)
		if err != nil {
			return Result{}, err
		}
		if hw < c.LastSeq {
			return refuse("conflict", "the city holds %s's ops up to %d of %d: push the rest first", c.By, hw, c.LastSeq)
		}
		// An attach op waiting for its scan is pushed but not yet applied:
		// if the backup office went away after the handback, the scan and
		// the op would be lost with it.
		if waiting, err := tx.HoldsFor(c.By, c.Ward); err != nil {
			return Result{}, err
		} else if waiting {
			return refuse("conflict", "scans of ward %s that %s attached are not uploaded yet: its attachments must reach the city first", c.Ward, c.By)
		}
		next.Active, next.Home = cur.HandbackTo, cur.HandbackTo
		next.Reason = orDefault(cur.HandbackReason, "handback")
		next.By = orDefault(cur.HandbackBy, cur.By) // the operator who asked for the handback
	default:
		return Result{Err: fmt.Sprintf("unknown lease operation %q", c.Op), Code: "invalid"}, nil
	}
	if err := tx.PutLease(&next); err != nil {
		return Result{}, err
	}
	f.leased[c.Ward] = struct{}{}
	f.log.Info("fsm: ward lease moved", "ward", c.Ward, "epoch", next.Epoch, "active", next.Active, "reason", next.Reason)
	return Result{Lease: &next}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Lease reads a ward's current lease, linearizably: on the leader, after
// a barrier that applies everything committed before the read.
func (c *Cluster) Lease(ctx context.Context, ward string) (schema.Lease, error) {
	var l schema.Lease
	out, err := c.onLeader(ctx, rpc{Op: "lease", ID: ward})
	if err != nil {
		return l, unavailable(err)
	}
	return l, json.Unmarshal(out, &l)
}

// LeaseHistory returns every epoch of a ward's lease, read like Lease.
func (c *Cluster) LeaseHistory(ctx context.Context, ward string) ([]schema.Lease, error) {
	var h []schema.Lease
	out, err := c.onLeader(ctx, rpc{Op: "lease_history", ID: ward})
	if err != nil {
		return nil, unavailable(err)
	}
	return h, json.Unmarshal(out, &h)
}

// barrierRead runs read on the leader once everything committed before
// it is applied.
func (c *Cluster) barrierRead(read func(tx *store.Tx) (any, error)) ([]byte, error) {
	if err := c.raft.Barrier(10 * time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err) // onLeader asks the new leader
		}
		return nil, err
	}
	var v any
	err := c.st.View(func(tx *store.Tx) error {
		var err error
		v, err = read(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// ChangeLease proposes a failover or handback on behalf of operator by.
func (c *Cluster) ChangeLease(ctx context.Context, op, ward, by string, ch schema.LeaseChange) (schema.Lease, error) {
	cmd := &LeaseCmd{Op: op, Ward: ward, To: ch.To, Reason: ch.Reason, Expect: ch.Expect, Force: ch.Force, By: by, At: c.cfg.Now().UnixMilli(), ID: rand.Text()}
	return c.proposeLease(ctx, cmd)
}

// ReleaseLease completes a handback for the holder node, once the city
// holds its ops up to lastSeq.
func (c *Cluster) ReleaseLease(ctx context.Context, ward, node string, epoch, lastSeq uint64) (schema.Lease, error) {
	cmd := &LeaseCmd{Op: LeaseRelease, Ward: ward, By: node, Expect: epoch, LastSeq: lastSeq, At: c.cfg.Now().UnixMilli(), ID: rand.Text()}
	return c.proposeLease(ctx, cmd)
}

func (c *Cluster) proposeLease(ctx context.Context, cmd *LeaseCmd) (schema.Lease, error) {
	res, err := c.Propose(ctx, Command{Kind: KindLease, Lease: cmd})
	if err != nil {
		return schema.Lease{}, unavailable(err)
	}
	if err := resultErr(res); err != nil {
		return schema.Lease{}, err
	}
	if res.Lease == nil {
		return schema.Lease{}, fmt.Errorf("lease change gave no lease")
	}
	return *res.Lease, nil
}
