package client

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
)

// lazyTCPAcks returns a reader that, after every read of r, lets the kernel
// hold its TCP acknowledgement of nc's received data (Linux: TCP_QUICKACK
// off; it does not stay off, hence once per read). It is used with
// AckDelay: a connection that only receives — pushes in, ACK frames out
// every AckDelay — would otherwise answer every pushed segment with a bare
// TCP ACK at once, one packet each way per message again, which is what
// holding the ACK frame saved. Held, the kernel's TCP ACK rides on the next
// ACK frame or leaves on its delayed-ACK timer (≤ 200 ms on Linux).
// Elsewhere, or when nc is not TCP, r is returned as is.
func lazyTCPAcks(nc net.Conn, r io.Reader) io.Reader {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok || !quickAckSupported {
		return r
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return r
	}
	return &lazyAckReader{r: r, rc: rc}
}

type lazyAckReader struct {
	r  io.Reader
	rc syscall.RawConn
}

func (l *lazyAckReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		_ = l.rc.Control(quickAckOff)
	}
	return n, err
}
