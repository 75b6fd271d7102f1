package client

import "syscall"

const quickAckSupported = true

func quickAckOff(fd uintptr) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 0)
}
