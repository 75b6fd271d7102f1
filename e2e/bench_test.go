package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// herald bench connect against a running herald: the devices connect from
// several processes and source addresses, and the report reads the
// gateway's own metrics.
func TestBenchConnect(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	h := startServe(t)
	bin, dir, api, dev := h.bin, h.dir, h.api, h.dev
	out := filepath.Join(dir, "report.json")
	b := start(t, dir, fmt.Sprintf("%s bench connect --conns 300 --procs 2 --hold 1s --gateways %s --sources 127.0.0.2-127.0.0.3 --metrics http://%s/metrics --json %s",
		bin, dev, api, out))
	if err := b.wait(t, 60*time.Second); err != nil {
		t.Fatalf("bench: %v\n%s", err, b.out.String())
	}
	if !strings.Contains(b.out.String(), "300 of 300 connected, 0 failed") {
		t.Fatalf("bench output:\n%s", b.out.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Connected int `json:"connected"`
		Gateways  []struct {
			Devices float64 `json:"devices"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil || rep.Connected != 300 || len(rep.Gateways) != 1 || rep.Gateways[0].Devices != 300 {
		t.Fatalf("report %s: %v", raw, err)
	}
}

// herald bench unicast and storm, small: they run, bound themselves, find
// nothing lost, and write their reports.
func TestBenchUnicastAndStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	h := startServe(t)
	bin, dir, api, dev := h.bin, h.dir, h.api, h.dev

	plot := filepath.Join(dir, "latency.svg")
	u := start(t, dir, fmt.Sprintf("%s bench unicast --devices 50 --duration 2s --publishers 4 --per-request 5 --api http://%s --gateways %s --sources 127.0.0.2-127.0.0.3 --plot %s",
		bin, api, dev, plot))
	if err := u.wait(t, 60*time.Second); err != nil {
		t.Fatalf("unicast: %v\n%s", err, u.out.String())
	}
	out := u.out.String()
	if !strings.Contains(out, "lost 0; duplicates or reordered 0") || !strings.Contains(out, "p99") {
		t.Fatalf("unicast output:\n%s", out)
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(svg), "<polyline") {
		t.Fatalf("plot: %v %.200s", err, svg)
	}

	s := start(t, dir, fmt.Sprintf("%s bench storm --devices 60 --missed 5 --per-request 20 --api http://%s --gateways %s --sources 127.0.0.2-127.0.0.3 --timeout 30s",
		bin, api, dev))
	if err := s.wait(t, 90*time.Second); err != nil {
		t.Fatalf("storm: %v\n%s", err, s.out.String())
	}
	if out := s.out.String(); !strings.Contains(out, "all caught up after") || !strings.Contains(out, "lost 0; shown twice or out of order 0") {
		t.Fatalf("storm output:\n%s", out)
	}
}
