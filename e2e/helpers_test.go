package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/node"
	"herald/token"
)

// testConfig is a dev configuration on random loopback ports in a temp dir.
func testConfig(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.Dev = true
	cfg.Data = t.TempDir()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Gateway.Listen = "127.0.0.1:0"
	cfg.Gateway.WSListen = "127.0.0.1:0"
	cfg.Gateway.CursorFlush = 100 * time.Millisecond
	cfg.Gateway.Workers = 4
	cfg.Gateway.CatchupWorkers = 4
	return cfg
}

func testLogger() *slog.Logger {
	if os.Getenv("HERALD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startNode runs a whole herald (embedded NATS, dispatcher, gateway).
func startNode(t testing.TB, cfg config.Config) *node.Node {
	t.Helper()
	n, err := node.Start(cfg, node.Roles{EmbeddedNATS: true, Dispatcher: true, Gateway: true}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

func apiURL(n *node.Node) string { return "http://" + n.Dispatcher.Addr().String() }

type pushResult struct {
	Status int
	Body   map[string]any
	Seqs   []uint64
}

// pushRaw posts body to the app's push endpoint with key.
func pushRaw(t testing.TB, base, app, key string, body []byte) pushResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/apps/"+app+"/push", bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := pushResult{Status: resp.StatusCode}
	if err := json.Unmarshal(b, &r.Body); err != nil {
		t.Fatalf("answer is not JSON (status %d): %q", resp.StatusCode, b)
	}
	if msgs, ok := r.Body["messages"].([]any); ok {
		for _, m := range msgs {
			r.Seqs = append(r.Seqs, uint64(m.(map[string]any)["seq"].(float64)))
		}
	}
	return r
}

// push publishes data to user through the demo app and fails the test on a non-200.
func push(t testing.TB, base, user, data string) uint64 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"users": []string{user}, "data": data})
	r := pushRaw(t, base, config.DemoApp, config.DemoKey, body)
	if r.Status != 200 || len(r.Seqs) != 1 {
		t.Fatalf("push: %d %v", r.Status, r.Body)
	}
	return r.Seqs[0]
}

// collector records what a device's application saw.
type collector struct {
	mu   sync.Mutex
	msgs []client.Message
	seen map[uint64]int
	ch   chan struct{}
}

func newCollector() *collector { return &collector{seen: map[uint64]int{}, ch: make(chan struct{}, 1)} }

func (c *collector) handle(m client.Message) error {
	c.mu.Lock()
	m.Data = append([]byte(nil), m.Data...)
	c.msgs = append(c.msgs, m)
	c.seen[m.Seq]++
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *collector) snapshot() []client.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]client.Message(nil), c.msgs...)
}

// waitCount waits until the application saw n messages.
func (c *collector) waitCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d messages", n), func() bool { return c.count() >= n })
}

// device starts a client for user on the node's gateway; it stops with the test.
func device(t testing.TB, addr, user, dev string, col *collector, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{
		Addr: addr, App: config.DemoApp, Device: dev,
		Token: func(context.Context) (string, error) {
			return token.Sign([]byte(config.DemoSecret), config.DemoApp, user, dev, time.Hour)
		},
		Handler:    col.handle,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkExactlyOnceInOrder fails unless msgs are exactly want, in order, each once.
func checkExactlyOnceInOrder(t testing.TB, msgs []client.Message, want []uint64) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Fatalf("application saw %d messages, want %d", len(msgs), len(want))
	}
	for i := range want {
		if msgs[i].Seq != want[i] {
			t.Fatalf("message %d: seq %d, want %d", i, msgs[i].Seq, want[i])
		}
	}
}

func tokenFor(user, dev string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		return token.Sign([]byte(config.DemoSecret), config.DemoApp, user, dev, time.Hour)
	}
}
