package e2e

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/wire"
)

func TestPublishRateLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []config.App{{Name: "lim", Keys: []string{"lim-key"}, Secrets: []string{"lim-secret"}, Limits: config.Limits{PublishRate: 5, PublishBurst: 5}}}
	n := startNode(t, cfg)
	base := apiURL(n)
	pushLim := func() (int, map[string]any) {
		return call(t, base, "lim-key", "POST", "/v1/apps/lim/push", map[string]any{"users": []string{"ann"}, "data": "x"})
	}
	for i := 0; i < 5; i++ {
		if st, out := pushLim(); st != 200 {
			t.Fatalf("push %d within the burst: %d %v", i, st, out)
		}
	}
	// The sixth in the same instant is refused, with when to retry.
	req, _ := http.NewRequest("POST", base+"/v1/apps/lim/push", strings.NewReader(`{"users":["ann"],"data":"x"}`))
	req.Header.Set("Authorization", "Bearer lim-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Fatalf("over the rate: %d", resp.StatusCode)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// Another app is not affected.
	if r := pushRaw(t, base, config.DemoApp, config.DemoKey, []byte(`{"users":["ann"],"data":"x"}`)); r.Status != 200 {
		t.Fatalf("demo app limited by lim's rate: %d", r.Status)
	}
	time.Sleep(time.Duration(ra) * time.Second)
	if st, out := pushLim(); st != 200 {
		t.Fatalf("after Retry-After: %d %v", st, out)
	}
	var sb strings.Builder
	n.Dispatcher.Metrics().WritePrometheus(&sb)
	if !strings.Contains(sb.String(), `herald_dispatcher_limited_total{limit="publish_rate"} 1`) {
		t.Fatalf("refusal not counted:\n%s", sb.String())
	}
}

func TestDeviceFrameRateAndTopicLimits(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.MaxFrameRate = 20
	cfg.Apps = []config.App{{Name: "lim", Keys: []string{"lim-key"}, Secrets: []string{"lim-secret"}, Limits: config.Limits{MaxTopics: 2}}}
	n := startNode(t, cfg)
	addr := n.Gateway.Addr().String()

	// ACKs are not counted: 200 in one burst are fine.
	d := dialRaw(t, addr)
	if typ, _ := d.connect("lim", "d1", mustToken(t, "lim-secret", "lim", "ann", "d1")); typ != wire.TypeConnAck {
		t.Fatalf("CONNECT: %s", typ)
	}
	var burst []byte
	for i := 0; i < 200; i++ {
		burst = (&wire.Ack{Slot: 0, Seq: 0}).Append(burst)
	}
	d.send(burst)
	d.expectPong("after 200 ACKs")
	// 30 PINGs in one burst are over 20 per second.
	var pings []byte
	for i := 0; i < 30; i++ {
		pings = (&wire.Ping{}).Append(pings)
	}
	d.send(pings)
	d.expectError(wire.CodeRateLimited)
	if v := metricValue(t, n, `herald_gateway_limited_total{limit="frame_rate"}`); v != "1" {
		t.Fatalf("frame-rate refusals counted %q", v)
	}

	// The app allows two topics per device: the third SUB closes.
	d2 := dialRaw(t, addr)
	if typ, _ := d2.connect("lim", "d2", mustToken(t, "lim-secret", "lim", "ann", "d2")); typ != wire.TypeConnAck {
		t.Fatalf("CONNECT: %s", typ)
	}
	for _, topic := range []string{"t.a", "t.b", "t.a"} { // t.a again is not a third
		d2.send((&wire.Sub{Channel: []byte(topic)}).Append(nil))
	}
	d2.expectPong("after two topics")
	d2.send((&wire.Sub{Channel: []byte("t.c")}).Append(nil))
	d2.expectError(wire.CodeTooManyChannels)
}

