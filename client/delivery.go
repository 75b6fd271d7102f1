package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"herald/wire"
)

// subscribeTopics sends SUB for the device's topics that CONNECT did not
// carry a cursor for (those are subscribed already).
func (s *session) subscribeTopics() error {
	c := s.c
	c.mu.Lock()
	var subs []wire.Sub
	for ch := range c.topics {
		if _, ok := c.cursors[ch]; !ok {
			subs = append(subs, wire.Sub{Channel: []byte(ch)})
		}
	}
	c.mu.Unlock()
	for i := range subs {
		if err := s.write(&subs[i]); err != nil {
			return err
		}
	}
	return nil
}

// handleSubAck records a channel's slot, and its start as the cursor when
// the server resolved it (so the next CONNECT carries it).
func (s *session) handleSubAck(body []byte) error {
	var a wire.SubAck
	if err := a.Decode(body); err != nil {
		return fmt.Errorf("client: bad SUBACK: %w", err)
	}
	c := s.c
	ch := string(a.Channel)
	if a.Code != 0 {
		if c.cfg.OnEvent != nil {
			c.cfg.OnEvent(Event{Kind: Refused, Channel: ch, Err: &ServerError{Code: a.Code, Reason: "subscription refused"}})
		}
		return nil
	}
	if !wire.ValidChannel(ch) {
		// Its cursor would go into every later CONNECT, and the gateway
		// refuses a CONNECT naming an invalid channel for good.
		return fmt.Errorf("client: SUBACK names an invalid channel %q", ch)
	}
	s.slots[a.Slot] = ch
	c.mu.Lock()
	cur, ok := c.cursors[ch]
	save := !ok || a.Seq > cur
	if save {
		c.cursors[ch] = a.Seq
	}
	c.mu.Unlock()
	if save {
		if err := c.cfg.Cursors.Save(ch, a.Seq); err != nil {
			return handlerError{err}
		}
	}
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(Event{Kind: Subscribed, Channel: ch})
	}
	return nil
}

// handleNotify pulls an announced backlog: a page from the cursor on; the
// gateway sends NOTIFY again while more wait.
func (s *session) handleNotify(body []byte) error {
	var n wire.Notify
	if err := n.Decode(body); err != nil {
		return fmt.Errorf("client: bad NOTIFY: %w", err)
	}
	ch, ok := s.slots[n.Slot]
	if !ok {
		return fmt.Errorf("client: NOTIFY on unknown slot %d", n.Slot)
	}
	c := s.c
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(Event{Kind: Notified, Channel: ch})
	}
	// Acknowledge what was handled first, then ask for the next page.
	if err := s.flushAcks(); err != nil {
		return err
	}
	c.mu.Lock()
	from := c.cursors[ch] + 1
	c.mu.Unlock()
	return s.write(&wire.Sync{Slot: n.Slot, From: from, Max: uint32(c.cfg.SyncPage)})
}

// handleResync accepts a server-ordered rewind: the cursor of the slot's
// channel moves back to from-1 (and is saved), so the messages the gateway
// sends again from there reach the handler instead of the duplicate filter.
func (s *session) handleResync(body []byte) error {
	var r wire.Resync
	if err := r.Decode(body); err != nil {
		return fmt.Errorf("client: bad RESYNC: %w", err)
	}
	ch, ok := s.slots[r.Slot]
	if !ok {
		return fmt.Errorf("client: RESYNC on unknown slot %d", r.Slot)
	}
	c := s.c
	// What was handled is acknowledged first; the rewind is not an ACK.
	if err := s.flushAcks(); err != nil {
		return err
	}
	c.mu.Lock()
	rewind := c.cursors[ch] >= r.From
	if rewind {
		c.cursors[ch] = r.From - 1
	}
	c.mu.Unlock()
	if rewind {
		if err := c.cfg.Cursors.Save(ch, r.From-1); err != nil {
			return handlerError{err}
		}
	}
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(Event{Kind: Rewound, Channel: ch})
	}
	return nil
}

// Subscribe adds a topic for this device, now if connected and on every
// later connection.
func (c *Client) Subscribe(topic string) error {
	ch := "t." + topic
	c.mu.Lock()
	c.topics[ch] = true
	s := c.sess
	seq := c.cursors[ch]
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.write(&wire.Sub{Channel: []byte(ch), Seq: seq})
}

// Unsubscribe removes a topic of this device. A later Subscribe starts from
// the topic's newest message.
func (c *Client) Unsubscribe(topic string) error {
	ch := "t." + topic
	c.mu.Lock()
	delete(c.topics, ch)
	delete(c.cursors, ch)
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.write(&wire.Unsub{Channel: []byte(ch)})
}

// UpResult is the store's answer to an upstream message.
type UpResult struct {
	Seq       uint64 // sequence on the upstream stream
	Duplicate bool   // the id was stored before (a retry)
}

// ErrNotConnected is returned by Up when it could not send before ctx ended.
var ErrNotConnected = errors.New("client: not connected")

// Up sends a message to the app's backend and returns once the gateway
// says it is stored. It retries with the same id on every (re)connection
// until ctx ends: the id makes the store keep it once.
func (c *Client) Up(ctx context.Context, id string, payload []byte) (UpResult, error) {
	w := make(chan wire.UpAck, 1)
	c.mu.Lock()
	if _, busy := c.ups[id]; busy {
		c.mu.Unlock()
		return UpResult{}, fmt.Errorf("client: an Up with id %q is already in flight", id)
	}
	c.ups[id] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.ups, id)
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		if s != nil && s.write(&wire.Up{ID: []byte(id), Payload: payload}) == nil {
			t := time.NewTimer(10 * time.Second)
			select {
			case a := <-w:
				t.Stop()
				if a.Code == 0 {
					return UpResult{Seq: a.Seq, Duplicate: a.Duplicate}, nil
				}
				if !a.Code.Retry() {
					return UpResult{}, &ServerError{Code: a.Code, Reason: "upstream message refused"}
				}
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return UpResult{}, ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			if s == nil {
				return UpResult{}, fmt.Errorf("%w: %v", ErrNotConnected, ctx.Err())
			}
			return UpResult{}, ctx.Err()
		case <-time.After(c.cfg.MinBackoff):
		}
	}
}
