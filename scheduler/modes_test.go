package scheduler

import (
	"math"
	"slices"
	"testing"
	"time"
)

// rated is a usable path with a rate estimate (bytes/s) and an RTT.
func rated(prio int, rate float64, rtt time.Duration) PathState {
	return PathState{Up: true, Priority: prio, Weight: 1, QueueCap: 64, Rate: rate, RTT: rtt, MinRTT: rtt}
}

// capacity marks s's Rate as measured while the path was the limit.
func capacity(s PathState) PathState {
	s.RateIsCapacity = true
	return s
}

// with returns s changed by f.
func with(s PathState, f func(*PathState)) PathState {
	f(&s)
	return s
}

func queued(n int) func(*PathState) { return func(s *PathState) { s.Queued = n } }

// deep sets a queue of 256 packets, n of them used.
func deep(n int) func(*PathState) {
	return func(s *PathState) { s.Queued, s.QueueCap = n, 256 }
}
func metered(s *PathState) { s.Metered = true }
func lossy(l float64) func(*PathState) {
	return func(s *PathState) { s.Loss = l }
}

func TestRedundant(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		paths []PathState
		want  []int
	}{
		{"two of three by RTT", 2, []PathState{rated(0, 1, 30*ms), rated(0, 1, 10*ms), rated(0, 1, 20*ms)}, []int{1, 2}},
		{"three", 3, []PathState{rated(0, 1, 30*ms), rated(0, 1, 10*ms), rated(0, 1, 20*ms)}, []int{1, 2, 0}},
		{"more than paths", 5, []PathState{rated(0, 1, 30*ms), rated(0, 1, 10*ms)}, []int{1, 0}},
		{"default is two", 0, []PathState{rated(0, 1, 30*ms), rated(0, 1, 10*ms), rated(0, 1, 20*ms)}, []int{1, 2}},
		{"priority first", 2, []PathState{rated(1, 1, 10*ms), rated(0, 1, 50*ms), rated(0, 1, 40*ms)}, []int{2, 1}},
		{"unknown RTT last", 2, []PathState{up(0, 1), rated(0, 1, 90*ms), rated(0, 1, 80*ms)}, []int{2, 1}},
		{"ties by index", 2, []PathState{up(0, 1), up(0, 1), up(0, 1)}, []int{0, 1}},
		{"down and full skipped", 2, []PathState{down(0, 1), full(0, 1), up(0, 1)}, []int{2}},
		{"none", 2, []PathState{down(0, 1)}, nil},
		{"metered waits", 2, []PathState{with(rated(0, 1, 5*ms), metered), rated(0, 1, 50*ms)}, []int{1}},
		{"metered alone", 2, []PathState{with(rated(0, 1, 5*ms), metered), with(rated(0, 1, 9*ms), metered), down(0, 1)}, []int{0, 1}},
	}
	for _, tt := range tests {
		got := NewRedundant(tt.n).Pick(nil, Packet{}, tt.paths)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: Pick = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// flowShare picks for n flows and returns how many went on each path.
func flowShare(t *testing.T, s Scheduler, paths []PathState, n int) ([]int, []int) {
	t.Helper()
	count := make([]int, len(paths))
	where := make([]int, n)
	for f := range n {
		where[f] = pick(t, s, Packet{Flow: mix64(uint64(f))}, paths)
		if where[f] >= 0 {
			count[where[f]]++
		}
	}
	return count, where
}

func TestFlow(t *testing.T) {
	tests := []struct {
		name  string
		paths []PathState
		share []float64
	}{
		{"by rate 3:1", []PathState{capacity(rated(0, 3e6, 20*ms)), capacity(rated(0, 1e6, 20*ms))}, []float64{0.75, 0.25}},
		{"by rate, priority ignored", []PathState{capacity(rated(0, 1e6, 20*ms)), capacity(rated(5, 1e6, 20*ms))}, []float64{0.5, 0.5}},
		{"by weight when a rate is only what the path carried", []PathState{capacity(rated(0, 3e6, 20*ms)), rated(0, 1e4, 20*ms)}, []float64{0.5, 0.5}},
		{"by weight without rates", []PathState{up(0, 1), up(0, 3)}, []float64{0.25, 0.75}},
		{"by weight when one lacks a rate", []PathState{rated(0, 9e6, 20*ms), up(0, 1)}, []float64{0.5, 0.5}},
		{"down gets none", []PathState{rated(0, 1e6, 20*ms), down(0, 1), rated(0, 1e6, 20*ms)}, []float64{0.5, 0, 0.5}},
		{"metered waits", []PathState{with(rated(0, 1e6, ms), metered), rated(0, 1e6, 20*ms)}, []float64{0, 1}},
	}
	const n = 8000
	for _, tt := range tests {
		count, _ := flowShare(t, flow{}, tt.paths, n)
		for i, want := range tt.share {
			if got := float64(count[i]) / n; math.Abs(got-want) > 0.03 {
				t.Errorf("%s: path %d got %.3f of flows, want %.2f", tt.name, i, got, want)
			}
		}
	}
}

// TestFlowSticky checks that flows stay put while estimates wobble, and
// that a path leaving moves only its own flows.
func TestFlowSticky(t *testing.T) {
	paths := []PathState{rated(0, 2e6, 20*ms), rated(0, 1e6, 30*ms), rated(0, 1e6, 40*ms)}
	const n = 4000
	_, before := flowShare(t, flow{}, paths, n)
	paths[0].Rate, paths[1].Rate = 2.05e6, 1.02e6 // the same quarter octave
	paths[0].Queued, paths[2].RTT = 10, 80*ms
	if _, after := flowShare(t, flow{}, paths, n); !slices.Equal(before, after) {
		t.Error("flows moved when estimates changed a little")
	}
	paths[1].Up = false
	_, after := flowShare(t, flow{}, paths, n)
	for f := range n {
		if before[f] != 1 && after[f] != before[f] {
			t.Fatalf("flow %d moved from path %d to %d though its path stayed", f, before[f], after[f])
		}
	}
}

func TestAggregateEarliest(t *testing.T) {
	tests := []struct {
		name  string
		paths []PathState
		size  int
		want  int
	}{
		{"lower RTT", []PathState{rated(0, 1e6, 60*ms), rated(0, 1e6, 20*ms)}, 1000, 1},
		{"faster", []PathState{rated(0, 1e6, 20*ms), rated(0, 2e6, 20*ms)}, 1000, 1},
		// 20 packets of 1000 bytes at 1e6 B/s are 20 ms of queue.
		{"queue outweighs RTT", []PathState{with(rated(0, 1e6, 20*ms), queued(60)), rated(0, 1e6, 60*ms)}, 1000, 1},
		{"queue short of RTT", []PathState{with(rated(0, 1e6, 20*ms), queued(15)), rated(0, 1e6, 60*ms)}, 1000, 0},
		{"queued bytes", []PathState{with(rated(0, 1e6, 20*ms), func(s *PathState) { s.Queued, s.QueuedBytes = 1, 60000 }), rated(0, 1e6, 60*ms)}, 1000, 1},
		// The bottleneck's queue, as the RTT shows it above the base,
		// delays the data by all of it: 20 + 55 ms against 60 ms.
		{"network queue outweighs RTT", []PathState{with(rated(0, 6.25e6, 40*ms), func(s *PathState) { s.RTT = 95 * ms }), rated(0, 2.5e6, 120*ms)}, 1000, 1},
		// A rate that is not a capacity (what the path happened to carry)
		// counts as the fastest capacity: 30 ms against 20 + 40 ms.
		{"carried rate is no capacity", []PathState{capacity(with(rated(0, 6.25e6, 40*ms), func(s *PathState) { s.RTT = 80 * ms })), rated(0, 2e4, 60*ms)}, 1000, 1},
		{"network queue short of RTT", []PathState{with(rated(0, 6.25e6, 40*ms), func(s *PathState) { s.RTT = 70 * ms }), rated(0, 2.5e6, 120*ms)}, 1000, 0},
		{"tie to lower index", []PathState{rated(0, 1e6, 20*ms), rated(0, 1e6, 20*ms)}, 1000, 0},
		{"full winner drops", []PathState{with(rated(0, 1e6, 20*ms), queued(64)), rated(0, 1e3, 900*ms)}, 1000, -1},
		{"full loser skipped", []PathState{with(rated(0, 1e6, 20*ms), queued(64)), rated(0, 1e6, 60*ms)}, 1000, 1},
		{"metered waits", []PathState{with(rated(0, 1e9, ms), metered), rated(0, 1e3, 900*ms)}, 1000, 1},
		{"priority ignored", []PathState{rated(3, 1e6, 20*ms), rated(0, 1e6, 30*ms)}, 1000, 0},
	}
	for _, tt := range tests {
		s, _ := New(Aggregate)
		if got := pick(t, s, Packet{Size: tt.size}, tt.paths); got != tt.want {
			t.Errorf("%s: Pick = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestAuto(t *testing.T) {
	carried := rated // a rate that is only what the path carried
	rated := func(prio int, rate float64, rtt time.Duration) PathState { return capacity(rated(prio, rate, rtt)) }
	fast, slow := rated(0, 6.25e6, 20*ms), rated(0, 2.5e6, 60*ms) // 50 and 20 Mbit/s
	busy := with(fast, queued(32))
	tests := []struct {
		name        string
		paths       []PathState
		interactive bool
		want        []int // the paths that may carry a packet (or the exact duplicate set)
		dup         bool
	}{
		{"interactive duplicated", []PathState{slow, fast}, true, []int{1, 0}, true},
		{"interactive, second too late", []PathState{rated(0, 1e6, 20*ms), rated(0, 1e6, 200*ms)}, true, []int{0}, false},
		{"interactive, unknown RTTs", []PathState{up(0, 1), up(0, 1)}, true, []int{0, 1}, true},
		{"interactive, one path", []PathState{slow, down(0, 1)}, true, []int{0}, false},
		{"interactive, other tier", []PathState{fast, with(slow, func(s *PathState) { s.Priority = 1 })}, true, []int{0}, false},
		{"bulk on the fast path", []PathState{slow, fast}, false, []int{1}, false},
		{"bulk spread over equals", []PathState{fast, fast}, false, []int{0, 1}, false},
		{"lossy path is no home", []PathState{with(fast, lossy(0.03)), fast}, false, []int{1}, false},
		{"long path is no home", []PathState{rated(0, 6e6, 20*ms), rated(0, 6e6, 80*ms)}, false, []int{0}, false},
		// 120 packets of 1000 bytes at 6.25e6 B/s are 19.2 ms: the slow
		// path's 20 ms more one-way delay is about as much.
		{"saturated spills", []PathState{slow, with(fast, deep(130))}, false, []int{0}, false},
		{"saturated, queue short of the spread", []PathState{slow, with(fast, deep(110))}, false, []int{1}, false},
		{"saturated, short queue stays", []PathState{slow, busy}, false, []int{1}, false},
		// The bottleneck's queue: the RTT stands 60 ms above the base and
		// the slow path's packet arrives 10 ms sooner; with 4 ms of
		// jitter the home keeps it.
		{"bottleneck queue spills", []PathState{slow, with(fast, func(s *PathState) { s.RTT = 80 * ms })}, false, []int{0}, false},
		{"jitter is no queue", []PathState{slow, with(fast, func(s *PathState) { s.RTT = 24 * ms })}, false, []int{1}, false},
		{"saturated, no spill to a long path", []PathState{rated(0, 1e6, 200*ms), with(rated(0, 1e6, 20*ms), deep(200))}, false, []int{1}, false},
		// 250 packets at 6.25e6 B/s are 40 ms, the one-way difference of
		// a path 80 ms longer, beyond the spreadLimit of a 40 ms home
		// but within its spillLimit.
		{"saturated, spill to a path 80 ms longer", []PathState{rated(0, 2.5e6, 120*ms), with(rated(0, 6.25e6, 40*ms), func(s *PathState) { s.Queued, s.QueueCap = 255, 256 })}, false, []int{0}, false},
		{"saturated, no spill to a lossy path", []PathState{with(rated(0, 1e6, 40*ms), lossy(0.08)), with(rated(0, 1e6, 20*ms), deep(200))}, false, []int{1}, false},
		{"saturated, spill to a slightly lossy path", []PathState{with(rated(0, 1e6, 40*ms), lossy(0.015)), with(rated(0, 1e6, 20*ms), deep(200))}, false, []int{0}, false},
		{"full home overflows", []PathState{slow, with(fast, queued(64))}, false, []int{0}, false},
		{"full home, the other full too", []PathState{with(slow, queued(64)), with(fast, queued(64))}, false, nil, false},
		{"full home spills", []PathState{slow, with(fast, deep(256))}, false, []int{0}, false},
		{"full home, nowhere to spill", []PathState{rated(0, 1e6, 200*ms), with(fast, deep(256))}, false, nil, false},
		{"unrated: flow by weight", []PathState{up(0, 1), with(up(0, 1), queued(60))}, false, []int{0, 1}, false},
		// Rates that are only what the paths carried (an upload's
		// acknowledgements, seen from the concentrator) say nothing of
		// capacity: the shortest round trip is the home.
		{"no capacity: the shortest round trip", []PathState{carried(0, 6.25e6, 120*ms), carried(0, 1e4, 40*ms)}, false, []int{1}, false},
		{"no capacity: near equals share", []PathState{carried(0, 6.25e6, 30*ms), carried(0, 1e4, 30*ms)}, false, []int{0, 1}, false},
		{"no capacity: the lossy path is no home", []PathState{with(carried(0, 1e4, 20*ms), lossy(0.03)), carried(0, 1e4, 30*ms)}, false, []int{1}, false},
		{"no capacity: saturated spills", []PathState{carried(0, 2.5e6, 60*ms), with(carried(0, 6.25e6, 20*ms), deep(130))}, false, []int{0}, false},
		// An unrated path within the bounds is a home too, so it gets
		// measured: otherwise it never would (flows rarely saturate).
		{"partly rated: the unrated path is a home too", []PathState{with(up(0, 1), func(s *PathState) { s.RTT = 20 * ms }), fast}, false, []int{0, 1}, false},
		{"partly rated: an unrated path far slower is no home", []PathState{with(up(0, 1), func(s *PathState) { s.RTT = 400 * ms }), fast}, false, []int{1}, false},
		{"partly rated: the unrated path takes the excess", []PathState{with(fast, deep(130)), with(up(0, 1), func(s *PathState) { s.RTT = 20 * ms })}, false, []int{1}, false},
		{"tiers", []PathState{fast, with(slow, func(s *PathState) { s.Priority = -1 })}, false, []int{1}, false},
		{"metered waits", []PathState{with(fast, metered), slow}, true, []int{1}, false},
		{"none", []PathState{down(0, 1)}, false, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := New(Auto)
			seen := map[int]bool{}
			for f := range 200 {
				got := s.Pick(nil, Packet{Flow: mix64(uint64(f)), Size: 1000, Interactive: tt.interactive}, tt.paths)
				if tt.dup {
					if !slices.Equal(got, tt.want) {
						t.Fatalf("Pick = %v, want %v", got, tt.want)
					}
					continue
				}
				if len(got) > 1 || len(got) == 0 && tt.want != nil || len(got) == 1 && !slices.Contains(tt.want, got[0]) {
					t.Fatalf("flow %d: Pick = %v, want one of %v", f, got, tt.want)
				}
				if len(got) == 1 {
					seen[got[0]] = true
				}
			}
			if !tt.dup && len(seen) != len(tt.want) {
				t.Errorf("paths used %v, want all of %v", seen, tt.want)
			}
		})
	}
}

func TestSpreadLimit(t *testing.T) {
	for _, tt := range []struct{ in, want time.Duration }{{0, minSpread}, {10 * ms, 60 * ms}, {20 * ms, 70 * ms}, {100 * ms, 200 * ms}} {
		if got := spreadLimit(tt.in); got != tt.want {
			t.Errorf("spreadLimit(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestQuantise(t *testing.T) {
	for _, r := range []float64{1, 1.09, 1.091, 1.3, 1.5, 1.8, 1.9, 2, 3, 1e3, 6.25e6, 1.234567e8, 0.3} {
		want := math.Exp2(math.Round(4*math.Log2(r)) / 4)
		if got := quantise(r); math.Abs(got-want) > 1e-9*want {
			t.Errorf("quantise(%v) = %v, want %v", r, got, want)
		}
	}
	for r := 1.0; r < 1e9; r *= 1.0137 {
		want := math.Exp2(math.Round(4*math.Log2(r)) / 4)
		if got := quantise(r); math.Abs(got-want) > 1e-9*want {
			t.Fatalf("quantise(%v) = %v, want %v", r, got, want)
		}
	}
}
