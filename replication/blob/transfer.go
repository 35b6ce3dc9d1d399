package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
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
	// VerifyWhole (receiver): check that the chunks, in order, hash to the
	// blob's hash before saying BlobStored, so a forged manifest (chunks
	// that match their own hashes but are not the blob) is refused. For
	// blobs from wards; members trust each other.
	VerifyWhole bool
	// Prove (receiver): if every chunk is already held, ask for one at
	// random anyway, so the sender shows it has the content and not only
	// its hash.
	Prove bool
	// SentAll, if set, is called when every chunk wanted so far has been
	// acknowledged and the sender only waits for BlobStored: another
	// transfer may start sending then without two sharing the link.
	SentAll func()
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
	sent := map[uint32]bool{}
	want := func(x *wire.BlobWant) error {
		if x.Hash != m.Hash {
			return fmt.Errorf("%w: want for another blob", errProtocol)
		}
		for _, i := range x.Indexes {
			if int(i) >= len(m.Chunks) {
				return fmt.Errorf("%w: want for chunk %d of %d", errProtocol, i, len(m.Chunks))
			}
			if sent[i] {
				// Wanted again: it arrived corrupt. Check our own copy
				// (Chunk hashes it, and deletes it if it rotted here).
				if _, err := bs.Chunk(m.Chunks[i]); err != nil {
					wire.SendError(w, wire.CodeNotFound, fmt.Sprintf("chunk %d of blob %s is not readable here: %v", i, m.HashHex(), err))
					return err
				}
			}
			if !slices.Contains(queue, i) {
				queue = append(queue, i)
			}
		}
		return nil
	}
	// The next chunk is read from the store while the current one is on
	// the wire.
	type loaded struct {
		data []byte
		err  error
	}
	var next chan loaded
	var nextIdx uint32
	load := func(i uint32) chan loaded {
		ch := make(chan loaded, 1)
		go func() { d, err := bs.ChunkForTransfer(m.Chunks[i]); ch <- loaded{d, err} }()
		return ch
	}
	sentAll := false
	for {
		if len(queue) == 0 {
			if !sentAll && o.SentAll != nil {
				o.SentAll()
			}
			sentAll = true
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
				if x.Hash != m.Hash {
					return nil, fmt.Errorf("%w: BlobStored for another blob", errProtocol)
				}
				return x, nil
			default:
				return nil, fmt.Errorf("%w: expected BlobWant, got %T", errProtocol, msg)
			}
		}
		i := queue[0]
		queue = queue[1:]
		var c loaded
		if next != nil && nextIdx == i {
			c = <-next
		} else {
			if next != nil {
				<-next
			}
			c.data, c.err = bs.ChunkForTransfer(m.Chunks[i])
		}
		next = nil
		if c.err != nil {
			if errors.Is(c.err, blobstore.ErrBadChunk) || errors.Is(c.err, blobstore.ErrMissing) {
				wire.SendError(w, wire.CodeNotFound, fmt.Sprintf("chunk %d of blob %s is not readable here: %v", i, m.HashHex(), c.err))
			}
			return nil, c.err
		}
		if o.Yield != nil {
			if err := o.Yield(ctx); err != nil {
				return nil, err
			}
		}
		if o.Limiter != nil {
			if err := o.Limiter.WaitN(ctx, len(c.data)); err != nil {
				return nil, err
			}
		}
		if err := wire.WriteChunk(w, i, c.data); err != nil {
			return nil, err
		}
		sent[i] = true
		if o.Sent != nil {
			o.Sent(int(i), len(c.data))
		}
		if len(queue) > 0 {
			nextIdx, next = queue[0], load(queue[0])
		}
		// Stop and wait: the next chunk goes once this one has arrived, so
		// a cut loses at most this one.
		for acked := false; !acked; {
			msg, err := readMsg(r)
			if err != nil {
				if next != nil {
					<-next
				}
				return nil, err
			}
			switch x := msg.(type) {
			case *wire.BlobAck:
				if x.Index != i {
					return nil, fmt.Errorf("%w: ack for chunk %d, sent %d", errProtocol, x.Index, i)
				}
				acked = true
			case *wire.BlobWant: // an earlier chunk failed its hash: sent again
				if err := want(x); err != nil {
					return nil, err
				}
			case *wire.BlobStored:
				if x.Hash != m.Hash {
					return nil, fmt.Errorf("%w: BlobStored for another blob", errProtocol)
				}
				return x, nil
			default:
				return nil, fmt.Errorf("%w: expected BlobAck, got %T", errProtocol, msg)
			}
		}
	}
}

