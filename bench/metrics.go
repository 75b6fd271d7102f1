// Package bench is herald's load tool: scenarios that open many devices
// across several processes and source addresses, publish through the API,
// and report what the gateways and devices saw. Every scenario is bounded in
// count and time, targets loopback only, and stops by itself.
package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
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

// getPage GETs a /metrics page; the caller closes the body.
func getPage(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: cannot read metrics from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("bench: %s answered %s", url, resp.Status)
	}
	return resp.Body, nil
}

// scrape reads the process and gateway gauges from a Prometheus text page.
func scrape(ctx context.Context, url string) (Scrape, error) {
	s := Scrape{URL: url}
	body, err := getPage(ctx, url)
	if err != nil {
		return s, err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
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

// vmHistogram is one VictoriaMetrics histogram read from /metrics: the
// count of each non-empty vmrange bucket, its sum and its count.
type vmHistogram struct {
	buckets map[string]float64 // vmrange ("1.000e-03...1.136e-03") → count
	sum     float64
	count   float64
}

// scrapeHistogram reads the histogram series (a name, with or without
// labels: herald_http_request_duration_seconds{route="push"}) from the
// Prometheus text pages at urls, adding them up. VictoriaMetrics leaves an
// empty histogram off the page, so a page must only have the metric mark
// (herald_gateway_connections: a gateway's page).
func scrapeHistogram(ctx context.Context, urls []string, series, mark string) (vmHistogram, error) {
	h := vmHistogram{buckets: map[string]float64{}}
	for _, url := range urls {
		body, err := getPage(ctx, url)
		if err != nil {
			return h, err
		}
		err = h.read(body, series, mark)
		body.Close()
		if err != nil {
			return h, fmt.Errorf("bench: %s: %w", url, err)
		}
	}
	return h, nil
}

// read adds the series' buckets, sum and count from one Prometheus text
// page to h. The page must have the line mark; a value that is not a
// number from 0 to maxSample is an error.
func (h *vmHistogram) read(page io.Reader, series, mark string) error {
	name, labels, _ := strings.Cut(series, "{")
	labels = strings.TrimSuffix(labels, "}")
	bucket, sumKey, countKey := name+`_bucket{vmrange="`, name+"_sum", name+"_count"
	if labels != "" {
		bucket = name + "_bucket{" + labels + `,vmrange="`
		sumKey, countKey = name+"_sum{"+labels+"}", name+"_count{"+labels+"}"
	}
	found := false
	sc := bufio.NewScanner(page)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), " ")
		if key == mark {
			found = true
		}
		isBucket := len(key) >= len(bucket)+2 && strings.HasPrefix(key, bucket) && strings.HasSuffix(key, `"}`)
		if key != sumKey && key != countKey && !isBucket {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil || !(v >= 0 && v <= maxSample) {
			return fmt.Errorf("bad value %.40q of %.200s", val, key)
		}
		switch {
		case key == sumKey:
			h.sum += v
		case key == countKey:
			h.count += v
		default:
			h.buckets[key[len(bucket):len(key)-2]] += v
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("no %s: not the metrics of the right kind of node", mark)
	}
	return nil
}

// maxSample bounds a count or sum read from a page (no gateway counts
// 10^15 of anything), so that adding them up stays finite.
const maxSample = 1e15

// maxBound is VictoriaMetrics' highest finite bucket bound, in seconds.
const maxBound = 1e18

// since is what h counted after before was read.
func (h vmHistogram) since(before vmHistogram) vmHistogram {
	d := vmHistogram{buckets: map[string]float64{}, sum: h.sum - before.sum, count: h.count - before.count}
	for r, n := range h.buckets {
		if n -= before.buckets[r]; n > 0 {
			d.buckets[r] = n
		}
	}
	return d
}

// latency summarizes a histogram of seconds in milliseconds. A quantile
// falls inside a bucket (VictoriaMetrics buckets are 1/18 of a decade, so
// ±7%): it is placed in proportion to its rank among the bucket's counts;
// Max is the upper bound of the highest non-empty bucket.
func (h vmHistogram) latency() (Latency, error) {
	type bkt struct{ lo, hi, n float64 }
	var bs []bkt
	total := 0.0
	for r, n := range h.buckets {
		los, his, ok := strings.Cut(r, "...")
		lo, err1 := strconv.ParseFloat(los, 64)
		hi, err2 := strconv.ParseFloat(his, 64)
		if math.IsInf(hi, 1) { // VictoriaMetrics' last bucket: "1.000e+18...+Inf"
			hi = lo
		}
		if !ok || err1 != nil || err2 != nil || !(0 <= lo && lo <= hi && hi <= maxBound) {
			return Latency{}, fmt.Errorf("bench: bad vmrange %.80q", r)
		}
		if n <= 0 {
			continue
		}
		bs = append(bs, bkt{lo, hi, n})
		total += n
	}
	if total == 0 {
		return Latency{}, nil
	}
	slices.SortFunc(bs, func(a, b bkt) int { return cmp.Compare(a.lo, b.lo) })
	at := func(q float64) float64 {
		rank, cum := q*total, 0.0
		for _, b := range bs {
			if cum+b.n >= rank {
				return (b.lo + (b.hi-b.lo)*(rank-cum)/b.n) * 1000
			}
			cum += b.n
		}
		return bs[len(bs)-1].hi * 1000
	}
	l := Latency{Count: int64(total), P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999)}
	for _, b := range bs {
		l.Max = max(l.Max, b.hi*1000)
	}
	if h.count >= 1 {
		l.Mean = h.sum / h.count * 1000
	}
	return l, nil
}

// stage is a server-side latency histogram read before and after a run.
type stage struct {
	urls         []string
	series, mark string
	before       vmHistogram
	err          error
}

// newStage reads the histogram before the run; nil without urls.
func newStage(urls []string, series, mark string) *stage {
	if len(urls) == 0 {
		return nil
	}
	s := &stage{urls: urls, series: series, mark: mark}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.before, s.err = scrapeHistogram(ctx, urls, series, mark)
	return s
}

// finish reads the histogram again: what it counted during the run, or
// why it could not be read.
func (s *stage) finish() (*Latency, string) {
	if s == nil {
		return nil, ""
	}
	if s.err != nil {
		return nil, s.err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	after, err := scrapeHistogram(ctx, s.urls, s.series, s.mark)
	if err != nil {
		return nil, err.Error()
	}
	l, err := after.since(s.before).latency()
	if err != nil {
		return nil, err.Error()
	}
	return &l, ""
}
