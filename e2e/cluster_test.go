package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/node"
	"herald/wire"
)

// startHub runs NATS and the dispatcher; startGateway adds a gateway
// process-part against the hub's NATS.
func startHub(t testing.TB) *node.Node {
	t.Helper()
	n, err := node.Start(testConfig(t), node.Roles{EmbeddedNATS: true, Dispatcher: true}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

func startGateway(t testing.TB, hub *node.Node, mod func(*config.Gateway)) *node.Node {
	t.Helper()
	cfg := testConfig(t)
	cfg.NATS.URL = hub.NATS.ClientURL()
	if mod != nil {
		mod(&cfg.Gateway)
	}
	n, err := node.Start(cfg, node.Roles{Gateway: true}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// New devices that probe through the locator avoid a gateway over its
// probe threshold: it answers PROBE a second late, the idle one at once.
// With the locator unreachable, the fallback list is probed instead.
func TestProbeAvoidsOverloadedGateway(t *testing.T) {
	hub := startHub(t)
	busy := startGateway(t, hub, func(g *config.Gateway) { g.ID, g.Capacity, g.ProbeMaxDelay = "busy", 10, time.Second })
	idle := startGateway(t, hub, func(g *config.Gateway) { g.ID, g.Capacity = "idle", 1000 })
	for i := 0; i < 10; i++ { // busy at its capacity
		d := dialRaw(t, busy.Gateway.Addr().String())
		if typ, _ := d.connect("demo", fmt.Sprintf("old%d", i), mustToken(t, config.DemoSecret, "demo", "u", fmt.Sprintf("old%d", i))); typ != wire.TypeConnAck {
			t.Fatalf("CONNECT: %s", typ)
		}
	}
	// The locator offers both (the registry refreshes every 2 s).
	waitFor(t, 10*time.Second, "both gateways in the locator", func() bool {
		st, out := call(t, apiURL(hub), "", "GET", "/v1/gateways?app=demo&device=x", nil)
		gws, _ := out["gateways"].([]any)
		return st == 200 && len(gws) == 2
	})
	const n = 30
	var devs []*client.Client
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("new%d", i)
		devs = append(devs, device(t, "", "u"+dev, dev, newCollector(), func(c *client.Config) {
			c.Addr, c.Locator = "", apiURL(hub)
		}))
	}
	waitFor(t, 20*time.Second, "new devices connected", func() bool {
		for _, d := range devs {
			if d.Connects() < 1 {
				return false
			}
		}
		return true
	})
	if got := idle.Gateway.Connections(); got != n {
		t.Fatalf("the idle gateway has %d of %d new devices (busy has %d)", got, n, busy.Gateway.Connections()-10)
	}
	if v := metricValue(t, busy, "herald_gateway_probes_delayed_total"); v == "" || v == "0" {
		t.Fatalf("the busy gateway was never probed (%q): the test proves nothing", v)
	}

	// Locator down: the fallback addresses are probed.
	fb := device(t, "", "fb", "fb", newCollector(), func(c *client.Config) {
		c.Addr, c.Locator, c.Fallback = "", "http://127.0.0.1:1", []string{idle.Gateway.Addr().String()}
	})
	waitFor(t, 10*time.Second, "the fallback device", func() bool { return fb.Connects() == 1 })
}

// publisher pushes to random users until stopped, retrying each message
// with its idempotency id until it is stored, and records per user what
// was stored.
type publisher struct {
	api   string
	users []string
	mu    sync.Mutex
	seqs  map[string][]uint64
	stop  chan struct{}
	done  chan struct{}
	fails int
}

func startPublisher(t testing.TB, api string, users []string, every time.Duration) *publisher {
	p := &publisher{api: api, users: users, seqs: map[string][]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
			user := p.users[i%len(p.users)]
			body := fmt.Sprintf(`{"users":[%q],"data":"m%d","id":"pub-%d"}`, user, i, i)
			for attempt := 0; ; attempt++ {
				req, _ := http.NewRequest("POST", p.api+"/v1/apps/demo/push", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+config.DemoKey)
				resp, err := hc.Do(req)
				if err == nil && resp.StatusCode == 200 {
					var out struct {
						Messages []struct{ Seq uint64 } `json:"messages"`
					}
					json.NewDecoder(resp.Body).Decode(&out)
					resp.Body.Close()
					p.mu.Lock()
					p.seqs[user] = append(p.seqs[user], out.Messages[0].Seq)
					p.mu.Unlock()
					break
				}
				if resp != nil {
					resp.Body.Close()
				}
				p.mu.Lock()
				p.fails++
				p.mu.Unlock()
				if attempt > 200 {
					return
				}
				time.Sleep(100 * time.Millisecond) // the store is electing a leader, say
			}
		}
	}()
	return p
}

func (p *publisher) finish() map[string][]uint64 {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seqs
}

// A rolling upgrade of both gateways under steady publishing: drain the
// first (its devices move to the second), replace it, drain the second
// (they move to the new one). Every device's application sees every message
// addressed to it exactly once, in order.
func TestRollingUpgradeLosesNothing(t *testing.T) {
	hub := startHub(t)
	api := apiURL(hub)
	gwA := startGateway(t, hub, func(g *config.Gateway) { g.ID, g.DrainBatch, g.DrainInterval = "a", 20, 50*time.Millisecond })
	gwB := startGateway(t, hub, func(g *config.Gateway) { g.ID, g.DrainBatch, g.DrainInterval = "b", 20, 50*time.Millisecond })
	waitFor(t, 10*time.Second, "both gateways in the locator", func() bool {
		_, out := call(t, api, "", "GET", "/v1/gateways?app=demo&device=x", nil)
		gws, _ := out["gateways"].([]any)
		return len(gws) == 2
	})
	const n = 200
	users := make([]string, n)
	cols := make([]*collector, n)
	for i := range users {
		users[i] = fmt.Sprintf("ru%d", i)
		cols[i] = newCollector()
		device(t, "", users[i], "d", cols[i], func(c *client.Config) { c.Addr, c.Locator = "", api })
	}
	waitFor(t, 20*time.Second, "devices connected", func() bool {
		return gwA.Gateway.Connections()+gwB.Gateway.Connections() == n
	})
	t.Logf("before: a %d, b %d devices", gwA.Gateway.Connections(), gwB.Gateway.Connections())
	pub := startPublisher(t, api, users, 2*time.Millisecond)

	upgrade := func(old *node.Node, id string) *node.Node {
		time.Sleep(500 * time.Millisecond)
		old.Gateway.Drain()
		select {
		case <-old.Gateway.Drained():
		case <-time.After(30 * time.Second):
			t.Fatalf("gateway %s did not drain", old.Gateway.ID())
		}
		old.Stop()
		return startGateway(t, hub, func(g *config.Gateway) { g.ID, g.DrainBatch, g.DrainInterval = id, 20, 50*time.Millisecond })
	}
	gwA2 := upgrade(gwA, "a2")
	waitFor(t, 10*time.Second, "a2 in the locator", func() bool {
		_, out := call(t, api, "", "GET", "/v1/gateways?app=demo&device=x", nil)
		return strings.Contains(fmt.Sprint(out), "a2")
	})
	gwB2 := upgrade(gwB, "b2")
	time.Sleep(500 * time.Millisecond)
	want := pub.finish()
	total := 0
	for i, u := range users {
		cols[i].waitCount(t, len(want[u]), 20*time.Second)
		checkExactlyOnceInOrder(t, cols[i].snapshot(), want[u])
		total += len(want[u])
	}
	t.Logf("%d messages to %d devices, each once and in order; after: a2 %d, b2 %d devices; %d publish retries",
		total, n, gwA2.Gateway.Connections(), gwB2.Gateway.Connections(), pub.fails)
}

// Gray release end to end: a canary rule sends half of the devices — the
// same ones on every connection — to the gateway of the new version, the
// rest to the stable one.
func TestCanaryRelease(t *testing.T) {
	cfg := testConfig(t)
	cfg.API.Locator.Canary = []config.Canary{{Version: "2.0.0", Share: 0.5}}
	hub, err := node.Start(cfg, node.Roles{EmbeddedNATS: true, Dispatcher: true}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Stop)
	old := node.Version
	t.Cleanup(func() { node.Version = old })
	node.Version = "1.0.0"
	stable := startGateway(t, hub, func(g *config.Gateway) { g.ID = "stable" })
	node.Version = "2.0.0"
	canary := startGateway(t, hub, func(g *config.Gateway) { g.ID = "canary" })
	node.Version = old
	api := apiURL(hub)
	waitFor(t, 10*time.Second, "both versions registered", func() bool {
		_, out := call(t, api, config.DevAdminKey, "GET", "/v1/admin/gateways", nil)
		gws, _ := out["gateways"].([]any)
		return len(gws) == 2
	})
	// Where the locator sends each device, then where it connects.
	const n = 40
	side := map[string]string{}
	var devs []*client.Client
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("c%d", i)
		_, out := call(t, api, "", "GET", "/v1/gateways?app=demo&device="+dev, nil)
		gws := out["gateways"].([]any)
		if len(gws) != 1 {
			t.Fatalf("%s offered %v: a canary rule offers one side only", dev, gws)
		}
		side[dev] = gws[0].(map[string]any)["version"].(string)
		devs = append(devs, device(t, "", "u"+dev, dev, newCollector(), func(c *client.Config) { c.Addr, c.Locator = "", api }))
	}
	waitFor(t, 20*time.Second, "devices connected", func() bool {
		return stable.Gateway.Connections()+canary.Gateway.Connections() == n
	})
	want := 0
	for _, v := range side {
		if v == "2.0.0" {
			want++
		}
	}
	if want == 0 || want == n {
		t.Fatalf("the canary share put %d of %d devices on 2.0.0", want, n)
	}
	if got := canary.Gateway.Connections(); got != want {
		t.Fatalf("canary gateway has %d devices, the locator sent %d", got, want)
	}
	t.Logf("%d of %d devices on the canary (share 0.5)", want, n)
}
