package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"herald/wire"
)

// Client-side balancing: ask the locator for candidates, connect to several
// at once, send PROBE on each, keep the first whose PROBE_REPLY arrives and
// close the others. Loaded gateways answer late, so devices spread towards
// idle ones without a balancer in the path.

// candidates returns the gateway addresses to probe: the locator's, or
// the fallback list when the locator is not set or cannot be reached.
func (c *Client) candidates(ctx context.Context) ([]string, error) {
	var locErr error
	if c.cfg.Locator != "" {
		addrs, err := c.locate(ctx)
		if err == nil && len(addrs) > 0 {
			return addrs, nil
		}
		locErr = err
		c.cfg.Log.Warn("locator unreachable; probing the fallback addresses", "err", err)
	}
	if len(c.cfg.Fallback) == 0 {
		return nil, fmt.Errorf("client: no gateway to try: %w", locErr)
	}
	addrs := append([]string(nil), c.cfg.Fallback...)
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	if len(addrs) > c.cfg.Probe {
		addrs = addrs[:c.cfg.Probe]
	}
	return addrs, nil
}

// locate asks GET /v1/gateways for this device's candidates.
func (c *Client) locate(ctx context.Context) ([]string, error) {
	q := url.Values{"app": {c.cfg.App}, "device": {c.cfg.Device}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.cfg.Locator, "/")+"/v1/gateways?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: c.cfg.DialTimeout}
	if c.cfg.TLS != nil {
		hc.Transport = &http.Transport{TLSClientConfig: c.cfg.TLS}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("locator answered %d", resp.StatusCode)
	}
	var out struct {
		Gateways []struct {
			TCP string `json:"tcp"`
			TLS bool   `json:"tls"`
		} `json:"gateways"`
		Probe int `json:"probe"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("locator: %w", err)
	}
	k := c.cfg.Probe
	if out.Probe > 0 && out.Probe < k {
		k = out.Probe
	}
	var addrs []string
	for _, g := range out.Gateways {
		if len(addrs) == k {
			break
		}
		if g.TLS {
			addrs = append(addrs, "tls://"+g.TCP)
		} else {
			addrs = append(addrs, g.TCP)
		}
	}
	return addrs, nil
}

// dialProbed connects to the first candidate to answer PROBE.
func (c *Client) dialProbed(ctx context.Context) (net.Conn, error) {
	addrs, err := c.candidates(ctx)
	if err != nil {
		return nil, err
	}
	type result struct {
		nc  net.Conn
		err error
	}
	results := make(chan result, len(addrs))
	var mu sync.Mutex
	var open []net.Conn
	won := false
	nonce := rand.Uint64()
	lost := errors.New("another gateway answered first")
	for _, a := range addrs {
		go func(a string) {
			nc, err := c.dialTCP(ctx, a)
			if err != nil {
				results <- result{err: err}
				return
			}
			mu.Lock()
			if won {
				mu.Unlock()
				nc.Close()
				results <- result{err: lost}
				return
			}
			open = append(open, nc)
			mu.Unlock()
			if d, ok := ctx.Deadline(); ok {
				_ = nc.SetDeadline(d)
			}
			err = probe(nc, nonce)
			// The first successful probe wins and closes the others
			// (which unblocks their reads); a late one closes itself.
			mu.Lock()
			defer mu.Unlock()
			if err != nil || won {
				nc.Close()
				if err == nil {
					err = lost
				}
				results <- result{err: err}
				return
			}
			won = true
			for _, o := range open {
				if o != nc {
					o.Close()
				}
			}
			_ = nc.SetDeadline(time.Time{})
			results <- result{nc: nc}
		}(a)
	}
	var firstErr error
	for range addrs {
		r := <-results
		if r.nc != nil {
			return r.nc, nil
		}
		if firstErr == nil || errors.Is(firstErr, lost) {
			firstErr = r.err
		}
	}
	return nil, fmt.Errorf("client: no gateway answered PROBE: %w", firstErr)
}

// probe sends PROBE and reads the PROBE_REPLY byte by byte (nothing else
// comes before CONNECT, and no byte may be left in a buffer).
func probe(nc net.Conn, nonce uint64) error {
	if _, err := nc.Write((&wire.Probe{Nonce: nonce}).Append(nil)); err != nil {
		return err
	}
	var one [1]byte
	if _, err := io.ReadFull(nc, one[:]); err != nil {
		return err
	}
	typ := wire.Type(one[0])
	var n uint64
	for shift := 0; ; shift += 7 {
		if _, err := io.ReadFull(nc, one[:]); err != nil {
			return err
		}
		n |= uint64(one[0]&0x7f) << shift
		if one[0] < 0x80 {
			break
		}
		if shift > 28 {
			return errors.New("client: bad PROBE_REPLY length")
		}
	}
	if n > 1024 {
		return errors.New("client: PROBE_REPLY too long")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(nc, body); err != nil {
		return err
	}
	switch typ {
	case wire.TypeProbeReply:
		var pr wire.ProbeReply
		if err := pr.Decode(body); err != nil || pr.Nonce != nonce {
			return errors.New("client: bad PROBE_REPLY")
		}
		return nil
	case wire.TypeError, wire.TypeGoAway:
		return decodeServerError(body, typ == wire.TypeGoAway)
	}
	return fmt.Errorf("client: %s instead of PROBE_REPLY", typ)
}
