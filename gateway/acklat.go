package gateway

import (
	"sync"
	"sync/atomic"
	"time"
)

// ackSampler measures ACK latency — a live PUSH queued to a device until
// the device's ACK covering it arrives (write, network, the device's
// handling, the ACK's way back) — on one PUSH in ackSampleEvery, so the
// hot path pays an atomic add and the ACK path a map lookup only while
// samples are out. At most maxAckSamples are out at once.
type ackSampler struct {
	n   atomic.Uint64
	out atomic.Int32
	mu  sync.Mutex
	m   map[*sub]ackSample
}

type ackSample struct {
	seq uint64
	at  time.Time
}

const (
	ackSampleEvery = 32
	maxAckSamples  = 1024
	// maxAckWait drops samples whose ACK never came (a device that left
	// without its connection closing yet, a topic left by UNSUB).
	maxAckWait = time.Minute
)

// sent may record s's PUSH of seq as a sample.
func (a *ackSampler) sent(s *sub, seq uint64) {
	n := a.n.Add(1)
	if n%ackSampleEvery != 0 {
		return
	}
	if a.out.Load() >= maxAckSamples {
		if n%(ackSampleEvery*maxAckSamples) == 0 {
			a.sweep()
		}
		return
	}
	a.mu.Lock()
	if a.m == nil {
		a.m = map[*sub]ackSample{}
	}
	if _, ok := a.m[s]; !ok {
		a.m[s] = ackSample{seq: seq, at: time.Now()}
		a.out.Store(int32(len(a.m)))
	}
	a.mu.Unlock()
}

// acked returns the latency of s's sample if seq covers it.
func (a *ackSampler) acked(s *sub, seq uint64) (time.Duration, bool) {
	if a.out.Load() == 0 {
		return 0, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	smp, ok := a.m[s]
	if !ok || seq < smp.seq {
		return 0, false
	}
	delete(a.m, s)
	a.out.Store(int32(len(a.m)))
	return time.Since(smp.at), true
}

// sweep drops samples older than maxAckWait.
func (a *ackSampler) sweep() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for s, smp := range a.m {
		if time.Since(smp.at) > maxAckWait {
			delete(a.m, s)
		}
	}
	a.out.Store(int32(len(a.m)))
}

// forget drops s's sample (its connection or topic left).
func (a *ackSampler) forget(s *sub) {
	if a.out.Load() == 0 {
		return
	}
	a.mu.Lock()
	if _, ok := a.m[s]; ok {
		delete(a.m, s)
		a.out.Store(int32(len(a.m)))
	}
	a.mu.Unlock()
}
