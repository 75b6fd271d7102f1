// Package client is herald's Go device SDK: it connects to a gateway with a
// device token, receives messages in order, hands each to the application
// once, saves its cursor, acknowledges it, sends heartbeats, and reconnects
// with backoff and jitter, resuming from its cursors.
//
// Delivery on the wire is at-least-once; the client drops any message whose
// sequence is not above the channel's cursor, so the application sees each
// message exactly once, in order, as long as its CursorStore keeps what Save
// was given.
package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"herald/wire"
)

// Message is one message handed to the application.
type Message struct {
	Channel string
	Seq     uint64
	Data    []byte    // valid only during the handler call: copy it to keep it
	Time    time.Time // when stored; for live messages (sent without it), when received (the time of the read that brought it)
	Expires time.Time // zero when the message has no TTL
	Replay  bool      // sent from the store (catch-up) rather than live
}

// ErrStop, returned by a Handler, acknowledges the message and ends Run
// without error.
var ErrStop = errors.New("client: stop")

// Config configures a Client. Addr, App, Device, Token and Handler are required.
type Config struct {
	// Addr is the gateway's device address: host:port for TCP,
	// tls://host:port for TCP over TLS, or a ws:// or wss:// URL for
	// WebSocket (the same frames in binary messages).
	Addr string
	// TLS configures TLS (tls:// and wss://; with a plain host:port it
	// turns TLS on too). Default: the system's roots, the server name
	// taken from Addr.
	TLS *tls.Config
	// Locator, instead of Addr, is the base URL of herald's HTTP API: before
	// each connection the client asks GET /v1/gateways for candidates,
	// probes them at once (PROBE) and keeps the first to answer — a loaded
	// gateway answers late, so devices flow to idle ones.
	Locator string
	// Fallback are gateway TCP addresses probed when the locator cannot be
	// reached (DNS, HTTP failure) or is not set.
	Fallback []string
	// Probe bounds how many candidates are probed at once. Default 3 (or
	// what the locator says).
	Probe int
	// App and Device identify the device; the token must be for them.
	App, Device string
	// Token returns a device token; it is called before every connection
	// attempt so an expired token can be renewed.
	Token func(ctx context.Context) (string, error)
	// Handler is called once per message, in order per channel. When it
	// returns nil the message's cursor is saved and acknowledged; an error
	// ends Run with that error (ErrStop ends it cleanly).
	Handler func(Message) error
	// Cursors persists cursors. Default: in memory.
	Cursors CursorStore
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles per
	// failed attempt with full jitter. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds dialing and the CONNACK. Default 5s.
	DialTimeout time.Duration
	// Heartbeat is the PING interval to start with; 0 takes the server's.
	// The interval then adapts (see adaptive in heartbeat.go).
	Heartbeat time.Duration
	// HeartbeatGrowAfter is how many PONGs in a row at one interval make it
	// grow. Default 3.
	HeartbeatGrowAfter int
	// PongTimeout is how long to wait for a PONG before the connection is
	// taken for dead. Default 10s.
	PongTimeout time.Duration
	// OnEvent, if set, is told about connections and disconnections.
	OnEvent func(Event)
	// Log receives the client's own log lines. Default: discarded.
	Log *slog.Logger
	// Dial replaces net.Dialer, e.g. to pick a source address.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Topics the device subscribes to on every connection (more with
	// Subscribe). Topics the server subscribes the user to arrive on
	// their own.
	Topics []string
	// SyncPage is how many messages one SYNC asks for when the gateway
	// announces a backlog with NOTIFY. Default 500.
	SyncPage int
	// OnRevoke, if set, is told that a message the handler got was
	// recalled by the app: remove it from view.
	OnRevoke func(channel string, seq uint64)
	// AckDelay is how long the client may hold its cumulative ACK after a
	// burst, so that one frame acknowledges every message handled in that
	// time: fewer radio wake-ups on a phone and fewer writes on both ends.
	// 0 acknowledges at the end of every burst read. An ACK held when the
	// connection drops is not lost work: the gateway sends those messages
	// again and the client drops them as duplicates. The gateway writes
	// cursors to the store once per gateway.cursor_flush (1 s by default),
	// so a delay below that loses no durability. On Linux the kernel's TCP
	// acknowledgements are held too (see lazyTCPAcks).
	AckDelay time.Duration
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	Connected    EventKind = iota + 1 // CONNACK received
	Disconnected                      // the connection ended; Err says why
	Subscribed                        // a channel was added (SUBACK); Channel names it
	Refused                           // a SUB was refused; Channel and Err say which and why
	Notified                          // the gateway announced a backlog (NOTIFY); the client SYNCs
	Rewound                           // an operator replay (RESYNC) moved a channel's cursor back; Channel names it
)

