package gateway

import (
	"testing"
	"time"
)

// Samples are taken one PUSH in ackSampleEvery, matched by a covering ACK,
// bounded in number, and swept when their ACK never comes.
func TestAckSampler(t *testing.T) {
	var a ackSampler
	subs := make([]*sub, 3*maxAckSamples)
	for i := range subs {
		subs[i] = &sub{}
	}
	for i := 0; i < ackSampleEvery; i++ {
		a.sent(subs[0], 10)
	}
	if _, ok := a.acked(subs[0], 9); ok {
		t.Fatal("an ACK below the sampled seq matched")
	}
	if d, ok := a.acked(subs[0], 12); !ok || d < 0 || d > time.Second {
		t.Fatalf("covering ACK: %v %v", d, ok)
	}
	if _, ok := a.acked(subs[0], 12); ok {
		t.Fatal("a sample matched twice")
	}
	// Fill up: never more than maxAckSamples out.
	for i := 0; i < len(subs)*ackSampleEvery; i++ {
		a.sent(subs[i/ackSampleEvery], 1)
	}
	if n := a.out.Load(); n != maxAckSamples {
		t.Fatalf("%d samples out, want the bound %d", n, maxAckSamples)
	}
	// Old unanswered samples are swept; forget drops one.
	a.mu.Lock()
	for s, smp := range a.m {
		smp.at = smp.at.Add(-2 * maxAckWait)
		a.m[s] = smp
	}
	a.mu.Unlock()
	a.sweep()
	if n := a.out.Load(); n != 0 {
		t.Fatalf("%d stale samples left after a sweep", n)
	}
	for i := 0; i < ackSampleEvery; i++ {
		a.sent(subs[1], 5)
	}
	a.forget(subs[1])
	if _, ok := a.acked(subs[1], 5); ok || a.out.Load() != 0 {
		t.Fatal("a forgotten sample matched")
	}
}
