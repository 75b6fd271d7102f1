// Package natstest starts a real embedded nats-server with JetStream for
// tests: 127.0.0.1, a random port, a temporary store, shut down by t.Cleanup.
package natstest

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
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
	var urls []string
	for attempt := 1; ; attempt++ {
		var err error
		if urls, err = startCluster(t); err == nil {
			break
		}
		// A port found free can be taken before its node binds it (other
		// tests connect meanwhile, from the same range of ports).
		if attempt == 3 {
			t.Fatalf("%v, three times", err)
		}
		t.Logf("%v; again on other ports", err)
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

// handedOut is every port FreePorts returned in this test binary.
var handedOut sync.Map

// FreePorts returns n loopback ports that were free a moment ago and that
// FreePorts has not returned before in this test binary: the kernel may
// give a just-closed port again, and two processes told the same port (a
// node's route port and another's client port) fail in ways that look like
// a bug of their own.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := handedOut.LoadOrStore(p, true); !dup {
			ports = append(ports, p)
		}
	}
	return ports
}

// startCluster starts the three nodes and returns their client URLs, or
// stops them and says which was not ready.
func startCluster(t testing.TB) ([]string, error) {
	// JetStream's cluster wants its routes configured, so every port is
	// chosen here.
	ports := FreePorts(t, 6)
	var routes []string
	for _, p := range ports[3:] {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var srvs []*server.Server
	stopAll := func() {
		for _, srv := range srvs {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	}
	var urls []string
	for i := range 3 {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[3+i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srv, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, srv)
		t.Cleanup(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		})
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			stopAll()
			return nil, fmt.Errorf("cluster node %d not ready (a port taken?)", i+1)
		}
		urls = append(urls, srv.ClientURL())
	}
	return urls, nil
}
