package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// decodeOne splits exactly one frame from b and returns its type and body.
func decodeOne(t *testing.T, b []byte) (Type, []byte) {
	t.Helper()
	typ, body, n, err := Split(b, DefaultMaxFrame)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	if n != len(b) {
		t.Fatalf("Split consumed %d of %d bytes", n, len(b))
	}
	return typ, body
}

func TestPushRoundTrip(t *testing.T) {
	in := Push{Slot: 3, Seq: 1 << 40, Flags: FlagReplay, Time: 1_700_000_000_123, Expires: 1_700_000_360_000, Payload: []byte("hello")}
	b := in.Append(nil)
	typ, body := decodeOne(t, b)
	if typ != TypePush {
		t.Fatalf("type %v", typ)
	}
	var out Push
	if err := out.Decode(body); err != nil {
		t.Fatal(err)
	}
	if out.Slot != in.Slot || out.Seq != in.Seq || out.Flags != in.Flags|FlagTime|FlagExpires || out.Time != in.Time ||
		out.Expires != in.Expires || !bytes.Equal(out.Payload, in.Payload) {
		t.Fatalf("got %+v want %+v", out, in)
	}
	if got := len(b); got != 1+1+in.Size() {
		t.Fatalf("frame is %d bytes, Size says body %d", got, in.Size())
	}
}

func TestConnectRoundTrip(t *testing.T) {
	in := Connect{Version: Version, App: []byte("demo"), Device: []byte("d1"), Token: []byte("a.b.c"), Heartbeat: 30,
		Cursors: []Cursor{{Channel: []byte("u.alice"), Seq: 17}, {Channel: []byte("t.news"), Seq: 0}}}
	_, body := decodeOne(t, in.Append(nil))
	var out Connect
	if err := out.Decode(body); err != nil {
		t.Fatal(err)
	}
	if out.Version != Version || string(out.App) != "demo" || string(out.Device) != "d1" || string(out.Token) != "a.b.c" ||
		out.Heartbeat != 30 || len(out.Cursors) != 2 || string(out.Cursors[0].Channel) != "u.alice" || out.Cursors[0].Seq != 17 {
		t.Fatalf("got %+v", out)
	}
}

func TestConnAckRoundTrip(t *testing.T) {
	in := ConnAck{Version: 1, HeartbeatMin: 10, HeartbeatMax: 600, Heartbeat: 30, MaxFrame: 4096,
		Channels: []Channel{{Slot: 0, Name: []byte("u.alice"), Seq: 9}}}
	_, body := decodeOne(t, in.Append(nil))
	var out ConnAck
	if err := out.Decode(body); err != nil {
		t.Fatal(err)
	}
	if out.HeartbeatMax != 600 || out.MaxFrame != 4096 || len(out.Channels) != 1 || string(out.Channels[0].Name) != "u.alice" || out.Channels[0].Seq != 9 {
		t.Fatalf("got %+v", out)
	}
}

