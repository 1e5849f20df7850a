package tunnel

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
)

func TestClockJumped(t *testing.T) {
	s := time.Second
	tests := []struct {
		name       string
		mono, wall time.Duration
		jumped     bool
		away       time.Duration
	}{
		{"on time", s, s, false, 0},
		{"a late tick", s + 500*time.Millisecond, s + 500*time.Millisecond, false, 0},
		{"a small NTP step", s, s + time.Second, false, 0},
		{"stopped 15 s (SIGSTOP)", 16 * s, 16 * s, true, 15 * s},
		{"asleep 20 s: monotonic clock stood still", s, 21 * s, true, 20 * s},
		{"wall clock stepped back", s, -5 * s, false, 0},
	}
	for _, tt := range tests {
		away, jumped := clockJumped(tt.mono, tt.wall)
		if jumped != tt.jumped || away != tt.away {
			t.Errorf("%s: clockJumped(%v, %v) = %v, %v; want %v, %v", tt.name, tt.mono, tt.wall, away, jumped, tt.away, tt.jumped)
		}
	}
}

// TestResumeAfterSleep: the wall clock jumps 20 s while the monotonic
// clock does not, as when a laptop sleeps. The client redials its path at
// once (the concentrator would have dropped it) and stays in its session.
func TestResumeAfterSleep(t *testing.T) {
	h := newHarness(t)
	server := h.netstackConcentrator()
	var offset atomic.Int64
	h.clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	client := h.netstackClient(scheduler.Failover, 1)
	waitFor(t, "path up", 10*time.Second, h.pathsUp(1))
	before := h.client.Status()
	offset.Store(int64(20 * time.Second))
	waitFor(t, "a new connection", 10*time.Second, func() bool {
		st := h.client.Status()
		return len(st.Paths) == 1 && st.Paths[0].Local != before.Paths[0].Local && st.Paths[0].State == "up"
	})
	transfer(t, client, server, 1<<20, nil)
	if after := h.client.Status(); after.Session != before.Session || after.Addresses[0] != before.Addresses[0] {
		t.Errorf("session %x %v became %x %v", before.Session, before.Addresses, after.Session, after.Addresses)
	}
}
