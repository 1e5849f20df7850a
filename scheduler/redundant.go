package scheduler

import "time"

// DefaultCopies is how many paths Redundant sends each packet on by
// default: two copies survive the loss or cut of any one path, and each
// further copy costs a whole path's worth of bandwidth again.
const DefaultCopies = 2

// redundant sends each packet on the n best usable paths: lowest Priority
// first, then lowest RTT (unknown RTT last), then lowest index. With fewer
// usable paths it sends on all of them. It is stateless.
type redundant struct {
	n int
}

// NewRedundant returns a Redundant scheduler that sends each packet on n
// paths; n < 1 means DefaultCopies.
func NewRedundant(n int) Scheduler {
	if n < 1 {
		n = DefaultCopies
	}
	return redundant{n: n}
}

func (r redundant) Pick(dst []int, _ Packet, paths []PathState) []int {
	return bestN(dst, r.n, paths, meteredAllowed(paths), usablePath, byPriorityRTT)
}

// bestN appends the n paths admitted by f that come first by less, best
// first.
// It selects by repeated scans, which for the few paths of a session is
// faster than sorting and allocates nothing.
func bestN(dst []int, n int, paths []PathState, metered bool, f filter, less func(a, b *PathState) bool) []int {
	start := len(dst)
	for range n {
		best := -1
		for i := range paths {
			if !f.admits(&paths[i], metered) || picked(dst[start:], i) {
				continue
			}
			if best < 0 || less(&paths[i], &paths[best]) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		dst = append(dst, best)
	}
	return dst
}

func picked(dst []int, i int) bool {
	for _, j := range dst {
		if j == i {
			return true
		}
	}
	return false
}

// byPriorityRTT orders paths by Priority, then by RTT.
func byPriorityRTT(a, b *PathState) bool {
	if a.Priority != b.Priority {
		return a.Priority < b.Priority
	}
	return byRTT(a, b)
}

// byRTT orders paths by RTT, an unknown (zero) RTT last.
func byRTT(a, b *PathState) bool {
	return rttKey(a.RTT) < rttKey(b.RTT)
}

func rttKey(d time.Duration) time.Duration {
	if d <= 0 {
		return 1<<63 - 1
	}
	return d
}

// A redundant packet whose copies all meet their paths' random loss is
// lost however many paths there are: with 3% loss on each of two paths,
// one in about a thousand (a call loses a packet every twenty seconds).
// CopiesFor adds copies, spread over the picked paths, until the chance
// that all of them are lost, from the paths' measured Loss, is at most
// copiesLossTarget, and sends at most maxCopies.
const (
	// copiesLossTarget: one packet in 100,000, two an hour of a 50
	// packets/s call.
	copiesLossTarget = 1e-5
	// maxCopies bounds what a lossy path costs: four copies is four times
	// the class's bandwidth, and beyond a loss of 5% on every path four
	// copies miss the target anyway.
	maxCopies = 4
)

// CopiesFor returns how many copies of a packet of a class that asks for
// copies (Copies) to send on picks, indexes into paths best first, picked
// by Pick: one on each pick, and at least min(copies, 2) on fewer picks,
// since a second copy on the same path still survives its random loss;
// then more, until the measured loss of the paths they go on, copy k on
// picks[k%len(picks)], leaves at most copiesLossTarget. A packet of no
// redundant class (copies < 2) goes once. It returns 0 with no picks.
func CopiesFor(paths []PathState, picks []int, copies int) int {
	switch {
	case len(picks) == 0:
		return 0
	case copies < 2:
		return 1
	}
	n := max(len(picks), min(copies, DefaultCopies))
	lost := 1.0
	for k := range n {
		lost *= paths[picks[k%len(picks)]].Loss
	}
	for n < maxCopies && lost > copiesLossTarget {
		lost *= paths[picks[n%len(picks)]].Loss
		n++
	}
	return n
}
