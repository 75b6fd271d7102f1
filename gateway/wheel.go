package gateway

import (
	"sync"
	"sync/atomic"
	"time"
)

// wheel is the gateway's one timing wheel for every connection deadline
// (CONNECT after accept, heartbeat, closing linger). There is no timer and no
// goroutine per connection: a connection sits in the slot of the second its
// deadline falls in, and deadlines that move later (every frame read) are
// picked up lazily when the old slot comes round, by moving the connection
// forward. A connection whose deadline moves earlier is simply added to the
// earlier slot too; the later visit finds it closed or not due and moves on.
type wheel struct {
	mu    sync.Mutex
	slots [][]*conn
	pos   int   // slot of second `base`
	base  int64 // unix second of slots[pos]
	now   atomic.Int64
	stop  chan struct{}
	done  chan struct{}
}

// wheelSlots covers the longest deadline (heartbeat max × 2 + grace) in one turn;
// longer ones are parked at the far end and moved on when reached.
const wheelSlots = 2048

func newWheel() *wheel {
	w := &wheel{slots: make([][]*conn, wheelSlots), stop: make(chan struct{}), done: make(chan struct{})}
	now := time.Now().Unix()
	w.base = now
	w.now.Store(now)
	return w
}

// Now is the wheel's cached clock, in unix seconds (updated every tick).
func (w *wheel) Now() int64 { return w.now.Load() }

// AtLeast is a deadline that passes no sooner than secs seconds from now.
// Now + secs can pass up to 1.1 s early: Now is the whole second of a
// clock read up to 100 ms ago, and a slot is due as soon as its second
// begins. Two seconds more make up for both (it passes secs + 0.9 to
// secs + 3.1 s from now), without reading the clock on every frame.
func (w *wheel) AtLeast(secs int64) int64 { return w.now.Load() + secs + 2 }

// add places c in the slot of its deadline (unix seconds).
func (w *wheel) add(c *conn, deadline int64) {
	w.mu.Lock()
	d := deadline - w.base
	if d < 1 {
		d = 1 // never the slot being processed: next tick at the earliest
	}
	if d >= wheelSlots {
		d = wheelSlots - 1
	}
	i := (w.pos + int(d)) % wheelSlots
	w.slots[i] = append(w.slots[i], c)
	w.mu.Unlock()
}

// run advances the wheel every 100 ms (so a slot is handled within 100 ms
// of its second) and calls expire for each connection whose deadline passed.
func (w *wheel) run(expire func(c *conn, now int64) (keep bool, deadline int64)) {
	defer close(w.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			sec := now.Unix()
			w.now.Store(sec)
			for {
				w.mu.Lock()
				if w.base >= sec {
					w.mu.Unlock()
					break
				}
				w.pos = (w.pos + 1) % wheelSlots
				w.base++
				due := w.slots[w.pos]
				w.slots[w.pos] = nil
				w.mu.Unlock()
				for _, c := range due {
					if keep, d := expire(c, sec); keep {
						w.add(c, d)
					}
				}
			}
		}
	}
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}
