package hnats_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	hnats "herald/nats"
	"herald/nats/natstest"
)

// A node says on RoutesUpPrefix+its name when it has a route connection it
// did not have: here n1, when its peer starts.
func TestNodeAnnouncesNewRoutes(t *testing.T) {
	ports := natstest.FreePorts(t, 4)
	dir := t.TempDir()
	conf := func(i int) string {
		path := filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1))
		text := fmt.Sprintf("server_name: n%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: %q }\ncluster { name: c, listen: 127.0.0.1:%d, routes: [nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d] }\n",
			i+1, ports[i], filepath.Join(dir, fmt.Sprintf("s%d", i+1)), ports[2+i], ports[2], ports[3])
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	log := slog.New(slog.DiscardHandler)
	n1, err := hnats.StartFromFile(conf(0), log)
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Shutdown()
	nc, err := nats.Connect(n1.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	news, err := nc.SubscribeSync(hnats.RoutesUpPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	if m, err := news.NextMsg(3 * hnats.RoutesPoll); err == nil {
		t.Fatalf("news of routes before there were any: %s", m.Subject)
	}
	n2, err := hnats.StartFromFile(conf(1), log)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown()
	// n1 had no route and has one now. (n2's own routes were there at its
	// first look: nothing is new to it.)
	for deadline := time.Now().Add(10 * time.Second); ; {
		m, err := news.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no news of n1's new route after n2 started: %v", err)
		}
		if m.Subject == hnats.RoutesUpPrefix+"n1" {
			return
		}
	}
}
