package gateway

import (
	"context"
	"net"
	"syscall"

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
