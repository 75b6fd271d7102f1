package gateway

import (
	"context"
	"time"

	"herald/offline"
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

// cursorChunk bounds the cursor writes in flight at once (and one
// round's deadline grows with them).
const cursorChunk = 4096

// flushCursors writes every dirty cursor, pipelined (offline.AdvanceCursors):
// a cursor this gateway wrote before is one compare-and-set publish on the
// revision it wrote (gw.revs). What is not written stays dirty for the
// next round.
func (gw *Gateway) flushCursors(ctx context.Context) {
	gw.dirtyMu.Lock()
	batch := gw.dirty
	gw.dirty = nil
	gw.dirtyMu.Unlock()
	for len(batch) > 0 {
		n := min(len(batch), cursorChunk)
		if ctx.Err() != nil {
			// Still flagged dirty: back on the list as they are.
			gw.dirtyMu.Lock()
			gw.dirty = append(gw.dirty, batch...)
			gw.dirtyMu.Unlock()
			return
		}
		gw.flushChunk(ctx, batch[:n])
		batch = batch[n:]
	}
}

func (gw *Gateway) flushChunk(ctx context.Context, batch []*sub) {
	subs := make([]*sub, 0, len(batch))
	ws := make([]offline.CursorWrite, 0, len(batch))
	gw.revMu.Lock()
	for _, s := range batch {
		c := s.c
		c.mu.Lock()
		seq := s.acked
		s.dirty = false
		skip := seq <= s.flushed || s.left
		c.mu.Unlock()
		if skip {
			continue
		}
		subs = append(subs, s)
		ws = append(ws, offline.CursorWrite{Key: s.cursorKey(), Seq: seq, Rev: gw.revs[s]})
	}
	gw.revMu.Unlock()
	if len(ws) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second+time.Duration(len(ws))*time.Millisecond)
	gw.store.AdvanceCursors(wctx, ws)
	cancel()
	var failed []*sub
	var lastErr error
	gw.revMu.Lock()
	for i, s := range subs {
		w := &ws[i]
		c := s.c
		c.mu.Lock()
		if w.Err == nil && w.Seq > s.flushed {
			s.flushed = w.Seq
		}
		// A closing connection's subs leave gw.revs in unregister, which
		// runs after the state changes: never add them back here.
		live := !c.closed && c.state == stateReady && !s.left
		c.mu.Unlock()
		switch {
		case w.Err != nil:
			failed = append(failed, s)
			lastErr = w.Err
			delete(gw.revs, s)
		case w.Rev != 0 && live:
			gw.revs[s] = w.Rev
		default:
			delete(gw.revs, s)
		}
	}
	gw.revMu.Unlock()
	gw.m.cursorWrites.Add(len(ws) - len(failed))
	if len(failed) > 0 {
		gw.m.cursorErrors.Add(len(failed))
		gw.log.Warn("cursor writes failed; will retry", "count", len(failed), "err", lastErr)
		gw.redirty(failed)
	}
}

// redirty puts subs back on the dirty list (those not on it already).
func (gw *Gateway) redirty(subs []*sub) {
	for _, s := range subs {
		c := s.c
		c.mu.Lock()
		again := !s.dirty
		s.dirty = true
		c.mu.Unlock()
		if again {
			gw.markDirty(s)
		}
	}
}

// forgetRevs drops the cursor revisions of subs that are going away.
func (gw *Gateway) forgetRevs(subs ...*sub) {
	gw.revMu.Lock()
	for _, s := range subs {
		delete(gw.revs, s)
	}
	gw.revMu.Unlock()
}
