package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/client"
	"herald/gateway"
)

func TestOnlineDelivery(t *testing.T) {
	n := startNode(t, testConfig(t))
	col := newCollector()
	c := device(t, n.Gateway.Addr().String(), "alice", "d1", col, nil)
	waitFor(t, 5*time.Second, "connect", func() bool { return c.Connects() == 1 })
	var want []uint64
	for i := 0; i < 3; i++ {
		want = append(want, push(t, apiURL(n), "alice", fmt.Sprintf("hello %d", i)))
	}
	col.waitCount(t, 3, 5*time.Second)
	msgs := col.snapshot()
	checkExactlyOnceInOrder(t, msgs, want)
	for i, m := range msgs {
		if m.Channel != "u.alice" || string(m.Data) != fmt.Sprintf("hello %d", i) || m.Replay {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	// Another user's message never reaches alice.
	push(t, apiURL(n), "bob", "not for alice")
	time.Sleep(100 * time.Millisecond)
	if col.count() != 3 {
		t.Fatalf("alice saw bob's message: %+v", col.snapshot())
	}
}

// A device that was away gets what was published meanwhile, and nothing it
// already had — from the server's cursor when the device kept no state, or
// from its own state file.
func TestOfflineDelivery(t *testing.T) {
	n := startNode(t, testConfig(t))
	addr, api := n.Gateway.Addr().String(), apiURL(n)
	state := filepath.Join(t.TempDir(), "cursors.json")
	for _, mode := range []string{"server-cursor", "state-file"} {
		t.Run(mode, func(t *testing.T) {
			user := "offline-" + mode
			mod := func(cfg *client.Config) {
				if mode == "state-file" {
					cfg.Cursors = &client.FileCursors{Path: state}
				}
			}
			first := push(t, api, user, "before")
			col := newCollector()
			ctx, cancel := context.WithCancel(context.Background())
			c, _ := client.New(clientConfig(addr, user, "phone", col, mod))
			done := make(chan struct{})
			go func() { defer close(done); c.Run(ctx) }()
			col.waitCount(t, 1, 5*time.Second)
			// Leave once the gateway wrote the ACK's cursor (a device
			// closed before its ACK is sent gets the message again).
			waitFor(t, 5*time.Second, "cursor write", func() bool {
				seq, _ := n.Store.Cursor(context.Background(), "demo."+user+".phone.u."+user)
				return seq == first
			})
			cancel()
			<-done
			if n.Gateway.Connections() != 0 {
				waitFor(t, 5*time.Second, "disconnect", func() bool { return n.Gateway.Connections() == 0 })
			}
			want := []uint64{push(t, api, user, "away 1"), push(t, api, user, "away 2")}

			col2 := newCollector()
			device(t, addr, user, "phone", col2, mod)
			col2.waitCount(t, 2, 5*time.Second)
			time.Sleep(100 * time.Millisecond)
			checkExactlyOnceInOrder(t, col2.snapshot(), want)
			if !col2.snapshot()[0].Replay {
				t.Fatal("offline message not marked as replayed from the store")
			}
		})
	}
}

func clientConfig(addr, user, dev string, col *collector, mod func(*client.Config)) client.Config {
	cfg := client.Config{Addr: addr, App: "demo", Device: dev, Handler: col.handle,
		Token:      tokenFor(user, dev),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// dropper wraps a client's dial so the test can cut its connection.
type dropper struct {
	mu   sync.Mutex
	conn net.Conn
}

func (d *dropper) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conn = c
		d.mu.Unlock()
	}
	return c, err
}

func (d *dropper) drop() {
	d.mu.Lock()
	if d.conn != nil {
		d.conn.Close()
	}
	d.mu.Unlock()
}

// 1,000 messages to one user while the device's connection is cut 5 times at
// random points: the application sees all of them exactly once, in order.
func TestThousandMessagesFiveDisconnects(t *testing.T) {
	n := startNode(t, testConfig(t))
	api := apiURL(n)
	const total = 1000
	col := newCollector()
	d := &dropper{}
	c := device(t, n.Gateway.Addr().String(), "alice", "d1", col, func(cfg *client.Config) { cfg.Dial = d.dial })
	waitFor(t, 5*time.Second, "connect", func() bool { return c.Connects() == 1 })

	// Cut points: 5 distinct random message counts.
	cuts := map[int]bool{}
	for len(cuts) < 5 {
		cuts[50+rand.IntN(650)] = true // leaves room for cuts deferred while reconnecting
	}
	want := make([]uint64, 0, total)
	var wantMu sync.Mutex
	var published atomic.Int64
	pubDone := make(chan struct{})
	var dropped atomic.Int64
	go func() {
		defer close(pubDone)
		lastConnects := c.Connects()
		for i := 0; i < total; i++ {
			seq := push(t, api, "alice", fmt.Sprintf("m%04d", i))
			wantMu.Lock()
			want = append(want, seq)
			wantMu.Unlock()
			published.Add(1)
			// Cut only a connection that is up: a cut due while the device
			// is still reconnecting waits for that connection (bounded).
			if cuts[i] {
				deadline := time.Now().Add(5 * time.Second)
				for !(c.Connects() > lastConnects || lastConnects == 1 && dropped.Load() == 0) && time.Now().Before(deadline) {
					time.Sleep(2 * time.Millisecond)
				}
				d.drop()
				dropped.Add(1)
				lastConnects = c.Connects()
			}
		}
	}()
	select {
	case <-pubDone:
	case <-time.After(60 * time.Second):
		t.Fatal("publishing did not finish")
	}
	col.waitCount(t, total, 30*time.Second)
	time.Sleep(200 * time.Millisecond) // anything extra would show up now
	checkExactlyOnceInOrder(t, col.snapshot(), want)
	if dropped.Load() != 5 || c.Connects() < 6 {
		t.Fatalf("%d cuts and %d connections: the cuts did not all happen", dropped.Load(), c.Connects())
	}
	for i, m := range col.snapshot() {
		if string(m.Data) != fmt.Sprintf("m%04d", i) {
			t.Fatalf("message %d carries %q", i, m.Data)
		}
	}
}

// The gateway is stopped and a new one started on the same port while a
// publisher keeps going: the device reconnects and loses nothing.
func TestGatewayRestartLosesNothing(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	api := apiURL(n)
	addr := n.Gateway.Addr().String()
	col := newCollector()
	c := device(t, addr, "alice", "d1", col, nil)
	waitFor(t, 5*time.Second, "connect", func() bool { return c.Connects() == 1 })

	var want []uint64
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			want = append(want, push(t, api, "alice", fmt.Sprintf("m%d", i)))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for round := 0; round < 2; round++ {
		time.Sleep(150 * time.Millisecond)
		n.Gateway.Stop()
		time.Sleep(100 * time.Millisecond) // published while no gateway runs
		gcfg := cfg.Gateway
		gcfg.Listen = addr
		gw := gateway.New(gcfg, gateway.Deps{NC: n.NC, Store: n.Store, Apps: n.Apps, Log: testLogger()})
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		n.Gateway = gw
		waitFor(t, 10*time.Second, "reconnect", func() bool { return c.Connects() == int64(round+2) })
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	<-pubDone
	col.waitCount(t, len(want), 15*time.Second)
	time.Sleep(100 * time.Millisecond)
	checkExactlyOnceInOrder(t, col.snapshot(), want)
	if c.Connects() < 3 {
		t.Fatalf("%d connections; expected a reconnect per restart", c.Connects())
	}
}
