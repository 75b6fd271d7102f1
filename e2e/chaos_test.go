package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"herald/client"
	"herald/config"
	"herald/nats/natstest"
	"herald/offline"
)

// chaosCluster is the cluster topology as real processes on free ports.
type chaosCluster struct {
	t          *testing.T
	bin, dir   string
	natsClient [3]string
	natsRoute  [3]string
	natsHTTP   [3]string
	nats       [3]*process
	gwAddr     [2]string
	gwMetrics  [2]string
	gw         [2]*process
	api        string
	disp       *process
}

func startChaosCluster(t *testing.T) *chaosCluster {
	c := &chaosCluster{t: t, bin: buildHerald(t)}
	// A port freeAddr found free can be taken before the node binds it
	// (another package's tests make connections meanwhile, from the same
	// range of ports): a node that exits at start is tried again, all
	// three on fresh ports.
	for attempt := 1; ; attempt++ {
		c.dir = t.TempDir()
		routes := &c.natsRoute
		for i := 0; i < 3; i++ {
			c.natsClient[i], routes[i], c.natsHTTP[i] = freeAddr(t), freeAddr(t), freeAddr(t)
		}
		for i := 0; i < 3; i++ {
			conf := fmt.Sprintf("server_name: n%d\nlisten: %s\nhttp: %s\njetstream { store_dir: %q }\ncluster { name: chaos, listen: %s, routes: [nats-route://%s, nats-route://%s, nats-route://%s] }\n",
				i+1, c.natsClient[i], c.natsHTTP[i], filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)), routes[i], routes[0], routes[1], routes[2])
			os.WriteFile(filepath.Join(c.dir, fmt.Sprintf("n%d.conf", i+1)), []byte(conf), 0o600)
		}
		for i := 0; i < 3; i++ {
			c.startNATS(i)
		}
		exited := c.natsUp(30 * time.Second)
		if exited < 0 {
			break
		}
		out := c.nats[exited].out.String()
		if attempt == 3 {
			t.Fatalf("NATS node %d exited at start, three times; its output:\n%s", exited+1, out)
		}
		t.Logf("NATS node %d exited at start (%s); again on other ports", exited+1, strings.TrimSpace(out))
		for _, p := range c.nats {
			kill9(t, p)
		}
	}
	urls := c.natsURL()
	c.api = freeAddr(t)
	os.WriteFile(filepath.Join(c.dir, "dispatcher.yaml"), []byte(fmt.Sprintf("nats: {url: %q}\napi: {listen: %q, admin_keys: [chaos-admin-key]}\napps:\n  - {name: demo, keys: [demo-key], secrets: [demo-secret]}\n", urls, c.api)), 0o600)
	c.disp = start(t, c.dir, c.bin+" dispatcher --config dispatcher.yaml")
	c.disp.waitRunning(t, 40*time.Second, "the dispatcher")
	for i := 0; i < 2; i++ {
		c.gwAddr[i], c.gwMetrics[i] = freeAddr(t), freeAddr(t)
		os.WriteFile(filepath.Join(c.dir, fmt.Sprintf("gw%d.yaml", i+1)), []byte(fmt.Sprintf(
			"nats: {url: %q}\nmetrics_listen: %q\nlog_level: debug\ngateway: {id: gw%d, listen: %q, ws_listen: \"\", cursor_flush: 200ms}\n",
			urls, c.gwMetrics[i], i+1, c.gwAddr[i])), 0o600)
		c.startGateway(i)
	}
	return c
}

func (c *chaosCluster) startNATS(i int) {
	c.nats[i] = start(c.t, c.dir, fmt.Sprintf("%s nats --config n%d.conf --log-level warn", c.bin, i+1))
}

