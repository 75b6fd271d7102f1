package wire

// Protocol comparison: herald's PUSH+ACK against the same delivery in MQTT
// 3.1.1 (PUBLISH QoS 1 + PUBACK), XMPP (a message stanza requesting a
// XEP-0184 receipt, and the receipt) and a JSON envelope carrying the same
// fields. Each side encodes and decodes with what such a system typically
// uses: a hand-written binary codec for MQTT, encoding/xml for XMPP,
// encoding/json for JSON. Payloads are printable text so XMPP and JSON need
// no base64 (which would only make them larger).
//
//	go test ./wire -run '^$' -bench Compare -benchmem
//	go test ./wire -run TestWireBytes -v   # the bytes table

import (
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"testing"
)

var comparePayloads = []int{32, 256, 2048}

func textPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// Shared message fields: a live delivery on a stream that has stored over a
// million messages (herald's seq is the stream sequence, 3 bytes here; it
// takes 4 bytes up to 2^28 and 5 beyond).
const (
	cmpChannel = "u.alice"
	cmpSeq     = 1234567
)

// --- herald ---

func heraldRoundTrip(buf []byte, payload []byte, p *Push, a *Ack) ([]byte, int, error) {
	buf = (&Push{Slot: 0, Seq: cmpSeq, Payload: payload}).Append(buf[:0]) // a live PUSH
	n := len(buf)
	_, body, _, err := Split(buf, DefaultMaxFrame)
	if err != nil {
		return buf, 0, err
	}
	if err := p.Decode(body); err != nil {
		return buf, 0, err
	}
	buf = (&Ack{Slot: p.Slot, Seq: p.Seq}).Append(buf[:0])
	n += len(buf)
	_, body, _, err = Split(buf, DefaultMaxFrame)
	if err != nil {
		return buf, 0, err
	}
	return buf, n, a.Decode(body)
}

// --- MQTT 3.1.1, QoS 1 ---

const mqttTopic = "u/alice"

func mqttAppendPublish(dst []byte, topic string, id uint16, payload []byte) []byte {
	rem := 2 + len(topic) + 2 + len(payload)
	dst = append(dst, 0x32) // PUBLISH, QoS 1
	for {                   // remaining length: 7-bit varint
		b := byte(rem % 128)
		rem /= 128
		if rem > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if rem == 0 {
			break
		}
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	dst = binary.BigEndian.AppendUint16(dst, id)
	return append(dst, payload...)
}

func mqttDecodePublish(b []byte) (topic []byte, id uint16, payload []byte, err error) {
	if len(b) < 2 || b[0]&0xf0 != 0x30 {
		return nil, 0, nil, errors.New("not PUBLISH")
	}
	rem, i, mul := 0, 1, 1
	for {
		if i >= len(b) {
			return nil, 0, nil, errors.New("short")
		}
		rem += int(b[i]&0x7f) * mul
		mul *= 128
		i++
		if b[i-1]&0x80 == 0 {
			break
		}
	}
	body := b[i:]
	if len(body) != rem || rem < 4 {
		return nil, 0, nil, errors.New("bad length")
	}
	tl := int(binary.BigEndian.Uint16(body))
	if 2+tl+2 > len(body) {
		return nil, 0, nil, errors.New("bad topic")
	}
	return body[2 : 2+tl], binary.BigEndian.Uint16(body[2+tl:]), body[4+tl:], nil
}

func mqttRoundTrip(buf []byte, payload []byte) ([]byte, int, error) {
	buf = mqttAppendPublish(buf[:0], mqttTopic, 42, payload)
	n := len(buf)
	_, id, _, err := mqttDecodePublish(buf)
	if err != nil {
		return buf, 0, err
	}
	buf = append(buf[:0], 0x40, 0x02, byte(id>>8), byte(id)) // PUBACK
	n += len(buf)
	if buf[0] != 0x40 || binary.BigEndian.Uint16(buf[2:]) != 42 {
		return buf, 0, errors.New("bad PUBACK")
	}
	return buf, n, nil
}

// --- XMPP with XEP-0184 receipts ---

type xmppMessage struct {
	XMLName xml.Name     `xml:"message"`
	To      string       `xml:"to,attr"`
	From    string       `xml:"from,attr"`
	ID      string       `xml:"id,attr"`
	Type    string       `xml:"type,attr,omitempty"`
	Body    string       `xml:"body,omitempty"`
	Request *xmppReceipt `xml:"urn:xmpp:receipts request,omitempty"`
	Receipt *xmppReceipt `xml:"urn:xmpp:receipts received,omitempty"`
}

type xmppReceipt struct {
	ID string `xml:"id,attr,omitempty"`
}

func xmppRoundTrip(payload []byte) (int, error) {
	id := strconv.Itoa(cmpSeq)
	msg, err := xml.Marshal(xmppMessage{To: "alice@push.example.com/d1", From: "push.example.com", ID: id, Type: "chat",
		Body: string(payload), Request: &xmppReceipt{}})
	if err != nil {
		return 0, err
	}
	var in xmppMessage
	if err := xml.Unmarshal(msg, &in); err != nil {
		return 0, err
	}
	ack, err := xml.Marshal(xmppMessage{To: "push.example.com", From: "alice@push.example.com/d1", ID: "r" + id,
		Receipt: &xmppReceipt{ID: in.ID}})
	if err != nil {
		return 0, err
	}
	var r xmppMessage
	if err := xml.Unmarshal(ack, &r); err != nil {
		return 0, err
	}
	if r.Receipt == nil || r.Receipt.ID != id || in.Body != string(payload) {
		return 0, errors.New("xmpp round trip lost data")
	}
	return len(msg) + len(ack), nil
}

// --- JSON envelope ---

type jsonPush struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	Time    int64  `json:"time,omitempty"`
	Expires int64  `json:"expires,omitempty"`
	Data    string `json:"data"`
}

