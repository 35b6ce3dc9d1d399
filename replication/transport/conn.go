package transport

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/wardsync/wardsync/schema"
)

// Conn is an authenticated QUIC connection and who is on the other end.
type Conn struct {
	*quic.Conn
	Peer schema.PeerIdentity
}

// Stream error code sent (RESET_STREAM / STOP_SENDING) when a StreamConn is
// closed.
const streamCodeClosed quic.StreamErrorCode = 0

// StreamConn adapts one QUIC stream to net.Conn (for hashicorp/raft's
// NetworkTransport):
//
//   - Read and Write act on the stream; one reader and one writer goroutine
//     may use it at the same time.
//   - Close closes the send side (FIN after the data written so far) and
//     cancels the receive side (STOP_SENDING), so the peer's Read ends with
//     io.EOF and its Write fails. If a Write is blocked in another goroutine
//     (quic-go forbids closing a stream concurrently with Write), Close
//     resets the send side instead, which unblocks that Write. Close may be
//     called from any goroutine, any number of times.
//   - After Close, Read and Write return net.ErrClosed.
//   - LocalAddr and RemoteAddr are the connection's; the deadlines are the
//     stream's (a timeout is a net.Error with Timeout() true that wraps
//     os.ErrDeadlineExceeded).
func StreamConn(c *Conn, s *quic.Stream) net.Conn {
	return &streamConn{s: s, local: c.LocalAddr(), remote: c.RemoteAddr()}
}

type streamConn struct {
	s             *quic.Stream
	local, remote net.Addr

	mu      sync.Mutex
	closed  bool
	writing bool // a Write is in progress
}

func (c *streamConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.s.Read(p)
	if err != nil && c.isClosed() && isLocalCancel(err) {
		err = net.ErrClosed
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.writing = true
	c.mu.Unlock()

	n, err := c.s.Write(p)

	c.mu.Lock()
	c.writing = false
	closed := c.closed
	c.mu.Unlock()
	if err != nil && closed && isLocalCancel(err) {
		err = net.ErrClosed
	}
	return n, err
}

func (c *streamConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	writing := c.writing
	c.mu.Unlock()

	c.s.CancelRead(streamCodeClosed)
	if writing {
		// quic-go: Close must not race with Write. Reset the send side
		// instead; the pending Write returns at once.
		c.s.CancelWrite(streamCodeClosed)
		return nil
	}
	// The only error is "already reset by the peer" (it closed first); the
	// stream is closed on our side either way.
	_ = c.s.Close()
	return nil
}

// isLocalCancel reports whether err is the stream error our own Close caused.
func isLocalCancel(err error) bool {
	se, ok := errors.AsType[*quic.StreamError](err)
	return ok && !se.Remote
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) SetDeadline(t time.Time) error      { return c.s.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }
