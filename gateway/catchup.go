package gateway

import (
	"context"
	"slices"
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
		s.c.mu.Lock()
		solo := s.solo
		s.solo = false
		s.c.mu.Unlock()
		if !solo && (gw.storming.Load() || len(gw.catchup) >= minSharedGroup) {
			gw.shared <- s
			continue
		}
		gw.m.catchupRuns.Inc()
		frame = gw.runCatchup(s, frame)
	}
}

// Page sizes of SYNC: a device asking for 0 gets defaultSyncPage, one
// asking for more than maxSyncPage gets maxSyncPage.
const (
	defaultSyncPage = 100
	maxSyncPage     = 1000
)

// runCatchup sends the device every stored message after s.sent, in order,
// page by page, then switches the sub to live delivery. Live copies that
// arrived meanwhile only raised pendingMax; if one is beyond what the store
// returned, the loop reads again, so switching to live loses nothing. When
// the device's output is full the catch-up pauses and flush resumes it.
//
// Notification-first: when more than NotifyBacklog messages wait, or the
// next one is over InlineLimit, the gateway sends NOTIFY instead and the
// device pulls pages with SYNC (s.syncMax > 0 while one is served).
func (gw *Gateway) runCatchup(s *sub, frame []byte) []byte {
	if !gw.prepare(s) {
		return frame
	}
	c := s.c
	first := true
	// Nothing stored after the cursor (as far as the live messages this
	// gateway saw tell): live from here, without reading the store.
	if latest, err := gw.latestSeq(s.ch); err == nil {
		c.mu.Lock()
		if !c.closed && s.syncMax == 0 && !s.notify && s.sent >= latest && s.pendingMax <= s.sent {
			s.syncing = false
			s.dropHeldLocked()
			c.mu.Unlock()
			return frame
		}
		c.mu.Unlock()
	}
	for {
		c.mu.Lock()
		if c.closed || c.state != stateReady || s.left {
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
		serving := s.syncMax > 0
		page := catchupPage
		if serving && int(s.syncMax) < page {
			page = int(s.syncMax)
		}
		c.mu.Unlock()

		ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
		msgs, pending, err := gw.store.Fetch(ctx, offline.StoredSubjectForKey(s.ch.key), from, page)
		cancel()
		if err != nil {
			gw.m.storeErrors.Inc()
			if gw.ctx.Err() == nil {
				gw.log.Warn("catch-up read failed", "channel", s.ch.key, "err", err)
			}
			c.fail(wire.CodeStoreUnavailable, "store unavailable: reconnect later")
			return frame
		}
		if first && !serving && uint64(len(msgs))+pending > uint64(gw.cfg.NotifyBacklog) {
			gw.notify(s, uint64(len(msgs))+pending)
			return frame
		}
		first = false

		now := time.Now()
		c.mu.Lock()
		if c.closed || s.left {
			c.mu.Unlock()
			return frame
		}
		n, used := 0, 0
		large := false
		for used < len(msgs) {
			m := &msgs[used]
			if m.Seq <= s.sent {
				used++
				continue
			}
			if !serving && len(m.Data) > gw.cfg.InlineLimit {
				large = true
				break
			}
			used++
			s.sent = m.Seq
			if serving {
				s.syncMax--
			}
			if (m.Expires.IsZero() || m.Expires.After(now)) && !s.ch.isRevoked(m.Seq) {
				frame = (&wire.Push{Slot: s.slot, Seq: m.Seq, Flags: wire.FlagReplay, Time: m.Time.UnixMilli(),
					Expires: unixMilli(m.Expires), Payload: m.Data}).Append(frame[:0])
				c.appendLocked(frame)
				n++
			}
			if serving && s.syncMax == 0 {
				break
			}
		}
		// The batch may end early (the server caps its bytes): only the
		// server's pending count says the end was reached.
		end := used == len(msgs) && (len(msgs) == 0 || pending == 0)
		if end && !serving {
			n += s.applyHeldLocked()
		}
		done := end && s.pendingMax <= s.sent
		if done {
			s.syncing, s.syncMax = false, 0
			s.dropHeldLocked()
		}
		pageServed := serving && s.syncMax == 0 && !done
		c.mu.Unlock()
		if n > 0 {
			gw.m.catchupMsgs.Add(n)
			gw.m.framesOut[wire.TypePush].Add(n)
			c.schedule(evFlush)
		}
		switch {
		case done:
			return frame
		case large || pageServed:
			gw.notify(s, pending+uint64(len(msgs)-used))
			return frame
		}
	}
}

// notify announces a channel's waiting messages with NOTIFY instead of
// sending them; the sub stays out of live delivery until a SYNC reaches the
// end. pending is the caller's count of waiting messages (a hint).
func (gw *Gateway) notify(s *sub, pending uint64) {
	c := s.c
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	latest, err := gw.store.LastSeq(ctx, offline.StoredSubjectForKey(s.ch.key))
	cancel()
	if err != nil {
		gw.m.storeErrors.Inc()
		c.fail(wire.CodeStoreUnavailable, "store unavailable: reconnect later")
		return
	}
	c.mu.Lock()
	if c.closed || s.left {
		c.mu.Unlock()
		return
	}
	if s.pendingMax > latest {
		latest = s.pendingMax
	}
	s.notify, s.syncMax = true, 0
	var buf [3 * 10]byte
	c.appendLocked((&wire.Notify{Slot: s.slot, Seq: latest, Pending: pending}).Append(buf[:0]))
	c.mu.Unlock()
	gw.m.notifies.Inc()
	gw.m.frameOut(wire.TypeNotify)
	c.schedule(evFlush)
}

// prepare resolves what a catch-up needs from KV before it reads the store:
// the user's server-side topics and the device's cursor. It returns false
// when the connection was failed.
func (gw *Gateway) prepare(s *sub) bool {
	c := s.c
	c.mu.Lock()
	need, topics := s.needCursor, s.loadTopics
	s.loadTopics = false
	c.mu.Unlock()
	// loadTopics is set on the user channel's sub at CONNECT only.
	if topics && !gw.deviceAllowed(c) {
		return false
	}
	if topics {
		a, ok := gw.apps.Get(c.app())
		topics = ok && a.ServerTopics
	}
	if topics && !gw.loadTopics(c) {
		return false
	}
	return !need || gw.resolveCursor(s)
}

// deviceAllowed enforces the app's max_devices when the user channel is
// first prepared: a device the user already has (it holds a cursor on the
// user channel) is always let in; a new one only while the user has fewer
// than max_devices. It returns false when the connection was failed.
func (gw *Gateway) deviceAllowed(c *conn) bool {
	a, ok := gw.apps.Get(c.app())
	if !ok || a.MaxDevices <= 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	defer cancel()
	user := c.user()
	devices, err := gw.store.Devices(ctx, c.app(), user, offline.UserChannel(user))
	if err != nil {
		gw.m.storeErrors.Inc()
		c.fail(wire.CodeStoreUnavailable, "cursor store unavailable: reconnect later")
		return false
	}
	if slices.Contains(devices, c.device()) || len(devices) < a.MaxDevices {
		return true
	}
	gw.m.deviceLimit.Inc()
	c.fail(wire.CodeTooManyDevices, "the user has the app's maximum number of devices")
	return false
}

// resolveCursor reads the server cursor of a device that sent none. Without
// one, a topic or the broadcast channel starts after its newest message
// (and that start is written as the device's cursor, so messages that come
// while it is away are kept for it). It returns false when the connection
// was failed.
func (gw *Gateway) resolveCursor(s *sub) bool {
	c := s.c
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	defer cancel()
	seq, err := gw.store.Cursor(ctx, s.cursorKey())
	write := false
	if err == nil && seq == 0 && s.fromLatest {
		seq, err = gw.latestSeq(s.ch)
		write = seq > 0
	}
	if err != nil {
		gw.m.storeErrors.Inc()
		c.fail(wire.CodeStoreUnavailable, "cursor store unavailable: reconnect later")
		return false
	}
	c.mu.Lock()
	if !s.needCursor {
		c.mu.Unlock()
		return true
	}
	s.needCursor = false
	if seq > s.sent {
		s.sent, s.acked = seq, seq
		if !write {
			s.flushed = seq
		}
	}
	mark := write && !s.dirty && !s.left
	if mark {
		s.dirty = true
	}
	if s.announce {
		s.announce = false
		// Before any PUSH of the slot: the sub is still syncing.
		var buf [64 + wire.MaxChannelLen]byte
		c.appendLocked((&wire.SubAck{Slot: s.slot, Channel: []byte(s.name()), Seq: s.sent}).Append(buf[:0]))
		gw.m.frameOut(wire.TypeSubAck)
		defer c.schedule(evFlush)
	}
	c.mu.Unlock()
	if mark {
		gw.markDirty(s)
	}
	return true
}
