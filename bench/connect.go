package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"herald/token"
	"herald/wire"
)

// ConnectConfig configures the connect scenario: N authenticated, idle
// devices spread over P worker processes and several loopback source
// addresses, held for a while, with each gateway's memory and goroutines
// read from its own /metrics before and after.
type ConnectConfig struct {
	Conns    int
	Gateways []string // host:port, or ws:// URLs
	Sources  []string // local source IPs, all loopback
	Procs    int
	Hold     time.Duration
	Metrics  []string // each gateway's /metrics URL
	App      string
	Secret   string
	// Rate bounds connects per second over all workers (0: as fast as they go).
	Rate int
	// RampTimeout bounds the ramp; the run stops by itself after it.
	RampTimeout time.Duration
	// Exe is the herald binary the workers run (default: this executable).
	Exe string
	// Progress receives a live progress line; nil for none.
	Progress io.Writer
	// Users is the user-name prefix (each device is its own user).
	Users string
}

// GatewayResult is one gateway's figures.
type GatewayResult struct {
	Before          Scrape  `json:"before"`
	After           Scrape  `json:"after"`
	Devices         float64 `json:"devices"`
	RSSPerDevice    float64 `json:"rss_per_device_bytes"`
	HeapPerDevice   float64 `json:"heap_per_device_bytes"`
	GoroutinesDelta float64 `json:"goroutines_delta"`
}

// ConnectResult is the scenario's report.
type ConnectResult struct {
	Conns          int             `json:"conns"`
	Connected      int             `json:"connected"`
	Failed         int             `json:"failed"`
	Procs          int             `json:"procs"`
	Sources        int             `json:"sources"`
	RampSeconds    float64         `json:"ramp_seconds"`
	ConnectsPerSec float64         `json:"connects_per_second"`
	HoldSeconds    float64         `json:"hold_seconds"`
	Gateways       []GatewayResult `json:"gateways"`
	TotalRSS       float64         `json:"total_gateway_rss_bytes"`
	TotalDevices   float64         `json:"total_gateway_devices"`
	// Handshake is each device's dial to CONNACK, over every worker.
	Handshake Latency        `json:"handshake"`
	Timeline  []ConnectPoint `json:"timeline"` // the ramp, every 250 ms
	Errors    []string       `json:"errors,omitempty"`
}

// ConnectPoint is the ramp at T seconds.
type ConnectPoint struct {
	T         float64 `json:"t"`
	Connected int     `json:"connected"`
	Failed    int     `json:"failed"`
}

// workerReport is a line a worker prints on stdout.
type workerReport struct {
	Connected int    `json:"connected"`
	Failed    int    `json:"failed"`
	Done      bool   `json:"done"`
	Error     string `json:"error,omitempty"`
	// Handshake, in the last report (Done), is the worker's histogram of
	// dial-to-CONNACK times in microseconds.
	Handshake *hdrhistogram.Snapshot `json:"handshake,omitempty"`
}

// newHandshakeHistogram covers 1 µs to 60 s with 2 significant figures.
func newHandshakeHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 2) }

// checkLoopback refuses any address that is not on this machine's loopback.
func checkLoopback(addrs ...string) error {
	for _, a := range addrs {
		host := a
		if strings.Contains(a, "://") {
			host = a[strings.Index(a, "://")+3:]
			if i := strings.IndexByte(host, '/'); i >= 0 {
				host = host[:i]
			}
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "localhost" {
			continue
		}
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("bench: %q is not a loopback address; the bench only targets this machine", a)
		}
	}
	return nil
}

// ParseSources parses "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3".
func ParseSources(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(lo).To4()
		if a == nil {
			return nil, fmt.Errorf("bench: bad source address %q", lo)
		}
		if !isRange {
			out = append(out, a.String())
			continue
		}
		b := net.ParseIP(hi).To4()
		if b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
			return nil, fmt.Errorf("bench: bad source range %q (the last byte may vary)", part)
		}
		for x := int(a[3]); x <= int(b[3]); x++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(x)).String())
		}
	}
	if len(out) == 0 {
		return nil, errors.New("bench: no source addresses")
	}
	if err := checkLoopback(out...); err != nil {
		return nil, err
	}
	return out, nil
}

