package wire

import "encoding/binary"

// MaxUpIDLen is the longest UP id.
const MaxUpIDLen = 128

// Sub asks the server to deliver a topic channel ("t.<topic>") on this
// connection, after Seq (0: resume from the device's cursor kept by the
// server, or from the topic's newest message when there is none).
//
//	channel b, seq u
type Sub struct {
	Channel []byte
	Seq     uint64
}

// Append appends the whole frame to dst.
func (f *Sub) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeSub, blen(f.Channel)+uvlen(f.Seq))
	dst = appendBytes(dst, f.Channel)
	return binary.AppendUvarint(dst, f.Seq)
}

// Decode decodes a SUB body.
func (f *Sub) Decode(body []byte) error {
	r := reader{b: body}
	f.Channel = r.bytes(MaxChannelLen)
	f.Seq = r.uvarint()
	return r.err
}

// SubAck answers a SUB, or tells the device about a channel the server
// subscribed it to. Code 0: Slot now carries Channel, delivered after Seq.
// Any other code: the subscription was refused (Slot is 0 and unused).
//
//	slot u, channel b, seq u, code u
type SubAck struct {
	Slot    uint32
	Channel []byte
	Seq     uint64
	Code    Code
}

// Append appends the whole frame to dst.
func (f *SubAck) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeSubAck, uvlen(uint64(f.Slot))+blen(f.Channel)+uvlen(f.Seq)+uvlen(uint64(f.Code)))
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	dst = appendBytes(dst, f.Channel)
	dst = binary.AppendUvarint(dst, f.Seq)
	return binary.AppendUvarint(dst, uint64(f.Code))
}

// Decode decodes a SUBACK body.
func (f *SubAck) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.Channel = r.bytes(MaxChannelLen)
	f.Seq = r.uvarint()
	f.Code = Code(r.u32())
	return r.err
}

// Unsub stops delivery of a topic channel on this connection. The slot is
// not reused on the connection: a PUSH still in flight for it can be
// recognised and dropped.
//
//	channel b
type Unsub struct{ Channel []byte }

// Append appends the whole frame to dst.
func (f *Unsub) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeUnsub, blen(f.Channel))
	return appendBytes(dst, f.Channel)
}

// Decode decodes an UNSUB body.
func (f *Unsub) Decode(body []byte) error {
	r := reader{b: body}
	f.Channel = r.bytes(MaxChannelLen)
	return r.err
}

// Notify tells the device that messages up to Seq wait on a channel and are
// not sent inline (a large backlog, or a payload over the inline limit):
// the device pulls them with SYNC when it is ready. Pending is the server's
// count of waiting messages (a hint).
//
//	slot u, seq u, pending u
type Notify struct {
	Slot    uint32
	Seq     uint64
	Pending uint64
}

// Append appends the whole frame to dst.
func (f *Notify) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeNotify, uvlen(uint64(f.Slot))+uvlen(f.Seq)+uvlen(f.Pending))
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	dst = binary.AppendUvarint(dst, f.Seq)
	return binary.AppendUvarint(dst, f.Pending)
}

// Decode decodes a NOTIFY body.
func (f *Notify) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.Seq = r.uvarint()
	f.Pending = r.uvarint()
	return r.err
}

// Sync asks for up to Max stored messages of a channel with seq >= From.
// The server answers with PUSH frames (flag replay), then NOTIFY when more
// are waiting; when none are, the channel is live again.
//
//	slot u, from u, max u
type Sync struct {
	Slot uint32
	From uint64
	Max  uint32
}

// Append appends the whole frame to dst.
func (f *Sync) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeSync, uvlen(uint64(f.Slot))+uvlen(f.From)+uvlen(uint64(f.Max)))
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	dst = binary.AppendUvarint(dst, f.From)
	return binary.AppendUvarint(dst, uint64(f.Max))
}

// Decode decodes a SYNC body.
func (f *Sync) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.From = r.uvarint()
	f.Max = r.u32()
	return r.err
}

// Revoke tells the device that a message it received was recalled: it
// should remove it from view.
//
//	slot u, seq u
type Revoke struct {
	Slot uint32
	Seq  uint64
}

// Append appends the whole frame to dst.
func (f *Revoke) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeRevoke, uvlen(uint64(f.Slot))+uvlen(f.Seq))
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	return binary.AppendUvarint(dst, f.Seq)
}

// Decode decodes a REVOKE body.
func (f *Revoke) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.Seq = r.uvarint()
	return r.err
}

