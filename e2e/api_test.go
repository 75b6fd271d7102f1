package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/config"
)

func TestPushAPIErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.API.MaxBody = 64 << 10
	cfg.Apps = []config.App{{Name: "other", Keys: []string{"other-key"}, Secrets: []string{"s"}, Limits: config.Limits{MaxPayload: 10}}}
	n := startNode(t, cfg)
	api := apiURL(n)
	f := func(name, app, key, body string, status int, code string) {
		t.Run(name, func(t *testing.T) {
			r := pushRaw(t, api, app, key, []byte(body))
			errObj, _ := r.Body["error"].(map[string]any)
			if r.Status != status || errObj == nil || errObj["code"] != code || errObj["message"] == "" {
				t.Fatalf("got %d %v, want %d %s", r.Status, r.Body, status, code)
			}
			if key != "" && strings.Contains(errObj["message"].(string), key) {
				t.Fatalf("error message echoes the key: %v", errObj)
			}
		})
	}
	ok := `{"users":["alice"],"data":"x"}`
	f("unknown app", "nope", "demo-key", ok, 404, "unknown_app")
	f("invalid app name", "a.b", "demo-key", ok, 404, "unknown_app")
	f("no key", "demo", "", ok, 401, "unauthorized")
	f("wrong key", "demo", "guess", ok, 401, "unauthorized")
	f("other app's key", "demo", "other-key", ok, 401, "unauthorized")
	f("bad JSON", "demo", "demo-key", `{"users":`, 400, "bad_json")
	f("empty body", "demo", "demo-key", ``, 400, "bad_json")
	f("not an object", "demo", "demo-key", `[1,2]`, 400, "bad_json")
	f("two values", "demo", "demo-key", ok+ok, 400, "bad_json")
	f("unknown field", "demo", "demo-key", `{"users":["alice"],"data":"x","colour":"red"}`, 400, "bad_json")
	f("users of wrong type", "demo", "demo-key", `{"users":"alice","data":"x"}`, 400, "bad_json")
	f("no users", "demo", "demo-key", `{"users":[],"data":"x"}`, 400, "missing_target")
	f("user with a dot", "demo", "demo-key", `{"users":["a.b"],"data":"x"}`, 400, "invalid_user")
	f("user with a wildcard", "demo", "demo-key", `{"users":["*"],"data":"x"}`, 400, "invalid_user")
	f("user with a space", "demo", "demo-key", `{"users":["a b"],"data":"x"}`, 400, "invalid_user")
	f("no data", "demo", "demo-key", `{"users":["alice"]}`, 400, "invalid_data")
	f("both data fields", "demo", "demo-key", `{"users":["alice"],"data":"x","data_base64":"eA=="}`, 400, "invalid_data")
	f("bad base64", "demo", "demo-key", `{"users":["alice"],"data_base64":"%%%"}`, 400, "invalid_data")
	f("bad ttl", "demo", "demo-key", `{"users":["alice"],"data":"x","ttl":"soon"}`, 400, "invalid_ttl")
	f("ttl too short", "demo", "demo-key", `{"users":["alice"],"data":"x","ttl":"10ms"}`, 400, "invalid_ttl")
	f("ttl beyond max age", "demo", "demo-key", `{"users":["alice"],"data":"x","ttl":"9000h"}`, 400, "invalid_ttl")
	f("id with space", "demo", "demo-key", `{"users":["alice"],"data":"x","id":"a b"}`, 400, "invalid_id")
	f("payload over the limit", "demo", "demo-key", `{"users":["alice"],"data":"`+strings.Repeat("a", 4097)+`"}`, 413, "payload_too_large")
	f("payload over the app's limit", "other", "other-key", `{"users":["alice"],"data":"12345678901"}`, 413, "payload_too_large")

	// A body over max_body is refused from its Content-Length; the server may
	// close before the client finished sending, so read the answer raw.
	t.Run("body over max_body", func(t *testing.T) {
		body := `{"users":["alice"],"data":"` + strings.Repeat("a", 70<<10) + `"}`
		status, answer := rawPost(t, n.Dispatcher.Addr().String(), "/v1/apps/demo/push", "demo-key", body)
		if status != 413 || !strings.Contains(answer, `"body_too_large"`) {
			t.Fatalf("got %d %s", status, answer)
		}
	})

	// Nothing above was stored: the first real message gets the first sequence.
	if seq := push(t, api, "alice", "first"); seq != 1 {
		t.Fatalf("a refused request stored something: first seq is %d", seq)
	}

	resp, err := http.Get(api + "/v1/apps/demo/push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("GET push: %d", resp.StatusCode)
	}
}

// rawPost sends a request over a plain TCP connection, ignoring write errors
// (the server may answer and close early), and returns the answer.
func rawPost(t *testing.T, addr, path, key, body string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, key, len(body))
	go c.Write([]byte(req + body))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestIdempotentRePost(t *testing.T) {
	n := startNode(t, testConfig(t))
	api := apiURL(n)
	col := newCollector()
	c := device(t, n.Gateway.Addr().String(), "alice", "d1", col, nil)
	waitFor(t, 5*time.Second, "connect", func() bool { return c.Connects() == 1 })
	body := []byte(`{"users":["alice","bob"],"data":"once","id":"order-42"}`)
	first := pushRaw(t, api, "demo", "demo-key", body)
	second := pushRaw(t, api, "demo", "demo-key", body)
	if first.Status != 200 || second.Status != 200 {
		t.Fatalf("%v %v", first.Body, second.Body)
	}
	if first.Body["duplicate"] != false || second.Body["duplicate"] != true {
		t.Fatalf("duplicate flags: %v / %v", first.Body, second.Body)
	}
	if len(first.Seqs) != 2 || first.Seqs[0] != second.Seqs[0] || first.Seqs[1] != second.Seqs[1] || first.Seqs[0] == first.Seqs[1] {
		t.Fatalf("seqs %v then %v", first.Seqs, second.Seqs)
	}
	// A different id is a different message.
	third := pushRaw(t, api, "demo", "demo-key", []byte(`{"users":["alice"],"data":"again","id":"order-43"}`))
	col.waitCount(t, 2, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	checkExactlyOnceInOrder(t, col.snapshot(), []uint64{first.Seqs[0], third.Seqs[0]})
}

// With the store gone the API answers 503, never a 200 that lost data.
func TestStoreUnavailable503(t *testing.T) {
	cfg := testConfig(t)
	cfg.API.PublishTimeout = time.Second
	n := startNode(t, cfg)
	api := apiURL(n)
	push(t, api, "alice", "stored")
	n.NATS.Shutdown()
	n.NATS.WaitForShutdown()
	r := pushRaw(t, api, "demo", "demo-key", []byte(`{"users":["alice"],"data":"x"}`))
	if r.Status != 503 {
		t.Fatalf("got %d %v", r.Status, r.Body)
	}
	e := r.Body["error"].(map[string]any)
	if e["code"] != "store_unavailable" {
		t.Fatalf("%v", e)
	}
	resp, err := http.Get(api + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz is %d with NATS down", resp.StatusCode)
	}
}
