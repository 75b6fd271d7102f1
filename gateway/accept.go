package gateway

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

// acceptLoop accepts devices with accept4 on the listener's descriptor,
// taken with syscall.RawConn.Control and watched by the gateway's epoll
// (edge-triggered): each device socket arrives as a bare non-blocking fd —
// no net.Conn, no runtime poll descriptor, no os.File whose finalizer could
// close it, no dup. The gateway owns the fd from accept to close and serves
// it only through epoll.
func (gw *Gateway) acceptLoop(ln net.Listener, ws bool) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		gw.log.Error("listener has no file descriptor; cannot accept")
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		gw.log.Error("cannot reach the listener's descriptor", "err", err)
		return
	}
	lfd := -1
	if err := rc.Control(func(fd uintptr) { lfd = int(fd) }); err != nil {
		gw.log.Error("cannot reach the listener's descriptor", "err", err)
		return
	}
	wake := make(chan struct{}, 1)
	if err := gw.ep.Add(lfd, netpoll.EPOLLIN|netpoll.EPOLLET, func(netpoll.EpollEvent) {
		select {
		case wake <- struct{}{}:
		default:
		}
	}); err != nil {
		gw.log.Error("cannot watch the listener", "err", err)
		return
	}
	// Deregister before Stop closes the listener, so its fd number is free.
	defer gw.ep.Del(lfd)
	var backoff time.Duration
	for {
		// Edge-triggered: drain the backlog completely before waiting.
		err := gw.acceptAll(lfd, ws)
		switch {
		case err == nil:
			backoff = 0
			select {
			case <-wake:
			case <-gw.quit:
				return
			}
		case gw.stopping.Load():
			return
		default:
			// Out of descriptors (EMFILE/ENFILE) or memory: back off and
			// try again (no new edge would come for what is queued).
			if !gw.acceptBackoff(&backoff, err) {
				return
			}
		}
	}
}

// acceptBackoff waits after a failed accept, doubling the wait up to a
// second; it returns false when the gateway stops meanwhile.
func (gw *Gateway) acceptBackoff(backoff *time.Duration, err error) bool {
	if *backoff == 0 {
		*backoff = 5 * time.Millisecond
	} else if *backoff < time.Second {
		*backoff *= 2
	}
	gw.m.acceptErrors.Inc()
	gw.log.Warn("accept failed", "err", err, "retry_in", *backoff)
	select {
	case <-time.After(*backoff):
		return true
	case <-gw.quit:
		return false
	}
}

// acceptAll accepts until the backlog is empty.
func (gw *Gateway) acceptAll(lfd int, ws bool) error {
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			if gw.ips != nil && !gw.ips.acquireFD(fd) {
				gw.m.ipRefused.Inc()
				_, _ = unix.Write(fd, refusal(ws))
				unix.Close(fd)
				continue
			}
			gw.register(fd, ws)
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED):
		default:
			return err
		}
	}
}

// register sets the socket options and adds a new connection to epoll; it
// has ConnectTimeout to send CONNECT (WebSocket: to finish the upgrade too).
func (gw *Gateway) register(fd int, ws bool) {
	if gw.stopping.Load() {
		gw.releaseIP(fd)
		unix.Close(fd)
		return
	}
	// Go sets TCP_NODELAY on the sockets it accepts; a raw accept must too.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if gw.cfg.UserTimeout > 0 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(gw.cfg.UserTimeout/time.Millisecond))
	}
	c := &conn{gw: gw, fd: fd, armed: armedIn, ws: ws}
	if ws {
		c.state = stateUpgrading
	}
	c.deadline = gw.wheel.Now() + int64((gw.cfg.ConnectTimeout+time.Second-1)/time.Second)
	gw.pending.Store(c, struct{}{})
	gw.wheel.add(c, c.deadline)
	if err := gw.ep.Add(fd, readEvents, c.onEvent); err != nil {
		gw.pending.Delete(c)
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		gw.releaseIP(fd)
		unix.Close(fd)
		gw.log.Warn("cannot register connection with epoll", "err", err)
	}
}

// releaseIP uncounts a raw socket before its fd is closed.
func (gw *Gateway) releaseIP(fd int) {
	if gw.ips != nil {
		gw.ips.releaseFD(fd)
	}
}
