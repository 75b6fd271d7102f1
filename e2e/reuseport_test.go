package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Several standalone gateway processes share one device port with
// SO_REUSEPORT; the kernel spreads devices over them and each device gets
// its messages whichever process holds it.
func TestGatewaysShareAPort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	h := startServe(t)
	bin, dir, api, natsAddr := h.bin, h.dir, h.api, h.natsAddr

	shared := freeAddr(t)
	var metricsURLs []string
	for i := 0; i < 2; i++ {
		g := start(t, dir, fmt.Sprintf("%s gateway --nats nats://%s --tcp %s --reuse-port --ws '' --metrics 127.0.0.1:0", bin, natsAddr, shared))
		re := regexp.MustCompile(`metrics (http://\S+/metrics)`)
		waitFor(t, 20*time.Second, "gateway "+strconv.Itoa(i), func() bool { return re.MatchString(g.out.String()) })
		metricsURLs = append(metricsURLs, re.FindStringSubmatch(g.out.String())[1])
	}

	const devices = 40
	cols := make([]*collector, devices)
	for i := range cols {
		cols[i] = newCollector()
		device(t, shared, fmt.Sprintf("user%d", i), "d1", cols[i], nil)
	}
	perGateway := func() []int {
		var out []int
		for _, u := range metricsURLs {
			v, _ := strconv.Atoi(gatewayConnections(strings.TrimSuffix(u, "/metrics")))
			out = append(out, v)
		}
		return out
	}
	waitFor(t, 10*time.Second, "all devices connected", func() bool {
		c := perGateway()
		return c[0]+c[1] == devices
	})
	if c := perGateway(); c[0] == 0 || c[1] == 0 {
		t.Fatalf("connections per gateway %v: the port is not shared", c)
	}
	for i := range cols {
		push(t, "http://"+api, fmt.Sprintf("user%d", i), "hi")
	}
	for i, col := range cols {
		col.waitCount(t, 1, 5*time.Second)
		if m := col.snapshot()[0]; string(m.Data) != "hi" || m.Channel != fmt.Sprintf("u.user%d", i) {
			t.Fatalf("device %d got %+v", i, m)
		}
	}
}
