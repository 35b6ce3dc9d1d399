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

// localWrites wakes the pusher when the node has written new ops.
type localWrites struct {
	mu sync.Mutex
	ch chan struct{}
}

func (l *localWrites) wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(chan struct{})
	}
	return l.ch
}

func (l *localWrites) notify() {
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

// ApplyPulled stores ops that came down from the city and the pull cursor
// in one durable write, and moves the clock past them.
func (n *Node) ApplyPulled(ctx context.Context, ops []schema.Op, cursor uint64) (int, error) {
	var applied int
	err := n.store.Write(ctx, func(tx *store.Tx) error {
		var err error
		applied, err = tx.ApplyPulled(ops, cursor)
		return err
	})
	if err != nil {
		return 0, err
	}
	for i := range ops {
		n.clock.Observe(ops[i].HLC)
	}
	return applied, nil
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
