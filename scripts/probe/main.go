//go:build linux

// Command probe says how fast this machine is right now, in a few seconds
// of one core: SHA-256 throughput (user-space compute), memory latency (a
// pointer chase over 32 MB), loopback TCP round trips, and what one 50-byte
// loopback write() costs — to a reader waiting in epoll (Go's netpoller: the
// write also pays the kernel's wake-up of that reader) and to one that is
// not (a thread draining its sockets every millisecond without blocking).
//
//	go run ./scripts/probe            # one line
//	PROBE=1 scripts/bench-unicast.sh  # one line before every round
//
// The bench issue's numbers move with this shared machine's fast and slow
// windows; this line, taken next to a run, records what the machine gave
// at the time.
// Loopback only; every loop is bounded in time.
package main

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
)

const step = 400 * time.Millisecond

func main() {
	runtime.GOMAXPROCS(2) // the writer and its readers; the numbers are per call
	wait, err := writeCost(true)
	if err != nil {
		fail(err)
	}
	poll, err := writeCost(false)
	if err != nil {
		fail(err)
	}
	rt, err := roundTrips()
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s sha256 %.0f MB/s · memory %.0f ns/hop · loopback %.0f round trips/s · write() of 50 B %.2f µs to a waiting reader, %.2f µs to a polling one\n",
		time.Now().UTC().Format("15:04:05"), shaRate(), memLatency(), rt, wait, poll)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "probe:", err)
	os.Exit(1)
}

func shaRate() float64 {
	buf := make([]byte, 64<<10)
	n := 0
	start := time.Now()
	for time.Since(start) < step {
		sha256.Sum256(buf)
		n++
	}
	return float64(n*len(buf)) / time.Since(start).Seconds() / 1e6
}

// memLatency follows one random cycle through 32 MB (Sattolo's shuffle).
func memLatency() float64 {
	const size = 8 << 20
	next := make([]uint32, size)
	for i := range next {
		next[i] = uint32(i)
	}
	for i := size - 1; i > 0; i-- {
		j := rand.IntN(i)
		next[i], next[j] = next[j], next[i]
	}
	p, hops := uint32(0), 0
	start := time.Now()
	for time.Since(start) < step {
		for k := 0; k < 10000; k++ {
			p = next[p]
		}
		hops += 10000
	}
	runtime.KeepAlive(p)
	return float64(time.Since(start).Nanoseconds()) / float64(hops)
}

func roundTrips() (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 64)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	b := make([]byte, 64)
	n := 0
	start := time.Now()
	for time.Since(start) < step {
		if _, err := c.Write(b[:32]); err != nil {
			return 0, err
		}
		if _, err := c.Read(b); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// writeCost writes 50 bytes at a time, 20 every millisecond, round-robin
// over 200 loopback connections, and returns the mean time inside write().
// waiting: each reader is a goroutine blocked in Read (Go's netpoller
// sleeps in epoll_wait, so a write wakes it). Otherwise one thread drains
// every ready socket each millisecond with epoll_wait(0) and never sleeps
// in epoll, so a write wakes nobody — as with a device on another machine.
func writeCost(waiting bool) (float64, error) {
	const conns, perTick = 200, 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var (
		keep    []any // the sockets' owners, so no finalizer closes a descriptor in use
		writeTo []int
		readFds []int
	)
	defer func() {
		for _, k := range keep {
			if c, ok := k.(interface{ Close() error }); ok {
				_ = c.Close()
			}
		}
		for _, fd := range readFds {
			_ = syscall.Close(fd)
		}
	}()
	for i := 0; i < conns; i++ {
		if waiting {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return 0, err
			}
			keep = append(keep, c)
			go func() {
				b := make([]byte, 4096)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
				}
			}()
		} else {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				return 0, err
			}
			readFds = append(readFds, fd)
			if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return 0, err
			}
			if err := syscall.SetNonblock(fd, true); err != nil {
				return 0, err
			}
		}
		s, err := ln.Accept()
		if err != nil {
			return 0, err
		}
		f, err := s.(*net.TCPConn).File() // a blocking descriptor of our own
		_ = s.Close()
		if err != nil {
			return 0, err
		}
		keep = append(keep, f)
		writeTo = append(writeTo, int(f.Fd()))
	}
	stop := make(chan struct{})
	drained := make(chan struct{})
	if !waiting {
		go func() {
			defer close(drained)
			runtime.LockOSThread()
			ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
			if err != nil {
				return
			}
			defer syscall.Close(ep)
			for _, fd := range readFds {
				_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN | 1<<31 /* EPOLLET */, Fd: int32(fd)})
			}
			evs := make([]syscall.EpollEvent, 256)
			b := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, _ := syscall.EpollWait(ep, evs, 0)
				for i := 0; i < n; i++ {
					for {
						if k, err := syscall.Read(int(evs[i].Fd), b); k <= 0 || err != nil {
							break
						}
					}
				}
				_ = syscall.Nanosleep(&syscall.Timespec{Nsec: int64(time.Millisecond)}, nil)
			}
		}()
	} else {
		close(drained)
	}
	defer func() { close(stop); <-drained }()

	time.Sleep(100 * time.Millisecond) // let the readers settle
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	msg := make([]byte, 50)
	var in time.Duration
	writes, next := 0, 0
	start := time.Now()
	for tick := 1; time.Since(start) < 2*step; tick++ {
		for k := 0; k < perTick; k++ {
			t := time.Now()
			if _, err := syscall.Write(writeTo[next], msg); err != nil {
				return 0, fmt.Errorf("write: %w", err)
			}
			in += time.Since(t)
			writes++
			next = (next*7 + 3) % conns
		}
		time.Sleep(time.Until(start.Add(time.Duration(tick) * time.Millisecond)))
	}
	return float64(in.Nanoseconds()) / float64(writes) / 1000, nil
}
