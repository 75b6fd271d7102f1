package gateway

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"herald/config"
	"herald/offline"
	"herald/wire"
)

// The number of goroutines does not depend on the number of connections,
// and idle connections hold no read or write buffer.
func TestGoroutinesFlatAndIdleConnsHoldNoBuffers(t *testing.T) {
	h := newHarness(t, nil)
	h.connect("warmup", 0) // first connection starts nats.go's lazy goroutines
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 300
	devs := make([]*dev, n)
	for i := range devs {
		devs[i] = h.connect(fmt.Sprintf("u%d", i), 0)
	}
	waitFor(t, 5*time.Second, "all registered", func() bool { return h.gw.Connections() == n+1 })
	// Each device gets one message, so every connection has used its buffers once.
	for i := 0; i < n; i += 7 {
		h.publish(fmt.Sprintf("u%d", i), "x")
		devs[i].push()
	}
	time.Sleep(200 * time.Millisecond)
	after := runtime.NumGoroutine()
	if after-before > 5 {
		t.Fatalf("goroutines grew from %d to %d with %d connections", before, after, n)
	}
	for _, c := range h.gw.conns.snapshot() {
		c.mu.Lock()
		rd, out := c.rd, c.out
		c.mu.Unlock()
		if rd != nil || out != nil {
			t.Fatalf("idle connection %s holds buffers: partial %v, out %d", c.key, rd != nil, cap(out))
		}
	}
}

// The fd is used directly; the net.Conn that owns it must live as long as
// the connection, or a collected os.File would close the socket under us.
func TestConnectionsSurviveGC(t *testing.T) {
	h := newHarness(t, nil)
	const n = 100
	devs := make([]*dev, n)
	for i := range devs {
		devs[i] = h.connect(fmt.Sprintf("gc%d", i), 0)
	}
	for i := 0; i < 5; i++ {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	for i, d := range devs {
		seq := h.publish(fmt.Sprintf("gc%d", i), "after gc")
		if p := d.push(); p.Seq != seq {
			t.Fatalf("device %d: got seq %d want %d", i, p.Seq, seq)
		}
	}
}

// A device that stops reading is closed as a slow consumer once its output
// passes the bound; the other devices are not affected and the slow one
// catches up when it comes back.
func TestSlowConsumerClosedOthersUnharmed(t *testing.T) {
	h := newHarness(t, func(c *config.Gateway) { c.MaxOutBytes = 32 << 10; c.NotifyBacklog = 1 << 20 })
	slowConn, err := net.Dial("tcp", h.gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slowConn.Close() }) // also keeps it from being collected: it is never read
	slowConn.(*net.TCPConn).SetReadBuffer(4096)
	slow := &dev{t: t, nc: slowConn}
	slow.r = newReader(slowConn)
	tokenConnect(t, slow, "slow")
	fast := h.connect("fast", 0)

	payload := make([]byte, 2000)
	var last uint64
	deadline := time.Now().Add(20 * time.Second)
	for h.gw.m.slowConsumers.Get() == 0 {
		if time.Now().After(deadline) {
			var sb strings.Builder
			h.gw.m.set.WritePrometheus(&sb)
			t.Fatalf("the slow device was never closed (last seq %d, pending %d bytes)\n%s", last, h.gw.outPending.Load(), sb.String())
		}
		last = h.publish("slow", string(payload))
		if s := h.publish("fast", "ping"); fast.push().Seq != s {
			t.Fatal("fast device missed a message")
		}
	}
	// The close is counted once the connection is failed, just after the
	// slow consumer is.
	waitFor(t, 5*time.Second, "the slow device's disconnect", func() bool { return h.gw.m.disconnects[wire.CodeSlowConsumer].Get() >= 1 })
	if v := h.gw.m.disconnects[wire.CodeSlowConsumer].Get(); v != 1 {
		t.Fatalf("slow_consumer disconnects = %d", v)
	}
	// Reconnecting with its cursor at 0, it gets everything, the last included.
	again := h.connect("slow", 0)
	for {
		p := again.push()
		if p.Seq == last {
			break
		}
	}
}

