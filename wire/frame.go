// Package wire is herald's device protocol: the frame codec shared by the
// gateway and the client SDK. docs/protocol.md is its specification.
//
// A frame is a type byte, a uvarint body length and the body. Bodies are a
// fixed sequence of uvarints and length-prefixed byte strings; a decoder reads
// the fields it knows and ignores trailing bytes, so a later version may append
// fields without breaking older peers. Unknown frame types are errors.
//
// Decoders never trust a length: every length is checked against the bytes at
// hand and against the negotiated maximum frame size before anything is read.
// Decoded byte fields are views into the input buffer: copy them to keep them.
// Encoding appends to a caller's buffer; encode and decode of PUSH and ACK
// allocate nothing.
package wire

import (
	"encoding/binary"
	"errors"
)

// Version is the protocol version this package speaks.
const Version = 1

// DefaultMaxFrame is the largest frame body either side accepts unless the
// CONNACK negotiates another limit.
const DefaultMaxFrame = 64 << 10

// MaxHeaderLen is the longest a frame header (type + length) can be.
const MaxHeaderLen = 1 + binary.MaxVarintLen32

// Type is a frame type. The values are part of the protocol.
type Type uint8

// Frame types. Values 0x14..0x1f are reserved for frames later versions
// add; docs/protocol.md lists them.
const (
	TypeConnect    Type = 0x01
	TypeConnAck    Type = 0x02
	TypePush       Type = 0x03
	TypeAck        Type = 0x04
	TypePing       Type = 0x05
	TypePong       Type = 0x06
	TypeError      Type = 0x07
	TypeGoAway     Type = 0x08
	TypeSub        Type = 0x09
	TypeSubAck     Type = 0x0a
	TypeUnsub      Type = 0x0b
	TypeNotify     Type = 0x0c
	TypeSync       Type = 0x0d
	TypeRevoke     Type = 0x0e
	TypeUp         Type = 0x0f
	TypeUpAck      Type = 0x10
	TypeResync     Type = 0x11
	TypeProbe      Type = 0x12
	TypeProbeReply Type = 0x13
)

var typeNames = [...]string{
	TypeConnect:    "CONNECT",
	TypeConnAck:    "CONNACK",
	TypePush:       "PUSH",
	TypeAck:        "ACK",
	TypePing:       "PING",
	TypePong:       "PONG",
	TypeError:      "ERROR",
	TypeGoAway:     "GOAWAY",
	TypeSub:        "SUB",
	TypeSubAck:     "SUBACK",
	TypeUnsub:      "UNSUB",
	TypeNotify:     "NOTIFY",
	TypeSync:       "SYNC",
	TypeRevoke:     "REVOKE",
	TypeUp:         "UP",
	TypeUpAck:      "UPACK",
	TypeResync:     "RESYNC",
	TypeProbe:      "PROBE",
	TypeProbeReply: "PROBE_REPLY",
}

// Known reports whether t is a frame type of this version.
func (t Type) Known() bool { return int(t) < len(typeNames) && typeNames[t] != "" }

func (t Type) String() string {
	if t.Known() {
		return typeNames[t]
	}
	return "UNKNOWN"
}

// Errors returned by the decoders.
var (
	// ErrShort means the buffer holds only part of a frame: read more bytes.
	ErrShort = errors.New("wire: incomplete frame")
	// ErrTooLarge means the header announces a body over the allowed maximum.
	ErrTooLarge = errors.New("wire: frame too large")
	// ErrUnknownType means the type byte is not a frame type of this version.
	ErrUnknownType = errors.New("wire: unknown frame type")
	// ErrMalformed means a body is not a valid encoding of its frame type.
	ErrMalformed = errors.New("wire: malformed frame")
)

// Split finds the first frame in b. It returns the frame's type, its body (a
// view into b) and the number of bytes the whole frame takes. When b holds
// only part of a frame it returns ErrShort; a length over max is ErrTooLarge,
// reported as soon as the header is complete, before any body byte is read.
func Split(b []byte, max int) (t Type, body []byte, n int, err error) {
	if len(b) < 2 {
		return 0, nil, 0, ErrShort
	}
	t = Type(b[0])
	if !t.Known() {
		return t, nil, 0, ErrUnknownType
	}
	l, k := binary.Uvarint(b[1:])
	switch {
	case k == 0:
		if len(b)-1 >= binary.MaxVarintLen32 {
			return t, nil, 0, ErrMalformed
		}
		return t, nil, 0, ErrShort
	case k < 0 || k > binary.MaxVarintLen32:
		return t, nil, 0, ErrMalformed
	case l > uint64(max):
		return t, nil, 0, ErrTooLarge
	}
	n = 1 + k + int(l)
	if len(b) < n {
		return t, nil, 0, ErrShort
	}
	return t, b[1+k : n], n, nil
}

// appendHeader appends a frame header for a body of size bytes.
func appendHeader(dst []byte, t Type, size int) []byte {
	dst = append(dst, byte(t))
	return binary.AppendUvarint(dst, uint64(size))
}

// uvlen is the encoded length of v as a uvarint.
func uvlen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// blen is the encoded length of a length-prefixed byte string.
func blen(b []byte) int { return uvlen(uint64(len(b))) + len(b) }

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// reader decodes a body field by field. The first failure sticks: later
// reads return zero values and err stays ErrMalformed.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = ErrMalformed
		return 0
	}
	r.b = r.b[n:]
	return v
}

// u32 reads a uvarint that must fit in 32 bits.
func (r *reader) u32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.err = ErrMalformed
		return 0
	}
	return uint32(v)
}

// i64 reads a uvarint that must fit in an int64 (times, durations).
func (r *reader) i64() int64 {
	v := r.uvarint()
	if v > 1<<63-1 {
		r.err = ErrMalformed
		return 0
	}
	return int64(v)
}

func (r *reader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = ErrMalformed
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// bytes reads a length-prefixed byte string no longer than max.
func (r *reader) bytes(max int) []byte {
	l := r.uvarint()
	if r.err != nil {
		return nil
	}
	if l > uint64(len(r.b)) || l > uint64(max) {
		r.err = ErrMalformed
		return nil
	}
	v := r.b[:l:l]
	r.b = r.b[l:]
	return v
}

// opt reports whether another (optional, later-version) field follows.
func (r *reader) opt() bool { return r.err == nil && len(r.b) > 0 }