// Event reports a change of the client's connection.
type Event struct {
	Kind    EventKind
	Err     error
	Channel string
}

// ServerError is an ERROR or GOAWAY frame from the gateway.
type ServerError struct {
	Code   wire.Code
	Reason string
	GoAway bool
	Delay  time.Duration
}

func (e *ServerError) Error() string {
	kind := "error"
	if e.GoAway {
		kind = "goaway"
	}
	return fmt.Sprintf("herald gateway %s %d (%s): %s", kind, e.Code, e.Code, e.Reason)
}

// Fatal reports whether reconnecting cannot help (protocol and auth errors,
// except an expired token, which the next Token call may renew).
func (e *ServerError) Fatal() bool {
	return !e.GoAway && !e.Code.Retry() && e.Code != wire.CodeTokenExpired
}

// Client is one device. Run drives it.
type Client struct {
	cfg Config

	mu      sync.Mutex
	cursors map[string]uint64
	hb      adaptive
	topics  map[string]bool // "t.<topic>" the device subscribed itself
	sess    *session        // the connected session, nil between connections
	ups     map[string]chan wire.UpAck

	connects atomic.Int64
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Addr == "" && cfg.Locator == "" && len(cfg.Fallback) == 0:
		return nil, errors.New("client: Addr (or Locator or Fallback) is required")
	case cfg.App == "" || cfg.Device == "":
		return nil, errors.New("client: App and Device are required")
	case cfg.Token == nil:
		return nil, errors.New("client: Token is required")
	case cfg.Handler == nil:
		return nil, errors.New("client: Handler is required")
	}
	if cfg.Cursors == nil {
		cfg.Cursors = &MemoryCursors{}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HeartbeatGrowAfter <= 0 {
		cfg.HeartbeatGrowAfter = 3
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 10 * time.Second
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: -1}
		cfg.Dial = d.DialContext
	}
	cursors, err := cfg.Cursors.Load()
	if err != nil {
		return nil, err
	}
	if cfg.SyncPage <= 0 {
		cfg.SyncPage = 500
	}
	if cfg.Probe <= 0 {
		cfg.Probe = 3
	}
	c := &Client{cfg: cfg, cursors: cursors, hb: adaptive{cur: cfg.Heartbeat, growAfter: cfg.HeartbeatGrowAfter},
		topics: map[string]bool{}, ups: map[string]chan wire.UpAck{}}
	for _, t := range cfg.Topics {
		c.topics["t."+t] = true
	}
	return c, nil
}

// HeartbeatInterval is the current PING interval.
func (c *Client) HeartbeatInterval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hb.cur
}

// Cursor returns the channel's cursor: the highest sequence handled.
func (c *Client) Cursor(channel string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursors[channel]
}

// Connects is the number of successful connections so far.
func (c *Client) Connects() int64 { return c.connects.Load() }

