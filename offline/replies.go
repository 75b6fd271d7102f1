package offline

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// replyMux routes replies of multi-message requests (Direct Get batches) to
// their waiting callers through one wildcard subscription, the way nats.go's
// request mux does for single replies.
type replyMux struct {
	prefix  string // "_INBOX.<nuid>."
	sub     *nats.Subscription
	next    atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
}

func (s *Store) replies() (*replyMux, error) {
	s.muxOnce.Do(func() {
		m := &replyMux{prefix: s.nc.NewInbox() + ".", waiting: map[string]chan *nats.Msg{}}
		m.sub, s.muxErr = s.nc.Subscribe(m.prefix+"*", m.route)
		if s.muxErr != nil {
			s.muxErr = fmt.Errorf("%w: reply subscription: %v", ErrUnavailable, s.muxErr)
			return
		}
		// A batch is bounded (max + EOB); never drop replies for a slow reader.
		_ = m.sub.SetPendingLimits(-1, -1)
		s.mux = m
	})
	return s.mux, s.muxErr
}

// replyChans recycles reply channels of the usual batch size: a catch-up
// per connect would otherwise allocate one each time.
var replyChans = sync.Pool{New: func() any { return make(chan *nats.Msg, pooledReplies) }}

const pooledReplies = 130 // a 128-message page, EOB, and one to spare

// open registers a reply subject with a channel for up to n replies; done
// unregisters it.
func (m *replyMux) open(n int) (reply string, ch chan *nats.Msg, done func()) {
	token := strconv.FormatUint(m.next.Add(1), 36)
	pooled := n <= pooledReplies
	if pooled {
		ch = replyChans.Get().(chan *nats.Msg)
	} else {
		ch = make(chan *nats.Msg, n)
	}
	m.mu.Lock()
	m.waiting[token] = ch
	m.mu.Unlock()
	return m.prefix + token, ch, func() {
		m.mu.Lock()
		delete(m.waiting, token)
		m.mu.Unlock()
		if !pooled {
			return
		}
		// route no longer finds ch: drain what arrived and recycle it.
		for {
			select {
			case <-ch:
				continue
			default:
			}
			break
		}
		replyChans.Put(ch)
	}
}

func (m *replyMux) route(msg *nats.Msg) {
	token := msg.Subject[len(m.prefix):]
	// Send under the lock (it never blocks): once done has unregistered a
	// channel, no late reply can reach it, so it is safe to recycle.
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.waiting[token]
	if ch == nil {
		return // the caller gave up
	}
	select {
	case ch <- msg:
	default: // more replies than asked for: cannot happen with a bounded batch
	}
}
