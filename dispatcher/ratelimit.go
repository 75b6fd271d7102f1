package dispatcher

import (
	"math"
	"sync"
	"time"

	"herald/offline"
)

// publishLimiter holds one token bucket per app (publish rate in messages
// per second). Buckets live in this dispatcher process: with N dispatchers
// an app may publish up to N times its rate in total.
type publishLimiter struct {
	defaultRate float64
	mu          sync.Mutex
	buckets     map[string]*bucket
}

type bucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newPublishLimiter(defaultRate float64) *publishLimiter {
	return &publishLimiter{defaultRate: defaultRate, buckets: map[string]*bucket{}}
}

// take asks for n messages of app at now. It returns 0 when they may go,
// otherwise how long until they may (for Retry-After). A request larger
// than the burst is let through when the bucket is full and leaves it in
// debt, so no request size is refused forever.
func (l *publishLimiter) take(app *offline.App, n int, now time.Time) time.Duration {
	rate := app.PublishRate
	if rate <= 0 {
		rate = l.defaultRate
	}
	if rate <= 0 {
		return 0
	}
	burst := float64(app.PublishBurst)
	if burst <= 0 {
		burst = math.Max(rate, 1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[app.Name]
	if b == nil || b.rate != rate || b.burst != burst {
		// New app, or its limits changed: start full.
		b = &bucket{rate: rate, burst: burst, tokens: burst, last: now}
		l.buckets[app.Name] = b
	}
	b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	need := math.Min(float64(n), b.burst)
	if b.tokens >= need {
		b.tokens -= float64(n)
		return 0
	}
	return time.Duration((need - b.tokens) / b.rate * float64(time.Second))
}
