package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// ackCheck asks the admin API for each device's server cursor on its user
// channel until every device's is at the last message it received (what it
// acknowledged reached the gateway and the store), or wait passes. It
// returns how many devices were confirmed; err is the first failure to ask.
func ackCheck(api *fasthttp.HostClient, adminKey, app string, devices []*device, wait time.Duration) (confirmed int, err error) {
	const askers = 16
	hc := &fasthttp.HostClient{Addr: api.Addr, MaxConns: askers, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	deadline := time.Now().Add(wait)
	pending := make([]*device, 0, len(devices))
	for _, d := range devices {
		if d.lastSeq.Load() == 0 {
			confirmed++ // received nothing: nothing to acknowledge
			continue
		}
		pending = append(pending, d)
	}
	var firstErr atomic.Pointer[error]
	for len(pending) > 0 {
		var mu sync.Mutex
		var left []*device
		var wg sync.WaitGroup
		work := make(chan *device)
		for w := 0; w < askers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for d := range work {
					cur, err := serverCursor(hc, adminKey, app, d.user, benchDevice)
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
					}
					if err != nil || cur < d.lastSeq.Load() {
						mu.Lock()
						left = append(left, d)
						mu.Unlock()
					}
				}
			}()
		}
		for _, d := range pending {
			work <- d
		}
		close(work)
		wg.Wait()
		confirmed += len(pending) - len(left)
		pending = left
		var refused *refusedError
		if e := firstErr.Load(); e != nil && errors.As(*e, &refused) {
			break // asking again will not help
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if e := firstErr.Load(); e != nil && len(pending) > 0 {
		return confirmed, *e
	}
	return confirmed, nil
}

// refusedError is the admin API refusing the key.
type refusedError struct{ error }

func (e *refusedError) Unwrap() error { return e.error }

// serverCursor is the stored cursor of user's device on its user channel.
func serverCursor(hc *fasthttp.HostClient, adminKey, app, user, dev string) (uint64, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + hc.Addr + "/v1/admin/apps/" + url.PathEscape(app) + "/users/" + url.PathEscape(user))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if err := hc.Do(req, resp); err != nil {
		return 0, err
	}
	if st := resp.StatusCode(); st != fasthttp.StatusOK {
		err := fmt.Errorf("admin API: HTTP %d: %s", st, resp.Body())
		if st == fasthttp.StatusUnauthorized || st == fasthttp.StatusForbidden {
			err = &refusedError{err}
		}
		return 0, err
	}
	var r struct {
		Channels []struct {
			Channel string `json:"channel"`
			Devices []struct {
				Device string `json:"device"`
				Cursor uint64 `json:"cursor"`
			} `json:"devices"`
		} `json:"channels"`
	}
	if err := json.Unmarshal(resp.Body(), &r); err != nil {
		return 0, fmt.Errorf("admin API: %w", err)
	}
	for _, ch := range r.Channels {
		if ch.Channel != "u."+user {
			continue
		}
		for _, d := range ch.Devices {
			if d.Device == dev {
				return d.Cursor, nil
			}
		}
	}
	return 0, nil
}
