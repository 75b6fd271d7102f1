// Package gateway is herald's access layer: it holds device connections on an
// epoll netpoll (mailru/easygo) with no goroutine per connection,
// authenticates CONNECT, subscribes once per channel any local device listens
// on, fans live messages out to per-connection output buffers, catches
// devices up from the store, and records their acknowledgements as cursors.
//
// A gateway keeps nothing that cannot be rebuilt: it may die at any moment and
// its devices reconnect elsewhere and resume from their cursors.
//
// Lock ordering (never take an earlier lock while holding a later one):
//
//	shardedMap shard lock  →  channel.mu  →  conn.mu  →  wheel.mu
//	Gateway.revMu, opsState.replayMu  →  conn.mu
//	Gateway.dirtyMu is a leaf taken alone.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/mailru/easygo/netpoll"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/config"
	hnats "herald/nats"
	"herald/offline"
	"herald/wire"
)

// Deps are the gateway's connections to the rest of herald.
type Deps struct {
	NC    *nats.Conn
	Store *offline.Store
	Apps  *offline.Apps
	Log   *slog.Logger
	// Version is written to the registry (herald ctl gateways).
	Version string
}

// Gateway serves devices on one listener.
type Gateway struct {
	cfg   config.Gateway
	nc    *nats.Conn
	store *offline.Store
	apps  *offline.Apps
	log   *slog.Logger
	m     *gwMetrics

	ln   net.Listener
	wsln net.Listener // nil without WebSocket
	ep   *netpoll.Epoll
	// leaderSub receives the stream's leader advisories, pulseSub its
	// pulses, routesSub the NATS nodes' new routes (addNATSHandlers);
	// pulseSeq is the last pulse seen (0: none since the last re-sync of
	// every channel); routesDue is set while a re-sync for new routes waits.
	leaderSub *nats.Subscription
	pulseSub  *nats.Subscription
	routesSub *nats.Subscription
	pulseSeq  atomic.Uint64
	routesDue atomic.Bool
	work      chan *conn
	catchup   chan *sub
	shared    chan *sub // catch-ups for the shared scanner (storms)
	ups       chan upWait
	live      []chan *nats.Msg
	wheel     *wheel

	chans   *shardedMap[*channel] // "<app>.<channel>" → channel
	conns   *shardedMap[*conn]    // "<app>.<user>.<device>" → its connection
	pending sync.Map              // *conn → its WebSocket Origin or struct{}: accepted, CONNECT not yet done
	ips     *ipLimiter            // nil: no per-address limit
	tls     *tls.Config           // nil: plain TCP
	ops     opsState              // registry, drain, replays (ops.go)
	acks    ackSampler            // ACK latency samples (acklat.go)

	dirtyMu  sync.Mutex
	dirty    []*sub // subs whose acked cursor is ahead of KV
	flushNow chan struct{}
	// revMu guards revs: the KV revision of each cursor this gateway
	// wrote last, for the next write's compare-and-set (cursors.go);
	// only subs that acknowledged something are in it.
	revMu sync.Mutex
	revs  map[*sub]uint64

	outPending atomic.Int64 // bytes queued for devices, all connections
	outFrames  atomic.Int64 // frames queued for devices, all connections
	heldBytes  atomic.Int64 // live frames held by syncing subs (maxHeldBytes)
	storming   atomic.Bool  // the shared scanner is serving a storm
	stopping   atomic.Bool
	quit       chan struct{} // closed first by Stop: the accept loops leave
	acceptWG   sync.WaitGroup
	bridges    sync.WaitGroup // TLS connections (tls.go)
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// liveShards is the number of goroutines that read live messages. Each
// channel always maps to the same shard, so its messages stay in order.
const liveShards = 4

// New prepares a gateway; Start opens its listener.
func New(cfg config.Gateway, d Deps) *Gateway {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	gw := &Gateway{
		cfg: cfg, nc: d.NC, store: d.Store, apps: d.Apps, log: d.Log.With("component", "gateway"),
		work:     make(chan *conn, 1<<16),
		catchup:  make(chan *sub, 1<<16),
		shared:   make(chan *sub, 1<<16),
		ups:      make(chan upWait, maxUpInFlight),
		wheel:    newWheel(),
		chans:    newShardedMap[*channel](),
		conns:    newShardedMap[*conn](),
		flushNow: make(chan struct{}, 1),
		revs:     map[*sub]uint64{},
		quit:     make(chan struct{}),
		ips:      newIPLimiter(cfg.MaxConnsPerIP),
	}
	gw.ops.id, gw.ops.version, gw.ops.started = cfg.ID, d.Version, time.Now().UTC()
	if gw.ops.id == "" {
		gw.ops.id = defaultID()
	}
	if gw.ops.version == "" {
		gw.ops.version = "dev"
	}
	gw.ops.drained = make(chan struct{})
	for i := 0; i < liveShards; i++ {
		gw.live = append(gw.live, make(chan *nats.Msg, 1<<16))
	}
	gw.m = newMetrics(gw)
	gw.ctx, gw.cancel = context.WithCancel(context.Background())
	return gw
}

// Metrics returns the gateway's metrics set (written at /metrics).
func (gw *Gateway) Metrics() *metrics.Set { return gw.m.set }

// Addr is the listener's address once started.
func (gw *Gateway) Addr() net.Addr { return gw.ln.Addr() }

// WSAddr is the WebSocket listener's address, nil without one.
func (gw *Gateway) WSAddr() net.Addr {
	if gw.wsln == nil {
		return nil
	}
	return gw.wsln.Addr()
}

// Connections is the number of authenticated devices.
func (gw *Gateway) Connections() int { return gw.conns.len() }

// Start opens the listener and starts the gateway's goroutines: the accept
// loop, the epoll loop, the worker pool, the catch-up pool, the live readers,
// the timing wheel and the cursor flusher — a fixed number, whatever the
// number of connections.
func (gw *Gateway) Start() (err error) {
	// What is opened is closed again, in reverse, if a later step fails.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if gw.cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(gw.cfg.TLS.Cert, gw.cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("gateway: gateway.tls: %w", err)
		}
		gw.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := listen(gw.cfg.Listen, gw.cfg.ReusePort)
	if err != nil {
		return fmt.Errorf("gateway: cannot listen on %s: %w", gw.cfg.Listen, err)
	}
	undo = append(undo, func() { ln.Close() })
	var wsln net.Listener
	if gw.cfg.WSListen != "" {
		if wsln, err = listen(gw.cfg.WSListen, gw.cfg.ReusePort); err != nil {
			return fmt.Errorf("gateway: cannot listen for WebSocket on %s: %w", gw.cfg.WSListen, err)
		}
		undo = append(undo, func() { wsln.Close() })
	}
	ep, err := netpoll.EpollCreate(&netpoll.EpollConfig{OnWaitError: func(err error) {
		gw.log.Error("epoll wait failed", "err", err)
	}})
	if err != nil {
		return fmt.Errorf("gateway: cannot create epoll: %w", err)
	}
	undo = append(undo, func() { ep.Close() })
	if err = gw.addNATSHandlers(); err != nil {
		return err
	}
	undo = append(undo, func() {
		_ = gw.leaderSub.Unsubscribe()
		_ = gw.pulseSub.Unsubscribe()
		_ = gw.routesSub.Unsubscribe()
	})
	recalls, err := gw.store.WatchRecalls(gw.ctx)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	gw.ln, gw.wsln, gw.ep = ln, wsln, ep
	gw.spawn(func() { gw.watchRecalls(recalls) })

	gw.spawn(func() { gw.wheel.run(gw.expire) })
	for i := 0; i < gw.cfg.Workers; i++ {
		gw.spawn(gw.worker)
	}
	for i := 0; i < gw.cfg.CatchupWorkers; i++ {
		gw.spawn(gw.catchupWorker)
	}
	gw.spawn(gw.sharedScanner)
	for _, ch := range gw.live {
		ch := ch
		gw.spawn(func() { gw.liveReader(ch) })
	}
	gw.spawn(gw.cursorFlusher)
	gw.spawn(gw.upAcker)
	if err := gw.startOps(); err != nil {
		gw.log.Warn("gateway operations unavailable (registry, drain, replay)", "err", err)
	}
	accept := gw.acceptLoop
	if gw.tls != nil {
		accept = gw.acceptTLS
	}
	gw.acceptWG.Add(1)
	go func() { defer gw.acceptWG.Done(); accept(ln, false) }()
	if wsln != nil {
		gw.acceptWG.Add(1)
		go func() { defer gw.acceptWG.Done(); accept(wsln, true) }()
		gw.log.Info("gateway listening for WebSocket", "addr", wsln.Addr().String(), "tls", gw.tls != nil)
	}
	gw.log.Info("gateway listening", "addr", ln.Addr().String(), "tls", gw.tls != nil)
	return nil
}

