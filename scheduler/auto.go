package scheduler

import "time"

// auto keeps a flow on one good path and uses more only where that is
// predicted to help, so that a flow never does worse than on the best
// single path, which is what striping a TCP flow over unequal links
// does (reordering reads as loss, and the slow link's delay becomes the
// flow's). Per packet:
//
//  1. Candidates are the paths that are up in the best Priority tier that
//     has one (by default every uplink has Priority 0). A full queue does
//     not take a path out: it is saturated, not gone.
//  2. An Interactive packet goes on the two lowest-RTT candidates with
//     room in their queue when the second is useful: within
//     maxDuplicateSpread of the first. A copy later than that misses any
//     deadline an interactive packet has.
//  3. Otherwise the flow's home is chosen among the good candidates by
//     weighted rendezvous hashing of the flow, as in Flow: good means loss
//     within goodLossMargin of the lowest, and at least half the capacity
//     and a base RTT within the spreadLimit of the fastest such path.
//     Flows are spread over equal paths and stay put; a much slower,
//     longer or lossier path is no flow's home.
//  4. When the home is saturated (its queue, or its bottleneck's as its
//     RTT shows, is building), the packet goes
//     where it is predicted to arrive first among the home and the
//     candidates whose base RTT is within spillLimit of the home's and
//     whose loss is at most maxSpillLoss; when that is the home and its
//     queue is full, to the earliest of the others with room, and nowhere
//     (the caller waits for room) if there is none. The home wins while
//     its queue is short, so a second path carries only what the first
//     cannot.
//
// Capacity is a Rate measured while the path was the limit
// (RateIsCapacity): a path that never was carried only what it was given,
// and on the concentrator during an upload that is acknowledgements
// (measured: weighting by such rates sent 8 downloads to the 20 Mbit/s
// path beside an idle 50 Mbit/s one). A candidate without a capacity that
// passes the RTT and loss bounds is a home as if it were as fast as the
// fastest measured path, and may take a saturated home's excess as if it
// were as fast as the home: that is how it gets measured. While no
// capacity is measured at all, the homes are the least lossy paths whose
// base RTT is within the spreadLimit of the shortest, by Weight: a lone
// flow does best where its window opens fastest, and the others take the
// excess. It is stateless.
type auto struct{}

const (
	// maxDuplicateSpread bounds how much later than the first copy the
	// second may arrive and still be worth sending: ITU-T G.114 puts the
	// one-way delay budget of a conversation at 150 ms.
	maxDuplicateSpread = 150 * time.Millisecond
	// minSpread is the least spreadLimit: RTTs within 50 ms of each other
	// differ by less than a typical reorder hold and the jitter of a
	// loaded access link.
	minSpread = 50 * time.Millisecond
	// maxSpillSpread is how much longer than the home's the RTT of a path
	// that takes its excess may be: half of MaxHold, so that a spilled
	// packet's gap, one-way delay and queue included, fits the hold.
	maxSpillSpread = MaxHold / 2
	// goodLossMargin is how much lossier than the best path a home may
	// be: TCP's rate goes as 1/sqrt(loss) (Mathis et al. 1997), so 1%
	// more loss at least halves a flow on a clean path.
	goodLossMargin = 0.01
	// maxSpillLoss is the most loss a path may have to take a saturated
	// flow's excess: a packet lost there and not recovered costs the whole
	// flow a window reduction. braid resends what QUIC declares lost a
	// round trip later, within the receiver's reorder hold, so the flow
	// sees little of a few percent; more is a path not worth it. (At 2%,
	// the overflow's own bursts into a 20 Mbit/s path's queue, 2.6% lost,
	// closed the path to further overflow for good.)
	maxSpillLoss = 0.05
	// saturatedFraction: a path whose queue is at least 1/8 full is
	// saturated. A path that keeps up drains its queue between reads of
	// the TUN; 16 of 128 packets waiting means the sender is behind.
	saturatedFraction = 8
	// saturatedPackets is the saturation threshold of an unbounded queue.
	saturatedPackets = 16
	// minQueueDelay is the least queueing delay (RTT above the base RTT)
	// that tells of a saturated bottleneck: less is the jitter of an idle
	// access link.
	minQueueDelay = 5 * time.Millisecond
)

