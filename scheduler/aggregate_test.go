package scheduler

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestAggregateShare(t *testing.T) {
	tests := []struct {
		name    string
		weights []float64
		n       int
	}{
		{"3:1", []float64{3, 1}, 4000},
		{"1:3", []float64{1, 3}, 4000},
		{"equal", []float64{1, 1, 1}, 3000},
		{"5:2:1", []float64{5, 2, 1}, 8000},
		{"fractional", []float64{1.5, 0.5}, 4000},
		{"uneven", []float64{7, 3, 2.5}, 10001},
		{"single", []float64{2}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := make([]PathState, len(tt.weights))
			total := 0.0
			for i, w := range tt.weights {
				paths[i] = up(i, w) // priority is ignored
				total += w
			}
			got := run(t, Aggregate, paths, tt.n)
			for i, w := range tt.weights {
				want := float64(tt.n) * w / total
				if math.Abs(float64(got.count[i])-want) > 1 {
					t.Errorf("path %d (weight %v) got %d of %d packets, want %.1f±1", i, w, got.count[i], tt.n, want)
				}
				// Smooth: no path gets more than ceil(its weight over
				// the others')+1 packets in a row.
				if others := total - w; others > 0 {
					if limit := int(math.Ceil(w/others)) + 1; got.maxRun[i] > limit {
						t.Errorf("path %d (weight %v) got %d packets in a row, want at most %d", i, w, got.maxRun[i], limit)
					}
				}
			}
		})
	}
}

func TestAggregateSequence(t *testing.T) {
	s, _ := New(Aggregate)
	paths := []PathState{up(0, 3), up(0, 1)}
	var got []int
	for range 8 {
		got = s.Pick(got, Packet{}, paths)
	}
	want := []int{0, 0, 1, 0, 0, 0, 1, 0}
	if !slices.Equal(got, want) {
		t.Errorf("sequence = %v, want %v", got, want)
	}
}

func TestAggregateSkips(t *testing.T) {
	tests := []struct {
		name  string
		paths []PathState
		want  []int // packets per path over 400 picks
	}{
		{"full skipped", []PathState{full(0, 3), up(0, 1)}, []int{0, 400}},
		{"down skipped", []PathState{up(0, 1), down(0, 5), up(0, 1)}, []int{200, 0, 200}},
		{"all unusable", []PathState{down(0, 1), full(0, 1)}, []int{0, 0}},
		{"bad weights count as 1", []PathState{up(0, 0), up(0, -2), up(0, math.NaN()), up(0, 1)}, []int{100, 100, 100, 100}},
		{"huge weight", []PathState{up(0, math.Inf(1)), up(0, 1)}, []int{400, 0}},
		// Before rates are known, only paths near the shortest RTT share.
		{"far path waits for rates", []PathState{withRTT(up(0, 1), 20), withRTT(up(0, 1), 400)}, []int{400, 0}},
		{"near paths share", []PathState{withRTT(up(0, 1), 20), withRTT(up(0, 1), 60)}, []int{200, 200}},
		{"unknown RTT shares", []PathState{withRTT(up(0, 1), 20), up(0, 1)}, []int{200, 200}},
		{"nearest down: the far one carries", []PathState{withRTT(down(0, 1), 20), withRTT(up(0, 1), 400)}, []int{0, 400}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, Aggregate, tt.paths, 400)
			if !slices.Equal(got.count, tt.want) {
				t.Errorf("packets per path = %v, want %v (drops %d)", got.count, tt.want, got.drops)
			}
			if want := 400 - sum(tt.want); got.drops != want {
				t.Errorf("drops = %d, want %d", got.drops, want)
			}
		})
	}
}

// TestAggregateChanges checks paths going and coming and the path set
// changing size.
func TestAggregateChanges(t *testing.T) {
	s, _ := New(Aggregate)
	paths := []PathState{up(0, 1), up(0, 1), up(0, 2)}
	for range 10 {
		pick(t, s, Packet{}, paths)
	}
	// A path fills up and drains: the others carry its share meanwhile,
	// and the mix settles back to 1:1:2.
	paths[2].Queued = paths[2].QueueCap
	if got := countPicks(t, s, paths, 100); !near(got, []int{50, 50, 0}) {
		t.Errorf("with path 2 full: %v, want [50 50 0]±1", got)
	}
	paths[2].Queued = 0
	if got := countPicks(t, s, paths, 400); !near(got, []int{100, 100, 200}) {
		t.Errorf("after path 2 drained: %v, want [100 100 200]±1", got)
	}
	// Fewer paths, then more: state is reset, no index out of range.
	if got := countPicks(t, s, paths[:2], 100); !slices.Equal(got, []int{50, 50}) {
		t.Errorf("two paths: %v, want [50 50]", got)
	}
	paths = append(paths, up(0, 4))
	if got := countPicks(t, s, paths, 800); !slices.Equal(got, []int{100, 100, 200, 400}) {
		t.Errorf("four paths: %v, want [100 100 200 400]", got)
	}
	if got := countPicks(t, s, nil, 10); len(got) != 0 {
		t.Errorf("no paths: %v", got)
	}
}

type runStats struct {
	count  []int // packets per path
	maxRun []int // longest run of consecutive packets per path
	drops  int
}

// run picks n packets in mode over paths.
func run(t *testing.T, mode Mode, paths []PathState, n int) runStats {
	t.Helper()
	s, err := New(mode)
	if err != nil {
		t.Fatal(err)
	}
	st := runStats{count: make([]int, len(paths)), maxRun: make([]int, len(paths))}
	last, cur := -1, 0
	for f := range n {
		i := pick(t, s, Packet{Flow: uint64(f)}, paths)
		if i < 0 {
			st.drops++
			last = -1
			continue
		}
		st.count[i]++
		if i == last {
			cur++
		} else {
			last, cur = i, 1
		}
		st.maxRun[i] = max(st.maxRun[i], cur)
	}
	return st
}

func countPicks(t *testing.T, s Scheduler, paths []PathState, n int) []int {
	t.Helper()
	count := make([]int, len(paths))
	for range n {
		if i := pick(t, s, Packet{}, paths); i >= 0 {
			count[i]++
		}
	}
	return count
}

// near reports whether got is want, give or take one per path.
func near(got, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] < want[i]-1 || got[i] > want[i]+1 {
			return false
		}
	}
	return true
}

func sum(a []int) int {
	n := 0
	for _, x := range a {
		n += x
	}
	return n
}

// withRTT is s with a base RTT of ms milliseconds.
func withRTT(s PathState, ms int) PathState {
	s.RTT = time.Duration(ms) * time.Millisecond
	s.MinRTT = s.RTT
	return s
}
