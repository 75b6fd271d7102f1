// Package node assembles one herald process from its parts: an embedded
// nats-server with JetStream (or a NATS URL), the store, the dispatcher and
// the gateway. cmd/herald runs it; tests start it in-process.
package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"herald/config"
	"herald/dispatcher"
	"herald/gateway"
	hnats "herald/nats"
	"herald/offline"
)

// Version is the build's version, set by cmd/herald (registry, ctl).
var Version = "dev"

// Roles a node runs.
type Roles struct {
	EmbeddedNATS bool // start nats-server in-process (serve)
	Dispatcher   bool
	Gateway      bool
}

// Node is a running herald process.
type Node struct {
	cfg        config.Config
	log        *slog.Logger
	NATS       *server.Server // nil unless embedded
	NC         *nats.Conn
	Store      *offline.Store
	Apps       *offline.Apps
	Dispatcher *dispatcher.Dispatcher
	Gateway    *gateway.Gateway
	ops        *opsServer
}

// MetricsAddr is the address of the /metrics server of a role without the
// HTTP API, nil when there is none.
func (n *Node) MetricsAddr() net.Addr {
	if n.ops == nil {
		return nil
	}
	return n.ops.Addr()
}

// Start brings up the roles in order: NATS, store, apps, dispatcher, gateway.
// On error, what was started is stopped again.
func Start(cfg config.Config, roles Roles, log *slog.Logger) (n *Node, err error) {
	n = &Node{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			n.Stop()
			n = nil
		}
	}()
	url := cfg.NATS.URL
	if roles.EmbeddedNATS {
		n.NATS, err = hnats.StartEmbedded(hnats.EmbeddedConfig{Listen: cfg.NATS.Listen, StoreDir: filepath.Join(cfg.Data)})
		if err != nil {
			return n, err
		}
		url = n.NATS.ClientURL()
		log.Info("embedded nats-server ready", "url", url, "store", cfg.Data)
	}
	if url == "" {
		return n, fmt.Errorf("node: nats.url is required (--nats)")
	}
	n.NC, err = hnats.Connect(url, "herald", log, nats.Timeout(5*time.Second))
	if err != nil {
		return n, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if roles.EmbeddedNATS || roles.Dispatcher {
		n.Store, err = offline.Open(ctx, n.NC, cfg.Store)
		if err != nil {
			return n, err
		}
		if err := n.seedApps(ctx); err != nil {
			return n, err
		}
	} else {
		n.Store, err = offline.Attach(ctx, n.NC)
		if err != nil {
			return n, err
		}
	}
	log.Debug("stream and buckets ready", "stream", offline.StreamName, "replicated", n.Store.Replicated())
	n.Apps, err = n.Store.WatchApps(ctx, log)
	if err != nil {
		return n, err
	}
	log.Debug("apps loaded")
	if roles.Gateway {
		n.Gateway = gateway.New(cfg.Gateway, gateway.Deps{NC: n.NC, Store: n.Store, Apps: n.Apps, Log: log, Version: Version})
		if err := n.Gateway.Start(); err != nil {
			n.Gateway = nil
			return n, err
		}
	}
	if cfg.MetricsListen != "" {
		n.ops, err = startOps(cfg.MetricsListen, n)
		if err != nil {
			return n, err
		}
		n.ops.ready.Store(true)
	}
	if roles.Dispatcher {
		var extra func(io.Writer)
		var ready func() bool
		if n.Gateway != nil {
			g := n.Gateway
			extra = func(w io.Writer) { g.Metrics().WritePrometheus(w) }
			ready = func() bool { return !g.Draining() }
		}
		api := cfg.API
		if cfg.Dev {
			api.AdminKeys = append(slices.Clip(api.AdminKeys), config.DevAdminKey)
		}
		n.Dispatcher = dispatcher.New(api, cfg.Store, dispatcher.Deps{NC: n.NC, Store: n.Store, Apps: n.Apps, Log: log, WriteMetrics: extra, Ready: ready})
		if err := n.Dispatcher.Start(); err != nil {
			n.Dispatcher = nil
			return n, err
		}
	}
	return n, nil
}

// seedApps writes the configured apps (and demo with Dev) to the apps
// bucket, each only if the bucket does not hold it yet: once written, the
// admin API owns an app, and a restart must not undo a key rotation.
func (n *Node) seedApps(ctx context.Context) error {
	apps := n.cfg.Apps
	if n.cfg.Dev {
		apps = append(apps, config.App{Name: config.DemoApp, Keys: []string{config.DemoKey}, Secrets: []string{config.DemoSecret}})
	}
	for _, a := range apps {
		rec := offline.App{Name: a.Name, Secrets: a.Secrets, Limits: a.Limits, Origins: a.Origins}
		for _, k := range a.Keys {
			rec.KeyHashes = append(rec.KeyHashes, offline.HashKey(k))
		}
		wrote, err := n.Store.SeedApp(ctx, rec)
		if err != nil {
			return err
		}
		if !wrote {
			n.log.Debug("app already in the apps bucket; seed not applied", "app", a.Name)
		}
	}
	return nil
}

// Stop stops the roles in reverse order.
func (n *Node) Stop() {
	if n.ops != nil {
		n.ops.stop()
	}
	if n.Dispatcher != nil {
		n.Dispatcher.Stop()
	}
	if n.Gateway != nil {
		n.Gateway.Stop()
	}
	if n.Apps != nil {
		n.Apps.Stop()
	}
	if n.NC != nil {
		if n.NC.IsConnected() {
			_ = n.NC.FlushTimeout(2 * time.Second)
		}
		n.NC.Close()
	}
	if n.NATS != nil {
		n.NATS.Shutdown()
		n.NATS.WaitForShutdown()
	}
}
