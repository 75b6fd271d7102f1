package gateway

import (
	"errors"
	"slices"
	"time"

	"herald/config"
	"herald/offline"
	"herald/token"
	"herald/wire"
)

// handleFrame handles one frame from the device. It returns false once the
// connection is failed.
func (c *conn) handleFrame(t wire.Type, body []byte) bool {
	c.mu.Lock()
	state := c.state
	c.touchLocked()
	limited := false
	if t != wire.TypeAck {
		// A fixed one-second window: two bytes per connection.
		if now := uint8(c.gw.wheel.Now()); now != c.rateWin {
			c.rateWin, c.rateN = now, 0
		}
		if c.rateN < 0xffff {
			c.rateN++
		}
		limited = int(c.rateN) > c.gw.cfg.MaxFrameRate
	}
	c.mu.Unlock()
	if limited {
		c.gw.m.rateLimited.Inc()
		c.fail(wire.CodeRateLimited, "too many frames per second")
		return false
	}
	switch {
	case state == stateConnecting && t == wire.TypeConnect:
		return c.handleConnect(body)
	case state == stateConnecting && t == wire.TypeProbe:
		return c.handleProbe(body)
	case state == stateConnecting:
		c.fail(wire.CodeUnexpected, "the first frame must be CONNECT")
		return false
	case t == wire.TypeAck:
		var a wire.Ack
		if err := a.Decode(body); err != nil {
			c.fail(wire.CodeMalformed, "malformed ACK")
			return false
		}
		return c.handleAck(a.Slot, a.Seq)
	case t == wire.TypePing:
		var p wire.Ping
		if err := p.Decode(body); err != nil {
			c.fail(wire.CodeMalformed, "malformed PING")
			return false
		}
		c.mu.Lock()
		if p.Interval != 0 {
			c.hb = c.gw.heartbeat(p.Interval)
			c.touchLocked()
		}
		c.mu.Unlock()
		var buf [wire.MaxHeaderLen]byte
		c.send(wire.AppendPong(buf[:0]), wire.TypePong)
		return true
	case t == wire.TypeSync:
		return c.handleSync(body)
	case t == wire.TypeSub:
		return c.handleSub(body)
	case t == wire.TypeUnsub:
		return c.handleUnsub(body)
	case t == wire.TypeUp:
		return c.handleUp(body)
	default:
		c.fail(wire.CodeUnexpected, "frame "+t.String()+" is not allowed from a device")
		return false
	}
}

// authCode maps a token error to its protocol code.
func authCode(err error) wire.Code {
	switch {
	case errors.Is(err, token.ErrMissing):
		return wire.CodeTokenMissing
	case errors.Is(err, token.ErrExpired):
		return wire.CodeTokenExpired
	case errors.Is(err, token.ErrAppMismatch):
		return wire.CodeAppMismatch
	case errors.Is(err, token.ErrDeviceMismatch):
		return wire.CodeDeviceMismatch
	default:
		return wire.CodeTokenInvalid
	}
}