// RunConnect runs the connect scenario.
func RunConnect(cfg ConnectConfig) (*ConnectResult, error) {
	if cfg.Conns <= 0 || cfg.Procs <= 0 || len(cfg.Gateways) == 0 || len(cfg.Sources) == 0 {
		return nil, errors.New("bench: --conns, --procs, --gateways and --sources are required")
	}
	if err := checkLoopback(append(append([]string{}, cfg.Gateways...), cfg.Metrics...)...); err != nil {
		return nil, err
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Exe = exe
	}
	if cfg.RampTimeout <= 0 {
		cfg.RampTimeout = 5 * time.Minute
	}
	if cfg.Users == "" {
		cfg.Users = "bench"
	}
	res := &ConnectResult{Conns: cfg.Conns, Procs: cfg.Procs, Sources: len(cfg.Sources), HoldSeconds: cfg.Hold.Seconds()}
	before, err := scrapeAll(cfg.Metrics)
	if err != nil {
		return nil, err
	}

	type worker struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		last  atomic.Pointer[workerReport]
		done  chan struct{}
	}
	workers := make([]*worker, cfg.Procs)
	maxTime := cfg.RampTimeout + cfg.Hold + time.Minute
	start := time.Now()
	for i := range workers {
		n := cfg.Conns / cfg.Procs
		if i < cfg.Conns%cfg.Procs {
			n++
		}
		// Each worker uses every source; ports are per source address.
		args := []string{"bench", "connect-worker",
			"--conns", strconv.Itoa(n),
			"--gateways", strings.Join(cfg.Gateways, ","),
			"--sources", strings.Join(cfg.Sources, ","),
			"--app", cfg.App, "--secret", cfg.Secret,
			"--users", fmt.Sprintf("%s-%d-", cfg.Users, i),
			"--rate", strconv.Itoa(cfg.Rate / cfg.Procs),
			"--max-time", maxTime.String(),
		}
		cmd := exec.Command(cfg.Exe, args...)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("bench: cannot start worker: %w", err)
		}
		w := &worker{cmd: cmd, stdin: stdin, done: make(chan struct{})}
		w.last.Store(&workerReport{})
		workers[i] = w
		go func() {
			defer close(w.done)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 4<<20) // the last report carries a histogram
			for sc.Scan() {
				var r workerReport
				if json.Unmarshal(sc.Bytes(), &r) == nil {
					w.last.Store(&r)
				}
			}
		}()
	}
	stopAll := func() {
		for _, w := range workers {
			w.stdin.Close()
		}
		for _, w := range workers {
			select {
			case <-w.done:
			case <-time.After(30 * time.Second):
				w.cmd.Process.Kill()
			}
			w.cmd.Wait()
		}
	}

	// Ramp: wait until every worker is done (or the ramp times out).
	deadline := start.Add(cfg.RampTimeout)
	res.Timeline = append(res.Timeline, ConnectPoint{})
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		<-tick.C
		connected, failed, done := 0, 0, 0
		for _, w := range workers {
			r := w.last.Load()
			connected += r.Connected
			failed += r.Failed
			if r.Done {
				done++
			}
			if r.Error != "" && len(res.Errors) < 10 && !contains(res.Errors, r.Error) {
				res.Errors = append(res.Errors, r.Error)
			}
		}
		res.Connected, res.Failed = connected, failed
		el := time.Since(start)
		res.Timeline = append(res.Timeline, ConnectPoint{T: el.Seconds(), Connected: connected, Failed: failed})
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\rconnect: %s %d/%d connected, %d failed, %.0f/s   ",
				bar(connected+failed, cfg.Conns, 30), connected, cfg.Conns, failed, float64(connected)/el.Seconds())
		}
		if done == len(workers) || time.Now().After(deadline) {
			res.RampSeconds = el.Seconds()
			break
		}
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	if res.RampSeconds > 0 {
		res.ConnectsPerSec = float64(res.Connected) / res.RampSeconds
	}
	if cfg.Progress != nil && cfg.Hold > 0 {
		fmt.Fprintf(cfg.Progress, "holding %d devices for %v\n", res.Connected, cfg.Hold)
	}
	time.Sleep(cfg.Hold)
	after, err := scrapeAll(cfg.Metrics)
	stopAll()
	if err != nil {
		return nil, err
	}
	hs := newHandshakeHistogram()
	for _, w := range workers {
		if snap := w.last.Load().Handshake; snap != nil {
			hs.Merge(hdrhistogram.Import(snap))
		}
	}
	res.Handshake = summarize(hs)
	for i := range after {
		g := GatewayResult{Before: before[i], After: after[i], Devices: after[i].Connections - before[i].Connections}
		if g.Devices > 0 {
			g.RSSPerDevice = (after[i].RSS - before[i].RSS) / g.Devices
			g.HeapPerDevice = (after[i].HeapInuse - before[i].HeapInuse) / g.Devices
		}
		g.GoroutinesDelta = after[i].Goroutines - before[i].Goroutines
		res.Gateways = append(res.Gateways, g)
		res.TotalRSS += after[i].RSS
		res.TotalDevices += g.Devices
	}
	return res, nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func bar(done, total, width int) string {
	if total <= 0 {
		total = 1
	}
	n := done * width / total
	if n > width {
		n = width
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// WorkerConfig configures one connect worker process.
type WorkerConfig struct {
	Conns    int
	Gateways []string
	Sources  []string
	App      string
	Secret   string
	Users    string
	Rate     int
	MaxTime  time.Duration
	Out      io.Writer
	In       io.Reader
}

// RunConnectWorker opens Conns devices, reports progress as JSON lines,
// holds them (sending a PING every 20s) until In closes or MaxTime passes.
func RunConnectWorker(cfg WorkerConfig) error {
	if err := checkLoopback(append(append([]string{}, cfg.Gateways...), cfg.Sources...)...); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxTime)
	defer cancel()
	var (
		mu        sync.Mutex
		conns     = make([]net.Conn, 0, cfg.Conns)
		connected atomic.Int64
		failed    atomic.Int64
		lastErr   atomic.Pointer[string]
		hsMu      sync.Mutex
		hs        = newHandshakeHistogram()
	)
	report := func(done bool) {
		r := workerReport{Connected: int(connected.Load()), Failed: int(failed.Load()), Done: done}
		if e := lastErr.Load(); e != nil {
			r.Error = *e
		}
		if done {
			hsMu.Lock()
			r.Handshake = hs.Export()
			hsMu.Unlock()
		}
		b, _ := json.Marshal(r)
		fmt.Fprintf(cfg.Out, "%s\n", b)
	}
	next := atomic.Int64{}
	var pace <-chan time.Time
	if cfg.Rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(cfg.Rate))
		defer t.Stop()
		pace = t.C
	}
	const dialers = 64
	var wg sync.WaitGroup
	for d := 0; d < dialers; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Conns || ctx.Err() != nil {
					return
				}
				if pace != nil {
					select {
					case <-pace:
					case <-ctx.Done():
						return
					}
				}
				c, took, err := dialDevice(ctx, cfg, i)
				if err != nil {
					failed.Add(1)
					s := err.Error()
					lastErr.Store(&s)
					continue
				}
				hsMu.Lock()
				_ = hs.RecordValue(took.Microseconds())
				hsMu.Unlock()
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				connected.Add(1)
			}
		}()
	}
	progress := time.NewTicker(200 * time.Millisecond)
	rampDone := make(chan struct{})
	go func() { wg.Wait(); close(rampDone) }()
