package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/wire"
)

// fuzzConnAck is what the fake gateway answers every CONNECT with: the
// user channel on slot 0, the broadcast channel on slot 1.
var fuzzConnAck = (&wire.ConnAck{Version: wire.Version, Heartbeat: 30, HeartbeatMin: 1, HeartbeatMax: 600, MaxFrame: wire.DefaultMaxFrame,
	Channels: []wire.Channel{{Slot: 0, Name: []byte("u.alice")}, {Slot: 1, Name: []byte("b.all")}}}).Append(nil)

// FuzzClientSession runs the SDK against a fake gateway that answers
// CONNECT with a good CONNACK and then sends arbitrary bytes and closes —
// the same bytes on every connection, so everything the first connection
// delivered comes again. Whatever the bytes:
//   - the client does not panic, and Run ends once its context does;
//   - the handler sees each channel's sequence numbers strictly rise
//     across both connections (a RESYNC's rewind of that channel aside):
//     nothing is shown twice or out of order;
//   - the client reconnects (or ends Run for good on a fatal ERROR, or
//     waits out a GOAWAY's delay), and each CONNECT carries, for the user
//     and broadcast channels, the last sequence the handler took.
func FuzzClientSession(f *testing.F) {
	push := func(slot uint32, seq uint64, data string) []byte {
		return (&wire.Push{Slot: slot, Seq: seq, Payload: []byte(data)}).Append(nil)
	}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	f.Add(cat(push(0, 1, "a"), push(0, 2, "b"), push(1, 7, "c")))
	f.Add(cat(push(0, 5, "a"), push(0, 3, "old"), push(0, 5, "again"), push(0, 6, "b")))
	f.Add(cat(push(0, 1, "a"), push(9, 2, "unknown slot")))
	f.Add(cat(push(0, 4, "a"), (&wire.Resync{Slot: 0, From: 2}).Append(nil), push(0, 2, "again"), push(0, 3, "x")))
	f.Add(cat((&wire.SubAck{Slot: 2, Channel: []byte("t.news"), Seq: 0}).Append(nil), push(2, 1, "news")))
	f.Add(cat((&wire.Notify{Slot: 0, Seq: 50, Pending: 40}).Append(nil), push(0, 11, "x")))
	f.Add(cat(push(0, 1, "a"), (&wire.Error{Code: wire.CodeTokenInvalid, Reason: []byte("no")}).Append(nil)))
	f.Add(cat(push(0, 1, "a"), (&wire.GoAway{Code: wire.CodeShutdown, Delay: 1 << 31, Reason: []byte("later")}).Append(nil)))
	f.Add(cat(push(0, 1, "a"), (&wire.Revoke{Slot: 0, Seq: 1}).Append(nil), (&wire.UpAck{ID: []byte("x"), Seq: 1}).Append(nil)))
	f.Add(cat(push(0, 1, "a"), []byte{byte(wire.TypePush), 0xff, 0xff, 0xff, 0x7f}))
	f.Add(cat(push(0, 1, "a"), []byte{byte(wire.TypeConnect), 0x00}))
	f.Add([]byte{byte(wire.TypePong), 0x00, byte(wire.TypePush)})

	f.Fuzz(func(t *testing.T, data []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()

		var mu sync.Mutex
		last := map[string]uint64{}
		var failure string
		goAway := make(chan struct{}, 1)
		var c *Client
		c, err = New(Config{
			Addr: ln.Addr().String(), App: "demo", Device: "d1",
			Token:      func(context.Context) (string, error) { return "token", nil },
			MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, DialTimeout: 2 * time.Second,
			Handler: func(m Message) error {
				mu.Lock()
				defer mu.Unlock()
				if m.Seq <= last[m.Channel] && failure == "" {
					failure = fmt.Sprintf("%s: seq %d handed to the app after %d", m.Channel, m.Seq, last[m.Channel])
				}
				last[m.Channel] = m.Seq
				return nil
			},
			OnEvent: func(e Event) {
				var se *ServerError
				switch {
				case e.Kind == Rewound:
					mu.Lock()
					last[e.Channel] = c.Cursor(e.Channel) // a server-ordered rewind: again from there
					mu.Unlock()
				case e.Kind == Disconnected && errors.As(e.Err, &se) && se.GoAway && se.Delay > 0:
					select {
					case goAway <- struct{}{}:
					default:
					}
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ran := make(chan error, 1)
		go func() { ran <- c.Run(ctx) }()

		// accept serves one connection: reads CONNECT (its cursors are
		// returned), answers CONNACK and data, and waits for the close.
		accept := func() (map[string]uint64, bool) {
			type result struct {
				nc  net.Conn
				err error
			}
			acc := make(chan result, 1)
			go func() { nc, err := ln.Accept(); acc <- result{nc, err} }()
			var res result
			select {
			case res = <-acc:
			case err := <-ran:
				ran <- err
				return nil, false
			case <-goAway:
				return nil, false
			case <-time.After(5 * time.Second):
				t.Fatal("the client neither reconnected nor ended Run within 5 s")
			}
			if res.err != nil {
				t.Fatal(res.err)
			}
			nc := res.nc
			defer nc.Close()
			r, cursors := readConnect(t, nc)
			nc.Write(fuzzConnAck)
			nc.Write(data)
			nc.(*net.TCPConn).CloseWrite()
			drainUntilClosed(r)
			return cursors, true
		}
		checkCursors := func(got map[string]uint64) {
			mu.Lock()
			defer mu.Unlock()
			for _, ch := range []string{"u.alice", "b.all"} {
				if want, ok := last[ch]; ok && got[ch] != want {
					t.Fatalf("CONNECT cursor of %s is %d; the handler last took %d", ch, got[ch], want)
				}
			}
		}
		for i := 0; i < 3; i++ {
			cursors, ok := accept()
			if !ok {
				break
			}
			if i > 0 {
				checkCursors(cursors)
			}
		}
		cancel()
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not end within 5 s of its context")
		}
		mu.Lock()
		defer mu.Unlock()
		if failure != "" {
			t.Fatal(failure)
		}
		for ch := range last {
			if !strings.HasPrefix(ch, "u.") && !strings.HasPrefix(ch, "b.") && !strings.HasPrefix(ch, "t.") {
				t.Fatalf("the handler got a message on %q, a channel no CONNACK or SUBACK named", ch)
			}
		}
	})
}

// runClient runs c for at most 10 s; stop (also run at the test's end)
// ends Run and waits for it.
func runClient(t *testing.T, c *Client) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-ran }) }
	t.Cleanup(stop)
	return stop
}

