package hnats

import (
	"net"
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
