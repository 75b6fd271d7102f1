package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/node"
	"herald/offline"
	"herald/token"
	"herald/wire"
)

// api calls the demo app's API and decodes the JSON answer.
func api(t testing.TB, n *node.Node, method, path string, body any) (int, map[string]any) {
	t.Helper()
	return call(t, apiURL(n), config.DemoKey, method, "/v1/apps/demo"+path, body)
}

// pushJSON posts a push and returns the first stored seq.
func pushJSON(t testing.TB, n *node.Node, body map[string]any) uint64 {
	t.Helper()
	st, out := api(t, n, "POST", "/push", body)
	if st != 200 {
		t.Fatalf("push %v: %d %v", body, st, out)
	}
	msgs := out["messages"].([]any)
	if len(msgs) == 0 {
		return 0
	}
	return uint64(msgs[0].(map[string]any)["seq"].(float64))
}

// A topic message is stored once and reaches every subscribed device on
// both gateways exactly once: half subscribed by the device (SUB), half by
// the server (PUT /users/{user}/topics/{topic}). Broadcast reaches all.
func TestTopicAndBroadcastFanOutOverTwoGateways(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	gcfg := cfg
	gcfg.NATS.URL = n.NATS.ClientURL()
	gcfg.Gateway.Listen = "127.0.0.1:0"
	gcfg.Gateway.WSListen = ""
	n2, err := node.Start(gcfg, node.Roles{Gateway: true}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n2.Stop)

	const devices = 1000
	addrs := []string{n.Gateway.Addr().String(), n2.Gateway.Addr().String()}
	// The server-side half is subscribed before the devices connect.
	for i := 0; i < devices; i += 2 {
		if st, out := api(t, n, "PUT", fmt.Sprintf("/users/u%d/topics/news", i), nil); st != 200 {
			t.Fatalf("PUT topic: %d %v", st, out)
		}
	}
	if st, out := api(t, n, "GET", "/users/u0/topics", nil); st != 200 || fmt.Sprint(out["topics"]) != "[news]" {
		t.Fatalf("GET topics: %d %v", st, out)
	}
	cols := make([]*collector, devices)
	var subscribed atomic.Int64
	for i := range cols {
		cols[i] = newCollector()
		device(t, addrs[i%2], fmt.Sprintf("u%d", i), "d", cols[i], func(c *client.Config) {
			if i%2 == 1 {
				c.Topics = []string{"news"}
			}
			c.OnEvent = func(e client.Event) {
				if e.Kind == client.Subscribed && e.Channel == "t.news" {
					subscribed.Add(1)
				}
			}
		})
	}
	waitFor(t, 60*time.Second, "every device subscribed to t.news", func() bool { return subscribed.Load() >= devices })

	topicSeq := pushJSON(t, n, map[string]any{"topic": "news", "data": "extra! extra!"})
	bcastSeq := pushJSON(t, n, map[string]any{"broadcast": true, "data": "to everyone"})
	for _, c := range cols {
		c.waitCount(t, 2, 30*time.Second)
	}
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	for i, c := range cols {
		msgs := c.snapshot()
		if len(msgs) != 2 {
			t.Fatalf("device %d got %d messages: %+v", i, len(msgs), msgs)
		}
		got := map[string]uint64{msgs[0].Channel: msgs[0].Seq, msgs[1].Channel: msgs[1].Seq}
		if got["t.news"] != topicSeq || got["b.all"] != bcastSeq {
			t.Fatalf("device %d got %v", i, got)
		}
	}
	// Stored once: one message on the topic's subject.
	last, err := n.Store.LastSeq(context.Background(), offline.StoredSubject("demo", "t.news"))
	if err != nil || last != topicSeq {
		t.Fatalf("topic subject last %d %v", last, err)
	}
	// One NATS subscription per channel per gateway, not per device.
	for _, g := range []*node.Node{n, n2} {
		subs := gwMetric(t, g, "herald_gateway_nats_subscriptions")
		// devices/2 user channels + t.news + b.all
		if subs != devices/2+2 {
			t.Fatalf("gateway holds %v NATS subscriptions, want %d", subs, devices/2+2)
		}
		if held := gwMetric(t, g, "herald_gateway_held_bytes"); held != 0 {
			t.Fatalf("%v bytes of live messages still held with every device live", held)
		}
	}
}

