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
