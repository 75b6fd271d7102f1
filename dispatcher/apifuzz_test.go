package dispatcher

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"herald/config"
	"herald/nats/natstest"
	"herald/offline"
)

// Who a FuzzAPI request claims to be (auth % len(fuzzAuths)).
var fuzzAuths = []struct{ name, header string }{
	{"no key", ""},
	{"demo's publisher key", "Bearer demo-key"},
	{"another app's publisher key", "Bearer alpha-key"},
	{"the admin key", "Bearer admin-key"},
	{"a wrong key", "Bearer demo-key2"},
	{"not a bearer", "Basic ZGVtby1rZXk6"},
}

var fuzzMethods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"}

// FuzzAPI sends arbitrary requests (method, path and query, key, body) to
// a real dispatcher on an embedded NATS over a raw socket. Whatever they
// are:
//   - the answer is never a 5xx (the store is up; the locator's 503 when
//     no gateway runs aside), and every 4xx is a JSON error with a code
//     and a message (the web UI's pages aside);
//   - without a valid key only the public endpoints answer 2xx (health,
//     readiness, metrics, the gateway locator, the UI's static pages);
//   - another app's key never reads or changes app demo (no 2xx under
//     /v1/apps/demo/ or /v1/admin/), and nothing but demo's key or the
//     admin key changes what the store holds for demo: its messages and
//     schedules in the stream, and its entries in every KV bucket.
func FuzzAPI(f *testing.F) {
	for _, s := range []struct {
		method, auth uint8
		path, body   string
	}{
		{1, 1, "/v1/apps/demo/push", `{"users":["alice"],"data":"hi"}`},
		{1, 2, "/v1/apps/demo/push", `{"users":["alice"],"data":"hi"}`},
		{1, 2, "/v1/apps/alpha/../demo/push", `{"users":["alice"],"data":"hi"}`},
		{1, 2, "/v1/apps/alpha/%2e%2e/demo/push", `{"broadcast":true,"data":"x"}`},
		{1, 0, "/v1/apps/demo/push", `{"users":["alice"],"data":"hi"}`},
		{1, 1, "/v1/apps/demo/push", `{"users":["a.b"],"data":"x"}`},
		{1, 1, "/v1/apps/demo/push", `{"topic":"news","data":"x","at":"2030-01-01T00:00:00Z"}`},
		{0, 1, "/v1/apps/demo/users/alice/topics", ""},
		{2, 1, "/v1/apps/demo/users/alice/topics/news", ""},
		{3, 2, "/v1/apps/demo/users/alice/topics/news", ""},
		{0, 1, "/v1/apps/demo/messages/u.alice", ""},
		{0, 2, "/v1/apps/demo/messages/u.alice", ""},
		{0, 0, "/v1/apps/demo/users/alice/topics", ""},
		{0, 4, "/v1/apps/demo/schedules", ""},
		{2, 5, "/v1/apps/demo/users/bob/topics/news", ""},
		{3, 1, "/v1/apps/demo/messages/u.alice:1", ""},
		{0, 1, "/v1/apps/demo/schedules", ""},
		{0, 1, "/v1/apps/demo/upstream?after=0&max=5", ""},
		{0, 3, "/v1/admin/apps", ""},
		{1, 3, "/v1/admin/apps", `{"name":"beta"}`},
		{1, 2, "/v1/admin/apps", `{"name":"beta"}`},
		{0, 3, "/v1/admin/apps/demo/users/alice", ""},
		{1, 3, "/v1/admin/apps/demo/tokens", `{"user":"alice","device":"d1"}`},
		{0, 0, "/v1/admin/stream", ""},
		{0, 0, "/v1/gateways?app=demo&device=d1", ""},
		{0, 0, "/healthz", ""},
		{0, 0, "/ui/", ""},
		{5, 4, "/metrics", ""},
		{1, 1, "/v1/apps/demo/push", `{"users":["alice"],"data":"x"}{}`},
		{1, 1, "/v1/apps//push", `[`},
	} {
		f.Add(s.method, s.path, s.auth, []byte(s.body))
	}

	_, url := natstest.Start(f)
	nc := natstest.Connect(f, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	storeCfg := config.Default().Store
	store, err := offline.Open(ctx, nc, storeCfg)
	if err != nil {
		f.Fatal(err)
	}
	for _, a := range []offline.App{
		{Name: "demo", KeyHashes: []string{offline.HashKey("demo-key")}, Secrets: []string{"demo-secret"}},
		{Name: "alpha", KeyHashes: []string{offline.HashKey("alpha-key")}, Secrets: []string{"alpha-secret"}},
	} {
		if err := store.PutApp(ctx, a); err != nil {
			f.Fatal(err)
		}
	}
	apps, err := store.WatchApps(ctx, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(apps.Stop)
	cfg := config.Default().API
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminKeys = []string{"admin-key"}
	ds := New(cfg, storeCfg, Deps{NC: nc, Store: store, Apps: apps})
	if err := ds.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(ds.Stop)
	js, err := jetstream.New(nc)
	if err != nil {
		f.Fatal(err)
	}
	addr := ds.Addr().String()

	f.Fuzz(func(t *testing.T, method uint8, path string, auth uint8, body []byte) {
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		who := fuzzAuths[int(auth)%len(fuzzAuths)]
		// A request line the HTTP parser can read: no spaces or control
		// bytes in the target (what else it gets is fasthttp's to refuse).
		path = strings.Map(func(r rune) rune {
			if r <= ' ' || r == 0x7f {
				return -1
			}
			return r
		}, path)
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		if strings.Contains(strings.ToLower(path), "wait") {
			return // a long-poll holds the request for up to a minute
		}
		var u fasthttp.URI
		u.Parse(nil, []byte(path))
		norm := string(u.Path())

		before := demoState(t, js)
		status, ctype, answer := rawRequest(t, addr, m, path, who.header, body)
		what := fmt.Sprintf("%s %s with %s -> %d %q", m, path, who.name, status, answer)

		if status >= 500 && !(status == 503 && norm == "/v1/gateways" && bytes.Contains(answer, []byte(`"no_gateways"`))) {
			t.Fatalf("server error: %s", what) // no gateway runs here: the locator's 503 is its answer
		}
		if status >= 400 && m != "HEAD" && !strings.HasPrefix(norm, "/ui") {
			var e apiError
			if !strings.HasPrefix(ctype, "application/json") || json.Unmarshal(answer, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("error answer is not a JSON error: %s (%s)", what, ctype)
			}
		}
		ok := status >= 200 && status < 300
		public := norm == "/healthz" || norm == "/readyz" || norm == "/metrics" || norm == "/v1/gateways" || norm == "/ui" || strings.HasPrefix(norm, "/ui/")
		switch who.name {
		case "no key", "a wrong key", "not a bearer":
			if ok && !public {
				t.Fatalf("answered without a valid key: %s", what)
			}
		case "another app's publisher key":
			if ok && (strings.HasPrefix(norm, "/v1/apps/demo/") || strings.HasPrefix(norm, "/v1/admin/")) {
				t.Fatalf("another app's key was let in: %s", what)
			}
		}
		if who.name != "demo's publisher key" && who.name != "the admin key" {
			if after := demoState(t, js); !maps.Equal(before, after) {
				t.Fatalf("app demo changed: %s\nbefore %v\nafter  %v", what, before, after)
			}
		}
	})
}

// rawRequest sends one HTTP/1.1 request as written and reads the answer.
func rawRequest(t *testing.T, addr, method, target, auth string, body []byte) (status int, ctype string, answer []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n", method, target)
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	if len(body) > 0 {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://herald/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("%s %s: no HTTP answer: %v", method, target, err)
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: answer body: %v", method, target, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), answer
}

// demoState is what the store holds for app demo: message counts per
// subject of the stream (messages and schedules) and the revision of
// every KV entry whose key names demo.
func demoState(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := map[string]uint64{}
	s, err := js.Stream(ctx, offline.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("herald.*.demo.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, n := range info.State.Subjects {
		st["stream "+subj] = n
	}
	for _, bucket := range []string{offline.CursorsBucket, offline.AppsBucket, offline.TopicsBucket, offline.RecallsBucket, offline.ReplaysBucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
		if err != nil {
			t.Fatal(err)
		}
		for e := range w.Updates() {
			if e == nil {
				break
			}
			if strings.Contains(e.Key(), "demo") {
				st[bucket+" "+e.Key()] = e.Revision()
			}
		}
		w.Stop()
	}
	return st
}
