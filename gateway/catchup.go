package gateway

import (
	"context"
	"time"

	"herald/offline"
	"herald/wire"
)

// catchupPage is how many messages one Direct Get batch reads.
const catchupPage = 128

// catchupWorker serves queued catch-ups. The pool bounds concurrent store
// reads, so a reconnect storm queues instead of flooding JetStream.
func (gw *Gateway) catchupWorker() {
	var frame []byte
	for s := range gw.catchup {
		if s == nil {
			return
		}
		// Many catch-ups waiting, or a storm already being served: hand
		// them to the shared scanner (sharedscan.go) instead of reading
		// each backlog on its own.
		if gw.storming.Load() || len(gw.catchup) >= minSharedGroup {
			gw.shared <- s
			continue
		}
		gw.m.catchupRuns.Inc()
		frame = gw.runCatchup(s, frame)
	}
}

// runCatchup sends the device every stored message after s.sent, in order,
// page by page, then switches the sub to live delivery. Live copies that
// arrived meanwhile only raised pendingMax; if one is beyond what the store
// returned, the loop reads again, so switching to live loses nothing. When
// the device's output is full the catch-up pauses and flush resumes it.
func (gw *Gateway) runCatchup(s *sub, frame []byte) []byte {
	c := s.c
	c.mu.Lock()
	need := s.needCursor
	c.mu.Unlock()
	if need && !gw.resolveCursor(s) {
		return frame
	}
	for {
		c.mu.Lock()
		if c.closed || c.state != stateReady {
			c.mu.Unlock()
			return frame
		}
		if c.pendingLocked() > gw.cfg.MaxOutBytes/2 {
			s.resume = true
			c.mu.Unlock()
			c.schedule(evFlush)
			return frame
		}
		from := s.sent + 1
		c.mu.Unlock()

		ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
		msgs, pending, err := gw.store.Fetch(ctx, offline.StoredSubjectForKey(s.ch.key), from, catchupPage)
		cancel()
		if err != nil {
			gw.m.storeErrors.Inc()
			if gw.ctx.Err() == nil {
				gw.log.Warn("catch-up read failed", "channel", s.ch.key, "err", err)
			}
			c.fail(wire.CodeStoreUnavailable, "store unavailable: reconnect later")
			return frame
		}

		now := time.Now()
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return frame
		}
		n := 0
		for i := range msgs {
			m := &msgs[i]
			if m.Seq <= s.sent {
				continue
			}
			s.sent = m.Seq
			if !m.Expires.IsZero() && !m.Expires.After(now) {
				continue // expired but not yet removed by the server
			}
			frame = (&wire.Push{Slot: s.slot, Seq: m.Seq, Flags: wire.FlagReplay, Time: m.Time.UnixMilli(),
				Expires: unixMilli(m.Expires), Payload: m.Data}).Append(frame[:0])
			c.appendLocked(frame)
			n++
		}
		// The batch may end early (the server caps its bytes): only the
		// server's pending count says the end was reached.
		done := (len(msgs) == 0 || pending == 0) && s.pendingMax <= s.sent
		if done {
			s.syncing = false
		}
		c.mu.Unlock()
		if n > 0 {
			gw.m.catchupMsgs.Add(n)
			gw.m.framesOut[wire.TypePush].Add(n)
			c.schedule(evFlush)
		}
		if done {
			return frame
		}
	}
}

// resolveCursor reads the server cursor of a device that sent none. It
// returns false when the connection was failed.
func (gw *Gateway) resolveCursor(s *sub) bool {
	c := s.c
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	seq, err := gw.store.Cursor(ctx, s.cursorKey())
	cancel()
	if err != nil {
		gw.m.storeErrors.Inc()
		c.fail(wire.CodeStoreUnavailable, "cursor store unavailable: reconnect later")
		return false
	}
	c.mu.Lock()
	if s.needCursor {
		s.needCursor = false
		if seq > s.sent {
			s.sent, s.acked, s.flushed = seq, seq, seq
		}
	}
	c.mu.Unlock()
	return true
}