// Run connects and reconnects until ctx ends, the handler returns an error
// or ErrStop, or the server refuses the device for good (a ServerError with
// Fatal true).
func (c *Client) Run(ctx context.Context) error {
	attempt := 0
	for {
		connected, err := c.session(ctx)
		if errors.Is(err, ErrStop) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *ServerError
		if errors.As(err, &se) && se.Fatal() {
			return err
		}
		var he handlerError
		if errors.As(err, &he) {
			return he.err
		}
		if connected {
			attempt = 0
		}
		delay := c.backoff(attempt)
		if se != nil && se.GoAway && se.Delay > 0 {
			d := min(se.Delay, maxGoAwayDelay)
			delay = d + rand.N(d+time.Millisecond)
		}
		attempt++
		c.cfg.Log.Debug("reconnecting", "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// backoff is the delay before attempt n: exponential with full jitter.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.MinBackoff << min(n, 20)
	if d > c.cfg.MaxBackoff || d <= 0 {
		d = c.cfg.MaxBackoff
	}
	return c.cfg.MinBackoff/2 + rand.N(d)
}

// maxGoAwayDelay bounds the wait a GOAWAY asks for (delay_ms is 32 bits,
// up to 49 days): a gateway's mistake must not strand its devices. A
// variable for tests.
var maxGoAwayDelay = 5 * time.Minute

type handlerError struct{ err error }

func (h handlerError) Error() string { return h.err.Error() }

// dialTCP dials a gateway's TCP address, over TLS when asked.
func (c *Client) dialTCP(ctx context.Context, target string) (net.Conn, error) {
	addr, secure := strings.CutPrefix(target, "tls://")
	nc, err := c.cfg.Dial(ctx, "tcp", addr)
	if err != nil || (!secure && c.cfg.TLS == nil) {
		return nc, err
	}
	cfg := &tls.Config{}
	if c.cfg.TLS != nil {
		cfg = c.cfg.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("client: tls: %w", err)
	}
	return tc, nil
}

// session runs one connection. connected reports whether it got a CONNACK.
func (c *Client) session(ctx context.Context) (connected bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	tok, err := c.cfg.Token(dctx)
	if err != nil {
		return false, fmt.Errorf("client: token: %w", err)
	}
	var nc net.Conn
	var r io.Reader
	var w io.Writer
	switch {
	case c.cfg.Addr == "":
		nc, err = c.dialProbed(dctx)
		r, w = nc, nc
	case isWebSocket(c.cfg.Addr):
		nc, r, w, err = dialWS(dctx, c.cfg.Addr, c.cfg.Dial, c.cfg.TLS)
	default:
		nc, err = c.dialTCP(dctx, c.cfg.Addr)
		r, w = nc, nc
	}
	if err != nil {
		return false, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if c.cfg.AckDelay > 0 {
		r = lazyTCPAcks(nc, r)
	}

	s := &session{c: c, nc: nc, r: bufio.NewReaderSize(r, 32<<10), w: bufio.NewWriterSize(w, 4<<10)}
	defer func() {
		if connected && c.cfg.OnEvent != nil {
			c.cfg.OnEvent(Event{Kind: Disconnected, Err: err})
		}
	}()
	if err := s.connect(tok); err != nil {
		return false, err
	}
	c.connects.Add(1)
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(Event{Kind: Connected})
	}
	if err := s.subscribeTopics(); err != nil {
		return true, err
	}
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.sess = nil
		c.mu.Unlock()
	}()
	done := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		s.heartbeat(done)
	}()
	err = s.readLoop()
	s.stopAcks()
	close(done)
	<-hbDone
	var se *ServerError
	var he handlerError
	if s.pingOutstanding.Load() && ctx.Err() == nil && !errors.As(err, &se) && !errors.As(err, &he) {
		// The path went silent while a PING was out: this interval is too long.
		c.mu.Lock()
		c.hb.failure()
		c.mu.Unlock()
	}
	return true, err
}

// session is one connection's state.
type session struct {
	c     *Client
	nc    net.Conn
	r     *bufio.Reader
	wmu   sync.Mutex
	w     *bufio.Writer
	slots map[uint32]string
	max   int
	// pingOutstanding is set from a PING until its PONG.
	pingOutstanding atomic.Bool
	pong            chan struct{}
	// ackMu guards unacked and ackArmed; it is taken before wmu.
	ackMu sync.Mutex
	// unacked holds per slot the highest handled seq not yet acknowledged.
	unacked map[uint32]uint64
	// ackArmed says ackTimer will flush unacked (AckDelay > 0).
	ackArmed bool
	ackTimer *time.Timer
	// now is when the bytes being decoded were read.
	now time.Time
}

func (s *session) write(f interface{ Append([]byte) []byte }) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var buf [256]byte
	if _, err := s.w.Write(f.Append(buf[:0])); err != nil {
		return err
	}
	return s.w.Flush()
}

