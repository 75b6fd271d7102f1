package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// WriteJSON writes v as indented JSON to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Table prints the connect report.
func (r *ConnectResult) Table(w io.Writer) {
	fmt.Fprintf(w, "devices: %d of %d connected, %d failed, over %d processes and %d source addresses\n",
		r.Connected, r.Conns, r.Failed, r.Procs, r.Sources)
	fmt.Fprintf(w, "ramp: %.1fs, %.0f connects/s; held %.0fs\n", r.RampSeconds, r.ConnectsPerSec, r.HoldSeconds)
	if h := r.Handshake; h.Count > 0 {
		fmt.Fprintf(w, "handshake (dial to CONNACK, %d devices): p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f\n", h.Count, h.P50, h.P90, h.P99, h.P999, h.Max)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "gateway metrics\tdevices\tRSS before\tRSS after\tRSS/device\theap/device\tgoroutines before\tafter\t")
	for _, g := range r.Gateways {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f MiB\t%.1f MiB\t%.2f KB\t%.2f KB\t%.0f\t%.0f\t\n", g.After.URL, g.Devices,
			g.Before.RSS/(1<<20), g.After.RSS/(1<<20), g.RSSPerDevice/1000, g.HeapPerDevice/1000, g.Before.Goroutines, g.After.Goroutines)
	}
	tw.Flush()
	if len(r.Gateways) > 1 {
		fmt.Fprintf(w, "all gateways: %.0f devices, %.1f MiB RSS\n", r.TotalDevices, r.TotalRSS/(1<<20))
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "error seen:", e)
	}
}

// Plot writes the ramp as an SVG chart: devices connected, and connects
// per second, against seconds since the first worker started.
func (r *ConnectResult) Plot(path string) error {
	c := Chart{Title: fmt.Sprintf("herald connect: %d of %d devices in %.1fs, handshake p99 %.1f ms", r.Connected, r.Conns, r.RampSeconds, r.Handshake.P99),
		LeftUnit: "devices", RightUnit: "/s"}
	conn := Series{Name: "connected", Color: "#36c", Width: 2}
	rate := Series{Name: "connects/s", Color: "#c33"}
	for i, pt := range r.Timeline {
		c.X = append(c.X, pt.T)
		conn.Y = append(conn.Y, float64(pt.Connected))
		v := 0.0
		if i > 0 && pt.T > r.Timeline[i-1].T {
			v = float64(pt.Connected-r.Timeline[i-1].Connected) / (pt.T - r.Timeline[i-1].T)
		}
		rate.Y = append(rate.Y, v)
	}
	c.Left = []Series{conn}
	c.Right = []Series{rate}
	return c.WriteSVG(path)
}
