package bench

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// The gateway stage of the unicast report reads the gateways' own
// VictoriaMetrics histograms over HTTP, as served, adds the gateways up and
// subtracts what they held before the run.
func TestGatewayLatencyFromMetrics(t *testing.T) {
	var urls []string
	var hs []*metrics.Histogram
	for i := 0; i < 2; i++ {
		set := metrics.NewSet()
		set.NewGauge("herald_gateway_connections", func() float64 { return 1 })
		hs = append(hs, set.NewHistogram(deliveryLatency))
		// A longer name with the same prefix, which must not be read.
		set.NewHistogram(deliveryLatency + "_other").Update(1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { set.WritePrometheus(w) }))
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A fresh gateway's page has no histogram yet: empty, not an error.
	fresh, err := scrapeHistogram(ctx, urls, deliveryLatency)
	if err != nil || len(fresh.buckets) != 0 || fresh.count != 0 {
		t.Fatalf("fresh gateways: %+v, %v", fresh, err)
	}

	// Before the run: slow values that must not count.
	for i := 0; i < 1000; i++ {
		hs[i%2].Update(5)
	}
	before, err := scrapeHistogram(ctx, urls, deliveryLatency)
	if err != nil {
		t.Fatal(err)
	}
	// The run: 1..1000 ms, one each, the first half on one gateway.
	for i := 1; i <= 1000; i++ {
		hs[(i-1)/500].Update(float64(i) / 1000)
	}
	after, err := scrapeHistogram(ctx, urls, deliveryLatency)
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

	notGateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("go_goroutines 7\n")) }))
	defer notGateway.Close()
	if _, err := scrapeHistogram(ctx, []string{urls[0], notGateway.URL}, deliveryLatency); err == nil {
		t.Error("a page that is not a gateway's read as an empty histogram")
	}
	empty, err := before.since(before).latency()
	if err != nil || empty.Count != 0 {
		t.Errorf("nothing since: %+v, %v", empty, err)
	}
}
