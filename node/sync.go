package node

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// What the sync layer (replication/sync) needs from the node, without the
// node knowing anything of the network.

// signal wakes whoever waits for something to happen on the node: the
// pusher for new own ops, the sync layer and status pages for a lease
// change.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (l *signal) wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(chan struct{})
	}
	return l.ch
}

func (l *signal) notify() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch != nil {
		close(l.ch)
		l.ch = nil
	}
}

// LocalWrites returns a channel closed after the node's next own op is on
// disk. Take it before reading the log, so no write is missed.
func (n *Node) LocalWrites() <-chan struct{} { return n.writes.wait() }

// ApplyPulled stores ops of ward's partition that came down from the city
// and that partition's pull cursor in one durable write, and moves the
// clock past them. (A backup pulls one partition per ward it holds.)
func (n *Node) ApplyPulled(ctx context.Context, ward string, ops []schema.Op, cursor uint64) (int, error) {
	if ward == "" {
		return 0, fmt.Errorf("%w: ApplyPulled needs the ward of the partition pulled", schema.ErrInvalid)
	}
	var applied int
	err := n.store.Write(ctx, func(tx *store.Tx) error {
		// The clock sees the pulled ops here, on the committer, before any
		// later write function runs (in this batch or the next): a local
		// op is stamped after them, so appending it to the dossier is the
		// order every replica's Fold sorts it into. Observed only after
		// the commit returned, a clerk's op written meanwhile could be
		// stamped before a pulled op already in its dossier, appended
		// after it here and sorted before it everywhere else: the
		// replicas would disagree for good (chaos seed 9100031).
		for i := range ops {
			n.clock.Observe(ops[i].HLC)
		}
		var err error
		applied, err = tx.ApplyPulled(ward, ops, cursor)
		return err
	})
	if err != nil {
		return 0, err
	}
	return applied, nil
}

// PullCursor returns the commit index of ward's partition applied here.
func (n *Node) PullCursor(ward string) (uint64, error) {
	var c uint64
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		c, err = tx.PullCursor(ward)
		return err
	})
	return c, err
}

// SetLinkTest installs the function behind POST /v1/admin/linktest: the
// blob layer's measurement of the raw link to the city. Call before
// serving.
func (n *Node) SetLinkTest(f func(ctx context.Context, bytes int64) (any, error)) { n.linkTest = f }

func (n *Node) handleLinkTest(w http.ResponseWriter, r *http.Request, who store.Official) error {
	if who.Role != schema.RoleAdmin {
		return fmt.Errorf("%w: only an admin runs a link test", schema.ErrForbidden)
	}
	if n.linkTest == nil {
		return fmt.Errorf("%w: this node runs without --city; there is no link to test", schema.ErrNotFound)
	}
	size := int64(64 << 20)
	if s := r.URL.Query().Get("bytes"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return &schema.FieldError{Field: "bytes", Reason: "must be a positive number of bytes"}
		}
		size = v
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	res, err := n.linkTest(ctx, size)
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, res)
	return nil
}

// SetSyncStatus installs the function behind GET /v1/sync/status (the sync
// client's view). Call before serving.
func (n *Node) SetSyncStatus(f func() any) { n.syncStatus = f }

func (n *Node) handleSyncStatus(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	if n.syncStatus == nil {
		httpjson.WriteJSON(w, http.StatusOK, map[string]any{"enabled": false, "connected": false,
			"reason": "this node runs without --city; it works offline only"})
		return nil
	}
	httpjson.WriteJSON(w, http.StatusOK, n.syncStatus())
	return nil
}
