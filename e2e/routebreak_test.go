package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"herald/client"
	"herald/offline"
)

// socket is one established TCP connection of a process, from ss.
type socket struct {
	local, peer string // "127.0.0.1:port"
	pid         int
}

var ssPid = regexp.MustCompile(`pid=(\d+)`)

// establishedSockets lists the established TCP sockets of every process
// (ss -tnp; root sees every process's).
func establishedSockets(t *testing.T) []socket {
	t.Helper()
	out, err := exec.Command("ss", "-tnpH", "state", "established").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var socks []socket
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, m := range ssPid.FindAllStringSubmatch(line, -1) {
			pid, _ := strconv.Atoi(m[1])
			socks = append(socks, socket{local: f[2], peer: f[3], pid: pid})
		}
	}
	return socks
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// nodeOf is the index of the NATS node a herald process is connected to.
func (c *chaosCluster) nodeOf(p *process) int {
	c.t.Helper()
	for _, s := range establishedSockets(c.t) {
		if s.pid != p.cmd.Process.Pid {
			continue
		}
		for i, a := range c.natsClient {
			if port(s.peer) == port(a) {
				return i
			}
		}
	}
	c.t.Fatalf("process %d has no connection to a NATS node", p.cmd.Process.Pid)
	return -1
}

// cutRoutes destroys every route connection of node g (ss -K, as a broken
// network would end them) and returns how many it cut.
func (c *chaosCluster) cutRoutes(g int) int {
	c.t.Helper()
	var others []string
	for i, r := range c.natsRoute {
		if i != g {
			others = append(others, port(r))
		}
	}
	cut := 0
	for _, s := range establishedSockets(c.t) {
		if s.pid != c.nats[g].cmd.Process.Pid || (port(s.local) != port(c.natsRoute[g]) && !slices.Contains(others, port(s.peer))) {
			continue
		}
		lh, lp, _ := net.SplitHostPort(s.local)
		ph, pp, _ := net.SplitHostPort(s.peer)
		out, err := exec.Command("ss", "-K", "src", lh, "sport", "=", ":"+lp, "dst", ph, "dport", "=", ":"+pp).CombinedOutput()
		if err != nil {
			c.t.Fatalf("ss -K %s %s: %v %s", s.local, s.peer, err, out)
		}
		cut++
	}
	return cut
}

// leaderAwayFrom makes the HERALD stream's leader another node than g
// (asking the leader to step down while it is g) and returns a reader of
// the leader's index (-1: none known) and the leader.
func (c *chaosCluster) leaderAwayFrom(ctx context.Context, g int) (leader func() int, l int) {
	c.t.Helper()
	nc, js := c.jetStream()
	st, err := js.Stream(ctx, offline.StreamName)
	if err != nil {
		c.t.Fatal(err)
	}
	leader = func() int {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || len(info.Cluster.Leader) != 2 {
			return -1
		}
		return int(info.Cluster.Leader[1] - '1') // server names n1, n2, n3
	}
	for l = leader(); l == g || l < 0; l = leader() {
		if ctx.Err() != nil {
			c.t.Fatalf("the stream's leader is still node %d", l+1)
		}
		if l >= 0 {
			nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+offline.StreamName, nil, 10*time.Second)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return leader, l
}

// canDestroySockets tries ss -K on a connection of its own.
func canDestroySockets() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err
	}
	defer conn.Close()
	peer, err := l.Accept()
	if err != nil {
		return err
	}
	defer peer.Close()
	lh, lp, _ := net.SplitHostPort(conn.LocalAddr().String())
	ph, pp, _ := net.SplitHostPort(conn.RemoteAddr().String())
	if out, err := exec.Command("ss", "-K", "src", lh, "sport", "=", ":"+lp, "dst", ph, "dport", "=", ":"+pp).CombinedOutput(); err != nil {
		return fmt.Errorf("%v %s", err, out)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	if _, err := conn.Read(b[:]); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("ss -K left the connection open (read: %v)", err)
	}
	return nil
}

