package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// opsServer serves /metrics, /healthz and /readyz for a role without the
// HTTP API (a standalone gateway).
type opsServer struct {
	srv   *http.Server
	ln    net.Listener
	ready atomic.Bool
	done  chan struct{}
}

func startOps(addr string, n *Node) (*opsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: cannot listen for metrics on %s: %w", addr, err)
	}
	o := &opsServer{ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if n.Dispatcher != nil {
			n.Dispatcher.Metrics().WritePrometheus(w)
		}
		if n.Gateway != nil {
			n.Gateway.Metrics().WritePrometheus(w)
		}
		metrics.WriteProcessMetrics(w)
	})
	// Profiles, for finding where memory and time go (the metrics address is
	// an operator's, loopback by default).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.ready.Load() && n.NC != nil && n.NC.IsConnected() && (n.Gateway == nil || !n.Gateway.Draining()) {
			fmt.Fprintln(w, "ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready")
	})
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(o.done)
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("metrics server stopped", "err", err)
		}
	}()
	return o, nil
}

func (o *opsServer) Addr() net.Addr { return o.ln.Addr() }

func (o *opsServer) stop() {
	o.ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
	<-o.done
}
