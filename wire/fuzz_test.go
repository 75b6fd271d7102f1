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
	f.Add((&Sub{Channel: []byte("t.news"), Seq: 9}).Append(nil))
	f.Add((&SubAck{Slot: 2, Channel: []byte("t.news"), Seq: 9}).Append(nil))
	f.Add((&Unsub{Channel: []byte("t.news")}).Append(nil))
	f.Add((&Notify{Slot: 1, Seq: 5000, Pending: 4000}).Append(nil))
	f.Add((&Sync{Slot: 1, From: 7, Max: 500}).Append(nil))
	f.Add((&Revoke{Slot: 0, Seq: 12}).Append(nil))
	f.Add((&Up{ID: []byte("m-1"), Payload: []byte("hi")}).Append(nil))
	f.Add((&UpAck{ID: []byte("m-1"), Seq: 3, Duplicate: true}).Append(nil))
	f.Add((&Resync{Slot: 0, From: 42}).Append(nil))
	f.Add((&Probe{Nonce: 7}).Append(nil))
	f.Add((&ProbeReply{Nonce: 7, Load: 1500, ID: []byte("gw-1")}).Append(nil))
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
			case TypeSub:
				var x, y Sub
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if !bytes.Equal(x.Channel, y.Channel) || x.Seq != y.Seq {
						t.Fatalf("SUB does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeSubAck:
				var x, y SubAck
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if !bytes.Equal(x.Channel, y.Channel) || x.Seq != y.Seq || x.Slot != y.Slot || x.Code != y.Code {
						t.Fatalf("SUBACK does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeUnsub:
				var x, y Unsub
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if !bytes.Equal(x.Channel, y.Channel) {
						t.Fatalf("UNSUB does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeNotify:
				var x, y Notify
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if x != y {
						t.Fatalf("NOTIFY does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeSync:
				var x, y Sync
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if x != y {
						t.Fatalf("SYNC does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeRevoke:
				var x, y Revoke
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if x != y {
						t.Fatalf("REVOKE does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeUp:
				var x, y Up
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if !bytes.Equal(x.ID, y.ID) || !bytes.Equal(x.Payload, y.Payload) || len(x.ID) == 0 || len(x.ID) > MaxUpIDLen {
						t.Fatalf("UP does not round-trip: %+v %+v", x, y)
					}
				}
			case TypeResync:
				var r Resync
				if r.Decode(body) == nil {
					var q Resync
					_, body2, _, _ := Split(r.Append(nil), max)
					if q.Decode(body2) != nil || q != r {
						t.Fatalf("RESYNC does not round-trip: %+v", r)
					}
				}
			case TypeProbe:
				var p Probe
				if p.Decode(body) == nil {
					var q Probe
					_, body2, _, _ := Split(p.Append(nil), max)
					if q.Decode(body2) != nil || q != p {
						t.Fatalf("PROBE does not round-trip: %+v", p)
					}
				}
			case TypeProbeReply:
				var p ProbeReply
				if p.Decode(body) == nil {
					var q ProbeReply
					_, body2, _, _ := Split(p.Append(nil), max)
					if q.Decode(body2) != nil || q.Nonce != p.Nonce || q.Load != p.Load || !bytes.Equal(q.ID, p.ID) {
						t.Fatalf("PROBE_REPLY does not round-trip: %+v", p)
					}
				}
			case TypeUpAck:
				var x, y UpAck
				if x.Decode(body) == nil {
					roundTrip(t, x.Append(nil), &y)
					if !bytes.Equal(x.ID, y.ID) || x.Seq != y.Seq || x.Code != y.Code || x.Duplicate != y.Duplicate {
						t.Fatalf("UPACK does not round-trip: %+v %+v", x, y)
					}
				}
			}
			b = b[n:]
		}
	})
}

// roundTrip decodes the frame enc (just encoded) into d, failing the test
// when that does not work.
func roundTrip(t *testing.T, enc []byte, d interface{ Decode([]byte) error }) {
	t.Helper()
	_, body, _, err := Split(enc, 1<<20)
	if err != nil {
		t.Fatalf("re-encoded frame does not split: %v", err)
	}
	if err := d.Decode(body); err != nil {
		t.Fatalf("re-encoded frame does not decode: %v", err)
	}
}
