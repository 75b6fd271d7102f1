package client

import (
	"testing"
	"time"
)

func TestAdaptiveHeartbeat(t *testing.T) {
	s := time.Second
	a := adaptive{growAfter: 2}
	a.bound(5*s, 120*s, 30*s)
	var seen []time.Duration
	for i := 0; i < 10; i++ {
		seen = append(seen, a.cur)
		a.success()
	}
	// 30 → 45 → 67.5 → 101.25 → 120 (max), two PONGs per step.
	want := []time.Duration{30 * s, 30 * s, 45 * s, 45 * s, 67500 * time.Millisecond, 67500 * time.Millisecond,
		101250 * time.Millisecond, 101250 * time.Millisecond, 120 * s, 120 * s}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("step %d: %v, want %v (all: %v)", i, seen[i], want[i], seen)
		}
	}
	if a.good != 120*s {
		t.Fatalf("good = %v", a.good)
	}

	// The path drops idle connections somewhere above 67.5s: a failure at
	// 101.25s falls back to 67.5s, which then stays.
	b := adaptive{growAfter: 1}
	b.bound(5*s, 300*s, 30*s)
	b.success() // 30 ok → 45
	b.success() // 45 ok → 67.5
	b.success() // 67.5 ok → 101.25
	if b.cur != 101250*time.Millisecond {
		t.Fatalf("cur %v", b.cur)
	}
	b.failure()
	if b.cur != 67500*time.Millisecond || b.ceiling != b.cur {
		t.Fatalf("after failure: cur %v ceiling %v", b.cur, b.ceiling)
	}
	for i := 0; i < 5; i++ {
		b.success()
	}
	if b.cur != 67500*time.Millisecond {
		t.Fatalf("grew past the ceiling: %v", b.cur)
	}
	if b.announce() != b.cur {
		t.Fatalf("announces %v at the ceiling", b.announce())
	}

	// Failing before anything worked halves towards the minimum.
	c := adaptive{growAfter: 1}
	c.bound(5*s, 300*s, 30*s)
	c.failure()
	if c.cur != 15*s {
		t.Fatalf("cur %v", c.cur)
	}
	// New bounds from a later CONNACK clamp the state.
	c.bound(20*s, 300*s, 30*s)
	if c.cur != 20*s || c.ceiling != 20*s {
		t.Fatalf("after new bounds: %v %v", c.cur, c.ceiling)
	}
	// The announced interval is the grown one when the next PONG would grow it.
	d := adaptive{growAfter: 1}
	d.bound(1*s, 10*s, 2*s)
	if d.announce() != 3*s {
		t.Fatalf("announce %v", d.announce())
	}
}
