package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"herald/offline"
	"herald/token"
	"herald/wire"
)

// The kinds of FuzzDeviceSession input (mode % sessionKinds).
const (
	kindTCP          = iota // TCP, the bytes from the first one
	kindTCPConnected        // TCP, after a good CONNECT and its CONNACK
	kindWS                  // WebSocket port, the bytes from the first one (the HTTP upgrade is part of them)
	kindWSConnected         // WebSocket, after the upgrade and a good CONNECT: raw WebSocket bytes
	kindWSMessages          // the same, the bytes carried in two masked binary messages
	sessionKinds
)

const fuzzUpgrade = "GET / HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// FuzzDeviceSession sends arbitrary bytes from a device to a real gateway
// (embedded NATS, real sockets, the gateway's own epoll and workers):
// before CONNECT or after a good one, over TCP or WebSocket, in two writes
// split where the input says, and then the device's FIN. Whatever the
// bytes, the gateway must
//   - answer only with well-formed frames a server sends (in unmasked
//     WebSocket frames on that port), nothing after ERROR or GOAWAY;
//   - close the connection once the device has closed its side;
//   - keep nothing of it afterwards: no connection, pending handshake,
//     channel or NATS subscription left;
//   - stay healthy for everyone else: a device connected throughout gets a
//     new message after every input, and a PONG (at most 20 PINGs a
//     second: PINGs count against max_frame_rate).
//
// The seeds run in `make test`; `make fuzz` explores further.
func FuzzDeviceSession(f *testing.F) {
	tok, err := token.Sign([]byte("s"), "demo", "fz", "fz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	connect := (&wire.Connect{Version: 1, App: []byte("demo"), Device: []byte("fz"), Token: []byte(tok),
		Cursors: []wire.Cursor{{Channel: []byte(offline.BroadcastChannel)}}}).Append(nil)
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	sub := (&wire.Sub{Channel: []byte("t.news")}).Append(nil)
	session := cat(sub, (&wire.Ack{Slot: 0, Seq: 3}).Append(nil), (&wire.Sync{Slot: 0, From: 1, Max: 10}).Append(nil),
		(&wire.Ping{Interval: 30}).Append(nil), (&wire.Up{ID: []byte("u-1"), Payload: []byte("hi")}).Append(nil),
		(&wire.Unsub{Channel: []byte("t.news")}).Append(nil), (&wire.Ack{Slot: 2, Seq: 1 << 40}).Append(nil))

	f.Add(connect, uint8(kindTCP), uint16(7))
	f.Add(cat(connect, session), uint8(kindTCP), uint16(len(connect)+3))
	f.Add(cat((&wire.Probe{Nonce: 9}).Append(nil), connect), uint8(kindTCP), uint16(0))
	f.Add([]byte{0x1f, 0x00}, uint8(kindTCP), uint16(1))
	f.Add([]byte{byte(wire.TypeConnect), 0x80, 0x80, 0x40}, uint8(kindTCP), uint16(2))
	f.Add(session, uint8(kindTCPConnected), uint16(9))
	f.Add(cat(sub, []byte{byte(wire.TypeAck), 0xff, 0xff, 0x7f}), uint8(kindTCPConnected), uint16(3))
	f.Add(cat(sub, sub, (&wire.Push{Seq: 1}).Append(nil)), uint8(kindTCPConnected), uint16(1))
	f.Add([]byte{byte(wire.TypeSync), 0x03, 0x00}, uint8(kindTCPConnected), uint16(0))
	f.Add(cat([]byte(fuzzUpgrade), wsClientFrame(0x82, connect)), uint8(kindWS), uint16(20))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), uint8(kindWS), uint16(5))
	f.Add(cat(wsClientFrame(0x02, session[:5]), wsClientFrame(0x89, []byte("p")), wsClientFrame(0x80, session[5:])), uint8(kindWSConnected), uint16(4))
	f.Add(cat(wsClientFrame(0x81, []byte("text")), wsClientFrame(0x82, sub)), uint8(kindWSConnected), uint16(0))
	f.Add([]byte{0x82, 0x02, 0x04, 0x00}, uint8(kindWSConnected), uint16(1))
	f.Add(cat(wsClientFrame(0x88, []byte{0x03, 0xe8}), wsClientFrame(0x82, sub)), uint8(kindWSConnected), uint16(3))
	f.Add(session, uint8(kindWSMessages), uint16(6))

	h := newHarness(f, nil)
	canary := h.connect("canary", 600)
	waitFor := func(t *testing.T, what string, cond func() bool, state func() string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waited 5 s for %s: %s", what, state())
			}
			time.Sleep(time.Millisecond)
		}
	}
	pending := func() (n int) {
		h.gw.pending.Range(func(any, any) bool { n++; return true })
		return n
	}
	// Warm up what is started once per process, each with its own NATS
	// subscription: the store's PubAck routing (the first publish), the
	// catch-up reply routing (the first catch-up that reads the store), and
	// JetStream's async PubAck routing (the first cursor write that
	// compares a known revision: a device's second).
	h.publish("warm", "waiting")
	warm := h.connect("warm", 0)
	if p := warm.push(); string(p.Payload) != "waiting" {
		f.Fatalf("warm-up device got %q", p.Payload)
	}
	warm.nc.Close()
	for i := 0; i < 2; i++ {
		seq := h.publish("canary", "warm-up")
		canary.push()
		written := h.gw.m.cursorWrites.Get()
		canary.write((&wire.Ack{Slot: 0, Seq: seq}).Append(nil))
		deadline := time.Now().Add(5 * time.Second)
		for h.gw.m.cursorWrites.Get() == written {
			if time.Now().After(deadline) {
				f.Fatal("the canary's cursor was not written")
			}
			time.Sleep(time.Millisecond)
		}
	}
	conns, chans, subs := h.gw.conns.len(), h.gw.chans.len(), h.nc.NumSubscriptions()

	var prev string
	var pinged time.Time
	f.Fuzz(func(t *testing.T, data []byte, mode uint8, cut uint16) {
		defer func(s string) { prev = s }(fmt.Sprintf("%q %d %d", data, mode, cut))
		kind := int(mode) % sessionKinds
		if len(data) > 16<<10 {
			data = data[:16<<10]
		}
		at := 0
		if len(data) > 0 {
			at = int(cut) % (len(data) + 1)
		}
		addr := h.gw.Addr().String()
		if kind >= kindWS {
			addr = h.gw.WSAddr().String()
		}
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(nc)
		write := func(b []byte) {
			if _, err := nc.Write(b); err != nil && !isReset(err) {
				t.Fatal(err)
			}
		}
		switch kind {
		case kindTCPConnected:
			write(connect)
			readUntilConnAck(t, r, false)
		case kindWSConnected, kindWSMessages:
			write([]byte(fuzzUpgrade))
			if status := readHTTPStatus(t, r); status != 101 {
				t.Fatalf("upgrade answered %d", status)
			}
			write(wsClientFrame(0x82, connect))
			readUntilConnAck(t, r, true)
		}
		parts := [][]byte{data[:at], data[at:]}
		if kind == kindWSMessages {
			parts = [][]byte{wsClientFrame(0x82, parts[0]), wsClientFrame(0x82, parts[1])}
		}
		for _, p := range parts {
			if len(p) > 0 {
				write(p)
			}
		}
		if err := nc.(*net.TCPConn).CloseWrite(); err != nil && !isReset(err) {
			t.Fatal(err)
		}
		out, err := io.ReadAll(r)
		if err != nil && !isReset(err) {
			t.Fatalf("the gateway did not close the connection after the device's FIN: %v (after %d bytes)", err, len(out))
		}
		clean := err == nil
		if kind >= kindWS {
			checkWSServerStream(t, out, kind == kindWS, clean)
		} else {
			checkServerFrames(t, out, clean)
		}
		nc.Close()

		waitFor(t, "the connection's state to go", func() bool {
			return h.gw.conns.len() == conns && pending() == 0 && h.gw.chans.len() == chans && h.nc.NumSubscriptions() == subs
		}, func() string {
			return fmt.Sprintf("connections %d (want %d), pending %d, channels %d (want %d), NATS subscriptions %d (want %d); %s",
				h.gw.conns.len(), conns, pending(), h.gw.chans.len(), chans, h.nc.NumSubscriptions(), subs, disconnects(h.gw)) + canaryGot(canary) + "; previous input " + prev
		})

		// Everyone else is served as before.
		canary.t = t
		if time.Since(pinged) > 50*time.Millisecond { // within max_frame_rate (ACKs are not counted)
			pinged = time.Now()
			canary.write((&wire.Ping{}).Append(nil))
			if typ, _ := canary.read(); typ != wire.TypePong {
				t.Fatalf("canary got %s, want PONG", typ)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := h.store.PublishAll(ctx, []offline.Publish{{App: "demo", Channel: offline.UserChannel("canary"), Data: []byte("still here")}})
		if err != nil {
			t.Fatal(err)
		}
		if p := canary.push(); p.Seq != res[0].Seq || string(p.Payload) != "still here" {
			t.Fatalf("canary got seq %d %q, want seq %d", p.Seq, p.Payload, res[0].Seq)
		}
		canary.write((&wire.Ack{Slot: 0, Seq: res[0].Seq}).Append(nil))
	})
}

// disconnects lists the gateway's disconnect counters that are not zero.
func disconnects(gw *Gateway) string {
	var b bytes.Buffer
	gw.Metrics().WritePrometheus(&b)
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "herald_gateway_disconnects_total") && !strings.HasSuffix(l, " 0") {
			out = append(out, l)
		}
	}
	return strings.Join(out, ", ")
}

