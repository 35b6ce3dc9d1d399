package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/time/rate"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// maxFrame bounds a blob stream's frames: one chunk plus its header.
const maxFrame = schema.ChunkSize + 64<<10

// maxBadChunk is how many times one chunk may arrive corrupt before the
// receiver gives up on the sender.
const maxBadChunk = 3

// Options tune one side of a transfer.
type Options struct {
	// Limiter caps the bytes per second sent (nil: no cap). Its burst
	// must be at least schema.ChunkSize.
	Limiter *rate.Limiter
	// Yield, if set, is called before each chunk is sent; it returns when
	// the chunk may go (a ward waits while ops are unacknowledged).
	Yield func(ctx context.Context) error
	// Sent, if set, is called after each chunk is written.
	Sent func(index int, bytes int)
	// Received, if set, is called for each chunk stored on arrival.
	Received func(index int, bytes int)
	// Bad, if set, is called for each chunk that failed its hash.
	Bad func(index int)
}

// NewLimiter makes a byte-rate limiter for Options.Limiter (nil for 0).
func NewLimiter(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), max(schema.ChunkSize, int(bytesPerSecond)))
}

// errProtocol marks a peer that broke the blob protocol.
var errProtocol = fmt.Errorf("%w: blob protocol", schema.ErrInvalid)

// readMsg reads the next frame, turning an Error frame into a Go error.
func readMsg(r *wire.Reader) (wire.Msg, error) {
	msg, err := r.Read()
	if err != nil {
		return nil, err
	}
	if e, ok := msg.(*wire.Error); ok {
		return nil, e
	}
	return msg, nil
}

// send answers the receiver's BlobWants with chunks of m from bs, one in
// flight at a time, until the receiver says BlobStored.
func send(ctx context.Context, w io.Writer, r *wire.Reader, bs *blobstore.Store, m *schema.Manifest, o Options) (*wire.BlobStored, error) {
	var queue []uint32
	want := func(x *wire.BlobWant) error {
		if x.Hash != m.Hash {
			return fmt.Errorf("%w: want for another blob", errProtocol)
		}
		for _, i := range x.Indexes {
			if int(i) >= len(m.Chunks) {
				return fmt.Errorf("%w: want for chunk %d of %d", errProtocol, i, len(m.Chunks))
			}
			if !slices.Contains(queue, i) {
				queue = append(queue, i)
			}
		}
		return nil
	}
	for {
		if len(queue) == 0 {
			msg, err := readMsg(r)
			if err != nil {
				return nil, err
			}
			switch x := msg.(type) {
			case *wire.BlobWant:
				if err := want(x); err != nil {
					return nil, err
				}
				continue
			case *wire.BlobStored:
				return x, nil
			default:
				return nil, fmt.Errorf("%w: expected BlobWant, got %T", errProtocol, msg)
			}
		}
		i := queue[0]
		queue = queue[1:]
		data, err := bs.Chunk(m.Chunks[i])
		if err != nil {
			if errors.Is(err, blobstore.ErrBadChunk) || errors.Is(err, blobstore.ErrMissing) {
				wire.SendError(w, wire.CodeNotFound, fmt.Sprintf("chunk %d of blob %s is not readable here: %v", i, m.HashHex(), err))
			}
			return nil, err
		}
		if o.Yield != nil {
			if err := o.Yield(ctx); err != nil {
				return nil, err
			}
		}
		if o.Limiter != nil {
			if err := o.Limiter.WaitN(ctx, len(data)); err != nil {
				return nil, err
			}
		}
		if err := wire.WriteMsg(w, &wire.BlobChunk{Index: i, Data: data}); err != nil {
			return nil, err
		}
		if o.Sent != nil {
			o.Sent(int(i), len(data))
		}
		// Stop and wait: the next chunk goes once this one has arrived, so
		// a cut loses at most this one.
		for acked := false; !acked; {
			msg, err := readMsg(r)
			if err != nil {
				return nil, err
			}
			switch x := msg.(type) {
			case *wire.BlobAck:
				if x.Index != i {
					return nil, fmt.Errorf("%w: ack for chunk %d, sent %d", errProtocol, x.Index, i)
				}
				acked = true
			case *wire.BlobWant: // chunk i arrived corrupt: sent again
				if err := want(x); err != nil {
					return nil, err
				}
				acked = true
			case *wire.BlobStored:
				return x, nil
			default:
				return nil, fmt.Errorf("%w: expected BlobAck, got %T", errProtocol, msg)
			}
		}
	}
}

