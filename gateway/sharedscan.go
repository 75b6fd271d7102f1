package gateway

import (
	"context"
	"sync"
	"time"

	"herald/offline"
	"herald/wire"
)

// Shared catch-up. Reading a user's backlog with a next-by-subject Direct
// Get makes nats-server scan the stream from the device's cursor to each of
// its messages; when thousands of devices reconnect at once with backlogs
// interleaved in the same range (a storm), that is devices × range. Instead,
// the catch-ups queued together are served by one wildcard read of the range
// per app, each message handed to the devices of its channel: one pass.
const (
	minSharedGroup   = 32   // fewer waiting catch-ups are served one by one
	maxSharedGroup   = 8192 // catch-ups one worker takes at once
	sharedPage       = 2048 // messages per wildcard Direct Get batch
	cursorReadFanout = 32   // concurrent KV cursor reads for a group
	// sharedGather is how long a worker that found a storm waits for more
	// catch-ups before scanning.
	sharedGather = 300 * time.Millisecond
)

// sharedScanner is the one goroutine that serves storms: it takes every
// catch-up handed to it, waits a moment for more, scans their range once,
// and repeats while more keep coming. One scanner means the range is read
// once per round, not once per worker.
func (gw *Gateway) sharedScanner() {
	var frame []byte
	group := make([]*sub, 0, maxSharedGroup)
	for s := range gw.shared {
		if s == nil {
			return
		}
		gw.storming.Store(true)
		group = append(group[:0], s)
		time.Sleep(sharedGather)
		stop := false
	drain:
		for len(group) < maxSharedGroup {
			select {
			case more := <-gw.shared:
				if more == nil {
					stop = true
					break drain
				}
				group = append(group, more)
			default:
				break drain
			}
		}
		frame = gw.sharedCatchup(group, frame)
		if len(gw.shared) == 0 {
			gw.storming.Store(false)
		}
		if stop {
			return
		}
	}
}

// sharedCatchup serves a group of catch-ups. Subs it cannot finish (paused
// output, messages that arrived after the scan) go back to the queue for
// the one-by-one path, which continues from what was sent.
func (gw *Gateway) sharedCatchup(group []*sub, frame []byte) []byte {
	gw.m.sharedScans.Inc()
	gw.resolveCursors(group)
	group = gw.withBacklog(group)

	// By app, then by stored subject.
	type appScan struct {
		from      uint64
		bySubject map[string][]*sub
	}
	scans := map[string]*appScan{}
	// Subs with more than NotifyBacklog messages, or a large one, and subs
	// not scanned are left to the one-by-one path (which announces large
	// backlogs with NOTIFY).
	over := map[*sub]bool{}
	for _, s := range group {
		c := s.c
		c.mu.Lock()
		// A device without a cursor (a new one) would start the scan at
		// the stream's first message: its own first message is found
		// by the subject index on the one-by-one path instead.
		ok := !c.closed && c.state == stateReady && !s.needCursor
		from := s.sent + 1
		c.mu.Unlock()
		if !ok {
			continue
		}
		if from == 1 {
			over[s] = true
			continue
		}
		app := c.app()
		sc := scans[app]
		if sc == nil {
			sc = &appScan{from: from, bySubject: map[string][]*sub{}}
			scans[app] = sc
		}
		if from < sc.from {
			sc.from = from
		}
		subj := offline.StoredSubjectForKey(s.ch.key)
		sc.bySubject[subj] = append(sc.bySubject[subj], s)
	}
	for app, sc := range scans {
		frame = gw.scanApp(app, sc.from, sc.bySubject, over, frame)
	}
	// Finish or hand back to the one-by-one path.
	for _, s := range group {
		c := s.c
		c.mu.Lock()
		if c.closed || c.state != stateReady {
			c.mu.Unlock()
			continue
		}
		ok := !s.needCursor && !s.resume && !over[s] && !s.left
		sent := ok && s.applyHeldLocked() > 0
		done := ok && s.pendingMax <= s.sent
		if done {
			s.syncing = false
			s.held = nil
		}
		resume, left := s.resume, s.left
		if !done && !resume && !left {
			s.solo = true
		}
		c.mu.Unlock()
		if sent {
			c.schedule(evFlush)
		}
		if !done && !resume && !left {
			gw.catchup <- s
		}
	}
	return frame
}

