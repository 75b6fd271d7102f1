package wire

import (
	"bytes"
	"errors"
	"testing"
)

// TestDeliveryFramesRoundTrip encodes every delivery frame, decodes it and
// checks each field, then checks that every truncation of its body is
// refused rather than misread.
func TestDeliveryFramesRoundTrip(t *testing.T) {
	type codec interface {
		Append([]byte) []byte
		Decode([]byte) error
	}
	type tc struct {
		typ     Type
		in, out codec
		same    func() bool
	}
	var cases []tc
	add := func(typ Type, in, out codec, same func() bool) { cases = append(cases, tc{typ, in, out, same}) }
	sub, sub2 := &Sub{Channel: []byte("t.news"), Seq: 1 << 33}, &Sub{}
	add(TypeSub, sub, sub2, func() bool { return bytes.Equal(sub.Channel, sub2.Channel) && sub.Seq == sub2.Seq })
	sa, sa2 := &SubAck{Slot: 7, Channel: []byte("t.news"), Seq: 99, Code: CodeBadChannel}, &SubAck{}
	add(TypeSubAck, sa, sa2, func() bool {
		return sa.Slot == sa2.Slot && bytes.Equal(sa.Channel, sa2.Channel) && sa.Seq == sa2.Seq && sa.Code == sa2.Code
	})
	un, un2 := &Unsub{Channel: []byte("t.sports")}, &Unsub{}
	add(TypeUnsub, un, un2, func() bool { return bytes.Equal(un.Channel, un2.Channel) })
	no, no2 := &Notify{Slot: 1, Seq: 5000, Pending: 4321}, &Notify{}
	add(TypeNotify, no, no2, func() bool { return *no == *no2 })
	sy, sy2 := &Sync{Slot: 2, From: 17, Max: 500}, &Sync{}
	add(TypeSync, sy, sy2, func() bool { return *sy == *sy2 })
	rv, rv2 := &Revoke{Slot: 3, Seq: 1 << 50}, &Revoke{}
	add(TypeRevoke, rv, rv2, func() bool { return *rv == *rv2 })
	up, up2 := &Up{ID: []byte("order-42"), Payload: []byte(`{"liked":true}`)}, &Up{}
	add(TypeUp, up, up2, func() bool { return bytes.Equal(up.ID, up2.ID) && bytes.Equal(up.Payload, up2.Payload) })
	ua, ua2 := &UpAck{ID: []byte("order-42"), Seq: 8, Duplicate: true}, &UpAck{}
	add(TypeUpAck, ua, ua2, func() bool {
		return bytes.Equal(ua.ID, ua2.ID) && ua.Seq == ua2.Seq && ua.Code == ua2.Code && ua.Duplicate == ua2.Duplicate
	})

	for _, c := range cases {
		b := c.in.Append(nil)
		typ, body := decodeOne(t, b)
		if typ != c.typ {
			t.Fatalf("%v encoded as %v", c.typ, typ)
		}
		if err := c.out.Decode(body); err != nil {
			t.Fatalf("%v: %v", c.typ, err)
		}
		if !c.same() {
			t.Fatalf("%v does not round-trip: %+v -> %+v", c.typ, c.in, c.out)
		}
		if c.typ == TypeUp {
			continue // the payload is the rest: any cut after the id is a shorter payload
		}
		for n := 0; n < len(body); n++ {
			if err := c.out.Decode(body[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v cut to %d of %d bytes: err %v, want ErrMalformed", c.typ, n, len(body), err)
			}
		}
	}
}

func TestUpRefusesEmptyAndLongIDs(t *testing.T) {
	var u Up
	_, body := decodeOne(t, (&Up{ID: nil, Payload: []byte("x")}).Append(nil))
	if err := u.Decode(body); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty id: %v", err)
	}
	_, body = decodeOne(t, (&Up{ID: bytes.Repeat([]byte("a"), MaxUpIDLen+1)}).Append(nil))
	if err := u.Decode(body); !errors.Is(err, ErrMalformed) {
		t.Fatalf("long id: %v", err)
	}
}

func TestDeliveryDecodeAllocatesNothing(t *testing.T) {
	n := (&Notify{Slot: 1, Seq: 5000, Pending: 10}).Append(nil)
	s := (&Sync{Slot: 1, From: 7, Max: 500}).Append(nil)
	r := (&Revoke{Slot: 0, Seq: 12}).Append(nil)
	_, nb := decodeOne(t, n)
	_, sb := decodeOne(t, s)
	_, rb := decodeOne(t, r)
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(200, func() {
		var a Notify
		var b Sync
		var c Revoke
		_ = a.Decode(nb)
		_ = b.Decode(sb)
		_ = c.Decode(rb)
		buf = c.Append(a.Append(buf[:0]))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per NOTIFY/SYNC/REVOKE decode+encode", allocs)
	}
}
