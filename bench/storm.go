package bench

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"herald/client"
)

// StormConfig configures the storm scenario: Devices devices connect, all
// their connections are cut at once (or, with KillPID, one gateway is
// killed and its devices lose theirs) and kept down while Missed messages
// per device are published; then they may reconnect, and the scenario
// measures how long until every device has reconnected and received
// everything it missed, checking that nothing was lost or shown twice.
type StormConfig struct {
	API, Key, App, Secret string
	Gateways              []string
	Sources               []string
	Devices               int
	Missed                int           // messages per device published while away
	During                int           // messages per device published while they come back
	DuringEvery           time.Duration // between those rounds (one message per device each)
	Payload               int           // bytes of padding after the timestamp (0: 20)
	PerRequest            int
	Publishers            int
	Timeout               time.Duration
	Users                 string
	Progress              io.Writer
	AckDelay              time.Duration // the devices' client.Config.AckDelay
	// KillPID, if set, is a gateway process the caller started, serving
	// devices on KillAddr (one of Gateways): instead of cutting every
	// connection the storm kills it (SIGKILL), and its devices reconnect
	// to the other gateways, as they would behind a load balancer that
	// took the dead one out. Devices on the others stay connected.
	KillPID  int
	KillAddr string
}

// StormResult is the storm report.
type StormResult struct {
	Devices          int     `json:"devices"`
	KilledGateway    string  `json:"killed_gateway,omitempty"`            // KillAddr, when a gateway was killed
	Victims          int     `json:"devices_on_killed_gateway,omitempty"` // devices that lost their connection with it
	MissedPerDevice  int     `json:"missed_per_device"`
	Published        int64   `json:"published"`
	DuringPerDevice  int     `json:"during_per_device,omitempty"`
	DuringPublished  int64   `json:"published_during_recovery,omitempty"`
	DuringEvery      float64 `json:"during_every_seconds,omitempty"`
	PublishSeconds   float64 `json:"publish_seconds"`
	ReconnectSeconds float64 `json:"all_reconnected_seconds"`
	CaughtUpSeconds  float64 `json:"all_caught_up_seconds"`
	Received         int64   `json:"received"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates_or_reordered"`
	Earlier          int64   `json:"earlier_messages_ignored"` // received but stamped before this run: see pool
	Errors           int64   `json:"publish_errors"`
	FirstError       string  `json:"first_error,omitempty"` // of a publish attempt that failed
	// ServerAfter is set when not every device caught up: whether the API
	// still answered /healthz then. A stuck server and one that is gone
	// read the same in the counts above.
	ServerAfter string `json:"server_after_timeout,omitempty"`
	// Per device that lost its connection, the time from being let back
	// to having received all it missed (when every device caught up; 20
	// ms resolution).
	CaughtUpP50 float64 `json:"caught_up_p50_seconds,omitempty"`
	CaughtUpP90 float64 `json:"caught_up_p90_seconds,omitempty"`
	CaughtUpP99 float64 `json:"caught_up_p99_seconds,omitempty"`
	// Timeline is the recovery every 100 ms from the moment the devices
	// were let back.
	Timeline []StormPoint `json:"timeline"`
}

// StormPoint is the recovery at T seconds after the devices were let back.
type StormPoint struct {
	T           float64 `json:"t"`
	Reconnected int     `json:"reconnected"`
	CaughtUp    int     `json:"caught_up"`
	Received    int64   `json:"received"` // messages received since the cut
}

// stormAttempts is how often a storm's publish request is tried.
const stormAttempts = 5

// pubStats is what publishRounds did.
type pubStats struct {
	published, errs, gaveUp int64
	firstErr                string
}

// refused is the storm's error when some requests were given up on: the
// devices would wait for messages that were never stored, and what
// follows would measure nothing and call it loss. want is how many
// messages the requests carried.
func (st pubStats) refused(when string, want int) error {
	if st.gaveUp == 0 {
		return nil
	}
	return fmt.Errorf("bench: storm: %d publish requests%s failed %d times each (%d of %d messages stored); first error: %s",
		st.gaveUp, when, stormAttempts, st.published, want, st.firstErr)
}

