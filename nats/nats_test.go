package hnats

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A taken client port is reported at once with the OS's reason, not after
// the 10 s readiness wait.
func TestStartEmbeddedPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	srv, err := StartEmbedded(EmbeddedConfig{Listen: ln.Addr().String(), StoreDir: t.TempDir()})
	if err == nil {
		srv.Shutdown()
		t.Fatal("started on a port another listener holds")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("error does not say which port and why: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to report a taken port", d)
	}
}

// Port 0 still picks a free port.
func TestStartEmbeddedRandomPort(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if srv.Addr() == nil || srv.Addr().(*net.TCPAddr).Port == 0 {
		t.Fatalf("no port: %v", srv.Addr())
	}
}

// A node whose route port is taken stops at once and says why. nats-server
// reports it as fatal and would, through a logger that does not exit, run
// on without routes, alone, until the readiness wait ran out.
func TestStartFromFileRoutePortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	route := ln.Addr().String()
	conf := filepath.Join(t.TempDir(), "n1.conf")
	text := fmt.Sprintf("server_name: n1\nlisten: 127.0.0.1:-1\njetstream { store_dir: %q }\ncluster { name: c, listen: %s, routes: [nats-route://%s] }\n", t.TempDir(), route, route)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := StartFromFile(conf, slog.New(slog.DiscardHandler))
	if err == nil {
		n.Shutdown()
		t.Fatal("started with its route port held by another listener")
	}
	if !strings.Contains(err.Error(), "router port") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error does not say the route port is taken: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v to report a taken route port", d)
	}
}

// A node whose file has NATS authorization announces nothing (herald nats
// has no credentials of its own) and stops at once: an in-process connect
// refused by authorization held up its shutdown for ~10 s.
func TestNodeWithAuthorizationStopsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	route := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(t.TempDir(), "n1.conf")
	text := fmt.Sprintf("server_name: n1\nlisten: 127.0.0.1:-1\nauthorization { user: a, password: b }\njetstream { store_dir: %q }\ncluster { name: c, listen: %s, routes: [nats-route://%s] }\n", t.TempDir(), route, route)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil))
	n, err := StartFromFile(conf, log)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * RoutesPoll)
	start := time.Now()
	n.Shutdown()
	n.WaitForShutdown()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "not announcing route changes") {
		t.Fatalf("no word that route changes go unannounced:\n%s", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestNeedsCredentials(t *testing.T) {
	for _, c := range []struct {
		name string
		o    server.Options
		want bool
	}{
		{"none", server.Options{}, false},
		{"user", server.Options{Username: "a", Password: "b"}, true},
		{"token", server.Options{Authorization: "t"}, true},
		{"users", server.Options{Users: []*server.User{{Username: "a"}}}, true},
		{"users with no_auth_user", server.Options{Users: []*server.User{{Username: "a"}}, NoAuthUser: "a"}, false},
		{"nkeys", server.Options{Nkeys: []*server.NkeyUser{{Nkey: "U"}}}, true},
		{"operator", server.Options{TrustedKeys: []string{"O"}}, true},
	} {
		if got := needsCredentials(&c.o); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
