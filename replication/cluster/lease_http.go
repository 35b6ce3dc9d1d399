package cluster

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// The lease API: city IT reads a ward's lease and its history, fails a
// ward over to a backup office and hands it back. Reads are linearizable
// (served by the leader after a barrier); changes are compare-and-set on
// the epoch the caller read.

func (c *Cluster) wardOf(r *http.Request) (string, error) {
	ward := r.PathValue("code")
	if _, ok := c.cfg.Wards.Lookup(ward); !ok {
		return "", fmt.Errorf("%w: no ward %q", schema.ErrNotFound, ward)
	}
	return ward, nil
}

func (c *Cluster) handleLease(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	ward, err := c.wardOf(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	l, err := c.Lease(ctx, ward)
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, l)
	return nil
}

func (c *Cluster) handleLeaseHistory(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	ward, err := c.wardOf(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	h, err := c.LeaseHistory(ctx, ward)
	if err != nil {
		return err
	}
	if h == nil {
		h = []schema.Lease{}
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"ward": ward, "history": h})
	return nil
}

// leaseChangeRequest is the body of a failover or handback. expect_epoch
// is required: it is the compare in compare-and-set.
type leaseChangeRequest struct {
	To     string  `json:"to"`
	Reason string  `json:"reason"`
	Expect *uint64 `json:"expect_epoch"`
	Force  bool    `json:"force"`
}

// change checks the request for op (failover or handback) on ward.
func (in *leaseChangeRequest) change(op, ward string) (schema.LeaseChange, error) {
	if in.Expect == nil {
		return schema.LeaseChange{}, &schema.FieldError{Field: "expect_epoch", Reason: "is required: the epoch of the lease as you read it (GET /v1/wards/" + ward + "/lease)"}
	}
	if in.Force && op != LeaseHandback {
		return schema.LeaseChange{}, &schema.FieldError{Field: "force", Reason: "applies to a handback only"}
	}
	ch := schema.LeaseChange{To: in.To, Reason: in.Reason, Expect: *in.Expect, Force: in.Force}
	return ch, ch.Validate(op == LeaseFailover)
}

func (c *Cluster) handleLeaseChange(op string) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, who schema.PeerIdentity) error {
		ward, err := c.wardOf(r)
		if err != nil {
			return err
		}
		var in leaseChangeRequest
		if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
			return err
		}
		ch, err := in.change(op, ward)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		l, err := c.ChangeLease(ctx, op, ward, who.Node, ch)
		if err != nil {
			return err
		}
		c.log.Info("city: ward lease change", "op", op, "ward", ward, "by", who.Node, "epoch", l.Epoch, "active", l.Active, "handback_to", l.HandbackTo)
		httpjson.WriteJSON(w, http.StatusOK, l)
		return nil
	}
}

// handleDigest sums up a ward's partition as this member holds it (not
// through the leader: the point is to compare members).
func (c *Cluster) handleDigest(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	ward, err := c.wardOf(r)
	if err != nil {
		return err
	}
	var d store.Digest
	err = c.st.View(func(tx *store.Tx) error {
		var err error
		d, err = tx.WardDigest(ward)
		return err
	})
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"member": c.cfg.NodeID, "digest": d})
	return nil
}
