package gateway

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
	hnats "herald/nats"
	"herald/nats/natstest"
	"herald/offline"
	"herald/token"
	"herald/wire"
)

// harness is a gateway on a real embedded NATS with the demo app.
type harness struct {
	t     testing.TB
	nc    *nats.Conn
	store *offline.Store
	gw    *Gateway
}

func newHarness(t testing.TB, mod func(*config.Gateway)) *harness {
	t.Helper()
	_, url := natstest.Start(t)
	return newHarnessOn(t, url, mod)
}

// newHarnessOn is newHarness on the NATS servers at url.
func newHarnessOn(t testing.TB, url string, mod func(*config.Gateway)) *harness {
	t.Helper()
	nc := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := offline.Open(ctx, nc, config.Default().Store)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutApp(ctx, offline.App{Name: "demo", KeyHashes: []string{offline.HashKey("k")}, Secrets: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	apps, err := store.WatchApps(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apps.Stop)
	cfg := config.Default().Gateway
	cfg.Listen = "127.0.0.1:0"
	cfg.WSListen = "127.0.0.1:0"
	cfg.Workers = 2
	cfg.CatchupWorkers = 2
	cfg.CursorFlush = 50 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	gw := New(cfg, Deps{NC: nc, Store: store, Apps: apps})
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	return &harness{t: t, nc: nc, store: store, gw: gw}
}

func (h *harness) publish(user, data string) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := h.store.PublishAll(ctx, []offline.Publish{{App: "demo", Channel: offline.UserChannel(user), Data: []byte(data)}})
	if err != nil {
		h.t.Fatal(err)
	}
	return res[0].Seq
}

// pushes publishes n messages to user and reads them from d, in order.
func (h *harness) pushes(d *dev, user string, n int) []uint64 {
	h.t.Helper()
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = h.publish(user, "m")
		if p := d.push(); p.Seq != seqs[i] {
			h.t.Fatalf("push %d: seq %d, want %d", i, p.Seq, seqs[i])
		}
	}
	return seqs
}

// dropLive takes away the gateway's live subscription of user's channel,
// so the live copies and notices sent to it are lost; restoreLive gives it
// back.
func (h *harness) dropLive(user string) *channel {
	h.t.Helper()
	ch, ok := h.gw.chans.get(offline.ChannelKey("demo", offline.UserChannel(user)))
	if !ok {
		h.t.Fatalf("no channel for %s", user)
	}
	if err := ch.nsub.Unsubscribe(); err != nil {
		h.t.Fatal(err)
	}
	h.nc.Flush()
	return ch
}

// publishUnseen stores a message for user whose live copy the gateway
// never gets (its subscription is away meanwhile).
func (h *harness) publishUnseen(user, data string) uint64 {
	h.t.Helper()
	ch := h.dropLive(user)
	seq := h.publish(user, data)
	h.restoreLive(ch, user)
	return seq
}

func (h *harness) restoreLive(ch *channel, user string) {
	h.t.Helper()
	ch.nsub, _ = h.nc.ChanSubscribe(offline.LiveSubject("demo", offline.UserChannel(user)), h.gw.live[shardOf(ch.key)%liveShards])
	h.nc.Flush()
}

// dev is a hand-driven device connection.
type dev struct {
	t   testing.TB
	nc  net.Conn
	r   *bufio.Reader
	buf []byte
}

func (h *harness) connect(user string, hb uint32, cursors ...wire.Cursor) *dev {
	h.t.Helper()
	nc, err := net.Dial("tcp", h.gw.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { nc.Close() })
	d := &dev{t: h.t, nc: nc, r: newReader(nc)}
	tokenConnect(h.t, d, user, wire.Connect{Heartbeat: hb, Cursors: cursors})
	return d
}

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

// tokenConnect sends CONNECT for user (device d1) and expects CONNACK.
func tokenConnect(t testing.TB, d *dev, user string, extra ...wire.Connect) {
	t.Helper()
	tok, _ := token.Sign([]byte("s"), "demo", user, "d1", time.Hour)
	f := wire.Connect{}
	if len(extra) > 0 {
		f = extra[0]
	}
	f.Version, f.App, f.Device, f.Token = 1, []byte("demo"), []byte("d1"), []byte(tok)
	// Like a device that already knows where its broadcast channel stands
	// (else a SUBACK announcing it would come first).
	hasBroadcast := false
	for _, c := range f.Cursors {
		hasBroadcast = hasBroadcast || string(c.Channel) == offline.BroadcastChannel
	}
	if !hasBroadcast {
		f.Cursors = append(f.Cursors, wire.Cursor{Channel: []byte(offline.BroadcastChannel)})
	}
	d.write(f.Append(nil))
	if typ, _ := d.read(); typ != wire.TypeConnAck {
		t.Fatalf("got %s, want CONNACK", typ)
	}
}