// receive asks for the chunks of m that bs lacks and acknowledges each on
// arrival; a second goroutine checks and stores them meanwhile (a chunk
// that fails its hash is asked for again). Every chunk that arrived in
// full is stored even if the stream then breaks, so a cut costs at most
// the chunk it cut. Once all are stored (each write is synced) it runs done (nil: nothing
// more) and sends BlobStored with the holders done reports; an error of
// done goes to the sender as an Error frame.
func receive(ctx context.Context, w io.Writer, r *wire.Reader, bs *blobstore.Store, m *schema.Manifest, o Options, done func(ctx context.Context) (uint32, error)) error {
	if err := m.Validate(); err != nil {
		wire.SendError(w, wire.CodeFor(err), err.Error())
		return err
	}
	// The manifest first: a partial blob is then known (Missing works on
	// resume, and GC's grace period counts from now).
	if err := bs.PutManifest(m); err != nil {
		wire.SendError(w, wire.CodeFor(err), "cannot store the manifest: "+err.Error())
		return err
	}
	missing, err := bs.Missing(m)
	if err != nil {
		wire.SendError(w, wire.CodeInternal, "cannot read the blob store")
		return err
	}
	if len(missing) == 0 && o.Prove {
		missing = []int{rand.IntN(len(m.Chunks))}
	}
	idx := make([]uint32, len(missing))
	wanted := make(map[uint32]bool, len(missing))
	for i, x := range missing {
		idx[i], wanted[uint32(x)] = uint32(x), true
	}
	if err := wire.WriteMsg(w, &wire.BlobWant{Hash: m.Hash, Indexes: idx}); err != nil {
		return err
	}
	whole := &wholeHash{h: sha256.New()}
	if len(wanted) > 0 {
		if err := receiveChunks(ctx, w, r, bs, m, o, wanted, whole); err != nil {
			return err
		}
	}
	if o.VerifyWhole {
		if err := whole.finish(bs, m); err != nil {
			// The manifest lied: forget it, so the real one can be stored.
			bs.DeleteManifest(m.Hash)
			wire.SendError(w, wire.CodeFor(err), err.Error())
			return err
		}
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

// wholeHash hashes a blob's chunks in order as they are stored; chunks
// that arrive out of order (a resumed or repaired transfer) are read back
// from the store at the end.
type wholeHash struct {
	h    hash.Hash
	next int // the first chunk not yet hashed
}

// add hashes chunk i if it is the next one.
func (wh *wholeHash) add(i int, data []byte) {
	if i == wh.next {
		wh.h.Write(data)
		wh.next++
	}
}

// finish hashes the chunks not hashed on arrival and checks the result.
func (wh *wholeHash) finish(bs *blobstore.Store, m *schema.Manifest) error {
	for ; wh.next < len(m.Chunks); wh.next++ {
		data, err := bs.ChunkForTransfer(m.Chunks[wh.next])
		if err != nil {
			return err
		}
		wh.h.Write(data)
	}
	var sum [32]byte
	copy(sum[:], wh.h.Sum(nil))
	if sum != m.Hash {
		return fmt.Errorf("%w: the chunks of blob %s do not hash to it (a forged manifest)", schema.ErrBadSignature, m.HashHex())
	}
	return nil
}

func receiveChunks(ctx context.Context, w io.Writer, r *wire.Reader, bs *blobstore.Store, m *schema.Manifest, o Options, wanted map[uint32]bool, whole *wholeHash) error {
	type result struct {
		index uint32
		size  int
		err   error
	}
	quit := make(chan struct{})
	defer close(quit)
	frames := make(chan *wire.BlobChunk)
	readErr := make(chan error, 1)
	go func() {
		for {
			msg, err := readMsg(r)
			if err == nil {
				c, ok := msg.(*wire.BlobChunk)
				if !ok {
					err = fmt.Errorf("%w: expected BlobChunk, got %T", errProtocol, msg)
				} else {
					select {
					case frames <- c:
						continue
					case <-quit:
						return
					}
				}
			}
			readErr <- err
			return
		}
	}()
	work := make(chan *wire.BlobChunk, 2)
	results := make(chan result, len(wanted)+maxBadChunk)
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		for c := range work {
			err := bs.PutChunk(m.Chunks[c.Index], c.Data)
			if err == nil {
				whole.add(int(c.Index), c.Data)
			}
			results <- result{c.Index, len(c.Data), err}
		}
	}()
	// However receive ends, what arrived in full is stored first.
	defer func() {
		close(work)
		<-stored
	}()
	pending := map[uint32]bool{}
	bad := map[uint32]int{}
	fail := func(code string, err error) error {
		wire.SendError(w, code, err.Error())
		return err
	}
	for len(wanted) > 0 {
		select {
		case c := <-frames:
			if !wanted[c.Index] || pending[c.Index] {
				return fail(wire.CodeBadFrame, fmt.Errorf("%w: chunk %d was not asked for", errProtocol, c.Index))
			}
			if want := schema.ChunkLen(m.Size, int(c.Index)); len(c.Data) != want {
				return fail(wire.CodeInvalid, fmt.Errorf("%w: chunk %d is %d bytes, the manifest's size implies %d", schema.ErrInvalid, c.Index, len(c.Data), want))
			}
			pending[c.Index] = true
			if err := wire.WriteMsg(w, &wire.BlobAck{Index: c.Index}); err != nil {
				work <- c
				return err
			}
			work <- c
		case res := <-results:
			delete(pending, res.index)
			if errors.Is(res.err, blobstore.ErrBadChunk) {
				if o.Bad != nil {
					o.Bad(int(res.index))
				}
				if bad[res.index]++; bad[res.index] >= maxBadChunk {
					return fail(wire.CodeBadSignature, fmt.Errorf("%w: chunk %d of blob %s arrived corrupt %d times", schema.ErrBadSignature, res.index, m.HashHex(), maxBadChunk))
				}
				// Refused, and asked for again.
				if err := wire.WriteMsg(w, &wire.BlobWant{Hash: m.Hash, Indexes: []uint32{res.index}}); err != nil {
					return err
				}
				continue
			}
			if res.err != nil {
				return fail(wire.CodeFor(res.err), fmt.Errorf("cannot store the chunk: %w", res.err))
			}
			delete(wanted, res.index)
			if o.Received != nil {
				o.Received(int(res.index), res.size)
			}
		case err := <-readErr:
			if errors.Is(err, errProtocol) {
				return fail(wire.CodeBadFrame, err)
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
