package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/config"
	"herald/wire"
)

// badInput is one malformed input, on the wire or the HTTP API, with the
// error it must get.
type badInput struct {
	name string
	// wire: bytes sent on a raw TCP connection, after a good CONNECT when
	// afterConnect; the connection must get ERROR code and be closed.
	wire         []byte
	afterConnect bool
	code         wire.Code
	// HTTP: method path body with key (raw, when raw is set: sent as is
	// on the API's TCP port); the answer must be status with error apiCode.
	method, path, body, key string
	raw                     string
	status                  int
	apiCode                 string
}

// The table test of malformed input: each input gets its documented error,
// and afterwards nothing changed: the good device got every message, every
// stored message reads back, the apps are as they were.
func TestMalformedInputTable(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []config.App{{Name: "alpha", Keys: []string{"alpha-key"}, Secrets: []string{"alpha-secret"}}}
	n := startNode(t, cfg)
	addr, api := n.Gateway.Addr().String(), apiURL(n)
	good := newCollector()
	gd := device(t, addr, "bob", "d1", good, nil)
	waitFor(t, 5*time.Second, "connect", func() bool { return gd.Connects() == 1 })
	tok := mustToken(t, config.DemoSecret, "demo", "alice", "d1")
	conn := func(app, dev string, tok string, cursors ...string) []byte {
		f := wire.Connect{Version: wire.Version, App: []byte(app), Device: []byte(dev), Token: []byte(tok)}
		for _, c := range cursors {
			f.Cursors = append(f.Cursors, wire.Cursor{Channel: []byte(c)})
		}
		return f.Append(nil)
	}
	frame := func(typ wire.Type, body ...byte) []byte { return append([]byte{byte(typ), byte(len(body))}, body...) }
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	manyJSON, _ := json.Marshal(map[string]any{"users": many, "data": "x"})
	demoK, adminK := config.DemoKey, config.DevAdminKey

	cases := []badInput{
		// The wire, before CONNECT.
		{name: "reserved frame type 0x1f", wire: []byte{0x1f, 0x00}, code: wire.CodeUnknownType},
		{name: "frame type 0", wire: []byte{0x00, 0x00}, code: wire.CodeUnknownType},
		{name: "CONNECT longer than the maximum", wire: []byte{byte(wire.TypeConnect), 0x80, 0x80, 0x40}, code: wire.CodeTooLarge},
		{name: "CONNECT with an empty body", wire: frame(wire.TypeConnect), code: wire.CodeMalformed},
		{name: "CONNECT naming app with a dot", wire: conn("de.mo", "d1", tok), code: wire.CodeUnknownApp},
		{name: "CONNECT device with a wildcard", wire: conn("demo", "d*", tok), code: wire.CodeMalformed},
		{name: "CONNECT cursor on a channel with a dot", wire: conn("demo", "d1", tok, "u.a.b"), code: wire.CodeBadChannel},
		{name: "CONNECT cursor on a wildcard", wire: conn("demo", "d1", tok, "t.>"), code: wire.CodeBadChannel},
		{name: "CONNECT with another app's token", wire: conn("demo", "d1", mustToken(t, "alpha-secret", "alpha", "alice", "d1")), code: wire.CodeAppMismatch},
		{name: "SUB before CONNECT", wire: (&wire.Sub{Channel: []byte("t.a")}).Append(nil), code: wire.CodeUnexpected},
		// The wire, after CONNECT.
		{name: "SUB truncated", afterConnect: true, wire: frame(wire.TypeSub, 0x05, 't'), code: wire.CodeMalformed},
		{name: "UNSUB truncated", afterConnect: true, wire: frame(wire.TypeUnsub, 0x09), code: wire.CodeMalformed},
		{name: "SYNC truncated", afterConnect: true, wire: frame(wire.TypeSync, 0x80), code: wire.CodeMalformed},
		{name: "SYNC on an unknown slot", afterConnect: true, wire: (&wire.Sync{Slot: 99, From: 1, Max: 10}).Append(nil), code: wire.CodeBadChannel},
		{name: "UP with a space in its id", afterConnect: true, wire: (&wire.Up{ID: []byte("a b"), Payload: []byte("x")}).Append(nil), code: wire.CodeMalformed},
		{name: "UP truncated", afterConnect: true, wire: frame(wire.TypeUp, 0x40), code: wire.CodeMalformed},
		{name: "PING truncated", afterConnect: true, wire: frame(wire.TypePing, 0x80), code: wire.CodeMalformed},
		{name: "CONNACK from a device", afterConnect: true, wire: (&wire.ConnAck{Version: 1}).Append(nil), code: wire.CodeUnexpected},
		{name: "NOTIFY from a device", afterConnect: true, wire: (&wire.Notify{Slot: 0, Seq: 1}).Append(nil), code: wire.CodeUnexpected},
		{name: "GOAWAY from a device", afterConnect: true, wire: (&wire.GoAway{Code: wire.CodeShutdown}).Append(nil), code: wire.CodeUnexpected},
		{name: "frame longer than the maximum", afterConnect: true, wire: []byte{byte(wire.TypeUp), 0xff, 0xff, 0xff, 0x01}, code: wire.CodeTooLarge},
		// The HTTP API.
		{name: "push with trailing bytes", method: "POST", path: "/v1/apps/demo/push", key: demoK, body: `{"users":["a"],"data":"x"}}`, status: 400, apiCode: "bad_json"},
		{name: "push to users and a topic", method: "POST", path: "/v1/apps/demo/push", key: demoK, body: `{"users":["a"],"topic":"t","data":"x"}`, status: 400, apiCode: "conflicting_targets"},
		{name: "push at a past time", method: "POST", path: "/v1/apps/demo/push", key: demoK, body: `{"users":["a"],"data":"x","at":"2001-01-01T00:00:00Z"}`, status: 400, apiCode: "invalid_at"},
		{name: "push to 1001 users", method: "POST", path: "/v1/apps/demo/push", key: demoK, body: string(manyJSON), status: 400, apiCode: "too_many_users"},
		{name: "push id of 129 characters", method: "POST", path: "/v1/apps/demo/push", key: demoK, body: `{"users":["a"],"data":"x","id":"` + strings.Repeat("i", 129) + `"}`, status: 400, apiCode: "invalid_id"},
		{name: "push data of the wrong type", method: "POST", path: "/v1/apps/demo/push", key: demoK, body: `{"users":["a"],"data":42}`, status: 400, apiCode: "bad_json"},
		{name: "push over max_body (refused from Content-Length)", raw: "POST /v1/apps/demo/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-key\r\nContent-Length: 2000000\r\n\r\n{", status: 413, apiCode: "body_too_large"},
		{name: "push with PUT", method: "PUT", path: "/v1/apps/demo/push", key: demoK, body: `{}`, status: 405, apiCode: "method_not_allowed"},
		{name: "status of seq abc", method: "GET", path: "/v1/apps/demo/messages/abc", key: demoK, status: 400, apiCode: "invalid_seq"},
		{name: "recall of seq 0", method: "DELETE", path: "/v1/apps/demo/messages/0", key: demoK, status: 400, apiCode: "invalid_seq"},
		{name: "upstream max 0", method: "GET", path: "/v1/apps/demo/upstream?max=0", key: demoK, status: 400, apiCode: "invalid_max"},
		{name: "upstream wait 1h", method: "GET", path: "/v1/apps/demo/upstream?wait=1h", key: demoK, status: 400, apiCode: "invalid_wait"},
		{name: "upstream after x", method: "GET", path: "/v1/apps/demo/upstream?after=x", key: demoK, status: 400, apiCode: "invalid_after"},
		{name: "server topic for user a.b", method: "PUT", path: "/v1/apps/demo/users/a.b/topics/news", key: demoK, status: 400, apiCode: "invalid_user"},
		{name: "admin: create with bad JSON", method: "POST", path: "/v1/admin/apps", key: adminK, body: `{"name":`, status: 400, apiCode: "bad_json"},
		{name: "admin: create named a b", method: "POST", path: "/v1/admin/apps", key: adminK, body: `{"name":"a b"}`, status: 400, apiCode: "invalid_name"},
		{name: "admin: create with a short key", method: "POST", path: "/v1/admin/apps", key: adminK, body: `{"name":"x","keys":["short"]}`, status: 400, apiCode: "weak_credential"},
		{name: "admin: max_topics over the slots", method: "PATCH", path: "/v1/admin/apps/demo", key: adminK, body: `{"max_topics":1000}`, status: 400, apiCode: "invalid_limit"},
		{name: "admin: negative publish rate", method: "PATCH", path: "/v1/admin/apps/demo", key: adminK, body: `{"publish_rate":-1}`, status: 400, apiCode: "invalid_limit"},
		{name: "admin: rotation grace forever", method: "POST", path: "/v1/admin/apps/demo/secrets", key: adminK, body: `{"grace":"forever"}`, status: 400, apiCode: "invalid_grace"},
		{name: "admin: revoke an unknown key", method: "DELETE", path: "/v1/admin/apps/demo/keys/nope", key: adminK, status: 404, apiCode: "unknown_key"},
		{name: "admin: publisher key as admin key", method: "GET", path: "/v1/admin/apps", key: demoK, status: 401, apiCode: "unauthorized"},
		{name: "malformed HTTP request line", raw: "BLAH\x00 / HTTP/9\r\n\r\n", status: 400, apiCode: "bad_request"},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	before, _ := n.Apps.Get("demo")
	var seqs []uint64
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			switch {
			case c.wire != nil:
				d := dialRaw(t, addr)
				if c.afterConnect {
					if typ, _ := d.connect("demo", "d1", tok); typ != wire.TypeConnAck {
						t.Fatalf("CONNECT: %s", typ)
					}
				}
				d.send(c.wire)
				d.expectError(c.code)
			case c.raw != "":
				status, code := rawHTTP(t, n.Dispatcher.Addr().String(), c.raw)
				if status != c.status || code != c.apiCode {
					t.Fatalf("got %d %s, want %d %s", status, code, c.status, c.apiCode)
				}
			default:
				var body any
				if c.body != "" {
					body = []byte(c.body)
				}
				st, out := call(t, api, c.key, c.method, c.path, body)
				mustStatus(t, c.name, st, out, c.status, c.apiCode)
			}
			seqs = append(seqs, push(t, api, "bob", c.name))
		})
	}
	good.waitCount(t, len(seqs), 10*time.Second)
	checkExactlyOnceInOrder(t, good.snapshot(), seqs)
	for _, seq := range seqs {
		if st, out := call(t, api, demoK, "GET", "/v1/apps/demo/messages/"+itoa(seq), nil); st != 200 || out["state"] != "stored" {
			t.Fatalf("message %d: %d %v", seq, st, out)
		}
	}
	after, _ := n.Apps.Get("demo")
	if a, b := fmt.Sprintf("%+v", *before), fmt.Sprintf("%+v", *after); a != b {
		t.Fatalf("the demo app changed:\n%s\n%s", a, b)
	}
	if st, _ := call(t, api, adminK, "GET", "/v1/admin/apps/x", nil); st != 404 {
		t.Fatal("a refused create made an app")
	}
}

// rawHTTP sends req as bytes and returns the status and error code.
func rawHTTP(t testing.TB, addr, req string) (int, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	return resp.StatusCode, errCode(out)
}