func (gw *Gateway) spawn(fn func()) {
	gw.wg.Add(1)
	go func() {
		defer gw.wg.Done()
		fn()
	}()
}

// addNATSHandlers makes the gateway re-sync every channel when NATS tells it
// messages may have been missed: after a reconnect, when one of its
// subscriptions overflowed (slow consumer), when the stream elected a new
// leader, when a pulse of the stream did not follow the last one, and when
// the NATS node it is connected to has a new route.
//
// Live copies are core NATS messages that only the stream's leader sends
// (nats-server republishes only as leader). When a leader dies, the copies
// still in its buffers are lost with it while the messages themselves are
// stored on the other replicas; when a route between the leader's node and
// the gateway's breaks, the copies on it are lost too. Gap detection
// (Nats-Last-Sequence) finds such a hole only when the next message on the
// channel comes; a channel's last message would wait for it, or for the
// device to reconnect. The new leader's advisory, or a pulse that shows
// pulses were lost on the same path (offline/pulse.go), makes every channel
// check the store instead.
func (gw *Gateway) addNATSHandlers() error {
	prevReconnect := gw.nc.Opts.ReconnectedCB
	gw.nc.SetReconnectHandler(func(nc *nats.Conn) {
		if prevReconnect != nil {
			prevReconnect(nc)
		}
		gw.pulseSeq.Store(0) // the pulses missed meanwhile need no second re-sync
		gw.resyncAll("nats reconnected")
		gw.settleAllLater()
	})
	prevErr := gw.nc.Opts.AsyncErrorCB
	gw.nc.SetErrorHandler(func(nc *nats.Conn, s *nats.Subscription, err error) {
		if prevErr != nil {
			prevErr(nc, s, err)
		}
		if errors.Is(err, nats.ErrSlowConsumer) && s != nil {
			gw.m.natsSlow.Inc()
			key, ok := offline.LiveKey(s.Subject)
			if ch, found := gw.chans.get(key); ok && found {
				ch.resync()
			}
		}
	})
	sub, err := gw.nc.Subscribe(offline.LeaderElectedSubject, func(*nats.Msg) {
		gw.m.leaderResyncs.Inc()
		gw.pulseSeq.Store(0)
		gw.resyncAll("stream leader elected")
	})
	if err != nil {
		return fmt.Errorf("gateway: cannot subscribe to the stream's leader advisories: %w", err)
	}
	pulses, err := gw.nc.Subscribe(offline.PulseLiveSubject, gw.onPulse)
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("gateway: cannot subscribe to the stream's pulse: %w", err)
	}
	routes, err := gw.nc.Subscribe(hnats.RoutesUpPrefix+">", gw.onRoutesUp)
	if err != nil {
		_ = sub.Unsubscribe()
		_ = pulses.Unsubscribe()
		return fmt.Errorf("gateway: cannot subscribe to the NATS nodes' route news: %w", err)
	}
	gw.leaderSub, gw.pulseSub, gw.routesSub = sub, pulses, routes
	return nil
}