func canaryGot(d *dev) string {
	d.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var out []string
	for {
		typ, body, nb, err := wire.ReadFrame(d.r, d.buf, wire.DefaultMaxFrame)
		d.buf = nb
		if err != nil {
			return fmt.Sprintf("; canary: %v then %v", out, err)
		}
		if typ == wire.TypeError {
			var e wire.Error
			e.Decode(body)
			out = append(out, fmt.Sprintf("ERROR %s %q", e.Code, e.Reason))
			continue
		}
		out = append(out, typ.String())
	}
}

// isReset is true for the errors of a socket the gateway has already
// closed (and reset, having unread input from the device).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ENOTCONN)
}

// wsClientFrame is one client WebSocket frame: b0 is FIN, RSV and opcode;
// the payload is masked (with a fixed key, so seeds stay readable).
func wsClientFrame(b0 byte, payload []byte) []byte {
	mask := [4]byte{0x11, 0x22, 0x33, 0x44}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

// readHTTPStatus reads an HTTP response header and returns its status.
func readHTTPStatus(t *testing.T, r *bufio.Reader) int {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("upgrade response: %v", err)
	}
	var status int
	if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &status); err != nil {
		t.Fatalf("upgrade response line %q", line)
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("upgrade response header: %v", err)
		}
		if l == "\r\n" {
			return status
		}
	}
}

