package scheduler

import (
	"math"
	"time"
)

// CoDel is the dropping policy of RFC 8289 (Controlled Delay) for one
// path's send queue, applied as packets leave it.
//
// A tunnel over QUIC hides the network's loss from the inner flows: QUIC
// paces to its congestion window and braid resends what QUIC lost. An
// inner TCP flow therefore never learns that it sends faster than the
// path carries, and its window fills the queue in front of the path
// (and the kernel's TUN ring behind it, while the reader waits for room):
// a call sharing the uplink with an upload then waits behind a second of
// bulk data. CoDel gives the inner flows back the signal: once packets
// have stood in the queue longer than Target for a whole Interval, it
// drops one, and then more often (Interval/sqrt(count)) until the
// standing queue is gone.
//
// The zero CoDel is not ready; set Target and Interval. It is owned by
// the queue's consumer and not locked.
type CoDel struct {
	// Target is the standing queue delay tolerated; Interval is how long
	// it must last before a drop, about the round trip of the flows.
	Target, Interval time.Duration

	firstAbove time.Duration // when the delay will have been above Target for Interval; 0: below
	dropNext   time.Duration // when the next drop is due while dropping
	count      int           // drops since dropping began
	lastCount  int           // count when dropping last began
	dropping   bool
}

// Drop says whether to drop the packet leaving the queue at now after
// sojourn in it; backlog says whether more packets wait behind it (a
// queue down to its last packet is not standing, however long that one
// waited).
func (c *CoDel) Drop(now, sojourn time.Duration, backlog bool) bool {
	ok := c.okToDrop(now, sojourn, backlog)
	if c.dropping {
		if !ok {
			c.dropping = false
			return false
		}
		if now < c.dropNext {
			return false
		}
		c.count++
		c.dropNext = c.controlLaw(c.dropNext)
		return true
	}
	if !ok {
		return false
	}
	// Dropping begins. If it ended only recently, resume near the rate it
	// had reached (RFC 8289, section 5.4): the queue came back at once.
	c.dropping = true
	delta := c.count - c.lastCount
	c.count = 1
	if delta > 1 && now-c.dropNext < 16*c.Interval {
		c.count = delta
	}
	c.lastCount = c.count
	c.dropNext = c.controlLaw(now)
	return true
}

// okToDrop tracks whether the delay has stayed above Target for an
// Interval.
func (c *CoDel) okToDrop(now, sojourn time.Duration, backlog bool) bool {
	if sojourn < c.Target || !backlog {
		c.firstAbove = 0
		return false
	}
	if c.firstAbove == 0 {
		c.firstAbove = now + c.Interval
		return false
	}
	return now >= c.firstAbove
}

// controlLaw is when the next drop is due after one at t.
func (c *CoDel) controlLaw(t time.Duration) time.Duration {
	return t + time.Duration(float64(c.Interval)/math.Sqrt(float64(c.count)))
}
