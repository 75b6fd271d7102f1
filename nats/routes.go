package hnats

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// RoutesUpPrefix + a NATS node's server name is where `herald nats` says
// the node has a route connection it did not have before: one of its
// routes broke and is back (or a node joined). Live copies that crossed
// that route while it was down are lost, however short the break was, so
// the gateways connected to that node re-sync from the store. The stream's
// pulse (offline/pulse.go) finds the same loss only when a pulse was lost
// with them.
const RoutesUpPrefix = "herald.node.routes-up."

// RoutesPoll is how often a node looks for new route connections.
const RoutesPoll = 100 * time.Millisecond

// announceRoutes publishes on RoutesUpPrefix + the node's name each
// time a look at the node's routes (every RoutesPoll) finds a connection
// that was not there at the look before, until quit closes. A route that
// breaks and reconnects between two looks has a new id, so it counts.
// nats.go tells clients nothing of routes, and nats-server publishes no
// event for them outside its system account; this is the node's own word,
// delivered to the gateways connected to it without crossing a route.
func announceRoutes(srv *server.Server, opts *server.Options, log *slog.Logger, quit <-chan struct{}) {
	if needsCredentials(opts) {
		// A connect refused by authorization leaves its in-process
		// connection to hold up the server's shutdown for ~10 s.
		log.Warn("not announcing route changes to gateways: the node's file configures NATS authorization and herald nats has no credentials of its own; only the stream's pulse shows copies lost on routes")
		return
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("herald nats: routes"), nats.MaxReconnects(-1))
	if err != nil {
		select {
		case <-quit:
		default:
			log.Error("cannot announce route changes to gateways", "err", err)
		}
		return
	}
	defer nc.Close()
	subject := RoutesUpPrefix + srv.Name()
	seen := routeIDs(srv)
	t := time.NewTicker(RoutesPoll)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		now := routeIDs(srv)
		added := 0
		for id := range now {
			if !seen[id] {
				added++
			}
		}
		seen = now
		if added > 0 {
			log.Info("new route connections: telling the gateways", "new", added, "routes", len(now))
			_ = nc.Publish(subject, nil)
		}
	}
}

// routeIDs is the set of the node's route connections.
func routeIDs(srv *server.Server) map[uint64]bool {
	rz, err := srv.Routez(&server.RoutezOptions{})
	ids := map[uint64]bool{}
	if err != nil {
		return ids
	}
	for _, r := range rz.Routes {
		ids[r.Rid] = true
	}
	return ids
}

// needsCredentials reports whether a connection without credentials would
// be refused by the node's authorization (no no_auth_user to fall back to).
func needsCredentials(o *server.Options) bool {
	auth := o.Username != "" || o.Authorization != "" || len(o.Users) > 0 || len(o.Nkeys) > 0 ||
		len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.AuthCallout != nil
	return auth && o.NoAuthUser == ""
}
