package scheduler

import "slices"

// aggregate spreads packets over all usable paths in proportion to their
// weights with nginx's smooth weighted round-robin: on each pick, every
// usable path's current value grows by its weight, the path with the
// largest current value wins and has the total of the weights subtracted.
// The result is deterministic and evenly interleaved: with weights 3:1 the
// sequence is a a b a, a a b a, ...
//
// Unusable (down or full) paths neither gain nor lose, so they rejoin where
// they left off. The state is per path index and reset when the number of
// paths changes; if paths are reordered without the count changing, the
// mix is briefly uneven and then settles, as every value stays within the
// bounds of the weights.
type aggregate struct {
	current []float64
}

func (a *aggregate) Pick(dst []int, _ Packet, paths []PathState) []int {
	if len(a.current) != len(paths) {
		a.reset(len(paths))
	}
	best, total := -1, 0.0
	metered := meteredAllowed(paths)
	for i := range paths {
		s := &paths[i]
		if !s.usable(metered) {
			continue
		}
		w := s.weight()
		a.current[i] += w
		total += w
		if best < 0 || a.current[i] > a.current[best] {
			best = i
		}
	}
	if best < 0 {
		return dst
	}
	a.current[best] -= total
	return append(dst, best)
}

// reset forgets the state for n paths, reusing the slice when it can.
func (a *aggregate) reset(n int) {
	a.current = slices.Grow(a.current[:0], n)[:n]
	clear(a.current)
}