// receive asks for the chunks of m that bs lacks, stores each one that
// matches its hash (asking again for one that does not), syncs, then runs
// done (nil: nothing more) and sends BlobStored with the holders it
// reports. An error of done is sent to the sender as an Error frame.
func receive(ctx context.Context, w io.Writer, r *wire.Reader, bs *blobstore.Store, m *schema.Manifest, o Options, done func(ctx context.Context) (uint32, error)) error {
	if err := m.Validate(); err != nil {
		wire.SendError(w, wire.CodeFor(err), err.Error())
		return err
	}
	// The manifest first: a partial blob is then known (Missing works on
	// resume, and GC's grace period counts from now).
	if err := bs.PutManifest(m); err != nil {
		wire.SendError(w, wire.CodeInternal, "cannot store the manifest")
		return err
	}
	missing, err := bs.Missing(m)
	if err != nil {
		wire.SendError(w, wire.CodeInternal, "cannot read the blob store")
		return err
	}
	idx := make([]uint32, len(missing))
	wanted := make(map[uint32]bool, len(missing))
	for i, x := range missing {
		idx[i], wanted[uint32(x)] = uint32(x), true
	}
	if err := wire.WriteMsg(w, &wire.BlobWant{Hash: m.Hash, Indexes: idx}); err != nil {
		return err
	}
	bad := map[uint32]int{}
	for len(wanted) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, err := readMsg(r)
		if err != nil {
			return err
		}
		c, ok := msg.(*wire.BlobChunk)
		if !ok {
			err := fmt.Errorf("%w: expected BlobChunk, got %T", errProtocol, msg)
			wire.SendError(w, wire.CodeBadFrame, err.Error())
			return err
		}
		if !wanted[c.Index] {
			err := fmt.Errorf("%w: chunk %d was not asked for", errProtocol, c.Index)
			wire.SendError(w, wire.CodeBadFrame, err.Error())
			return err
		}
		err = bs.PutChunk(m.Chunks[c.Index], c.Data)
		if errors.Is(err, blobstore.ErrBadChunk) {
			if o.Bad != nil {
				o.Bad(int(c.Index))
			}
			if bad[c.Index]++; bad[c.Index] >= maxBadChunk {
				err := fmt.Errorf("%w: chunk %d of blob %s arrived corrupt %d times", schema.ErrBadSignature, c.Index, m.HashHex(), maxBadChunk)
				wire.SendError(w, wire.CodeBadSignature, err.Error())
				return err
			}
			// Refused, and asked for again.
			if err := wire.WriteMsg(w, &wire.BlobWant{Hash: m.Hash, Indexes: []uint32{c.Index}}); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			wire.SendError(w, wire.CodeInternal, "cannot store the chunk")
			return err
		}
		delete(wanted, c.Index)
		if o.Received != nil {
			o.Received(int(c.Index), len(c.Data))
		}
		if err := wire.WriteMsg(w, &wire.BlobAck{Index: c.Index}); err != nil {
			return err
		}
	}
	if err := bs.Sync(); err != nil {
		wire.SendError(w, wire.CodeInternal, "cannot sync the blob store")
		return err
	}
	var holders uint32
	if done != nil {
		if holders, err = done(ctx); err != nil {
			code := wire.CodeFor(err)
			if code == wire.CodeInternal {
				code = wire.CodeUnavailable
			}
			wire.SendError(w, code, err.Error())
			return err
		}
	}
	return wire.WriteMsg(w, &wire.BlobStored{Hash: m.Hash, Holders: holders})
}
