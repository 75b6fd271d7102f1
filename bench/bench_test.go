package bench

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseSources(t *testing.T) {
	got, err := ParseSources("127.0.0.2-127.0.0.4,127.0.0.9")
	if err != nil || strings.Join(got, " ") != "127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.9" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "10.0.0.1", "127.0.0.5-127.0.0.2", "127.0.0.1-127.0.1.2", "nonsense", "192.168.1.2-192.168.1.3"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The bench only ever targets this machine.
func TestOnlyLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:7070", "ws://127.0.0.1:7071/", "http://127.0.0.1:9091/metrics", "[::1]:7070", "localhost:80"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"10.1.2.3:7070", "ws://192.168.0.2:7071/", "http://example.com/metrics", "8.8.8.8:53"} {
		if err := checkLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := RunConnect(ConnectConfig{Conns: 1, Procs: 1, Gateways: []string{"10.0.0.1:7070"}, Sources: []string{"127.0.0.2"}}); err == nil {
		t.Fatal("RunConnect accepted a non-loopback gateway")
	}
}

// Requests in flight per publisher are 1..MaxInFlight (0 in a config is 1).
func TestUnicastInFlightBounded(t *testing.T) {
	for _, n := range []int{-1, MaxInFlight + 1} {
		_, err := RunUnicast(UnicastConfig{API: "http://127.0.0.1:1", Gateways: []string{"127.0.0.1:1"}, Sources: []string{"127.0.0.2"},
			Devices: 10, Publishers: 1, PerRequest: 1, Rate: 100, InFlight: n, Duration: time.Second})
		if err == nil || !strings.Contains(err.Error(), "--in-flight") {
			t.Fatalf("in flight %d: got %v", n, err)
		}
	}
}

// A request names distinct users, so it cannot name more than there are.
func TestUnicastPerRequestAtMostDevices(t *testing.T) {
	_, err := RunUnicast(UnicastConfig{API: "http://127.0.0.1:1", Gateways: []string{"127.0.0.1:1"}, Sources: []string{"127.0.0.2"},
		Devices: 10, Publishers: 1, PerRequest: 11, Duration: time.Second})
	if err == nil || !strings.Contains(err.Error(), "--per-request 11 is more than --devices 10") {
		t.Fatalf("got %v", err)
	}
}

func TestStoredCount(t *testing.T) {
	n, err := storedCount([]byte(`{"messages":[{"user":"seq","channel":"u.seq","seq":17},{"user":"b","channel":"u.b","seq":18,"duplicate":true}],"duplicate":true}`))
	if n != 2 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	if n, err := storedCount([]byte(`{"messages":[]}`)); n != 0 || err != nil {
		t.Fatalf("empty: %d %v", n, err)
	}
	if _, err := storedCount([]byte(`<html>`)); err == nil {
		t.Fatal("an answer that is not a message list must be an error")
	}
}

// A storm that times out says whether the server still answers: up, up
// but unhealthy, or gone.
func TestHealthOf(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer up.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	for _, c := range []struct{ api, want string }{
		{up.URL, "answering /healthz"},
		{up.URL + "/", "answering /healthz"},
		{sick.URL, "answering /healthz with 503 Service Unavailable"},
		{gone.URL, "not answering ("},
	} {
		if got := healthOf(c.api); !strings.HasPrefix(got, c.want) || (c.want == "answering /healthz" && got != c.want) {
			t.Errorf("healthOf(%s) = %q, want %q", c.api, got, c.want)
		}
	}
}
