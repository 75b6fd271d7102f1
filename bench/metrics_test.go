package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// The unicast report's stages read the servers' own VictoriaMetrics
// histograms over HTTP, as served: one series by name and labels, added up
// over the gateways, less what they held before the run.
func TestLatencyStagesFromMetrics(t *testing.T) {
	var urls []string
	var hs []*metrics.Histogram
	var push *metrics.Histogram
	for i := 0; i < 2; i++ {
		set := metrics.NewSet()
		set.NewGauge(gatewayMark, func() float64 { return 1 })
		hs = append(hs, set.NewHistogram(deliveryLatency))
		if i == 0 { // the API's page, with a series of the same name per route
			set.NewGauge(dispatcherMark, func() float64 { return 1 })
			push = set.NewHistogram(pushLatency)
			set.NewHistogram(`herald_http_request_duration_seconds{route="pushes"}`).Update(9)
		}
		// A longer name with the same prefix, which must not be read.
		set.NewHistogram(deliveryLatency + "_other").Update(1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { set.WritePrometheus(w) }))
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A fresh gateway's page has no histogram yet: empty, not an error.
	fresh, err := scrapeHistogram(ctx, urls, deliveryLatency, gatewayMark)
	if err != nil || len(fresh.buckets) != 0 || fresh.count != 0 {
		t.Fatalf("fresh gateways: %+v, %v", fresh, err)
	}

	// Before the run: slow values that must not count.
	for i := 0; i < 1000; i++ {
		hs[i%2].Update(5)
	}
	before, err := scrapeHistogram(ctx, urls, deliveryLatency, gatewayMark)
	if err != nil {
		t.Fatal(err)
	}
	// The run: 1..1000 ms, one each, the first half on one gateway.
	for i := 1; i <= 1000; i++ {
		hs[(i-1)/500].Update(float64(i) / 1000)
	}
	after, err := scrapeHistogram(ctx, urls, deliveryLatency, gatewayMark)
	if err != nil {
		t.Fatal(err)
	}
	l, err := after.since(before).latency()
	if err != nil {
		t.Fatal(err)
	}
	if l.Count != 1000 {
		t.Fatalf("count %d, want 1000 (both gateways, the values before the run subtracted)", l.Count)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want)/want > 0.14 { // two of VictoriaMetrics' buckets
			t.Errorf("%s = %.2f ms, want %.0f ± 14%%", name, got, want)
		}
	}
	near("p50", l.P50, 500)
	near("p90", l.P90, 900)
	near("p99", l.P99, 990)
	near("mean", l.Mean, 500.5)
	if l.Max < 1000 || l.Max > 1140 {
		t.Errorf("max = %.2f ms, want the upper bound of 1000 ms's bucket", l.Max)
	}

	// A series with labels: the push route only, before and after.
	pb, err := scrapeHistogram(ctx, urls[:1], pushLatency, dispatcherMark)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		push.Update(float64(i) / 1000)
	}
	pa, err := scrapeHistogram(ctx, urls[:1], pushLatency, dispatcherMark)
	if err != nil {
		t.Fatal(err)
	}
	if pl, err := pa.since(pb).latency(); err != nil || pl.Count != 100 || math.Abs(pl.P50-50)/50 > 0.14 || math.Abs(pl.Mean-50.5)/50.5 > 0.01 {
		t.Errorf("push route: %+v, %v; want 100 values, p50 and mean 50 ms", pl, err)
	}
	if _, err := scrapeHistogram(ctx, urls[1:], pushLatency, dispatcherMark); err == nil {
		t.Error("a gateway's page read as the API's")
	}

	notGateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("go_goroutines 7\n")) }))
	defer notGateway.Close()
	if _, err := scrapeHistogram(ctx, []string{urls[0], notGateway.URL}, deliveryLatency, gatewayMark); err == nil {
		t.Error("a page that is not a gateway's read as an empty histogram")
	}
	empty, err := before.since(before).latency()
	if err != nil || empty.Count != 0 {
		t.Errorf("nothing since: %+v, %v", empty, err)
	}
}

// FuzzMetricsPage: whatever a /metrics page holds, reading a histogram
// from it and summarizing it never panics, and a summary it gives is
// finite, within its buckets and encodable as JSON.
func FuzzMetricsPage(f *testing.F) {
	set := metrics.NewSet()
	set.NewGauge(gatewayMark, func() float64 { return 1 })
	set.NewGauge(dispatcherMark, func() float64 { return 1 })
	for i := 1; i < 50; i++ {
		set.GetOrCreateHistogram(deliveryLatency).Update(float64(i) / 700)
		set.GetOrCreateHistogram(pushLatency).Update(float64(i*i) / 100)
	}
	var page bytes.Buffer
	set.WritePrometheus(&page)
	f.Add(page.String())
	f.Add(gatewayMark + " 1\n" + deliveryLatency + `_bucket{vmrange="}` + " 3\n")
	f.Add(gatewayMark + " 1\n" + deliveryLatency + `_bucket{vmrange="1e-3...+Inf"} 3` + "\n" + deliveryLatency + "_count 0.5\n")
	f.Add(dispatcherMark + " 1\n" + `herald_http_request_duration_seconds_bucket{route="push",vmrange="2...1"} 1` + "\n")
	f.Add(gatewayMark + " 1\n" + deliveryLatency + `_bucket{vmrange="1e300...1e301"} NaN` + "\n")
	f.Fuzz(func(t *testing.T, page string) {
		for _, k := range []struct{ series, mark string }{{deliveryLatency, gatewayMark}, {pushLatency, dispatcherMark}} {
			h := vmHistogram{buckets: map[string]float64{}}
			if err := h.read(strings.NewReader(page), k.series, k.mark); err != nil {
				continue
			}
			if d, err := h.since(h).latency(); err != nil || d.Count != 0 {
				t.Fatalf("nothing since itself: %+v, %v", d, err)
			}
			l, err := h.latency()
			if err != nil {
				continue
			}
			for _, v := range []float64{l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean} {
				if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
					t.Fatalf("summary %+v of %q", l, page)
				}
			}
			for _, v := range []float64{l.P50, l.P90, l.P99, l.P999} {
				if v > l.Max {
					t.Fatalf("a quantile above the highest bucket: %+v", l)
				}
			}
			if l.Count < 0 {
				t.Fatalf("count %d", l.Count)
			}
			if _, err := json.Marshal(l); err != nil {
				t.Fatal(err)
			}
		}
	})
}
