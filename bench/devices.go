package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"herald/client"
	"herald/token"
)

// pool is a set of SDK devices, one user each, spread over gateways and
// loopback source addresses. Each device's application counts what it sees
// and drops nothing: duplicates and gaps are what the scenarios check.
type pool struct {
	devices []*device
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	onMsg   func(d *device, m client.Message)
	since   time.Time    // messages stamped before this are not this run's
	earlier atomic.Int64 // messages received but not this run's (see the Handler)
}

type device struct {
	idx      int
	user     string
	c        *client.Client
	received atomic.Int64
	dups     atomic.Int64 // shown again or out of order: seq not above the last seen
	lastSeq  atomic.Uint64
	subs     atomic.Int64 // broadcast and topic channels announced by SUBACK
	gate     *gate
	mu       sync.Mutex
	conn     net.Conn
}

// gate blocks dials while closed (a storm keeps devices away).
type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

func (g *gate) set(closed bool) {
	g.mu.Lock()
	g.closed = closed
	g.mu.Unlock()
}

var errGateClosed = errors.New("bench: device kept offline")

// benchDevice is every bench device's id (each has a user of its own).
const benchDevice = "bench"

// tokenCache is a device's token: kept until near expiry, as an app keeps
// the token its backend gave it. Minted per connection, the storm's 18,000
// reconnects cost the load generator ~0.8 s of CPU in JWT signing, on the
// cores the server is measured on. The SDK calls Token from the device's
// one Run goroutine, so there is no lock.
type tokenCache struct {
	secret    []byte
	app, user string
	now       func() time.Time
	tok       string
	until     time.Time
}

// Tokens live an hour; a device renews 10 minutes before.
const (
	tokenTTL   = time.Hour
	tokenRenew = 50 * time.Minute
)

func (t *tokenCache) get(context.Context) (string, error) {
	now := t.now()
	if now.Before(t.until) {
		return t.tok, nil
	}
	tok, err := token.Sign(t.secret, t.app, t.user, benchDevice, tokenTTL)
	if err != nil {
		return "", err
	}
	t.tok, t.until = tok, now.Add(tokenRenew)
	return tok, nil
}

// poolConfig configures a pool.
type poolConfig struct {
	Devices  int
	Gateways []string
	Sources  []string
	App      string
	Secret   string
	Users    string
	Topics   []string
	OnMsg    func(d *device, m client.Message)
	AckDelay time.Duration // client.Config.AckDelay
	// Redirect, if set, picks the address device idx dials instead of addr.
	Redirect func(idx int, addr string) string
}

func startPool(cfg poolConfig) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{cancel: cancel, onMsg: cfg.OnMsg, since: time.Now()}
	g := &gate{}
	for i := 0; i < cfg.Devices; i++ {
		d := &device{idx: i, user: cfg.Users + strconv.Itoa(i), gate: g}
		src := net.ParseIP(cfg.Sources[i%len(cfg.Sources)])
		dialer := sourceDialer(src)
		tc := &tokenCache{secret: []byte(cfg.Secret), app: cfg.App, user: d.user, now: time.Now}
		c, err := client.New(client.Config{
			Addr:   cfg.Gateways[i%len(cfg.Gateways)],
			App:    cfg.App,
			Device: benchDevice,
			Token:  tc.get,
			Handler: func(m client.Message) error {
				// Only this run's messages count: every bench payload starts
				// with its send time. A user of an earlier run with the same
				// names may still get that run's last messages, the ones its
				// device had not acknowledged when it closed (at-least-once
				// delivery does that); counted, they would read as extra
				// deliveries and stand in for messages still on their way.
				if sent, ok := sentAt(m.Data); !ok || sent.Before(p.since) {
					p.earlier.Add(1)
					return nil
				}
				d.received.Add(1)
				// Sequences are per stream, so they grow across a device's
				// channels too.
				if last := d.lastSeq.Load(); m.Seq <= last {
					d.dups.Add(1)
				}
				d.lastSeq.Store(m.Seq)
				if p.onMsg != nil {
					p.onMsg(d, m)
				}
				return nil
			},
			MinBackoff: 50 * time.Millisecond,
			MaxBackoff: 2 * time.Second,
			Topics:     cfg.Topics,
			AckDelay:   cfg.AckDelay,
			OnEvent: func(e client.Event) {
				// Count the broadcast channel and topics (the user
				// channel's SUBACK comes first and says less).
				if e.Kind == client.Subscribed && !strings.HasPrefix(e.Channel, "u.") {
					d.subs.Add(1)
				}
			},
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if d.gate.isClosed() {
					return nil, errGateClosed
				}
				if cfg.Redirect != nil {
					addr = cfg.Redirect(d.idx, addr)
				}
				nc, err := dialer.DialContext(ctx, network, addr)
				if err == nil {
					d.mu.Lock()
					d.conn = nc
					d.mu.Unlock()
				}
				return nc, err
			},
		})
		if err != nil {
			panic(fmt.Sprintf("bench: %v", err)) // the config above is always valid
		}
		d.c = c
		p.devices = append(p.devices, d)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_ = c.Run(ctx)
		}()
	}
	return p
}

