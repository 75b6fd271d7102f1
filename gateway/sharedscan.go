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
	minSharedGroup = 32      // fewer waiting catch-ups are served one by one
	maxSharedGroup = 1 << 16 // catch-ups one scan takes at once (a device has 2+)
	// cursorReadFanout bounds a group's concurrent store reads (stored
	// cursors, last-sequence lookups): with 32 a storm's cursor reads were
	// round-trip bound (70-565 ms in the recovery's last scan, 4-109 ms
	// with 128), and 128 brought the whole storm from 5.83 to 5.24 s
	// (medians of seven pairs in turns, docs/benchmarks.md).
	cursorReadFanout = 128
	// sharedGather is how long the scanner waits for more catch-ups before
	// a scan; while they keep coming (a storm's reconnects are spread by
	// the devices' backoff jitter) it waits on, up to sharedGatherMax:
	// every round reads the whole range again, so fewer rounds is faster.
	sharedGather    = 300 * time.Millisecond
	sharedGatherMax = 2 * time.Second
	// sharedFlush is how often a scan lets the devices it queued messages
	// for start on them (and the scan's end always does). By time, not by
	// count: a storm's backlogs are interleaved (round after round of one
	// message per device), so a count-sized page holds one message per
	// device and each device got a socket write (and its reader a wake-up)
	// per message. A second is about what a whole storm's scan takes once
	// the writes stop competing with it (18,000 devices × 10 messages:
	// ~1 s), so most devices get their backlog in one or two writes;
	// every 200 ms it got about one write per message again, and those
	// writes slowed the scan they interrupted (storm: 6.6 s → 3.9 s,
	// docs/benchmarks.md). A longer scan still lets devices start every
	// second, and a device with a quarter of MaxOutBytes queued is written
	// at once.
	sharedFlush = time.Second
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
		stop := false
		start := time.Now()
		wait := sharedGather
	gather:
		for {
			time.Sleep(wait)
			before := len(group)
		drain:
			for len(group) < maxSharedGroup {
				select {
				case more := <-gw.shared:
					if more == nil {
						stop = true
						break gather
					}
					group = append(group, more)
				default:
					break drain
				}
			}
			// Stop gathering when arrivals dried up, the group is full or
			// the first device has waited long enough.
			if len(group) == before || len(group) >= maxSharedGroup || time.Since(start) >= sharedGatherMax {
				break
			}
			wait = 100 * time.Millisecond
		}
		began := time.Now()
		var ph scanPhases
		frame, ph = gw.sharedCatchup(group, frame)
		gw.log.Debug("shared catch-up", "catchups", len(group), "gathered", began.Sub(start), "took", time.Since(began),
			"cursors", ph.cursors, "backlog", ph.backlog, "scans", ph.scans, "rounds", ph.rounds)
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
func (gw *Gateway) sharedCatchup(group []*sub, frame []byte) ([]byte, scanPhases) {
	gw.m.sharedScans.Inc()
	var ph scanPhases
	t := time.Now()
	gw.resolveCursors(group)
	ph.cursors = time.Since(t)
	t = time.Now()
	group, first := gw.withBacklog(group)
	ph.backlog = time.Since(t)
	t = time.Now()
	// Messages stored during a scan (a broadcast burst while thousands of
	// devices sync) leave their devices behind: scan again, only what came
	// meanwhile, a few rounds, rather than sending each device to read the
	// same channel on its own.
	for round := 0; len(group) > 0; round++ {
		var again []*sub
		frame, again = gw.sharedRound(group, first, round < sharedRounds-1, frame)
		group, first = again, nil
		ph.rounds++
	}
	ph.scans = time.Since(t)
	return frame, ph
}

// scanPhases is where a shared catch-up's time went, for the debug log.
type scanPhases struct {
	cursors, backlog, scans time.Duration // stored cursors read; last-sequence lookups; range reads
	rounds                  int
}

// sharedRounds bounds the scans of one group.
const sharedRounds = 4