// natsUp waits until the three nodes answer /healthz with 200 and returns
// -1, or returns the index of a node whose process exited meanwhile.
func (c *chaosCluster) natsUp(timeout time.Duration) int {
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		up := 0
		for i, p := range c.nats {
			select {
			case err := <-p.done:
				p.done <- err
				return i
			default:
			}
			if resp, err := http.Get("http://" + c.natsHTTP[i] + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					up++
				}
			}
		}
		if up == 3 {
			return -1
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the NATS nodes not healthy after %v; their output:\n1: %s\n2: %s\n3: %s", timeout, c.nats[0].out.String(), c.nats[1].out.String(), c.nats[2].out.String())
		}
	}
}

func (c *chaosCluster) waitNATS(i int) {
	waitFor(c.t, 30*time.Second, fmt.Sprintf("NATS node %d healthy", i+1), func() bool {
		resp, err := http.Get("http://" + c.natsHTTP[i] + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (c *chaosCluster) startGateway(i int) {
	p := start(c.t, c.dir, fmt.Sprintf("%s gateway --config gw%d.yaml", c.bin, i+1))
	// Longer than the gateway's own 30 s to start, so that a start that
	// fails shows the gateway's error rather than an empty output.
	p.waitRunning(c.t, 40*time.Second, fmt.Sprintf("gateway %d", i+1))
	c.gw[i] = p
}

func kill9(t *testing.T, p *process) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
}

// The chaos test: a 3-node NATS cluster (R3 streams), 2 gateways and a
// dispatcher as real processes, 2,000 devices, steady publishing to users
// and topics; one gateway is killed with -9 and restarted, then one NATS
// node is killed with -9 and restarted, then the routes of gateway 2's
// NATS node are cut every 100 ms for 2 s (ss -K, where it can: flapping
// that loses live copies between two pulses, which the node's word that
// its routes are back covers). At the end every device's application has
// seen every message addressed to it exactly once, in order per channel.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of processes")
	}
	c := startChaosCluster(t)
	api := "http://" + c.api
	const devices, topics = 2000, 4
	type dev struct {
		user, topic string
		col         *collector
		cl          *client.Client
		evMu        sync.Mutex
		events      []string // what happened to the connection, for a failure's report
	}
	var subscribed atomic.Int32
	devs := make([]*dev, devices)
	for i := range devs {
		d := &dev{user: fmt.Sprintf("u%d", i), topic: fmt.Sprintf("topic%d", i%topics), col: newCollector()}
		devs[i] = d
		cl, err := client.New(client.Config{
			Fallback: c.gwAddr[:], App: "demo", Device: "d", Token: tokenFor(d.user, "d"), Handler: d.col.handle,
			Topics: []string{d.topic}, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
			OnEvent: func(e client.Event) {
				if e.Kind == client.Subscribed && e.Channel == "t."+d.topic {
					subscribed.Add(1)
				}
				d.evMu.Lock()
				d.events = append(d.events, fmt.Sprintf("%s %d %s %v (received %d)", time.Now().Format("15:04:05.000"), e.Kind, e.Channel, e.Err, d.col.count()))
				d.evMu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		d.cl = cl
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = cl.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	waitFor(t, 60*time.Second, "2,000 devices subscribed to their topic", func() bool { return subscribed.Load() >= devices })

	// Steady publishing: users at random, every 20th message to a topic.
	var mu sync.Mutex
	want := map[string][]uint64{}     // user or topic channel → seqs
	answered := map[uint64][]string{} // seq → the publishes answered with it, for a failure's report
	stop := make(chan struct{})
	var retries atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			hc := &http.Client{Timeout: 10 * time.Second}
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				var body, ch string
				if i%20 == 0 {
					topic := fmt.Sprintf("topic%d", rng.IntN(topics))
					body, ch = fmt.Sprintf(`{"topic":%q,"data":"t","id":"w%d-%d"}`, topic, w, i), "t."+topic
				} else {
					user := fmt.Sprintf("u%d", rng.IntN(devices))
					body, ch = fmt.Sprintf(`{"users":[%q],"data":"m","id":"w%d-%d"}`, user, w, i), "u."+user
				}
				for attempt := 0; ; attempt++ {
					req, _ := http.NewRequest("POST", api+"/v1/apps/demo/push", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+config.DemoKey)
					resp, err := hc.Do(req)
					if err == nil && resp.StatusCode == 200 {
						var out struct {
							Messages []struct {
								Seq       uint64
								Duplicate bool
							} `json:"messages"`
						}
						decodeJSONBody(resp, &out)
						seq := out.Messages[0].Seq
						mu.Lock()
						want[ch] = append(want[ch], seq)
						answered[seq] = append(answered[seq], fmt.Sprintf("%s id w%d-%d attempt %d duplicate %v at %s", ch, w, i, attempt, out.Messages[0].Duplicate, time.Now().Format("15:04:05.000")))
						mu.Unlock()
						break
					}
					if resp != nil {
						resp.Body.Close()
					}
					retries.Add(1)
					if attempt == 300 {
						t.Errorf("a publish was not stored after 300 attempts")
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}(w)
	}
	step := func(d time.Duration, what string, f func()) {
		time.Sleep(d)
		t.Logf("%s", what)
		f()
	}
	step(2*time.Second, "kill -9 gateway 1", func() { kill9(t, c.gw[0]) })
	killed := time.Now()
	waitFor(t, 15*time.Second, "the dead gateway to leave the registry", func() bool {
		_, out := call(t, api, "chaos-admin-key", "GET", "/v1/admin/gateways", nil)
		gws, _ := out["gateways"].([]any)
		return len(gws) == 1
	})
	t.Logf("the killed gateway left the registry after %v", time.Since(killed).Round(100*time.Millisecond))
	step(2*time.Second, "restart gateway 1", func() { c.startGateway(0) })
	step(2*time.Second, "kill -9 NATS node 2", func() { kill9(t, c.nats[1]) })
	step(3*time.Second, "restart NATS node 2", func() { c.startNATS(1); c.waitNATS(1) })
	if err := canDestroySockets(); err != nil {
		t.Logf("no route flapping: cannot cut TCP connections here: %v", err)
	} else {
		step(2*time.Second, "cut gateway 2's NATS node's routes every 100 ms for 2 s", func() {
			g, cut := c.nodeOf(c.gw[1]), 0
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				cut += c.cutRoutes(g)
			}
			t.Logf("cut %d route connections of NATS node %d", cut, g+1)
		})
	}
	step(3*time.Second, "stop publishing", func() { close(stop); wg.Wait() })
	stopped := time.Now()

	// Concurrent publishers record their seqs in the order the answers came.
	for _, seqs := range want {
		slices.Sort(seqs)
	}
	// Every device's application saw exactly what was addressed to it,
	// once, in order per channel.
	total, replayed, reconnected := 0, 0, 0
	var mismatches []string
	odd := map[uint64]bool{} // seqs delivered but not answered, or answered but not delivered
	for _, d := range devs {
		uc, tc := "u."+d.user, "t."+d.topic
		n := len(want[uc]) + len(want[tc])
		deadline := time.Now().Add(60 * time.Second)
		for d.col.count() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if d.col.count() < n {
			got := map[string][]uint64{}
			for _, m := range d.col.snapshot() {
				got[m.Channel] = append(got[m.Channel], m.Seq)
			}
			_, report := call(t, api, "chaos-admin-key", "GET", "/v1/admin/apps/demo/users/"+d.user, nil)
			d.evMu.Lock()
			events := strings.Join(d.events, "\n  ")
			d.evMu.Unlock()
			for i := range c.gw {
				resp, err := http.Get("http://" + c.gwMetrics[i] + "/metrics")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					for _, line := range strings.Split(string(b), "\n") {
						if strings.Contains(line, "catchup") || strings.Contains(line, "held") || strings.Contains(line, "errors") || strings.Contains(line, "connections ") || strings.Contains(line, "slow") || strings.Contains(line, "queue") {
							t.Logf("gw%d %s", i+1, line)
						}
					}
				}
				lines := strings.Split(c.gw[i].out.String(), "\n")
				var keep []string
				for _, l := range lines {
					if !strings.Contains(l, "closing device connection") {
						keep = append(keep, l)
					}
				}
				if len(keep) > 60 {
					keep = keep[len(keep)-60:]
				}
				t.Logf("gw%d log:\n%s", i+1, strings.Join(keep, "\n"))
			}
			t.Fatalf("%s (connects %d) saw %d of %d messages after 60 s:\n%s got %v\n   want %v\n%s got %v\n   want %v\nserver: %v\nevents:\n  %s",
				d.user, d.cl.Connects(), d.col.count(), n, uc, got[uc], want[uc], tc, got[tc], want[tc], report, events)
		}
		got := map[string][]uint64{}
		for _, m := range d.col.snapshot() {
			got[m.Channel] = append(got[m.Channel], m.Seq)
			if m.Replay {
				replayed++
			}
		}
		for _, ch := range []string{uc, tc} {
			if fmt.Sprint(got[ch]) != fmt.Sprint(want[ch]) {
				extra, missing := difference(got[ch], want[ch]), difference(want[ch], got[ch])
				switch n := len(mismatches); {
				case n == 0:
					mismatches = append(mismatches, fmt.Sprintf("%s on %s: got %v\n   want %v", d.user, ch, got[ch], want[ch]))
					fallthrough
				case n < 20:
					mismatches = append(mismatches, fmt.Sprintf("%s on %s: %d delivered, %d answered; delivered and not answered %v, answered and not delivered %v",
						d.user, ch, len(got[ch]), len(want[ch]), extra, missing))
				}
				for _, q := range append(extra, missing...) {
					odd[q] = true
				}
			}
		}
		if len(got) != 2 && !(len(got) == 1 && n == len(got[uc])+len(got[tc])) {
			t.Fatalf("%s got channels %v", d.user, got)
		}
		total += n
		if d.cl.Connects() > 1 {
			reconnected++
		}
	}
	if len(mismatches) > 0 {
		// What the stream holds at each odd seq, and which publishes were
		// answered with it, tell a wrong answer from a wrong delivery.
		for _, q := range slices.Sorted(maps.Keys(odd)) {
			mismatches = append(mismatches, fmt.Sprintf("seq %d: stored %s; answered to %v", q, c.storedAt(q), answered[q]))
		}
		t.Fatalf("devices saw other messages than the API answered:\n%s", strings.Join(mismatches, "\n"))
	}
	t.Logf("%d messages delivered to 2,000 devices exactly once and in order (all %v after the last publish); %d devices reconnected; %d messages delivered from the store after a reconnect; %d publish retries",
		total, time.Since(stopped).Round(100*time.Millisecond), reconnected, replayed, retries.Load())

	// SIGTERM drains a gateway: its devices move to the other one, then it exits.
	start := time.Now()
	c.gw[1].cmd.Process.Signal(syscall.SIGTERM)
	if err := c.gw[1].wait(t, 70*time.Second); err != nil {
		t.Fatalf("gateway 2 after SIGTERM: %v\n%s", err, c.gw[1].out.String())
	}
	if out := c.gw[1].out.String(); !strings.Contains(out, "draining before exit") || !strings.Contains(out, "drained") {
		t.Fatalf("gateway 2 did not drain:\n%s", out)
	}
	waitFor(t, 30*time.Second, "every device on gateway 1", func() bool {
		_, st := call(t, api, "chaos-admin-key", "GET", "/v1/admin/gateways", nil)
		gws, _ := st["gateways"].([]any)
		return len(gws) == 1 && gws[0].(map[string]any)["connections"].(float64) == devices
	})
	t.Logf("SIGTERM drained gateway 2 in %v; its devices are on gateway 1", time.Since(start).Round(100*time.Millisecond))
}

// difference is what of a is not in b, with repeats: a seq twice in a and
// once in b is in it once.
func difference(a, b []uint64) []uint64 {
	n := map[uint64]int{}
	for _, q := range b {
		n[q]++
	}
	var out []uint64
	for _, q := range a {
		if n[q] > 0 {
			n[q]--
		} else {
			out = append(out, q)
		}
	}
	return out
}

// natsURL is the client URL of the cluster's NATS nodes (0-based), all of
// them when none is named.
func (c *chaosCluster) natsURL(nodes ...int) string {
	if len(nodes) == 0 {
		nodes = []int{0, 1, 2}
	}
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = "nats://" + c.natsClient[n]
	}
	return strings.Join(urls, ",")
}

// jetStream connects to the named NATS nodes (all without any) for the
// rest of the test.
func (c *chaosCluster) jetStream(nodes ...int) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc := natstest.Connect(c.t, c.natsURL(nodes...))
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// storedAt describes the HERALD stream's message at seq: its subject and
// idempotency id, read from the cluster with the leader's answer.
func (c *chaosCluster) storedAt(seq uint64) string {
	nc, err := nats.Connect(c.natsURL(), nats.Timeout(5*time.Second))
	if err != nil {
		return err.Error()
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, offline.StreamName)
	if err != nil {
		return err.Error()
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s id %q data %q at %s", m.Subject, m.Header.Get(nats.MsgIdHdr), m.Data, m.Time.Format("15:04:05.000"))
}

func decodeJSONBody(resp *http.Response, v any) {
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(v)
}

// hole is a 3-node cluster whose gateway 1 holds alice's device, and a
// message for alice stored without a live copy: the stream's RePublish was
// taken off while it was stored, and is back on when makeHole returns.
// Nothing on the channel after it reveals the hole by gap detection.
type hole struct {
	c   *chaosCluster
	col *collector
	cl  *client.Client
	nc  *nats.Conn
	st  jetstream.Stream
	seq uint64 // the message without a live copy ("m2")
}

// makeHole makes the hole; withPulse false first removes the stream's
// pulse (which would reveal the hole within a second).
func makeHole(t *testing.T, withPulse bool) *hole {
	h := &hole{c: startChaosCluster(t), col: newCollector()}
	api := "http://" + h.c.api
	h.cl = device(t, h.c.gwAddr[0], "alice", "d", h.col, nil)
	push(t, api, "alice", "m1")
	h.col.waitCount(t, 1, 30*time.Second)
	// A new channel gets a second look at the store a second after its
	// subscription (gateway.settle), which would fill the hole by itself.
	waitFor(t, 10*time.Second, "gateway 1's settle checks of the device's channels", func() bool {
		return counted(gatewayMetrics(t, h.c.gwMetrics[0]), "herald_gateway_channel_settle_checks_total")
	})
	time.Sleep(300 * time.Millisecond) // the channels were made together: their checks come together

	var js jetstream.JetStream
	h.nc, js = h.c.jetStream()
	jctx, jcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer jcancel()
	var err error
	if h.st, err = js.Stream(jctx, offline.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.GetLastMsgForSubject(jctx, offline.PulseScheduleSubject); err != nil {
		t.Fatalf("the dispatcher made no pulse for the cluster: %v", err)
	}
	if withPulse {
		// A gateway checks a pulse against the one before it.
		waitFor(t, 10*time.Second, "gateway 1's first pulse", func() bool {
			return counted(gatewayMetrics(t, h.c.gwMetrics[0]), "herald_gateway_stream_pulses_total")
		})
	} else if err := h.st.Purge(jctx, jetstream.WithPurgeSubject(offline.PulseScheduleSubject)); err != nil {
		t.Fatalf("removing the pulse: %v", err)
	}
	cfg := h.st.CachedInfo().Config
	bare := cfg
	bare.RePublish = nil
	if _, err := js.UpdateStream(jctx, bare); err != nil {
		t.Fatalf("taking RePublish off: %v", err)
	}
	h.seq = push(t, api, "alice", "m2")
	if withPulse {
		waitFor(t, 10*time.Second, "a pulse stored after the message", func() bool {
			m, err := h.st.GetLastMsgForSubject(jctx, offline.PulseSubject)
			return err == nil && m.Sequence > h.seq
		})
	} else {
		time.Sleep(1500 * time.Millisecond)
	}
	if n := h.col.count(); n != 1 {
		t.Fatalf("the device got %d messages while the stream republished nothing: the test made no hole", n)
	}
	if _, err := js.UpdateStream(jctx, cfg); err != nil {
		t.Fatalf("putting RePublish back: %v", err)
	}
	return h
}

// gotTheHole checks that the device got the message of the hole on its
// first connection, and returns gateway 1's metrics.
func (h *hole) gotTheHole(t *testing.T, within time.Duration) string {
	t.Helper()
	h.col.waitCount(t, 2, within)
	if got := h.col.snapshot()[1]; got.Seq != h.seq || string(got.Data) != "m2" || h.cl.Connects() != 1 {
		t.Fatalf("got seq %d %q after %d connects, want seq %d \"m2\" on the first connection", got.Seq, got.Data, h.cl.Connects(), h.seq)
	}
	return gatewayMetrics(t, h.c.gwMetrics[0])
}

// gatewayMetrics returns the text of a gateway's /metrics.
func gatewayMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// counted reports whether the metrics text has the counter above 0.
func counted(metrics, name string) bool {
	return metricIn(metrics, name) > 0
}

// metricIn is the value of the counter name in a /metrics text (0: not
// there).
func metricIn(metrics, name string) int {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// A live copy lost with a dying stream leader leaves a hole that gap
// detection finds only when the channel's next message comes. With the
// stream's pulse removed, the stream's next leader (a stepdown) must make
// the gateway read the store, so the device gets the message without a
// reconnect and without a later message.
func TestStreamLeaderChangeFillsLostLiveCopies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of processes")
	}
	h := makeHole(t, false)
	time.Sleep(1500 * time.Millisecond)
	if n := h.col.count(); n != 1 {
		t.Fatalf("the device got %d messages before the leader changed: the test shows nothing", n)
	}
	leader := func() string {
		ictx, icancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer icancel()
		info, err := h.st.Info(ictx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	before := leader()
	if r, err := h.nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+offline.StreamName, nil, 10*time.Second); err != nil || !strings.Contains(string(r.Data), `"success":true`) {
		t.Fatalf("stream leader stepdown from %q: %v %s", before, err, r.Data)
	}
	waitFor(t, 20*time.Second, "a new stream leader", func() bool { l := leader(); return l != "" && l != before })
	if m := h.gotTheHole(t, 15*time.Second); !counted(m, "herald_gateway_stream_leader_resyncs_total") {
		t.Fatalf("the gateway counted no resync after the leader change:\n%s", m)
	}
}

// Live copies lost between the stream's leader and a gateway while the
// leader stays (a route that broke and healed) leave the same hole. The
// stream's pulse, stored by the leader every second and lost on the same
// way, shows it: the gateway reads the store within about a second, with
// no leader change, no reconnect and no later message.
func TestLostPulsesFillLostLiveCopies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of processes")
	}
	h := makeHole(t, true)
	m := h.gotTheHole(t, 5*offline.PulseInterval)
	if !counted(m, "herald_gateway_stream_pulse_resyncs_total") || counted(m, "herald_gateway_stream_leader_resyncs_total") {
		t.Fatalf("want a pulse re-sync and no leader re-sync:\n%s", m)
	}
}
