package gateway

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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

	// revoked holds the channel's latest recalled sequences (read without
	// locks by catch-ups that may hold a message read before its recall).
	revoked atomic.Pointer[[]uint64]

	// latest is the highest sequence stored on the channel as far as this
	// gateway knows: read from the store once (then the latestKnown bit is
	// set), then raised by every live message. A catch-up whose cursor is
	// at latest reads nothing from the store. Forgotten when live messages
	// may have been missed (NATS reconnect, slow consumer). One word: a
	// channel per device must stay small.
	latest atomic.Uint64
}

// latestKnown is the top bit of channel.latest.
const latestKnown = 1 << 63

// raiseLatest records a sequence seen on the channel.
func (ch *channel) raiseLatest(seq uint64) {
	for {
		cur := ch.latest.Load()
		if seq <= cur&^latestKnown || ch.latest.CompareAndSwap(cur, seq|cur&latestKnown) {
			return
		}
	}
}

// forgetLatest makes the next catch-up read the newest sequence again.
func (ch *channel) forgetLatest() {
	for {
		cur := ch.latest.Load()
		if ch.latest.CompareAndSwap(cur, cur&^latestKnown) {
			return
		}
	}
}

// latestSeq returns the channel's newest stored sequence, reading the store
// only the first time (and after live messages may have been missed).
func (gw *Gateway) latestSeq(ch *channel) (uint64, error) {
	if v := ch.latest.Load(); v&latestKnown != 0 {
		return v &^ latestKnown, nil
	}
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	seq, err := gw.store.LastSeq(ctx, offline.StoredSubjectForKey(ch.key))
	cancel()
	if err != nil {
		return 0, err
	}
	for {
		cur := ch.latest.Load()
		if ch.latest.CompareAndSwap(cur, max(cur&^latestKnown, seq)|latestKnown) {
			return max(cur&^latestKnown, seq), nil
		}
	}
}

// maxRevoked is how many recent recalls a channel remembers.
const maxRevoked = 64

func (ch *channel) isRevoked(seq uint64) bool {
	p := ch.revoked.Load()
	return p != nil && slices.Contains(*p, seq)
}

// addRevoked remembers a recall; false if it was already known (a recall
// comes both as a live notice and from the recalls bucket's watch).
func (ch *channel) addRevoked(seq uint64) bool {
	for {
		old := ch.revoked.Load()
		var next []uint64
		if old != nil {
			if slices.Contains(*old, seq) {
				return false
			}
			next = append(next, *old...)
		}
		next = append(next, seq)
		if len(next) > maxRevoked {
			next = next[len(next)-maxRevoked:]
		}
		if ch.revoked.CompareAndSwap(old, &next) {
			return true
		}
	}
}

// sub is one connection's membership in a channel. Fields after slot are
// guarded by c.mu.
type sub struct {
	c    *conn
	ch   *channel
	slot uint32
	idx  int32 // position in ch.subs (guarded by ch.mu)

	sent       uint64  // highest seq queued to the device
	acked      uint64  // highest seq the device acknowledged
	flushed    uint64  // highest acked seq written to KV
	pendingMax uint64  // highest live seq seen while syncing
	syncMax    uint32  // serving a SYNC: messages left in the page
	syncing    bool    // catching up from the store: live copies only raise pendingMax
	resume     bool    // catch-up paused until the output drains
	dirty      bool    // in gw.dirty
	needCursor bool    // the device sent no cursor: catch-up reads it from KV first
	fromLatest bool    // with needCursor: no KV cursor means "from the newest message"
	announce   bool    // send SUBACK once the cursor is resolved
	loadTopics bool    // (user channel) read the user's server-side topics first
	notify     bool    // NOTIFY sent: waiting for the device's SYNC
	left       bool    // UNSUBed: deliver nothing more, write no cursor
	solo       bool    // handed back by the shared scanner: serve one by one
	replayWait bool    // (user channel) RESYNC sent: the operator's order waits for an ACK from its From on
	held       *[]held // live messages that came while syncing (bounded; nil when none: a pointer keeps sub in a smaller size class)
}

// held is a live message kept while its sub catches up: when the catch-up
// reaches the end of the store, held messages that continue from there are
// sent as they are instead of read again. Under steady load a catch-up
// would otherwise never end: by the time a store read returns, newer live
// messages have come, and each costs a read.
type held struct {
	seq, last uint64
	frame     []byte
}

