package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"herald/client"
)

// UnicastConfig configures the unicast scenario: Devices devices (one user
// each) on the gateways, Publishers goroutines POSTing to random users
// through the HTTP API at Rate messages/s in all (0: as fast as they can)
// for Duration, PerRequest users per request.
type UnicastConfig struct {
	API, Key, App, Secret string
	Gateways              []string
	Sources               []string
	Devices               int
	Publishers            int
	Rate                  int
	Duration              time.Duration
	PerRequest            int
	Payload               int // bytes of padding after the timestamp
	Users                 string
	Progress              io.Writer
	AckDelay              time.Duration // the devices' client.Config.AckDelay
	// InFlight is, at a fixed Rate, how many requests each publisher may
	// have unanswered at once: each request goes out when it is due, as
	// from many independent backends, unless InFlight are outstanding
	// (1: the next waits for the answer before). As fast as they can, each
	// publisher has one at a time. 0 is 1; at most MaxInFlight.
	InFlight int
	// AdminKey, if set, lets the bench confirm through the admin API that
	// every device's server cursor reached the last message it received.
	AdminKey string
	// Metrics, if set, are the gateways' /metrics URLs: the report then
	// has the gateways' own latency, stored → queued for the device.
	Metrics []string
}

// MaxInFlight bounds UnicastConfig.InFlight: each request in flight may
// hold a connection to the API.
const MaxInFlight = 256

// CheckInFlight says whether n requests in flight per publisher is in
// 1..MaxInFlight. RunUnicast lets a zero InFlight through as 1 (a zero
// UnicastConfig); the command line, where 0 is typed, checks every value.
func CheckInFlight(n int) error {
	if n < 1 || n > MaxInFlight {
		return fmt.Errorf("bench: --in-flight %d is not between 1 and %d", n, MaxInFlight)
	}
	return nil
}

// The servers' own latency histograms the unicast report reads: the
// gateway's of live messages from stored in JetStream to queued on the
// device's connection, and the API's of handling a push (request read →
// 200 written, every message stored), each with a metric that marks the
// node's page.
const (
	deliveryLatency = "herald_gateway_delivery_latency_seconds"
	gatewayMark     = "herald_gateway_connections"
	pushLatency     = `herald_http_request_duration_seconds{route="push"}`
	dispatcherMark  = `herald_up{component="dispatcher"}`
)

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Mean: h.Mean() / 1000}
}

