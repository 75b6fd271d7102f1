package gateway

import (
	"errors"
	"sync"
	"time"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"

	"herald/wire"
)

// Connection states.
const (
	stateConnecting uint8 = iota // accepted, waiting for CONNECT
	stateReady                   // authenticated
	stateClosing                 // ERROR sent and write side shut; waiting for the peer to close
	stateUpgrading               // WebSocket: waiting for the HTTP upgrade request
	stateLeaving                 // GOAWAY sent (from ready); closed at once
)

// lastFrameSent reports whether ERROR or GOAWAY is queued: the device
// gets nothing after either (a catch-up or a live message racing the
// close would otherwise follow it).
func (c *conn) lastFrameSent() bool { return c.state == stateClosing || c.state == stateLeaving }

// Internal events, beside epoll's.
const (
	evFlush = 1 << 30 // output is pending
)

const readEvents netpoll.EpollEvent = netpoll.EPOLLIN | netpoll.EPOLLRDHUP | netpoll.EPOLLONESHOT

// conn is one device connection. An idle connection holds no buffer: input
// and output buffers come from pools when there is something to read or
// write and go back when done. It is served by at most one worker at a time
// (queued), so reading, parsing and writing need no more care than c.mu.
type conn struct {
	gw *Gateway
	fd int // owned: accepted raw, closed by close()

	mu        sync.Mutex
	deadline  int64  // unix seconds: see wheel
	events    uint32 // pending events for the worker
	hb        uint16 // heartbeat interval in seconds agreed with the device (≤ 65535: config checks heartbeat_max)
	outFrames uint16 // frames in out not yet written whole (saturating; herald_gateway_outbound_frames_pending)
	state     uint8
	closed    bool
	queued    bool  // in gw.work or being processed
	armed     armed // epoll interest armed (EPOLLONESHOT not yet consumed)
	blocked   bool  // the last write hit EAGAIN: wait for EPOLLOUT
	liveMark  bool  // on a live reader's list of connections to flush
	ws        bool  // WebSocket: frames travel in binary messages
	appLen    uint8 // len(app): names are at most 128 bytes
	userLen   uint8
	rateWin   uint8  // low byte of the second rateN counts in
	rateN     uint16 // frames (not ACKs) received in that second
	outOff    int32  // bytes of out already written (out is bounded by max_out_bytes)

	rd  *readState // partial frames between reads; nil when none (worker-owned)
	out []byte     // pending output from outPool; nil when none

	key  string // "<app>.<user>.<device>"
	subs []*sub // index = slot
}

// readState holds partial frames carried from one read to the next. Only
// the worker serving the connection touches it.
type readState struct {
	wsIn []byte // a partial WebSocket frame
	in   []byte // a partial herald frame
}

func (c *conn) app() string  { return c.key[:c.appLen] }
func (c *conn) user() string { return c.key[int(c.appLen)+1 : int(c.appLen)+1+int(c.userLen)] }
func (c *conn) device() string {
	if c.key == "" {
		return ""
	}
	return c.key[int(c.appLen)+int(c.userLen)+2:]
}

// partial returns the read state, allocating it on first use.
func (c *conn) partial() *readState {
	if c.rd == nil {
		c.rd = &readState{}
	}
	return c.rd
}

// dropPartialIfEmpty frees the read state when nothing is carried over.
func (c *conn) dropPartialIfEmpty() {
	if c.rd != nil && c.rd.in == nil && c.rd.wsIn == nil {
		c.rd = nil
	}
}

var (
	readPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
	outPool  = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
)

// onEvent runs on the epoll goroutine: hand the connection to a worker.
func (c *conn) onEvent(ev netpoll.EpollEvent) {
	c.mu.Lock()
	c.armed = notArmed
	c.mu.Unlock()
	c.schedule(uint32(ev))
}

// schedule records events and queues the connection for a worker unless it
// is already queued.
func (c *conn) schedule(ev uint32) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.events |= ev
	if c.queued {
		c.mu.Unlock()
		return
	}
	c.queued = true
	c.mu.Unlock()
	c.gw.work <- c
}