// startRouteCutTest skips where routes cannot be cut, starts the chaos
// cluster with alice's device on gateway 1 and waits for her first message
// ("m1").
func startRouteCutTest(t *testing.T) (*chaosCluster, *collector, *client.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a cluster of processes")
	}
	if err := canDestroySockets(); err != nil {
		t.Skipf("cannot cut TCP connections here (ss -K needs iproute2, CAP_NET_ADMIN and a kernel with INET_DIAG_DESTROY): %v", err)
	}
	c := startChaosCluster(t)
	col := newCollector()
	cl := device(t, c.gwAddr[0], "alice", "d", col, nil)
	push(t, "http://"+c.api, "alice", "m1")
	for end := time.Now().Add(30 * time.Second); col.count() < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			// Once in ~50 runs the first message did not come (before any
			// cut): say what the device and the gateway saw.
			t.Fatalf("no m1 after 30 s (before any cut); the device connected %d times\ngateway 1's log:\n%s\nits metrics:\n%s",
				cl.Connects(), c.gw[0].out.String(), gatewayMetrics(t, c.gwMetrics[0]))
		}
	}
	return c, col, cl
}

// A real route break, with the stream's leader up: every route of the NATS
// node that gateway 1 is connected to is cut again and again for 2.5 s (ss
// -K destroys the sockets, as a broken network would end them; the nodes
// reconnect their routes after about a second each time). A message
// stored by the leader meanwhile never reaches that node, and nothing on
// the channel comes after it. The node says each time its routes are back
// (TestRouteFlapFillsLostLiveCopies), and the pulses stored meanwhile are
// lost the same way, so the first one after the routes are back makes the
// gateway read the store too (TestLostPulsesFillLostLiveCopies): the device
// gets the message on its first connection, and the gateway counts both.
func TestRouteBreakLosesNoLiveCopy(t *testing.T) {
	c, col, cl := startRouteCutTest(t)
	g := c.nodeOf(c.gw[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader, l := c.leaderAwayFrom(ctx, g)
	// Gateway 1 follows the pulses again after any leader change.
	pulses := func() int {
		n, _ := strconv.Atoi(metric("http://"+c.gwMetrics[0], "herald_gateway_stream_pulses_total"))
		return n
	}
	n0 := pulses()
	waitFor(t, 10*time.Second, "two pulses at gateway 1", func() bool { return pulses() >= n0+2 })

	_, jsL := c.jetStream(l)
	before := pulses()
	cut := c.cutRoutes(g)
	if cut == 0 {
		t.Fatalf("node %d has no route connections to cut", g+1)
	}
	ack, err := jsL.Publish(ctx, offline.StoredSubject("demo", "u.alice"), []byte("m2"))
	if err != nil {
		t.Fatalf("storing m2 at the leader (node %d): %v", l+1, err)
	}
	// Routes come back after about a second; cutting every 20 ms keeps a
	// pulse from slipping through in between.
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		cut += c.cutRoutes(g)
	}
	if pulses() != before {
		// (m2 may have come already: the node says so whenever its routes
		// are back between two cuts, and the gateway reads the store.)
		t.Fatalf("with node %d's routes cut, gateway 1 got %d pulses: the test cut nothing", g+1, pulses()-before)
	}
	t.Logf("cut %d route connections of node %d (gateway 1's) over 2.5 s; the stream's leader is node %d", cut, g+1, l+1)

	for end := time.Now().Add(15 * time.Second); col.count() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			var lines []string
			for _, line := range strings.Split(c.gw[0].out.String(), "\n") {
				if strings.Contains(line, "re-sync") || strings.Contains(line, "pulse") || strings.Contains(line, "NATS") || strings.Contains(line, "nats") {
					lines = append(lines, line)
				}
			}
			var ms []string
			for _, line := range strings.Split(gatewayMetrics(t, c.gwMetrics[0]), "\n") {
				if strings.Contains(line, "stream_") || strings.Contains(line, "catchup") {
					ms = append(ms, line)
				}
			}
			t.Fatalf("no m2 (seq %d) 15 s after the routes were back; the leader is node %d now\ngateway 1's log:\n%s\nits metrics:\n%s", ack.Sequence, leader()+1, strings.Join(lines, "\n"), strings.Join(ms, "\n"))
		}
	}
	if got := col.snapshot()[1]; got.Seq != ack.Sequence || string(got.Data) != "m2" || cl.Connects() != 1 {
		t.Fatalf("got seq %d %q after %d connects, want seq %d \"m2\" on the first connection", got.Seq, got.Data, cl.Connects(), ack.Sequence)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m := gatewayMetrics(t, c.gwMetrics[0])
		if counted(m, "herald_gateway_stream_pulse_resyncs_total") && counted(m, "herald_gateway_route_resyncs_total") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the device got the message, but gateway 1 did not count both a pulse re-sync and one for routes back:\n%s", m)
		}
	}
	if now := leader(); now != l {
		t.Logf("the stream's leader moved from node %d to %d meanwhile", l+1, now+1)
	}
}

