package bench

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// pace runs pc against a push that takes slow to answer and returns each
// request's send time (from First) and latency.
func pace(t *testing.T, pc pacing, slow time.Duration) (sent, lats []time.Duration) {
	t.Helper()
	var mu sync.Mutex
	var stamps []time.Time
	build := func(dst []byte, due time.Time) []byte {
		stamps = append(stamps, due) // build runs on pc.run's goroutine only
		return append(dst[:0], 'x')
	}
	push := func(body []byte) (int, error) {
		mu.Lock()
		sent = append(sent, time.Since(pc.First))
		mu.Unlock()
		time.Sleep(slow)
		return 1, nil
	}
	pc.run(build, push, func(n int, err error, latency time.Duration) {
		if n != 1 || err != nil {
			t.Errorf("done(%d, %v)", n, err)
		}
		lats = append(lats, latency)
	})
	if len(stamps) != len(lats) || len(sent) != len(lats) {
		t.Fatalf("%d built, %d sent, %d answered: run returned with requests unanswered", len(stamps), len(sent), len(lats))
	}
	for i := 1; i < len(stamps) && pc.Interval > 0; i++ {
		if d := stamps[i].Sub(stamps[i-1]); d != pc.Interval {
			t.Fatalf("request %d due %v after the one before, want %v", i, d, pc.Interval)
		}
	}
	slices.Sort(sent)
	return sent, lats
}

// At a fixed rate a publisher sends each request when it is due, with
// several unanswered, so a slow answer does not hold back the next
// request; with one at a time the next waits, and its latency counts from
// when it was due.
func TestPacingSendsEachRequestWhenDue(t *testing.T) {
	const interval, slow = 20 * time.Millisecond, 100 * time.Millisecond
	first := time.Now()
	sent, lats := pace(t, pacing{First: first, End: first.Add(400 * time.Millisecond), Interval: interval, InFlight: 8}, slow)
	// Due at 20, 40, ... 400 ms: 20 requests (fewer if this process is
	// held up near the end), each answered after ~100 ms.
	if len(sent) < 15 || len(sent) > 20 {
		t.Fatalf("%d requests sent in 400 ms at one per 20 ms with 8 in flight, want ~20", len(sent))
	}
	for i, l := range lats {
		if l < slow || l > slow+120*time.Millisecond {
			t.Errorf("request %d: latency %v, want about %v (sent when due, not after the one before)", i, l, slow)
		}
	}
	if last := sent[len(sent)-1]; last > 550*time.Millisecond {
		t.Errorf("last request sent %v after the start, want by ~400 ms", last)
	}

	first = time.Now()
	sent, lats = pace(t, pacing{First: first, End: first.Add(400 * time.Millisecond), Interval: interval, InFlight: 1}, slow)
	// One at a time: sent at ~20, 120, 220, 320 ms, due at 20, 40, 60, 80:
	// latencies ~100, 180, 260, 340 ms.
	if len(sent) < 2 || len(sent) > 5 {
		t.Fatalf("%d requests sent in 400 ms one at a time with 100 ms answers, want ~4", len(sent))
	}
	if worst := slices.Max(lats); worst < 2*slow {
		t.Errorf("one at a time, the worst latency is %v: a request that waited for the one before must count from when it was due", worst)
	}
}

// As fast as possible a publisher has one request at a time and its
// latency is from when it was sent.
func TestPacingAsFastAsPossible(t *testing.T) {
	const slow = 30 * time.Millisecond
	first := time.Now()
	sent, lats := pace(t, pacing{First: first, End: first.Add(200 * time.Millisecond), InFlight: 8}, slow)
	if len(sent) < 3 || len(sent) > 7 {
		t.Fatalf("%d requests in 200 ms with 30 ms answers one at a time, want ~7", len(sent))
	}
	for i := 1; i < len(sent); i++ {
		if sent[i]-sent[i-1] < slow {
			t.Fatalf("request %d sent %v after the one before, before its answer (%v)", i, sent[i]-sent[i-1], slow)
		}
	}
	for i, l := range lats {
		if l < slow || l > slow+100*time.Millisecond {
			t.Errorf("request %d: latency %v, want about %v", i, l, slow)
		}
	}
}
