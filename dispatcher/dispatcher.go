// Package dispatcher is herald's distribution layer: the HTTP API (fasthttp)
// that validates and authorizes publishes, stores them in JetStream on the
// channel subjects and answers only once the store acknowledged them. It never
// talks to gateways: they receive what the stream republishes.
package dispatcher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/offline"
)

// Deps are the dispatcher's connections to the rest of herald.
type Deps struct {
	NC    *nats.Conn
	Store *offline.Store
	Apps  *offline.Apps
	Log   *slog.Logger
	// WriteMetrics, if set, writes other components' metrics (a gateway in
	// the same process) after the dispatcher's own at /metrics.
	WriteMetrics func(w io.Writer)
	// Ready, if set, must also hold for /readyz (a gateway in the same
	// process that is draining makes the process not ready).
	Ready func() bool
}

// Dispatcher serves the HTTP API.
type Dispatcher struct {
	cfg      config.API
	storeCfg config.Store
	d        Deps
	log      *slog.Logger
	m        *dMetrics
	limiter  *publishLimiter
	registry registryCache
	admins   []string // SHA-256 hashes of the admin keys
	srv      *fasthttp.Server
	ln       net.Listener
	ready    atomic.Bool
	wg       sync.WaitGroup
	// ctx ends when Stop begins: long-polls answer at once.
	ctx    context.Context
	cancel context.CancelFunc
}

// New prepares a dispatcher; Start opens its listener.
func New(cfg config.API, storeCfg config.Store, d Deps) *Dispatcher {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	ds := &Dispatcher{cfg: cfg, storeCfg: storeCfg, d: d, log: d.Log.With("component", "dispatcher")}
	ds.m = newMetrics()
	ds.addReadiness()
	ds.limiter = newPublishLimiter(cfg.PublishRate)
	for _, k := range cfg.AdminKeys {
		ds.admins = append(ds.admins, offline.HashKey(k))
	}
	ds.ctx, ds.cancel = context.WithCancel(context.Background())
	ds.srv = &fasthttp.Server{
		Handler:                       ds.route,
		Name:                          "herald",
		MaxRequestBodySize:            cfg.MaxBody,
		ReadTimeout:                   cfg.ReadTimeout,
		WriteTimeout:                  cfg.ReadTimeout,
		IdleTimeout:                   time.Minute,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		ErrorHandler:                  ds.transportError,
		Logger:                        fasthttpLogger{ds.log},
	}
	return ds
}

func (ds *Dispatcher) isReady() bool {
	return ds.ready.Load() && ds.d.NC.IsConnected() && (ds.d.Ready == nil || ds.d.Ready())
}

// Metrics returns the dispatcher's metrics set.
func (ds *Dispatcher) Metrics() *metrics.Set { return ds.m.set }

// Addr is the listener's address once started.
func (ds *Dispatcher) Addr() net.Addr { return ds.ln.Addr() }

// Start opens the HTTP listener and serves in the background.
func (ds *Dispatcher) Start() error {
	var tlsCfg *tls.Config
	if ds.cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(ds.cfg.TLS.Cert, ds.cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("dispatcher: api.tls: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", ds.cfg.Listen)
	if err != nil {
		return fmt.Errorf("dispatcher: cannot listen on %s: %w", ds.cfg.Listen, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	ds.ln = ln
	ds.ready.Store(true)
	ds.wg.Add(1)
	go func() {
		defer ds.wg.Done()
		if err := ds.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			ds.log.Error("http server stopped", "err", err)
		}
	}()
	ds.log.Info("http api listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
	return nil
}

// Stop fails /readyz, then stops serving, letting requests in flight finish.
func (ds *Dispatcher) Stop() {
	ds.ready.Store(false)
	ds.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = ds.srv.ShutdownWithContext(ctx)
	// Shutdown only closes listeners Serve has registered: one that had not
	// got that far yet would serve forever.
	_ = ds.ln.Close()
	ds.wg.Wait()
}

// route dispatches by path. Paths under /v1/apps/{app}/ are the API.
func (ds *Dispatcher) route(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	path := string(ctx.Path())
	route := "other"
	switch {
	case path == "/healthz":
		route = "healthz"
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("ok\n")
	case path == "/readyz":
		route = "readyz"
		ctx.SetContentType("text/plain")
		if ds.isReady() {
			ctx.SetBodyString("ready\n")
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString("not ready\n")
		}
	case path == "/metrics":
		route = "metrics"
		ctx.SetContentType("text/plain; version=0.0.4")
		ds.m.set.WritePrometheus(ctx)
		if ds.d.WriteMetrics != nil {
			ds.d.WriteMetrics(ctx)
		}
		metrics.WriteProcessMetrics(ctx)
	default:
		app, rest, ok := appPath(path)
		switch {
		case ok && rest == "push":
			route = "push"
			if !ctx.IsPost() {
				ds.methodNotAllowed(ctx, "POST")
				break
			}
			ds.handlePush(ctx, app)
		case ok:
			route = ds.routeApp(ctx, app, rest)
		case path == "/v1/gateways":
			route = "locator"
			if !ctx.IsGet() {
				ds.methodNotAllowed(ctx, "GET")
				break
			}
			ds.locate(ctx)
		case path == "/ui" || strings.HasPrefix(path, "/ui/"):
			route = "ui"
			ds.serveUI(ctx, path)
		case strings.HasPrefix(path, "/v1/admin/"):
			route = ds.routeAdmin(ctx, path)
		default:
			writeError(ctx, fasthttp.StatusNotFound, "not_found", "no such endpoint: "+quote(path))
		}
	}
	ds.m.observe(route, ctx.Response.StatusCode(), start)
}

// appPath splits "/v1/apps/{app}/{rest}".
func appPath(p string) (app, rest string, ok bool) {
	const prefix = "/v1/apps/"
	if len(p) <= len(prefix) || p[:len(prefix)] != prefix {
		return "", "", false
	}
	p = p[len(prefix):]
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			return p[:i], p[i+1:], true
		}
	}
	return "", "", false
}

func (ds *Dispatcher) methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	writeError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "use "+allow)
}

// transportError answers requests fasthttp refused before the handler: a
// body over MaxBody, a timeout, a malformed request.
func (ds *Dispatcher) transportError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body over %d bytes", ds.cfg.MaxBody))
	case isTimeout(err):
		writeError(ctx, fasthttp.StatusRequestTimeout, "timeout", "request not received in time")
	default:
		writeError(ctx, fasthttp.StatusBadRequest, "bad_request", "malformed HTTP request")
	}
	ds.m.observe("transport", ctx.Response.StatusCode(), time.Now())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}