// remote is the gateway address the device's last connection went to.
func (d *device) remote() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return ""
	}
	return d.conn.RemoteAddr().String()
}

// connected counts devices with at least n connections so far.
func (p *pool) connected(n int64) int {
	k := 0
	for _, d := range p.devices {
		if d.c.Connects() >= n {
			k++
		}
	}
	return k
}

// waitConnected waits until every device connected at least n times.
func (p *pool) waitConnected(n int64, timeout time.Duration, progress func(int)) error {
	deadline := time.Now().Add(timeout)
	for {
		k := p.connected(n)
		if progress != nil {
			progress(k)
		}
		if k == len(p.devices) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: only %d of %d devices connected after %v", k, len(p.devices), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readyPool starts the devices of pc and returns once every one is
// connected, has its broadcast (and topic) channels announced (subs
// SUBACKs), and the gateway behind api has settled: what a scenario then
// measures is steady delivery, not the gateway finishing the devices'
// start-up (a message stored before a device's channel start was resolved
// is not for it).
func readyPool(pc poolConfig, subs int64, api string, progress io.Writer) (*pool, error) {
	p := startPool(pc)
	err := p.waitConnected(1, 3*time.Minute, func(k int) {
		if progress != nil {
			fmt.Fprintf(progress, "\rconnecting: %s %d/%d   ", bar(k, pc.Devices, 30), k, pc.Devices)
		}
	})
	if progress != nil {
		fmt.Fprintln(progress)
	}
	if err == nil {
		err = p.waitSubscribed(subs, time.Minute)
	}
	if err != nil {
		p.stop()
		return nil, err
	}
	settle(api, 30*time.Second)
	return p, nil
}

// waitSubscribed waits until every device was told about n broadcast or
// topic channels (SUBACK).
func (p *pool) waitSubscribed(n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		k := 0
		for _, d := range p.devices {
			if d.subs.Load() >= n {
				k++
			}
		}
		if k == len(p.devices) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: only %d of %d devices subscribed after %v", k, len(p.devices), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cutAll closes every device's connection at once and keeps them offline
// until open.
func (p *pool) cutAll() {
	p.devices[0].gate.set(true)
	for _, d := range p.devices {
		d.mu.Lock()
		if d.conn != nil {
			d.conn.Close()
		}
		d.mu.Unlock()
	}
}

func (p *pool) open() { p.devices[0].gate.set(false) }

func (p *pool) totals() (received, dups int64) {
	for _, d := range p.devices {
		received += d.received.Load()
		dups += d.dups.Load()
	}
	return
}

// printEarlier is the report line for messages a pool did not count.
func printEarlier(w io.Writer, n int64) {
	if n > 0 {
		fmt.Fprintf(w, "ignored %d messages from before this run (an earlier run's last, unacknowledged messages, delivered again)\n", n)
	}
}

func (p *pool) stop() {
	p.cancel()
	p.wg.Wait()
}

// settle waits until the gateway metrics the API serves (herald serve
// writes its gateway's there) show no catch-up activity for a second: the
// devices' channels are then live, and a scenario measures steady delivery
// rather than the gateway finishing their start-up. Bounded by timeout;
// without such metrics (separate gateway processes) it returns at once.
func settle(api string, timeout time.Duration) {
	read := func() (string, bool) {
		resp, err := http.Get(strings.TrimRight(api, "/") + "/metrics")
		if err != nil {
			return "", false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if err != nil {
			return "", false
		}
		var sb strings.Builder
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "herald_gateway_catchup") {
				sb.WriteString(line)
			}
		}
		return sb.String(), sb.Len() > 0
	}
	last, ok := read()
	if !ok {
		return
	}
	deadline := time.Now().Add(timeout)
	still := time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		cur, _ := read()
		if cur != last {
			last, still = cur, time.Now()
			continue
		}
		if time.Since(still) >= time.Second {
			return
		}
	}
}
