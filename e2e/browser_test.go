package e2e

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds a headless browser: skipped outside CI when there is none,
// a failure under CI=true (.ci/run installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH under CI=true: .ci/run should have installed it")
	}
	t.Skip("no chromium on PATH: install Debian's chromium to run the browser test")
	return ""
}

// The dashboard and the demo device in a real headless Chromium against the
// real binary: the dashboard shows the gateway and live charts; the demo
// page connects over WebSocket with a token minted through the admin API,
// publishes to itself and to a topic through its form, shows both messages,
// and its ACKs reach the server (the device's cursor moves).
func TestBrowserDashboardAndDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a browser")
	}
	exe := chromium(t)
	h := startServeWS(t)
	api := "http://" + h.api

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	// The demo device.
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(c context.Context, sel string) string {
		t.Helper()
		v, err := chromedp.Run(c, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	// The dashboard redraws its tables every 2 s (new nodes): read them
	// in a poll, where a node replaced between query and read just means
	// "read again".
	poll := func(c context.Context, sel string) string {
		v, err := chromedp.Run(c, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			return ""
		}
		return v
	}
	do("open the demo page", chromedp.Navigate(api+"/ui/demo"), chromedp.WaitVisible(chromedp.ID("connect")))
	device, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("device")))
	if err != nil || device == "" {
		t.Fatalf("device name: %q %v", device, err)
	}
	do("connect",
		chromedp.SendKeys(chromedp.ID("adminkey"), "dev-admin-key"),
		chromedp.SendKeys(chromedp.ID("pubkey"), "demo-key"),
		chromedp.Click(chromedp.ID("connect")),
		chromedp.WaitVisible(chromedp.CSS("#status.ok")))
	if s := text(ctx, "#status"); s != "connected" {
		t.Fatalf("status %q", s)
	}
	do("publish to me",
		chromedp.SetValue(chromedp.ID("text"), "hello from the browser"),
		chromedp.Click(chromedp.ID("pubme")),
		chromedp.WaitVisible(chromedp.CSS(`#messages li[data-channel="u.alice"]`)))
	if s := text(ctx, `#messages li[data-channel="u.alice"]`); !strings.Contains(s, "hello from the browser") {
		t.Fatalf("message shown as %q", s)
	}
	attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`#messages li[data-channel="u.alice"]`), "data-seq"))
	if err != nil || !attr.Exists {
		t.Fatalf("data-seq: %v", err)
	}
	seq, _ := strconv.ParseUint(attr.Value, 10, 64)
	// The ACK reached the server: the browser device's cursor is the message.
	waitFor(t, 10*time.Second, "the browser's ACK as its cursor", func() bool {
		_, out := call(t, api, "demo-key", "GET", "/v1/apps/demo/messages/"+attr.Value, nil)
		devs, _ := out["devices"].([]any)
		for _, d := range devs {
			m := d.(map[string]any)
			if m["device"] == device && m["acked"] == true && uint64(m["cursor"].(float64)) >= seq {
				return true
			}
		}
		return false
	})

	// A topic, through the form.
	do("subscribe and publish to a topic",
		chromedp.SetValue(chromedp.ID("topic"), "news"),
		chromedp.Click(chromedp.ID("sub")),
		chromedp.WaitVisible(chromedp.Search(`//div[@id="pubstatus"][contains(., "subscribed to t.news")]`)),
		chromedp.SetValue(chromedp.ID("text"), "topic news from the browser"),
		chromedp.Click(chromedp.ID("pubtopic")),
		chromedp.WaitVisible(chromedp.CSS(`#messages li[data-channel="t.news"]`)))
	if s := text(ctx, `#messages li[data-channel="t.news"]`); !strings.Contains(s, "topic news from the browser") {
		t.Fatalf("topic message shown as %q", s)
	}

	// The dashboard, in a second tab while the demo device stays connected.
	tab, cancelTab := chromedp.NewContext(ctx)
	defer cancelTab()
	if err := chromedp.Do(tab,
		chromedp.Navigate(api+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("use")),
		chromedp.Click(chromedp.ID("use")), // the key is remembered from the demo page
		chromedp.WaitVisible(chromedp.CSS(`#gateways tbody tr`))); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	waitFor(t, 10*time.Second, "the gateway's row", func() bool {
		row := poll(tab, `#gateways tbody tr`)
		return strings.Contains(row, "dev") && strings.Contains(row, "127.0.0.1")
	})
	// Live charts fill in: connections counts the browser device, and
	// publishes/s has a value once two points are drawn.
	push(t, api, "bob", "for the chart")
	waitFor(t, 20*time.Second, "the charts", func() bool {
		return poll(tab, "#c-conn .value") == "1" && poll(tab, "#c-pub .value") != "–"
	})
	points, err := chromedp.Run(tab, chromedp.AttributeValue(chromedp.CSS("#c-conn polyline"), "points"))
	if err != nil || points.Value == "" {
		t.Fatalf("connections chart empty: %+v %v", points, err)
	}
}

// startServeWS is startServe with the WebSocket listener on.
func startServeWS(t *testing.T) *servedHerald {
	t.Helper()
	h := &servedHerald{bin: buildHerald(t), dir: t.TempDir(), api: freeAddr(t), dev: freeAddr(t), natsAddr: freeAddr(t)}
	ws := freeAddr(t)
	h.proc = start(t, h.dir, h.bin+" serve --dev --http "+h.api+" --tcp "+h.dev+" --ws "+ws+" --nats-listen "+h.natsAddr)
	h.proc.waitRunning(t, 20*time.Second, "herald serve")
	return h
}
