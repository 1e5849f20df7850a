package scheduler

import "math"

// flow keeps each flow on one path, chosen by weighted rendezvous
// hashing (Schindelhauer and Schomaker, "Weighted distributed hash
// tables", 2005): path i scores w_i / -ln(u_i), u_i uniform in (0,1) from
// the flow hash, and the flow takes the highest score. Each path gets a
// share of flows proportional to its weight, and a path that leaves moves
// only its own flows. It is stateless.
//
// The weights are the paths' estimated rates when every path that is up
// has one measured as a capacity (while the path was the limit), else
// their configured Weight: the rate of a path that never was the limit is
// only what it happened to carry, and weighting by it sent every flow to
// whichever path carried the first (measured: 8 flows on a 10 Mbit/s
// 200 ms path beside an idle 100 Mbit/s one). Rates are rounded to quarter octaves
// (steps of 19%) so that the small changes of a live estimate move no
// flow; only a real change of capacity does.
type flow struct{}

func (flow) Pick(dst []int, p Packet, paths []PathState) []int {
	metered := meteredAllowed(paths)
	f := filter{full: true}
	start := len(dst)
	dst = weightedRendezvous(dst, p.Flow, paths, metered, allCapacity(paths, metered, f), f)
	if len(dst) > start && paths[dst[start]].full() {
		return dst[:start]
	}
	return dst
}

// allCapacity reports whether every path f admits has a Rate measured
// as its capacity.
func allCapacity(paths []PathState, metered bool, f filter) bool {
	for i := range paths {
		if s := &paths[i]; f.admits(s, metered) && !s.RateIsCapacity {
			return false
		}
	}
	return true
}

// weightedRendezvous appends the path that f admits with the highest
// weighted rendezvous score for flow. With rated, the weights are the
// paths' rates as f counts them; a path without one counts as twice
// f.minRate, which must then be positive.
func weightedRendezvous(dst []int, flow uint64, paths []PathState, metered, rated bool, f filter) []int {
	best, bestScore := -1, 0.0
	for i := range paths {
		s := &paths[i]
		if !f.admits(s, metered) {
			continue
		}
		w := s.weight()
		switch r := f.rate(s); {
		case rated && r > 0:
			w = quantise(r)
		case rated: // admitted unrated (auto): as fast as the reference
			w = quantise(2 * f.minRate)
		}
		if score := w / -math.Log(unit(rendezvous(flow, i))); best < 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return dst
	}
	return append(dst, best)
}

// unit maps a hash to a float64 uniform in the open interval (0, 1).
func unit(h uint64) float64 {
	return (float64(h>>11) + 0.5) / (1 << 53)
}

// quantise rounds a positive rate to the nearest power of 2^(1/4) (in
// the log domain): round(4*log2(rate))/4, without the transcendentals.
func quantise(rate float64) float64 {
	frac, exp := math.Frexp(rate) // rate = frac * 2^exp, frac in [0.5, 1)
	k := 0
	for k < len(quarterBounds) && frac >= quarterBounds[k] {
		k++
	}
	return math.Ldexp(quarterSteps[k], exp)
}

// quarterSteps are 2^(-1+k/4), the quarter octaves of [0.5, 1]; a mantissa
// rounds up to step k+1 from quarterBounds[k] = 2^(-1+(k+0.5)/4) on.
var (
	quarterSteps  = [5]float64{0.5, math.Exp2(-0.75), math.Exp2(-0.5), math.Exp2(-0.25), 1}
	quarterBounds = [4]float64{math.Exp2(-0.875), math.Exp2(-0.625), math.Exp2(-0.375), math.Exp2(-0.125)}
)
