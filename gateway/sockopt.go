package gateway

import (
	"context"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listen opens the device listener. Kernel keepalive is off: the app-level
// heartbeat detects dead peers at an interval the device chooses. With
// reusePort several gateway processes share one port (SO_REUSEPORT).
func listen(addr string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			if !reusePort {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// socketFD returns the connection's descriptor without duplicating it
// (File() would dup it and flip the socket to blocking mode) and applies the
// per-socket options: TCP_USER_TIMEOUT and no Nagle delay.
func socketFD(nc net.Conn, userTimeout time.Duration) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, syscall.EINVAL
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var serr error
	err = raw.Control(func(f uintptr) {
		fd = int(f)
		if userTimeout > 0 {
			serr = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout/time.Millisecond))
		}
	})
	if err != nil {
		return -1, err
	}
	return fd, serr
}