// A live PUSH (no time, no expiry) and an empty payload are valid.
func TestPushOptionalFields(t *testing.T) {
	var p Push
	_, body := decodeOne(t, (&Push{Slot: 1, Seq: 9}).Append(nil))
	if err := p.Decode(body); err != nil || p.Seq != 9 || p.Time != 0 || p.Expires != 0 || len(p.Payload) != 0 || p.Flags != 0 {
		t.Fatalf("%+v %v", p, err)
	}
	_, body = decodeOne(t, (&Push{Seq: 9, Expires: 77, Payload: []byte("x")}).Append(nil))
	if err := p.Decode(body); err != nil || p.Time != 0 || p.Expires != 77 || string(p.Payload) != "x" {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestSmallFramesRoundTrip(t *testing.T) {
	var a Ack
	_, body := decodeOne(t, (&Ack{Slot: 1, Seq: 99}).Append(nil))
	if err := a.Decode(body); err != nil || a.Slot != 1 || a.Seq != 99 {
		t.Fatalf("ack %+v %v", a, err)
	}
	var p Ping
	_, body = decodeOne(t, (&Ping{Interval: 45}).Append(nil))
	if err := p.Decode(body); err != nil || p.Interval != 45 {
		t.Fatalf("ping %+v %v", p, err)
	}
	if err := p.Decode(nil); err != nil || p.Interval != 0 {
		t.Fatalf("empty ping %+v %v", p, err)
	}
	typ, body := decodeOne(t, AppendPong(nil))
	if typ != TypePong || len(body) != 0 {
		t.Fatalf("pong %v %v", typ, body)
	}
	var e Error
	_, body = decodeOne(t, (&Error{Code: CodeTokenExpired, Reason: []byte("expired")}).Append(nil))
	if err := e.Decode(body); err != nil || e.Code != CodeTokenExpired || string(e.Reason) != "expired" {
		t.Fatalf("error %+v %v", e, err)
	}
	var g GoAway
	_, body = decodeOne(t, (&GoAway{Code: CodeShutdown, Delay: 250, Reason: []byte("bye")}).Append(nil))
	if err := g.Decode(body); err != nil || g.Code != CodeShutdown || g.Delay != 250 || string(g.Reason) != "bye" {
		t.Fatalf("goaway %+v %v", g, err)
	}
}

// Later versions may append fields: decoders must skip them.
func TestTrailingFieldsSkipped(t *testing.T) {
	f := Ack{Slot: 2, Seq: 5}
	body := append(f.Append(nil)[2:], 0x07, 0x01, 'x')
	var a Ack
	if err := a.Decode(body); err != nil || a.Seq != 5 {
		t.Fatalf("%+v %v", a, err)
	}
}

func TestSplitStreaming(t *testing.T) {
	var buf []byte
	for i := 0; i < 10; i++ {
		buf = (&Push{Slot: 0, Seq: uint64(i + 1), Payload: bytes.Repeat([]byte{'a'}, i*30)}).Append(buf)
	}
	// Feed the stream one byte at a time: every prefix is either ErrShort or a whole frame.
	var got []uint64
	var pending []byte
	for _, c := range buf {
		pending = append(pending, c)
		for {
			typ, body, n, err := Split(pending, DefaultMaxFrame)
			if errors.Is(err, ErrShort) {
				break
			}
			if err != nil || typ != TypePush {
				t.Fatalf("split: %v %v", typ, err)
			}
			var p Push
			if err := p.Decode(body); err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Seq)
			pending = pending[n:]
		}
	}
	if len(got) != 10 || got[9] != 10 || len(pending) != 0 {
		t.Fatalf("got %v, %d left", got, len(pending))
	}
}

func TestSplitErrors(t *testing.T) {
	f := func(name string, in []byte, max int, want error) {
		t.Helper()
		if _, _, _, err := Split(in, max); !errors.Is(err, want) {
			t.Errorf("%s: got %v want %v", name, err, want)
		}
	}
	f("empty", nil, 100, ErrShort)
	f("type only", []byte{byte(TypePush)}, 100, ErrShort)
	f("type zero", []byte{0x00, 0x00}, 100, ErrUnknownType)
	f("reserved type", []byte{0x14, 0x00}, 100, ErrUnknownType)
	f("high type", []byte{0xff, 0x00}, 100, ErrUnknownType)
	f("length over max", []byte{byte(TypePush), 0x80, 0x01}, 100, ErrTooLarge)
	f("huge length", []byte{byte(TypePush), 0xff, 0xff, 0xff, 0xff, 0x0f}, DefaultMaxFrame, ErrTooLarge)
	f("length varint too long", []byte{byte(TypePush), 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, DefaultMaxFrame, ErrMalformed)
	f("length varint unterminated", []byte{byte(TypePush), 0x80, 0x80, 0x80, 0x80, 0x80}, DefaultMaxFrame, ErrMalformed)
	f("body short", []byte{byte(TypeAck), 0x03, 0x01}, 100, ErrShort)
}

func TestDecodeMalformed(t *testing.T) {
	f := func(name string, body []byte, dec func([]byte) error) {
		t.Helper()
		if err := dec(body); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	var p Push
	var a Ack
	var c Connect
	var ca ConnAck
	var e Error
	f("push empty", nil, p.Decode)
	f("push without flags", []byte{0x00, 0x01}, p.Decode)
	f("push time flag without time", []byte{0x00, 0x01, FlagTime}, p.Decode)
	f("push expires flag with unterminated expires", []byte{0x00, 0x01, FlagExpires, 0xff}, p.Decode)
	f("push slot over 32 bits", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01, 0, 0, 0, 0}, p.Decode)
	f("ack empty", nil, a.Decode)
	f("ack seq unterminated", []byte{0x00, 0xff}, a.Decode)
	f("connect app too long", append([]byte{0x01, 0x81, 0x02}, make([]byte, 129)...), c.Decode)
	f("connect cursor count lies", []byte{0x01, 0x00, 0x00, 0x00, 0x00, 0x7f}, c.Decode)
	f("connect cursor count huge", []byte{0x01, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f}, c.Decode)
	f("connack truncated", []byte{0x01, 0x01}, ca.Decode)
	f("error reason past end", []byte{0x01, 0x09, 'x'}, e.Decode)
}

func TestCodes(t *testing.T) {
	for _, c := range Codes() {
		if c.String() == "unknown" {
			t.Errorf("code %d has no name", c)
		}
		if c.Retry() == c.Auth() && c >= 2000 {
			t.Errorf("code %d is both or neither retry and auth", c)
		}
	}
	if !CodeSlowConsumer.Retry() || CodeMalformed.Retry() || !CodeTokenExpired.Auth() {
		t.Fatal("code ranges wrong")
	}
}

func TestReadFrame(t *testing.T) {
	var stream []byte
	stream = (&Push{Seq: 1, Payload: []byte("one")}).Append(stream)
	stream = (&Ack{Seq: 1}).Append(stream)
	stream = (&Push{Seq: 2, Payload: bytes.Repeat([]byte{'z'}, 3000)}).Append(stream)
	r := bufio.NewReaderSize(bytes.NewReader(stream), 16)
	var buf []byte
	var typ Type
	var body []byte
	var err error
	want := []Type{TypePush, TypeAck, TypePush}
	for i, w := range want {
		typ, body, buf, err = ReadFrame(r, buf, DefaultMaxFrame)
		if err != nil || typ != w {
			t.Fatalf("frame %d: %v %v", i, typ, err)
		}
	}
	var p Push
	if err := p.Decode(body); err != nil || p.Seq != 2 || len(p.Payload) != 3000 {
		t.Fatalf("%+v %v", p, err)
	}
	if _, _, _, err = ReadFrame(r, buf, DefaultMaxFrame); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
	f := func(name string, in []byte, want error) {
		t.Helper()
		_, _, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(in)), nil, 100)
		if !errors.Is(err, want) {
			t.Errorf("%s: got %v want %v", name, err, want)
		}
	}
	f("too large", []byte{byte(TypePush), 0xe5, 0x00}, ErrTooLarge)
	f("unknown", []byte{0x77, 0x00}, ErrUnknownType)
	f("varint too long", []byte{byte(TypePush), 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMalformed)
	f("truncated header", []byte{byte(TypePush), 0x80}, io.ErrUnexpectedEOF)
	f("truncated body", []byte{byte(TypePush), 0x05, 0x01}, io.ErrUnexpectedEOF)
}