// A route break that no pulse shows: the stream's pulse is removed, and
// every route of gateway 1's NATS node is cut once (ss -K) while the
// leader, on another node, stores a message. The routes are back after
// about a second; the node, a herald nats, says it has new route
// connections, and gateway 1 reads the store: the device gets the message
// on its first connection with nothing else on the channel after it. Before
// the nodes said so, such a message waited for the channel's next one, or
// the device's next connect, whenever the break fell between two pulses.
func TestRouteFlapFillsLostLiveCopies(t *testing.T) {
	c, col, cl := startRouteCutTest(t)
	g := c.nodeOf(c.gw[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, l := c.leaderAwayFrom(ctx, g)

	_, js := c.jetStream()
	st, err := js.Stream(ctx, offline.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(offline.PulseScheduleSubject)); err != nil {
		t.Fatalf("removing the pulse: %v", err)
	}
	// Settle checks of the new channel, and a pulse already on its way,
	// would fill the hole by themselves: let them pass.
	time.Sleep(2 * time.Second)
	m0 := gatewayMetrics(t, c.gwMetrics[0])

	_, jsL := c.jetStream(l)
	if c.cutRoutes(g) == 0 {
		t.Fatalf("node %d has no route connections to cut", g+1)
	}
	ack, err := jsL.Publish(ctx, offline.StoredSubject("demo", "u.alice"), []byte("m2"))
	if err != nil {
		t.Fatalf("storing m2 at the leader (node %d): %v", l+1, err)
	}
	time.Sleep(300 * time.Millisecond)
	if col.count() != 1 {
		t.Fatalf("the device got m2 300 ms after node %d's routes were cut: the test cut nothing", g+1)
	}
	col.waitCount(t, 2, 10*time.Second)
	if got := col.snapshot()[1]; got.Seq != ack.Sequence || string(got.Data) != "m2" || cl.Connects() != 1 {
		t.Fatalf("got seq %d %q after %d connects, want seq %d \"m2\" on the first connection", got.Seq, got.Data, cl.Connects(), ack.Sequence)
	}
	m := gatewayMetrics(t, c.gwMetrics[0])
	if metric0, metric1 := metricIn(m0, "herald_gateway_route_resyncs_total"), metricIn(m, "herald_gateway_route_resyncs_total"); metric1 <= metric0 {
		t.Fatalf("the device got m2, but gateway 1 counted no re-sync for new routes (%d before, %d after):\n%s", metric0, metric1, m)
	}
	if metricIn(m, "herald_gateway_stream_pulse_resyncs_total") != metricIn(m0, "herald_gateway_stream_pulse_resyncs_total") {
		t.Fatalf("a pulse re-sync came with the pulse removed:\n%s", m)
	}
}
