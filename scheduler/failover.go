package scheduler

// failover sends each packet on one usable path of the best (lowest
// Priority) tier that has one, chosen by rendezvous hashing of the flow.
// It is stateless.
type failover struct{}

func (failover) Pick(dst []int, p Packet, paths []PathState) []int {
	best, bestScore := -1, uint64(0)
	metered := meteredAllowed(paths)
	for i := range paths {
		s := &paths[i]
		if !s.usable(metered) {
			continue
		}
		score := rendezvous(p.Flow, i)
		if best < 0 || s.Priority < paths[best].Priority ||
			s.Priority == paths[best].Priority && score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return dst
	}
	return append(dst, best)
}

// rendezvous is the highest-random-weight score of path i for flow: the
// flow goes to the candidate with the highest score, so removing a
// candidate moves only the flows that were on it.
func rendezvous(flow uint64, i int) uint64 {
	return mix64(flow ^ (uint64(i)+1)*0x9e3779b97f4a7c15)
}

// mix64 is the SplitMix64 finaliser, a fast 64-bit bijective mixer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