// connect sends CONNECT with the saved cursors and waits for CONNACK.
func (s *session) connect(tok string) error {
	c := s.c
	cur := wire.Connect{Version: wire.Version, App: []byte(c.cfg.App), Device: []byte(c.cfg.Device), Token: []byte(tok)}
	c.mu.Lock()
	cur.Heartbeat = ceilSeconds(c.hb.cur)
	for ch, seq := range c.cursors {
		// Topics only while the device holds them: a topic the server
		// subscribed the user to comes back from the server's list.
		if strings.HasPrefix(ch, "t.") && !c.topics[ch] {
			continue
		}
		if !wire.ValidChannel(ch) {
			// Saved by an older SDK from a bad SUBACK: the gateway would
			// refuse the CONNECT for good (ERROR bad_channel).
			continue
		}
		cur.Cursors = append(cur.Cursors, wire.Cursor{Channel: []byte(ch), Seq: seq})
	}
	c.mu.Unlock()
	_ = s.nc.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	if err := s.write(&cur); err != nil {
		return err
	}
	t, body, _, err := wire.ReadFrame(s.r, nil, wire.DefaultMaxFrame)
	if err != nil {
		return fmt.Errorf("client: waiting for CONNACK: %w", err)
	}
	switch t {
	case wire.TypeConnAck:
	case wire.TypeError:
		return decodeServerError(body, false)
	default:
		return fmt.Errorf("client: got %s instead of CONNACK", t)
	}
	var ack wire.ConnAck
	if err := ack.Decode(body); err != nil {
		return fmt.Errorf("client: bad CONNACK: %w", err)
	}
	_ = s.nc.SetDeadline(time.Time{})
	s.slots = map[uint32]string{}
	for _, ch := range ack.Channels {
		if !wire.ValidChannel(string(ch.Name)) {
			return fmt.Errorf("client: CONNACK names an invalid channel %q", ch.Name)
		}
		s.slots[ch.Slot] = string(ch.Name)
	}
	start := time.Duration(ack.Heartbeat) * time.Second
	if start <= 0 {
		start = 30 * time.Second
	}
	c.mu.Lock()
	c.hb.bound(time.Duration(ack.HeartbeatMin)*time.Second, time.Duration(ack.HeartbeatMax)*time.Second, start)
	c.mu.Unlock()
	s.pong = make(chan struct{}, 1)
	s.max = int(ack.MaxFrame)
	s.unacked = map[uint32]uint64{}
	return nil
}

func decodeServerError(body []byte, goAway bool) error {
	if goAway {
		var g wire.GoAway
		if err := g.Decode(body); err != nil {
			return fmt.Errorf("client: bad GOAWAY: %w", err)
		}
		return &ServerError{Code: g.Code, Reason: string(g.Reason), GoAway: true, Delay: time.Duration(g.Delay) * time.Millisecond}
	}
	var e wire.Error
	if err := e.Decode(body); err != nil {
		return fmt.Errorf("client: bad ERROR: %w", err)
	}
	return &ServerError{Code: e.Code, Reason: string(e.Reason)}
}

// heartbeat sends PING at the adaptive interval and waits for its PONG; a
// PONG that does not come within PongTimeout closes the connection.
func (s *session) heartbeat(done <-chan struct{}) {
	c := s.c
	for {
		c.mu.Lock()
		wait, announce := c.hb.cur, c.hb.announce()
		c.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
		s.pingOutstanding.Store(true)
		if err := s.write(&wire.Ping{Interval: ceilSeconds(announce)}); err != nil {
			return // the read loop sees the broken connection
		}
		t = time.NewTimer(c.cfg.PongTimeout)
		select {
		case <-done:
			t.Stop()
			return
		case <-s.pong:
			t.Stop()
			s.pingOutstanding.Store(false)
			c.mu.Lock()
			c.hb.success()
			c.mu.Unlock()
		case <-t.C:
			c.cfg.Log.Debug("no PONG in time: closing", "interval", wait)
			s.nc.Close()
			return
		}
	}
}

func ceilSeconds(d time.Duration) uint32 {
	return uint32((d + time.Second - 1) / time.Second)
}

