package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Ward leases on the node: which office may write a ward's dossiers now.
// The sync layer pulls each lease from the city and hands it to SetLease;
// every rule about what the node may do with it lives in wardState, so
// writes, /healthz and the sync layer can never disagree.

// WardMode is what this node may do with a ward now.
type WardMode string

// The modes of a ward on a node.
const (
	// ModeServing: this node holds the lease and is caught up: clerks work.
	ModeServing WardMode = "serving"
	// ModeReadOnly: the ward office's own node while a backup serves its
	// ward; it keeps answering reads until handback.
	ModeReadOnly WardMode = "read_only"
	// ModeCatchingUp: this node was given the lease but has not yet pulled
	// the partition up to the lease's ready index.
	ModeCatchingUp WardMode = "catching_up"
	// ModeHandingBack: a handback waits for this node to finish pushing.
	ModeHandingBack WardMode = "handing_back"
	// ModeNotHeld: not this node's ward, and no lease of it names this node.
	ModeNotHeld WardMode = "not_held"
)

// wardState decides ward's mode on this node from the lease it last
// pulled and its pull cursor. It is the one place of the lease rules.
func (n *Node) wardState(tx *store.Tx, ward string) (WardMode, schema.Lease, error) {
	l, _, err := tx.KnownLease(ward)
	if err != nil {
		return "", l, err
	}
	own := !n.IsBackup() && ward == n.id.Ward
	switch {
	case !own && !n.IsBackup():
		// Another ward's dossier on a ward node is a tracking copy of a
		// cross-ward reception: that ward's office processes it.
		return ModeNotHeld, l, nil
	case !l.HeldBy(n.id.Node, n.role()):
		if own {
			return ModeReadOnly, l, nil
		}
		return ModeNotHeld, l, nil
	case l.Epoch == 0:
		// The ward's own office before any failover: nothing to wait for.
		return ModeServing, l, nil
	case l.HandbackTo != "":
		return ModeHandingBack, l, nil
	}
	cursor, err := tx.PullCursor(ward)
	if err != nil {
		return "", l, err
	}
	if cursor < l.Ready {
		// Serving from a copy older than the lease change could undo
		// what the previous holder did.
		return ModeCatchingUp, l, nil
	}
	return ModeServing, l, nil
}

// writeEpoch returns the lease epoch to stamp on an op this node writes on
// a dossier of ward, or why it may not write one now (wrapping
// schema.ErrReadOnly, ErrUnavailable or ErrForbidden). Call it inside the
// write that appends the op, so a lease change cannot slip in between.
func (n *Node) writeEpoch(tx *store.Tx, ward string) (uint64, error) {
	mode, l, err := n.wardState(tx, ward)
	if err != nil {
		return 0, err
	}
	if mode == ModeServing {
		return l.Epoch, nil
	}
	return 0, n.refusal(tx, mode, &l)
}

// receiveEpoch is writeEpoch for a new dossier. A ward node receiving a
// citizen for another ward (cross-ward reception) needs no lease: the
// create is stamped epoch 0, which any ward office holds for receptions,
// and the dossier stays a read-only tracking copy here.
func (n *Node) receiveEpoch(tx *store.Tx, ward string) (uint64, error) {
	if !n.IsBackup() && ward != n.id.Ward {
		return 0, nil
	}
	return n.writeEpoch(tx, ward)
}

// refusal explains why a write on ward is refused in mode.
func (n *Node) refusal(tx *store.Tx, mode WardMode, l *schema.Lease) error {
	switch mode {
	case ModeHandingBack:
		return fmt.Errorf("%w: handing ward %s back to %s: this office is read-only while it finishes pushing", schema.ErrReadOnly, l.Ward, l.HandbackTo)
	case ModeCatchingUp:
		return fmt.Errorf("%w: catching up on ward %s before serving it", schema.ErrUnavailable, l.Ward)
	case ModeReadOnly:
		why := fmt.Sprintf("epoch %d", l.Epoch)
		if l.Reason != "" {
			why += ": " + l.Reason
		}
		msg := fmt.Sprintf("ward %s is served by %s since %s (%s); this office is read-only until handback", l.Ward, l.Active, localTime(l.Since), why)
		if l.HandbackTo == n.id.Node {
			msg += " (the handback to this office waits for that node to finish pushing)"
		}
		return fmt.Errorf("%w: %s", schema.ErrReadOnly, msg)
	}
	if !n.IsBackup() {
		return fmt.Errorf("%w: dossiers of ward %s are processed by that ward's office; this office keeps read-only tracking copies", schema.ErrForbidden, l.Ward)
	}
	held, err := n.heldWards(tx)
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: this backup office does not hold ward %s's lease (%s)", schema.ErrForbidden, l.Ward, describeHeld(held))
}

// describeHeld names the wards a backup holds, for error messages.
func describeHeld(wards []string) string {
	if len(wards) == 0 {
		return "it holds no ward's lease now"
	}
	return "it holds " + strings.Join(wards, ", ")
}

// heldWards returns, for a backup, every ward whose known lease names it
// (serving, catching up or handing back), in ward order.
func (n *Node) heldWards(tx *store.Tx) ([]string, error) {
	ls, err := tx.KnownLeases()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range ls {
		if l.Epoch > 0 && l.Active == n.id.Node {
			out = append(out, l.Ward)
		}
	}
	slices.Sort(out)
	return out, nil
}

