package bench

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"herald/client"
)

// BroadcastConfig configures the broadcast scenario: Devices devices on the
// gateways all receive Messages messages sent to the app's broadcast channel
// (or to Topic, which every device subscribes to), published by Publishers
// goroutines at Rate messages/s in all (0: as fast as they can).
type BroadcastConfig struct {
	API, Key, App, Secret string
	Gateways              []string
	Sources               []string
	Devices               int
	Messages              int
	Publishers            int
	Rate                  int
	Payload               int
	Topic                 string
	Users                 string
	Timeout               time.Duration
	Progress              io.Writer
	AckDelay              time.Duration // the devices' client.Config.AckDelay
}

// BroadcastResult is the broadcast report.
type BroadcastResult struct {
	Devices          int      `json:"devices"`
	Channel          string   `json:"channel"`
	Published        int64    `json:"published"`
	Errors           int64    `json:"errors"`
	PublishSeconds   float64  `json:"publish_seconds"`
	Expected         int64    `json:"expected_deliveries"`
	Delivered        int64    `json:"delivered"`
	Lost             int64    `json:"lost"`
	Duplicates       int64    `json:"duplicates_or_reordered"`
	Earlier          int64    `json:"earlier_messages_ignored"` // received but stamped before this run: see pool
	DeliverySeconds  float64  `json:"delivery_seconds"`
	DeliveriesPerSec float64  `json:"deliveries_per_second"`
	Latency          Latency  `json:"fanout_latency"`
	Timeline         []Second `json:"timeline"`
	FirstError       string   `json:"first_error,omitempty"`
}

