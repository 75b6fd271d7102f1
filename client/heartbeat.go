package client

import "time"

// adaptive is the intelligent heartbeat: it looks for the longest PING
// interval the network path tolerates (NAT and carrier middleboxes drop idle
// mappings after an unknown time), because every PING wakes the radio.
//
//   - Start at the interval CONNACK suggests, within [min, max] from CONNACK.
//   - After growAfter PONGs in a row at the current interval, grow it by half
//     (at least one second), never above max or the ceiling.
//   - The highest interval that got a PONG back is "good".
//   - When a connection dies of silence (no PONG, or a network error) the
//     interval falls back to good, and good becomes the ceiling: longer
//     intervals are not tried again for the life of the Client.
//
// Each PING tells the server the interval the device will wait before its
// next PING (if this one succeeds), and the server's idle deadline follows it
// (2 × that interval). State survives reconnects.
type adaptive struct {
	min, max  time.Duration
	cur       time.Duration
	good      time.Duration
	ceiling   time.Duration // 0: none yet
	streak    int
	growAfter int
}

// bound applies CONNACK's bounds and starting interval.
func (a *adaptive) bound(min, max, start time.Duration) {
	a.min, a.max = min, max
	if a.cur == 0 {
		a.cur = start
	}
	a.cur = clampDur(a.cur, min, max)
	if a.ceiling != 0 {
		a.ceiling = clampDur(a.ceiling, min, max)
	}
}

func clampDur(d, min, max time.Duration) time.Duration {
	if d < min {
		return min
	}
	if max > 0 && d > max {
		return max
	}
	return d
}

// grown is the interval after the next growth step.
func (a *adaptive) grown() time.Duration {
	step := a.cur / 2
	if step < time.Second {
		step = time.Second
	}
	n := a.cur + step
	if n > a.max {
		n = a.max
	}
	if a.ceiling != 0 && n > a.ceiling {
		n = a.ceiling
	}
	return n
}

// announce is the interval a PING sent now reports: the next interval if
// its PONG comes back.
func (a *adaptive) announce() time.Duration {
	if a.streak+1 >= a.growAfter {
		return a.grown()
	}
	return a.cur
}

// success records a PONG after waiting cur.
func (a *adaptive) success() {
	if a.cur > a.good {
		a.good = a.cur
	}
	a.streak++
	if a.streak >= a.growAfter {
		a.streak = 0
		a.cur = a.grown()
	}
}

// failure records a connection that died of silence at cur.
func (a *adaptive) failure() {
	a.streak = 0
	if a.good == 0 {
		// Nothing ever worked: retreat towards the minimum.
		a.cur = clampDur(a.cur/2, a.min, a.max)
		a.ceiling = a.cur
		return
	}
	a.cur = a.good
	a.ceiling = a.good
}
