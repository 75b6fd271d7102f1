package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

// The SDK reads whatever a server (or anything between it and the device)
// sends on a WebSocket: no byte sequence may panic the reader or make it
// allocate more than the bytes in front of it, and every payload byte it
// returns comes from a binary or continuation frame.
func FuzzWSStream(f *testing.F) {
	f.Add([]byte{0x82, 0x03, 'a', 'b', 'c'})                                  // binary "abc"
	f.Add([]byte{0x89, 0x02, 'h', 'i', 0x82, 0x01, 'x'})                      // ping, then binary
	f.Add([]byte{0x88, 0x00})                                                 // close
	f.Add([]byte{0x89, 0x7f, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00}) // ping claiming 2^44 bytes
	f.Add([]byte{0x82, 0x7e, 0x00, 0x05, '1', '2', '3', '4', '5'})            // 16-bit length
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 'a'})        // masked from the server
	f.Fuzz(func(t *testing.T, in []byte) {
		var pongs bytes.Buffer
		s := &wsStream{br: bufio.NewReaderSize(bytes.NewReader(in), 4096), w: &pongs}
		got, _ := io.ReadAll(s)
		if len(got) > len(in) {
			t.Fatalf("read %d payload bytes from %d bytes in", len(got), len(in))
		}
	})
}

// A control frame longer than RFC 6455's 125 bytes is refused from its
// header: a ping claiming 2^44 bytes once made the reader allocate them
// (a fatal out-of-memory in the app). Fragmented messages still read as
// one stream, with a ping between their frames answered.
func TestWSStreamChecksHeaders(t *testing.T) {
	read := func(in []byte) ([]byte, []byte, error) {
		var pongs bytes.Buffer
		s := &wsStream{br: bufio.NewReaderSize(bytes.NewReader(in), 4096), w: &pongs}
		got, err := io.ReadAll(s)
		return got, pongs.Bytes(), err
	}
	if _, _, err := read([]byte{0x89, 0x7f, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00}); !errors.Is(err, ws.ErrProtocolControlPayloadOverflow) {
		t.Fatalf("oversized ping: %v", err)
	}
	if _, _, err := read([]byte{0x82, 0x81, 1, 2, 3, 4, 'x'}); !errors.Is(err, ws.ErrProtocolMaskUnexpected) {
		t.Fatalf("masked server frame: %v", err)
	}
	if _, _, err := read([]byte{0x80, 0x01, 'x'}); !errors.Is(err, ws.ErrProtocolContinuationUnexpected) {
		t.Fatalf("continuation outside a message: %v", err)
	}
	// "ab" (not final), a ping, "c" (final continuation), then "d".
	got, pongs, err := read([]byte{0x02, 0x02, 'a', 'b', 0x89, 0x01, 'p', 0x80, 0x01, 'c', 0x82, 0x01, 'd'})
	if err != nil || string(got) != "abcd" || len(pongs) == 0 {
		t.Fatalf("fragmented message: %q, %d pong bytes, %v", got, len(pongs), err)
	}
}
