package bench

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// Devices dial from their source address with the port left to connect()
// (Linux), and still get a port of their own.
func TestSourceDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	src := net.ParseIP("127.0.0.2")
	var ports []int
	for range 2 {
		c, err := sourceDialer(src).Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		la := c.LocalAddr().(*net.TCPAddr)
		if !la.IP.Equal(src) || la.Port == 0 {
			t.Fatalf("dialed from %v, want %v and a port", la, src)
		}
		ports = append(ports, la.Port)
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT) })
		if gerr != nil || v != 1 {
			t.Fatalf("IP_BIND_ADDRESS_NO_PORT = %d (%v), want 1", v, gerr)
		}
	}
	if ports[0] == ports[1] {
		t.Fatalf("two connections to one address share port %d", ports[0])
	}
}