ramp:
	for {
		select {
		case <-progress.C:
			report(false)
		case <-rampDone:
			break ramp
		}
	}
	progress.Stop()
	report(true)

	// Hold until the coordinator closes stdin, or MaxTime.
	released := make(chan struct{})
	go func() { io.Copy(io.Discard, cfg.In); close(released) }()
	ping := time.NewTicker(20 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-released:
		case <-ctx.Done():
		case <-ping.C:
			mu.Lock()
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				writeFrame(c, (&wire.Ping{Interval: 30}).Append(nil))
			}
			mu.Unlock()
			continue
		}
		break
	}
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	return nil
}

// wsConn marks a WebSocket device connection (frames go in binary messages).
type wsConn struct{ net.Conn }

func writeFrame(c net.Conn, frame []byte) error {
	if w, ok := c.(wsConn); ok {
		return wsutil.WriteClientBinary(w.Conn, frame)
	}
	_, err := c.Write(frame)
	return err
}

// dialDevice connects device i from its source address and authenticates;
// it returns the connection and the time from dial to CONNACK (the token is
// signed before the clock starts: a device brings the token its app got
// earlier).
func dialDevice(ctx context.Context, cfg WorkerConfig, i int) (net.Conn, time.Duration, error) {
	src := cfg.Sources[i%len(cfg.Sources)]
	target := cfg.Gateways[i%len(cfg.Gateways)]
	d := sourceDialer(net.ParseIP(src))
	user := cfg.Users + strconv.Itoa(i)
	tok, err := token.Sign([]byte(cfg.Secret), cfg.App, user, benchDevice, 24*time.Hour)
	if err != nil {
		return nil, 0, err
	}
	connect := (&wire.Connect{Version: wire.Version, App: []byte(cfg.App), Device: []byte(benchDevice), Token: []byte(tok), Heartbeat: 30}).Append(nil)
	began := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var c net.Conn
	var r io.Reader
	if strings.HasPrefix(target, "ws://") {
		wd := ws.Dialer{NetDial: d.DialContext}
		nc, br, _, err := wd.Dial(dctx, target)
		if err != nil {
			return nil, 0, err
		}
		if br != nil {
			ws.PutReader(br)
		}
		c = wsConn{nc}
		r = nc
	} else {
		nc, err := d.DialContext(dctx, "tcp", target)
		if err != nil {
			return nil, 0, err
		}
		c, r = nc, nc
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := writeFrame(c, connect); err != nil {
		c.Close()
		return nil, 0, err
	}
	typ, err := readFirstFrame(c, r)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	if typ != wire.TypeConnAck {
		c.Close()
		return nil, 0, fmt.Errorf("got %s instead of CONNACK", typ)
	}
	c.SetDeadline(time.Time{})
	return c, time.Since(began), nil
}

// readFirstFrame reads one frame's type without buffering past it.
func readFirstFrame(c net.Conn, r io.Reader) (wire.Type, error) {
	if _, ok := c.(wsConn); ok {
		data, op, err := wsutil.ReadServerData(r.(io.ReadWriter))
		if err != nil {
			return 0, err
		}
		if op != ws.OpBinary || len(data) == 0 {
			return 0, fmt.Errorf("unexpected websocket message")
		}
		return wire.Type(data[0]), nil
	}
	br := bufio.NewReaderSize(r, 512)
	typ, _, _, err := wire.ReadFrame(br, nil, wire.DefaultMaxFrame)
	return typ, err
}
