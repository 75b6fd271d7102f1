package gateway

import (
	"context"
	"time"
)

// cursorKey is the KV key of the sub's cursor: "<app>.<user>.<device>.<channel>".
// It is built when written rather than kept per connection.
func (s *sub) cursorKey() string {
	return s.c.key + s.ch.key[s.c.appLen:]
}

// markDirty queues s for the next cursor write.
func (gw *Gateway) markDirty(s *sub) {
	gw.dirtyMu.Lock()
	gw.dirty = append(gw.dirty, s)
	gw.dirtyMu.Unlock()
}

// flushSoon asks the flusher to write cursors now (a device left: its next
// connection, maybe elsewhere, should find its latest cursor).
func (gw *Gateway) flushSoon() {
	select {
	case gw.flushNow <- struct{}{}:
	default:
	}
}

// cursorFlusher writes acknowledged cursors to KV every CursorFlush: one
// write per device and channel per period, however many ACKs arrived.
func (gw *Gateway) cursorFlusher() {
	t := time.NewTicker(gw.cfg.CursorFlush)
	defer t.Stop()
	for {
		select {
		case <-gw.ctx.Done():
			return
		case <-t.C:
			gw.flushCursors(gw.ctx)
		case <-gw.flushNow:
			gw.flushCursors(gw.ctx)
		}
	}
}

// flushCursors writes every dirty cursor; each write is bounded by 5s and
// all of them by ctx. What is not written stays dirty for the next round.
func (gw *Gateway) flushCursors(ctx context.Context) {
	gw.dirtyMu.Lock()
	batch := gw.dirty
	gw.dirty = nil
	gw.dirtyMu.Unlock()
	for i, s := range batch {
		if ctx.Err() != nil {
			gw.dirtyMu.Lock()
			gw.dirty = append(gw.dirty, batch[i:]...)
			gw.dirtyMu.Unlock()
			return
		}
		c := s.c
		c.mu.Lock()
		seq := s.acked
		s.dirty = false
		left := s.left
		c.mu.Unlock()
		if seq <= s.flushed || left {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := gw.store.AdvanceCursor(wctx, s.cursorKey(), seq)
		cancel()
		if err != nil {
			gw.m.cursorErrors.Inc()
			gw.log.Warn("cursor write failed; will retry", "err", err)
			c.mu.Lock()
			retry := !s.dirty
			s.dirty = true
			c.mu.Unlock()
			if retry {
				gw.markDirty(s)
			}
			continue
		}
		gw.m.cursorWrites.Inc()
		c.mu.Lock()
		if seq > s.flushed {
			s.flushed = seq
		}
		c.mu.Unlock()
	}
}
