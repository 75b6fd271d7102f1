package bench

import (
	"fmt"
	"os"
	"strings"
)

// WritePlot writes an SVG chart of p50 and p99 latency per second and the
// deliveries per second.
func WritePlot(path, title string, tl []Second) error {
	const w, h, left, right, top, bottom = 800.0, 360.0, 60.0, 60.0, 40.0, 40.0
	maxLat, maxRate := 1.0, 1.0
	for _, s := range tl {
		if s.P99 > maxLat {
			maxLat = s.P99
		}
		if float64(s.Delivered) > maxRate {
			maxRate = float64(s.Delivered)
		}
	}
	n := len(tl)
	if n < 2 {
		n = 2
	}
	x := func(i int) float64 { return left + (w-left-right)*float64(i)/float64(n-1) }
	yl := func(v float64) float64 { return h - bottom - (h-top-bottom)*v/maxLat }
	yr := func(v float64) float64 { return h - bottom - (h-top-bottom)*v/maxRate }
	line := func(vals func(Second) float64, y func(float64) float64) string {
		var b strings.Builder
		for i, s := range tl {
			fmt.Fprintf(&b, "%.1f,%.1f ", x(i), y(vals(s)))
		}
		return b.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="22" font-size="15">%s</text>`+"\n", left, escapeXML(title))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`+"\n", left, top, left, h-bottom)
	for i := 0; i <= 4; i++ {
		v := maxLat * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#c33">%.1f ms</text>`, left-4, yl(v)+4, v)
		r := maxRate * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="#36c">%.0f/s</text>`+"\n", w-right+4, yr(r)+4, r)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">seconds (0-%d)</text>`+"\n", (left+w-right)/2, h-10, len(tl)-1)
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#36c" stroke-width="1.5" points="%s"/>`+"\n", line(func(s Second) float64 { return float64(s.Delivered) }, yr))
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#f99" stroke-width="1.5" points="%s"/>`+"\n", line(func(s Second) float64 { return s.P50 }, yl))
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#c33" stroke-width="2" points="%s"/>`+"\n", line(func(s Second) float64 { return s.P99 }, yl))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#c33">p99 latency</text><text x="%.0f" y="%.0f" fill="#f99">p50 latency</text><text x="%.0f" y="%.0f" fill="#36c">deliveries/s</text>`+"\n",
		left+10, top+14, left+110, top+14, left+210, top+14)
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