// Second is one second of a run, for the latency-over-time chart.
type Second struct {
	T         int     `json:"t"`
	Delivered int64   `json:"delivered"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
}

// UnicastResult is the unicast report.
type UnicastResult struct {
	Devices         int     `json:"devices"`
	Seconds         float64 `json:"seconds"`
	Requests        int64   `json:"requests"`
	Accepted        int64   `json:"accepted"`
	Errors          int64   `json:"errors"`
	Delivered       int64   `json:"delivered"`
	Duplicates      int64   `json:"duplicates_or_reordered"`
	Earlier         int64   `json:"earlier_messages_ignored"` // received but stamped before this run: see pool
	Lost            int64   `json:"lost"`
	AcceptedPerSec  float64 `json:"accepted_per_second"`
	DeliveredPerSec float64 `json:"delivered_per_second"`
	Latency         Latency `json:"latency"`
	// PublishLatency is per request, from when it was due (at a fixed
	// rate) or sent to its 200: every message of it stored.
	PublishLatency Latency `json:"publish_latency"`
	// ServerLatency is the API's own histogram of handling a push over
	// the run: request read → 200 written, ±7%.
	ServerLatency *Latency `json:"server_push_latency,omitempty"`
	ServerError   string   `json:"server_push_latency_error,omitempty"`
	// GatewayLatency is the gateways' own histogram over the run (with
	// Metrics): stored → queued for the device's socket, ±7%.
	GatewayLatency *Latency `json:"gateway_latency,omitempty"`
	GatewayError   string   `json:"gateway_latency_error,omitempty"`
	Timeline       []Second `json:"timeline"`
	FirstError     string   `json:"first_error,omitempty"`
	// AckChecked says the server cursors were asked; AckedDevices is how
	// many devices' cursors were at their last received message.
	AckChecked   bool   `json:"ack_checked"`
	AckedDevices int    `json:"acked_devices"`
	AckError     string `json:"ack_error,omitempty"`
}

// recorder collects end-to-end latencies, overall and per second.
type recorder struct {
	mu      sync.Mutex
	start   time.Time
	lastAt  time.Time // the latest receipt
	all     *hdrhistogram.Histogram
	seconds []*hdrhistogram.Histogram
}

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, all: hdrhistogram.New(1, 60_000_000, 3)}
}

func (r *recorder) record(sent, now time.Time) {
	us := now.Sub(sent).Microseconds()
	if us < 1 {
		us = 1
	}
	sec := int(now.Sub(r.start) / time.Second)
	r.mu.Lock()
	if now.After(r.lastAt) {
		r.lastAt = now
	}
	_ = r.all.RecordValue(us)
	for len(r.seconds) <= sec {
		r.seconds = append(r.seconds, hdrhistogram.New(1, 60_000_000, 2))
	}
	_ = r.seconds[sec].RecordValue(us)
	r.mu.Unlock()
}

func (r *recorder) timeline() []Second {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Second, len(r.seconds))
	for i, h := range r.seconds {
		out[i] = Second{T: i, Delivered: h.TotalCount(), P50: float64(h.ValueAtQuantile(50)) / 1000, P99: float64(h.ValueAtQuantile(99)) / 1000}
	}
	return out
}

// RunUnicast runs the unicast scenario.
func RunUnicast(cfg UnicastConfig) (*UnicastResult, error) {
	if err := checkLoopback(append(append(append([]string{cfg.API}, cfg.Gateways...), cfg.Sources...), cfg.Metrics...)...); err != nil {
		return nil, err
	}
	if cfg.Devices <= 0 || cfg.Publishers <= 0 || cfg.PerRequest <= 0 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("bench: --devices, --publishers, --per-request and --duration must be > 0")
	}
	if cfg.PerRequest > cfg.Devices {
		return nil, fmt.Errorf("bench: --per-request %d is more than --devices %d (each request names distinct users)", cfg.PerRequest, cfg.Devices)
	}
	if cfg.InFlight != 0 {
		if err := CheckInFlight(cfg.InFlight); err != nil {
			return nil, err
		}
	}
	if cfg.Users == "" {
		cfg.Users = "uni"
	}
	if cfg.InFlight < 1 || cfg.Rate <= 0 {
		cfg.InFlight = 1
	}
	pub, err := newPublisher(cfg.API, cfg.App, cfg.Key, cfg.Publishers*cfg.InFlight)
	if err != nil {
		return nil, err
	}
	var rec *recorder
	var recMu sync.RWMutex
	p, err := readyPool(poolConfig{Devices: cfg.Devices, Gateways: cfg.Gateways, Sources: cfg.Sources, App: cfg.App, Secret: cfg.Secret, Users: cfg.Users + "-", AckDelay: cfg.AckDelay,
		OnMsg: func(_ *device, m client.Message) {
			recMu.RLock()
			r := rec
			recMu.RUnlock()
			if sent, ok := sentAt(m.Data); ok && r != nil {
				r.record(sent, time.Now())
			}
		}}, 1, cfg.API, cfg.Progress)
	if err != nil {
		return nil, err
	}
	defer p.stop()

	res := &UnicastResult{Devices: cfg.Devices}
	serverStage := newStage([]string{strings.TrimSuffix(cfg.API, "/") + "/metrics"}, pushLatency, dispatcherMark)
	gatewayStage := newStage(cfg.Metrics, deliveryLatency, gatewayMark)
	start := time.Now()
	recMu.Lock()
	rec = newRecorder(start)
	recMu.Unlock()
	end := start.Add(cfg.Duration)
	var requests, accepted, errs atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	pubLat := make([]*hdrhistogram.Histogram, cfg.Publishers)
	perPub := 0.0
	if cfg.Rate > 0 {
		perPub = float64(cfg.Rate) / float64(cfg.Publishers) / float64(cfg.PerRequest) // requests/s per publisher
	}
	for w := 0; w < cfg.Publishers; w++ {
		wg.Add(1)
		lat := hdrhistogram.New(1, 60_000_000, 3)
		pubLat[w] = lat
		// Publisher w runs w/Publishers of an interval behind the first,
		// so the requests of a fixed rate arrive spread over each interval
		// instead of all at its start (which would turn 20,000/s into one
		// burst of Publishers requests per interval).
		pc := pacing{First: start, End: end, InFlight: cfg.InFlight}
		if perPub > 0 {
			pc.Interval = time.Duration(float64(time.Second) / perPub)
			pc.First = start.Add(pc.Interval * time.Duration(w) / time.Duration(cfg.Publishers))
		}
		go func() {
			defer wg.Done()
			users := make([]string, cfg.PerRequest)
			order := make([]int, len(p.devices))
			for i := range order {
				order[i] = i
			}
			build := func(dst []byte, due time.Time) []byte {
				// Distinct users (the API stores a repeated user once), so
				// --rate and --per-request count messages exactly.
				for i := range users {
					j := i + rand.IntN(len(order)-i)
					order[i], order[j] = order[j], order[i]
					users[i] = p.devices[order[i]].user
				}
				return stampedBody(dst, users, cfg.Payload, due)
			}
			pc.run(build, pub.push, func(n int, err error, latency time.Duration) {
				requests.Add(1)
				if err != nil {
					errs.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					return
				}
				accepted.Add(int64(n))
				_ = lat.RecordValue(max(latency.Microseconds(), 1))
			})
		}()
	}
	// Progress while publishing.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			if cfg.Progress != nil {
				got, _ := p.totals()
				el := time.Since(start).Seconds()
				fmt.Fprintf(cfg.Progress, "\runicast: %s %.0fs accepted %d (%.0f/s) delivered %d (%.0f/s)   ",
					bar(int(el), int(cfg.Duration.Seconds()), 30), el, accepted.Load(), float64(accepted.Load())/el, got, float64(got)/el)
			}
		}
	}
	pubSeconds := time.Since(start).Seconds()
	// Let the last deliveries land, then count what is missing.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if got, _ := p.totals(); got >= accepted.Load() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	got, dups := p.totals()
	res.ServerLatency, res.ServerError = serverStage.finish()
	res.GatewayLatency, res.GatewayError = gatewayStage.finish()
	if cfg.AdminKey != "" {
		// The gateway writes cursors once per cursor_flush (1 s by default);
		// the devices may hold their ACK for AckDelay.
		res.AckChecked = true
		n, err := ackCheck(pub.hc, cfg.AdminKey, cfg.App, p.devices, 10*time.Second+cfg.AckDelay)
		res.AckedDevices = n
		if err != nil {
			res.AckError = err.Error()
		}
	}
	res.Seconds = pubSeconds
	res.Requests, res.Accepted, res.Errors = requests.Load(), accepted.Load(), errs.Load()
	res.Delivered, res.Duplicates, res.Earlier = got, dups, p.earlier.Load()
	res.Lost = res.Accepted - res.Delivered
	if res.Lost < 0 {
		res.Lost = 0
	}
	res.AcceptedPerSec = float64(res.Accepted) / pubSeconds
	res.DeliveredPerSec = float64(res.Delivered) / pubSeconds
	recMu.RLock()
	res.Latency = summarize(rec.all)
	res.Timeline = rec.timeline()
	recMu.RUnlock()
	for _, h := range pubLat[1:] {
		pubLat[0].Merge(h)
	}
	res.PublishLatency = summarize(pubLat[0])
	if e := firstErr.Load(); e != nil {
		res.FirstError = *e
	}
	return res, nil
}

// Table prints the unicast report.
func (r *UnicastResult) Table(w io.Writer) {
	fmt.Fprintf(w, "devices: %d; published for %.1fs: %d requests, %d errors\n", r.Devices, r.Seconds, r.Requests, r.Errors)
	fmt.Fprintf(w, "accepted (stored): %d, %.0f/s\n", r.Accepted, r.AcceptedPerSec)
	fmt.Fprintf(w, "delivered: %d, %.0f/s; lost %d; duplicates or reordered %d\n", r.Delivered, r.DeliveredPerSec, r.Lost, r.Duplicates)
	printEarlier(w, r.Earlier)
	switch {
	case !r.AckChecked:
		fmt.Fprintf(w, "acknowledged: not checked (no --admin-key)\n")
	case r.AckError != "":
		fmt.Fprintf(w, "acknowledged: %d/%d devices' server cursors at their last message; %s\n", r.AckedDevices, r.Devices, r.AckError)
	default:
		fmt.Fprintf(w, "acknowledged: %d/%d devices' server cursors at their last message\n", r.AckedDevices, r.Devices)
	}
	l := r.Latency
	fmt.Fprintf(w, "end-to-end latency (publish request -> device): p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f (n=%d)\n",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
	l = r.PublishLatency
	fmt.Fprintf(w, "  of it, publish (due -> 200: all its messages stored): p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f (n=%d requests)\n",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
	printStage(w, "    of that, the API's handling (request read -> 200 written", r.ServerLatency, r.ServerError)
	printStage(w, "  of it, gateway (stored -> queued for the device", r.GatewayLatency, r.GatewayError)
	if r.FirstError != "" {
		fmt.Fprintln(w, "first error:", r.FirstError)
	}
}

// printStage prints a stage read from a server's /metrics, or why it
// could not be read.
func printStage(w io.Writer, what string, l *Latency, err string) {
	switch {
	case l != nil:
		fmt.Fprintf(w, "%s, its /metrics, ±7%%): p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f (n=%d)\n",
			what, l.P50, l.P90, l.P99, l.P999, l.Count)
	case err != "":
		fmt.Fprintf(w, "%s): not read: %s\n", what, err)
	}
}
