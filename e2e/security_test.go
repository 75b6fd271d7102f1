package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"herald/client"
	"herald/config"
	"herald/token"
	"herald/wire"
)

// call sends method path (under base) with a Bearer key and a JSON body
// (raw bytes are sent as they are) and decodes the JSON answer; 204 gives nil.
func call(t testing.TB, base, key, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req) // long-polls wait up to 60 s
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, nil
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON (status %d): %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// mustStatus fails unless the call answered status (and, for errors, code).
func mustStatus(t testing.TB, what string, got int, out map[string]any, status int, code string) {
	t.Helper()
	if got != status || (code != "" && errCode(out) != code) {
		t.Fatalf("%s: got %d %v, want %d %s", what, got, out, status, code)
	}
}

const adminKey = config.DevAdminKey

func TestAdminAPI(t *testing.T) {
	n := startNode(t, testConfig(t))
	base := apiURL(n)

	st, out := call(t, base, "", "GET", "/v1/admin/apps", nil)
	mustStatus(t, "no admin key", st, out, 401, "unauthorized")
	st, out = call(t, base, config.DemoKey, "GET", "/v1/admin/apps", nil)
	mustStatus(t, "a publisher key is not an admin key", st, out, 401, "unauthorized")

	st, out = call(t, base, adminKey, "POST", "/v1/admin/apps", map[string]any{"name": "shop", "max_topics": 3, "origins": []string{"https://shop.example"}})
	mustStatus(t, "create", st, out, 201, "")
	key, _ := out["key"].(string)
	secret, _ := out["secret"].(string)
	if len(key) < 16 || len(secret) < 16 {
		t.Fatalf("generated credentials too short: %v", out)
	}
	view := out["app"].(map[string]any)
	if view["secrets"].(float64) != 1 || len(view["keys"].([]any)) != 1 || view["max_topics"].(float64) != 3 {
		t.Fatalf("view: %v", view)
	}
	firstID := view["keys"].([]any)[0].(string)

	st, out = call(t, base, adminKey, "POST", "/v1/admin/apps", map[string]any{"name": "shop"})
	mustStatus(t, "create twice", st, out, 409, "app_exists")

	// The new app works on every node as soon as the watch brings it.
	pushShop := func(k string) int {
		st, _ := call(t, base, k, "POST", "/v1/apps/shop/push", map[string]any{"users": []string{"ann"}, "data": "x"})
		return st
	}
	waitFor(t, 5*time.Second, "the new app to publish", func() bool { return pushShop(key) == 200 })

	// Listing shows key ids and counts, never a key or a secret.
	st, out = call(t, base, adminKey, "GET", "/v1/admin/apps", nil)
	mustStatus(t, "list", st, out, 200, "")
	listed, _ := json.Marshal(out)
	if bytes.Contains(listed, []byte(key)) || bytes.Contains(listed, []byte(secret)) || !bytes.Contains(listed, []byte(`"shop"`)) || !bytes.Contains(listed, []byte(`"demo"`)) {
		t.Fatalf("list: %s", listed)
	}

	// Key rotation: add a key, both work, revoke the first, it stops.
	st, out = call(t, base, adminKey, "POST", "/v1/admin/apps/shop/keys", nil)
	mustStatus(t, "add key", st, out, 201, "")
	key2 := out["key"].(string)
	waitFor(t, 5*time.Second, "the second key", func() bool { return pushShop(key2) == 200 })
	if pushShop(key) != 200 {
		t.Fatal("first key stopped before it was revoked")
	}
	st, out = call(t, base, adminKey, "DELETE", "/v1/admin/apps/shop/keys/"+firstID, nil)
	mustStatus(t, "revoke key", st, out, 204, "")
	waitFor(t, 5*time.Second, "the revoked key to fail", func() bool { return pushShop(key) == 401 })
	if pushShop(key2) != 200 {
		t.Fatal("second key stopped with the first")
	}
	st, out = call(t, base, adminKey, "GET", "/v1/admin/apps/shop", nil)
	id2 := out["keys"].([]any)[0].(string)
	st, out = call(t, base, adminKey, "DELETE", "/v1/admin/apps/shop/keys/"+id2, nil)
	mustStatus(t, "revoke the last key", st, out, 409, "last_key")

	st, out = call(t, base, adminKey, "PATCH", "/v1/admin/apps/shop", map[string]any{"publish_rate": 2.5, "max_devices": 4})
	mustStatus(t, "patch", st, out, 200, "")
	if out["publish_rate"].(float64) != 2.5 || out["max_devices"].(float64) != 4 || out["max_topics"].(float64) != 3 {
		t.Fatalf("patch kept or changed the wrong fields: %v", out)
	}

	st, out = call(t, base, adminKey, "DELETE", "/v1/admin/apps/shop", nil)
	mustStatus(t, "delete", st, out, 204, "")
	waitFor(t, 5*time.Second, "the deleted app to be gone", func() bool { return pushShop(key2) == 404 })
	st, out = call(t, base, adminKey, "GET", "/v1/admin/apps/shop", nil)
	mustStatus(t, "get deleted", st, out, 404, "unknown_app")
	st, out = call(t, base, adminKey, "DELETE", "/v1/admin/apps/shop", nil)
	mustStatus(t, "delete twice", st, out, 404, "unknown_app")

	// Without admin keys the admin API is off.
	cfg := testConfig(t)
	cfg.Dev = false
	cfg.Apps = []config.App{{Name: "only", Keys: []string{"only-key"}, Secrets: []string{"only-secret"}}}
	n2 := startNode(t, cfg)
	st, out = call(t, apiURL(n2), adminKey, "GET", "/v1/admin/apps", nil)
	mustStatus(t, "admin off", st, out, 403, "admin_disabled")
}

