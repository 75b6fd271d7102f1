// Package hnats starts herald's embedded nats-server and opens client
// connections with the options every herald role uses. The directory is
// nats/; the package is named hnats so it does not shadow nats.go.
package hnats

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures an embedded nats-server with JetStream.
type EmbeddedConfig struct {
	// Listen is the client address, host:port; port 0 or -1 picks a free port.
	Listen string
	// StoreDir is where JetStream keeps its files; the server adds "jetstream".
	StoreDir string
	// Name is the server name. Default "herald".
	Name string
}

// StartEmbedded starts nats-server with JetStream and waits until it is ready
// for connections.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("hnats: invalid listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("hnats: invalid port in %q", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if port != server.RANDOM_PORT {
		// nats-server logs nothing here (NoLog) and would only fail to
		// become ready: say at once why, as the gateway and the API do.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("hnats: cannot listen on %s: %w (is another herald or nats-server running?)", cfg.Listen, err)
		}
		_ = ln.Close()
	}
	if cfg.Name == "" {
		cfg.Name = "herald"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Clean(cfg.StoreDir),
		NoSigs:     true,
		NoLog:      true,
		// Gateways subscribe once per online user channel.
		MaxPending: 64 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("hnats: cannot create server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("hnats: embedded nats-server not ready after 10s (is the port in use?)")
	}
	return srv, nil
}

// Connect opens a client connection that reconnects forever and logs its
// state changes. name shows in the server's connection list.
func Connect(url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("hnats: cannot connect to %s: %w", url, err)
	}
	return nc, nil
}

// StartFromFile starts one nats-server node from a NATS configuration file
// (the server's own format: listen, server_name, jetstream { store_dir },
// cluster { name, listen, routes }) — `herald nats --config FILE`. JetStream
// is required: herald keeps everything in it. The node logs through log.
func StartFromFile(path string, log *slog.Logger) (*Node, error) {
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("hnats: %s: %w", path, err)
	}
	if !opts.JetStream {
		return nil, fmt.Errorf("hnats: %s: JetStream is off; herald needs jetstream { store_dir: ... }", path)
	}
	if opts.ServerName == "" {
		return nil, fmt.Errorf("hnats: %s: server_name is required (JetStream clusters name their nodes)", path)
	}
	if opts.MaxPending < 64<<20 {
		opts.MaxPending = 64 << 20 // gateways subscribe once per online user channel
	}
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("hnats: cannot create server: %w", err)
	}
	fatal := make(chan string, 1)
	srv.SetLoggerV2(slogAdapter{l: log, fatal: fatal}, opts.Debug, opts.Trace, false)
	go srv.Start()
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(30 * time.Second) }()
	select {
	case msg := <-fatal:
		// nats-server's own logger exits the process here; a node that
		// cannot listen for routes would otherwise run on alone.
		srv.Shutdown()
		return nil, fmt.Errorf("hnats: %s: %s", path, msg)
	case ok := <-ready:
		if !ok {
			srv.Shutdown()
			return nil, errors.New("hnats: nats-server not ready after 30s")
		}
	}
	n := &Node{Server: srv, Fatal: fatal, quit: make(chan struct{})}
	if opts.Cluster.Port != 0 {
		go announceRoutes(srv, opts, log, n.quit)
	}
	return n, nil
}

// Node is a nats-server started by StartFromFile.
type Node struct {
	*server.Server
	// Fatal receives what nats-server reported as fatal after it started
	// (a listener that failed, say): the node is then broken, and its
	// process should stop, as nats-server's own does.
	Fatal <-chan string

	quit chan struct{}
	stop sync.Once
}

// Shutdown stops the node's own work (announceRoutes) and the server.
func (n *Node) Shutdown() {
	n.stop.Do(func() { close(n.quit) })
	n.Server.Shutdown()
}

// slogAdapter is nats-server's logger on slog. Fatalf, after which
// nats-server expects its process to end, also goes to fatal (if not nil
// and not full).
type slogAdapter struct {
	l     *slog.Logger
	fatal chan<- string
}

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.l.Error(msg)
	select {
	case a.fatal <- msg:
	default:
	}
}
func (a slogAdapter) Errorf(format string, v ...any) { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