func (d *dev) write(b []byte) {
	d.t.Helper()
	if _, err := d.nc.Write(b); err != nil {
		d.t.Fatal(err)
	}
}

// read returns the next frame, skipping SUBACKs (the gateway confirms
// the channels it resolved itself; these tests look at other frames).
func (d *dev) read() (wire.Type, []byte) {
	d.t.Helper()
	for {
		d.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, body, nb, err := wire.ReadFrame(d.r, d.buf, wire.DefaultMaxFrame)
		d.buf = nb
		if err != nil {
			d.t.Fatalf("read: %v", err)
		}
		if typ != wire.TypeSubAck {
			return typ, body
		}
	}
}

func (d *dev) push() wire.Push {
	d.t.Helper()
	typ, body := d.read()
	if typ != wire.TypePush {
		d.t.Fatalf("got %s, want PUSH", typ)
	}
	var p wire.Push
	if err := p.Decode(body); err != nil {
		d.t.Fatal(err)
	}
	p.Payload = append([]byte(nil), p.Payload...)
	return p
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Live copies the gateway never saw leave a gap that Nats-Last-Sequence
// reveals on the next message: the gateway reads the missing ones from the
// store and the device gets all of them, in order.
func TestGapDetection(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	s1 := h.publish("alice", "one")
	if p := d.push(); p.Seq != s1 {
		t.Fatalf("first: %+v", p)
	}
	// Take the gateway's subscription away, so it misses two live copies.
	ch := h.dropLive("alice")
	s2 := h.publish("alice", "two")
	s3 := h.publish("alice", "three")
	h.restoreLive(ch, "alice")
	runs := h.gw.m.catchupRuns.Get()
	s4 := h.publish("alice", "four")
	for _, want := range []uint64{s2, s3, s4} {
		if p := d.push(); p.Seq != want {
			t.Fatalf("got seq %d want %d", p.Seq, want)
		}
	}
	if h.gw.m.catchupRuns.Get() == runs {
		t.Fatal("the gap was not repaired by a catch-up")
	}
}

// A missed live copy that no later message reveals: the stream's
// leader advisory (as a new leader sends it) makes the gateway read the
// store, and the device gets the message with nothing published after it.
func TestLeaderAdvisoryFillsAHoleWithoutANextMessage(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	if s1, p := h.publish("alice", "one"), d.push(); p.Seq != s1 {
		t.Fatalf("first: %+v, want seq %d", p, s1)
	}
	ch := h.dropLive("alice")
	s2 := h.publish("alice", "two") // stored; its live copy is lost
	h.restoreLive(ch, "alice")
	d.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := d.r.Peek(1); err == nil {
		t.Fatal("the device got something before the advisory: the test made no hole")
	}
	d.nc.SetReadDeadline(time.Time{})
	advisory := `{"type":"io.nats.jetstream.advisory.v1.stream_leader_elected","stream":"` + offline.StreamName + `"}`
	if err := h.nc.Publish(offline.LeaderElectedSubject, []byte(advisory)); err != nil {
		t.Fatal(err)
	}
	if p := d.push(); p.Seq != s2 || string(p.Payload) != "two" {
		t.Fatalf("after the advisory: %+v, want seq %d", p, s2)
	}
	if n := h.gw.m.leaderResyncs.Get(); n != 1 {
		t.Fatalf("leader re-syncs counted: %d, want 1", n)
	}
}

// Live copies lost on the way from the stream's leader (a route that broke
// and healed) with no later message on the channel: the next pulse of the
// stream shows that pulses were lost on the same way, and the gateway reads
// the store. Pulses that follow each other re-sync nothing.
func TestLostPulsesFillAHoleWithoutANextMessage(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.store.EnsurePulse(ctx); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(h.nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, offline.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	sched, err := st.GetLastMsgForSubject(ctx, offline.PulseScheduleSubject)
	if err != nil {
		t.Fatalf("the pulse's schedule: %v", err)
	}
	if err := h.store.EnsurePulse(ctx); err != nil {
		t.Fatalf("EnsurePulse when the schedule is there: %v", err)
	}
	if again, err := st.GetLastMsgForSubject(ctx, offline.PulseScheduleSubject); err != nil || again.Sequence != sched.Sequence {
		t.Fatalf("a second EnsurePulse replaced the schedule: seq %d, was %d (%v)", again.Sequence, sched.Sequence, err)
	}
	d := h.connect("alice", 0)
	if s1, p := h.publish("alice", "one"), d.push(); p.Seq != s1 {
		t.Fatalf("first: %+v, want seq %d", p, s1)
	}
	waitFor(t, 10*time.Second, "three pulses", func() bool { return h.gw.m.pulses.Get() >= 3 })
	if n := h.gw.m.pulseResyncs.Get(); n != 0 {
		t.Fatalf("pulses that follow each other re-synced %d times", n)
	}

	// The stream republishes nothing for a while: every copy on the way,
	// the channel's and the pulses', is lost.
	cfg := st.CachedInfo().Config
	bare := cfg
	bare.RePublish = nil
	if _, err := js.UpdateStream(ctx, bare); err != nil {
		t.Fatalf("taking RePublish off: %v", err)
	}
	s2 := h.publish("alice", "two")
	waitFor(t, 10*time.Second, "a pulse stored after the message", func() bool {
		m, err := st.GetLastMsgForSubject(ctx, offline.PulseSubject)
		return err == nil && m.Sequence > s2
	})
	d.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := d.r.Peek(1); err == nil {
		t.Fatal("the device got something while nothing was republished: the test made no hole")
	}
	d.nc.SetReadDeadline(time.Time{})
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("putting RePublish back: %v", err)
	}
	if p := d.push(); p.Seq != s2 || string(p.Payload) != "two" {
		t.Fatalf("after the next pulse: %+v, want seq %d", p, s2)
	}
	if n := h.gw.m.pulseResyncs.Get(); n < 1 {
		t.Fatal("the device got the message, but no pulse re-synced the channels")
	}
	if n := h.gw.m.leaderResyncs.Get(); n != 0 {
		t.Fatalf("leader re-syncs: %d, want 0 (no leader changed)", n)
	}
}

// settleFillsHole stores a message for alice whose live copy the gateway
// never gets, settleDelay/2 or less after since (the test is skipped when
// what, the work before it, took longer), and checks that d receives it
// only from the settle check, settleDelay after since.
func (h *harness) settleFillsHole(d *dev, since time.Time, what string) {
	h.t.Helper()
	if took := time.Since(since); took > settleDelay/2 {
		h.t.Skipf("%s took %v: too late to make the hole before the settle", what, took)
	}
	s1 := h.publishUnseen("alice", "one")
	if p := d.push(); p.Seq != s1 || string(p.Payload) != "one" {
		h.t.Fatalf("got %+v, want seq %d", p, s1)
	}
	if took := time.Since(since); took < settleDelay/2 {
		h.t.Fatalf("the message came %v after %s, before the settle check: the test made no hole", took, what)
	}
}

// A NATS node's word that it has a new route makes the gateways connected
// to it read the store (the copies that were to cross the route are lost);
// another node's word does not.
func TestRoutesUpResyncsForItsOwnNode(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	s1 := h.publishUnseen("alice", "one")
	h.nc.Publish(hnats.RoutesUpPrefix+"another-node", nil)
	h.nc.Flush()
	time.Sleep(3 * routesResyncDelay)
	if n := h.gw.m.routeResyncs.Get(); n != 0 {
		t.Fatalf("another node's new route made %d re-syncs", n)
	}
	// Several words within routesResyncDelay make one re-sync.
	for range 3 {
		h.nc.Publish(hnats.RoutesUpPrefix+h.gw.nc.ConnectedServerName(), nil)
	}
	h.nc.Flush()
	if p := d.push(); p.Seq != s1 || string(p.Payload) != "one" {
		t.Fatalf("after its node's word: %+v, want seq %d", p, s1)
	}
	time.Sleep(2 * routesResyncDelay)
	if n := h.gw.m.routeResyncs.Get(); n != 1 {
		t.Fatalf("route re-syncs: %d, want 1", n)
	}
}

// In a cluster, a new channel's subscription may reach the stream's leader
// after the catch-up's read of the store, and a message stored between the
// two has no live copy and nothing after it. The test makes that hole on
// a 3-node cluster: the device connects, the gateway's subscription of its
// channel is taken away while a message is stored, then given back. A
// second look at the store settleDelay after the subscription delivers it.
func TestNewChannelSettlesInACluster(t *testing.T) {
	h := newHarnessOn(t, natstest.StartCluster(t), nil)
	if !h.store.Replicated() {
		t.Fatal("the harness's store is not replicated on a cluster")
	}
	d := h.connect("alice", 0)
	joined := time.Now()
	key := offline.ChannelKey("demo", offline.UserChannel("alice"))
	waitFor(t, 5*time.Second, "alice's first catch-up to end", func() bool {
		ch, ok := h.gw.chans.get(key)
		return ok && !ch.syncing()
	})
	h.settleFillsHole(d, joined, "the first catch-up")
	if n := h.gw.m.settles.Get(); n < 1 {
		t.Fatalf("settle checks: %d", n)
	}
}

// After a NATS reconnect in a cluster, the subscriptions nats.go makes
// again reach the stream's leader over routes, possibly after the re-sync's
// reads: a second re-sync a second later finds a message whose live copy
// was dropped meanwhile (the test drops it by taking the subscription
// away right after the first re-sync).
func TestReconnectSettlesInACluster(t *testing.T) {
	h := newHarnessOn(t, natstest.StartCluster(t), nil)
	d := h.connect("alice", 0)
	key := offline.ChannelKey("demo", offline.UserChannel("alice"))
	live := func() bool { ch, ok := h.gw.chans.get(key); return ok && !ch.syncing() }
	waitFor(t, 10*time.Second, "the new channels' settle checks to end", func() bool { return h.gw.m.settles.Get() >= 2 && live() })
	before, runs := h.gw.m.settles.Get(), h.gw.m.catchupResync.Get()
	reconnected := time.Now()
	if err := h.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the re-sync after the reconnect to end", func() bool { return h.gw.m.catchupResync.Get() >= runs+2 && live() })
	h.settleFillsHole(d, reconnected, "the re-sync after the reconnect")
	// A channel still catching up at its settle time settles a second
	// later (settle), after alice's may have brought the message.
	waitFor(t, 3*settleDelay, "a settle check per channel after the reconnect", func() bool {
		return h.gw.m.settles.Get()-before >= 2
	})
}

// A recall reaches an online device once, and also when its live notice
// is lost (the gateway's subscription was away): the recalls bucket's
// watch brings it.
func TestRecallRevokesOnceAndSurvivesALostNotice(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	seqs := h.pushes(d, "alice", 2)
	revoke := func(seq uint64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := h.store.Recall(ctx, "demo", seq); err != nil {
			t.Fatal(err)
		}
		typ, body := d.read()
		var r wire.Revoke
		if typ != wire.TypeRevoke || r.Decode(body) != nil || r.Seq != seq {
			t.Fatalf("got %s %+v, want REVOKE of %d", typ, r, seq)
		}
	}
	// Both the live notice and the watch carry this one: one REVOKE, and
	// the next frame is the next message.
	revoke(seqs[0])
	if s3, p := h.publish("alice", "three"), d.push(); p.Seq != s3 {
		t.Fatalf("after the REVOKE: %+v, want PUSH %d", p, s3)
	}
	// The live notice of this one is lost.
	h.dropLive("alice")
	revoke(seqs[1])
}

// ACKs move the KV cursor forward only, coalesced.
func TestAcksMoveCursorForward(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	seqs := h.pushes(d, "alice", 3)
	key := offline.CursorKey("demo", "alice", "d1", "u.alice")
	cursor := func() uint64 { c, _ := h.store.Cursor(context.Background(), key); return c }
	d.write((&wire.Ack{Seq: seqs[1]}).Append(nil))
	waitFor(t, 5*time.Second, "cursor at the second message", func() bool { return cursor() == seqs[1] })
	stale := h.gw.m.staleAcks.Get()
	d.write((&wire.Ack{Seq: seqs[0]}).Append(nil)) // stale
	d.write((&wire.Ack{Seq: seqs[1]}).Append(nil)) // repeated
	waitFor(t, 5*time.Second, "stale ACKs counted", func() bool { return h.gw.m.staleAcks.Get() == stale+2 })
	d.write((&wire.Ack{Seq: seqs[2] + 100}).Append(nil)) // beyond what was sent: clamped
	waitFor(t, 5*time.Second, "cursor at the last message", func() bool { return cursor() == seqs[2] })
}

// After its first cursor write the gateway writes by compare-and-set on
// the revision it wrote; a cursor another gateway moved ahead meanwhile
// is left ahead; a closed connection leaves no revision behind.
func TestCursorWritesRememberTheirRevision(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	key := offline.CursorKey("demo", "alice", "d1", "u.alice")
	cursor := func() uint64 { c, _ := h.store.Cursor(context.Background(), key); return c }
	revs := func() int { h.gw.revMu.Lock(); defer h.gw.revMu.Unlock(); return len(h.gw.revs) }
	ack := func() uint64 {
		seq := h.pushes(d, "alice", 1)[0]
		d.write((&wire.Ack{Seq: seq}).Append(nil))
		return seq
	}
	s1 := ack()
	waitFor(t, 5*time.Second, "the first cursor", func() bool { return cursor() == s1 && revs() == 1 })
	writes := h.gw.m.cursorWrites.Get()
	s2 := ack()
	waitFor(t, 5*time.Second, "the second cursor", func() bool { return cursor() == s2 && h.gw.m.cursorWrites.Get() == writes+1 })
	if revs() != 1 {
		t.Fatalf("%d revisions kept, want 1", revs())
	}
	ahead := s2 + 1000
	if moved, err := h.store.AdvanceCursor(context.Background(), key, ahead); err != nil || !moved {
		t.Fatal(moved, err)
	}
	ack()
	waitFor(t, 5*time.Second, "the write that finds the cursor ahead", func() bool { return h.gw.m.cursorWrites.Get() == writes+2 })
	if c := cursor(); c != ahead {
		t.Fatalf("cursor %d, want %d: moved back", c, ahead)
	}
	if revs() != 0 {
		t.Fatalf("%d revisions kept after a write that wrote nothing", revs())
	}
	b := h.connect("bob", 0)
	seq := h.pushes(b, "bob", 1)[0]
	b.write((&wire.Ack{Seq: seq}).Append(nil))
	waitFor(t, 5*time.Second, "bob's cursor", func() bool { return revs() == 1 })
	b.nc.Close()
	waitFor(t, 5*time.Second, "bob's revision gone with his connection", func() bool { return revs() == 0 })
}

// A device that sends nothing within twice its heartbeat interval is closed.
func TestHeartbeatDeadline(t *testing.T) {
	h := newHarness(t, func(c *config.Gateway) { c.HeartbeatMin = time.Second })
	d := h.connect("alice", 1)
	start := time.Now()
	typ, body := d.read()
	var e wire.Error
	if typ != wire.TypeError || e.Decode(body) != nil || e.Code != wire.CodeIdleTimeout {
		t.Fatalf("got %s %+v", typ, e)
	}
	// Never before the two intervals the device was promised (the wheel
	// counts whole seconds: it once cut a device after 1.1 s).
	if el := time.Since(start); el < 2*time.Second || el > 6*time.Second {
		t.Fatalf("closed after %v; the deadline is 2 × 1s", el)
	}
	// A device that keeps pinging stays.
	d2 := h.connect("bob", 1)
	for i := 0; i < 4; i++ {
		time.Sleep(700 * time.Millisecond)
		d2.write((&wire.Ping{Interval: 1}).Append(nil))
		if typ, _ := d2.read(); typ != wire.TypePong {
			t.Fatalf("ping %d: got %s", i, typ)
		}
	}
}

// An operator replay is done by an ACK of what was sent again after the
// RESYNC, not by an ACK beyond it (one the device sent before it read the
// RESYNC, from its old position).
func TestReplayIsDoneByAnAckOfTheReplay(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("alice", 0)
	seqs := h.pushes(d, "alice", 3)
	d.write((&wire.Ack{Seq: seqs[2]}).Append(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := offline.CursorKey("demo", "alice", "d1", "u.alice")
	waitFor(t, 5*time.Second, "the ACK before the order", func() bool { c, _ := h.store.Cursor(ctx, key); return c == seqs[2] })
	if err := h.store.PutReplay(ctx, offline.Replay{App: "demo", User: "alice", Device: "d1", From: seqs[0]}); err != nil {
		t.Fatal(err)
	}
	if typ, _ := d.read(); typ != wire.TypeResync {
		t.Fatalf("got %s, want RESYNC", typ)
	}
	d.write((&wire.Ack{Seq: seqs[2] + 100}).Append(nil)) // beyond anything sent since the RESYNC
	for i := range seqs {
		if p := d.push(); p.Seq != seqs[i] {
			t.Fatalf("replayed push %d: seq %d, want %d", i, p.Seq, seqs[i])
		}
	}
	d.write((&wire.Ack{Seq: seqs[2] + 100}).Append(nil)) // still beyond: now clamped to the last sent
	time.Sleep(300 * time.Millisecond)
	if n := h.gw.m.replays.Get(); n != 0 {
		t.Fatalf("%d replays done by ACKs beyond what the replay sent", n)
	}
	d.write((&wire.Ack{Seq: seqs[0]}).Append(nil))
	waitFor(t, 5*time.Second, "the replay done by an ACK of its first message", func() bool { return h.gw.m.replays.Get() == 1 })
}