// gwMetric reads one of a node's gateway metrics as a number.
func gwMetric(t testing.TB, n *node.Node, name string) float64 {
	t.Helper()
	var v float64
	if _, err := fmt.Sscan(metricValue(t, n, name), &v); err != nil {
		t.Fatalf("metric %s: %v", name, err)
	}
	return v
}

// A device that SUBs gets the topic; after UNSUB it gets nothing more, and
// a bad topic name is refused without closing the connection.
func TestDeviceSubUnsub(t *testing.T) {
	n := startNode(t, testConfig(t))
	col := newCollector()
	var refused atomic.Int64
	subscribed := make(chan string, 4)
	c := device(t, n.Gateway.Addr().String(), "alice", "d1", col, func(c *client.Config) {
		c.OnEvent = func(e client.Event) {
			switch e.Kind {
			case client.Subscribed:
				if strings.HasPrefix(e.Channel, "t.") {
					subscribed <- e.Channel
				}
			case client.Refused:
				refused.Add(1)
			}
		}
	})
	waitFor(t, 10*time.Second, "connected", func() bool { return c.Connects() == 1 })
	if err := c.Subscribe("sports"); err != nil {
		t.Fatal(err)
	}
	if ch := <-subscribed; ch != "t.sports" {
		t.Fatalf("subscribed %s", ch)
	}
	if err := c.Subscribe("bad.name"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the bad topic refused", func() bool { return refused.Load() == 1 })
	s1 := pushJSON(t, n, map[string]any{"topic": "sports", "data": "goal"})
	col.waitCount(t, 1, 5*time.Second)
	if err := c.Unsubscribe("sports"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	pushJSON(t, n, map[string]any{"topic": "sports", "data": "after unsub"})
	s3 := push(t, apiURL(n), "alice", "direct")
	col.waitCount(t, 2, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	msgs := col.snapshot()
	if len(msgs) != 2 || msgs[0].Seq != s1 || msgs[1].Seq != s3 {
		t.Fatalf("got %+v", msgs)
	}
	if c.Connects() != 1 {
		t.Fatal("the refused SUB closed the connection")
	}
}

// A reconnect with a 5,000-message backlog is announced with NOTIFY and
// pulled with SYNC in pages, in order, each message once.
func TestNotifyAndSyncLargeBacklog(t *testing.T) {
	cfg := testConfig(t)
	cfg.Store.MaxPerChannel = 10000
	n := startNode(t, cfg)
	const backlog = 5000
	msgs := make([]offline.Publish, backlog)
	for i := range msgs {
		msgs[i] = offline.Publish{App: "demo", Channel: "u.bulk", Data: []byte(fmt.Sprintf("m%d", i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stored, err := n.Store.PublishAll(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]uint64, backlog)
	for i := range stored {
		want[i] = stored[i].Seq
	}
	col := newCollector()
	var notifies atomic.Int64
	device(t, n.Gateway.Addr().String(), "bulk", "d1", col, func(c *client.Config) {
		c.SyncPage = 500
		c.OnEvent = func(e client.Event) {
			if e.Kind == client.Notified && e.Channel == "u.bulk" {
				notifies.Add(1)
			}
		}
	})
	col.waitCount(t, backlog, 60*time.Second)
	got := col.snapshot()
	checkExactlyOnceInOrder(t, got, want)
	for i, m := range got {
		if string(m.Data) != fmt.Sprintf("m%d", i) || !m.Replay {
			t.Fatalf("message %d: %q replay=%v", i, m.Data, m.Replay)
		}
	}
	// 5,000 in pages of 500: a NOTIFY before each page.
	if k := notifies.Load(); k < backlog/500 {
		t.Fatalf("%d NOTIFYs for %d messages in pages of 500", k, backlog)
	}
	// Live again afterwards.
	seq := push(t, apiURL(n), "bulk", "live")
	col.waitCount(t, backlog+1, 10*time.Second)
	if last := col.snapshot()[backlog]; last.Seq != seq || last.Replay {
		t.Fatalf("after the backlog: %+v", last)
	}
}

// A payload over the inline limit is announced, not pushed, and the device
// pulls it.
func TestNotifyForLargePayload(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.InlineLimit = 100
	n := startNode(t, cfg)
	col := newCollector()
	var notifies atomic.Int64
	c := device(t, n.Gateway.Addr().String(), "alice", "d1", col, func(c *client.Config) {
		c.OnEvent = func(e client.Event) {
			if e.Kind == client.Notified {
				notifies.Add(1)
			}
		}
	})
	waitFor(t, 10*time.Second, "connected", func() bool { return c.Connects() == 1 })
	time.Sleep(100 * time.Millisecond)
	small := push(t, apiURL(n), "alice", "small")
	big := push(t, apiURL(n), "alice", string(bytes.Repeat([]byte("x"), 1000)))
	after := push(t, apiURL(n), "alice", "small again")
	col.waitCount(t, 3, 10*time.Second)
	checkExactlyOnceInOrder(t, col.snapshot(), []uint64{small, big, after})
	if notifies.Load() == 0 {
		t.Fatal("the large payload was pushed without NOTIFY")
	}
}

// An expired message is never delivered: not to a device that comes back
// after its TTL, and the API reports it expired.
func TestExpiredMessageNotDelivered(t *testing.T) {
	n := startNode(t, testConfig(t))
	expiring := pushJSON(t, n, map[string]any{"users": []string{"carol"}, "data": "short-lived", "ttl": "1s"})
	keep := pushJSON(t, n, map[string]any{"users": []string{"carol"}, "data": "kept", "ttl": "1h"})
	time.Sleep(2100 * time.Millisecond)
	col := newCollector()
	device(t, n.Gateway.Addr().String(), "carol", "d1", col, nil)
	col.waitCount(t, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	msgs := col.snapshot()
	if len(msgs) != 1 || msgs[0].Seq != keep || msgs[0].Expires.IsZero() {
		t.Fatalf("got %+v", msgs)
	}
	st, out := api(t, n, "GET", fmt.Sprintf("/messages/%d", expiring), nil)
	if st != 200 || out["state"] != "expired" {
		t.Fatalf("status of the expired message: %d %v", st, out)
	}
	if st, out := api(t, n, "DELETE", fmt.Sprintf("/messages/%d", expiring), nil); st != 410 {
		t.Fatalf("recall of an expired message: %d %v", st, out)
	}
}

// A scheduled push is stored through a JetStream schedule, listed, may be
// cancelled, and is delivered no earlier than its time.
func TestScheduledPush(t *testing.T) {
	n := startNode(t, testConfig(t))
	col := newCollector()
	c := device(t, n.Gateway.Addr().String(), "dave", "d1", col, nil)
	waitFor(t, 10*time.Second, "connected", func() bool { return c.Connects() == 1 })
	at := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	st, out := api(t, n, "POST", "/push", map[string]any{"users": []string{"dave"}, "data": "on time", "at": at.Format(time.RFC3339)})
	if st != 200 || len(out["scheduled"].([]any)) != 1 {
		t.Fatalf("schedule: %d %v", st, out)
	}
	st, out = api(t, n, "POST", "/push", map[string]any{"users": []string{"dave"}, "data": "cancelled", "at": at.Add(time.Hour).Format(time.RFC3339)})
	if st != 200 {
		t.Fatalf("schedule: %d %v", st, out)
	}
	cancelID := out["scheduled"].([]any)[0].(map[string]any)["schedule"].(string)
	st, out = api(t, n, "GET", "/schedules", nil)
	if st != 200 || len(out["schedules"].([]any)) != 2 {
		t.Fatalf("list: %d %v", st, out)
	}
	if st, out := api(t, n, "DELETE", "/schedules/"+cancelID, nil); st != 200 {
		t.Fatalf("cancel: %d %v", st, out)
	}
	if st, _ := api(t, n, "DELETE", "/schedules/"+cancelID, nil); st != 404 {
		t.Fatalf("second cancel: %d", st)
	}
	for _, bad := range []string{"yesterday", time.Now().Add(-time.Minute).Format(time.RFC3339), time.Now().Add(30 * 24 * time.Hour).Format(time.RFC3339)} {
		if st, out := api(t, n, "POST", "/push", map[string]any{"users": []string{"dave"}, "data": "x", "at": bad}); st != 400 || out["error"].(map[string]any)["code"] != "invalid_at" {
			t.Fatalf("at %q: %d %v", bad, st, out)
		}
	}
	col.waitCount(t, 1, 15*time.Second)
	got := time.Now()
	if got.Before(at) {
		t.Fatalf("delivered at %v, before %v", got, at)
	}
	if m := col.snapshot()[0]; string(m.Data) != "on time" {
		t.Fatalf("got %+v", m)
	}
	st, out = api(t, n, "GET", "/schedules", nil)
	if st != 200 || len(out["schedules"].([]any)) != 0 {
		t.Fatalf("schedules left: %d %v", st, out)
	}
}

// A recalled message is revoked on the online device that got it and never
// reaches the offline one; status says recalled.
func TestRecall(t *testing.T) {
	n := startNode(t, testConfig(t))
	addr := n.Gateway.Addr().String()
	online := newCollector()
	var mu sync.Mutex
	var revoked []uint64
	c := device(t, addr, "erin", "phone", online, func(c *client.Config) {
		c.OnRevoke = func(ch string, seq uint64) {
			mu.Lock()
			revoked = append(revoked, seq)
			mu.Unlock()
		}
	})
	waitFor(t, 10*time.Second, "connected", func() bool { return c.Connects() == 1 })
	time.Sleep(100 * time.Millisecond)
	seq := push(t, apiURL(n), "erin", "oops")
	online.waitCount(t, 1, 5*time.Second)
	st, out := api(t, n, "DELETE", fmt.Sprintf("/messages/%d", seq), nil)
	if st != 200 || out["state"] != "recalled" {
		t.Fatalf("recall: %d %v", st, out)
	}
	waitFor(t, 5*time.Second, "REVOKE on the online device", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(revoked) == 1 && revoked[0] == seq
	})
	if st, out := api(t, n, "GET", fmt.Sprintf("/messages/%d", seq), nil); st != 200 || out["state"] != "recalled" {
		t.Fatalf("status: %d %v", st, out)
	}
	if st, out := api(t, n, "DELETE", fmt.Sprintf("/messages/%d", seq), nil); st != 200 || out["state"] != "recalled" {
		t.Fatalf("second recall: %d %v", st, out)
	}
	if st, _ := api(t, n, "DELETE", "/messages/999999", nil); st != 404 {
		t.Fatalf("recall of an unknown message: %d", st)
	}
	next := push(t, apiURL(n), "erin", "after")
	offline := newCollector()
	device(t, addr, "erin", "tablet", offline, nil)
	offline.waitCount(t, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if msgs := offline.snapshot(); len(msgs) != 1 || msgs[0].Seq != next {
		t.Fatalf("the offline device got %+v", msgs)
	}
}

// Every device of a user receives the user's messages with its own
// cursor; status lists which of the user's 3 devices acknowledged.
func TestMultiDeviceAndDeliveryStatus(t *testing.T) {
	n := startNode(t, testConfig(t))
	addr := n.Gateway.Addr().String()
	cols := map[string]*collector{"a": newCollector(), "b": newCollector(), "c": newCollector()}
	stop := map[string]func(){}
	for name, col := range cols {
		cfg := client.Config{Addr: addr, App: "demo", Device: name, Token: tokenFor("frank", name), Handler: col.handle,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
		cl, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = cl.Run(ctx) }()
		stop[name] = func() { cancel(); <-done }
		t.Cleanup(stop[name])
	}
	first := push(t, apiURL(n), "frank", "to all three")
	for _, col := range cols {
		col.waitCount(t, 1, 10*time.Second)
	}
	// c leaves; a and b get the next one.
	time.Sleep(300 * time.Millisecond) // cursors flushed (cursor_flush 100ms)
	stop["c"]()
	second := push(t, apiURL(n), "frank", "c is away")
	cols["a"].waitCount(t, 2, 10*time.Second)
	cols["b"].waitCount(t, 2, 10*time.Second)
	waitFor(t, 10*time.Second, "status with a and b acked", func() bool {
		st, out := api(t, n, "GET", fmt.Sprintf("/messages/%d", second), nil)
		if st != 200 || out["state"] != "stored" || out["channel"] != "u.frank" {
			t.Fatalf("status: %d %v", st, out)
		}
		acked := map[string]bool{}
		for _, d := range out["devices"].([]any) {
			dm := d.(map[string]any)
			acked[dm["device"].(string)] = dm["acked"].(bool)
		}
		return len(acked) == 3 && acked["a"] && acked["b"] && !acked["c"]
	})
	st, out := api(t, n, "GET", fmt.Sprintf("/messages/%d", first), nil)
	if st != 200 || len(out["devices"].([]any)) != 3 {
		t.Fatalf("status of the first: %d %v", st, out)
	}
	for _, d := range out["devices"].([]any) {
		if !d.(map[string]any)["acked"].(bool) {
			t.Fatalf("first message not acked by %v", d)
		}
	}
	// Another app's key cannot read this app's status.
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/apps/demo/messages/%d", apiURL(n), first), nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status with a wrong key: %d", resp.StatusCode)
	}
}

// Repeated and stale ACKs move no cursor back and cost no KV write; they
// are counted.
func TestDuplicateAcksSuppressed(t *testing.T) {
	n := startNode(t, testConfig(t))
	var seqs []uint64
	for i := 0; i < 3; i++ {
		seqs = append(seqs, push(t, apiURL(n), "gina", fmt.Sprint(i)))
	}
	tok, _ := token.Sign([]byte(config.DemoSecret), "demo", "gina", "d1", time.Hour)
	d := dialRaw(t, n.Gateway.Addr().String())
	if typ, _ := d.connect("demo", "d1", tok); typ != wire.TypeConnAck {
		t.Fatal(typ)
	}
	for range seqs {
		if typ, _, err := d.next(); err != nil || typ != wire.TypePush {
			t.Fatalf("%v %v", typ, err)
		}
	}
	metric := func(name string) float64 { return gwMetric(t, n, name) }
	writes0, stale0 := metric("herald_gateway_cursor_writes_total"), metric("herald_gateway_stale_acks_total")
	d.send((&wire.Ack{Slot: 0, Seq: seqs[2]}).Append(nil))
	waitFor(t, 5*time.Second, "the cursor written", func() bool { return metric("herald_gateway_cursor_writes_total") == writes0+1 })
	for i := 0; i < 5; i++ {
		d.send((&wire.Ack{Slot: 0, Seq: seqs[2]}).Append(nil))
		d.send((&wire.Ack{Slot: 0, Seq: seqs[0]}).Append(nil))
	}
	waitFor(t, 5*time.Second, "10 stale ACKs counted", func() bool { return metric("herald_gateway_stale_acks_total") == stale0+10 })
	time.Sleep(400 * time.Millisecond) // several cursor_flush periods
	if w := metric("herald_gateway_cursor_writes_total"); w != writes0+1 {
		t.Fatalf("%v cursor writes for one new ACK and ten stale ones", w-writes0)
	}
	cur, err := n.Store.Cursor(context.Background(), offline.CursorKey("demo", "gina", "d1", "u.gina"))
	if err != nil || cur != seqs[2] {
		t.Fatalf("cursor %d %v, want %d", cur, err, seqs[2])
	}
}

// A device's UP is stored on herald.up.<app> once however often it is
// retried with the same id, answered UPACK after the store acknowledged,
// and readable through the long-poll API.
func TestUpstream(t *testing.T) {
	n := startNode(t, testConfig(t))
	tok, _ := token.Sign([]byte(config.DemoSecret), "demo", "hank", "d1", time.Hour)
	d := dialRaw(t, n.Gateway.Addr().String())
	if typ, _ := d.connect("demo", "d1", tok); typ != wire.TypeConnAck {
		t.Fatal(typ)
	}
	// A long-poll waiting before anything is sent.
	polled := make(chan map[string]any, 1)
	go func() {
		_, out := api(t, n, "GET", "/upstream?after=0&wait=20s", nil)
		polled <- out
	}()
	time.Sleep(200 * time.Millisecond)
	var acks []wire.UpAck
	for i := 0; i < 3; i++ { // the device retries: the first UPACK was "lost"
		d.send((&wire.Up{ID: []byte("like-42"), Payload: []byte(`{"liked":42}`)}).Append(nil))
		typ, body, err := d.next()
		if err != nil || typ != wire.TypeUpAck {
			t.Fatalf("%v %v", typ, err)
		}
		var a wire.UpAck
		if err := a.Decode(body); err != nil || a.Code != 0 || string(a.ID) != "like-42" {
			t.Fatalf("UPACK %+v %v", a, err)
		}
		acks = append(acks, a)
	}
	if acks[0].Duplicate || !acks[1].Duplicate || !acks[2].Duplicate || acks[0].Seq != acks[2].Seq {
		t.Fatalf("acks %+v", acks)
	}
	select {
	case out := <-polled:
		msgs := out["messages"].([]any)
		if len(msgs) != 1 {
			t.Fatalf("long-poll got %v", out)
		}
		m := msgs[0].(map[string]any)
		if m["user"] != "hank" || m["device"] != "d1" || m["id"] != "like-42" || m["data"] != `{"liked":42}` {
			t.Fatalf("long-poll got %v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not return")
	}
	st, out := api(t, n, "GET", "/upstream?after=0", nil)
	if st != 200 || len(out["messages"].([]any)) != 1 {
		t.Fatalf("stored %d times: %v", len(out["messages"].([]any)), out)
	}
	last := uint64(out["last"].(float64))
	start := time.Now()
	st, out = api(t, n, "GET", fmt.Sprintf("/upstream?after=%d&wait=500ms", last), nil)
	if st != 200 || len(out["messages"].([]any)) != 0 || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("empty long-poll: %d %v after %v", st, out, time.Since(start))
	}
	for _, q := range []string{"?after=x", "?max=0", "?wait=1h"} {
		if st, _ := api(t, n, "GET", "/upstream"+q, nil); st != 400 {
			t.Fatalf("upstream%s: %d", q, st)
		}
	}
	// A malformed UP (empty id) is a protocol error.
	d.send((&wire.Up{Payload: []byte("x")}).Append(nil))
	d.expectError(wire.CodeMalformed)
}

// The SDK's Up retries until stored and reports the duplicate.
func TestClientUp(t *testing.T) {
	n := startNode(t, testConfig(t))
	col := newCollector()
	c := device(t, n.Gateway.Addr().String(), "ivy", "d1", col, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r1, err := c.Up(ctx, "order-1", []byte("buy"))
	if err != nil || r1.Duplicate || r1.Seq == 0 {
		t.Fatalf("%+v %v", r1, err)
	}
	r2, err := c.Up(ctx, "order-1", []byte("buy"))
	if err != nil || !r2.Duplicate || r2.Seq != r1.Seq {
		t.Fatalf("%+v %v", r2, err)
	}
}