// process runs on a worker until no events are left, then re-arms epoll.
func (c *conn) process() {
	for {
		c.mu.Lock()
		ev := c.events
		c.events = 0
		if ev == 0 || c.closed {
			c.queued = false
			if !c.closed {
				c.rearmLocked()
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if ev&uint32(netpoll.EPOLLIN|netpoll.EPOLLRDHUP|netpoll.EPOLLHUP|netpoll.EPOLLERR) != 0 {
			c.read()
		}
		if ev&uint32(netpoll.EPOLLOUT|evFlush) != 0 {
			c.flush()
		}
	}
}

// rearmLocked re-arms the one-shot epoll interest: input always, output
// while a write is blocked.
//
// A connection still armed for input alone must be armed again when a write
// blocks: else the rest of its output would wait for the device's next
// frame, not for room in the socket.
func (c *conn) rearmLocked() {
	if c.armed == armedInOut || c.armed == armedIn && !c.blocked {
		return
	}
	ev := readEvents
	if c.blocked {
		ev |= netpoll.EPOLLOUT
	}
	if err := c.gw.ep.Mod(c.fd, ev); err != nil {
		// Deregistered: the connection is being closed.
		return
	}
	c.armed = armedIn
	if c.blocked {
		c.armed = armedInOut
	}
}

// armed is the epoll interest a connection has armed (one byte: the conn
// struct stays in the 128-byte size class).
type armed uint8

const (
	notArmed   armed = iota // an event fired; a worker re-arms
	armedIn                 // input
	armedInOut              // input and output: a write is blocked
)

// maxReadsPerEvent bounds how long one busy connection holds a worker.
const maxReadsPerEvent = 4

// read drains the socket (up to maxReadsPerEvent reads) and handles every
// complete frame.
func (c *conn) read() {
	bp := readPool.Get().(*[]byte)
	defer readPool.Put(bp)
	buf := *bp
	for i := 0; i < maxReadsPerEvent; i++ {
		n, err := unix.Read(c.fd, buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				return
			}
			c.close(0)
			return
		}
		if n == 0 {
			c.close(0) // the device closed
			return
		}
		c.mu.Lock()
		state := c.state
		c.mu.Unlock()
		if state == stateClosing {
			continue // discard: we only wait for the peer to close
		}
		ok := false
		switch {
		case state == stateUpgrading:
			ok = c.handleUpgrade(buf[:n])
		case c.ws:
			ok = c.handleWS(buf[:n])
		default:
			ok = c.handleBytes(buf[:n])
		}
		if !ok {
			return
		}
		if n < len(buf) {
			return
		}
	}
	// More may be waiting: come back after other connections had a turn.
	c.mu.Lock()
	c.events |= uint32(netpoll.EPOLLIN)
	c.mu.Unlock()
}

// handleBytes parses frames from data (prefixed by any partial frame kept
// from the last read). It returns false once the connection is failed.
func (c *conn) handleBytes(data []byte) bool {
	if c.rd != nil && len(c.rd.in) > 0 {
		c.rd.in = append(c.rd.in, data...)
		data = c.rd.in
	}
	max := c.gw.cfg.MaxFrame
	for len(data) > 0 {
		typ, body, n, err := wire.Split(data, max)
		if errors.Is(err, wire.ErrShort) {
			break
		}
		if err != nil {
			switch {
			case errors.Is(err, wire.ErrTooLarge):
				c.fail(wire.CodeTooLarge, "frame larger than the negotiated maximum")
			case errors.Is(err, wire.ErrUnknownType):
				c.fail(wire.CodeUnknownType, "unknown frame type")
			default:
				c.fail(wire.CodeMalformed, "malformed frame header")
			}
			c.rd = nil
			return false
		}
		c.gw.m.frameIn(typ)
		if !c.handleFrame(typ, body) {
			c.rd = nil
			return false
		}
		data = data[n:]
	}
	if len(data) == 0 {
		if c.rd != nil {
			c.rd.in = nil
			c.dropPartialIfEmpty()
		}
		return true
	}
	// Keep the partial frame. Its header was checked against max, so the
	// copy is bounded.
	rest := make([]byte, len(data), len(data)+512)
	copy(rest, data)
	c.partial().in = rest
	return true
}

// appendLocked queues a herald frame already encoded in b (in its own
// binary message on WebSocket). c.mu must be held.
func (c *conn) appendLocked(b []byte) {
	if c.lastFrameSent() {
		return
	}
	if c.ws {
		var h [10]byte
		c.appendRawLocked(appendWSHeader(h[:0], wsBinary, len(b)))
	}
	c.appendRawLocked(b)
	if c.outFrames < 0xffff {
		c.outFrames++
		c.gw.outFrames.Add(1)
	}
}

// appendRawLocked queues bytes as they are. c.mu must be held.
func (c *conn) appendRawLocked(b []byte) {
	if c.lastFrameSent() {
		return
	}
	if c.out == nil {
		c.out = (*outPool.Get().(*[]byte))[:0]
	}
	c.out = append(c.out, b...)
	c.gw.outPending.Add(int64(len(b)))
}

// pendingLocked is the number of output bytes not yet written.
func (c *conn) pendingLocked() int { return len(c.out) - int(c.outOff) }

// flush writes pending output: one write for every frame queued so far
// (frames queued while the device was busy are coalesced).
func (c *conn) flush() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	for c.pendingLocked() > 0 {
		n, err := unix.Write(c.fd, c.out[c.outOff:])
		c.gw.m.socketWrites.Inc()
		if n > 0 {
			c.outOff += int32(n)
			c.gw.outPending.Add(-int64(n))
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				c.blocked = true
				c.mu.Unlock()
				return
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			c.mu.Unlock()
			c.close(0)
			return
		}
	}
	c.blocked = false
	c.releaseOutLocked()
	var resume []*sub
	for _, s := range c.subs {
		if s != nil && s.resume {
			s.resume = false
			resume = append(resume, s)
		}
	}
	c.mu.Unlock()
	for _, s := range resume {
		c.gw.m.catchupResume.Inc()
		c.gw.queueCatchup(s)
	}
}