// sharedRound scans once for group and finishes the subs it can. Subs that
// only missed what was stored during the scan are returned when another
// round is allowed; the others go back to the one-by-one path, which
// continues from what was sent.
func (gw *Gateway) sharedRound(group []*sub, first map[*sub]uint64, more bool, frame []byte) ([]byte, []*sub) {
	// By app, then by stored subject.
	type appScan struct {
		from      uint64
		bySubject map[string][]*sub
	}
	scans := map[string]*appScan{}
	// Subs with more than NotifyBacklog messages, or a large one, subs
	// whose output filled during the scan, and subs not scanned are left to
	// the one-by-one path (which announces large backlogs with NOTIFY and
	// waits for a full output to drain).
	over := map[*sub]bool{}
	for _, s := range group {
		c := s.c
		c.mu.Lock()
		ok := !c.closed && c.state == stateReady && !s.needCursor
		from := s.sent + 1
		// The first live message that came while syncing, if it follows
		// the cursor, is where a cursor-less channel's messages start.
		var heldFrom uint64
		if s.held != nil && len(*s.held) > 0 && (*s.held)[0].last <= s.sent {
			heldFrom = (*s.held)[0].seq
		}
		c.mu.Unlock()
		if !ok {
			continue
		}
		if from == 1 {
			// No cursor: scan from the channel's first message if it was
			// found (or from the first live one), else one by one (from 1
			// the scan would read the whole stream).
			f, ok := first[s]
			switch {
			case ok:
				from = f
			case heldFrom > 0:
				from = heldFrom
			default:
				over[s] = true
				continue
			}
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
	failed := map[string]bool{}
	for app, sc := range scans {
		var ok bool
		frame, ok = gw.scanApp(app, sc.from, sc.bySubject, over, frame)
		if !ok {
			failed[app] = true
		}
	}
	// Finish, scan again, or hand back to the one-by-one path.
	var again []*sub
	for _, s := range group {
		c := s.c
		c.mu.Lock()
		if c.closed || c.state != stateReady {
			c.mu.Unlock()
			continue
		}
		// A failed or incomplete scan finishes nobody: its subs continue
		// one by one from what they were sent.
		ok := !s.needCursor && !s.resume && !over[s] && !s.left && !failed[c.app()]
		sent := ok && s.applyHeldLocked() > 0
		done := ok && s.pendingMax <= s.sent
		if done {
			s.syncing = false
			s.dropHeldLocked()
		}
		resume, left := s.resume, s.left
		retry := !done && ok && more && s.sent > 0
		solo := !done && !resume && !left && !retry
		if solo {
			s.solo = true
		}
		c.mu.Unlock()
		if sent {
			c.schedule(evFlush)
		}
		switch {
		case retry:
			again = append(again, s)
		case solo:
			gw.m.handbacks.Inc()
			// Not a blocking send: catch-up workers hand storms to this
			// goroutine with one, and with both queues full each would
			// wait for the other forever.
			gw.queueCatchup(s)
		}
	}
	return frame, again
}

// scanApp reads every stored message of app from seq from to the end of
// the stream and queues each to the waiting devices of its channel. ok is
// false when the range was not read to its end.
func (gw *Gateway) scanApp(app string, from uint64, bySubject map[string][]*sub, over map[*sub]bool, frame []byte) (_ []byte, ok bool) {
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
		return frame, false // the caller hands the subs to the one-by-one path
	}
	now := time.Now() // the last flush; also what expiry is checked against
	handed := 0
	handle := func(m *offline.Message) bool {
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
			if c.pendingLocked() > gw.cfg.MaxOutBytes/2 {
				// Paused: this scan hands the device nothing more, and
				// the one-by-one path continues from what it was sent
				// once the round ends (waiting there for the output to
				// drain). Not s.resume: the flush that drains it would
				// start that path while this scan still runs, and the
				// scan's next message for the device would skip the one
				// it was paused at.
				over[s] = true
				c.mu.Unlock()
				continue
			}
			sentTo[s]++
			s.sent = m.Seq
			queued := c.pendingLocked()
			if (m.Expires.IsZero() || m.Expires.After(now)) && !s.ch.isRevoked(m.Seq) {
				frame = (&wire.Push{Slot: s.slot, Seq: m.Seq, Flags: wire.FlagReplay, Time: m.Time.UnixMilli(),
					Expires: unixMilli(m.Expires), Payload: m.Data}).Append(frame[:0])
				c.appendLocked(frame)
				gw.m.catchupMsgs.Inc()
				gw.m.frameOut(wire.TypePush)
			}
			// A large backlog goes out before the next sharedFlush, well
			// before half of MaxOutBytes (above) would send it to the
			// one-by-one path.
			quarter := gw.cfg.MaxOutBytes / 4
			early := c.pendingLocked() >= quarter
			c.mu.Unlock()
			if early {
				if queued < quarter {
					gw.m.earlyWrites.Inc() // counted once per crossing
				}
				c.schedule(evFlush)
			}
			touched[c] = struct{}{}
		}
		// Let devices start on what they have every sharedFlush (the
		// clock is read every 256 messages, not per message).
		if handed++; handed%256 == 0 {
			if t := time.Now(); t.Sub(now) >= sharedFlush {
				for c := range touched {
					c.schedule(evFlush)
					delete(touched, c)
				}
				now = t
			}
		}
		return true
	}
	ctx, cancel = context.WithTimeout(gw.ctx, 30*time.Second) // a stuck scan must not hold every catch-up behind it
	err = gw.store.Scan(ctx, wildcard, from, upTo, handle)
	cancel()
	for c := range touched {
		c.schedule(evFlush)
	}
	if err != nil {
		gw.m.storeErrors.Inc()
		if gw.ctx.Err() == nil {
			gw.log.Warn("shared catch-up read failed; falling back to one by one", "app", app, "err", err)
		}
		// The caller hands the subs to the one-by-one path, which resumes
		// each from what it was sent.
		return frame, false
	}
	return frame, true
}

