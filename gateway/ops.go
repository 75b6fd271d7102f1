package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	mrand "math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"herald/config"
	"herald/offline"
	"herald/wire"
)

// Operations: the gateway's entry in the registry (refreshed, removed at
// Stop), drain on request, and operator replays (herald ctl replay).

// opsState is the gateway's operational state.
type opsState struct {
	id       string
	version  string
	started  time.Time
	draining atomic.Bool
	drained  chan struct{}
	ctlSub   *nats.Subscription

	// Window p99 of the delivery latency for the registry (dashboard).
	// refreshMu serializes refresh: the registry loop and Drain (from a
	// NATS callback or a signal) both refresh.
	refreshMu sync.Mutex
	histPrev  map[string]uint64
	p99       atomic.Int64 // nanoseconds

	replayMu    sync.Mutex
	replays     map[string]pendingReplay // by "<app>.<user>.<device>"
	replayCount atomic.Int32             // len(replays): CONNECT skips the lock when 0
	stopReplays func()
}

// pendingReplay is an order this gateway knows of. Once RESYNC is queued
// on a connection (on), the order stays until the device acknowledges a
// message at or after its From — proof that it read the RESYNC — and is
// then deleted from the bucket; if the connection ends first, on is
// cleared and the device's next connection gets RESYNC again.
type pendingReplay struct {
	r  offline.Replay
	on *conn
}

func defaultID() string {
	host, _ := os.Hostname()
	var b [3]byte
	_, _ = rand.Read(b[:])
	var out []byte
	for _, r := range host {
		if r < 128 && config.ValidName(string(r)) {
			out = append(out, byte(r))
		}
	}
	if len(out) == 0 || len(out) > 100 {
		out = []byte("gateway")
	}
	return string(out) + "-" + hex.EncodeToString(b[:])
}

// ID is the gateway's id in the registry.
func (gw *Gateway) ID() string { return gw.ops.id }

// Draining reports whether the gateway is draining (its /readyz fails).
func (gw *Gateway) Draining() bool { return gw.ops.draining.Load() }

// Drained is closed once a drain has moved every device away (or timed out).
func (gw *Gateway) Drained() <-chan struct{} { return gw.ops.drained }

// Info is the gateway's registry entry now.
func (gw *Gateway) Info() offline.GatewayInfo {
	n := gw.conns.len()
	adv := gw.cfg.Advertise
	if adv == "" {
		adv = gw.ln.Addr().String()
	}
	info := offline.GatewayInfo{
		ID: gw.ops.id, Version: gw.ops.version, TCP: adv, TLS: gw.tls != nil,
		Connections: n, Load: float64(n) / float64(gw.cfg.Capacity),
		Draining: gw.ops.draining.Load(), Started: gw.ops.started, Updated: time.Now().UTC(),
		Delivered: gw.m.framesOut[wire.TypePush].Get(),
		P99Millis: float64(gw.ops.p99.Load()) / 1e6,
	}
	if gw.wsln != nil {
		info.WS = gw.wsln.Addr().String()
	}
	return info
}

// startOps registers the gateway, listens for operator requests and
// follows pending replays.
func (gw *Gateway) startOps() error {
	var err error
	gw.ops.ctlSub, err = gw.nc.Subscribe(offline.GatewayControlSubject(gw.ops.id), gw.control)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(gw.ctx, 10*time.Second)
	defer cancel()
	gw.ops.stopReplays, err = gw.store.WatchReplays(ctx, gw.log, gw.onReplay)
	if err != nil {
		return err
	}
	gw.spawn(gw.registryLoop)
	return nil
}