// maxHeld bounds the live messages a syncing sub keeps, and maxHeldBytes
// what all subs of a gateway keep together (a broadcast burst while
// thousands of devices sync must not hold a copy per device without
// bound); past either, the catch-up reads the rest from the store.
const (
	maxHeld      = 64
	maxHeldBytes = 32 << 20
)

// applyHeldLocked sends the held messages that continue from s.sent, in
// order, and drops the rest (they are after a gap, or were sent). It
// returns how many it queued. c.mu must be held.
func (s *sub) applyHeldLocked() int {
	if s.held == nil {
		return 0
	}
	n := 0
	for _, h := range *s.held {
		if h.seq > s.sent && h.last <= s.sent {
			s.c.appendLocked(h.frame)
			s.sent = h.seq
			n++
		}
	}
	s.dropHeldLocked()
	s.c.gw.m.heldSent.Add(n)
	return n
}

// dropHeldLocked forgets the held messages and returns their bytes to the
// gateway's budget. c.mu must be held.
func (s *sub) dropHeldLocked() {
	if s.held == nil {
		return
	}
	n := 0
	for _, h := range *s.held {
		n += len(h.frame)
	}
	s.c.gw.heldBytes.Add(-int64(n))
	s.held = nil
}

// name is the channel name ("u.alice", "t.news", "b.all").
func (s *sub) name() string { return s.ch.key[int(s.c.appLen)+1:] }

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
		if gw.store.Replicated() {
			time.AfterFunc(settleDelay, func() { gw.settle(ch, 0) })
		}
	}
	ch.mu.Lock()
	// s.ch is read under the connection's lock (by leave, which another
	// connection of the same device may run while this one still joins).
	s.c.mu.Lock()
	s.ch = ch
	s.c.mu.Unlock()
	s.idx = int32(len(ch.subs))
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

// settleDelay is how long after subscribing a new channel the gateway
// checks the store for it once more, when NATS is a cluster (settle).
const settleDelay = time.Second

// settleTries bounds how often settle waits for a catch-up in progress.
const settleTries = 10

// settle re-syncs a channel settleDelay after its subscription was made.
// In a cluster the subscription reaches the stream's leader over a route
// (the interest travels on the app account's route connection), while the
// catch-up's reads of the store go as JetStream API requests (the system
// account's connection): a read can be answered before the leader knows
// the subscription, and a message stored between the two has its live
// copy dropped, with nothing after it to show the gap. By settleDelay the
// interest is there, so a second look at the store finds such a message.
// A catch-up still running may have read before the interest arrived (a
// reply lost just after a reconnect makes it slow): settle waits for it to
// end, settleDelay at a time, up to settleTries times.
func (gw *Gateway) settle(ch *channel, tries int) {
	if gw.ctx.Err() != nil {
		return
	}
	if cur, ok := gw.chans.get(ch.key); !ok || cur != ch {
		return // gone, or unsubscribed and made again (it settles itself)
	}
	if tries < settleTries && ch.syncing() {
		time.AfterFunc(settleDelay, func() { gw.settle(ch, tries+1) })
		return
	}
	gw.m.settles.Inc()
	ch.resync()
}

// syncing reports whether a listener of the channel is catching up.
func (ch *channel) syncing() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, s := range ch.subs {
		s.c.mu.Lock()
		syncing := s.syncing && !s.c.closed
		s.c.mu.Unlock()
		if syncing {
			return true
		}
	}
	return false
}