// readLoop handles frames until the connection ends.
func (s *session) readLoop() error {
	var buf []byte
	var push wire.Push
	for {
		// Frames that arrived in one read share its time of arrival: one
		// clock read per read, not per message (a clock read costs as
		// much as decoding a small PUSH on some VMs).
		fresh := s.r.Buffered() == 0
		t, body, nb, err := wire.ReadFrame(s.r, buf, wire.DefaultMaxFrame)
		buf = nb
		if fresh || s.now.IsZero() {
			s.now = time.Now()
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("client: connection closed: %w", err)
			}
			return fmt.Errorf("client: read: %w", err)
		}
		switch t {
		case wire.TypePush:
			if err := push.Decode(body); err != nil {
				return fmt.Errorf("client: bad PUSH: %w", err)
			}
			if err := s.handlePush(&push); err != nil {
				return err
			}
		case wire.TypePong:
			select {
			case s.pong <- struct{}{}:
			default:
			}
		case wire.TypeSubAck:
			if err := s.handleSubAck(body); err != nil {
				return err
			}
		case wire.TypeNotify:
			if err := s.handleNotify(body); err != nil {
				return err
			}
		case wire.TypeRevoke:
			var rv wire.Revoke
			if err := rv.Decode(body); err != nil {
				return fmt.Errorf("client: bad REVOKE: %w", err)
			}
			if ch, ok := s.slots[rv.Slot]; ok && s.c.cfg.OnRevoke != nil {
				s.c.cfg.OnRevoke(ch, rv.Seq)
			}
		case wire.TypeResync:
			if err := s.handleResync(body); err != nil {
				return err
			}
		case wire.TypeUpAck:
			var ua wire.UpAck
			if err := ua.Decode(body); err != nil {
				return fmt.Errorf("client: bad UPACK: %w", err)
			}
			s.c.mu.Lock()
			if w, ok := s.c.ups[string(ua.ID)]; ok {
				ua.ID = nil
				select {
				case w <- ua:
				default:
				}
			}
			s.c.mu.Unlock()
		case wire.TypeError:
			return decodeServerError(body, false)
		case wire.TypeGoAway:
			return decodeServerError(body, true)
		default:
			return fmt.Errorf("client: unexpected %s frame", t)
		}
		// ACK once the burst is handled: one frame for many messages.
		if s.r.Buffered() == 0 {
			if err := s.burstDone(); err != nil {
				return err
			}
		}
	}
}

func (s *session) handlePush(p *wire.Push) error {
	c := s.c
	ch, ok := s.slots[p.Slot]
	if !ok {
		return fmt.Errorf("client: PUSH on unknown slot %d", p.Slot)
	}
	c.mu.Lock()
	cur := c.cursors[ch]
	c.mu.Unlock()
	if p.Seq <= cur {
		// A duplicate (already handled before a reconnect): acknowledge, drop.
		s.ackMu.Lock()
		if p.Seq > s.unacked[p.Slot] {
			s.unacked[p.Slot] = p.Seq
		}
		s.ackMu.Unlock()
		return nil
	}
	m := Message{Channel: ch, Seq: p.Seq, Data: p.Payload, Replay: p.Flags&wire.FlagReplay != 0}
	if p.Time != 0 {
		m.Time = time.UnixMilli(p.Time)
	} else {
		m.Time = s.now // a live message was stored just now: its arrival
	}
	if p.Expires > 0 {
		m.Expires = time.UnixMilli(p.Expires)
	}
	herr := c.cfg.Handler(m)
	if herr != nil && !errors.Is(herr, ErrStop) {
		return handlerError{herr}
	}
	c.mu.Lock()
	c.cursors[ch] = p.Seq
	c.mu.Unlock()
	if err := c.cfg.Cursors.Save(ch, p.Seq); err != nil {
		return handlerError{err}
	}
	s.ackMu.Lock()
	s.unacked[p.Slot] = p.Seq
	s.ackMu.Unlock()
	if herr != nil {
		_ = s.flushAcks()
		return herr
	}
	return nil
}

// burstDone runs when a read's frames are all handled: it acknowledges them
// now, or arms the ACK timer (AckDelay) if it is not already running.
func (s *session) burstDone() error {
	d := s.c.cfg.AckDelay
	if d <= 0 {
		return s.flushAcks()
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if s.ackArmed || len(s.unacked) == 0 {
		return nil
	}
	s.ackArmed = true
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(d, func() { _ = s.flushAcks() })
	} else {
		s.ackTimer.Reset(d)
	}
	return nil
}

// stopAcks stops the ACK timer and sends what it held, if the connection
// still takes it (a GOAWAY, an ended handler) within a second: a dead
// connection must not hold the session up.
func (s *session) stopAcks() {
	s.ackMu.Lock()
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	s.ackMu.Unlock()
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = s.flushAcks()
}

// flushAcks writes one ACK per slot with unacknowledged messages, all in
// one write. It holds ackMu while writing, so an ACK never overtakes a
// frame the read loop sends after it (a SYNC, a rewind).
func (s *session) flushAcks() error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.ackArmed = false
	if len(s.unacked) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var buf [64]byte
	for slot, seq := range s.unacked {
		if _, err := s.w.Write((&wire.Ack{Slot: slot, Seq: seq}).Append(buf[:0])); err != nil {
			return err
		}
		delete(s.unacked, slot)
	}
	return s.w.Flush()
}
