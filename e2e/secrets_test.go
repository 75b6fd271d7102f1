package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herald/token"
	"herald/wire"
)

// Keys, secrets and tokens never reach the log, even at debug level: the
// real binary runs with a config holding an app and an admin key, every
// credential is used rightly and wrongly, and the captured output is
// searched for each of them.
func TestSecretsNeverLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, dir := buildHerald(t), t.TempDir()
	apiAddr, devAddr, natsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	const (
		adminSecret = "admin-key-5f1e2d3c4b5a"
		shopKey     = "shop-publisher-key-9a8b7c6d"
		shopSecret  = "shop-device-secret-1a2b3c4d"
		wrongKey    = "wrong-publisher-key-0f0f0f0f"
		wrongAdmin  = "wrong-admin-key-e1e2e3e4"
	)
	conf := filepath.Join(dir, "herald.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
log_level: debug
data: %s
nats: {listen: %q}
api: {listen: %q, admin_keys: [%q]}
gateway: {listen: %q, ws_listen: ""}
apps:
  - {name: shop, keys: [%q], secrets: [%q]}
`, filepath.Join(dir, "data"), natsAddr, apiAddr, adminSecret, devAddr, shopKey, shopSecret)), 0o600)
	p := start(t, dir, bin+" serve --config "+conf)
	p.waitRunning(t, 20*time.Second, "herald serve")
	api := "http://" + apiAddr

	secrets := []string{adminSecret, shopKey, shopSecret, wrongKey, wrongAdmin}
	// Publisher keys, right and wrong.
	st, out := call(t, api, wrongKey, "POST", "/v1/apps/shop/push", map[string]any{"users": []string{"ann"}, "data": "x"})
	mustStatus(t, "wrong key", st, out, 401, "unauthorized")
	st, out = call(t, api, shopKey, "POST", "/v1/apps/shop/push", map[string]any{"users": []string{"ann"}, "data": "x"})
	mustStatus(t, "right key", st, out, 200, "")
	st, out = call(t, api, shopKey, "POST", "/v1/apps/nope/push", map[string]any{"users": []string{"ann"}, "data": "x"})
	mustStatus(t, "key on an unknown app", st, out, 404, "unknown_app")
	// Admin keys, right and wrong; generated credentials.
	st, out = call(t, api, wrongAdmin, "GET", "/v1/admin/apps", nil)
	mustStatus(t, "wrong admin key", st, out, 401, "unauthorized")
	st, out = call(t, api, adminSecret, "POST", "/v1/admin/apps", map[string]any{"name": "cafe"})
	mustStatus(t, "create", st, out, 201, "")
	secrets = append(secrets, out["key"].(string), out["secret"].(string))
	st, out = call(t, api, adminSecret, "POST", "/v1/admin/apps/shop/secrets", map[string]any{"grace": "1h"})
	mustStatus(t, "rotate", st, out, 201, "")
	rotated := out["secret"].(string)
	secrets = append(secrets, rotated)
	st, out = call(t, api, adminSecret, "POST", "/v1/admin/apps/shop/keys", nil)
	mustStatus(t, "add key", st, out, 201, "")
	secrets = append(secrets, out["key"].(string))
	st, out = call(t, api, adminSecret, "POST", "/v1/admin/apps", map[string]any{"name": "bad", "keys": []string{"tiny"}})
	mustStatus(t, "weak key", st, out, 400, "weak_credential")

	// Device tokens: good (old and new secret), wrong secret, expired, other device.
	sign := func(secret, dev string, ttl time.Duration) string {
		s, err := token.Sign([]byte(secret), "shop", "ann", dev, ttl)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
		return s
	}
	for _, c := range []struct {
		dev, tok string
		code     wire.Code
	}{
		{"d1", sign(shopSecret, "d1", time.Hour), 0},
		{"d2", sign(rotated, "d2", time.Hour), 0},
		{"d3", sign("not-the-secret-at-all", "d3", time.Hour), wire.CodeTokenInvalid},
		{"d4", sign(shopSecret, "d4", -time.Minute), wire.CodeTokenExpired},
		{"d5", sign(shopSecret, "other", time.Hour), wire.CodeDeviceMismatch},
	} {
		d := dialRaw(t, devAddr)
		d.send((&wire.Connect{Version: wire.Version, App: []byte("shop"), Device: []byte(c.dev), Token: []byte(c.tok)}).Append(nil))
		if c.code == 0 {
			if typ, _, err := d.next(); err != nil || typ != wire.TypeConnAck {
				t.Fatalf("%s: %v %v", c.dev, typ, err)
			}
			d.send([]byte{0x1f, 0}) // and a protocol error, logged at debug
			d.expectError(wire.CodeUnknownType)
			continue
		}
		d.expectError(c.code)
	}
	// A token in a malformed CONNECT.
	d := dialRaw(t, devAddr)
	bad := (&wire.Connect{Version: 9, App: []byte("shop"), Device: []byte("d6"), Token: []byte(sign(shopSecret, "d6", time.Hour))}).Append(nil)
	d.send(bad)
	d.expectError(wire.CodeBadVersion)

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	log := p.out.String()
	for _, want := range []string{"admin: app created", "admin: device secret rotated", "closing device connection", "level=DEBUG"} {
		if !strings.Contains(log, want) {
			t.Fatalf("the log lacks %q, so this test would prove nothing:\n%s", want, log)
		}
	}
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Fatalf("a credential (%.6s…) is in the log:\n%s", s, log)
		}
		// Nor a long piece of it (a token's signature, say).
		if len(s) > 40 && strings.Contains(log, s[len(s)-24:]) {
			t.Fatalf("part of a credential (%.6s…) is in the log", s)
		}
	}
}