// RunBroadcast runs the broadcast scenario. Deliveries/s is every device's
// receipts divided by the time from the first publish to the last receipt.
func RunBroadcast(cfg BroadcastConfig) (*BroadcastResult, error) {
	if err := checkLoopback(append(append([]string{cfg.API}, cfg.Gateways...), cfg.Sources...)...); err != nil {
		return nil, err
	}
	if cfg.Devices <= 0 || cfg.Messages <= 0 || cfg.Publishers <= 0 || cfg.Timeout <= 0 {
		return nil, fmt.Errorf("bench: --devices, --messages, --publishers and --timeout must be > 0")
	}
	if cfg.Users == "" {
		cfg.Users = "bc"
	}
	pub, err := newPublisher(cfg.API, cfg.App, cfg.Key, cfg.Publishers)
	if err != nil {
		return nil, err
	}
	var rec atomic.Pointer[stripedRecorder]
	pc := poolConfig{Devices: cfg.Devices, Gateways: cfg.Gateways, Sources: cfg.Sources, App: cfg.App, Secret: cfg.Secret, Users: cfg.Users + "-", AckDelay: cfg.AckDelay,
		OnMsg: func(d *device, m client.Message) {
			if r := rec.Load(); r != nil {
				if sent, ok := sentAt(m.Data); ok {
					at := m.Time // a live message's arrival, read once per socket read
					if m.Replay {
						at = time.Now()
					}
					r.record(d.idx, sent, at)
				}
			}
		}}
	channel := "b.all"
	subs := int64(1) // the broadcast channel's SUBACK
	if cfg.Topic != "" {
		pc.Topics = []string{cfg.Topic}
		channel = "t." + cfg.Topic
		subs = 2
	}
	p, err := readyPool(pc, subs, cfg.API, cfg.Progress)
	if err != nil {
		return nil, err
	}
	defer p.stop()

	res := &BroadcastResult{Devices: cfg.Devices, Channel: channel}
	start := time.Now()
	rec.Store(newStripedRecorder(start))
	var published, errs atomic.Int64
	var firstErr atomic.Pointer[string]
	var next atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(0)
	if cfg.Rate > 0 {
		interval = time.Second / time.Duration(cfg.Rate)
	}
	deadline := start.Add(cfg.Timeout)
	for w := 0; w < cfg.Publishers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for {
				i := next.Add(1) - 1
				if i >= int64(cfg.Messages) || time.Now().After(deadline) {
					return
				}
				if interval > 0 {
					if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
						time.Sleep(d)
					}
				}
				body = broadcastBody(body, cfg.Topic, cfg.Payload)
				if _, err := pub.push(body); err != nil {
					errs.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					continue
				}
				published.Add(1)
			}
		}()
	}
	wg.Wait()
	res.PublishSeconds = time.Since(start).Seconds()
	res.Published, res.Errors = published.Load(), errs.Load()
	res.Expected = res.Published * int64(cfg.Devices)
	// Wait for every delivery (bounded), showing progress.
	var last time.Time
	for {
		got, _ := p.totals()
		if got >= res.Expected || time.Now().After(deadline) {
			break
		}
		if cfg.Progress != nil && time.Since(last) > 500*time.Millisecond {
			el := time.Since(start).Seconds()
			fmt.Fprintf(cfg.Progress, "\rbroadcast: %d/%d messages published, %d/%d delivered (%.0f/s)   ",
				res.Published, cfg.Messages, got, res.Expected, float64(got)/el)
			last = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	all, lastAt := rec.Load().merge()
	got, dups := p.totals()
	res.Delivered, res.Duplicates, res.Earlier = got, dups, p.earlier.Load()
	res.Lost = max(res.Expected-got, 0)
	res.DeliverySeconds = lastAt.Sub(start).Seconds()
	if res.DeliverySeconds > 0 {
		res.DeliveriesPerSec = float64(got) / res.DeliverySeconds
	}
	res.Latency = summarize(all)
	res.Timeline = rec.Load().timeline()
	if e := firstErr.Load(); e != nil {
		res.FirstError = *e
	}
	return res, nil
}

// broadcastBody is a broadcast (or topic) push whose data starts with the
// send time, for fan-out latency at the devices.
func broadcastBody(dst []byte, topic string, pad int) []byte {
	if topic != "" {
		dst = append(dst[:0], `{"topic":`...)
		dst = strconv.AppendQuote(dst, topic)
	} else {
		dst = append(dst[:0], `{"broadcast":true`...)
	}
	dst = append(dst, `,"data":"`...)
	dst = strconv.AppendInt(dst, time.Now().UnixNano(), 10)
	dst = append(dst, ' ')
	for i := 0; i < pad; i++ {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// Table prints the broadcast report.
func (r *BroadcastResult) Table(w io.Writer) {
	fmt.Fprintf(w, "devices: %d on %s; %d messages published in %.1fs, %d errors\n", r.Devices, r.Channel, r.Published, r.PublishSeconds, r.Errors)
	fmt.Fprintf(w, "deliveries: %d of %d in %.2fs: %.0f/s; lost %d; duplicates or reordered %d\n",
		r.Delivered, r.Expected, r.DeliverySeconds, r.DeliveriesPerSec, r.Lost, r.Duplicates)
	printEarlier(w, r.Earlier)
	l := r.Latency
	fmt.Fprintf(w, "fan-out latency (publish request -> device): p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f (n=%d)\n",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
	if r.FirstError != "" {
		fmt.Fprintln(w, "first error:", r.FirstError)
	}
}

// stripedRecorder records latencies into one histogram per stripe of
// devices, so 18,000 devices receiving at once do not queue on one lock.
type stripedRecorder struct {
	start   time.Time
	stripes [64]struct {
		mu      sync.Mutex
		h       *hdrhistogram.Histogram
		seconds []*hdrhistogram.Histogram // by second of receipt, for --plot
		lastAt  time.Time
		_       [32]byte // keep stripes on separate cache lines
	}
}

func newStripedRecorder(start time.Time) *stripedRecorder {
	r := &stripedRecorder{start: start}
	for i := range r.stripes {
		r.stripes[i].h = hdrhistogram.New(1, 600_000_000, 3)
	}
	return r
}

func (r *stripedRecorder) record(idx int, sent, now time.Time) {
	us := max(now.Sub(sent).Microseconds(), 1)
	sec := int(now.Sub(r.start) / time.Second)
	s := &r.stripes[idx%len(r.stripes)]
	s.mu.Lock()
	_ = s.h.RecordValue(us)
	for len(s.seconds) <= sec {
		s.seconds = append(s.seconds, hdrhistogram.New(1, 600_000_000, 2))
	}
	if sec >= 0 {
		_ = s.seconds[sec].RecordValue(us)
	}
	if now.After(s.lastAt) {
		s.lastAt = now
	}
	s.mu.Unlock()
}

// timeline merges the stripes' per-second histograms.
func (r *stripedRecorder) timeline() []Second {
	var secs []*hdrhistogram.Histogram
	for i := range r.stripes {
		s := &r.stripes[i]
		s.mu.Lock()
		for j, h := range s.seconds {
			for len(secs) <= j {
				secs = append(secs, hdrhistogram.New(1, 600_000_000, 2))
			}
			secs[j].Merge(h)
		}
		s.mu.Unlock()
	}
	out := make([]Second, len(secs))
	for i, h := range secs {
		out[i] = Second{T: i, Delivered: h.TotalCount(), P50: float64(h.ValueAtQuantile(50)) / 1000, P99: float64(h.ValueAtQuantile(99)) / 1000}
	}
	return out
}

// merge returns every stripe's latencies in one histogram and the latest
// receipt.
func (r *stripedRecorder) merge() (*hdrhistogram.Histogram, time.Time) {
	all := hdrhistogram.New(1, 600_000_000, 3)
	var last time.Time
	for i := range r.stripes {
		s := &r.stripes[i]
		s.mu.Lock()
		all.Merge(s.h)
		if s.lastAt.After(last) {
			last = s.lastAt
		}
		s.mu.Unlock()
	}
	return all, last
}
