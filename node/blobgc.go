package node

import (
	"context"
	"time"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/store"
)

// Blob garbage collection on a ward: a blob that no stored op refers to
// and that is neither waiting to be uploaded nor to be fetched (an upload
// whose attach op was refused, say) is removed after the grace period.
const (
	blobGCInterval = time.Hour
	blobGCGrace    = 24 * time.Hour
)

// keepBlob says whether blob h is still needed here.
func (n *Node) keepBlob(h [32]byte) (bool, error) {
	keep := false
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		if keep, err = tx.BlobReferenced(h); err != nil || keep {
			return err
		}
		keep, err = tx.UploadPending(h)
		return err
	})
	return keep, err
}

// gcBlobs runs the blob GC every interval until ctx ends.
func (n *Node) gcBlobs(ctx context.Context, every, grace time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := n.blobs.GC(ctx, n.keepBlob, grace); err != nil && ctx.Err() == nil {
			n.log.Error("blob gc failed", "err", err)
		}
	}
}

// CollectBlobs runs the blob GC now, with the usual grace period.
func (n *Node) CollectBlobs(ctx context.Context) (blobstore.GCReport, error) {
	return n.blobs.GC(ctx, n.keepBlob, blobGCGrace)
}
