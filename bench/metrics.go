// Package bench is herald's load tool: scenarios that open many devices
// across several processes and source addresses, publish through the API,
// and report what the gateways and devices saw. Every scenario is bounded in
// count and time, targets loopback only, and stops by itself.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scrape is what the bench reads from one gateway's /metrics.
type Scrape struct {
	URL         string  `json:"url"`
	RSS         float64 `json:"rss_bytes"`
	Goroutines  float64 `json:"goroutines"`
	Connections float64 `json:"connections"`
	HeapInuse   float64 `json:"heap_inuse_bytes"`
}

// scrape reads the process and gateway gauges from a Prometheus text page.
func scrape(ctx context.Context, url string) (Scrape, error) {
	s := Scrape{URL: url}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("bench: cannot read metrics from %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("bench: %s answered %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "process_resident_memory_bytes":
			dst = &s.RSS
		case "go_goroutines":
			dst = &s.Goroutines
		case "herald_gateway_connections":
			dst = &s.Connections
		case "go_memstats_heap_inuse_bytes":
			dst = &s.HeapInuse
		default:
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err == nil {
			*dst = v
			found++
		}
	}
	if found < 3 {
		return s, fmt.Errorf("bench: %s lacks process_resident_memory_bytes, go_goroutines or herald_gateway_connections", url)
	}
	return s, sc.Err()
}

func scrapeAll(urls []string) ([]Scrape, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make([]Scrape, len(urls))
	for i, u := range urls {
		s, err := scrape(ctx, u)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}
