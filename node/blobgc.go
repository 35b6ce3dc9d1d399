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

// MarkMissingBlobs marks for a background fetch every blob that a dossier
// of a ward this node serves or served (blobWards) refers to and that this node does not hold in full (after
// a restore from a backup, which does not carry the blob store, or after
// a scrub). It returns how many it marked.
func (n *Node) MarkMissingBlobs(ctx context.Context) (int, error) {
	var missing [][32]byte
	err := n.store.View(func(tx *store.Tx) error {
		wards, err := n.blobWards(tx)
		if err != nil {
			return err
		}
		var last [32]byte
		seen := false
		return tx.AllBlobRefs(func(h [32]byte, dossier string) error {
			if seen && h == last {
				return nil
			}
			d, ok, err := tx.Dossier(dossier)
			if err != nil || !ok || !wards[d.Ward] {
				return err
			}
			last, seen = h, true
			if complete, err := n.blobs.Complete(h); err != nil || complete {
				return err
			}
			if pending, err := tx.UploadPending(h); err != nil || pending {
				return err // this node's own upload: it has the blob or nobody does
			}
			missing = append(missing, h)
			return nil
		})
	})
	if err != nil || len(missing) == 0 {
		return 0, err
	}
	err = n.store.Write(ctx, func(tx *store.Tx) error {
		for _, h := range missing {
			tx.MarkFetch(h)
		}
		return nil
	})
	if err == nil {
		n.log.Info("blobs of the wards served here missing here marked for fetching from the city", "blobs", len(missing))
	}
	return len(missing), err
}