// stopOps leaves the registry and stops following replays.
func (gw *Gateway) stopOps() {
	if gw.ops.ctlSub != nil {
		_ = gw.ops.ctlSub.Unsubscribe()
	}
	if gw.ops.stopReplays != nil {
		gw.ops.stopReplays()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = gw.store.DeleteGateway(ctx, gw.ops.id)
}

// registryLoop refreshes the registry entry (5 times per GatewayTTL) and
// retries replays waiting for a device's catch-up to end.
func (gw *Gateway) registryLoop() {
	t := time.NewTicker(offline.GatewayTTL / 5)
	defer t.Stop()
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	gw.refresh()
	for {
		select {
		case <-gw.ctx.Done():
			return
		case <-t.C:
			gw.refresh()
		case <-retry.C:
			if gw.ops.replayCount.Load() > 0 {
				gw.retryReplays()
			}
		}
	}
}

func (gw *Gateway) refresh() {
	gw.ops.refreshMu.Lock()
	defer gw.ops.refreshMu.Unlock()
	gw.ops.p99.Store(int64(gw.windowP99()))
	ctx, cancel := context.WithTimeout(gw.ctx, 2*time.Second)
	defer cancel()
	if err := gw.store.PutGateway(ctx, gw.Info()); err != nil && gw.ctx.Err() == nil {
		gw.log.Warn("cannot refresh the gateway registry", "err", err)
	}
}

// windowP99 is the 99th percentile of the delivery latency since the last
// call, from the histogram's buckets (within a bucket's width, ≈12%).
func (gw *Gateway) windowP99() time.Duration {
	type bucket struct {
		upper float64
		n     uint64
	}
	var bs []bucket
	cur := map[string]uint64{}
	var total uint64
	gw.m.deliveryLat.VisitNonZeroBuckets(func(vmrange string, count uint64) {
		cur[vmrange] = count
		d := count - gw.ops.histPrev[vmrange]
		if d == 0 {
			return
		}
		_, hi, _ := strings.Cut(vmrange, "...")
		up, err := strconv.ParseFloat(hi, 64)
		if err != nil {
			return
		}
		bs = append(bs, bucket{up, d})
		total += d
	})
	gw.ops.histPrev = cur
	if total == 0 {
		return 0
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	want := (total*99 + 99) / 100
	var seen uint64
	for _, b := range bs {
		seen += b.n
		if seen >= want {
			return time.Duration(b.upper * float64(time.Second))
		}
	}
	return time.Duration(bs[len(bs)-1].upper * float64(time.Second))
}

// control answers operator requests on the gateway's control subject.
func (gw *Gateway) control(m *nats.Msg) {
	switch string(m.Data) {
	case "drain":
		gw.Drain()
	case "info":
	default:
		_ = m.Respond([]byte(`{"error":"unknown request"}`))
		return
	}
	b, _ := json.Marshal(gw.Info())
	_ = m.Respond(b)
}

// Drain marks the gateway draining — the registry says so at once and
// /readyz fails, so locators and load balancers stop sending devices — then
// sends GOAWAY to its devices in paced batches (DrainBatch every
// DrainInterval, with jitter, and a reconnect delay in the GOAWAY), so they
// reconnect elsewhere over time instead of all at once. New CONNECTs get
// GOAWAY. Drained is closed when no device is left or DrainTimeout passed.
func (gw *Gateway) Drain() {
	if gw.stopping.Load() || !gw.ops.draining.CompareAndSwap(false, true) {
		return // stopping sends everyone away already
	}
	gw.log.Info("draining", "connections", gw.conns.len())
	gw.refresh()
	gw.spawn(gw.drainLoop)
}

func (gw *Gateway) drainLoop() {
	defer close(gw.ops.drained)
	deadline := time.Now().Add(gw.cfg.DrainTimeout)
	interval := gw.cfg.DrainInterval
	delay := uint32(interval / time.Millisecond)
	for {
		conns := gw.conns.snapshot()
		if len(conns) == 0 {
			gw.log.Info("drained")
			return
		}
		if time.Now().After(deadline) {
			gw.log.Warn("drain timed out; closing the devices left", "connections", len(conns))
			for _, c := range conns {
				c.goAwayAfter(wire.CodeShutdown, "gateway draining", delay)
			}
			return
		}
		for i, c := range conns {
			if i >= gw.cfg.DrainBatch {
				break
			}
			c.goAwayAfter(wire.CodeShutdown, "gateway draining", delay)
			gw.m.drained.Inc()
		}
		select {
		case <-time.After(interval + mrand.N(interval)):
		case <-gw.ctx.Done():
			return
		}
	}
}

// onReplay follows the replays bucket: an order for a device connected
// here is carried out at once (or as soon as its catch-up ends); others
// wait for the device's CONNECT. A new order for the same device replaces
// one still waiting for its ACK (and is carried out again).
func (gw *Gateway) onReplay(key string, r *offline.Replay) {
	gw.ops.replayMu.Lock()
	if r == nil {
		delete(gw.ops.replays, key)
	} else {
		if gw.ops.replays == nil {
			gw.ops.replays = map[string]pendingReplay{}
		}
		gw.ops.replays[key] = pendingReplay{r: *r}
	}
	gw.ops.replayCount.Store(int32(len(gw.ops.replays)))
	gw.ops.replayMu.Unlock()
	if r != nil {
		gw.tryReplay(key)
	}
}

func (gw *Gateway) retryReplays() {
	gw.ops.replayMu.Lock()
	keys := make([]string, 0, len(gw.ops.replays))
	for k, p := range gw.ops.replays {
		if p.on == nil {
			keys = append(keys, k)
		}
	}
	gw.ops.replayMu.Unlock()
	for _, k := range keys {
		gw.tryReplay(k)
	}
}

// tryReplay carries out the order for key if its device is connected here
// and not catching up.
func (gw *Gateway) tryReplay(key string) {
	c, ok := gw.conns.get(key)
	if !ok {
		return
	}
	if r, ok := gw.takeReplay(key, c, func(r offline.Replay) bool { return c.replay(r.From) }); ok {
		gw.replaySent(r)
	}
}

// takeReplay marks the order for key as carried out on c when apply (run
// under the lock, so an order is carried out once per connection) returns
// true. An order already carried out on a live connection is left alone.
func (gw *Gateway) takeReplay(key string, c *conn, apply func(offline.Replay) bool) (offline.Replay, bool) {
	if gw.ops.replayCount.Load() == 0 {
		return offline.Replay{}, false
	}
	gw.ops.replayMu.Lock()
	defer gw.ops.replayMu.Unlock()
	p, ok := gw.ops.replays[key]
	if !ok || p.on != nil || !apply(p.r) {
		return p.r, false
	}
	p.on = c
	gw.ops.replays[key] = p
	return p.r, true
}

// releaseReplay makes an order carried out on c wait for the device again:
// c ended before the device acknowledged anything from the order's From.
func (gw *Gateway) releaseReplay(key string, c *conn) {
	if gw.ops.replayCount.Load() == 0 {
		return
	}
	gw.ops.replayMu.Lock()
	defer gw.ops.replayMu.Unlock()
	if p, ok := gw.ops.replays[key]; ok && p.on == c {
		p.on = nil
		gw.ops.replays[key] = p
	}
}

func (gw *Gateway) replaySent(r offline.Replay) {
	gw.log.Info("replay sent", "app", r.App, "user", r.User, "device", r.Device, "from", r.From)
}

// replayAcked runs for an ACK of seq on c's user channel s while a replay
// waits there: from From on, the order is done and leaves the bucket
// (unless a newer order for the device came meanwhile). s.replayWait is
// cleared under replayMu, so a newer order carried out meanwhile (which
// sets it under the same lock) is never mistaken for this one.
func (gw *Gateway) replayAcked(c *conn, s *sub, seq uint64) {
	gw.ops.replayMu.Lock()
	p, ok := gw.ops.replays[c.key]
	switch {
	case ok && p.on != c:
		gw.ops.replayMu.Unlock()
		return // a newer order, not yet carried out here
	case ok && seq < p.r.From:
		gw.ops.replayMu.Unlock()
		return // not there yet
	case ok:
		delete(gw.ops.replays, c.key)
		gw.ops.replayCount.Store(int32(len(gw.ops.replays)))
	}
	c.mu.Lock()
	s.replayWait = false
	c.mu.Unlock()
	gw.ops.replayMu.Unlock()
	if !ok {
		return // done elsewhere (the bucket's delete came first)
	}
	gw.m.replays.Inc()
	gw.log.Info("replay carried out", "app", p.r.App, "user", p.r.User, "device", p.r.Device, "from", p.r.From)
	go func() {
		ctx, cancel := context.WithTimeout(gw.ctx, 5*time.Second)
		defer cancel()
		if err := gw.store.DoneReplay(ctx, c.key, p.r.Rev); err != nil {
			gw.log.Warn("cannot mark a replay done", "err", err)
		}
	}()
}

// replay rewinds the device's user channel to from: RESYNC, then the
// catch-up sends the stored messages from there. It returns false to be
// tried again later (a catch-up or a SYNC is in progress: rewinding under
// it could skip messages).
func (c *conn) replay(from uint64) bool {
	c.mu.Lock()
	if c.closed || c.state != stateReady || len(c.subs) == 0 || c.subs[slotUser] == nil {
		c.mu.Unlock()
		return false
	}
	s := c.subs[slotUser]
	if s.syncing || s.syncMax > 0 || s.notify {
		c.mu.Unlock()
		return false
	}
	if s.sent < from {
		s.replayWait = true // done once it gets there
		c.mu.Unlock()
		return true // it has not got there yet: nothing to send again
	}
	s.sent = from - 1
	s.syncing = true
	s.replayWait = true
	var buf [32]byte
	c.appendLocked((&wire.Resync{Slot: slotUser, From: from}).Append(buf[:0]))
	c.mu.Unlock()
	c.gw.m.frameOut(wire.TypeResync)
	c.gw.queueCatchup(s)
	c.schedule(evFlush)
	return true
}

// handleProbe answers PROBE before CONNECT: at once while the gateway's
// load is under probe_threshold, later in proportion to the excess (up to
// probe_max_delay at full load), so that a device probing several gateways
// keeps an idle one.
func (c *conn) handleProbe(body []byte) bool {
	var p wire.Probe
	if err := p.Decode(body); err != nil {
		c.fail(wire.CodeMalformed, "malformed PROBE")
		return false
	}
	gw := c.gw
	load := float64(gw.conns.len()) / float64(gw.cfg.Capacity)
	reply := (&wire.ProbeReply{Nonce: p.Nonce, Load: uint32(min(load*1000, 1e9)), ID: []byte(gw.ops.id)}).Append(nil)
	thr := gw.cfg.ProbeThreshold
	if gw.ops.draining.Load() {
		load = 1 // a draining gateway is the last choice
	}
	if load <= thr {
		c.send(reply, wire.TypeProbeReply)
		return true
	}
	excess := min((load-thr)/(1-thr), 1)
	delay := time.Duration(excess * float64(gw.cfg.ProbeMaxDelay))
	gw.m.probesDelayed.Inc()
	time.AfterFunc(delay, func() { c.send(reply, wire.TypeProbeReply) })
	return true
}
