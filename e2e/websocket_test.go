package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"herald/config"
	"herald/token"
	"herald/wire"
)

// A user's TCP device and WebSocket device receive the same messages, in the
// same order, each once.
func TestWebSocketAndTCPReceiveTheSame(t *testing.T) {
	n := startNode(t, testConfig(t))
	tcp, web := newCollector(), newCollector()
	ct := device(t, n.Gateway.Addr().String(), "alice", "phone", tcp, nil)
	cw := device(t, "ws://"+n.Gateway.WSAddr().String()+"/", "alice", "browser", web, nil)
	waitFor(t, 5*time.Second, "both connected", func() bool { return ct.Connects() == 1 && cw.Connects() == 1 })
	var want []uint64
	for i := 0; i < 50; i++ {
		want = append(want, push(t, apiURL(n), "alice", fmt.Sprintf("m%d", i)))
	}
	tcp.waitCount(t, 50, 5*time.Second)
	web.waitCount(t, 50, 5*time.Second)
	checkExactlyOnceInOrder(t, tcp.snapshot(), want)
	checkExactlyOnceInOrder(t, web.snapshot(), want)
	for i, m := range web.snapshot() {
		if string(m.Data) != fmt.Sprintf("m%d", i) {
			t.Fatalf("websocket message %d: %q", i, m.Data)
		}
	}
}

func TestWebSocketOriginCheck(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.WSOrigins = []string{"https://app.example"}
	n := startNode(t, cfg)
	url := "ws://" + n.Gateway.WSAddr().String() + "/"
	f := func(origin string, wantOK bool) {
		t.Helper()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h), Timeout: 5 * time.Second}
		conn, _, _, err := d.Dial(context.Background(), url)
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != wantOK {
			t.Fatalf("origin %q: err %v, want ok=%v", origin, err, wantOK)
		}
	}
	f("https://app.example", true)
	f("https://evil.example", false)
	f("", false)
}

// Bad WebSocket input gets ERROR (in a binary message) and a close.
func TestWebSocketBadFrames(t *testing.T) {
	n := startNode(t, testConfig(t))
	url := "ws://" + n.Gateway.WSAddr().String() + "/"
	tok, _ := token.Sign([]byte(config.DemoSecret), "demo", "alice", "d1", time.Hour)
	f := func(name string, send func(c interface{ Write([]byte) (int, error) }) error, code wire.Code) {
		t.Run(name, func(t *testing.T) {
			conn, _, _, err := ws.Dial(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if err := send(conn); err != nil {
				t.Fatal(err)
			}
			for {
				msg, op, err := wsutil.ReadServerData(conn)
				if err != nil {
					t.Fatalf("no ERROR before close: %v", err)
				}
				if op != ws.OpBinary {
					continue
				}
				typ, body, _, err := wire.Split(msg, wire.DefaultMaxFrame)
				if err != nil {
					t.Fatal(err)
				}
				if typ != wire.TypeError {
					continue
				}
				var e wire.Error
				e.Decode(body)
				if e.Code != code {
					t.Fatalf("ERROR %s, want %s", e.Code, code)
				}
				return
			}
		})
	}
	f("text message", func(c interface{ Write([]byte) (int, error) }) error {
		return wsutil.WriteClientText(c, []byte("hello"))
	}, wire.CodeMalformed)
	f("unmasked frame", func(c interface{ Write([]byte) (int, error) }) error {
		_, err := c.Write([]byte{0x82, 0x02, 0x04, 0x00})
		return err
	}, wire.CodeMalformed)
	f("garbage herald frame in a binary message", func(c interface{ Write([]byte) (int, error) }) error {
		return wsutil.WriteClientBinary(c, []byte{0x55, 0x00})
	}, wire.CodeUnknownType)
	f("oversized websocket frame", func(c interface{ Write([]byte) (int, error) }) error {
		_, err := c.Write([]byte{0x82, 0xff, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4})
		return err
	}, wire.CodeMalformed)
	f("good CONNECT then ACK on a bad slot", func(c interface{ Write([]byte) (int, error) }) error {
		frames := (&wire.Connect{Version: 1, App: []byte("demo"), Device: []byte("d1"), Token: []byte(tok)}).Append(nil)
		frames = (&wire.Ack{Slot: 9, Seq: 1}).Append(frames) // two frames in one message
		return wsutil.WriteClientBinary(c, frames)
	}, wire.CodeBadChannel)
}

// An app's own origins: its WebSocket devices must come from one of them;
// other apps are not affected.
func TestWebSocketAppOrigins(t *testing.T) {
	cfg := testConfig(t)
	cfg.Apps = []config.App{{Name: "shop", Keys: []string{"shop-key"}, Secrets: []string{"shop-secret"}, Origins: []string{"https://shop.example"}}}
	n := startNode(t, cfg)
	url := "ws://" + n.Gateway.WSAddr().String() + "/"
	f := func(app, secret, origin string, want wire.Type, code wire.Code) {
		t.Helper()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, _, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h), Timeout: 5 * time.Second}.Dial(context.Background(), url)
		if err != nil {
			t.Fatalf("upgrade from %q: %v", origin, err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		tok, _ := token.Sign([]byte(secret), app, "ann", "d1", time.Hour)
		if err := wsutil.WriteClientBinary(conn, (&wire.Connect{Version: wire.Version, App: []byte(app), Device: []byte("d1"), Token: []byte(tok)}).Append(nil)); err != nil {
			t.Fatal(err)
		}
		msg, err := wsutil.ReadServerBinary(conn)
		if err != nil {
			t.Fatalf("%s from %q: %v", app, origin, err)
		}
		typ, body, _, err := wire.Split(msg, wire.DefaultMaxFrame)
		if err != nil || typ != want {
			t.Fatalf("%s from %q: %s %v, want %s", app, origin, typ, err, want)
		}
		if want == wire.TypeError {
			var e wire.Error
			if e.Decode(body); e.Code != code {
				t.Fatalf("%s from %q: ERROR %s, want %s", app, origin, e.Code, code)
			}
		}
	}
	f("shop", "shop-secret", "https://shop.example", wire.TypeConnAck, 0)
	f("shop", "shop-secret", "https://evil.example", wire.TypeError, wire.CodeOriginNotAllowed)
	f("shop", "shop-secret", "", wire.TypeError, wire.CodeOriginNotAllowed)
	f("demo", config.DemoSecret, "https://evil.example", wire.TypeConnAck, 0)
}
