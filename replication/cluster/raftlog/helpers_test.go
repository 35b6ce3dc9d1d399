package raftlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// quietLogger drops everything below warnings.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func openStore(tb testing.TB, dir string) *Store {
	tb.Helper()
	s, err := Open(Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		tb.Fatalf("open %s: %v", dir, err)
	}
	return s
}

// newStore opens a store in a fresh temp dir, closed at cleanup.
func newStore(tb testing.TB) (*Store, string) {
	tb.Helper()
	dir := tb.TempDir()
	s := openStore(tb, dir)
	tb.Cleanup(func() { s.Close() })
	return s, dir
}

func testLog(idx, term uint64, data string) *raft.Log {
	return &raft.Log{Index: idx, Term: term, Type: raft.LogCommand, Data: []byte(data)}
}

// richLog fills every field, varied by index.
func richLog(idx uint64) *raft.Log {
	l := &raft.Log{
		Index: idx,
		Term:  idx/10 + 1,
		Type:  raft.LogType(idx % 6),
		Data:  []byte(fmt.Sprintf("data-%d", idx)),
	}
	if idx%3 == 0 {
		l.Extensions = []byte{byte(idx), 0, 0xff}
	}
	if idx%2 == 0 {
		l.AppendedAt = time.Date(2026, 11, 23, 12, 0, 0, int(idx), time.FixedZone("x", 3600))
	}
	return l
}

func makeLogs(from, to uint64, mk func(uint64) *raft.Log) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, mk(i))
	}
	return out
}

// sameLog compares logs field by field: nil and empty byte slices are
// equal and AppendedAt is compared as an instant.
func sameLog(a, b *raft.Log) bool {
	norm := func(l *raft.Log) raft.Log {
		c := *l
		if len(c.Data) == 0 {
			c.Data = nil
		}
		if len(c.Extensions) == 0 {
			c.Extensions = nil
		}
		c.AppendedAt = time.Time{}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b)) && a.AppendedAt.Equal(b.AppendedAt)
}

func mustStoreLogs(tb testing.TB, s *Store, logs []*raft.Log) {
	tb.Helper()
	if err := s.StoreLogs(logs); err != nil {
		tb.Fatalf("StoreLogs: %v", err)
	}
}

func checkBounds(tb testing.TB, s *Store, first, last uint64) {
	tb.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		tb.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		tb.Fatal(err)
	}
	if f != first || l != last {
		tb.Fatalf("bounds = [%d, %d], want [%d, %d]", f, l, first, last)
	}
	// The cache must agree with what is on disk.
	df, dl, err := s.scanBounds()
	if err != nil {
		tb.Fatal(err)
	}
	if df != f || dl != l {
		tb.Fatalf("cached bounds [%d, %d] but database holds [%d, %d]", f, l, df, dl)
	}
}

func checkHas(tb testing.TB, s *Store, idx uint64, want *raft.Log) {
	tb.Helper()
	var got raft.Log
	if err := s.GetLog(idx, &got); err != nil {
		tb.Fatalf("GetLog(%d): %v", idx, err)
	}
	if want != nil && !sameLog(&got, want) {
		tb.Fatalf("GetLog(%d) = %+v, want %+v", idx, got, *want)
	}
}

func checkMissing(tb testing.TB, s *Store, idx uint64) {
	tb.Helper()
	var got raft.Log
	if err := s.GetLog(idx, &got); err != raft.ErrLogNotFound {
		tb.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", idx, err)
	}
}

// captureHandler records slog messages.
type captureHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) find(msg string) (slog.Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if r.Message == msg {
			return r, true
		}
	}
	return slog.Record{}, false
}