// leave removes s from its channel and unsubscribes when it was the last.
func (gw *Gateway) leave(s *sub) {
	s.c.mu.Lock()
	ch := s.ch
	s.c.mu.Unlock()
	if ch == nil {
		return
	}
	sh := gw.chans.lock(ch.key)
	ch.mu.Lock()
	// Swap-remove by index: a channel such as the broadcast one holds
	// every device of the gateway, and a mass disconnect must not be
	// quadratic.
	if i := int(s.idx); i >= 0 && i < len(ch.subs) && ch.subs[i] == s {
		last := len(ch.subs) - 1
		ch.subs[i] = ch.subs[last]
		ch.subs[i].idx = int32(i)
		ch.subs[last] = nil
		ch.subs = ch.subs[:last]
		s.idx = -1
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
	replayWait := false
	for _, s := range subs {
		if s != nil {
			s.dropHeldLocked()
			replayWait = replayWait || s.replayWait
		}
	}
	c.mu.Unlock()
	if replayWait {
		gw.releaseReplay(c.key, c) // not acknowledged: again at the next CONNECT
	}
	gw.forgetRevs(subs...)
	for _, s := range subs {
		if s != nil {
			gw.leave(s)
			gw.acks.forget(s)
		}
	}
	gw.flushSoon()
}

// liveBatch is how many waiting live messages a reader takes before it
// hands the connections they touched to the workers.
const liveBatch = 256

// liveReader handles the live messages of one shard, in order. It takes
// every message already waiting (up to liveBatch) before scheduling the
// connections they touched, each once: under load (a broadcast to every
// device) several messages leave in one write, and an idle gateway still
// sends each message at once.
func (gw *Gateway) liveReader(in chan *nats.Msg) {
	lr := &liveRun{gw: gw}
	for m := range in {
		if m == nil {
			return
		}
		lr.handle(m)
	drain:
		for i := 1; i < liveBatch; i++ {
			select {
			case m = <-in:
				if m == nil {
					lr.finish()
					return
				}
				lr.handle(m)
			default:
				break drain
			}
		}
		lr.finish()
	}
}

// liveRun is a live reader's state for one batch.
type liveRun struct {
	gw      *Gateway
	enc     frameCache
	touched []*conn // connections with new output, each once (conn.liveMark)
	slow    []*conn
}

func (lr *liveRun) handle(m *nats.Msg) {
	gw := lr.gw
	key, ok := offline.LiveKey(m.Subject)
	if !ok {
		return
	}
	ch, ok := gw.chans.get(key)
	if !ok {
		return
	}
	if r := m.Header.Get(offline.RevokeHeader); r != "" {
		if seq, err := strconv.ParseUint(r, 10, 64); err == nil {
			gw.revoke(ch, seq)
		}
		return
	}
	l, err := offline.ParseLive(m)
	if err != nil {
		gw.log.Warn("dropping live message without sequence headers", "subject", m.Subject, "err", err)
		return
	}
	gw.m.liveMsgs.Inc()
	ch.raiseLatest(l.Seq)
	// Encode once per slot number for every local listener (a channel's
	// listeners mostly share one slot). Live messages carry no time: they
	// were stored just now.
	lr.enc.reset(wire.Push{Seq: l.Seq, Expires: unixMilli(l.Expires), Payload: l.Data})
	pushes := 0
	ch.mu.Lock()
	for _, s := range ch.subs {
		switch s.deliver(&l, &lr.enc) {
		case deliverSlow:
			lr.slow = append(lr.slow, s.c)
		case deliverQueued:
			pushes++
			lr.touched = append(lr.touched, s.c)
		case deliverQueuedMarked:
			pushes++
		}
	}
	ch.mu.Unlock()
	gw.m.framesOut[wire.TypePush].Add(pushes)
	if !l.Time.IsZero() {
		gw.m.deliveryLat.UpdateDuration(l.Time)
	}
}

// finish schedules the touched connections and fails the slow ones.
func (lr *liveRun) finish() {
	for i, c := range lr.touched {
		c.mu.Lock()
		c.liveMark = false
		c.mu.Unlock()
		c.schedule(evFlush)
		lr.touched[i] = nil
	}
	lr.touched = lr.touched[:0]
	// Fail slow consumers outside ch.mu: failing takes channel locks.
	for i, c := range lr.slow {
		lr.gw.m.slowConsumers.Inc()
		c.fail(wire.CodeSlowConsumer, "device too slow: reconnect and catch up")
		lr.slow[i] = nil
	}
	lr.slow = lr.slow[:0]
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Outcomes of deliver.
const (
	deliverNothing      = iota // not for this sub now (syncing, sent before, closed)
	deliverQueued              // queued; the caller schedules the connection's flush
	deliverQueuedMarked        // queued; the connection is already on the caller's list
	deliverSlow                // the output is over its bound: fail the connection
)

// deliver queues a live message for the device if it is the next one on the
// channel; a gap (a message between the last sent and this one) starts a
// catch-up from the store instead. deliverSlow means the connection's output
// is over its bound: the caller closes it as a slow consumer (the device
// loses nothing: it catches up when it reconnects).
func (s *sub) deliver(l *offline.Live, enc *frameCache) int {
	c := s.c
	c.mu.Lock()
	if c.closed || c.state != stateReady || s.left {
		c.mu.Unlock()
		return deliverNothing
	}
	switch {
	case s.syncing:
		if l.Seq > s.pendingMax {
			s.pendingMax = l.Seq
		}
		if !s.notify && len(l.Data) <= c.gw.cfg.InlineLimit && (s.held == nil || len(*s.held) < maxHeld) {
			frame := enc.get(s.slot)
			if c.gw.heldBytes.Add(int64(len(frame))) <= maxHeldBytes {
				if s.held == nil {
					s.held = new([]held)
				}
				*s.held = append(*s.held, held{seq: l.Seq, last: l.Last, frame: append([]byte(nil), frame...)})
			} else {
				c.gw.heldBytes.Add(-int64(len(frame)))
			}
		}
		c.mu.Unlock()
		return deliverNothing
	case l.Seq <= s.sent:
		c.mu.Unlock() // already sent from the store
		return deliverNothing
	case l.Last > s.sent:
		// A message on this channel was missed (dropped live copy,
		// reconnect to NATS): read it from the store first.
		s.syncing = true
		s.pendingMax = l.Seq
		c.mu.Unlock()
		c.gw.m.catchupGap.Inc()
		c.gw.queueCatchup(s)
		return deliverNothing
	case len(l.Data) > c.gw.cfg.InlineLimit:
		// Too large to push unasked: announce it; the device SYNCs.
		s.syncing, s.notify, s.pendingMax = true, true, l.Seq
		var buf [3 * 10]byte
		c.appendLocked((&wire.Notify{Slot: s.slot, Seq: l.Seq, Pending: l.Seq - s.sent}).Append(buf[:0]))
		c.mu.Unlock()
		c.gw.m.notifies.Inc()
		c.gw.m.frameOut(wire.TypeNotify)
		c.schedule(evFlush)
		return deliverNothing
	}
	frame := enc.get(s.slot)
	if c.pendingLocked()+len(frame) > c.gw.cfg.MaxOutBytes {
		c.mu.Unlock()
		return deliverSlow
	}
	c.appendLocked(frame)
	s.sent = l.Seq
	marked := c.liveMark
	c.liveMark = true
	c.mu.Unlock()
	c.gw.acks.sent(s, l.Seq)
	if marked {
		return deliverQueuedMarked
	}
	return deliverQueued
}

// resync makes every listener of the channel check the store for messages
// it may have missed.
func (ch *channel) resync() {
	ch.forgetLatest()
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

// frameCache encodes one live PUSH for each slot number it is asked for,
// once.
type frameCache struct {
	push   wire.Push
	frames [4][]byte
	have   [4]bool
	other  []byte
}

func (e *frameCache) reset(p wire.Push) {
	e.push = p
	e.have = [4]bool{}
}

func (e *frameCache) get(slot uint32) []byte {
	e.push.Slot = slot
	if slot >= uint32(len(e.frames)) {
		e.other = e.push.Append(e.other[:0])
		return e.other
	}
	if !e.have[slot] {
		e.frames[slot] = e.push.Append(e.frames[slot][:0])
		e.have[slot] = true
	}
	return e.frames[slot]
}

// revoke tells every local listener that already got seq that it was
// recalled, and remembers it so a catch-up that read it before the recall
// does not send it.
func (gw *Gateway) revoke(ch *channel, seq uint64) {
	if !ch.addRevoked(seq) {
		return // sent already
	}
	var buf [3 * 10]byte
	ch.mu.Lock()
	for _, s := range ch.subs {
		c := s.c
		c.mu.Lock()
		if c.closed || c.state != stateReady || s.left || s.sent < seq {
			c.mu.Unlock()
			continue
		}
		c.appendLocked((&wire.Revoke{Slot: s.slot, Seq: seq}).Append(buf[:0]))
		c.mu.Unlock()
		gw.m.revokes.Inc()
		gw.m.frameOut(wire.TypeRevoke)
		c.schedule(evFlush)
	}
	ch.mu.Unlock()
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
	c.gw.m.catchupResync.Inc()
	c.gw.queueCatchup(s)
}