// A rotated device secret: connected devices stay, old tokens connect
// until the grace period ends, new tokens connect at once.
func TestDeviceSecretRotation(t *testing.T) {
	n := startNode(t, testConfig(t))
	base, addr := apiURL(n), n.Gateway.Addr().String()
	const s1, s2, key = "first-secret-0123456789", "second-secret-0123456789", "rot-publisher-key-0123"
	st, out := call(t, base, adminKey, "POST", "/v1/admin/apps", map[string]any{"name": "rot", "keys": []string{key}, "secrets": []string{s1}})
	mustStatus(t, "create", st, out, 201, "")
	if out["key"] != nil || out["secret"] != nil {
		t.Fatalf("given credentials echoed: %v", out)
	}
	waitFor(t, 5*time.Second, "the app", func() bool { _, ok := n.Apps.Get("rot"); return ok })
	sign := func(secret, dev string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return token.Sign([]byte(secret), "rot", "ann", dev, time.Hour) }
	}
	pushAnn := func(data string) {
		t.Helper()
		st, out := call(t, base, key, "POST", "/v1/apps/rot/push", map[string]any{"users": []string{"ann"}, "data": data})
		mustStatus(t, "push", st, out, 200, "")
	}
	old := newCollector()
	oldDev := device(t, addr, "ann", "old", old, func(c *client.Config) { c.App, c.Token = "rot", sign(s1, "old") })
	waitFor(t, 5*time.Second, "old device", func() bool { return oldDev.Connects() == 1 })
	pushAnn("m1")
	old.waitCount(t, 1, 5*time.Second)

	st, out = call(t, base, adminKey, "POST", "/v1/admin/apps/rot/secrets", map[string]any{"secret": s2, "grace": "3s"})
	mustStatus(t, "rotate", st, out, 201, "")
	graceEnd := time.Now().Add(3 * time.Second)
	waitFor(t, 5*time.Second, "the rotation", func() bool { a, _ := n.Apps.Get("rot"); return len(a.Retiring) == 1 })

	fresh := newCollector()
	device(t, addr, "ann", "new", fresh, func(c *client.Config) { c.App, c.Token = "rot", sign(s2, "new") })
	tok1, _ := sign(s1, "again")(context.Background())
	d := dialRaw(t, addr)
	if typ, body := d.connect("rot", "again", tok1); typ != wire.TypeConnAck {
		t.Fatalf("old token within the grace period: %s %q", typ, body)
	}
	pushAnn("m2")
	old.waitCount(t, 2, 5*time.Second)
	fresh.waitCount(t, 2, 5*time.Second)

	time.Sleep(time.Until(graceEnd) + 100*time.Millisecond)
	d2 := dialRaw(t, addr)
	d2.send((&wire.Connect{Version: wire.Version, App: []byte("rot"), Device: []byte("late"), Token: []byte(mustToken(t, s1, "rot", "ann", "late"))}).Append(nil))
	d2.expectError(wire.CodeTokenInvalid)

	// The device connected with the old secret was never cut off.
	pushAnn("m3")
	old.waitCount(t, 3, 5*time.Second)
	if oldDev.Connects() != 1 {
		t.Fatalf("the old device reconnected %d times", oldDev.Connects())
	}
}

