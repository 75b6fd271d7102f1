package gateway

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"

	"herald/wire"
)

// gwMetrics are created once per gateway in its own Set, never looked up per
// frame, so several gateways can live in one process (tests) without clashing.
type gwMetrics struct {
	set *metrics.Set

	connects       *metrics.Counter
	disconnects    map[wire.Code]*metrics.Counter
	disconnectsEOF *metrics.Counter
	authFailures   map[wire.Code]*metrics.Counter
	framesIn       [32]*metrics.Counter
	framesOut      [32]*metrics.Counter
	slowConsumers  *metrics.Counter
	natsSlow       *metrics.Counter
	leaderResyncs  *metrics.Counter
	pulses         *metrics.Counter
	pulseResyncs   *metrics.Counter
	routeResyncs   *metrics.Counter
	settles        *metrics.Counter
	catchupMsgs    *metrics.Counter
	catchupRuns    *metrics.Counter
	handbacks      *metrics.Counter // shared scan → one by one
	earlyWrites    *metrics.Counter // shared scan: a large backlog sent to be written at once
	liveMsgs       *metrics.Counter
	staleAcks      *metrics.Counter
	cursorWrites   *metrics.Counter
	cursorErrors   *metrics.Counter
	storeErrors    *metrics.Counter
	deliveryLat    *metrics.Histogram
	wsRejected     *metrics.Counter
	acceptErrors   *metrics.Counter
	socketWrites   *metrics.Counter
	sharedScans    *metrics.Counter
	notifies       *metrics.Counter
	revokes        *metrics.Counter
	upStored       *metrics.Counter
	upDuplicates   *metrics.Counter
	upErrors       *metrics.Counter
	subRefused     *metrics.Counter
	catchupGap     *metrics.Counter
	catchupResume  *metrics.Counter
	catchupResync  *metrics.Counter
	heldSent       *metrics.Counter
	rateLimited    *metrics.Counter
	ipRefused      *metrics.Counter
	topicLimit     *metrics.Counter
	deviceLimit    *metrics.Counter
	tlsFailures    *metrics.Counter
	drained        *metrics.Counter
	replays        *metrics.Counter
	ackLat         *metrics.Histogram
	probesDelayed  *metrics.Counter
}

