package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"

	"herald/wire"
)

// WebSocket: the same frames as TCP, carried in binary WebSocket messages,
// served by the same epoll and workers. The HTTP upgrade request is
// collected by the worker like any other bytes and handed to gobwas/ws's
// zero-copy Upgrader once complete (bounded by maxUpgradeRequest and the
// connect timeout); after it the bytes pass through a small WebSocket frame
// decoder before the herald frame parser.
//
// Each herald frame the gateway sends is one binary WebSocket message.
// Devices may split or batch their frames across messages freely: the
// payloads of binary (and continuation) messages form one byte stream.

// maxUpgradeRequest bounds the HTTP upgrade request a device may send.
const maxUpgradeRequest = 8 << 10

// errWSOrigin rejects an upgrade from an origin that is not allowed.
var errWSOrigin = ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin not allowed"))

// handshakeRW gives the Upgrader the buffered request to read and collects
// its response.
type handshakeRW struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (h *handshakeRW) Read(p []byte) (int, error)  { return h.r.Read(p) }
func (h *handshakeRW) Write(p []byte) (int, error) { return h.w.Write(p) }

// handleUpgrade collects the HTTP upgrade request on the worker (no
// goroutine per handshake) and upgrades with gobwas/ws's zero-copy Upgrader
// once the header is complete. It returns false once the connection is
// closed.
func (c *conn) handleUpgrade(data []byte) bool {
	rd := c.partial()
	rd.in = append(rd.in, data...)
	end := bytes.Index(rd.in, []byte("\r\n\r\n"))
	if end < 0 {
		if len(rd.in) > maxUpgradeRequest {
			c.gw.m.wsRejected.Inc()
			c.close(wire.CodeMalformed)
			return false
		}
		return true
	}
	req, rest := rd.in[:end+4], rd.in[end+4:]
	gw := c.gw
	originSeen := false
	var origin string
	u := ws.Upgrader{
		ReadBufferSize: maxUpgradeRequest,
		OnHeader: func(key, value []byte) error {
			if !bytes.EqualFold(key, []byte("Origin")) {
				return nil
			}
			originSeen = true
			// Kept until CONNECT names the app, whose origins are checked then.
			origin = string(value)
			if len(gw.cfg.WSOrigins) > 0 && !gw.originAllowed(value) {
				return errWSOrigin
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if len(gw.cfg.WSOrigins) > 0 && !originSeen {
				return nil, errWSOrigin // a browser always sends Origin
			}
			return nil, nil
		},
	}
	rw := &handshakeRW{r: bytes.NewReader(req)}
	_, err := u.Upgrade(rw)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.appendRawLocked(rw.w.Bytes())
	if err == nil {
		c.state = stateConnecting
		if originSeen {
			gw.pending.Store(c, origin)
		}
	}
	c.mu.Unlock()
	c.flush()
	if err != nil {
		gw.m.wsRejected.Inc()
		gw.log.Debug("websocket upgrade refused", "err", err)
		c.close(wire.CodeMalformed)
		return false
	}
	leftover := append([]byte(nil), rest...)
	c.rd = nil
	if len(leftover) > 0 {
		return c.handleWS(leftover)
	}
	return true
}

func (gw *Gateway) originAllowed(origin []byte) bool {
	for _, o := range gw.cfg.WSOrigins {
		if o == "*" || bytes.EqualFold([]byte(o), origin) {
			return true
		}
	}
	return false
}

// WebSocket opcodes.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xa
)

// handleWS decodes WebSocket frames from data (after any partial frame kept
// from the last read) and passes binary payloads to the herald parser.
// It returns false once the connection is failed or closed.
func (c *conn) handleWS(data []byte) bool {
	if c.rd != nil && len(c.rd.wsIn) > 0 {
		c.rd.wsIn = append(c.rd.wsIn, data...)
		data = c.rd.wsIn
	}
	max := c.gw.cfg.MaxFrame + wire.MaxHeaderLen
	for len(data) > 0 {
		h, hl, ok, err := parseWSHeader(data, max)
		if err != nil {
			c.rd = nil
			c.fail(wire.CodeMalformed, err.Error())
			return false
		}
		if !ok || len(data) < hl+int(h.length) {
			break
		}
		payload := data[hl : hl+int(h.length)]
		ws.Cipher(payload, h.mask, 0)
		data = data[hl+int(h.length):]
		switch h.op {
		case wsBinary, wsContinuation:
			if !c.handleBytes(payload) {
				c.rd = nil
				return false
			}
		case wsPing:
			var buf [2 + 125]byte
			c.mu.Lock()
			if !c.closed {
				c.appendRawLocked(appendWSFrame(buf[:0], wsPong, payload))
			}
			c.mu.Unlock()
			c.flush()
		case wsPong:
		case wsClose:
			c.rd = nil
			c.mu.Lock()
			if !c.closed {
				c.appendRawLocked(wsCloseFrame)
			}
			c.mu.Unlock()
			c.flush()
			c.close(0)
			return false
		default: // text: herald frames are binary
			c.rd = nil
			c.fail(wire.CodeMalformed, "websocket text messages are not herald frames; send binary")
			return false
		}
	}
	if len(data) == 0 {
		if c.rd != nil {
			c.rd.wsIn = nil
			c.dropPartialIfEmpty()
		}
		return true
	}
	rest := make([]byte, len(data), len(data)+256)
	copy(rest, data)
	c.partial().wsIn = rest
	return true
}

// wsCloseFrame is a server Close frame with status 1000 (normal closure).
var wsCloseFrame = []byte{0x80 | wsClose, 2, 0x03, 0xe8}

type wsHeader struct {
	op     byte
	length uint64
	mask   [4]byte
}

// parseWSHeader reads a client frame header. ok is false when data holds
// only part of it. Client frames must be masked, without extensions, and
// control frames short and final; a frame longer than max is refused before
// its payload is read.
func parseWSHeader(data []byte, max int) (h wsHeader, n int, ok bool, err error) {
	if len(data) < 2 {
		return h, 0, false, nil
	}
	b0, b1 := data[0], data[1]
	if b0&0x70 != 0 {
		return h, 0, false, errors.New("websocket extensions are not negotiated")
	}
	if b1&0x80 == 0 {
		return h, 0, false, errors.New("websocket client frames must be masked")
	}
	h.op = b0 & 0x0f
	fin := b0&0x80 != 0
	n = 2
	switch l := b1 & 0x7f; l {
	case 126:
		if len(data) < 4 {
			return h, 0, false, nil
		}
		h.length = uint64(binary.BigEndian.Uint16(data[2:]))
		n = 4
	case 127:
		if len(data) < 10 {
			return h, 0, false, nil
		}
		h.length = binary.BigEndian.Uint64(data[2:])
		n = 10
	default:
		h.length = uint64(l)
	}
	if h.op >= wsClose && (!fin || h.length > 125) {
		return h, 0, false, errors.New("websocket control frame fragmented or too long")
	}
	if h.op > wsBinary && h.op < wsClose || h.op > wsPong {
		return h, 0, false, errors.New("unknown websocket opcode")
	}
	if h.length > uint64(max) {
		return h, 0, false, errors.New("websocket frame larger than the negotiated maximum")
	}
	if len(data) < n+4 {
		return h, 0, false, nil
	}
	copy(h.mask[:], data[n:n+4])
	return h, n + 4, true, nil
}

// appendWSFrame appends an unmasked server frame (FIN set).
func appendWSFrame(dst []byte, op byte, payload []byte) []byte {
	dst = appendWSHeader(dst, op, len(payload))
	return append(dst, payload...)
}

func appendWSHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return dst
}
