package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// ReadFrame reads one frame from r into buf (grown when too small) and
// returns its type and body, a view into the returned buffer. A length over
// max is ErrTooLarge before any body byte is read; a varint length longer
// than 5 bytes is ErrMalformed.
func ReadFrame(r *bufio.Reader, buf []byte, max int) (t Type, body, newBuf []byte, err error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, nil, buf, err
	}
	t = Type(b)
	if !t.Known() {
		return t, nil, buf, ErrUnknownType
	}
	var l uint64
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return t, nil, buf, err
		}
		if i == binary.MaxVarintLen32-1 && c >= 0x10 {
			return t, nil, buf, ErrMalformed // over 32 bits or unterminated
		}
		l |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			break
		}
	}
	if l > uint64(max) {
		return t, nil, buf, ErrTooLarge
	}
	if cap(buf) < int(l) {
		buf = make([]byte, l)
	}
	body = buf[:l]
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return t, nil, buf, err
	}
	return t, body, buf, nil
}
