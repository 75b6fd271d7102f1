package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort runs on each dial's socket before bind. Best effort: a kernel
// without the option binds the port itself, as before.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}
