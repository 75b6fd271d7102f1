package e2e

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// docs/metrics.md lists exactly the herald_* metrics a node exports: every
// name registered by the dispatcher and the gateway is in the document,
// and every name in the document is registered (or, for the per-route
// families, appears in /metrics after a request).
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(herald_[a-z_]+)[{`]").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	n := startNode(t, testConfig(t))
	push(t, apiURL(n), "alice", "x") // the per-route families appear on first use
	resp, err := http.Get(apiURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(herald_[a-z_]+)`).FindAllStringSubmatch(string(body), -1) {
		// A histogram is written as its _bucket, _sum and _count series.
		name := m[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && strings.HasSuffix(base, "_seconds") {
				name = base
			}
		}
		exported[name] = true
	}
	names := append(n.Gateway.Metrics().ListMetricNames(), n.Dispatcher.Metrics().ListMetricNames()...)
	for _, name := range names {
		exported[strings.SplitN(name, "{", 2)[0]] = true
	}
	var missing, stale []string
	for name := range exported {
		if !documented[name] {
			missing = append(missing, name)
		}
	}
	for name := range documented {
		if !exported[name] {
			stale = append(stale, name)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Fatalf("docs/metrics.md is out of step:\nexported, not documented: %v\ndocumented, not exported: %v", missing, stale)
	}
	// The readiness endpoints and gauges agree.
	for _, path := range []string{"/healthz", "/readyz"} {
		r, err := (&http.Client{Timeout: 5 * time.Second}).Get(apiURL(n) + path)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, err, r)
		}
		r.Body.Close()
	}
	if !strings.Contains(string(body), `herald_ready{component="gateway"} 1`) || !strings.Contains(string(body), `herald_ready{component="dispatcher"} 1`) {
		t.Fatal("herald_ready is not 1 on a ready node")
	}
}