// scanApp reads every stored message of app from seq from to the end of
// the stream and queues each to the waiting devices of its channel.
func (gw *Gateway) scanApp(app string, from uint64, bySubject map[string][]*sub, over map[*sub]bool, frame []byte) []byte {
	wildcard := offline.StoredSubject(app, ">")
	touched := map[*conn]struct{}{}
	sentTo := map[*sub]int{}
	// The scan ends where the stream stood when it began: under load the
	// stream grows as fast as a scan reads, and a scan chasing its head
	// would keep every device of the group in catch-up for as long as the
	// load lasts. What comes later reaches the devices live (held while
	// they sync) or through the one-by-one path.
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	upTo, err := gw.store.StreamLastSeq(ctx)
	cancel()
	if err != nil {
		gw.m.storeErrors.Inc()
		return frame // the subs are requeued by the caller
	}
	for from <= upTo {
		ctx, cancel := context.WithTimeout(gw.ctx, 30*time.Second)
		msgs, pending, err := gw.store.Fetch(ctx, wildcard, from, sharedPage)
		cancel()
		if err != nil {
			gw.m.storeErrors.Inc()
			if gw.ctx.Err() == nil {
				gw.log.Warn("shared catch-up read failed; falling back to one by one", "app", app, "err", err)
			}
			break // the subs are requeued by the caller
		}
		now := time.Now()
		for i := range msgs {
			m := &msgs[i]
			from = m.Seq + 1
			for _, s := range bySubject[m.Subject] {
				c := s.c
				c.mu.Lock()
				if c.closed || s.resume || s.left || over[s] || m.Seq <= s.sent {
					c.mu.Unlock()
					continue
				}
				if len(m.Data) > gw.cfg.InlineLimit || sentTo[s] >= gw.cfg.NotifyBacklog {
					over[s] = true
					c.mu.Unlock()
					continue
				}
				sentTo[s]++
				if c.pendingLocked() > gw.cfg.MaxOutBytes/2 {
					// Leave the rest to the one-by-one path once it drains.
					s.resume = true
					c.mu.Unlock()
					continue
				}
				s.sent = m.Seq
				if (m.Expires.IsZero() || m.Expires.After(now)) && !s.ch.isRevoked(m.Seq) {
					frame = (&wire.Push{Slot: s.slot, Seq: m.Seq, Flags: wire.FlagReplay, Time: m.Time.UnixMilli(),
						Expires: unixMilli(m.Expires), Payload: m.Data}).Append(frame[:0])
					c.appendLocked(frame)
					gw.m.catchupMsgs.Inc()
					gw.m.frameOut(wire.TypePush)
				}
				c.mu.Unlock()
				touched[c] = struct{}{}
			}
		}
		for c := range touched {
			c.schedule(evFlush)
			delete(touched, c)
		}
		// The batch may end early (the server caps its bytes): only the
		// server's pending count says the end was reached.
		if len(msgs) == 0 || pending == 0 {
			return frame
		}
	}
	return frame
}

// withBacklog finishes the subs whose channel has nothing after their
// cursor (an indexed last-message lookup each) and returns the others, so a
// ramp of devices without backlog never triggers a range scan.
func (gw *Gateway) withBacklog(group []*sub) []*sub {
	has := make([]bool, len(group))
	sem := make(chan struct{}, cursorReadFanout)
	var wg sync.WaitGroup
	// One lookup per channel: every device of a storm shares the
	// broadcast channel, and often topics.
	type lastSeq struct {
		once sync.Once
		seq  uint64
		err  error
	}
	var lastMu sync.Mutex
	lasts := map[string]*lastSeq{}
	for i, s := range group {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			lastMu.Lock()
			l := lasts[s.ch.key]
			if l == nil {
				l = &lastSeq{}
				lasts[s.ch.key] = l
			}
			lastMu.Unlock()
			l.once.Do(func() {
				ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
				l.seq, l.err = gw.store.LastSeq(ctx, offline.StoredSubjectForKey(s.ch.key))
				cancel()
			})
			last, err := l.seq, l.err
			c := s.c
			c.mu.Lock()
			switch {
			case err != nil || s.needCursor || c.closed:
				has[i] = true // let the scan (or the one-by-one path) decide
			case last <= s.sent && s.pendingMax <= s.sent:
				s.syncing = false // nothing to catch up: live from here
			default:
				has[i] = true
			}
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	out := group[:0]
	for i, s := range group {
		if has[i] {
			out = append(out, s)
		}
	}
	return out
}

// resolveCursors reads the KV cursors of the subs that need one, a few at a
// time.
func (gw *Gateway) resolveCursors(group []*sub) {
	sem := make(chan struct{}, cursorReadFanout)
	var wg sync.WaitGroup
	for _, s := range group {
		s.c.mu.Lock()
		need := s.needCursor || s.loadTopics
		s.c.mu.Unlock()
		if !need {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			gw.prepare(s)
		}()
	}
	wg.Wait()
}