func newMetrics(gw *Gateway) *gwMetrics {
	s := metrics.NewSet()
	m := &gwMetrics{
		set:            s,
		connects:       s.NewCounter(`herald_gateway_connects_total`),
		disconnects:    map[wire.Code]*metrics.Counter{},
		disconnectsEOF: s.NewCounter(`herald_gateway_disconnects_total{reason="peer_closed"}`),
		authFailures:   map[wire.Code]*metrics.Counter{},
		slowConsumers:  s.NewCounter(`herald_gateway_slow_consumers_total`),
		natsSlow:       s.NewCounter(`herald_gateway_nats_slow_consumer_total`),
		leaderResyncs:  s.NewCounter(`herald_gateway_stream_leader_resyncs_total`),
		pulses:         s.NewCounter(`herald_gateway_stream_pulses_total`),
		pulseResyncs:   s.NewCounter(`herald_gateway_stream_pulse_resyncs_total`),
		routeResyncs:   s.NewCounter(`herald_gateway_route_resyncs_total`),
		settles:        s.NewCounter(`herald_gateway_channel_settle_checks_total`),
		catchupMsgs:    s.NewCounter(`herald_gateway_catchup_messages_total`),
		catchupRuns:    s.NewCounter(`herald_gateway_catchup_runs_total`),
		handbacks:      s.NewCounter(`herald_gateway_catchup_handbacks_total`),
		earlyWrites:    s.NewCounter(`herald_gateway_catchup_early_writes_total`),
		liveMsgs:       s.NewCounter(`herald_gateway_live_messages_total`),
		staleAcks:      s.NewCounter(`herald_gateway_stale_acks_total`),
		cursorWrites:   s.NewCounter(`herald_gateway_cursor_writes_total`),
		cursorErrors:   s.NewCounter(`herald_gateway_errors_total{kind="cursor_write"}`),
		storeErrors:    s.NewCounter(`herald_gateway_errors_total{kind="store_read"}`),
		deliveryLat:    s.NewHistogram(`herald_gateway_delivery_latency_seconds`),
		wsRejected:     s.NewCounter(`herald_gateway_errors_total{kind="websocket_upgrade"}`),
		acceptErrors:   s.NewCounter(`herald_gateway_errors_total{kind="accept"}`),
		socketWrites:   s.NewCounter(`herald_gateway_socket_writes_total`),
		sharedScans:    s.NewCounter(`herald_gateway_catchup_shared_scans_total`),
		notifies:       s.NewCounter(`herald_gateway_notifies_total`),
		revokes:        s.NewCounter(`herald_gateway_revokes_total`),
		upStored:       s.NewCounter(`herald_gateway_upstream_total{result="stored"}`),
		upDuplicates:   s.NewCounter(`herald_gateway_upstream_total{result="duplicate"}`),
		upErrors:       s.NewCounter(`herald_gateway_upstream_total{result="error"}`),
		subRefused:     s.NewCounter(`herald_gateway_subscriptions_refused_total`),
		catchupGap:     s.NewCounter(`herald_gateway_catchups_started_total{cause="gap"}`),
		catchupResume:  s.NewCounter(`herald_gateway_catchups_started_total{cause="resume"}`),
		catchupResync:  s.NewCounter(`herald_gateway_catchups_started_total{cause="resync"}`),
		heldSent:       s.NewCounter(`herald_gateway_held_messages_sent_total`),
		rateLimited:    s.NewCounter(`herald_gateway_limited_total{limit="frame_rate"}`),
		ipRefused:      s.NewCounter(`herald_gateway_limited_total{limit="conns_per_ip"}`),
		topicLimit:     s.NewCounter(`herald_gateway_limited_total{limit="max_topics"}`),
		deviceLimit:    s.NewCounter(`herald_gateway_limited_total{limit="max_devices"}`),
		tlsFailures:    s.NewCounter(`herald_gateway_errors_total{kind="tls_handshake"}`),
		drained:        s.NewCounter(`herald_gateway_drained_total`),
		replays:        s.NewCounter(`herald_gateway_replays_total`),
		ackLat:         s.NewHistogram(`herald_gateway_ack_latency_seconds`),
		probesDelayed:  s.NewCounter(`herald_gateway_probes_delayed_total`),
	}
	for _, c := range wire.Codes() {
		m.disconnects[c] = s.NewCounter(fmt.Sprintf(`herald_gateway_disconnects_total{reason=%q}`, c.String()))
		if c.Auth() {
			m.authFailures[c] = s.NewCounter(fmt.Sprintf(`herald_gateway_auth_failures_total{reason=%q}`, c.String()))
		}
	}
	for t := wire.Type(1); t < 32; t++ {
		if t.Known() {
			m.framesIn[t] = s.NewCounter(fmt.Sprintf(`herald_gateway_frames_in_total{type=%q}`, t.String()))
			m.framesOut[t] = s.NewCounter(fmt.Sprintf(`herald_gateway_frames_out_total{type=%q}`, t.String()))
		}
	}
	s.NewGauge(`herald_gateway_connections`, func() float64 { return float64(gw.conns.len()) })
	s.NewGauge(`herald_gateway_nats_subscriptions`, func() float64 { return float64(gw.chans.len()) })
	s.NewGauge(`herald_gateway_outbound_bytes_pending`, func() float64 { return float64(gw.outPending.Load()) })
	s.NewGauge(`herald_gateway_held_bytes`, func() float64 { return float64(gw.heldBytes.Load()) })
	s.NewGauge(`herald_gateway_outbound_frames_pending`, func() float64 { return float64(gw.outFrames.Load()) })
	s.NewGauge(`herald_gateway_inbound_queue{queue="readiness"}`, func() float64 { return float64(len(gw.work)) })
	s.NewGauge(`herald_gateway_inbound_queue{queue="live"}`, func() float64 {
		n := 0
		for _, ch := range gw.live {
			n += len(ch)
		}
		return float64(n)
	})
	s.NewGauge(`herald_gateway_catchup_backlog`, func() float64 { return float64(len(gw.catchup) + len(gw.shared)) })
	s.NewGauge(`herald_up{component="gateway"}`, func() float64 { return 1 })
	s.NewGauge(`herald_ready{component="gateway"}`, func() float64 {
		if gw.stopping.Load() || gw.ops.draining.Load() || !gw.nc.IsConnected() {
			return 0
		}
		return 1
	})
	s.NewGauge(`herald_gateway_draining`, func() float64 {
		if gw.ops.draining.Load() {
			return 1
		}
		return 0
	})
	return m
}

func (m *gwMetrics) frameIn(t wire.Type) {
	if int(t) < len(m.framesIn) && m.framesIn[t] != nil {
		m.framesIn[t].Inc()
	}
}

func (m *gwMetrics) frameOut(t wire.Type) {
	if int(t) < len(m.framesOut) && m.framesOut[t] != nil {
		m.framesOut[t].Inc()
	}
}