func (auto) Pick(dst []int, p Packet, paths []PathState) []int {
	metered := meteredAllowed(paths)
	prio, ok := bestTier(paths, metered)
	if !ok {
		return dst
	}
	tier := filter{tier: true, prio: prio}
	if p.Interactive {
		if d := duplicate(dst, paths, metered, tier); len(d)-len(dst) == 2 {
			return d
		}
	}
	up := tier
	up.full, up.capacity = true, true
	start := len(dst)
	if anyRated(paths, metered, up) {
		dst = weightedRendezvous(dst, p.Flow, paths, metered, true, good(paths, metered, up))
	} else {
		dst = weightedRendezvous(dst, p.Flow, paths, metered, false, nearest(paths, metered, up))
	}
	if len(dst) == start {
		return dst
	}
	home := &paths[dst[start]]
	if !home.saturated() || !(home.Rate > 0) {
		return dst
	}
	spill := spillFilter(up, home)
	if d := earliest(dst[:start], p.Size, paths, metered, spill, home.Rate); len(d) > start {
		return d
	}
	// The home's queue is full and it would still deliver first: the
	// excess goes to the earliest of the candidates with room, as
	// failover's overflow does, rather than wait for the home. The
	// prediction counts only the queues braid sees, not those of QUIC and
	// the network behind them (measured: auto kept 99% of 8 flows on a
	// 50 Mbit/s 40 ms path beside a 20 Mbit/s 120 ms one, where failover's
	// overflow got 0.95 of their sum).
	spill.full = false
	return earliest(dst[:start], p.Size, paths, metered, spill, home.Rate)
}

// anyRated reports whether some path f admits has a rate, as f counts
// rates.
func anyRated(paths []PathState, metered bool, f filter) bool {
	for i := range paths {
		if s := &paths[i]; f.admits(s, metered) && f.rate(s) > 0 {
			return true
		}
	}
	return false
}

// nearest returns the filter for the paths of tier that may be a flow's
// home while no capacity is measured: the least lossy (loss within
// goodLossMargin of the lowest) whose base RTT is within the spreadLimit
// of the lowest among them. Before anything is measured, a lone flow
// does best on the path of the shortest round trip, where its window
// opens fastest; the others are used by the spill, and measured.
func nearest(paths []PathState, metered bool, tier filter) filter {
	return nearRTT(paths, metered, leastLossy(paths, metered, tier))
}

// nearRTT narrows f to the paths whose base RTT is within the spreadLimit
// of the lowest among those f admits (or unknown).
func nearRTT(paths []PathState, metered bool, f filter) filter {
	var best time.Duration
	for i := range paths {
		if s := &paths[i]; f.admits(s, metered) && s.baseRTT() > 0 && (best == 0 || s.baseRTT() < best) {
			best = s.baseRTT()
		}
	}
	if best > 0 {
		f.maxRTT = spreadLimit(best)
	}
	return f
}

// leastLossy narrows tier to the paths whose loss is within
// goodLossMargin of the lowest among them.
func leastLossy(paths []PathState, metered bool, tier filter) filter {
	minLoss := 1.0
	for i := range paths {
		if s := &paths[i]; tier.admits(s, metered) {
			minLoss = min(minLoss, s.Loss)
		}
	}
	tier.maxLoss = minLoss + goodLossMargin
	return tier
}

// duplicate appends the two lowest-RTT paths admitted by tier when the
// second is useful, or just the first when it is not.
func duplicate(dst []int, paths []PathState, metered bool, tier filter) []int {
	start := len(dst)
	dst = bestN(dst, 2, paths, metered, tier, byRTT) // one tier: Priority is equal
	if len(dst)-start == 2 {
		a, b := &paths[dst[start]], &paths[dst[start+1]]
		if a.RTT > 0 && b.RTT-a.RTT > maxDuplicateSpread {
			dst = dst[:start+1]
		}
	}
	return dst
}