// servedWards is ServedWards inside a transaction.
func (n *Node) servedWards(tx *store.Tx) ([]string, error) {
	if !n.IsBackup() {
		return []string{n.id.Ward}, nil
	}
	return n.heldWards(tx)
}

// ServedWards returns the wards this node may serve now or is catching up
// on: a ward node's own ward (always, even while read-only), and for a
// backup every ward whose known lease names it.
func (n *Node) ServedWards() []string {
	var out []string
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		out, err = n.servedWards(tx)
		return err
	})
	if err != nil {
		n.log.Warn("reading the wards this node serves", "err", err)
		if !n.IsBackup() {
			return []string{n.id.Ward}
		}
	}
	return out
}

// defaultWard is the ward a request means when it names none: a ward
// node's own, a backup's only held ward. A backup holding none or several
// gets a FieldError on "ward" saying how to name one (how: "?ward=CODE").
func (n *Node) defaultWard(how string) (string, error) {
	if !n.IsBackup() {
		return n.id.Ward, nil
	}
	var held []string
	if err := n.store.View(func(tx *store.Tx) (err error) {
		held, err = n.heldWards(tx)
		return err
	}); err != nil {
		return "", err
	}
	if len(held) == 1 {
		return held[0], nil
	}
	return "", &schema.FieldError{Field: "ward", Reason: fmt.Sprintf("is required (%s): this backup office serves several wards or none; %s", how, describeHeld(held))}
}

// blobWards returns the wards whose dossiers' blobs this node keeps and
// fetches: those it serves or served. That is its own ward, and every ward
// whose known lease names it or whose partition it pulled.
func (n *Node) blobWards(tx *store.Tx) (map[string]bool, error) {
	out := map[string]bool{}
	if n.id.Ward != "" {
		out[n.id.Ward] = true
	}
	ls, err := tx.KnownLeases()
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if l.Active == n.id.Node && l.Active != "" {
			out[l.Ward] = true
			continue
		}
		c, err := tx.PullCursor(l.Ward)
		if err != nil {
			return nil, err
		}
		if c > 0 {
			out[l.Ward] = true
		}
	}
	return out, nil
}

// SetLease records a ward's lease as pulled from the city, durably. Older
// leases never replace newer ones; changed says whether this one did. A
// change wakes LeaseChanges.
func (n *Node) SetLease(ctx context.Context, l schema.Lease) (changed bool, err error) {
	if !schema.ValidWardCode(l.Ward) {
		return false, &schema.FieldError{Field: "ward", Reason: fmt.Sprintf("%q is not a ward code", l.Ward)}
	}
	var mode WardMode
	err = n.store.Write(ctx, func(tx *store.Tx) error {
		var err error
		if changed, err = tx.PutKnownLease(&l); err != nil || !changed {
			return err
		}
		mode, _, err = n.wardState(tx, l.Ward)
		return err
	})
	if err != nil || !changed {
		return false, err
	}
	log := n.log
	if l.Ward != n.id.Ward {
		log = log.With("ward", l.Ward) // a ward node's logger names its own ward already
	}
	log.Info("ward lease changed", "epoch", l.Epoch, "active", l.Active, "handback_to", l.HandbackTo, "mode", mode)
	n.leases.notify()
	return true, nil
}

// LeaseChanges returns a channel closed after the next change of a known
// lease. Take it before reading the leases, so no change is missed.
func (n *Node) LeaseChanges() <-chan struct{} { return n.leases.wait() }

// Lease returns the lease this node last pulled for ward (epoch 0 and
// false if it never pulled one).
func (n *Node) Lease(ward string) (schema.Lease, bool, error) {
	var l schema.Lease
	var ok bool
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		l, ok, err = tx.KnownLease(ward)
		return err
	})
	return l, ok, err
}

// Mode returns what this node may do with ward now, and the lease it
// decided that from.
func (n *Node) Mode(ward string) (WardMode, schema.Lease, error) {
	var mode WardMode
	var l schema.Lease
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		mode, l, err = n.wardState(tx, ward)
		return err
	})
	return mode, l, err
}

// activeName is the node serving ward now, as the lease says ("" if
// unknown: a backup does not know a ward office that never failed over).
func (n *Node) activeName(l *schema.Lease) string {
	if n.IsBackup() {
		return l.ActiveName("")
	}
	return l.ActiveName(n.id.Node)
}

// mayRead refuses a backup office the dossiers of a ward it does not hold
// (never held, or handed back): invariant 4, a node reads only what its
// certificate and the ward's lease allow. A ward office reads its own
// copy whoever serves the ward.
func (n *Node) mayRead(tx *store.Tx, ward string) error {
	if !n.IsBackup() {
		return nil
	}
	mode, _, err := n.wardState(tx, ward)
	if err != nil {
		return err
	}
	if mode == ModeNotHeld {
		return fmt.Errorf("%w: this backup office does not hold ward %s's lease; its dossiers are read at the office that serves it", schema.ErrForbidden, ward)
	}
	return nil
}
