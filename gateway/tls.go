package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// TLS (gateway.tls): crypto/tls needs a net.Conn and buffers records of its
// own, so a TLS device cannot be served straight from its socket by the
// epoll workers. Each TLS connection is accepted by Go's listener, its
// handshake done within connect_timeout, then bridged: a socketpair's one
// end is registered with the epoll like any accepted socket (the same
// frame, WebSocket, deadline and limit code serves it), and two goroutines
// copy between the other end and the TLS connection.
//
// The price is two goroutines (≈16 KiB of stacks), crypto/tls's buffers and
// three descriptors per TLS device instead of one socket: plain TCP behind
// a TLS-terminating load balancer keeps the ≈2 KB per device figure.

// acceptTLS accepts TLS devices on ln until Stop.
func (gw *Gateway) acceptTLS(ln net.Listener, ws bool) {
	go func() {
		<-gw.quit
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if gw.stopping.Load() || errors.Is(err, net.ErrClosed) || !gw.acceptBackoff(&backoff, err) {
				return
			}
			continue
		}
		backoff = 0
		gw.bridges.Add(1)
		go func() {
			defer gw.bridges.Done()
			gw.serveTLS(nc, ws)
		}()
	}
}

// serveTLS handshakes, then bridges nc to a socket the epoll serves.
func (gw *Gateway) serveTLS(nc net.Conn, ws bool) {
	ip := addrIP(nc.RemoteAddr())
	if gw.ips != nil {
		if !gw.ips.acquire(ip) {
			gw.m.ipRefused.Inc()
			nc.Close()
			return
		}
		defer gw.ips.release(ip)
	}
	tc := tls.Server(nc, gw.tls)
	defer tc.Close()
	ctx, cancel := context.WithTimeout(gw.ctx, gw.cfg.ConnectTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		gw.m.tlsFailures.Inc()
		gw.log.Debug("tls handshake failed", "remote", ip.String(), "err", err)
		return
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		gw.m.acceptErrors.Inc()
		gw.log.Warn("cannot bridge a tls connection", "err", err)
		return
	}
	f := os.NewFile(uintptr(fds[1]), "tls-bridge")
	pc, err := net.FileConn(f) // a dup, with the runtime poller
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		gw.m.acceptErrors.Inc()
		gw.log.Warn("cannot bridge a tls connection", "err", err)
		return
	}
	defer pc.Close()
	gw.register(fds[0], ws)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(pc, tc) // device → gateway
		if uc, ok := pc.(*net.UnixConn); ok {
			_ = uc.CloseWrite() // the gateway reads EOF: the device left
		}
	}()
	_, _ = io.Copy(tc, pc) // gateway → device, until the gateway closes or shuts down its side
	// The gateway finished with the connection (an ERROR is already
	// written): close_notify and close, which also ends the other copy.
	_ = tc.CloseWrite()
	tc.Close()
	<-done
}
