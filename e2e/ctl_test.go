package e2e

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/token"
	"herald/wire"
)

// ctlRun runs `herald ctl` against the served herald and returns its output.
func (h *servedHerald) ctl(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(h.bin, append([]string{"ctl", "--api", "http://" + h.api}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("herald ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The ops CLI against the real binary: gateways, a user's cursors and lag,
// a channel's messages, the store, replay to an online device (RESYNC, the
// SDK rewinds, the application sees the messages again) and to an offline
// one (at its next CONNECT), and drain.
func TestCtlAndReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	h := startServe(t)
	api := "http://" + h.api
	col := newCollector()
	var rewinds atomic.Int32
	cursors := &client.MemoryCursors{}
	mod := func(c *client.Config) {
		c.Cursors = cursors
		c.OnEvent = func(e client.Event) {
			if e.Kind == client.Rewound {
				rewinds.Add(1)
			}
		}
	}
	dev := device(t, h.dev, "alice", "d1", col, mod)
	waitFor(t, 10*time.Second, "connect", func() bool { return dev.Connects() == 1 })
	var seqs []uint64
	for i := 0; i < 5; i++ {
		seqs = append(seqs, push(t, api, "alice", "m"+itoa(uint64(i))))
	}
	col.waitCount(t, 5, 5*time.Second)

	waitFor(t, 10*time.Second, "the registry to count the device", func() bool {
		return regexp.MustCompile(`(?m)^\S+\s+dev\s+127\.0\.0\.1:\d+\s+-\s+1\s`).MatchString(h.ctl(t, "gateways"))
	})
	var gws struct {
		Gateways []struct{ ID string } `json:"gateways"`
	}
	if err := json.Unmarshal([]byte(h.ctl(t, "--json", "gateways")), &gws); err != nil || len(gws.Gateways) != 1 {
		t.Fatalf("ctl --json gateways: %v %+v", err, gws)
	}
	waitFor(t, 10*time.Second, "d1's cursor in ctl user", func() bool {
		out := h.ctl(t, "user", "--app", "demo", "--user", "alice")
		return regexp.MustCompile(`(?m)^u\.alice\s+5\s+d1\s+` + itoa(seqs[4]) + `\s+0$`).MatchString(out)
	})
	msgs := h.ctl(t, "messages", "--app", "demo", "--channel", "u.alice", "--after", itoa(seqs[1]))
	if n := strings.Count(msgs, "\n"); n != 4 || !strings.Contains(msgs, `"m4"`) || strings.Contains(msgs, `"m1"`) {
		t.Fatalf("ctl messages after %d:\n%s", seqs[1], msgs)
	}
	if out := h.ctl(t, "stream"); !regexp.MustCompile(`(?m)^HERALD\s+\d+`).MatchString(out) || !strings.Contains(out, "herald-cursors") {
		t.Fatalf("ctl stream:\n%s", out)
	}

	// Online: the device gets RESYNC and m2..m4 again.
	h.ctl(t, "replay", "--app", "demo", "--user", "alice", "--device", "d1", "--from-seq", itoa(seqs[2]))
	col.waitCount(t, 8, 10*time.Second)
	got := col.snapshot()
	for i, m := range got[5:] {
		if m.Seq != seqs[2+i] {
			t.Fatalf("replayed message %d: seq %d, want %d", i, m.Seq, seqs[2+i])
		}
	}
	if rewinds.Load() != 1 {
		t.Fatalf("%d rewinds", rewinds.Load())
	}
	time.Sleep(300 * time.Millisecond)
	if col.count() != 8 {
		t.Fatalf("%d messages after the replay, want 8", col.count())
	}

	// Offline: the order waits for the device's next connection.
	fresh := newCollector()
	ctlOut := h.ctl(t, "replay", "--app", "demo", "--user", "alice", "--device", "d2", "--since", "1h")
	if !strings.Contains(ctlOut, "from seq "+itoa(seqs[0])) {
		t.Fatalf("replay --since 1h: %s", ctlOut)
	}
	waitFor(t, 10*time.Second, "the online replay to be acknowledged", func() bool {
		return metric(api, "herald_gateway_replays_total") == "1"
	})
	// The first connection after the order gets CONNACK and RESYNC but
	// dies before acknowledging anything: the order must not be lost.
	raw := dialRaw(t, h.dev)
	tok, err := token.Sign([]byte(config.DemoSecret), config.DemoApp, "alice", "d2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if typ, _ := raw.connect(config.DemoApp, "d2", tok); typ != wire.TypeConnAck {
		t.Fatalf("raw d2: %v, want CONNACK", typ)
	}
	if typ, body, err := raw.next(); err != nil || typ != wire.TypeResync {
		t.Fatalf("raw d2 after CONNACK: %v %x %v, want RESYNC", typ, body, err)
	}
	raw.nc.Close()
	d2cursors := &client.MemoryCursors{}
	d2cursors.Save("u.alice", seqs[4]) // as if it had seen everything (it never read that RESYNC)
	d2 := device(t, h.dev, "alice", "d2", fresh, func(c *client.Config) { c.Cursors = d2cursors })
	waitFor(t, 10*time.Second, "d2", func() bool { return d2.Connects() == 1 })
	fresh.waitCount(t, 5, 10*time.Second)
	checkExactlyOnceInOrder(t, fresh.snapshot(), seqs)
	waitFor(t, 10*time.Second, "d2's replay to be acknowledged", func() bool {
		return metric(api, "herald_gateway_replays_total") == "2"
	})

	// A replay of a user without devices is refused; bad input is explained.
	cmd := exec.Command(h.bin, "ctl", "--api", api, "replay", "--app", "demo", "--user", "nobody", "--from-seq", "1")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no_devices") {
		t.Fatalf("replay for nobody: %v %s", err, out)
	}
	cmd = exec.Command(h.bin, "ctl", "--api", api, "--key", "wrong-admin-key", "gateways")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "unauthorized") {
		t.Fatalf("wrong admin key: %v %s", err, out)
	}

	// Drain: devices get GOAWAY, the gateway says draining, /readyz fails.
	h.ctl(t, "drain", gws.Gateways[0].ID)
	waitFor(t, 10*time.Second, "the drain", func() bool {
		return strings.Contains(h.ctl(t, "gateways"), " true ") && gatewayConnections(api) == "0"
	})
	resp, err := http.Get(api + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz while draining: %d", resp.StatusCode)
	}
}

// The README's ops section runs as written (HERALD_API points ctl at the
// test's herald): each command succeeds and prints its table.
func TestReadmeOps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(readmeSection(t, "ops"))
	if block == nil {
		t.Fatal("the ops section has no sh block")
	}
	h := startServe(t)
	col := newCollector()
	dev := device(t, h.dev, "alice", "phone", col, nil)
	waitFor(t, 10*time.Second, "connect", func() bool { return dev.Connects() == 1 })
	push(t, "http://"+h.api, "alice", "hello")
	col.waitCount(t, 1, 5*time.Second)
	waitFor(t, 10*time.Second, "the cursor", func() bool {
		return strings.Contains(h.ctl(t, "user", "--app", "demo", "--user", "alice"), "phone")
	})
	want := map[string]string{"gateways": "CONNECTIONS", "user": "LAG", "messages": `"hello"`, "replay": "replay of u.alice", "stream": "HERALD"}
	lines := strings.Split(strings.TrimSpace(block[1]), "\n")
	if len(lines) != len(want) {
		t.Fatalf("the ops section has %d commands; this test knows %d", len(lines), len(want))
	}
	for _, line := range lines {
		p := start(t, h.dir, "HERALD_API=http://"+h.api+" "+strings.Replace(line, "./bin/herald", h.bin, 1))
		if err := p.wait(t, 20*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, p.out.String())
		}
		cmd := strings.Fields(line)[2]
		if !strings.Contains(p.out.String(), want[cmd]) {
			t.Fatalf("%s printed:\n%s", line, p.out.String())
		}
	}
	// The replay reached the connected device: hello again.
	col.waitCount(t, 2, 10*time.Second)
}
