package wire

import "encoding/binary"

// Field limits. A decoder refuses a frame whose field is longer.
const (
	MaxNameLen    = 128  // app, device and user names
	MaxChannelLen = 256  // channel names such as "u.alice"
	MaxTokenLen   = 4096 // CONNECT token
	MaxReasonLen  = 1024 // ERROR and GOAWAY reasons
	MaxCursors    = 1024 // cursors in one CONNECT, channels in one CONNACK
)

// Cursor is the highest sequence a device holds on a channel.
type Cursor struct {
	Channel []byte
	Seq     uint64
}

// Connect is the first frame a device sends.
//
//	version u, app b, device b, token b, heartbeat u, count u, count × (channel b, seq u)
type Connect struct {
	Version   uint32
	App       []byte
	Device    []byte
	Token     []byte
	Heartbeat uint32   // the device's current PING interval in seconds, 0 = none yet
	Cursors   []Cursor // decoding reuses the slice's capacity
}

// Size is the encoded body size.
func (f *Connect) Size() int {
	n := uvlen(uint64(f.Version)) + blen(f.App) + blen(f.Device) + blen(f.Token) +
		uvlen(uint64(f.Heartbeat)) + uvlen(uint64(len(f.Cursors)))
	for i := range f.Cursors {
		n += blen(f.Cursors[i].Channel) + uvlen(f.Cursors[i].Seq)
	}
	return n
}

// Append appends the whole frame to dst.
func (f *Connect) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeConnect, f.Size())
	dst = binary.AppendUvarint(dst, uint64(f.Version))
	dst = appendBytes(dst, f.App)
	dst = appendBytes(dst, f.Device)
	dst = appendBytes(dst, f.Token)
	dst = binary.AppendUvarint(dst, uint64(f.Heartbeat))
	dst = binary.AppendUvarint(dst, uint64(len(f.Cursors)))
	for i := range f.Cursors {
		dst = appendBytes(dst, f.Cursors[i].Channel)
		dst = binary.AppendUvarint(dst, f.Cursors[i].Seq)
	}
	return dst
}

// Decode decodes a CONNECT body.
func (f *Connect) Decode(body []byte) error {
	r := reader{b: body}
	f.Version = r.u32()
	f.App = r.bytes(MaxNameLen)
	f.Device = r.bytes(MaxNameLen)
	f.Token = r.bytes(MaxTokenLen)
	f.Heartbeat = r.u32()
	n := r.uvarint()
	if n > MaxCursors || n > uint64(len(r.b)) {
		return ErrMalformed
	}
	f.Cursors = f.Cursors[:0]
	for i := uint64(0); i < n && r.err == nil; i++ {
		c := Cursor{Channel: r.bytes(MaxChannelLen)}
		c.Seq = r.uvarint()
		f.Cursors = append(f.Cursors, c)
	}
	return r.err
}

// Channel binds a slot number to a channel name for one connection.
type Channel struct {
	Slot uint32
	Name []byte
	Seq  uint64 // where delivery on this channel starts (the cursor in use)
}

// ConnAck accepts a CONNECT.
//
//	version u, hb-min u, hb-max u, hb-interval u, max-frame u, count u, count × (slot u, name b, seq u)
type ConnAck struct {
	Version      uint32
	HeartbeatMin uint32 // seconds: the device must not PING more often
	HeartbeatMax uint32 // seconds: the server closes a device silent for longer (plus grace)
	Heartbeat    uint32 // seconds: the interval to start with
	MaxFrame     uint32 // the largest frame body the server accepts
	Channels     []Channel
}

// Size is the encoded body size.
func (f *ConnAck) Size() int {
	n := uvlen(uint64(f.Version)) + uvlen(uint64(f.HeartbeatMin)) + uvlen(uint64(f.HeartbeatMax)) +
		uvlen(uint64(f.Heartbeat)) + uvlen(uint64(f.MaxFrame)) + uvlen(uint64(len(f.Channels)))
	for i := range f.Channels {
		n += uvlen(uint64(f.Channels[i].Slot)) + blen(f.Channels[i].Name) + uvlen(f.Channels[i].Seq)
	}
	return n
}

// Append appends the whole frame to dst.
func (f *ConnAck) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeConnAck, f.Size())
	dst = binary.AppendUvarint(dst, uint64(f.Version))
	dst = binary.AppendUvarint(dst, uint64(f.HeartbeatMin))
	dst = binary.AppendUvarint(dst, uint64(f.HeartbeatMax))
	dst = binary.AppendUvarint(dst, uint64(f.Heartbeat))
	dst = binary.AppendUvarint(dst, uint64(f.MaxFrame))
	dst = binary.AppendUvarint(dst, uint64(len(f.Channels)))
	for i := range f.Channels {
		dst = binary.AppendUvarint(dst, uint64(f.Channels[i].Slot))
		dst = appendBytes(dst, f.Channels[i].Name)
		dst = binary.AppendUvarint(dst, f.Channels[i].Seq)
	}
	return dst
}

// Decode decodes a CONNACK body.
func (f *ConnAck) Decode(body []byte) error {
	r := reader{b: body}
	f.Version = r.u32()
	f.HeartbeatMin = r.u32()
	f.HeartbeatMax = r.u32()
	f.Heartbeat = r.u32()
	f.MaxFrame = r.u32()
	n := r.uvarint()
	if n > MaxCursors || n > uint64(len(r.b)) {
		return ErrMalformed
	}
	f.Channels = f.Channels[:0]
	for i := uint64(0); i < n && r.err == nil; i++ {
		c := Channel{Slot: r.u32()}
		c.Name = r.bytes(MaxChannelLen)
		c.Seq = r.uvarint()
		f.Channels = append(f.Channels, c)
	}
	return r.err
}

