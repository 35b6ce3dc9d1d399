package raftlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// levelTrace is below slog.LevelDebug; badger's own debug output (very
// chatty: every compaction step) goes there.
const levelTrace = slog.LevelDebug - 4

// badgerLogger routes badger's printf-style logging to slog. badger logs
// routine events (memtable flushes, compactions, replay progress) at INFO,
// which is noise for an operator, so INFO becomes slog debug and badger's
// DEBUG becomes trace. Warnings and errors keep their level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(levelTrace, f, a) }

func (b badgerLogger) log(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, a...)), "source", "badger")
}
