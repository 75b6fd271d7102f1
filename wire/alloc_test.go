//go:build !race

package wire

import "testing"

// PUSH and ACK are the hot path: encoding into a reused buffer and decoding
// must not allocate.
func TestPushAckZeroAlloc(t *testing.T) {
	buf := make([]byte, 0, 1024)
	payload := []byte("a message of a typical size for a push notification")
	var p Push
	var a Ack
	n := testing.AllocsPerRun(1000, func() {
		buf = (&Push{Slot: 1, Seq: 123456, Time: 1_700_000_000_000, Payload: payload}).Append(buf[:0])
		_, body, _, err := Split(buf, DefaultMaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Decode(body); err != nil {
			t.Fatal(err)
		}
		buf = (&Ack{Slot: 1, Seq: p.Seq}).Append(buf[:0])
		_, body, _, err = Split(buf, DefaultMaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Decode(body); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("PUSH+ACK encode/decode allocates %v times per run", n)
	}
}
