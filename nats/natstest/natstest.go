// Package natstest starts a real embedded nats-server with JetStream for
// tests: 127.0.0.1, a random port, a temporary store, shut down by t.Cleanup.
package natstest

import (
	"log/slog"
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