// bestTier returns the lowest Priority of a path that is up (full or not:
// a full tier is saturated, not gone).
func bestTier(paths []PathState, metered bool) (prio int, ok bool) {
	all := filter{full: true}
	for i := range paths {
		if s := &paths[i]; all.admits(s, metered) && (!ok || s.Priority < prio) {
			prio, ok = s.Priority, true
		}
	}
	return prio, ok
}

// good returns the filter for the paths of tier that may be a flow's home;
// some path of tier must have a rate. The reference is the fastest rated
// path among the least lossy (loss within
// goodLossMargin of the lowest), the lowest base RTT among equals; a home
// is as little lossy, has at least half the reference's rate and a base
// RTT within its spreadLimit. The reference always qualifies.
func good(paths []PathState, metered bool, tier filter) filter {
	f := leastLossy(paths, metered, tier)
	var ref *PathState
	for i := range paths {
		s := &paths[i]
		if !f.admits(s, metered) || !(f.rate(s) > 0) {
			continue
		}
		if ref == nil || f.rate(s) > f.rate(ref) || f.rate(s) == f.rate(ref) && rttKey(s.baseRTT()) < rttKey(ref.baseRTT()) {
			ref = s
		}
	}
	if ref == nil {
		return f
	}
	f.minRate = f.rate(ref) / 2
	f.unrated = true
	if r := ref.baseRTT(); r > 0 {
		f.maxRTT = spreadLimit(r)
	}
	return f
}

// spreadLimit is the longest base RTT a path may have to share the work
// of a path with base RTT rtt: twice rtt or minSpread more, whichever is
// larger. Beyond it, the receiver's reorder hold would make the slower
// path's delay the whole flow's.
func spreadLimit(rtt time.Duration) time.Duration {
	return max(2*rtt, rtt+minSpread)
}

// spillLimit is the longest base RTT a path may have to take the excess
// of a saturated home with base RTT rtt: twice rtt or maxSpillSpread
// more. It is wider than a home's bound: the excess is what the home
// cannot carry at all, and the receiver's reorder buffer holds a gap for
// the spread it measures, up to MaxHold. Measured on 50 Mbit/s 40 ms +
// 20 Mbit/s 120 ms round trips, a single flow got 0.89 of the faster path
// alone while the spill stopped at spreadLimit, and failover, which
// spills onto any lower tier, 1.12 to 1.26.
func spillLimit(rtt time.Duration) time.Duration {
	return max(2*rtt, rtt+maxSpillSpread)
}

// spillFilter narrows f to the paths a saturated home may spill onto:
// base RTT within its spill limit, loss at most maxSpillLoss (or the
// home's, so that the home stays a candidate).
func spillFilter(f filter, home *PathState) filter {
	f.maxRTT = spillLimit(home.baseRTT())
	f.maxLoss = max(maxSpillLoss, home.Loss)
	return f
}

// saturated reports whether the path's send queue is building, or the
// queue of its bottleneck: the RTT stands a quarter (at least
// minQueueDelay) above the base RTT. A congestion window larger than the
// path's capacity (QUIC's grows until the bottleneck's queue overflows)
// keeps braid's own queue empty while the bottleneck's fills: measured,
// a lone upload over two equal 30 Mbit/s uplinks stayed on one (9:91)
// until a loss shrank the window.
func (s *PathState) saturated() bool {
	if s.MinRTT > 0 && s.RTT-s.MinRTT >= max(s.MinRTT/4, minQueueDelay) {
		return true
	}
	if s.QueueCap > 0 {
		return s.Queued*saturatedFraction >= s.QueueCap
	}
	return s.Queued >= saturatedPackets
}

// baseRTT is the path's RTT without queueing: MinRTT when known, else RTT.
func (s *PathState) baseRTT() time.Duration {
	if s.MinRTT > 0 {
		return s.MinRTT
	}
	return s.RTT
}
