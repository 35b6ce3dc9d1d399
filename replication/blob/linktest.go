package blob

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// MaxLinkTest bounds one link test.
const MaxLinkTest = 4 << 30

// LinkTestResult is one measurement of a link's raw throughput: one QUIC
// stream carrying chunk-sized frames, nothing hashed or stored.
type LinkTestResult struct {
	Member      string  `json:"member"`
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	MBPerSecond float64 `json:"mb_per_second"` // 10^6 bytes per second
}

// linkTestSink reads a link test's frames until the caller closes its
// side, then answers how many payload bytes arrived.
func linkTestSink(st *stream) {
	var n int64
	for n <= MaxLinkTest+schema.ChunkSize {
		msg, err := st.r.Read()
		if errors.Is(err, io.EOF) {
			wire.WriteMsg(st.s, &wire.Ack{Seq: uint64(n)})
			return
		}
		if err != nil {
			return
		}
		c, ok := msg.(*wire.BlobChunk)
		if !ok {
			wire.SendError(st.s, wire.CodeBadFrame, fmt.Sprintf("a link test carries BlobChunk frames, not %T", msg))
			return
		}
		n += int64(len(c.Data))
	}
	wire.SendError(st.s, wire.CodeTooLarge, fmt.Sprintf("a link test carries at most %d bytes", MaxLinkTest))
}

// LinkTest streams n bytes to the member at the other end of conn on one
// stream and reports the throughput the member confirms.
func LinkTest(ctx context.Context, conn *transport.Conn, node, ward string, n int64) (LinkTestResult, error) {
	if n <= 0 || n > MaxLinkTest {
		return LinkTestResult{}, &schema.FieldError{Field: "bytes", Reason: fmt.Sprintf("must be from 1 to %d", int64(MaxLinkTest))}
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return LinkTestResult{}, err
	}
	st := newStream(s)
	defer st.close()
	defer context.AfterFunc(ctx, func() { s.CancelRead(1); s.CancelWrite(1) })()
	if err := wire.WriteMsg(s, &wire.Hello{Proto: wire.ProtoLinkTest, Node: node, Ward: ward, Versions: []uint8{wire.Version}}); err != nil {
		return LinkTestResult{}, err
	}
	msg, err := readMsg(st.r)
	if err != nil {
		return LinkTestResult{}, err
	}
	w, ok := msg.(*wire.Welcome)
	if !ok {
		return LinkTestResult{}, fmt.Errorf("%w: expected Welcome, got %T", errProtocol, msg)
	}
	data := make([]byte, schema.ChunkSize)
	rand.Read(data) // incompressible, like scans
	start := time.Now()
	for sent := int64(0); sent < n; {
		k := min(n-sent, schema.ChunkSize)
		if err := wire.WriteChunk(s, 0, data[:k]); err != nil {
			return LinkTestResult{}, err
		}
		sent += k
	}
	s.Close() // FIN: the member answers once it has read everything
	msg, err = readMsg(st.r)
	took := time.Since(start)
	if err != nil {
		return LinkTestResult{}, err
	}
	ack, ok := msg.(*wire.Ack)
	if !ok || int64(ack.Seq) != n {
		return LinkTestResult{}, fmt.Errorf("%w: link test answered %T %+v for %d bytes", errProtocol, msg, msg, n)
	}
	return LinkTestResult{Member: w.Node, Bytes: n, Seconds: took.Seconds(), MBPerSecond: float64(n) / took.Seconds() / 1e6}, nil
}

// LinkTest measures this ward's raw link to the city member it is
// connected to (the limit blob transfers are compared with).
func (w *Ward) LinkTest(ctx context.Context, n int64) (any, error) {
	conn, err := w.current(ctx)
	if err != nil {
		return nil, err
	}
	return LinkTest(ctx, conn, w.id, w.ward, n)
}
