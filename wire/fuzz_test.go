package wire

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Split and every frame decoder. It must
// never panic, never return a body longer than the limit, and a frame that
// decodes must re-encode to an equivalent frame.
func FuzzDecode(f *testing.F) {
	f.Add((&Push{Slot: 1, Seq: 2, Payload: []byte("x")}).Append(nil))
	f.Add((&Ack{Slot: 1, Seq: 2}).Append(nil))
	f.Add((&Connect{Version: 1, App: []byte("demo"), Device: []byte("d"), Token: []byte("t"), Cursors: []Cursor{{Channel: []byte("u.a"), Seq: 3}}}).Append(nil))
	f.Add((&ConnAck{Version: 1, Channels: []Channel{{Name: []byte("u.a")}}}).Append(nil))
	f.Add((&Error{Code: CodeMalformed, Reason: []byte("r")}).Append(nil))
	f.Add([]byte{byte(TypePush), 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 4096
		for len(b) > 0 {
			typ, body, n, err := Split(b, max)
			if err != nil {
				return
			}
			if len(body) > max || n > len(b) || n <= len(body) {
				t.Fatalf("Split returned body %d, n %d of %d", len(body), n, len(b))
			}
			switch typ {
			case TypePush:
				var p Push
				if p.Decode(body) == nil {
					var q Push
					_, body2, _, err := Split(p.Append(nil), 1<<20)
					if err != nil || q.Decode(body2) != nil || q.Seq != p.Seq || q.Slot != p.Slot || !bytes.Equal(q.Payload, p.Payload) {
						t.Fatalf("PUSH does not round-trip: %+v", p)
					}
				}
			case TypeAck:
				var a Ack
				if a.Decode(body) == nil {
					var c Ack
					_, body2, _, _ := Split(a.Append(nil), max)
					if c.Decode(body2) != nil || c != a {
						t.Fatalf("ACK does not round-trip: %+v", a)
					}
				}
			case TypeConnect:
				var c Connect
				if c.Decode(body) == nil && len(c.Cursors) > MaxCursors {
					t.Fatalf("%d cursors", len(c.Cursors))
				}
			case TypeConnAck:
				var c ConnAck
				_ = c.Decode(body)
			case TypePing:
				var p Ping
				_ = p.Decode(body)
			case TypeError:
				var e Error
				_ = e.Decode(body)
			case TypeGoAway:
				var g GoAway
				_ = g.Decode(body)
			}
			b = b[n:]
		}
	})
}