// readUntilConnAck reads the gateway's frames (in WebSocket messages when
// ws) up to CONNACK, which must come before anything but SUBACK.
func readUntilConnAck(t *testing.T, r *bufio.Reader, ws bool) {
	t.Helper()
	for {
		var typ wire.Type
		if ws {
			op, payload, err := readWSServerFrame(r)
			if err != nil {
				t.Fatalf("waiting for CONNACK: %v", err)
			}
			if op != 0x2 {
				t.Fatalf("websocket opcode %#x before CONNACK", op)
			}
			typ0, _, n, err := wire.Split(payload, 1<<24)
			if err != nil || n != len(payload) {
				t.Fatalf("binary message is not one frame: %v", err)
			}
			typ = typ0
		} else {
			typ0, _, _, err := wire.ReadFrame(r, nil, 1<<24)
			if err != nil {
				t.Fatalf("waiting for CONNACK: %v", err)
			}
			typ = typ0
		}
		switch typ {
		case wire.TypeConnAck:
			return
		case wire.TypeSubAck:
		default:
			t.Fatalf("got %s before CONNACK", typ)
		}
	}
}

// readWSServerFrame reads one server WebSocket frame, which must be
// unmasked.
func readWSServerFrame(r io.Reader) (op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	if hdr[1]&0x80 != 0 {
		return 0, nil, errors.New("a masked frame from the server")
	}
	if hdr[0]&0x70 != 0 {
		return 0, nil, errors.New("reserved bits set by the server")
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 1<<24 {
		return 0, nil, fmt.Errorf("a %d-byte frame from the server", n)
	}
	if hdr[0]&0x80 == 0 {
		return 0, nil, errors.New("a fragmented frame from the server")
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0] & 0x0f, payload, nil
}

// checkWSServerStream checks what the gateway sent on its WebSocket port:
// the upgrade response first when the input carried the request (no
// frames after a refused upgrade), then unmasked frames, each binary one a
// single herald frame, nothing after a close frame, and the herald frames
// as checkServerFrames wants them.
func checkWSServerStream(t *testing.T, out []byte, upgrade, clean bool) {
	t.Helper()
	r := bytes.NewReader(out)
	if upgrade {
		end := bytes.Index(out, []byte("\r\n\r\n"))
		if end < 0 {
			if len(out) > 0 && clean {
				t.Fatalf("partial upgrade response %q", out)
			}
			return
		}
		var status int
		if _, err := fmt.Sscanf(string(out), "HTTP/1.1 %d", &status); err != nil {
			t.Fatalf("upgrade response %q", out[:end])
		}
		if status != 101 {
			// A refused upgrade may carry a body; no WebSocket frames.
			return
		}
		r = bytes.NewReader(out[end+4:])
	}
	var frames []byte
	closed := false
	for r.Len() > 0 {
		op, payload, err := readWSServerFrame(r)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) && !clean {
				break
			}
			t.Fatalf("websocket frame: %v", err)
		}
		if closed {
			t.Fatalf("websocket frame %#x after the close frame", op)
		}
		switch op {
		case 0x2:
			if _, _, n, err := wire.Split(payload, 1<<24); err != nil || n != len(payload) {
				t.Fatalf("binary message is not one herald frame (%v): % x", err, payload)
			}
			frames = append(frames, payload...)
		case 0x8:
			closed = true
			if len(payload) > 125 || len(payload) == 1 {
				t.Fatalf("close frame of %d bytes", len(payload))
			}
		case 0xa: // pong to a device's ping
			if len(payload) > 125 {
				t.Fatalf("pong of %d bytes", len(payload))
			}
		default:
			t.Fatalf("websocket opcode %#x from the server", op)
		}
	}
	checkServerFrames(t, frames, true)
}