func TestMaxDevicesPerUser(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []config.App{{Name: "lim", Keys: []string{"lim-key"}, Secrets: []string{"lim-secret"}, Limits: config.Limits{MaxDevices: 2}}}
	n := startNode(t, cfg)
	base, addr := apiURL(n), n.Gateway.Addr().String()
	cols := []*collector{newCollector(), newCollector()}
	var devs []*client.Client
	for i, dev := range []string{"phone", "laptop"} {
		dev := dev
		devs = append(devs, device(t, addr, "ann", dev, cols[i], func(c *client.Config) {
			c.App = "lim"
			c.Token = func(context.Context) (string, error) { return mustToken(t, "lim-secret", "lim", "ann", dev), nil }
		}))
	}
	st, out := call(t, base, "lim-key", "POST", "/v1/apps/lim/push", map[string]any{"users": []string{"ann"}, "data": "x"})
	mustStatus(t, "push", st, out, 200, "")
	cols[0].waitCount(t, 1, 5*time.Second)
	cols[1].waitCount(t, 1, 5*time.Second)
	seq := strconv.FormatFloat(out["messages"].([]any)[0].(map[string]any)["seq"].(float64), 'f', 0, 64)
	waitFor(t, 5*time.Second, "both cursors stored", func() bool {
		_, o := call(t, base, "lim-key", "GET", "/v1/apps/lim/messages/"+seq, nil)
		ds, _ := o["devices"].([]any)
		return len(ds) == 2
	})

	// A third device of the same user is refused; another user is not.
	d := dialRaw(t, addr)
	if typ, _ := d.connect("lim", "tablet", mustToken(t, "lim-secret", "lim", "ann", "tablet")); typ != wire.TypeConnAck {
		t.Fatalf("CONNECT: %s", typ)
	}
	d.expectError(wire.CodeTooManyDevices)
	if v := metricValue(t, n, `herald_gateway_limited_total{limit="max_devices"}`); v != "1" {
		t.Fatalf("device refusals counted %q", v)
	}
	other := dialRaw(t, addr)
	if typ, _ := other.connect("lim", "tablet", mustToken(t, "lim-secret", "lim", "bob", "tablet")); typ != wire.TypeConnAck {
		t.Fatalf("CONNECT of another user: %s", typ)
	}
	other.expectPong("another user's device")
	// A known device still reconnects.
	again := dialRaw(t, addr)
	if typ, _ := again.connect("lim", "phone", mustToken(t, "lim-secret", "lim", "ann", "phone")); typ != wire.TypeConnAck {
		t.Fatalf("CONNECT of a known device: %s", typ)
	}
	again.expectPong("known device")
}

func TestConnectionsPerAddress(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.MaxConnsPerIP = 3
	n := startNode(t, cfg)
	addr := n.Gateway.Addr().String()
	from := func(src string) *rawDevice {
		t.Helper()
		dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		nc, err := dl.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return newRawDevice(t, nc)
	}
	var held []*rawDevice
	for i := 0; i < 3; i++ {
		held = append(held, from("127.0.0.1")) // never send CONNECT: still counted
	}
	from("127.0.0.1").expectError(wire.CodeTooManyConns)
	// Another address is not affected.
	d := from("127.0.0.2")
	if typ, _ := d.connect("demo", "d1", mustToken(t, config.DemoSecret, "demo", "ann", "d1")); typ != wire.TypeConnAck {
		t.Fatalf("from 127.0.0.2: %s", typ)
	}
	// A closed connection frees its place.
	held[0].nc.Close()
	waitFor(t, 5*time.Second, "a free place", func() bool {
		d := from("127.0.0.1")
		d.send((&wire.Ping{}).Append(nil)) // before CONNECT: unexpected, but answered with ERROR 1004, not 3008
		d.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		typ, body, _, err := wire.ReadFrame(d.r, nil, wire.DefaultMaxFrame)
		if err != nil || typ != wire.TypeError {
			return false
		}
		var e wire.Error
		return e.Decode(body) == nil && e.Code == wire.CodeUnexpected
	})
	if v := metricValue(t, n, `herald_gateway_limited_total{limit="conns_per_ip"}`); v == "" || v == "0" {
		t.Fatalf("per-address refusals counted %q", v)
	}
}