func mustToken(t testing.TB, secret, app, user, dev string) string {
	t.Helper()
	s, err := token.Sign([]byte(secret), app, user, dev, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every way for app alpha's credentials to reach app beta is tried; the
// test fails if any succeeds.
func TestTenantIsolation(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []config.App{
		{Name: "alpha", Keys: []string{"alpha-key"}, Secrets: []string{"alpha-secret"}},
		{Name: "beta", Keys: []string{"beta-key"}, Secrets: []string{"beta-secret"}},
	}
	n := startNode(t, cfg)
	base, addr := apiURL(n), n.Gateway.Addr().String()

	st, out := call(t, base, "beta-key", "POST", "/v1/apps/beta/push", map[string]any{"users": []string{"bob"}, "data": "beta's secret"})
	mustStatus(t, "beta push", st, out, 200, "")
	betaSeq := strconv.FormatFloat(out["messages"].([]any)[0].(map[string]any)["seq"].(float64), 'f', 0, 64)
	st, out = call(t, base, "beta-key", "POST", "/v1/apps/beta/push", map[string]any{"users": []string{"bob"}, "data": "later", "at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	mustStatus(t, "beta schedule", st, out, 200, "")
	betaSched := out["scheduled"].([]any)[0].(map[string]any)["schedule"].(string)

	// alpha's key on beta's endpoints.
	for _, c := range []struct{ method, path string }{
		{"POST", "/push"},
		{"GET", "/messages/" + betaSeq},
		{"DELETE", "/messages/" + betaSeq},
		{"GET", "/schedules"},
		{"DELETE", "/schedules/" + betaSched},
		{"GET", "/users/bob/topics"},
		{"PUT", "/users/bob/topics/news"},
		{"DELETE", "/users/bob/topics/news"},
		{"GET", "/upstream"},
	} {
		var body any
		if c.method == "POST" {
			body = map[string]any{"users": []string{"bob"}, "data": "from alpha"}
		}
		st, out := call(t, base, "alpha-key", c.method, "/v1/apps/beta"+c.path, body)
		mustStatus(t, "alpha key: "+c.method+" beta"+c.path, st, out, 401, "unauthorized")
	}
	// beta's message seq through alpha's own endpoints.
	st, out = call(t, base, "alpha-key", "GET", "/v1/apps/alpha/messages/"+betaSeq, nil)
	mustStatus(t, "beta's seq as alpha's", st, out, 404, "unknown_message")
	st, out = call(t, base, "alpha-key", "DELETE", "/v1/apps/alpha/messages/"+betaSeq, nil)
	mustStatus(t, "recall beta's seq as alpha", st, out, 404, "unknown_message")
	st, out = call(t, base, "alpha-key", "DELETE", "/v1/apps/alpha/schedules/"+betaSched, nil)
	if st != 404 && st != 400 {
		t.Fatalf("cancel beta's schedule as alpha: %d %v", st, out)
	}
	st, out = call(t, base, "beta-key", "GET", "/v1/apps/beta/messages/"+betaSeq, nil)
	if st != 200 || out["state"] != "stored" {
		t.Fatalf("beta's message after alpha's attempts: %d %v", st, out)
	}
	st, out = call(t, base, "beta-key", "GET", "/v1/apps/beta/schedules", nil)
	if st != 200 || len(out["schedules"].([]any)) != 1 {
		t.Fatalf("beta's schedule after alpha's attempts: %d %v", st, out)
	}

	// Names that would reach other subjects are refused before any subject is built.
	for _, bad := range []string{"a.b", "*", ">", "a b", "a\tb", "bob.>", "", strings.Repeat("x", 129)} {
		st, out := call(t, base, "alpha-key", "POST", "/v1/apps/alpha/push", map[string]any{"users": []string{bad}, "data": "x"})
		mustStatus(t, fmt.Sprintf("user %q", bad), st, out, 400, "")
		if bad != "" {
			st, out = call(t, base, "alpha-key", "POST", "/v1/apps/alpha/push", map[string]any{"topic": bad, "data": "x"})
			mustStatus(t, fmt.Sprintf("topic %q", bad), st, out, 400, "invalid_topic")
		}
	}
	for _, path := range []string{"/v1/apps/alpha.beta/push", "/v1/apps/*/push", "/v1/apps/%3E/push"} {
		st, out := call(t, base, "alpha-key", "POST", path, map[string]any{"users": []string{"bob"}, "data": "x"})
		mustStatus(t, "app "+path, st, out, 404, "unknown_app")
	}
	st, out = call(t, base, "alpha-key", "PUT", "/v1/apps/alpha/users/bob/topics/a.b", nil)
	mustStatus(t, "server topic with a dot", st, out, 400, "invalid_topic")
	st, out = call(t, base, "alpha-key", "GET", "/v1/apps/alpha/users/b*b/topics", nil)
	mustStatus(t, "user with a wildcard", st, out, 400, "invalid_user")

	// Devices: alpha's token cannot connect as beta.
	alphaTok := mustToken(t, "alpha-secret", "alpha", "bob", "d1")
	d := dialRaw(t, addr)
	d.send((&wire.Connect{Version: wire.Version, App: []byte("beta"), Device: []byte("d1"), Token: []byte(alphaTok)}).Append(nil))
	d.expectError(wire.CodeAppMismatch)

	// alpha's device, user "bob" like beta's, on topic "news" like
	// beta's: it sees only alpha's messages, and cannot SUB any other
	// kind of channel or a wildcard.
	got := newCollector()
	var onNews atomic.Bool
	dev := device(t, addr, "bob", "d1", got, func(c *client.Config) {
		c.App = "alpha"
		c.Token = func(context.Context) (string, error) { return alphaTok, nil }
		c.Topics = []string{"news"}
		c.OnEvent = func(e client.Event) {
			if e.Kind == client.Subscribed && e.Channel == "t.news" {
				onNews.Store(true)
			}
		}
	})
	waitFor(t, 5*time.Second, "alpha device on t.news", func() bool { return dev.Connects() == 1 && onNews.Load() })
	st, out = call(t, base, "beta-key", "POST", "/v1/apps/beta/push", map[string]any{"topic": "news", "data": "beta news"})
	mustStatus(t, "beta topic", st, out, 200, "")
	st, out = call(t, base, "beta-key", "POST", "/v1/apps/beta/push", map[string]any{"broadcast": true, "data": "beta all"})
	mustStatus(t, "beta broadcast", st, out, 200, "")
	st, out = call(t, base, "beta-key", "POST", "/v1/apps/beta/push", map[string]any{"users": []string{"bob"}, "data": "beta bob"})
	mustStatus(t, "beta user", st, out, 200, "")
	st, out = call(t, base, "alpha-key", "POST", "/v1/apps/alpha/push", map[string]any{"topic": "news", "data": "alpha news"})
	mustStatus(t, "alpha topic", st, out, 200, "")
	got.waitCount(t, 1, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	for _, m := range got.snapshot() {
		if string(m.Data) != "alpha news" {
			t.Fatalf("alpha's device received %q on %s", m.Data, m.Channel)
		}
	}
	if got.count() != 1 {
		t.Fatalf("alpha's device received %d messages, want 1", got.count())
	}

	raw := dialRaw(t, addr)
	if typ, _ := raw.connect("alpha", "d9", mustToken(t, "alpha-secret", "alpha", "bob", "d9")); typ != wire.TypeConnAck {
		t.Fatalf("CONNECT: %s", typ)
	}
	for _, ch := range []string{"u.carol", "b.all", "t.*", "t.>", "t.a.b", "t.a b", "x.y", "t."} {
		raw.send((&wire.Sub{Channel: []byte(ch)}).Append(nil))
		for {
			raw.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			typ, body, nb, err := wire.ReadFrame(raw.r, raw.buf, wire.DefaultMaxFrame)
			raw.buf = nb
			if err != nil {
				t.Fatalf("SUB %q: %v", ch, err)
			}
			if typ != wire.TypeSubAck {
				continue
			}
			var sa wire.SubAck
			if err := sa.Decode(body); err != nil {
				t.Fatal(err)
			}
			if string(sa.Channel) != ch {
				continue // the gateway's own announcements
			}
			if sa.Code != wire.CodeBadChannel {
				t.Fatalf("SUB %q answered %+v, want bad_channel", ch, sa)
			}
			break
		}
	}
}
