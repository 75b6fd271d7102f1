package hnats

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