// checkServerFrames checks a stream of herald frames from the gateway:
// each a type a server sends, with a body its decoder takes, nothing after
// ERROR or GOAWAY; a partial frame at the end only when the stream ended
// by a reset (not clean).
func checkServerFrames(t *testing.T, out []byte, clean bool) {
	t.Helper()
	var last wire.Type
	for len(out) > 0 {
		typ, body, n, err := wire.Split(out, 1<<24)
		if errors.Is(err, wire.ErrShort) && !clean {
			return
		}
		if err != nil {
			t.Fatalf("frame after %s: %v (% x)", last, err, out)
		}
		if last == wire.TypeError || last == wire.TypeGoAway {
			t.Fatalf("%s after %s", typ, last)
		}
		var derr error
		switch typ {
		case wire.TypeConnAck:
			derr = new(wire.ConnAck).Decode(body)
		case wire.TypePush:
			derr = new(wire.Push).Decode(body)
		case wire.TypePong:
			if len(body) != 0 {
				derr = fmt.Errorf("PONG with a %d-byte body", len(body))
			}
		case wire.TypeError:
			var e wire.Error
			if derr = e.Decode(body); derr == nil && e.Code == 0 {
				derr = errors.New("ERROR with code 0")
			}
		case wire.TypeGoAway:
			derr = new(wire.GoAway).Decode(body)
		case wire.TypeSubAck:
			derr = new(wire.SubAck).Decode(body)
		case wire.TypeNotify:
			derr = new(wire.Notify).Decode(body)
		case wire.TypeRevoke:
			derr = new(wire.Revoke).Decode(body)
		case wire.TypeUpAck:
			derr = new(wire.UpAck).Decode(body)
		case wire.TypeResync:
			derr = new(wire.Resync).Decode(body)
		case wire.TypeProbeReply:
			derr = new(wire.ProbeReply).Decode(body)
		default:
			derr = errors.New("not a frame a server sends")
		}
		if derr != nil {
			t.Fatalf("%s from the gateway: %v (% x)", typ, derr, body)
		}
		last = typ
		out = out[n:]
	}
}