// handleConnect authenticates the device, subscribes its channels, answers
// CONNACK and starts catching it up from its cursors.
func (c *conn) handleConnect(body []byte) bool {
	gw := c.gw
	var f wire.Connect
	if err := f.Decode(body); err != nil {
		c.fail(wire.CodeMalformed, "malformed CONNECT")
		return false
	}
	if f.Version != wire.Version {
		c.fail(wire.CodeBadVersion, "unsupported protocol version")
		return false
	}
	if gw.ops.draining.Load() {
		c.goAwayAfter(wire.CodeShutdown, "gateway draining: connect elsewhere", uint32(gw.cfg.DrainInterval/time.Millisecond))
		return false
	}
	app, device := string(f.App), string(f.Device)
	if !config.ValidName(device) {
		c.fail(wire.CodeMalformed, "invalid device name")
		return false
	}
	a, ok := gw.apps.Get(app)
	if !config.ValidName(app) || !ok {
		c.fail(wire.CodeUnknownApp, "unknown app")
		return false
	}
	user, err := token.Verify(f.Token, app, device, a.SecretBytes(time.Now()))
	if err == nil && !config.ValidName(user) {
		err = token.ErrInvalid
	}
	if err != nil {
		c.fail(authCode(err), err.Error())
		return false
	}
	if c.ws && len(a.Origins) > 0 {
		origin, _ := gw.pending.Load(c)
		if s, _ := origin.(string); !a.OriginAllowed(s) {
			c.fail(wire.CodeOriginNotAllowed, "origin not allowed for this app")
			return false
		}
	}

	// Channels: the user's (slot 0), the app's broadcast (slot 1), then
	// the topics the device holds cursors for, in its order. A channel
	// without a cursor is resolved by the catch-up worker from KV: a store
	// round trip must not hold a readiness worker (in a reconnect storm it
	// would stall every CONNECT behind it). The user's server-side topics
	// are read there too.
	channel := offline.UserChannel(user)
	user0 := &sub{slot: slotUser, syncing: true, needCursor: true, loadTopics: true}
	bcast := &sub{slot: slotBroadcast, syncing: true, needCursor: true, fromLatest: true, announce: true}
	subs := []*sub{user0, bcast}
	names := []string{channel, offline.BroadcastChannel}
	for _, cur := range f.Cursors {
		name := string(cur.Channel)
		kind, _, ok := offline.ParseChannel(name)
		switch {
		case !ok:
			c.fail(wire.CodeBadChannel, "CONNECT names an invalid channel")
			return false
		case name == channel:
			user0.sent, user0.needCursor = cur.Seq, false
		case name == offline.BroadcastChannel:
			bcast.sent, bcast.needCursor, bcast.announce = cur.Seq, false, false
		case kind == offline.KindTopic && !slices.Contains(names, name) && len(subs) < maxSlots:
			subs = append(subs, &sub{slot: uint32(len(subs)), sent: cur.Seq, syncing: true})
			names = append(names, name)
		}
		// Cursors of other users' channels (an earlier login) are ignored.
	}
	// An operator replay waiting for this device: start its user channel
	// from there (and tell it, with RESYNC after CONNACK).
	replayKey := offline.ReplayKey(app, user, device)
	replay, replaying := gw.takeReplay(replayKey, c, func(r offline.Replay) bool {
		if user0.needCursor || user0.sent >= r.From {
			user0.sent, user0.needCursor = r.From-1, false
		}
		user0.replayWait = true
		return true
	})
	ack := wire.ConnAck{
		Version:      wire.Version,
		HeartbeatMin: uint32(gw.cfg.HeartbeatMin / time.Second),
		HeartbeatMax: uint32(gw.cfg.HeartbeatMax / time.Second),
		MaxFrame:     uint32(gw.cfg.MaxFrame),
		Channels:     make([]wire.Channel, 0, len(subs)),
	}
	for i, s := range subs {
		s.c = c
		s.acked, s.flushed = s.sent, s.sent
		if !s.announce {
			ack.Channels = append(ack.Channels, wire.Channel{Slot: s.slot, Name: []byte(names[i]), Seq: s.sent})
		}
	}
	// The user channel is always in CONNACK; when its start comes from
	// the server cursor, a SUBACK confirms it too, so the device can send
	// it next time and spare that read (it matters in reconnect storms).
	user0.announce = user0.needCursor

	c.mu.Lock()
	if c.closed || c.state != stateConnecting {
		c.mu.Unlock()
		if replaying {
			gw.releaseReplay(replayKey, c) // for the device's next connection
		}
		return false
	}
	c.key = app + "." + user + "." + device
	c.appLen, c.userLen = uint8(len(app)), uint8(len(user))
	c.hb = gw.heartbeat(f.Heartbeat)
	c.state = stateReady
	c.deadline = gw.wheel.AtLeast(idleDeadline(c.hb))
	c.subs = subs
	ack.Heartbeat = uint32(c.hb)
	// CONNACK goes out before any PUSH: queue it before the channels are live.
	c.appendLocked(ack.Append(nil))
	if replaying {
		var buf [32]byte
		c.appendLocked((&wire.Resync{Slot: slotUser, From: replay.From}).Append(buf[:0]))
	}
	c.mu.Unlock()
	gw.m.frameOut(wire.TypeConnAck)
	gw.wheel.add(c, c.deadline)
	gw.pending.Delete(c)

	// Replace an older connection of the same device on this gateway.
	sh := gw.conns.lock(c.key)
	old := sh.m[c.key]
	sh.m[c.key] = c
	sh.Unlock()
	if old != nil {
		old.fail(wire.CodeReplaced, "the device connected again")
	}
	gw.m.connects.Inc()
	if replaying {
		gw.m.frameOut(wire.TypeResync)
		gw.replaySent(replay)
	}

	// Live first, then the store: nothing published in between is missed.
	for i, s := range subs {
		if err := gw.join(s, app, names[i]); err != nil {
			gw.log.Warn("cannot subscribe channel", "err", err)
			c.fail(wire.CodeInternal, "cannot subscribe")
			return false
		}
	}
	c.flush()
	for _, s := range subs {
		gw.queueCatchup(s)
	}
	return true
}

// handleAck records a cumulative acknowledgement. Cursors only move forward:
// stale or repeated ACKs change nothing and cost no KV write.
func (c *conn) handleAck(slot uint32, seq uint64) bool {
	c.mu.Lock()
	if int(slot) >= len(c.subs) || c.subs[slot] == nil {
		c.mu.Unlock()
		c.fail(wire.CodeBadChannel, "ACK for an unknown channel slot")
		return false
	}
	s := c.subs[slot]
	beyond := seq > s.sent
	if beyond {
		seq = s.sent // never acknowledge what was not sent
	}
	if s.replayWait && !beyond {
		// An operator replay is done once the device acknowledges a
		// message from its From on (replayed messages below the old
		// cursor are stale ACKs for the server cursor, not for this).
		// An ACK beyond what was sent since the RESYNC was sent before
		// the device read it (its old position): it proves nothing.
		c.mu.Unlock()
		c.gw.replayAcked(c, s, seq)
		c.mu.Lock()
		seq = min(seq, s.sent) // a newer replay may have rewound it meanwhile
	}
	if seq <= s.acked {
		c.mu.Unlock()
		c.gw.m.staleAcks.Inc()
		return true
	}
	s.acked = seq
	mark := !s.dirty
	s.dirty = true
	c.mu.Unlock()
	if d, ok := c.gw.acks.acked(s, seq); ok {
		c.gw.m.ackLat.Update(d.Seconds())
	}
	if mark {
		c.gw.markDirty(s)
	}
	return true
}