// withBacklog finishes the subs whose channel has nothing after their
// cursor (an indexed last-message lookup each) and returns the others, so a
// ramp of devices without backlog never triggers a range scan.
func (gw *Gateway) withBacklog(group []*sub) ([]*sub, map[*sub]uint64) {
	has := make([]bool, len(group))
	starts := make([]uint64, len(group)) // first stored seq, for subs without a cursor
	sem := make(chan struct{}, cursorReadFanout)
	var wg sync.WaitGroup
	// One lookup per channel and kind: every device of a storm shares the
	// broadcast channel, and often topics. A sub with a cursor needs the
	// channel's last sequence (is anything after it?); one without needs
	// its first (is there anything, and where does the scan start?).
	type lookup struct {
		once sync.Once
		seq  uint64
		err  error
	}
	var mu sync.Mutex
	lookups := map[string]*lookup{}
	get := func(key string, first bool) (uint64, error) {
		k := key
		if first {
			k = "first:" + key
		}
		mu.Lock()
		l := lookups[k]
		if l == nil {
			l = &lookup{}
			lookups[k] = l
		}
		mu.Unlock()
		l.once.Do(func() {
			ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
			defer cancel()
			subj := offline.StoredSubjectForKey(key)
			if !first {
				ch, ok := gw.chans.get(key)
				if ok {
					l.seq, l.err = gw.latestSeq(ch)
				} else {
					l.seq, l.err = gw.store.LastSeq(ctx, subj)
				}
				return
			}
			msgs, _, err := gw.store.Fetch(ctx, subj, 1, 1)
			if len(msgs) == 1 {
				l.seq = msgs[0].Seq
			}
			l.err = err
		})
		return l.seq, l.err
	}
	// A lookup per channel costs a store round trip; reading the range
	// costs one message per stored message. When the group's channels
	// outnumber a tenth of the range (a storm: every device's own channel,
	// a dense range), scan without looking up: a channel with nothing new
	// simply gets nothing.
	skipLast := false
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	lastStored, err := gw.store.StreamLastSeq(ctx)
	cancel()
	if err == nil {
		minFrom, keys := lastStored+1, map[string]bool{}
		for _, s := range group {
			s.c.mu.Lock()
			if s.sent > 0 && !s.needCursor {
				minFrom = min(minFrom, s.sent+1)
				keys[s.ch.key] = true
			}
			s.c.mu.Unlock()
		}
		skipLast = minFrom <= lastStored && uint64(len(keys))*10 > lastStored-minFrom+1
	}
	for i, s := range group {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := s.c
			c.mu.Lock()
			fromZero, need := s.sent == 0, s.needCursor
			c.mu.Unlock()
			if need || !fromZero && skipLast {
				has[i] = true // let the scan (or the one-by-one path) decide
				return
			}
			seq, err := get(s.ch.key, fromZero)
			c.mu.Lock()
			defer c.mu.Unlock()
			switch {
			case err != nil || c.closed:
				has[i] = true
			case fromZero && seq == 0 && s.pendingMax == 0:
				s.syncing = false // nothing stored: live from here
			case !fromZero && seq <= s.sent && s.pendingMax <= s.sent:
				s.syncing = false // nothing after the cursor: live from here
			default:
				has[i] = true
				if fromZero {
					starts[i] = seq // without it the scan would start at the stream's first message
				}
			}
		}()
	}
	wg.Wait()
	out := group[:0]
	first := map[*sub]uint64{}
	for i, s := range group {
		if has[i] {
			out = append(out, s)
			if starts[i] > 0 {
				first[s] = starts[i]
			}
		}
	}
	return out, first
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
