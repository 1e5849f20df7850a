package scheduler

import "testing"

// losing is an up path with a measured loss.
func losing(loss float64) PathState {
	s := up(0, 1)
	s.Loss = loss
	return s
}

// TestCopiesFor: a redundant packet gets one copy per picked path, a
// second on a lone path, and more only while the paths' measured loss
// leaves more than copiesLossTarget of packets with every copy lost.
func TestCopiesFor(t *testing.T) {
	for _, tt := range []struct {
		name   string
		paths  []PathState
		picks  []int
		copies int
		want   int
	}{
		{"no picks", []PathState{losing(0.03)}, nil, 2, 0},
		{"no redundant class", []PathState{losing(0.03)}, []int{0}, 0, 1},
		{"two clean paths", []PathState{losing(0), losing(0)}, []int{0, 1}, 2, 2},
		{"one clean path", []PathState{losing(0)}, []int{0}, 2, 2},
		{"three picks of three copies", []PathState{losing(0), losing(0), losing(0)}, []int{0, 1, 2}, 3, 3},
		// 0.1% each: 1e-6 after two copies.
		{"two slightly lossy paths", []PathState{losing(0.001), losing(0.001)}, []int{0, 1}, 2, 2},
		// 3% each: 9e-4 after two, 2.7e-5 after three, 8.1e-7 after four.
		{"two paths at 3%", []PathState{losing(0.03), losing(0.03)}, []int{0, 1}, 2, 4},
		{"one path at 1.3%", []PathState{losing(0.013)}, []int{0}, 2, 3},
		// A clean path among the picks makes every further copy useless.
		{"one lossy, one clean", []PathState{losing(0.2), losing(0)}, []int{0, 1}, 2, 2},
		// 30%: the target is out of reach; maxCopies bounds the cost.
		{"very lossy", []PathState{losing(0.3), losing(0.3)}, []int{0, 1}, 2, maxCopies},
		// The copies asked for stand even above maxCopies.
		{"five asked", []PathState{losing(0), losing(0), losing(0), losing(0), losing(0)}, []int{0, 1, 2, 3, 4}, 5, 5},
		// Extra copies alternate over the picks: 0.05 * 0.001 * 0.05 = 2.5e-6.
		{"spread over the picks", []PathState{losing(0.05), losing(0.001)}, []int{0, 1}, 2, 3},
	} {
		if got := CopiesFor(tt.paths, tt.picks, tt.copies); got != tt.want {
			t.Errorf("%s: CopiesFor = %d, want %d", tt.name, got, tt.want)
		}
	}
}
