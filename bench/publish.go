package bench

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// publisher POSTs to the push API with fasthttp's client.
type publisher struct {
	hc   *fasthttp.HostClient
	path string
	auth string
}

func newPublisher(api, app, key string, conns int) (*publisher, error) {
	if err := checkLoopback(api); err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(strings.TrimPrefix(api, "http://"), "https://")
	host = strings.TrimSuffix(host, "/")
	return &publisher{
		hc:   &fasthttp.HostClient{Addr: host, MaxConns: conns, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second},
		path: "/v1/apps/" + app + "/push",
		auth: "Bearer " + key,
	}, nil
}

// stampedBody is a push to users whose data starts with the send time at
// (unix nanoseconds), for end-to-end latency at the device.
func stampedBody(dst []byte, users []string, pad int, at time.Time) []byte {
	dst = append(dst[:0], `{"users":[`...)
	for i, u := range users {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendQuote(dst, u)
	}
	dst = append(dst, `],"data":"`...)
	dst = strconv.AppendInt(dst, at.UnixNano(), 10)
	dst = append(dst, ' ')
	for i := 0; i < pad; i++ {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// sentAt reads the send time a stamped payload starts with.
func sentAt(data []byte) (time.Time, bool) {
	i := 0
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	ns, err := strconv.ParseInt(string(data[:i]), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// push posts body and returns how many messages were stored.
func (p *publisher) push(body []byte) (int, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + p.hc.Addr + p.path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.Set("Authorization", p.auth)
	req.Header.SetContentType("application/json")
	req.SetBody(body)
	if err := p.hc.Do(req, resp); err != nil {
		return 0, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode(), resp.Body())
	}
	return storedCount(resp.Body())
}

// seqKey begins the one key every stored message has in a push answer.
var seqKey = []byte(`"seq":`)

// storedCount is how many messages a 200 push answer reports stored: the
// number of "seq" keys (a string value cannot be followed by a colon, so
// the bytes appear only as keys). Decoding the answer with encoding/json
// cost the load generator more than its HTTP client did.
func storedCount(body []byte) (int, error) {
	if len(body) == 0 || body[0] != '{' || !bytes.Contains(body, []byte(`"messages":[`)) {
		return 0, fmt.Errorf("push answer is not a message list: %.200s", body)
	}
	return bytes.Count(body, seqKey), nil
}

// pacing is how one publisher sends: as fast as it can (Interval 0: one
// request at a time, each sent when the one before is answered) or one
// request every Interval from First, each sent when it is due, with up to
// InFlight answers outstanding. A request due while InFlight are still
// outstanding waits for one of them, and its latency counts from when it
// was due (no coordinated omission either way).
type pacing struct {
	First, End time.Time
	Interval   time.Duration
	InFlight   int
}

// run sends requests until End. build fills dst with a request stamped
// with its due time (from this goroutine only); push sends one; done hears
// each answer and its latency, one call at a time. run returns once every
// request sent has its answer.
func (pc pacing) run(build func(dst []byte, due time.Time) []byte, push func(body []byte) (int, error), done func(n int, err error, latency time.Duration)) {
	inFlight := pc.InFlight
	if pc.Interval <= 0 || inFlight < 1 {
		inFlight = 1
	}
	bufs := make(chan []byte, inFlight)
	for range inFlight {
		bufs <- nil
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := pc.First
	for time.Now().Before(pc.End) {
		due := time.Now()
		if pc.Interval > 0 {
			next = next.Add(pc.Interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			due = next
		}
		body := build(<-bufs, due)
		wg.Add(1)
		send := func() {
			defer wg.Done()
			n, err := push(body)
			lat := time.Since(due)
			mu.Lock()
			done(n, err, lat)
			mu.Unlock()
			bufs <- body
		}
		if inFlight == 1 {
			send()
		} else {
			go send()
		}
	}
	wg.Wait()
}