// readConnect reads the client's first frame, which must be CONNECT, and
// returns the reader and the CONNECT's cursors.
func readConnect(t *testing.T, nc net.Conn) (*bufio.Reader, map[string]uint64) {
	t.Helper()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(nc)
	typ, body, _, err := wire.ReadFrame(r, nil, wire.DefaultMaxFrame)
	if err != nil || typ != wire.TypeConnect {
		t.Fatalf("the client's first frame: %s, %v", typ, err)
	}
	var cf wire.Connect
	if err := cf.Decode(body); err != nil {
		t.Fatalf("the client's CONNECT: %v", err)
	}
	cursors := map[string]uint64{}
	for _, cur := range cf.Cursors {
		cursors[string(cur.Channel)] = cur.Seq
	}
	return r, cursors
}

// drainUntilClosed reads and drops what the client sends until it closes
// (or the connection's deadline passes).
func drainUntilClosed(r *bufio.Reader) {
	for {
		if _, _, _, err := wire.ReadFrame(r, nil, 1<<24); err != nil {
			return
		}
	}
}

// Channel names from the server are checked: a SUBACK or CONNACK naming an
// invalid channel ends the connection (the client reconnects) and leaves
// no cursor behind, and a cursor saved for an invalid channel (by an older
// SDK) stays out of CONNECT. Either would make the gateway refuse every
// later CONNECT with ERROR bad_channel, for good.
func TestServerChannelNamesAreChecked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cursors := &MemoryCursors{}
	cursors.Save("x y", 5)
	cursors.Save("u.alice", 3)
	var mu sync.Mutex
	var handled []Message
	var disconnects []string
	c, err := New(Config{
		Addr: ln.Addr().String(), App: "demo", Device: "d1", Cursors: cursors,
		Token:      func(context.Context) (string, error) { return "token", nil },
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Handler: func(m Message) error {
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, m)
			return nil
		},
		OnEvent: func(e Event) {
			if e.Kind == Disconnected {
				mu.Lock()
				disconnects = append(disconnects, e.Err.Error())
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := runClient(t, c)

	// serve takes one connection: it returns the CONNECT's cursors and
	// sends answer, then (if answer is not nil) waits for the client to
	// close.
	serve := func(answer []byte) map[string]uint64 {
		t.Helper()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		nc, err := ln.Accept()
		if err != nil {
			t.Fatalf("no connection: %v", err)
		}
		defer nc.Close()
		r, got := readConnect(t, nc)
		if answer == nil {
			return got
		}
		nc.Write(answer)
		drainUntilClosed(r)
		return got
	}
	bad := (&wire.SubAck{Slot: 2, Channel: []byte("zzz")}).Append(nil)
	bad = (&wire.Push{Slot: 2, Seq: 1, Payload: []byte("on no channel")}).Append(bad)
	if got := serve(append(fuzzConnAck[:len(fuzzConnAck):len(fuzzConnAck)], bad...)); len(got) != 1 || got["u.alice"] != 3 {
		t.Fatalf("first CONNECT's cursors %v, want only u.alice at 3", got)
	}
	badAck := (&wire.ConnAck{Version: wire.Version, Heartbeat: 30, HeartbeatMin: 1, HeartbeatMax: 600, MaxFrame: wire.DefaultMaxFrame,
		Channels: []wire.Channel{{Slot: 0, Name: []byte("u.alice")}, {Slot: 1, Name: []byte("b.all x")}}}).Append(nil)
	if got := serve(badAck); len(got) != 1 || got["u.alice"] != 3 {
		t.Fatalf("second CONNECT's cursors %v, want only u.alice at 3", got)
	}
	if got := serve(nil); len(got) != 1 {
		t.Fatalf("third CONNECT's cursors %v, want only u.alice", got)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 0 {
		t.Fatalf("the handler got %d messages on invalid channels", len(handled))
	}
	// (A connection that never got a good CONNACK is not reported.)
	if len(disconnects) == 0 || !strings.Contains(disconnects[0], `SUBACK names an invalid channel "zzz"`) {
		t.Fatalf("disconnects %q", disconnects)
	}
	if saved, _ := cursors.Load(); saved["zzz"] != 0 {
		t.Fatalf("a cursor was saved for zzz: %v", saved)
	}
}

// A GOAWAY's delay is honoured up to maxGoAwayDelay (plus its jitter), not
// for the 49 days its 32 bits can say.
func TestGoAwayDelayIsBounded(t *testing.T) {
	defer func(d time.Duration) { maxGoAwayDelay = d }(maxGoAwayDelay)
	maxGoAwayDelay = 100 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := New(Config{
		Addr: ln.Addr().String(), App: "demo", Device: "d1",
		Token:      func(context.Context) (string, error) { return "token", nil },
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Handler: func(Message) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	accept := func() net.Conn {
		t.Helper()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		nc, err := ln.Accept()
		if err != nil {
			t.Fatalf("no connection: %v", err)
		}
		readConnect(t, nc)
		return nc
	}
	nc := accept()
	nc.Write(fuzzConnAck)
	nc.Write((&wire.GoAway{Code: wire.CodeShutdown, Delay: 1<<32 - 1, Reason: []byte("see you in 49 days")}).Append(nil))
	start := time.Now()
	nc.Close()
	accept().Close()
	if el := time.Since(start); el > time.Second {
		t.Fatalf("reconnected after %v; the bound is 100 ms plus as much jitter", el)
	}
}