// Push flags. Bits 1 and 2 say which optional fields are present; a
// receiver ignores flag bits it does not know.
const (
	// FlagReplay marks a message sent from the store (catch-up) rather than live.
	FlagReplay = 1 << 0
	// FlagTime: the time field is present.
	FlagTime = 1 << 1
	// FlagExpires: the expires field is present.
	FlagExpires = 1 << 2
)

// Push carries one message to the device. The payload is the rest of the
// body: it has no length of its own.
//
//	slot u, seq u, flags 1, [time u if FlagTime], [expires u if FlagExpires], payload (rest)
//
// Append sets FlagTime when Time is not 0 and FlagExpires when Expires is
// not 0; Decode sets Time and Expires to 0 when absent. Gateways send time
// on replayed messages (stored earlier) and omit it on live ones (stored
// just now), which keeps a live PUSH smaller than MQTT's PUBLISH.
type Push struct {
	Slot    uint32
	Seq     uint64
	Flags   uint8
	Time    int64 // unix ms when stored; 0 = not sent
	Expires int64 // unix ms when it expires; 0 = never
	Payload []byte
}

func (f *Push) flags() uint8 {
	fl := f.Flags &^ (FlagTime | FlagExpires)
	if f.Time != 0 {
		fl |= FlagTime
	}
	if f.Expires != 0 {
		fl |= FlagExpires
	}
	return fl
}

// Size is the encoded body size.
func (f *Push) Size() int {
	n := uvlen(uint64(f.Slot)) + uvlen(f.Seq) + 1 + len(f.Payload)
	if f.Time != 0 {
		n += uvlen(uint64(f.Time))
	}
	if f.Expires != 0 {
		n += uvlen(uint64(f.Expires))
	}
	return n
}

// Append appends the whole frame to dst.
func (f *Push) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypePush, f.Size())
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	dst = binary.AppendUvarint(dst, f.Seq)
	dst = append(dst, f.flags())
	if f.Time != 0 {
		dst = binary.AppendUvarint(dst, uint64(f.Time))
	}
	if f.Expires != 0 {
		dst = binary.AppendUvarint(dst, uint64(f.Expires))
	}
	return append(dst, f.Payload...)
}

// Decode decodes a PUSH body.
func (f *Push) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.Seq = r.uvarint()
	f.Flags = r.byte1()
	f.Time, f.Expires = 0, 0
	if f.Flags&FlagTime != 0 {
		f.Time = r.i64()
	}
	if f.Flags&FlagExpires != 0 {
		f.Expires = r.i64()
	}
	f.Payload = r.b[:len(r.b):len(r.b)]
	return r.err
}

// Ack acknowledges every message on a channel up to and including Seq.
//
//	slot u, seq u
type Ack struct {
	Slot uint32
	Seq  uint64
}

// Size is the encoded body size.
func (f *Ack) Size() int { return uvlen(uint64(f.Slot)) + uvlen(f.Seq) }

// Append appends the whole frame to dst.
func (f *Ack) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeAck, f.Size())
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	return binary.AppendUvarint(dst, f.Seq)
}

// Decode decodes an ACK body.
func (f *Ack) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.Seq = r.uvarint()
	return r.err
}

// Ping is the device's heartbeat; Interval tells the server the device's
// current PING interval in seconds so its idle deadline can follow.
//
//	interval u (optional)
type Ping struct{ Interval uint32 }

// Append appends the whole frame to dst.
func (f *Ping) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypePing, uvlen(uint64(f.Interval)))
	return binary.AppendUvarint(dst, uint64(f.Interval))
}

// Decode decodes a PING body; an empty body is a PING without an interval.
func (f *Ping) Decode(body []byte) error {
	r := reader{b: body}
	f.Interval = 0
	if r.opt() {
		f.Interval = r.u32()
	}
	return r.err
}

// AppendPong appends a PONG frame (empty body in version 1).
func AppendPong(dst []byte) []byte { return appendHeader(dst, TypePong, 0) }

// Error tells the peer why it is about to be closed.
//
//	code u, reason b
type Error struct {
	Code   Code
	Reason []byte
}

// Append appends the whole frame to dst.
func (f *Error) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeError, uvlen(uint64(f.Code))+blen(f.Reason))
	dst = binary.AppendUvarint(dst, uint64(f.Code))
	return appendBytes(dst, f.Reason)
}

// Decode decodes an ERROR body.
func (f *Error) Decode(body []byte) error {
	r := reader{b: body}
	f.Code = Code(r.u32())
	f.Reason = r.bytes(MaxReasonLen)
	return r.err
}

// GoAway asks the device to reconnect, to another gateway if it can, after
// waiting Delay milliseconds (plus its own jitter).
//
//	code u, delay-ms u, reason b
type GoAway struct {
	Code   Code
	Delay  uint32
	Reason []byte
}

// Append appends the whole frame to dst.
func (f *GoAway) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeGoAway, uvlen(uint64(f.Code))+uvlen(uint64(f.Delay))+blen(f.Reason))
	dst = binary.AppendUvarint(dst, uint64(f.Code))
	dst = binary.AppendUvarint(dst, uint64(f.Delay))
	return appendBytes(dst, f.Reason)
}

// Decode decodes a GOAWAY body.
func (f *GoAway) Decode(body []byte) error {
	r := reader{b: body}
	f.Code = Code(r.u32())
	f.Delay = r.u32()
	f.Reason = r.bytes(MaxReasonLen)
	return r.err
}
