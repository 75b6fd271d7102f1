// Package natstest starts a real embedded nats-server with JetStream for
// tests: 127.0.0.1, a random port, a temporary store, shut down by t.Cleanup.
package natstest

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	hnats "herald/nats"
)

// Start starts a server and returns it with its client URL.
func Start(t testing.TB) (*server.Server, string) {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn starts a server storing in dir (to restart one on the same data).
func StartIn(t testing.TB, dir string) (*server.Server, string) {
	t.Helper()
	srv, err := hnats.StartEmbedded(hnats.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv, srv.ClientURL()
}

// Connect opens a client connection closed by t.Cleanup.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := hnats.Connect(url, t.Name(), slog.New(slog.DiscardHandler), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartCluster starts three servers in one cluster (clients and routes on
// loopback ports, JetStream on each, stopped by t.Cleanup) and returns
// their client URLs, comma-separated, once JetStream answers.
func StartCluster(t testing.TB) string {
	t.Helper()
	// JetStream's cluster wants its routes configured: take three free
	// ports for them first.
	var ports [3]int
	var routes []string
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i]))
	}
	var urls []string
	for i := range ports {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srv, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		t.Cleanup(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		})
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("cluster node %d not ready", i+1)
		}
		urls = append(urls, srv.ClientURL())
	}
	all := strings.Join(urls, ",")
	nc := Connect(t, all)
	defer nc.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// A JetStream answer needs the cluster's meta leader.
		if m, err := nc.Request("$JS.API.INFO", nil, time.Second); err == nil && !strings.Contains(string(m.Data), `"error"`) {
			return all
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster's JetStream did not answer within 30 s")
		}
	}
}