type jsonAck struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
}

func jsonRoundTrip(payload []byte) (int, error) {
	msg, err := json.Marshal(jsonPush{Type: "push", Channel: cmpChannel, Seq: cmpSeq, Data: string(payload)})
	if err != nil {
		return 0, err
	}
	var in jsonPush
	if err := json.Unmarshal(msg, &in); err != nil {
		return 0, err
	}
	ack, err := json.Marshal(jsonAck{Type: "ack", Channel: in.Channel, Seq: in.Seq})
	if err != nil {
		return 0, err
	}
	var a jsonAck
	if err := json.Unmarshal(ack, &a); err != nil {
		return 0, err
	}
	return len(msg) + len(ack), nil
}

func wireBytes(t testing.TB, size int) (herald, mqtt, xmpp, js int) {
	payload := textPayload(size)
	var p Push
	var a Ack
	var err error
	if _, herald, err = heraldRoundTrip(nil, payload, &p, &a); err != nil {
		t.Fatal(err)
	}
	if _, mqtt, err = mqttRoundTrip(nil, payload); err != nil {
		t.Fatal(err)
	}
	if xmpp, err = xmppRoundTrip(payload); err != nil {
		t.Fatal(err)
	}
	if js, err = jsonRoundTrip(payload); err != nil {
		t.Fatal(err)
	}
	return
}

// Bytes on the wire per delivered-and-acknowledged message are exact, so
// they are a test: herald uses fewer than MQTT, and at least 50% fewer than
// XMPP for small messages (the reference system's claim: 50-70%).
func TestWireBytes(t *testing.T) {
	t.Logf("%8s %8s %8s %8s %8s %14s", "payload", "herald", "MQTT", "XMPP", "JSON", "saved vs XMPP")
	for _, size := range comparePayloads {
		h, m, x, j := wireBytes(t, size)
		saved := 100 * float64(x-h) / float64(x)
		t.Logf("%8d %8d %8d %8d %8d %13.1f%%", size, h, m, x, j, saved)
		if h >= m {
			t.Errorf("payload %d: herald %d bytes, MQTT %d", size, h, m)
		}
		if h >= j || h >= x {
			t.Errorf("payload %d: herald %d bytes is not below JSON %d and XMPP %d", size, h, j, x)
		}
		if size <= 256 && saved < 50 {
			t.Errorf("payload %d: only %.1f%% less traffic than XMPP", size, saved)
		}
	}
}

func BenchmarkCompare(b *testing.B) {
	for _, size := range comparePayloads {
		payload := textPayload(size)
		b.Run(fmt.Sprintf("herald/%d", size), func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			var p Push
			var a Ack
			b.ReportAllocs()
			var n int
			for i := 0; i < b.N; i++ {
				var err error
				if buf, n, err = heraldRoundTrip(buf, payload, &p, &a); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "wire-bytes")
		})
		b.Run(fmt.Sprintf("mqtt/%d", size), func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			var n int
			for i := 0; i < b.N; i++ {
				var err error
				if buf, n, err = mqttRoundTrip(buf, payload); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "wire-bytes")
		})
		b.Run(fmt.Sprintf("xmpp/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for i := 0; i < b.N; i++ {
				var err error
				if n, err = xmppRoundTrip(payload); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "wire-bytes")
		})
		b.Run(fmt.Sprintf("json/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for i := 0; i < b.N; i++ {
				var err error
				if n, err = jsonRoundTrip(payload); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "wire-bytes")
		})
	}
}
