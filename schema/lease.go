package schema

import (
	"errors"
	"fmt"
	"time"
)

// ErrReadOnly is a write refused because another office holds the ward's
// lease (or a handback is draining this one): the node keeps serving
// reads, and says who is serving the ward now.
var ErrReadOnly = errors.New("read-only")

// MaxLeaseReason bounds a failover reason.
const MaxLeaseReason = 500

// Lease says which office serves a ward. It lives in the city's Raft FSM
// and changes only by compare-and-set on Epoch, so two concurrent
// failovers cannot both win. Nodes keep the last lease they pulled.
//
// Epoch 0 is the ward's own office, before any failover: it has no record
// and Active is empty (any node whose ward certificate names the ward
// holds it). Every later epoch names exactly one node.
type Lease struct {
	Ward   string `json:"ward"`
	Active string `json:"active_node"` // "" at epoch 0: the ward's own office
	Epoch  uint64 `json:"epoch"`
	Since  int64  `json:"since"` // unix ms, chosen by the member that proposed the change
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"` // the operator certificate that made the change
	// Home is the ward office's own node, where a handback returns the
	// ward ("" if that node never connected to the city).
	Home string `json:"home_node,omitempty"`
	// HandbackTo is set while a handback waits for the holder to finish
	// pushing; the holder is read-only for the ward meanwhile.
	HandbackTo     string `json:"handback_to,omitempty"`
	HandbackReason string `json:"handback_reason,omitempty"`
	HandbackBy     string `json:"handback_by,omitempty"` // the operator who asked for it
	HandbackID     string `json:"handback_id,omitempty"` // the request that asked for it
	// Index is the commit index of the change; Ready is the ward
	// partition's head at that moment: the new holder serves clerks once
	// it has pulled up to Ready, so it never works on a stale copy.
	Index uint64 `json:"index"`
	Ready uint64 `json:"ready_index"`
	// Change is the ID of the request that made this epoch: the city
	// answers that request again, retried after a leader change, as done.
	Change string `json:"change_id,omitempty"`
}

// SinceTime is Since as a time.
func (l *Lease) SinceTime() time.Time { return time.UnixMilli(l.Since).UTC() }

// HeldBy reports whether node holds the lease, given its certificate role:
// a ward office's node holds epoch 0 of its own ward.
func (l *Lease) HeldBy(node string, role PeerRole) bool {
	if l.Epoch == 0 {
		return role == PeerWard
	}
	return l.Active == node
}

// ActiveName is the node serving the ward, for headers and status: home
// stands for the ward's own office at epoch 0.
func (l *Lease) ActiveName(home string) string {
	if l.Epoch == 0 {
		if l.Home != "" {
			return l.Home
		}
		return home
	}
	return l.Active
}

// LeaseChange is a request to move a lease: failover to a backup, or
// handback to the ward's own office. Expect is the epoch the caller read;
// the change is refused if the lease moved since.
type LeaseChange struct {
	To     string `json:"to"`
	Reason string `json:"reason,omitempty"`
	Expect uint64 `json:"expect_epoch"`
	// Force (handback only) moves the lease at once, without waiting for
	// the holder to finish pushing: for a backup office that is gone. Its
	// late ops are still accepted (it did hold that epoch).
	Force bool `json:"force,omitempty"`
}

// Validate checks the request's shape; whether the target may take the
// ward is the FSM's decision.
func (c *LeaseChange) Validate(needTo bool) error {
	if needTo && c.To == "" {
		return fieldErr("to", "is required: the node ID of the backup office")
	}
	if c.To != "" && !peerNodeRe.MatchString(c.To) {
		return fieldErr("to", "%q is not a node ID", c.To)
	}
	return ValidateText("reason", c.Reason, MaxLeaseReason, false)
}

// EpochError explains an op refused for its lease epoch.
func EpochError(op *Op, ward string) error {
	return fmt.Errorf("%w: op %s is stamped with lease epoch %d of ward %s, which node %s never held", ErrForbidden, op.ID, op.Epoch, ward, op.ID.Origin)
}
