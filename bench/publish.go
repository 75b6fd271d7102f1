package bench

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
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
