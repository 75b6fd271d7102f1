package gateway

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"herald/offline"
	"herald/wire"
)

// channel is one channel of one app that at least one local device listens
// on. The gateway holds one NATS subscription per channel, whatever the
// number of local listeners, and fans each live message out itself.
type channel struct {
	gw  *Gateway
	key string // "<app>.<channel>"; the stored subject is derived from it

	mu   sync.Mutex
	subs []*sub
	nsub *nats.Subscription
}

// sub is one connection's membership in a channel. Fields after slot are
// guarded by c.mu.
type sub struct {
	c    *conn
	ch   *channel
	slot uint32

	sent       uint64 // highest seq queued to the device
	acked      uint64 // highest seq the device acknowledged
	flushed    uint64 // highest acked seq written to KV
	syncing    bool   // catching up from the store: live copies only raise pendingMax
	pendingMax uint64 // highest live seq seen while syncing
	resume     bool   // catch-up paused until the output drains
	dirty      bool   // in gw.dirty
	needCursor bool   // the device sent no cursor: catch-up reads it from KV first
}

// join adds s to its channel, subscribing on NATS if it is the first local
// listener.
func (gw *Gateway) join(s *sub, app, name string) error {
	key := offline.ChannelKey(app, name)
	sh := gw.chans.lock(key)
	ch := sh.m[key]
	if ch == nil {
		ch = &channel{gw: gw, key: key}
		var err error
		ch.nsub, err = gw.nc.ChanSubscribe(offline.LiveSubject(app, name), gw.live[shardOf(key)%liveShards])
		if err != nil {
			sh.Unlock()
			return err
		}
		// The shared channel is the buffer; a full one is reported as a
		// slow consumer and the channel re-syncs from the store.
		_ = ch.nsub.SetPendingLimits(-1, -1)
		sh.m[key] = ch
	}
	ch.mu.Lock()
	s.ch = ch
	ch.subs = append(ch.subs, s)
	ch.mu.Unlock()
	sh.Unlock()
	// A connection closed while joining must not stay in the channel.
	s.c.mu.Lock()
	closed := s.c.closed || s.c.state != stateReady
	s.c.mu.Unlock()
	if closed {
		gw.leave(s)
	}
	return nil
}

// leave removes s from its channel and unsubscribes when it was the last.
func (gw *Gateway) leave(s *sub) {
	ch := s.ch
	if ch == nil {
		return
	}
	sh := gw.chans.lock(ch.key)
	ch.mu.Lock()
	for i, x := range ch.subs {
		if x == s {
			last := len(ch.subs) - 1
			ch.subs[i] = ch.subs[last]
			ch.subs[last] = nil
			ch.subs = ch.subs[:last]
			break
		}
	}
	empty := len(ch.subs) == 0
	if empty {
		ch.subs = nil
	}
	ch.mu.Unlock()
	if empty && sh.m[ch.key] == ch {
		delete(sh.m, ch.key)
		ch.unsubscribe()
	}
	sh.Unlock()
}

func (ch *channel) unsubscribe() {
	if ch.nsub != nil {
		_ = ch.nsub.Unsubscribe()
	}
}

// unregister removes an authenticated connection from the device map and
// its channels. Its acknowledged cursors stay in gw.dirty until written.
func (gw *Gateway) unregister(c *conn) {
	sh := gw.conns.lock(c.key)
	if sh.m[c.key] == c {
		delete(sh.m, c.key)
	}
	sh.Unlock()
	c.mu.Lock()
	subs := c.subs
	c.mu.Unlock()
	for _, s := range subs {
		if s != nil {
			gw.leave(s)
		}
	}
	gw.flushSoon()
}

// liveReader handles the live messages of one shard, in order.
func (gw *Gateway) liveReader(in chan *nats.Msg) {
	var frame []byte
	var slow []*conn
	for m := range in {
		if m == nil {
			return
		}
		key, ok := offline.LiveKey(m.Subject)
		if !ok {
			continue
		}
		ch, ok := gw.chans.get(key)
		if !ok {
			continue
		}
		l, err := offline.ParseLive(m)
		if err != nil {
			gw.log.Warn("dropping live message without sequence headers", "subject", m.Subject, "err", err)
			continue
		}
		gw.m.liveMsgs.Inc()
		// Encode once for every local listener (all user-channel subs use slot 0).
		// Live messages carry no time: they were stored just now.
		frame = (&wire.Push{Slot: 0, Seq: l.Seq, Expires: unixMilli(l.Expires), Payload: l.Data}).Append(frame[:0])
		slow = slow[:0]
		ch.mu.Lock()
		for _, s := range ch.subs {
			if s.deliver(&l, frame) {
				slow = append(slow, s.c)
			}
		}
		ch.mu.Unlock()
		if !l.Time.IsZero() {
			gw.m.deliveryLat.UpdateDuration(l.Time)
		}
		// Fail slow consumers outside ch.mu: failing takes channel locks.
		for _, c := range slow {
			gw.m.slowConsumers.Inc()
			c.fail(wire.CodeSlowConsumer, "device too slow: reconnect and catch up")
		}
	}
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// deliver queues a live message for the device if it is the next one on the
// channel; a gap (a message between the last sent and this one) starts a
// catch-up from the store instead. It returns true when the connection's
// output is over its bound: the caller closes it as a slow consumer (the
// device loses nothing: it catches up when it reconnects).
func (s *sub) deliver(l *offline.Live, frame []byte) (slow bool) {
	c := s.c
	c.mu.Lock()
	if c.closed || c.state != stateReady {
		c.mu.Unlock()
		return false
	}
	switch {
	case s.syncing:
		if l.Seq > s.pendingMax {
			s.pendingMax = l.Seq
		}
		c.mu.Unlock()
		return false
	case l.Seq <= s.sent:
		c.mu.Unlock() // already sent from the store
		return false
	case l.Last > s.sent:
		// A message on this channel was missed (dropped live copy,
		// reconnect to NATS): read it from the store first.
		s.syncing = true
		s.pendingMax = l.Seq
		c.mu.Unlock()
		c.gw.catchup <- s
		return false
	}
	if c.pendingLocked()+len(frame) > c.gw.cfg.MaxOutBytes {
		c.mu.Unlock()
		return true
	}
	c.appendLocked(frame)
	s.sent = l.Seq
	c.mu.Unlock()
	c.gw.m.frameOut(wire.TypePush)
	c.schedule(evFlush)
	return false
}

// resync makes every listener of the channel check the store for messages
// it may have missed.
func (ch *channel) resync() {
	ch.mu.Lock()
	subs := append([]*sub(nil), ch.subs...)
	ch.mu.Unlock()
	for _, s := range subs {
		s.startCatchup()
	}
}

// resyncAll re-syncs every channel (after a NATS reconnect).
func (gw *Gateway) resyncAll(why string) {
	chans := gw.chans.snapshot()
	gw.log.Info("re-syncing channels from the store", "why", why, "channels", len(chans))
	for _, ch := range chans {
		ch.resync()
	}
}

// startCatchup queues a catch-up unless one is already running.
func (s *sub) startCatchup() {
	c := s.c
	c.mu.Lock()
	if c.closed || s.syncing {
		c.mu.Unlock()
		return
	}
	s.syncing = true
	c.mu.Unlock()
	c.gw.catchup <- s
}
