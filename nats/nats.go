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
