package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"herald/client"
	"herald/config"
)

// With AckDelay a device acknowledges many messages with one ACK frame,
// and the server's cursor still reaches the last of them.
func TestAckDelayCoalescesAcks(t *testing.T) {
	n := startNode(t, testConfig(t))
	acks := func() int {
		v, _ := strconv.Atoi(metricValue(t, n, `herald_gateway_frames_in_total{type="ACK"}`))
		return v
	}
	col := newCollector()
	c := device(t, n.Gateway.Addr().String(), "ada", "d1", col, func(cfg *client.Config) { cfg.AckDelay = 400 * time.Millisecond })
	waitFor(t, 5*time.Second, "connect", func() bool { return c.Connects() == 1 })

	before := acks()
	var want []uint64
	for i := 0; i < 20; i++ {
		// One request each: the messages arrive in separate reads, and
		// without the delay each read would be acknowledged on its own.
		want = append(want, push(t, apiURL(n), "ada", fmt.Sprintf("m%d", i)))
		time.Sleep(5 * time.Millisecond)
	}
	col.waitCount(t, 20, 5*time.Second)
	checkExactlyOnceInOrder(t, col.snapshot(), want)
	last := want[len(want)-1]
	key := config.DemoApp + ".ada.d1.u.ada"
	waitFor(t, 5*time.Second, "the server's cursor at the last message", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		seq, err := n.Store.Cursor(ctx, key)
		return err == nil && seq == last
	})
	// 20 messages over ~0.2 s with a 0.4 s delay: one or two ACK frames
	// (three allows for a slow machine splitting the window).
	if got := acks() - before; got < 1 || got > 3 {
		t.Fatalf("%d ACK frames for 20 messages with AckDelay 400ms, want 1-3", got)
	}
}
