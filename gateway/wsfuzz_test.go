package gateway

import (
	"encoding/binary"
	"testing"
)

// FuzzParseWSHeader feeds arbitrary bytes to the WebSocket frame header
// parser: it must never panic, never accept a frame over max or an
// unmasked one, and never claim more header than it was given.
func FuzzParseWSHeader(f *testing.F) {
	f.Add([]byte{0x82, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0, 1, 2, 3, 4})
	f.Add([]byte{0x88, 0x82, 1, 2, 3, 4, 0x03, 0xe8})
	f.Add([]byte{0x09, 0x80, 1, 2, 3, 4})
	f.Add([]byte{0x81, 0x80, 1, 2, 3, 4})
	f.Add([]byte{0xc2, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 4096
		h, n, ok, err := parseWSHeader(data, max)
		if err != nil || !ok {
			return
		}
		if n > len(data) || n < 6 || n > 14 {
			t.Fatalf("header length %d of %d bytes", n, len(data))
		}
		if h.length > max {
			t.Fatalf("accepted a frame of %d bytes", h.length)
		}
		if data[1]&0x80 == 0 {
			t.Fatal("accepted an unmasked frame")
		}
		if h.op >= wsClose && (data[0]&0x80 == 0 || h.length > 125) {
			t.Fatal("accepted a fragmented or long control frame")
		}
		if l := data[1] & 0x7f; l == 126 && uint64(binary.BigEndian.Uint16(data[2:])) != h.length {
			t.Fatal("16-bit length misread")
		}
	})
}
