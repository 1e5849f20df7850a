package scheduler

import (
	"slices"
	"testing"
)

func TestFailover(t *testing.T) {
	tests := []struct {
		name  string
		paths []PathState
		want  []int // the indexes flows may land on; nil means drop
	}{
		{"no paths", nil, nil},
		{"single", []PathState{up(0, 1)}, []int{0}},
		{"priority order", []PathState{up(2, 1), up(0, 1), up(1, 1)}, []int{1}},
		{"negative priority", []PathState{up(0, 1), up(-1, 1)}, []int{1}},
		{"best down", []PathState{down(0, 1), up(1, 1), up(2, 1)}, []int{1}},
		{"best full", []PathState{full(0, 1), up(1, 1), up(2, 1)}, []int{1}},
		{"tier partly full", []PathState{full(0, 1), up(0, 1), up(1, 1)}, []int{1}},
		{"tier full spills", []PathState{full(0, 1), full(0, 1), up(1, 1), up(1, 1)}, []int{2, 3}},
		{"two tiers gone", []PathState{down(0, 1), full(1, 1), up(2, 1)}, []int{2}},
		{"tier shared", []PathState{up(0, 1), up(1, 1), up(0, 1), up(0, 1)}, []int{0, 2, 3}},
		{"all down", []PathState{down(0, 1), down(1, 1)}, nil},
		{"all full", []PathState{full(0, 1), full(1, 1)}, nil},
		{"down and full", []PathState{down(0, 1), full(1, 1)}, nil},
		{"unbounded queue", []PathState{{Up: true, Queued: 9}}, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := New(Failover)
			seen := map[int]int{}
			for flow := range uint64(1000) {
				got := pick(t, s, Packet{Flow: flow * 0x9e3779b97f4a7c15}, tt.paths)
				if tt.want == nil && got != -1 || tt.want != nil && !slices.Contains(tt.want, got) {
					t.Fatalf("flow %d: Pick = %d, want one of %v", flow, got, tt.want)
				}
				seen[got]++
			}
			// Flows share a tier: each path gets a fair part of 1000.
			for _, i := range tt.want {
				if n := seen[i]; n < 1000/len(tt.want)*3/4 {
					t.Errorf("path %d got %d of 1000 flows, want about %d", i, n, 1000/len(tt.want))
				}
			}
		})
	}
}

// TestFailoverSticky checks that a flow stays on its path while the tier is
// stable, and that a path leaving the tier moves only its own flows.
func TestFailoverSticky(t *testing.T) {
	s, _ := New(Failover)
	paths := []PathState{up(0, 1), up(0, 1), up(0, 1), up(1, 1)}
	const flows = 2000
	first := make([]int, flows)
	for f := range flows {
		first[f] = pick(t, s, Packet{Flow: uint64(f)}, paths)
	}
	// Same tier, changing queue depth and unrelated paths: nothing moves.
	paths[0].Queued, paths[3].Up = 10, false
	for range 3 {
		for f := range flows {
			if got := pick(t, s, Packet{Flow: uint64(f)}, paths); got != first[f] {
				t.Fatalf("flow %d moved from %d to %d with a stable tier", f, first[f], got)
			}
		}
	}
	// Path 1 fills up: only its flows move, and they stay in the tier.
	paths[1].Queued = paths[1].QueueCap
	moved := 0
	for f := range flows {
		got := pick(t, s, Packet{Flow: uint64(f)}, paths)
		switch {
		case first[f] == 1 && got != 0 && got != 2:
			t.Fatalf("flow %d moved from 1 to %d, want 0 or 2", f, got)
		case first[f] != 1 && got != first[f]:
			t.Fatalf("flow %d moved from %d to %d though its path is fine", f, first[f], got)
		case first[f] == 1:
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no flow was on path 1")
	}
	// Path 1 drains: its flows come back.
	paths[1].Queued = 0
	for f := range flows {
		if got := pick(t, s, Packet{Flow: uint64(f)}, paths); got != first[f] {
			t.Fatalf("flow %d is on %d after recovery, want %d", f, got, first[f])
		}
	}
}

// TestMeteredLast: a metered path carries traffic only when no unmetered
// path is up, in failover and in aggregate, whatever the priorities, and
// never because an unmetered path is merely full.
func TestMeteredLast(t *testing.T) {
	wifi := PathState{Up: true, Priority: 1, Weight: 1, QueueCap: 8}
	lte := PathState{Up: true, Priority: 0, Weight: 1, QueueCap: 8, Metered: true}
	full := wifi
	full.Queued = full.QueueCap
	down := wifi
	down.Up = false
	tests := []struct {
		name  string
		paths []PathState
		want  []int
	}{
		{"wifi up: metered unused despite its better priority", []PathState{wifi, lte}, []int{0}},
		{"wifi full: drop rather than spend", []PathState{full, lte}, []int{}},
		{"wifi down: metered carries", []PathState{down, lte}, []int{1}},
	}
	for _, mode := range []Mode{Failover, Aggregate} {
		for _, tt := range tests {
			s, _ := New(mode)
			for range 10 {
				got := s.Pick(nil, Packet{Flow: 7}, tt.paths)
				if len(got) != len(tt.want) || len(got) == 1 && got[0] != tt.want[0] {
					t.Errorf("%s, %s: Pick = %v, want %v", mode, tt.name, got, tt.want)
					break
				}
			}
		}
	}
}
