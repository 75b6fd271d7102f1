package dispatcher

import (
	"context"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/offline"
)

// The locator: GET /v1/gateways?app=&device= tells a device which gateways
// to probe. It needs no key (it reveals only device addresses). Candidates
// are the live, non-draining gateways of the registry, least loaded first;
// canary rules (api.locator.canary) send a fixed share of devices — by a
// hash of app and device, so each device stays on its side — to the
// gateways of a version.

// registryCache keeps the registry for a second: a reconnect storm asks
// the locator once per device.
type registryCache struct {
	mu      sync.Mutex
	at      time.Time
	entries []offline.GatewayInfo
}

func (ds *Dispatcher) cachedGateways(ctx context.Context) ([]offline.GatewayInfo, error) {
	ds.registry.mu.Lock()
	defer ds.registry.mu.Unlock()
	if time.Since(ds.registry.at) < time.Second {
		return ds.registry.entries, nil
	}
	gws, err := ds.d.Store.Gateways(ctx)
	if err != nil {
		return nil, err
	}
	ds.registry.entries, ds.registry.at = gws, time.Now()
	return gws, nil
}

type candidate struct {
	ID      string  `json:"id"`
	TCP     string  `json:"tcp"`
	WS      string  `json:"ws,omitempty"`
	TLS     bool    `json:"tls,omitempty"`
	Version string  `json:"version"`
	Load    float64 `json:"load"`
}

func (ds *Dispatcher) locate(ctx *fasthttp.RequestCtx) {
	app, device := string(ctx.QueryArgs().Peek("app")), string(ctx.QueryArgs().Peek("device"))
	if !config.ValidName(app) || !config.ValidName(device) {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_name", "app and device are required: 1-128 of A-Z a-z 0-9 _ -")
		return
	}
	rctx, cancel := context.WithTimeout(ds.ctx, 5*time.Second)
	defer cancel()
	gws, err := ds.cachedGateways(rctx)
	if err != nil {
		ds.storeFailed(ctx, "locator", err)
		return
	}
	picked := pickGateways(gws, app, device, ds.cfg.Locator)
	out := struct {
		Gateways []candidate `json:"gateways"`
		Probe    int         `json:"probe"`
	}{Gateways: make([]candidate, 0, len(picked)), Probe: ds.cfg.Locator.Probe}
	for _, g := range picked {
		out.Gateways = append(out.Gateways, candidate{ID: g.ID, TCP: g.TCP, WS: g.WS, TLS: g.TLS, Version: g.Version, Load: g.Load})
	}
	if len(out.Gateways) == 0 {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "no_gateways", "no gateway is available; retry")
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, &out)
}

// pickGateways chooses up to cfg.Probe candidates for a device.
func pickGateways(gws []offline.GatewayInfo, app, device string, cfg config.Locator) []offline.GatewayInfo {
	var live []offline.GatewayInfo
	for _, g := range gws {
		if !g.Draining {
			live = append(live, g)
		}
	}
	h := fnv.New32a()
	h.Write([]byte(app))
	h.Write([]byte{0})
	h.Write([]byte(device))
	point := float64(h.Sum32()%10000) / 10000
	var want string
	var canaries []string
	acc := 0.0
	for _, r := range cfg.Canary {
		canaries = append(canaries, r.Version)
		if want == "" && point < acc+r.Share {
			want = r.Version
		}
		acc += r.Share
	}
	filter := func(keep func(offline.GatewayInfo) bool) []offline.GatewayInfo {
		var out []offline.GatewayInfo
		for _, g := range live {
			if keep(g) {
				out = append(out, g)
			}
		}
		return out
	}
	var pool []offline.GatewayInfo
	if want != "" {
		pool = filter(func(g offline.GatewayInfo) bool { return g.Version == want })
	}
	if len(pool) == 0 && len(canaries) > 0 {
		pool = filter(func(g offline.GatewayInfo) bool { return !slices.Contains(canaries, g.Version) })
	}
	if len(pool) == 0 {
		pool = live
	}
	slices.SortStableFunc(pool, func(a, b offline.GatewayInfo) int {
		switch {
		case a.Load < b.Load:
			return -1
		case a.Load > b.Load:
			return 1
		}
		return 0
	})
	if len(pool) > cfg.Probe {
		pool = pool[:cfg.Probe]
	}
	return pool
}