func (c *conn) releaseOutLocked() {
	c.gw.outFrames.Add(-int64(c.outFrames))
	c.outFrames = 0
	if c.out == nil {
		return
	}
	c.gw.outPending.Add(-int64(c.pendingLocked()))
	if cap(c.out) <= 64<<10 {
		b := c.out[:0]
		outPool.Put(&b)
	}
	c.out, c.outOff = nil, 0
}

// send queues a frame and flushes it from this worker. A device that does
// not read its answers (PONGs) is held to the same output bound as live
// delivery.
func (c *conn) send(b []byte, t wire.Type) {
	if c.enqueue(b, t, false) {
		c.flush()
	}
}

// enqueue appends a frame within the connection's output bound. It returns
// false when the connection is closed (or, with readyOnly, not ready) or was
// just failed as a slow consumer.
func (c *conn) enqueue(b []byte, t wire.Type, readyOnly bool) bool {
	c.mu.Lock()
	if c.closed || readyOnly && c.state != stateReady {
		c.mu.Unlock()
		return false
	}
	if c.pendingLocked()+len(b) > c.gw.cfg.MaxOutBytes {
		c.mu.Unlock()
		c.gw.m.slowConsumers.Inc()
		c.fail(wire.CodeSlowConsumer, "device does not read its answers: reconnect")
		return false
	}
	c.appendLocked(b)
	c.mu.Unlock()
	c.gw.m.frameOut(t)
	return true
}

