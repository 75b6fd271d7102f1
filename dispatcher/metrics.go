package dispatcher

import (
	"fmt"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// dMetrics are the dispatcher's metrics, in its own Set.
type dMetrics struct {
	set          *metrics.Set
	published    *metrics.Counter
	dups         *metrics.Counter
	storeErr     *metrics.Counter
	scheduled    *metrics.Counter
	recalled     *metrics.Counter
	rateLimited  *metrics.Counter
	adminChanges *metrics.Counter

	mu       sync.RWMutex
	requests map[routeStatus]*metrics.Counter
	latency  map[string]*metrics.Histogram // route
}

func newMetrics() *dMetrics {
	s := metrics.NewSet()
	m := &dMetrics{
		set:          s,
		published:    s.NewCounter(`herald_dispatcher_messages_stored_total`),
		dups:         s.NewCounter(`herald_dispatcher_messages_duplicate_total`),
		storeErr:     s.NewCounter(`herald_dispatcher_errors_total{kind="store"}`),
		scheduled:    s.NewCounter(`herald_dispatcher_messages_scheduled_total`),
		recalled:     s.NewCounter(`herald_dispatcher_messages_recalled_total`),
		rateLimited:  s.NewCounter(`herald_dispatcher_limited_total{limit="publish_rate"}`),
		adminChanges: s.NewCounter(`herald_dispatcher_admin_changes_total`),
		requests:     map[routeStatus]*metrics.Counter{},
		latency:      map[string]*metrics.Histogram{},
	}
	s.NewGauge(`herald_up{component="dispatcher"}`, func() float64 { return 1 })
	return m
}

// addReadiness exports the dispatcher's readiness (what /readyz answers).
func (ds *Dispatcher) addReadiness() {
	ds.m.set.NewGauge(`herald_ready{component="dispatcher"}`, func() float64 {
		if ds.isReady() {
			return 1
		}
		return 0
	})
}

type routeStatus struct {
	route  string
	status int
}

// observe counts a request by route and status and records its latency.
// Routes and statuses are a small fixed set: after the first request of a
// kind this is two map reads under a read lock, no formatting.
func (m *dMetrics) observe(route string, status int, start time.Time) {
	key := routeStatus{route, status}
	m.mu.RLock()
	c, h := m.requests[key], m.latency[route]
	m.mu.RUnlock()
	if c == nil || h == nil {
		m.mu.Lock()
		if c = m.requests[key]; c == nil {
			c = m.set.NewCounter(fmt.Sprintf(`herald_http_requests_total{route=%q,status="%d"}`, route, status))
			m.requests[key] = c
		}
		if h = m.latency[route]; h == nil {
			h = m.set.NewHistogram(fmt.Sprintf(`herald_http_request_duration_seconds{route=%q}`, route))
			m.latency[route] = h
		}
		m.mu.Unlock()
	}
	c.Inc()
	h.UpdateDuration(start)
}