// settleAllLater has every channel look at the store once more after
// settleDelay, when NATS is a cluster: subscriptions that nats.go made
// again, or that a route carries again, reach the stream's leader over
// routes after some of the reads of a re-sync (settle, channels.go).
func (gw *Gateway) settleAllLater() {
	if !gw.store.Replicated() {
		return
	}
	time.AfterFunc(settleDelay, func() {
		for _, ch := range gw.chans.snapshot() {
			gw.settle(ch, 0)
		}
	})
}

// routesResyncDelay gathers a node's announcements of new routes (a pool
// of route connections per peer, a route that flaps) into one re-sync.
const routesResyncDelay = 200 * time.Millisecond

// onRoutesUp re-syncs every channel when the NATS node the gateway is
// connected to says it has a new route connection (hnats.announceRoutes):
// a route of it broke, and the live copies that were to cross it meanwhile
// are lost, even when the break fell between two pulses. Copies reach the
// gateway over routes of its own node only, so other nodes' words are
// ignored (TestRoutesUpResyncsForItsOwnNode).
func (gw *Gateway) onRoutesUp(m *nats.Msg) {
	if strings.TrimPrefix(m.Subject, hnats.RoutesUpPrefix) != gw.nc.ConnectedServerName() {
		return
	}
	if !gw.routesDue.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(routesResyncDelay, func() {
		gw.routesDue.Store(false)
		if gw.stopping.Load() {
			return
		}
		gw.m.routeResyncs.Inc()
		gw.resyncAll("a route of its NATS node broke and is back")
		gw.settleAllLater()
	})
}

