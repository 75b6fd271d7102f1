package gateway

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"

	"herald/wire"
)

// ipLimiter bounds the connections from one source address
// (gateway.max_conns_per_ip). It counts every connection from accept to
// close, authenticated or not, so a flood of sockets that never send
// CONNECT is bounded too. Raw sockets are remembered by fd so close can
// release them; TLS bridges release their own address.
type ipLimiter struct {
	max  int32
	mu   sync.Mutex
	byIP map[netip.Addr]int32
	byFD map[int]netip.Addr
}

func newIPLimiter(max int) *ipLimiter {
	if max <= 0 {
		return nil
	}
	return &ipLimiter{max: int32(max), byIP: map[netip.Addr]int32{}, byFD: map[int]netip.Addr{}}
}

// acquire counts a connection from ip unless ip is at its limit.
func (l *ipLimiter) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[ip] >= l.max {
		return false
	}
	l.byIP[ip]++
	return true
}

// acquireFD counts the raw socket fd from its peer's address.
func (l *ipLimiter) acquireFD(fd int) bool {
	ip := peerIP(fd)
	if !l.acquire(ip) {
		return false
	}
	l.mu.Lock()
	l.byFD[fd] = ip
	l.mu.Unlock()
	return true
}

func (l *ipLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
}

// releaseFD releases a raw socket counted by acquireFD; it must run before
// the fd is closed (its number may be reused at once after).
func (l *ipLimiter) releaseFD(fd int) {
	l.mu.Lock()
	ip, ok := l.byFD[fd]
	delete(l.byFD, fd)
	l.mu.Unlock()
	if ok {
		l.release(ip)
	}
}

// peerIP is the source address of a connected socket (the zero Addr when
// it cannot be read: such sockets share one count).
func peerIP(fd int) netip.Addr {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.Addr{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

// addrIP is the address of a net.Addr from a Go listener.
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// refusal is what a connection over its address's limit gets before the
// socket is closed: an ERROR frame on TCP, an HTTP 429 on WebSocket (no
// upgrade has happened yet).
func refusal(ws bool) []byte {
	if ws {
		return []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	}
	return (&wire.Error{Code: wire.CodeTooManyConns, Reason: []byte("too many connections from this address")}).Append(nil)
}
