package e2e

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/client"
)

// natProxy forwards TCP like a NAT box that forgets a mapping idle for
// longer than idle: from then on it silently drops everything (no reset),
// as carrier NATs do.
type natProxy struct {
	ln     net.Listener
	target string
	idle   time.Duration
	drops  atomic.Int64
	wg     sync.WaitGroup
}

func startNATProxy(t *testing.T, target string, idle time.Duration) *natProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &natProxy{ln: ln, target: target, idle: idle}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *natProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		var last atomic.Int64
		var dead atomic.Bool
		last.Store(time.Now().UnixNano())
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if !dead.Load() && time.Since(time.Unix(0, last.Load())) > p.idle {
						if dead.CompareAndSwap(false, true) {
							p.drops.Add(1)
						}
					}
					if !dead.Load() {
						last.Store(time.Now().UnixNano())
						dst.Write(buf[:n])
					}
				}
				if err != nil {
					c.Close()
					s.Close()
					return
				}
			}
		}
		p.wg.Add(2)
		go pipe(s, c)
		go pipe(c, s)
	}
}

func (p *natProxy) addr() string { return p.ln.Addr().String() }

// The SDK grows its PING interval while PONGs return, finds the NAT's idle
// limit by losing a connection past it, falls back to the last interval that
// worked and stays there; the gateway's deadline follows the interval the
// device reports, so the device is never cut for idleness.
func TestAdaptiveHeartbeatFindsTheNATLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 10 seconds of heartbeats")
	}
	cfg := testConfig(t)
	cfg.Gateway.HeartbeatMin = time.Second
	cfg.Gateway.HeartbeatMax = 30 * time.Second
	cfg.Gateway.Heartbeat = time.Second
	n := startNode(t, cfg)
	nat := startNATProxy(t, n.Gateway.Addr().String(), 2500*time.Millisecond)
	col := newCollector()
	var mu sync.Mutex
	var ends []string // why each connection ended, for a failure's message
	c := device(t, nat.addr(), "alice", "d1", col, func(cfg *client.Config) {
		cfg.HeartbeatGrowAfter = 1
		// Generous: a PONG late under -race on a busy box must not look
		// like the NAT's drop (it once did at 500 ms: a reconnect after
		// 1.1 s). A swallowed PING is still seen within 2 s.
		cfg.PongTimeout = 2 * time.Second
		cfg.OnEvent = func(e client.Event) {
			if e.Kind == client.Disconnected {
				mu.Lock()
				ends = append(ends, fmt.Sprint(e.Err))
				mu.Unlock()
			}
		}
	})
	// 1s, 2s work; 3s is past the NAT's 2.5s: the connection dies.
	waitFor(t, 15*time.Second, "the NAT to drop the connection and the device to reconnect", func() bool { return c.Connects() == 2 })
	if nat.drops.Load() != 1 {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("NAT dropped %d mappings; the first connection ended with: %q", nat.drops.Load(), ends)
	}
	if hb := c.HeartbeatInterval(); hb != 2*time.Second {
		t.Fatalf("after the failure the interval is %v, want the last good 2s", hb)
	}
	// It stays at 2s: no more drops, no idle-timeout from the gateway.
	time.Sleep(5 * time.Second)
	if c.Connects() != 2 || c.HeartbeatInterval() != 2*time.Second || nat.drops.Load() != 1 {
		t.Fatalf("connects %d, interval %v, drops %d", c.Connects(), c.HeartbeatInterval(), nat.drops.Load())
	}
	seq := push(t, apiURL(n), "alice", "still connected")
	col.waitCount(t, 1, 5*time.Second)
	checkExactlyOnceInOrder(t, col.snapshot(), []uint64{seq})
}
