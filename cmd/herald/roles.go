package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"herald/config"
	"herald/node"
)

// runRole loads the role's configuration, starts the node, prints where it
// listens, and stops it on SIGINT or SIGTERM.
func runRole(role string, roles node.Roles, args []string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(role, args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if errors.Is(err, config.ErrUsage) {
		return errUsage
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	if cfg.GCPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	if cfg.Dev {
		log.Warn("DEV MODE: app \"demo\" with publisher key \"demo-key\", device secret \"demo-secret\" and admin key \"dev-admin-key\" is open to anyone who can reach these loopback ports; do not use in production")
	}
	n, err := node.Start(*cfg, roles, log)
	if err != nil {
		return err
	}
	announce(stdout, cfg, n)
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	// A standalone gateway leaves gracefully: SIGTERM (or herald ctl
	// drain) drains it — devices are sent elsewhere in paced batches — and
	// it exits once empty; a second signal stops it at once.
	var drained <-chan struct{}
	if role == "gateway" && n.Gateway != nil {
		drained = n.Gateway.Drained()
	}
	select {
	case s := <-sig:
		if drained != nil && s == syscall.SIGTERM {
			log.Info("SIGTERM: draining before exit", "connections", n.Gateway.Connections())
			n.Gateway.Drain()
			select {
			case <-drained:
			case s = <-sig:
				log.Info("stopping without waiting for the drain", "signal", s.String())
			}
		}
		log.Info("stopping", "signal", s.String())
	case <-drained:
		log.Info("drained; stopping")
	}
	n.Stop()
	return nil
}

func announce(w io.Writer, cfg *config.Config, n *node.Node) {
	var parts []string
	if n.Dispatcher != nil {
		scheme := "http://"
		if cfg.API.TLS.Enabled() {
			scheme = "https://"
		}
		parts = append(parts, "HTTP API "+scheme+n.Dispatcher.Addr().String())
	}
	if n.Gateway != nil {
		tcp, ws := "tcp://", "ws://"
		if cfg.Gateway.TLS.Enabled() {
			tcp, ws = "tls://", "wss://"
		}
		parts = append(parts, "devices "+tcp+n.Gateway.Addr().String())
		if a := n.Gateway.WSAddr(); a != nil {
			parts = append(parts, ws+a.String())
		}
	}
	if a := n.MetricsAddr(); a != nil {
		parts = append(parts, "metrics http://"+a.String()+"/metrics")
	}
	if n.NATS != nil {
		parts = append(parts, "NATS "+n.NATS.ClientURL())
	}
	fmt.Fprintf(w, "herald is running: %s\n", join(parts))
	if cfg.Dev && n.Dispatcher != nil && n.Gateway != nil {
		api, dev := n.Dispatcher.Addr().String(), n.Gateway.Addr().String()
		fmt.Fprintf(w, `
Try it (in two other terminals):
  ./bin/herald listen --addr %s --app demo --user alice --secret demo-secret --count 1
  ./bin/herald push --api http://%s --key demo-key --app demo --user alice --data hello

Dashboard: http://%s/ui/ and a device in the browser: http://%s/ui/demo (admin key dev-admin-key)
Operate it: ./bin/herald ctl --api http://%s gateways
Stop with Ctrl-C.
`, dev, api, api, api, api)
	}
}

func join(parts []string) string {
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += ", "
		}
		out += p
	}
	return out
}