// onPulse re-syncs every channel when a pulse of the stream does not follow
// the last one seen: pulses were lost between the stream's leader and this
// gateway, and channels' live copies on the same path with them.
func (gw *Gateway) onPulse(m *nats.Msg) {
	p, err := offline.ParsePulse(m)
	if err != nil {
		gw.log.Warn("dropping a pulse without sequence headers", "err", err)
		return
	}
	gw.m.pulses.Inc()
	prev := gw.pulseSeq.Swap(p.Seq)
	if prev != 0 && p.Seq != prev && p.Last != prev {
		gw.m.pulseResyncs.Inc()
		gw.resyncAll("pulses of the stream were lost on their way")
	}
}

// watchRecalls sends REVOKE for every recall made while the gateway runs.
// The dispatcher's notice on the channel's live subject is the fast path,
// but a core NATS message: one sent while the gateway reconnects to NATS
// is lost. The recalls bucket's watch is an ordered consumer that resumes
// where it was; revoke sends each recall once, whichever comes first.
func (gw *Gateway) watchRecalls(w jetstream.KeyWatcher) {
	defer w.Stop()
	for {
		select {
		case <-gw.quit:
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // nil: the watch caught up (nothing before it with UpdatesOnly)
			}
			app, seq, channel, ok := offline.ParseRecall(e.Key(), e.Value())
			if !ok {
				gw.log.Warn("ignoring a malformed recall record", "key", e.Key())
				continue
			}
			if ch, found := gw.chans.get(offline.ChannelKey(app, channel)); found {
				gw.revoke(ch, seq)
			}
		}
	}
}

// worker serves connections whose socket is ready or that have output to
// write. A connection is in the queue at most once (conn.queued).
func (gw *Gateway) worker() {
	for c := range gw.work {
		if c == nil {
			return
		}
		c.process()
	}
}

// expire is the wheel's callback: close connections past their deadline.
func (gw *Gateway) expire(c *conn, now int64) (keep bool, deadline int64) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false, 0
	}
	if c.deadline > now {
		d := c.deadline
		c.mu.Unlock()
		return true, d
	}
	state := c.state
	c.mu.Unlock()
	switch state {
	case stateConnecting, stateUpgrading:
		c.fail(wire.CodeConnectTimeout, "no CONNECT in time")
	case stateClosing, stateLeaving:
		c.close(0)
	default:
		c.fail(wire.CodeIdleTimeout, "no frame within the heartbeat deadline")
	}
	return false, 0
}

// Stop stops accepting, tells every device to go away (GOAWAY, shutdown),
// writes the last cursors and waits for the gateway's goroutines.
func (gw *Gateway) Stop() {
	if !gw.stopping.CompareAndSwap(false, true) {
		return
	}
	close(gw.quit)
	gw.stopOps()
	gw.acceptWG.Wait()
	gw.ln.Close()
	if gw.wsln != nil {
		gw.wsln.Close()
	}
	for _, c := range gw.conns.snapshot() {
		c.goAway(wire.CodeShutdown, "gateway stopping")
	}
	gw.pending.Range(func(k, _ any) bool {
		k.(*conn).close(wire.CodeShutdown)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	gw.cancel() // the flusher stops; this last flush has its own deadline
	gw.flushCursors(ctx)
	cancel()
	_ = gw.leaderSub.Unsubscribe()
	_ = gw.pulseSub.Unsubscribe()
	_ = gw.routesSub.Unsubscribe()
	for _, ch := range gw.chans.snapshot() {
		ch.unsubscribe()
	}
	for i := 0; i < gw.cfg.Workers; i++ {
		gw.work <- nil
	}
	for i := 0; i < gw.cfg.CatchupWorkers; i++ {
		gw.catchup <- nil
	}
	gw.shared <- nil
	for _, ch := range gw.live {
		ch <- nil
	}
	gw.wheel.close()
	gw.bridges.Wait() // their sockets were closed above: the copies end
	gw.ep.Close()
	gw.wg.Wait()
	gw.log.Info("gateway stopped")
}