// Resync tells the device that the server rewinds a channel on operator
// request (herald ctl replay): PUSHes from seq From on follow, some of
// which the device already handled. The device moves its cursor of the
// slot back to From-1 so its duplicate filter lets them through.
//
//	slot u, from u
type Resync struct {
	Slot uint32
	From uint64
}

// Append appends the whole frame to dst.
func (f *Resync) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeResync, uvlen(uint64(f.Slot))+uvlen(f.From))
	dst = binary.AppendUvarint(dst, uint64(f.Slot))
	return binary.AppendUvarint(dst, f.From)
}

// Decode decodes a RESYNC body.
func (f *Resync) Decode(body []byte) error {
	r := reader{b: body}
	f.Slot = r.u32()
	f.From = r.uvarint()
	if r.err == nil && f.From == 0 {
		return ErrMalformed
	}
	return r.err
}

// Probe asks a gateway, before CONNECT, how soon it would serve: a device
// probes several gateways at once and keeps the connection of the first
// PROBE_REPLY. Nonce is echoed.
//
//	nonce u
type Probe struct{ Nonce uint64 }

// Append appends the whole frame to dst.
func (f *Probe) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeProbe, uvlen(f.Nonce))
	return binary.AppendUvarint(dst, f.Nonce)
}

// Decode decodes a PROBE body.
func (f *Probe) Decode(body []byte) error {
	r := reader{b: body}
	f.Nonce = r.uvarint()
	return r.err
}

// ProbeReply answers PROBE — late when the gateway is loaded: the delay is
// what steers devices to idle gateways. Load is connections per thousand
// of the gateway's capacity; ID names the gateway.
//
//	nonce u, load u32, id b
type ProbeReply struct {
	Nonce uint64
	Load  uint32
	ID    []byte
}

// Append appends the whole frame to dst.
func (f *ProbeReply) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeProbeReply, uvlen(f.Nonce)+uvlen(uint64(f.Load))+uvlen(uint64(len(f.ID)))+len(f.ID))
	dst = binary.AppendUvarint(dst, f.Nonce)
	dst = binary.AppendUvarint(dst, uint64(f.Load))
	dst = binary.AppendUvarint(dst, uint64(len(f.ID)))
	return append(dst, f.ID...)
}

// Decode decodes a PROBE_REPLY body.
func (f *ProbeReply) Decode(body []byte) error {
	r := reader{b: body}
	f.Nonce = r.uvarint()
	f.Load = r.u32()
	f.ID = r.bytes(MaxNameLen)
	return r.err
}

// Up is a message from the device to its app's backend. ID is the device's
// idempotency key: a retried UP with the same id is stored once. The payload
// is the rest of the body.
//
//	id b, payload (rest)
type Up struct {
	ID      []byte
	Payload []byte
}

// Append appends the whole frame to dst.
func (f *Up) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeUp, blen(f.ID)+len(f.Payload))
	dst = appendBytes(dst, f.ID)
	return append(dst, f.Payload...)
}

// Decode decodes an UP body.
func (f *Up) Decode(body []byte) error {
	r := reader{b: body}
	f.ID = r.bytes(MaxUpIDLen)
	if r.err == nil && len(f.ID) == 0 {
		r.err = ErrMalformed
	}
	f.Payload = r.b[:len(r.b):len(r.b)]
	return r.err
}

// UpAck answers an UP once the store acknowledged it (Code 0, Seq its
// sequence on the upstream stream, Duplicate set for a retried id), or says
// it was not stored (Code is a transient code: retry with the same id).
//
//	id b, seq u, code u, duplicate 1
type UpAck struct {
	ID        []byte
	Seq       uint64
	Code      Code
	Duplicate bool
}

// Append appends the whole frame to dst.
func (f *UpAck) Append(dst []byte) []byte {
	dst = appendHeader(dst, TypeUpAck, blen(f.ID)+uvlen(f.Seq)+uvlen(uint64(f.Code))+1)
	dst = appendBytes(dst, f.ID)
	dst = binary.AppendUvarint(dst, f.Seq)
	dst = binary.AppendUvarint(dst, uint64(f.Code))
	if f.Duplicate {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// Decode decodes an UPACK body.
func (f *UpAck) Decode(body []byte) error {
	r := reader{b: body}
	f.ID = r.bytes(MaxUpIDLen)
	f.Seq = r.uvarint()
	f.Code = Code(r.u32())
	f.Duplicate = r.byte1() == 1
	return r.err
}
