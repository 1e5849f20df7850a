package scheduler

import (
	"math"
	"testing"
	"time"
)

func newCoDel() *CoDel { return &CoDel{Target: 5 * time.Millisecond, Interval: 100 * time.Millisecond} }

func TestCoDelBelowTargetNeverDrops(t *testing.T) {
	c := newCoDel()
	for now := time.Duration(1); now < 10*time.Second; now += time.Millisecond {
		if c.Drop(now, 4*time.Millisecond, true) {
			t.Fatalf("dropped at %v with the delay below target", now)
		}
	}
}

// TestCoDelDropSchedule holds the delay above target: the first drop comes
// an interval after the delay rose, the next ones at interval/sqrt(count).
func TestCoDelDropSchedule(t *testing.T) {
	c := newCoDel()
	var drops []time.Duration
	start := time.Second
	for now := start; now < start+400*time.Millisecond; now += 100 * time.Microsecond {
		if c.Drop(now, 20*time.Millisecond, true) {
			drops = append(drops, now-start)
		}
	}
	want := []time.Duration{100 * time.Millisecond}
	next := want[0]
	for n := 1; ; n++ {
		next += time.Duration(float64(100*time.Millisecond) / math.Sqrt(float64(n)))
		if next >= 400*time.Millisecond {
			break
		}
		want = append(want, next)
	}
	if len(drops) != len(want) {
		t.Fatalf("drops at %v, want %v", drops, want)
	}
	for i := range want {
		if d := drops[i] - want[i]; d < 0 || d > 200*time.Microsecond {
			t.Errorf("drop %d at %v, want %v", i, drops[i], want[i])
		}
	}
}

// TestCoDelLastPacketIsNotAQueue: a packet that waited long but leaves an
// empty queue is no standing queue, and resets the wait for a drop.
func TestCoDelLastPacketIsNotAQueue(t *testing.T) {
	c := newCoDel()
	for now := time.Second; now < 2*time.Second; now += time.Millisecond {
		backlog := now%(50*time.Millisecond) != 0 // empty every 50 ms
		if c.Drop(now, 30*time.Millisecond, backlog) {
			t.Fatalf("dropped at %v although the queue emptied within every interval", now)
		}
	}
}

// TestCoDelStopsWhenDelayFalls: dropping ends as soon as the delay is below
// target again.
func TestCoDelStopsWhenDelayFalls(t *testing.T) {
	c := newCoDel()
	now := time.Second
	for ; !c.dropping; now += time.Millisecond {
		c.Drop(now, 50*time.Millisecond, true)
	}
	if c.Drop(now, time.Millisecond, true) || c.dropping {
		t.Fatal("still dropping with the delay below target")
	}
}

// TestCoDelTamesAIMD simulates an AIMD flow (one more packet per round
// trip; down to 0.7 of its window, as CUBIC, on a drop seen a round trip
// later) sending into a queue that carries one packet a millisecond, with
// a window of 400 packets, as after a failover onto a path ten times
// slower than the one it grew on. Without CoDel the window stands in the
// queue (40 packets on the link for its round trip, the rest waiting);
// with it the queue's delay stays near the target and the link busy.
func TestCoDelTamesAIMD(t *testing.T) {
	run := func(c *CoDel) (meanDelay time.Duration, utilisation float64) {
		const (
			service = time.Millisecond
			baseRTT = 40 * time.Millisecond
			limit   = 1000
		)
		var queue []time.Duration // arrival times
		window, inFlight := 400.0, 0
		var acks []time.Duration // when each delivered packet's ack arrives
		var halveAt time.Duration = -1
		var sent, busy int
		var delaySum time.Duration
		for now := time.Duration(0); now < 20*time.Second; now += service {
			// Acks of delivered packets open the window.
			for len(acks) > 0 && acks[0] <= now {
				acks = acks[1:]
				inFlight--
				window += 1 / window
			}
			if halveAt >= 0 && now >= halveAt {
				window = max(window*0.7, 2)
				halveAt = -1
			}
			for inFlight < int(window) && len(queue) < limit {
				queue = append(queue, now)
				inFlight++
			}
			// The link takes one packet per service time.
			for len(queue) > 0 {
				at := queue[0]
				queue = queue[1:]
				if c != nil && c.Drop(now, now-at, len(queue) > 0) {
					inFlight--
					if halveAt < 0 {
						halveAt = now + baseRTT
					}
					continue
				}
				sent++
				busy++
				delaySum += now - at
				acks = append(acks, now+baseRTT)
				break
			}
		}
		return delaySum / time.Duration(sent), float64(busy) / float64(20*time.Second/service)
	}
	bloat, _ := run(nil)
	delay, util := run(newCoDel())
	if bloat < 200*time.Millisecond {
		t.Fatalf("without CoDel the queue's delay is %v: the simulation does not fill the queue", bloat)
	}
	if delay > 20*time.Millisecond {
		t.Errorf("with CoDel the mean queue delay is %v, want near the 5 ms target (%v without)", delay, bloat)
	}
	if util < 0.9 {
		t.Errorf("with CoDel the link is busy %.2f of the time, want at least 0.9", util)
	}
	t.Logf("mean queue delay %v without CoDel, %v with it (link busy %.2f)", bloat, delay, util)
}
