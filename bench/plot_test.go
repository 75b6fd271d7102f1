package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Each series is one polyline scaled to its own axis: the first point at
// the left end of the x axis, an axis' largest value at the top, zero on
// the bottom line; the units and names are written out.
func TestChartWriteSVG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.svg")
	c := Chart{Title: "a <b> & c", X: []float64{0, 1, 2},
		LeftUnit: "devices", Left: []Series{{Name: "connected", Color: "#36c", Y: []float64{0, 50, 100}}},
		RightUnit: "msgs/s", Right: []Series{{Name: "received/s", Color: "#c33", Y: []float64{4000, 0, 2000}}}}
	if err := c.WriteSVG(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	svg := string(raw)
	lines := regexp.MustCompile(`points="([^"]*)"`).FindAllStringSubmatch(svg, -1)
	if len(lines) != 2 {
		t.Fatalf("%d polylines, want 2:\n%s", len(lines), svg)
	}
	// Plot area: x 70..720, y 50 (top) .. 320 (bottom).
	if got := strings.TrimSpace(lines[0][1]); got != "70.0,320.0 395.0,185.0 720.0,50.0" {
		t.Errorf("left series points %q", got)
	}
	if got := strings.TrimSpace(lines[1][1]); got != "70.0,50.0 395.0,320.0 720.0,185.0" {
		t.Errorf("right series points %q", got)
	}
	for _, want := range []string{">devices<", ">msgs/s<", ">connected<", ">received/s<", "a &lt;b&gt; &amp; c", "seconds (0-2)"} {
		if !strings.Contains(svg, want) {
			t.Errorf("no %q in the chart", want)
		}
	}
}

// The storm's chart draws its recovery: reconnected, caught up, and the
// receive rate between points.
func TestStormPlot(t *testing.T) {
	r := &StormResult{Devices: 10, MissedPerDevice: 2, CaughtUpSeconds: 1, Timeline: []StormPoint{
		{T: 0}, {T: 0.5, Reconnected: 10, CaughtUp: 5, Received: 10}, {T: 1, Reconnected: 10, CaughtUp: 10, Received: 20}}}
	path := filepath.Join(t.TempDir(), "s.svg")
	if err := r.Plot(path); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	lines := regexp.MustCompile(`points="([^"]*)"`).FindAllStringSubmatch(string(raw), -1)
	if len(lines) != 3 {
		t.Fatalf("%d polylines, want 3", len(lines))
	}
	// 10 and then 10 messages per half second: 20/s twice, the axis' top.
	if got := strings.TrimSpace(lines[2][1]); got != "70.0,320.0 395.0,50.0 720.0,50.0" {
		t.Errorf("receive rate points %q", got)
	}
	if !strings.Contains(string(raw), "all caught up after 1.00s") {
		t.Error("title does not say when all caught up")
	}
}

// Nearest-rank quantiles of the devices' catch-up times.
func TestQuantile(t *testing.T) {
	xs := []float64{0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4, 0.6, 0.8, 1.0}
	for _, c := range []struct{ q, want float64 }{{0.5, 0.5}, {0.9, 0.9}, {0.99, 1.0}, {0.01, 0.1}} {
		if got := quantile(xs, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("no values must give 0")
	}
}
