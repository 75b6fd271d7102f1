package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"herald/config"
	"herald/node"
	"herald/token"
	"herald/wire"
)

// rawDevice speaks the protocol by hand, to send what the SDK never would.
type rawDevice struct {
	t   testing.TB
	nc  net.Conn
	r   *bufio.Reader
	buf []byte
}

func dialRaw(t testing.TB, addr string) *rawDevice {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return newRawDevice(t, nc)
}

func newRawDevice(t testing.TB, nc net.Conn) *rawDevice {
	return &rawDevice{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (d *rawDevice) send(b []byte) {
	d.t.Helper()
	d.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.nc.Write(b); err != nil {
		d.t.Fatalf("write: %v", err)
	}
}

// next reads one frame.
// next reads the next frame, skipping SUBACKs (the gateway confirms the
// channels it resolved itself; these tests are about other frames).
func (d *rawDevice) next() (wire.Type, []byte, error) {
	for {
		d.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		t, body, nb, err := wire.ReadFrame(d.r, d.buf, wire.DefaultMaxFrame)
		d.buf = nb
		if err != nil || t != wire.TypeSubAck {
			return t, body, err
		}
	}
}

// connect sends CONNECT with tok and returns the first frame's type and body.
func (d *rawDevice) connect(app, dev, tok string) (wire.Type, []byte) {
	d.t.Helper()
	// With a broadcast cursor, like a device that connected before.
	d.send((&wire.Connect{Version: wire.Version, App: []byte(app), Device: []byte(dev), Token: []byte(tok),
		Cursors: []wire.Cursor{{Channel: []byte("b.all")}}}).Append(nil))
	t, body, err := d.next()
	if err != nil {
		d.t.Fatalf("after CONNECT: %v", err)
	}
	return t, body
}

// expectPong sends PING and expects PONG: the connection is still served.
func (d *rawDevice) expectPong(what string) {
	d.t.Helper()
	d.send((&wire.Ping{}).Append(nil))
	if typ, _, err := d.next(); err != nil || typ != wire.TypePong {
		d.t.Fatalf("%s: %v %v", what, typ, err)
	}
}

// expectError reads until an ERROR frame with code, then expects the close.
func (d *rawDevice) expectError(code wire.Code) {
	d.t.Helper()
	for {
		t, body, err := d.next()
		if err != nil {
			d.t.Fatalf("waiting for ERROR %s: %v", code, err)
		}
		if t != wire.TypeError {
			continue
		}
		var e wire.Error
		if err := e.Decode(body); err != nil {
			d.t.Fatal(err)
		}
		if e.Code != code {
			d.t.Fatalf("ERROR %d (%s) %q, want %d (%s)", e.Code, e.Code, e.Reason, code, code)
		}
		break
	}
	if _, _, err := d.next(); !errors.Is(err, io.EOF) && !isReset(err) {
		d.t.Fatalf("connection not closed after ERROR: %v", err)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

func metricValue(t testing.TB, n *node.Node, name string) string {
	t.Helper()
	var sb strings.Builder
	n.Gateway.Metrics().WritePrometheus(&sb)
	for _, line := range strings.Split(sb.String(), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

func TestTokensRejected(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []config.App{{Name: "other", Keys: []string{"other-key"}, Secrets: []string{"other-secret"}}}
	n := startNode(t, cfg)
	addr := n.Gateway.Addr().String()
	sign := func(secret, app, user, dev string, ttl time.Duration) string {
		s, err := token.Sign([]byte(secret), app, user, dev, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f := func(name, app, dev, tok string, code wire.Code) {
		t.Run(name, func(t *testing.T) {
			d := dialRaw(t, addr)
			d.send((&wire.Connect{Version: wire.Version, App: []byte(app), Device: []byte(dev), Token: []byte(tok)}).Append(nil))
			d.expectError(code)
			if v := metricValue(t, n, fmt.Sprintf(`herald_gateway_auth_failures_total{reason=%q}`, code.String())); v == "" || v == "0" {
				t.Fatalf("auth failure %s not counted (%q)", code, v)
			}
		})
	}
	f("missing", "demo", "d1", "", wire.CodeTokenMissing)
	f("wrong secret", "demo", "d1", sign("not-the-secret", "demo", "alice", "d1", time.Hour), wire.CodeTokenInvalid)
	f("expired", "demo", "d1", sign(config.DemoSecret, "demo", "alice", "d1", -time.Minute), wire.CodeTokenExpired)
	f("other app's token", "demo", "d1", sign("other-secret", "other", "alice", "d1", time.Hour), wire.CodeAppMismatch)
	f("other app's claim, our secret", "demo", "d1", sign(config.DemoSecret, "other", "alice", "d1", time.Hour), wire.CodeAppMismatch)
	f("other device", "demo", "d2", sign(config.DemoSecret, "demo", "alice", "d1", time.Hour), wire.CodeDeviceMismatch)
	f("unknown app", "nope", "d1", sign(config.DemoSecret, "nope", "alice", "d1", time.Hour), wire.CodeUnknownApp)
	f("garbage token", "demo", "d1", "x.y.z", wire.CodeTokenInvalid)
	f("user that is not a valid name", "demo", "d1", sign(config.DemoSecret, "demo", "a.b", "d1", time.Hour), wire.CodeTokenInvalid)

	// A good token still works after all that.
	d := dialRaw(t, addr)
	if typ, _ := d.connect("demo", "d1", sign(config.DemoSecret, "demo", "alice", "d1", time.Hour)); typ != wire.TypeConnAck {
		t.Fatalf("good token got %s", typ)
	}
}

func TestMalformedFramesAreIsolated(t *testing.T) {
	n := startNode(t, testConfig(t))
	addr, api := n.Gateway.Addr().String(), apiURL(n)
	good := newCollector()
	gc := device(t, addr, "bob", "d1", good, nil)
	waitFor(t, 5*time.Second, "connect", func() bool { return gc.Connects() == 1 })
	tok, _ := token.Sign([]byte(config.DemoSecret), "demo", "alice", "d1", time.Hour)

	f := func(name string, afterConnect bool, garbage []byte, code wire.Code) {
		t.Run(name, func(t *testing.T) {
			d := dialRaw(t, addr)
			if afterConnect {
				if typ, _ := d.connect("demo", "d1", tok); typ != wire.TypeConnAck {
					t.Fatalf("CONNECT answered with %s", typ)
				}
			}
			d.send(garbage)
			d.expectError(code)
			// The other device still receives.
			before := good.count()
			push(t, api, "bob", "still here after "+name)
			good.waitCount(t, before+1, 5*time.Second)
		})
	}
	f("unknown type before CONNECT", false, []byte{0x42, 0x00}, wire.CodeUnknownType)
	f("ACK before CONNECT", false, (&wire.Ack{Seq: 1}).Append(nil), wire.CodeUnexpected)
	f("bad CONNECT body", false, []byte{byte(wire.TypeConnect), 0x02, 0xff, 0xff}, wire.CodeMalformed)
	f("bad version", false, (&wire.Connect{Version: 9, App: []byte("demo"), Device: []byte("d"), Token: []byte(tok)}).Append(nil), wire.CodeBadVersion)
	f("oversized frame", true, []byte{byte(wire.TypeAck), 0xff, 0xff, 0x7f}, wire.CodeTooLarge)
	f("bad varint length", true, []byte{byte(wire.TypeAck), 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, wire.CodeMalformed)
	f("truncated ACK body", true, []byte{byte(wire.TypeAck), 0x01, 0x80}, wire.CodeMalformed)
	f("PUSH from a device", true, (&wire.Push{Seq: 1}).Append(nil), wire.CodeUnexpected)
	f("second CONNECT", true, (&wire.Connect{Version: 1}).Append(nil), wire.CodeUnexpected)
	f("ACK on unknown slot", true, (&wire.Ack{Slot: 7, Seq: 1}).Append(nil), wire.CodeBadChannel)
	f("invalid device name", false, (&wire.Connect{Version: 1, App: []byte("demo"), Device: []byte("a b"), Token: []byte(tok)}).Append(nil), wire.CodeMalformed)

	// Every message stayed readable: the good device got each one once.
	for seq, k := range good.seen {
		if k != 1 {
			t.Fatalf("seq %d seen %d times", seq, k)
		}
	}
}

func TestConnectDeadline(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.ConnectTimeout = time.Second
	n := startNode(t, cfg)
	d := dialRaw(t, n.Gateway.Addr().String())
	start := time.Now()
	d.expectError(wire.CodeConnectTimeout)
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("closed after %v", el)
	}
}

// The same device connecting again replaces its older connection.
func TestReplacedConnection(t *testing.T) {
	n := startNode(t, testConfig(t))
	tok, _ := token.Sign([]byte(config.DemoSecret), "demo", "alice", "d1", time.Hour)
	a := dialRaw(t, n.Gateway.Addr().String())
	if typ, _ := a.connect("demo", "d1", tok); typ != wire.TypeConnAck {
		t.Fatal(typ)
	}
	b := dialRaw(t, n.Gateway.Addr().String())
	if typ, _ := b.connect("demo", "d1", tok); typ != wire.TypeConnAck {
		t.Fatal(typ)
	}
	a.expectError(wire.CodeReplaced)
	push(t, apiURL(n), "alice", "to the new one")
	typ, body, err := b.next()
	if err != nil || typ != wire.TypePush {
		t.Fatalf("%v %v", typ, err)
	}
	var p wire.Push
	if p.Decode(body); string(p.Payload) != "to the new one" {
		t.Fatalf("%+v", p)
	}
}
