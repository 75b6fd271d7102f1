package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// isWebSocket reports whether addr names a WebSocket endpoint (ws:// or wss://).
func isWebSocket(addr string) bool {
	return strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://")
}

// dialWS opens a WebSocket to url and returns the connection with a reader
// of the byte stream its binary messages carry, and a writer that sends each
// Write as one binary message.
func dialWS(ctx context.Context, url string, dial func(ctx context.Context, network, addr string) (net.Conn, error), tlsCfg *tls.Config) (net.Conn, io.Reader, io.Writer, error) {
	d := ws.Dialer{NetDial: dial, TLSConfig: tlsCfg}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("client: websocket: %w", err)
	}
	var src io.Reader = nc
	if br != nil {
		src = io.MultiReader(br, nc)
	}
	s := &wsStream{br: bufio.NewReaderSize(src, 4096), w: nc}
	return nc, s, wsWriter{nc}, nil
}

// wsStream reads the payloads of binary messages as one stream, answering
// pings and ending at a Close.
type wsStream struct {
	br         *bufio.Reader
	w          io.Writer
	remaining  int64
	fragmented bool // inside a message whose last frame has not come
}

func (s *wsStream) Read(p []byte) (int, error) {
	for s.remaining == 0 {
		h, err := ws.ReadHeader(s.br)
		if err != nil {
			return 0, err
		}
		// RFC 6455's rules before anything is read or allocated: control
		// frames of at most 125 bytes (a ping claiming terabytes would
		// otherwise be allocated), nothing masked from a server, no
		// reserved bits or opcodes, continuations only inside a message.
		state := ws.StateClientSide
		if s.fragmented {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return 0, fmt.Errorf("client: websocket: %w", err)
		}
		switch h.OpCode {
		case ws.OpBinary, ws.OpContinuation:
			s.remaining = h.Length
			s.fragmented = !h.Fin
		case ws.OpPing, ws.OpPong, ws.OpClose:
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(s.br, payload); err != nil {
				return 0, err
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := wsutil.WriteClientMessage(s.w, ws.OpPong, payload); err != nil {
					return 0, err
				}
			case ws.OpClose:
				_ = wsutil.WriteClientMessage(s.w, ws.OpClose, nil)
				return 0, io.EOF
			}
		default:
			return 0, fmt.Errorf("client: unexpected websocket opcode %v", h.OpCode)
		}
	}
	if int64(len(p)) > s.remaining {
		p = p[:s.remaining]
	}
	n, err := s.br.Read(p)
	s.remaining -= int64(n)
	return n, err
}

// wsWriter sends each Write as one masked binary message.
type wsWriter struct{ w io.Writer }

func (w wsWriter) Write(p []byte) (int, error) {
	if err := wsutil.WriteClientBinary(w.w, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
