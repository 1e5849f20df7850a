package scheduler

import "slices"

// aggregate sends each packet on the path where it is predicted to arrive
// first (see arrival and earliest). That fills every path in proportion
// to its rate, and a slow path gets a packet only when the fast one's
// queue has grown so much that the slow path is quicker: a flow is never
// slowed by a path that would deliver its packets later than the queue of
// a faster one.
//
// When some path that is up has no rate estimate yet, it spreads packets
// over the usable paths in proportion to their weights with nginx's smooth
// weighted round-robin: on each pick, every usable path's current value
// grows by its weight, the path with the largest current value wins and
// has the total of the weights subtracted. Only paths whose base RTT is
// within spreadLimit of the shortest take part, as auto's homes: a flow
// spread over 10 ms and 400 ms paths before their rates are known waits
// for the slow one at the receiver, and a TCP upload that starts so
// stayed at 0.62 of the fast uplink alone.
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

func (a *aggregate) Pick(dst []int, p Packet, paths []PathState) []int {
	metered := meteredAllowed(paths)
	// A rate measured while the path was not the limit is what it happened
	// to carry: on the concentrator during an upload, its
	// acknowledgements. Such a path is taken to be as fast as the fastest
	// measured capacity, so it gets traffic where that would arrive first,
	// and is measured (it kept every download on one path, 100:0).
	if f := (filter{full: true, capacity: true}); allRated(paths, metered, filter{full: true}) {
		return earliest(dst, p.Size, paths, metered, f, fastest(paths, metered, f))
	}
	return a.roundRobin(dst, paths, metered)
}

// roundRobin is the smooth weighted round-robin pick, among the usable
// paths whose base RTT is within spreadLimit of the shortest (or unknown).
func (a *aggregate) roundRobin(dst []int, paths []PathState, metered bool) []int {
	if len(a.current) != len(paths) {
		a.reset(len(paths))
	}
	f := nearRTT(paths, metered, usablePath)
	best, total := -1, 0.0
	for i := range paths {
		s := &paths[i]
		if !f.admits(s, metered) {
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

// allRated reports whether every path f admits has a rate estimate.
func allRated(paths []PathState, metered bool, f filter) bool {
	for i := range paths {
		if s := &paths[i]; f.admits(s, metered) && !(s.Rate > 0) {
			return false
		}
	}
	return true
}

// earliest appends the path that f admits where a packet of size bytes is
// predicted to arrive first, or nothing if that path's queue is full (f
// may admit full paths): every other path would deliver the packet later
// than the full queue would, reordering it by more than a queue's worth,
// so the packet is dropped, as a router drops at a full queue, and the
// sender's congestion control slows down. A path without a rate is taken
// to have rate assume, or is no candidate if assume is 0; with
// f.capacity, so is one whose rate is not a capacity, if assume is more.
// Ties go to the lower index.
func earliest(dst []int, size int, paths []PathState, metered bool, f filter, assume float64) []int {
	best, bestAt := -1, 0.0
	for i := range paths {
		s := &paths[i]
		if !f.admits(s, metered) {
			continue
		}
		rate := s.Rate
		if !(rate > 0) || f.capacity && !s.RateIsCapacity {
			rate = max(rate, assume)
		}
		if !(rate > 0) {
			continue
		}
		if at := s.arrival(size, rate); best < 0 || at < bestAt {
			best, bestAt = i, at
		}
	}
	if best < 0 || paths[best].full() {
		return dst
	}
	return append(dst, best)
}

// arrival predicts in how many seconds a packet of size bytes queued now
// would reach the peer: half the base RTT (the one-way delay of the empty
// path), plus the queueing delay the RTT shows above it (all of it: the
// queue is on the way out, where the data goes, not on the way back of the
// acknowledgements), plus the time to send what is queued before it and
// itself at the path's delivery rate, rate > 0. Counting half the queue,
// as half the smoothed RTT did, put a 50 Mbit/s path whose bottleneck
// queue held 55 ms ahead of an idle 20 Mbit/s path 40 ms longer, and
// aggregate kept 8 uploads on it alone (100:0, 0.72 of the sum).
func (s *PathState) arrival(size int, rate float64) float64 {
	base := s.baseRTT()
	return (base/2 + max(s.RTT-base, 0)).Seconds() + float64(s.backlog(size)+size)/rate
}

// backlog is the number of bytes queued on the path: QueuedBytes when the
// caller counts them, else Queued packets of size bytes each.
func (s *PathState) backlog(size int) int {
	if s.QueuedBytes > 0 {
		return s.QueuedBytes
	}
	return s.Queued * size
}

// fastest returns the largest rate f counts among the paths it admits, 0
// if none has one.
func fastest(paths []PathState, metered bool, f filter) float64 {
	r := 0.0
	for i := range paths {
		if s := &paths[i]; f.admits(s, metered) {
			r = max(r, f.rate(s))
		}
	}
	return r
}