// fail sends ERROR and closes the write side; the socket is kept (reads
// discarded) until the device closes or a short linger passes, so the ERROR
// is not lost to a reset.
func (c *conn) fail(code wire.Code, reason string) {
	c.mu.Lock()
	if c.closed || c.lastFrameSent() {
		c.mu.Unlock()
		return
	}
	if c.state == stateUpgrading {
		// No WebSocket yet to carry an ERROR frame; close counts it.
		c.mu.Unlock()
		c.close(code)
		return
	}
	wasReady := c.state == stateReady
	var buf [wire.MaxHeaderLen + 16 + wire.MaxReasonLen]byte
	c.appendLocked((&wire.Error{Code: code, Reason: []byte(reason)}).Append(buf[:0]))
	if c.ws {
		c.appendRawLocked(wsCloseFrame)
	}
	c.state = stateClosing // ERROR is the last frame
	c.deadline = c.gw.wheel.Now() + 2
	c.mu.Unlock()
	c.gw.m.frameOut(wire.TypeError)
	c.gw.m.disconnects[code].Inc()
	if m := c.gw.m.authFailures[code]; m != nil {
		m.Inc()
	}
	c.gw.log.Debug("closing device connection", "code", code.String(), "reason", reason, "app", c.app(), "device", c.device())
	if wasReady {
		c.gw.unregister(c)
	}
	c.flush()
	_ = unix.Shutdown(c.fd, unix.SHUT_WR)
	c.gw.wheel.add(c, c.deadline)
}

// goAway tells the device to reconnect elsewhere and closes the connection.
func (c *conn) goAway(code wire.Code, reason string) { c.goAwayAfter(code, reason, 0) }

// goAwayAfter is goAway asking the device to wait about delay ms (plus
// its own jitter) before reconnecting.
func (c *conn) goAwayAfter(code wire.Code, reason string, delay uint32) {
	c.mu.Lock()
	if c.closed || c.lastFrameSent() {
		c.mu.Unlock()
		return
	}
	var buf [64 + wire.MaxReasonLen]byte
	c.appendLocked((&wire.GoAway{Code: code, Delay: delay, Reason: []byte(reason)}).Append(buf[:0]))
	if c.ws {
		c.appendRawLocked(wsCloseFrame)
	}
	if c.state == stateReady {
		c.state = stateLeaving // GOAWAY is the last frame
	}
	c.mu.Unlock()
	c.gw.m.frameOut(wire.TypeGoAway)
	c.flush()
	c.close(code)
}

// close releases the connection: epoll, socket, channels, buffers. code 0
// means the device closed (or the socket failed).
func (c *conn) close(code wire.Code) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	wasReady := c.state == stateReady || c.state == stateLeaving
	failed := c.state == stateClosing
	c.closed = true
	c.releaseOutLocked()
	c.mu.Unlock()

	// Deregister before closing so the fd number cannot be reused while
	// still registered.
	_ = c.gw.ep.Del(c.fd)
	c.gw.releaseIP(c.fd)
	_ = unix.Close(c.fd)
	c.gw.pending.Delete(c)
	if wasReady {
		c.gw.unregister(c)
	}
	if !failed {
		if code == 0 {
			c.gw.m.disconnectsEOF.Inc()
		} else {
			c.gw.m.disconnects[code].Inc()
		}
	}
}

// touch moves the idle deadline after a frame from the device.
func (c *conn) touchLocked() {
	if c.state == stateReady {
		c.deadline = c.gw.wheel.AtLeast(idleDeadline(c.hb))
	}
}

// idleDeadline is how long a device may stay silent: two heartbeat
// intervals, so one lost PING is not fatal.
func idleDeadline(hb uint16) int64 { return 2 * int64(hb) }

// heartbeat clamps a device's requested interval to the configured bounds.
func (gw *Gateway) heartbeat(requested uint32) uint16 {
	return uint16(gw.clampHeartbeat(requested))
}

func (gw *Gateway) clampHeartbeat(requested uint32) uint32 {
	min, max := uint32(gw.cfg.HeartbeatMin/time.Second), uint32(gw.cfg.HeartbeatMax/time.Second)
	if requested == 0 {
		return uint32(gw.cfg.Heartbeat / time.Second)
	}
	if requested < min {
		return min
	}
	if requested > max {
		return max
	}
	return requested
}
