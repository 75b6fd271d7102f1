package gateway

import (
	"context"
	"strconv"
	"time"

	"herald/offline"
	"herald/wire"
)

// Slots: 0 is the user channel, 1 the app's broadcast channel, topics
// follow in the order they were subscribed. A slot is never reused on a
// connection, so maxSlots bounds the SUBs of one connection's life.
const (
	slotUser      = 0
	slotBroadcast = 1
	maxSlots      = 256
)

// addSub gives s the next slot of c unless c already has channel. It
// returns the code to refuse with, or the existing sub.
func (c *conn) addSub(s *sub, channel string) (wire.Code, *sub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.subByNameLocked(channel); old != nil {
		return 0, old
	}
	if c.closed || c.state != stateReady {
		return wire.CodeInternal, nil
	}
	if len(c.subs) >= maxSlots {
		return wire.CodeTooManyChannels, nil
	}
	s.slot = uint32(len(c.subs))
	c.subs = append(c.subs, s)
	return 0, nil
}

// topicCount is how many topics c holds, not counting channel (a SUB of a
// topic already held adds nothing).
func (c *conn) topicCount(channel string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.subs[min(len(c.subs), 2):] {
		if s != nil && s.ch != nil && s.name() != channel {
			n++
		}
	}
	return n
}

// subByName finds the live sub of c for a channel name; c.mu must be held.
func (c *conn) subByNameLocked(name string) *sub {
	for _, s := range c.subs {
		if s != nil && s.ch != nil && s.name() == name {
			return s
		}
	}
	return nil
}

// subscribe adds a topic sub to c, joins its channel and queues its
// catch-up. seq > 0 starts after seq and is answered at once; seq 0 resolves
// the start from the device's KV cursor or the topic's newest message, and
// the SUBACK follows the resolution.
func (gw *Gateway) subscribe(c *conn, channel string, seq uint64, given bool) (code wire.Code, slot uint32, existed bool) {
	s := &sub{c: c, sent: seq, acked: seq, flushed: seq, syncing: true}
	if !given {
		s.needCursor, s.fromLatest, s.announce = true, true, true
	}
	code, old := c.addSub(s, channel)
	switch {
	case code != 0:
		return code, 0, false
	case old != nil:
		return 0, old.slot, true
	}
	if err := gw.join(s, c.app(), channel); err != nil {
		gw.log.Warn("cannot subscribe channel", "err", err)
		c.fail(wire.CodeInternal, "cannot subscribe")
		return wire.CodeInternal, 0, false
	}
	if given {
		var buf [64 + wire.MaxChannelLen]byte
		c.send((&wire.SubAck{Slot: s.slot, Channel: []byte(channel), Seq: seq}).Append(buf[:0]), wire.TypeSubAck)
	}
	gw.queueCatchup(s)
	return 0, s.slot, false
}

// queueCatchup queues s without blocking the caller when the queue is full.
// Every producer uses it: workers (CONNECT, SYNC, a resumed catch-up),
// live readers and catch-up workers themselves. A worker waiting on a full
// queue would wait on catch-up workers that wait on the shared scanner,
// which waits for a worker to take its flushes: a storm of more catch-ups
// than the queue holds would stop the gateway.
func (gw *Gateway) queueCatchup(s *sub) {
	select {
	case gw.catchup <- s:
	default:
		go func() { gw.catchup <- s }()
	}
}