// Frames that arrive while a connection's previous write is still being
// served go out together: a burst of live messages costs far fewer write
// syscalls than frames.
func TestWritesAreCoalesced(t *testing.T) {
	h := newHarness(t, nil)
	d := h.connect("burst", 0)
	msgs := make([]offline.Publish, 1000)
	for i := range msgs {
		msgs[i] = offline.Publish{App: "demo", Channel: "u.burst", Data: []byte("a burst of pushes")}
	}
	writes0 := h.gw.m.socketWrites.Get()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.store.PublishAll(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	last := res[len(res)-1].Seq
	for n := 0; ; n++ {
		if p := d.push(); p.Seq == last {
			if n != len(msgs)-1 {
				t.Fatalf("read %d messages", n+1)
			}
			break
		}
	}
	writes := h.gw.m.socketWrites.Get() - writes0
	if writes*2 > uint64(len(msgs)) {
		t.Fatalf("%d socket writes for %d frames: not coalesced", writes, len(msgs))
	}
	t.Logf("%d socket writes for %d frames", writes, len(msgs))
}

// A connection whose socket filled up (a write hit EAGAIN) is written again
// as soon as the device reads, not when the device next sends a frame: the
// gateway must wait for EPOLLOUT even though the connection was already
// armed for input.
func TestBlockedWriteResumesWhenTheDeviceReads(t *testing.T) {
	h := newHarness(t, func(c *config.Gateway) { c.MaxOutBytes = 64 << 20; c.NotifyBacklog = 1 << 20 })
	nc, err := net.Dial("tcp", h.gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	d := &dev{t: t, nc: nc, r: newReader(nc)}
	tokenConnect(t, d, "full")

	blocked := func() bool {
		for _, c := range h.gw.conns.snapshot() {
			c.mu.Lock()
			b := c.blocked
			c.mu.Unlock()
			if b {
				return true
			}
		}
		return false
	}
	// Fill the socket until a write would block; the device sends nothing.
	payload := strings.Repeat("x", 4000)
	var last uint64
	deadline := time.Now().Add(20 * time.Second)
	for !blocked() {
		if time.Now().After(deadline) {
			t.Fatalf("the socket never filled (last seq %d)", last)
		}
		msgs := make([]offline.Publish, 50)
		for i := range msgs {
			msgs[i] = offline.Publish{App: "demo", Channel: offline.UserChannel("full"), Data: []byte(payload)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := h.store.PublishAll(ctx, msgs)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		last = res[len(res)-1].Seq
		time.Sleep(10 * time.Millisecond)
	}
	// Now the device reads, and only reads: everything arrives (each read
	// waits at most 5 s; the heartbeat deadline is far away).
	for {
		if p := d.push(); p.Seq == last {
			break
		}
	}
}

// The conn struct is a large part of an idle device's heap (docs/
// benchmarks.md, idle connections): it must stay in the runtime's 128-byte
// size class, where one byte more costs 16.
func TestConnStaysIn128ByteSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 128 {
		t.Fatalf("conn is %d bytes: past the 128-byte size class", n)
	}
}

// ERROR and GOAWAY are the last frames a device gets: a catch-up or a
// live message queued while the connection is being closed is dropped,
// not written after them (a device saw a PUSH after its ERROR).
func TestNothingFollowsErrorOrGoAway(t *testing.T) {
	h := newHarness(t, nil)
	for _, end := range []string{"ERROR", "GOAWAY"} {
		d := h.connect("last-"+end, 0)
		var c *conn
		for _, cc := range h.gw.conns.snapshot() {
			if cc.user() == "last-"+end {
				c = cc
			}
		}
		if c == nil {
			t.Fatal("no connection")
		}
		if end == "ERROR" {
			c.fail(wire.CodeMalformed, "test")
		} else {
			c.goAway(wire.CodeShutdown, "test")
		}
		// A catch-up or live delivery that took the lock just after.
		c.mu.Lock()
		before := c.pendingLocked()
		c.appendLocked((&wire.Push{Slot: slotUser, Seq: 99, Payload: []byte("late")}).Append(nil))
		after := c.pendingLocked()
		c.mu.Unlock()
		if after != before {
			t.Fatalf("%s: a frame was queued after it (%d → %d bytes pending)", end, before, after)
		}
		// The device reads the end, then the connection closes.
		for {
			typ, _ := d.read()
			if typ == wire.TypePush {
				t.Fatalf("%s: PUSH", end)
			}
			if typ == wire.TypeError || typ == wire.TypeGoAway {
				break
			}
		}
		d.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := d.r.ReadByte(); err == nil {
			t.Fatalf("%s: more bytes after it (0x%02x)", end, b)
		}
	}
}