// publishRounds publishes rounds messages to every device of p,
// cfg.PerRequest users a request, cfg.Publishers requests at a time, each
// request tried up to stormAttempts times; round k starts no earlier than
// k × every after the first.
func publishRounds(pub *publisher, p *pool, cfg StormConfig, rounds int, every time.Duration) pubStats {
	var published, errs, gaveUp atomic.Int64
	var firstErr atomic.Pointer[string]
	jobs := make(chan []string)
	var wg sync.WaitGroup
	for w := 0; w < cfg.Publishers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for users := range jobs {
				body = stampedBody(body, users, cfg.Payload, time.Now())
				for attempt := 0; ; attempt++ {
					n, err := pub.push(body)
					if err == nil {
						published.Add(int64(n))
						break
					}
					errs.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					if attempt == stormAttempts-1 {
						gaveUp.Add(1)
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	first := time.Now()
	for round := 0; round < rounds; round++ {
		time.Sleep(time.Until(first.Add(time.Duration(round) * every)))
		for i := 0; i < cfg.Devices; i += cfg.PerRequest {
			users := make([]string, 0, cfg.PerRequest)
			for j := i; j < i+cfg.PerRequest && j < cfg.Devices; j++ {
				users = append(users, p.devices[j].user)
			}
			jobs <- users
		}
	}
	close(jobs)
	wg.Wait()
	st := pubStats{published: published.Load(), errs: errs.Load(), gaveUp: gaveUp.Load()}
	if e := firstErr.Load(); e != nil {
		st.firstErr = *e
	}
	return st
}

// RunStorm runs the storm scenario.
func RunStorm(cfg StormConfig) (*StormResult, error) {
	if err := checkLoopback(append(append([]string{cfg.API}, cfg.Gateways...), cfg.Sources...)...); err != nil {
		return nil, err
	}
	if cfg.Devices <= 0 || cfg.Missed <= 0 || cfg.PerRequest <= 0 || cfg.Publishers <= 0 {
		return nil, fmt.Errorf("bench: --devices, --missed, --per-request and --publishers must be > 0")
	}
	if cfg.During < 0 || cfg.DuringEvery < 0 {
		return nil, fmt.Errorf("bench: --during and --during-every must be >= 0")
	}
	var others []string // with KillPID: where the killed gateway's devices go
	if cfg.KillPID != 0 || cfg.KillAddr != "" {
		for _, g := range cfg.Gateways {
			if g != cfg.KillAddr {
				others = append(others, g)
			}
		}
		if cfg.KillPID <= 0 || len(others) == len(cfg.Gateways) || len(others) == 0 {
			return nil, fmt.Errorf("bench: --kill-pid needs --kill-addr, one of at least two --gateways (the killed gateway's device address)")
		}
		if err := isHerald(cfg.KillPID); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Users == "" {
		cfg.Users = "storm"
	}
	if cfg.Payload <= 0 {
		cfg.Payload = 20
	}
	pub, err := newPublisher(cfg.API, cfg.App, cfg.Key, cfg.Publishers)
	if err != nil {
		return nil, err
	}
	// Per device: what it must receive after the cut.
	var since, killed atomic.Bool
	afterCut := make([]atomic.Int64, cfg.Devices)
	p := startPool(poolConfig{Devices: cfg.Devices, Gateways: cfg.Gateways, Sources: cfg.Sources, App: cfg.App, Secret: cfg.Secret, Users: cfg.Users + "-", AckDelay: cfg.AckDelay,
		OnMsg: func(d *device, _ client.Message) {
			if since.Load() {
				afterCut[d.idx].Add(1)
			}
		},
		Redirect: func(idx int, addr string) string {
			if killed.Load() && addr == cfg.KillAddr {
				return others[idx%len(others)]
			}
			return addr
		}})
	defer p.stop()
	progress := func(what string) func(int) {
		return func(k int) {
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "\r%s: %s %d/%d   ", what, bar(k, cfg.Devices, 30), k, cfg.Devices)
			}
		}
	}
	if err := p.waitConnected(1, cfg.Timeout, progress("connecting")); err != nil {
		return nil, err
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	time.Sleep(500 * time.Millisecond) // let the first catch-ups finish

	// Cut everyone (or kill a gateway), publish while they are away.
	res := &StormResult{Devices: cfg.Devices, MissedPerDevice: cfg.Missed, DuringPerDevice: cfg.During, DuringEvery: cfg.DuringEvery.Seconds()}
	since.Store(true)
	// victims lost their connection; atCut is their connection count then.
	victims, atCut := make([]bool, cfg.Devices), make([]int64, cfg.Devices)
	for i, d := range p.devices {
		atCut[i] = d.c.Connects()
		victims[i] = cfg.KillPID == 0 || d.remote() == cfg.KillAddr
		if victims[i] {
			res.Victims++
		}
	}
	if cfg.KillPID == 0 {
		p.cutAll()
	} else {
		if res.Victims == 0 {
			return nil, fmt.Errorf("bench: no device is connected to --kill-addr %s (give it as the devices dial it, host:port)", cfg.KillAddr)
		}
		res.KilledGateway = cfg.KillAddr
		p.devices[0].gate.set(true)
		killed.Store(true)
		proc, err := os.FindProcess(cfg.KillPID)
		if err == nil {
			err = proc.Kill()
		}
		if err != nil {
			return nil, fmt.Errorf("bench: kill gateway pid %d: %w", cfg.KillPID, err)
		}
	}
	pubStart := time.Now()
	away := publishRounds(pub, p, cfg, cfg.Missed, 0)
	res.Published, res.Errors, res.FirstError = away.published, away.errs, away.firstErr
	res.PublishSeconds = time.Since(pubStart).Seconds()
	if err := away.refused("", cfg.Devices*cfg.Missed); err != nil {
		return nil, err
	}

	// Let them back and time the recovery, publishing During more rounds
	// meanwhile.
	start := time.Now()
	p.open()
	deadline := start.Add(cfg.Timeout)
	want := int64(cfg.Missed + cfg.During)
	during := make(chan pubStats, 1)
	go func() { during <- publishRounds(pub, p, cfg, cfg.During, cfg.DuringEvery) }()
	caughtAt := make([]float64, cfg.Devices) // seconds after start; 0: not yet
	var nextPoint float64
	var d pubStats
	duringDone := false
	for {
		if !duringDone {
			select {
			case d = <-during:
				duringDone = true
			default:
			}
		}
		if d.gaveUp > 0 {
			break // some of what the devices wait for was never stored
		}
		el := time.Since(start).Seconds()
		reconnected, caught, received := 0, 0, int64(0)
		for i, d := range p.devices {
			if !victims[i] || d.c.Connects() > atCut[i] {
				reconnected++
			}
		}
		for i := range afterCut {
			n := afterCut[i].Load()
			received += n
			if n >= want {
				caught++
				if caughtAt[i] == 0 {
					caughtAt[i] = el
				}
			}
		}
		if reconnected == cfg.Devices && res.ReconnectSeconds == 0 {
			res.ReconnectSeconds = el
		}
		if el >= nextPoint || caught == cfg.Devices {
			res.Timeline = append(res.Timeline, StormPoint{T: el, Reconnected: reconnected, CaughtUp: caught, Received: received})
			nextPoint = el + 0.1
		}
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\rrecovering: %d/%d reconnected, %d/%d caught up   ", reconnected, cfg.Devices, caught, cfg.Devices)
		}
		if caught == cfg.Devices {
			res.CaughtUpSeconds = el
			var away []float64 // the devices that lost their connection
			for i, v := range victims {
				if v {
					away = append(away, caughtAt[i])
				}
			}
			res.CaughtUpP50, res.CaughtUpP90, res.CaughtUpP99 = quantile(away, 0.50), quantile(away, 0.90), quantile(away, 0.99)
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	if res.CaughtUpSeconds == 0 {
		res.ServerAfter = healthOf(cfg.API)
	}
	time.Sleep(300 * time.Millisecond) // anything extra would arrive now
	if !duringDone {
		d = <-during // bounded: every request gives up after stormAttempts tries
	}
	res.DuringPublished, res.Errors = d.published, res.Errors+d.errs
	if res.FirstError == "" {
		res.FirstError = d.firstErr
	}
	if err := d.refused(" during the recovery", cfg.Devices*cfg.During); err != nil {
		return nil, err
	}
	var got int64
	for i := range afterCut {
		n := afterCut[i].Load()
		got += n
		if n < want {
			res.Lost += want - n
		}
	}
	res.Received = got
	_, res.Duplicates = p.totals()
	res.Earlier = p.earlier.Load()
	return res, nil
}

// Table prints the storm report.
func (r *StormResult) Table(w io.Writer) {
	if r.KilledGateway != "" {
		fmt.Fprintf(w, "devices: %d, %d of them on gateway %s, killed; %d messages each published while they were away (%d stored in %.1fs, %d publish retries)\n",
			r.Devices, r.Victims, r.KilledGateway, r.MissedPerDevice, r.Published, r.PublishSeconds, r.Errors)
	} else {
		fmt.Fprintf(w, "devices: %d, all cut at once; %d messages each published while away (%d stored in %.1fs, %d publish retries)\n",
			r.Devices, r.MissedPerDevice, r.Published, r.PublishSeconds, r.Errors)
	}
	if r.DuringPerDevice > 0 {
		fmt.Fprintf(w, "and %d each while they came back, a round every %v (%d stored)\n", r.DuringPerDevice, time.Duration(r.DuringEvery*float64(time.Second)), r.DuringPublished)
	}
	if r.CaughtUpSeconds > 0 {
		fmt.Fprintf(w, "all reconnected after %.2fs; all caught up after %.2fs\n", r.ReconnectSeconds, r.CaughtUpSeconds)
	} else {
		fmt.Fprintf(w, "NOT all caught up before the timeout (reconnected: %.2fs); the API then: %s\n", r.ReconnectSeconds, r.ServerAfter)
	}
	if r.CaughtUpSeconds > 0 {
		who := "per device"
		if r.KilledGateway != "" {
			who = "per device of the killed gateway"
		}
		fmt.Fprintf(w, "%s, caught up after: p50 %.2fs, p90 %.2fs, p99 %.2fs\n", who, r.CaughtUpP50, r.CaughtUpP90, r.CaughtUpP99)
	}
	fmt.Fprintf(w, "received %d; lost %d; shown twice or out of order %d\n", r.Received, r.Lost, r.Duplicates)
	printEarlier(w, r.Earlier)
	if r.FirstError != "" {
		fmt.Fprintln(w, "first publish error (retried):", r.FirstError)
	}
}

// quantile is the q-quantile of xs (nearest rank); xs is sorted in place.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	if i < 0 {
		i = 0
	}
	return xs[i]
}

// Plot writes the recovery as an SVG chart: devices reconnected and caught
// up, and messages received per second, against seconds since the devices
// were let back.
func (r *StormResult) Plot(path string) error {
	title := fmt.Sprintf("herald storm: %d devices x %d missed, all caught up after %.2fs", r.Devices, r.MissedPerDevice, r.CaughtUpSeconds)
	if r.CaughtUpSeconds == 0 {
		title = fmt.Sprintf("herald storm: %d devices x %d missed, NOT all caught up", r.Devices, r.MissedPerDevice)
	}
	c := Chart{Title: title, LeftUnit: "devices", RightUnit: "msgs/s"}
	rec := Series{Name: "reconnected", Color: "#36c"}
	cau := Series{Name: "caught up", Color: "#2a2", Width: 2}
	rate := Series{Name: "messages received/s", Color: "#c33"}
	for i, pt := range r.Timeline {
		c.X = append(c.X, pt.T)
		rec.Y = append(rec.Y, float64(pt.Reconnected))
		cau.Y = append(cau.Y, float64(pt.CaughtUp))
		v := 0.0
		if i > 0 && pt.T > r.Timeline[i-1].T {
			v = float64(pt.Received-r.Timeline[i-1].Received) / (pt.T - r.Timeline[i-1].T)
		}
		rate.Y = append(rate.Y, v)
	}
	c.Left = []Series{rec, cau}
	c.Right = []Series{rate}
	return c.WriteSVG(path)
}

// healthOf says whether the API at api answers GET /healthz.
func healthOf(api string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(api, "/") + "/healthz")
	if err != nil {
		return "not answering (" + err.Error() + ")"
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "answering /healthz with " + resp.Status
	}
	return "answering /healthz"
}

// isHerald refuses to kill a process that is not herald (a mistyped pid).
func isHerald(pid int) error {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("bench: --kill-pid %d: %w", pid, err)
	}
	if args := strings.Split(string(cmd), "\x00"); len(args) < 2 || !strings.Contains(filepath.Base(args[0]), "herald") || args[1] != "gateway" && args[1] != "serve" {
		return fmt.Errorf("bench: --kill-pid %d is not a herald gateway or serve process (%q)", pid, strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return nil
}
