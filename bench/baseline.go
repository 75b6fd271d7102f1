package bench

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"

	"herald/offline"
	"herald/token"
	"herald/wire"
)

// BaselineConfig configures the goroutine-per-connection baseline gateway.
type BaselineConfig struct {
	Listen        string // device TCP address
	MetricsListen string // /metrics address
	NATS          string // NATS URL
	App, Secret   string
	MaxTime       time.Duration // it stops by itself after this
	Ready         func(devices, metrics net.Addr)
}

// RunBaseline runs the design herald rejects, so the bench can measure both
// on one machine: a goroutine per connection with a 4 KiB bufio reader and
// writer each, blocking reads, and one NATS ChanSubscribe per user (the same
// subscription herald holds). It speaks enough of the protocol to
// authenticate devices and answer PINGs.
func RunBaseline(cfg BaselineConfig) error {
	if err := checkLoopback(cfg.Listen, cfg.MetricsListen, cfg.NATS); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxTime)
	defer cancel()
	nc, err := nats.Connect(cfg.NATS)
	if err != nil {
		return err
	}
	defer nc.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	mln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		ln.Close()
		return err
	}
	var conns atomic.Int64
	set := metrics.NewSet()
	set.NewGauge("herald_gateway_connections", func() float64 { return float64(conns.Load()) })
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		set.WritePrometheus(w)
		metrics.WriteProcessMetrics(w)
	})
	msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go msrv.Serve(mln)
	defer msrv.Close()
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr(), mln.Addr())
	}

	live := make(chan *nats.Msg, 1<<16)
	var byUser sync.Map // user → *baselineConn
	go func() {
		for m := range live {
			l, err := offline.ParseLive(m)
			if err != nil {
				continue
			}
			key, _ := offline.LiveKey(m.Subject)
			if c, ok := byUser.Load(key); ok {
				c.(*baselineConn).push(l.Seq, l.Data)
			}
		}
	}()
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			bc := &baselineConn{c: c, w: bufio.NewWriterSize(c, 4096)}
			r := bufio.NewReaderSize(c, 4096)
			user, err := bc.handshake(r, cfg)
			if err != nil {
				return
			}
			key := offline.ChannelKey(cfg.App, offline.UserChannel(user))
			sub, err := nc.ChanSubscribe(offline.LiveSubject(cfg.App, offline.UserChannel(user)), live)
			if err != nil {
				return
			}
			defer sub.Unsubscribe()
			byUser.Store(key, bc)
			defer byUser.Delete(key)
			conns.Add(1)
			defer conns.Add(-1)
			var buf []byte
			for {
				t, _, nb, err := wire.ReadFrame(r, buf, wire.DefaultMaxFrame)
				buf = nb
				if err != nil {
					return
				}
				if t == wire.TypePing {
					bc.write(wire.AppendPong(nil))
				}
			}
		}()
	}
	wg.Wait()
	return nil // stopped by MaxTime or a closed listener
}

type baselineConn struct {
	c  net.Conn
	mu sync.Mutex
	w  *bufio.Writer
}

func (b *baselineConn) write(frame []byte) {
	b.mu.Lock()
	b.w.Write(frame)
	b.w.Flush()
	b.mu.Unlock()
}

func (b *baselineConn) push(seq uint64, data []byte) {
	b.write((&wire.Push{Seq: seq, Payload: data}).Append(nil))
}

func (b *baselineConn) handshake(r *bufio.Reader, cfg BaselineConfig) (string, error) {
	b.c.SetDeadline(time.Now().Add(10 * time.Second))
	t, body, _, err := wire.ReadFrame(r, nil, wire.DefaultMaxFrame)
	if err != nil {
		return "", err
	}
	var f wire.Connect
	if t != wire.TypeConnect || f.Decode(body) != nil {
		return "", io.ErrUnexpectedEOF
	}
	user, err := token.Verify(f.Token, cfg.App, string(f.Device), [][]byte{[]byte(cfg.Secret)})
	if err != nil {
		b.write((&wire.Error{Code: wire.CodeTokenInvalid, Reason: []byte(err.Error())}).Append(nil))
		return "", err
	}
	b.write((&wire.ConnAck{Version: 1, HeartbeatMin: 5, HeartbeatMax: 600, Heartbeat: 30, MaxFrame: wire.DefaultMaxFrame,
		Channels: []wire.Channel{{Name: []byte(offline.UserChannel(user))}}}).Append(nil))
	b.c.SetDeadline(time.Time{})
	return user, nil
}