// handleSub answers SUB: only topic channels may be subscribed by a device.
func (c *conn) handleSub(body []byte) bool {
	var f wire.Sub
	if err := f.Decode(body); err != nil {
		c.fail(wire.CodeMalformed, "malformed SUB")
		return false
	}
	name := string(f.Channel)
	var buf [64 + wire.MaxChannelLen]byte
	if kind, _, ok := offline.ParseChannel(name); !ok || kind != offline.KindTopic {
		c.gw.m.subRefused.Inc()
		c.send((&wire.SubAck{Channel: f.Channel, Code: wire.CodeBadChannel}).Append(buf[:0]), wire.TypeSubAck)
		return true
	}
	if a, ok := c.gw.apps.Get(c.app()); ok && a.MaxTopics > 0 && c.topicCount(name) >= a.MaxTopics {
		c.gw.m.topicLimit.Inc()
		c.fail(wire.CodeTooManyChannels, "the app allows "+strconv.Itoa(a.MaxTopics)+" topics per device")
		return false
	}
	code, slot, existed := c.gw.subscribe(c, name, f.Seq, f.Seq > 0)
	switch {
	case code == wire.CodeInternal:
		return false
	case code != 0:
		c.gw.m.subRefused.Inc()
		c.send((&wire.SubAck{Channel: f.Channel, Code: code}).Append(buf[:0]), wire.TypeSubAck)
	case existed:
		// Already subscribed: say where it stands; the cursor is not moved.
		var seq uint64
		c.mu.Lock()
		if s := c.subs[slot]; s != nil {
			seq = s.sent
		}
		c.mu.Unlock()
		c.send((&wire.SubAck{Slot: slot, Channel: f.Channel, Seq: seq}).Append(buf[:0]), wire.TypeSubAck)
	}
	return true
}

// handleUnsub leaves a topic. Unsubscribing a channel the connection does
// not have changes nothing. The device's cursor on the topic is deleted: a
// later SUB without a cursor starts from the newest message, not from where
// it left.
func (c *conn) handleUnsub(body []byte) bool {
	var f wire.Unsub
	if err := f.Decode(body); err != nil {
		c.fail(wire.CodeMalformed, "malformed UNSUB")
		return false
	}
	c.mu.Lock()
	s := c.subByNameLocked(string(f.Channel))
	if s == nil || s.slot < 2 {
		c.mu.Unlock()
		return true
	}
	c.subs[s.slot] = nil
	s.left = true
	s.dropHeldLocked()
	key := s.cursorKey()
	c.mu.Unlock()
	c.gw.leave(s)
	c.gw.acks.forget(s)
	c.gw.forgetRevs(s)
	go func() {
		ctx, cancel := context.WithTimeout(c.gw.ctx, 5*time.Second)
		defer cancel()
		if err := c.gw.store.DeleteCursor(ctx, key); err != nil {
			c.gw.m.cursorErrors.Inc()
		}
	}()
	return true
}

// handleSync serves a device's SYNC: a page of stored messages from From.
// A SYNC while the gateway is already sending the channel is ignored (what
// it asks for is on its way); From beyond what was sent is read from there.
func (c *conn) handleSync(body []byte) bool {
	var f wire.Sync
	if err := f.Decode(body); err != nil {
		c.fail(wire.CodeMalformed, "malformed SYNC")
		return false
	}
	c.mu.Lock()
	if int(f.Slot) >= len(c.subs) || c.subs[f.Slot] == nil {
		c.mu.Unlock()
		c.fail(wire.CodeBadChannel, "SYNC for an unknown channel slot")
		return false
	}
	s := c.subs[f.Slot]
	if s.syncing && !s.notify {
		c.mu.Unlock()
		return true
	}
	from := f.From
	if from == 0 || from > s.sent+1 {
		from = s.sent + 1
	}
	max := f.Max
	if max == 0 {
		max = defaultSyncPage
	}
	if max > maxSyncPage {
		max = maxSyncPage
	}
	s.sent = from - 1
	s.syncMax, s.notify, s.syncing = max, false, true
	c.mu.Unlock()
	c.gw.queueCatchup(s)
	return true
}

// loadTopics subscribes c to its user's server-side topics (kept in KV by
// the API). It returns false when the connection was failed.
func (gw *Gateway) loadTopics(c *conn) bool {
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	topics, err := gw.store.UserTopics(ctx, c.app(), c.user())
	cancel()
	if err != nil {
		gw.m.storeErrors.Inc()
		c.fail(wire.CodeStoreUnavailable, "topic store unavailable: reconnect later")
		return false
	}
	for _, t := range topics {
		if code, _, _ := gw.subscribe(c, offline.TopicChannel(t), 0, false); code == wire.CodeInternal {
			return false
		}
	}
	return true
}
