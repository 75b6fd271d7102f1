package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// InterestConfig configures the interest scenario: what every NATS node of
// a cluster pays for the per-user subscriptions gateways hold. Subs subjects
// shaped like herald's live subjects are subscribed on one connection (to
// the first node); every node's memory (/varz) and subscription count
// (/subsz) are read before and after.
type InterestConfig struct {
	NATS     string   // client URL (one node)
	Monitors []string // each node's monitoring base URL, http://host:port
	Subs     int
	Timeout  time.Duration
	Progress io.Writer
}

// NodeInterest is one node's figures.
type NodeInterest struct {
	Monitor          string  `json:"monitor"`
	SubsBefore       uint64  `json:"subscriptions_before"`
	SubsAfter        uint64  `json:"subscriptions_after"`
	MemBefore        int64   `json:"rss_before_bytes"`
	MemAfter         int64   `json:"rss_after_bytes"`
	BytesPerInterest float64 `json:"bytes_per_subscription"`
}

// InterestResult is the scenario's outcome.
type InterestResult struct {
	Subs  int            `json:"subscriptions"`
	Nodes []NodeInterest `json:"nodes"`
}

type varz struct {
	Mem int64 `json:"mem"`
}

type subsz struct {
	NumSubs uint64 `json:"num_subscriptions"`
}

func getJSON(base, path string, v any) error {
	if err := checkLoopback(base); err != nil {
		return err
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// RunInterest subscribes cfg.Subs subjects and reports each node's cost.
func RunInterest(cfg InterestConfig) (*InterestResult, error) {
	if err := checkLoopback(cfg.NATS); err != nil {
		return nil, err
	}
	res := &InterestResult{Subs: cfg.Subs}
	for _, m := range cfg.Monitors {
		var v varz
		var s subsz
		if err := getJSON(m, "/varz", &v); err != nil {
			return nil, fmt.Errorf("interest: %s/varz: %w", m, err)
		}
		if err := getJSON(m, "/subsz", &s); err != nil {
			return nil, fmt.Errorf("interest: %s/subsz: %w", m, err)
		}
		res.Nodes = append(res.Nodes, NodeInterest{Monitor: m, MemBefore: v.Mem, SubsBefore: s.NumSubs})
	}
	nc, err := nats.Connect(cfg.NATS, nats.Name("herald bench interest"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	for i := 0; i < cfg.Subs; i++ {
		if _, err := nc.Subscribe("herald.live.bench.u.user"+strconv.Itoa(i), func(*nats.Msg) {}); err != nil {
			return nil, err
		}
		if cfg.Progress != nil && i%10000 == 0 {
			fmt.Fprintf(cfg.Progress, "\rsubscribed %d/%d", i, cfg.Subs)
		}
	}
	if err := nc.FlushTimeout(30 * time.Second); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(cfg.Timeout)
	for i := range res.Nodes {
		n := &res.Nodes[i]
		for {
			var s subsz
			if err := getJSON(n.Monitor, "/subsz", &s); err != nil {
				return nil, err
			}
			n.SubsAfter = s.NumSubs
			if s.NumSubs >= n.SubsBefore+uint64(cfg.Subs) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second) // let the servers' memory settle
	for i := range res.Nodes {
		n := &res.Nodes[i]
		var v varz
		if err := getJSON(n.Monitor, "/varz", &v); err != nil {
			return nil, err
		}
		n.MemAfter = v.Mem
		n.BytesPerInterest = float64(n.MemAfter-n.MemBefore) / float64(cfg.Subs)
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	return res, nil
}

// Table prints the result.
func (r *InterestResult) Table(w io.Writer) {
	fmt.Fprintf(w, "%d subscriptions on one node of the cluster:\n", r.Subs)
	fmt.Fprintf(w, "%-28s %12s %12s %14s\n", "node", "subs before", "subs after", "bytes/sub (RSS)")
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "%-28s %12d %12d %14.0f\n", n.Monitor, n.SubsBefore, n.SubsAfter, n.BytesPerInterest)
	}
}
