package bench

import (
	"fmt"
	"os"
	"strings"
)

// Series is one line of a chart.
type Series struct {
	Name  string
	Color string
	Width float64
	Y     []float64
}

// Chart is a line chart over time: series on a left axis and on a right one,
// each axis scaled to its own largest value.
type Chart struct {
	Title     string
	X         []float64 // seconds, one per point of every series
	LeftUnit  string    // printed after the left axis' ticks: "ms", "devices"
	Left      []Series
	RightUnit string
	Right     []Series
}

// WriteSVG writes the chart as an SVG file.
func (c Chart) WriteSVG(path string) error {
	const w, h, left, right, top, bottom = 800.0, 360.0, 70.0, 80.0, 50.0, 40.0
	maxOf := func(ss []Series) float64 {
		m := 1.0
		for _, s := range ss {
			for _, v := range s.Y {
				if v > m {
					m = v
				}
			}
		}
		return m
	}
	maxL, maxR := maxOf(c.Left), maxOf(c.Right)
	x0, x1 := 0.0, 1.0
	if n := len(c.X); n > 0 {
		x0, x1 = c.X[0], c.X[n-1]
		if x1 <= x0 {
			x1 = x0 + 1
		}
	}
	x := func(v float64) float64 { return left + (w-left-right)*(v-x0)/(x1-x0) }
	y := func(v, max float64) float64 { return h - bottom - (h-top-bottom)*v/max }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="18" font-size="15">%s</text>`+"\n", left, escapeXML(c.Title))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`+"\n", left, top, left, h-bottom)
	leftColor, rightColor := "#333", "#333"
	if len(c.Left) > 0 {
		leftColor = c.Left[0].Color
	}
	if len(c.Right) > 0 {
		rightColor = c.Right[0].Color
	}
	// Each axis: its unit above it, and five ticks.
	if len(c.Left) > 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end" fill="%s">%s</text>`+"\n", left-4, top-8, leftColor, escapeXML(c.LeftUnit))
	}
	if len(c.Right) > 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`+"\n", w-right+4, top-8, rightColor, escapeXML(c.RightUnit))
	}
	for i := 0; i <= 4; i++ {
		if len(c.Left) > 0 {
			v := maxL * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="%s">%s</text>`, left-4, y(v, maxL)+4, leftColor, tick(v))
		}
		if len(c.Right) > 0 {
			v := maxR * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="%s">%s</text>`, w-right+4, y(v, maxR)+4, rightColor, tick(v))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">seconds (%s-%s)</text>`+"\n", (left+w-right)/2, h-10, tick(x0), tick(x1))
	legend := left + 10
	draw := func(ss []Series, max float64) {
		for _, s := range ss {
			var pts strings.Builder
			for i, v := range s.Y {
				if i < len(c.X) {
					fmt.Fprintf(&pts, "%.1f,%.1f ", x(c.X[i]), y(v, max))
				}
			}
			width := s.Width
			if width == 0 {
				width = 1.5
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%.1f" points="%s"/>`+"\n", s.Color, width, pts.String())
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`+"\n", legend, top+14, s.Color, escapeXML(s.Name))
			legend += 9*float64(len(s.Name)) + 20
		}
	}
	draw(c.Left, maxL)
	draw(c.Right, maxR)
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// tick prints an axis value: whole numbers plainly, small ones with one decimal.
func tick(v float64) string {
	if v >= 100 || v == float64(int64(v)) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// WritePlot writes an SVG chart of p50 and p99 latency per second and the
// deliveries per second.
func WritePlot(path, title string, tl []Second) error {
	c := Chart{Title: title, LeftUnit: "ms", RightUnit: "/s"}
	p99 := Series{Name: "p99 latency", Color: "#c33", Width: 2}
	p50 := Series{Name: "p50 latency", Color: "#f99"}
	rate := Series{Name: "deliveries/s", Color: "#36c"}
	for _, s := range tl {
		c.X = append(c.X, float64(s.T))
		p99.Y = append(p99.Y, s.P99)
		p50.Y = append(p50.Y, s.P50)
		rate.Y = append(rate.Y, float64(s.Delivered))
	}
	c.Left = []Series{p99, p50}
	c.Right = []Series{rate}
	return c.WriteSVG(path)
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
