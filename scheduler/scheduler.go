// Package scheduler decides which path(s) each tunnelled packet is sent on,
// estimates each path's capacity, and on the receiving side filters
// duplicate packets and restores their order.
//
// It is pure policy: no I/O, no goroutines, no clock. The caller takes a
// snapshot of its paths ([PathState]) and asks a [Scheduler] to pick for
// one [Packet]; every decision is a function of that snapshot, the packet
// and the scheduler's own small state, and allocates nothing. Time, where
// it matters ([Estimator], [Reorder]), is passed in by the caller as a
// monotonic time.Duration since an epoch of its choosing.
//
// A path is usable when it is Up and its send queue is not full. A
// Metered path (a 4G data plan) is usable only while no unmetered path is
// Up: it carries traffic when it is the only way through, never merely
// because an unmetered path is busy. This holds in every mode. The modes:
//
//   - [Failover]: paths are grouped in tiers by Priority (lower preferred).
//     The best tier with a usable path carries all traffic; a lower tier
//     carries traffic only when every higher one is down or full. Within a
//     tier, flows are spread across its usable paths by rendezvous hashing
//     of the flow hash, so a flow stays on one path while the tier's set of
//     usable paths is stable, and only the flows of a path that leaves the
//     tier move when it does.
//   - [Aggregate]: every path carries packets. When every path that is up
//     has a rate estimate, each packet goes where it is predicted to arrive
//     first (RTT/2 plus the path's queue and the packet at its delivery
//     rate), and is dropped when that path's queue is full (any other path
//     would reorder it by more than a full queue); otherwise packets are
//     spread over the usable paths in proportion to Weight by smooth
//     weighted round-robin (as in nginx). Priority is ignored. Packets of
//     a flow may be reordered across paths; the receiver's [Window] drops
//     duplicates and [Reorder] restores the order.
//   - [Redundant]: each packet is sent on the N (default 2) best usable
//     paths, lowest RTT first; the receiver keeps the first copy.
//   - [Flow]: a flow stays on one path, chosen by weighted rendezvous
//     hashing of the flow hash with the paths' estimated rates (or Weight)
//     as weights: only the flows of a path that goes down move. A packet
//     whose path's queue is full is dropped, not moved.
//   - [Auto]: a flow stays on one good path (as Flow, among the paths close
//     to the best one) unless that path is saturated and another path
//     close in RTT would deliver the packet earlier; Interactive packets
//     are duplicated on the two lowest-latency paths when a second one is
//     useful. A flow thus does no worse than on the best single path.
//
// [Multi] combines a [Classifier] with one Scheduler per traffic class;
// [IsInteractive] is the default rule for Interactive packets.
//
// Sender side, per path, an [Estimator] turns what was sent, RTT samples
// and the peer's reports into the Rate, RTT, MinRTT, Jitter and Loss of
// the path's PathState. Receiver side, per session, a [Window] drops
// duplicates and a [Reorder] buffer restores the order of what passes it,
// holding a gap for at most a hold time derived from the paths' RTT
// spread and jitter ([HoldFor]), within a byte budget.
//
// Paths are identified by their index in the snapshot. Schedulers keep
// per-index state, which is reset when the number of paths changes.
package scheduler

import (
	"fmt"
	"time"
)

// PathState is what the scheduler knows about one path at decision time.
// The estimates (Rate, MinRTT, Jitter, Loss) come from an [Estimator];
// zero means unknown, and a scheduler then falls back to Weight.
type PathState struct {
	Up       bool          // usable (handshake done, not declared dead)
	Priority int           // lower is preferred (failover tiers)
	Weight   float64       // configured share, used when there is no Rate (>0)
	RTT      time.Duration // smoothed RTT, 0 if unknown
	Queued   int           // packets waiting in this path's send queue
	QueueCap int           // capacity of that queue; Queued >= QueueCap means full; 0 means unbounded
	Metered  bool          // costs money per byte: used only when no unmetered path is up

	QueuedBytes int     // bytes waiting in the send queue; 0 means estimate from Queued
	Rate        float64 // estimated delivery rate in bytes/s, 0 if unknown
	// RateIsCapacity says Rate was measured while the path was the
	// limit (busy); otherwise it is only what the path carried, a lower
	// bound of its capacity.
	RateIsCapacity bool
	MinRTT         time.Duration // lowest recent RTT (the path without queueing), 0 if unknown
	Jitter         time.Duration // RTT variation (mean deviation), 0 if unknown
	Loss           float64       // estimated fraction of packets lost, 0..1
}

// usable reports whether the path can take a packet now: it is up, its
// queue is not full, and it is unmetered or allowed to be used (metered
// is true when no unmetered path is up).
func (s *PathState) usable(metered bool) bool {
	return s.Up && !s.full() && (!s.Metered || metered)
}

// full reports whether the path's send queue is full.
func (s *PathState) full() bool {
	return s.QueueCap > 0 && s.Queued >= s.QueueCap
}

// A filter admits the paths that are candidates for a decision: always
// only paths that are Up and not Metered unless metered paths are allowed,
// and by default only those whose queue is not full. The zero filter
// admits every usable path.
type filter struct {
	full    bool // also paths whose queue is full
	tier    bool // only paths of Priority prio
	prio    int
	minRate float64 // only paths with at least this Rate
	unrated bool    // with minRate, also paths with no Rate yet
	// capacity counts a Rate only where it was measured as the path's
	// capacity (RateIsCapacity): the rate of a path that was never the
	// limit is what it happened to carry, not what it can.
	capacity bool
	maxRTT   time.Duration // if > 0, only paths with a baseRTT at most this
	maxLoss  float64       // if > 0, only paths with at most this Loss
}

var usablePath filter

func (f *filter) admits(s *PathState, metered bool) bool {
	r := f.rate(s)
	return s.Up && (!s.Metered || metered) && (f.full || !s.full()) &&
		(!f.tier || s.Priority == f.prio) &&
		(f.minRate <= 0 || r >= f.minRate || f.unrated && r == 0) &&
		(f.maxRTT <= 0 || s.baseRTT() <= f.maxRTT) &&
		(f.maxLoss <= 0 || s.Loss <= f.maxLoss)
}

// rate is s's Rate as f counts it (see filter.capacity).
func (f *filter) rate(s *PathState) float64 {
	if f.capacity && !s.RateIsCapacity {
		return 0
	}
	return s.Rate
}

// meteredAllowed reports whether metered paths may carry traffic: only
// when no unmetered path is up.
func meteredAllowed(paths []PathState) bool {
	for i := range paths {
		if paths[i].Up && !paths[i].Metered {
			return false
		}
	}
	return true
}

// maxWeight bounds weights so that sums of them stay finite.
const maxWeight = 1e9

// weight is the path's Weight, made safe for arithmetic: a weight that is
// not positive (or NaN) counts as 1, a huge one as maxWeight.
func (s *PathState) weight() float64 {
	switch w := s.Weight; {
	case !(w > 0):
		return 1
	case w > maxWeight:
		return maxWeight
	default:
		return w
	}
}

// Packet is what the scheduler knows about one packet.
type Packet struct {
	Flow        uint64 // hash of the 5-tuple; equal for all packets of a flow
	Size        int    // bytes
	Interactive bool   // latency-sensitive (e.g. DNS, SSH keystrokes, VoIP)
	// Class is the traffic class for [Multi]: 0 is the default class, i
	// is class i-1 of its [Classifier]. Other schedulers ignore it.
	Class int
}

// A Scheduler picks the path(s) for each packet.
//
// A Scheduler is not safe for concurrent use: one goroutine (the one
// reading the TUN device) owns it.
type Scheduler interface {
	// Pick appends to dst the indexes (into paths) the packet should be
	// sent on, and returns it. An empty result means drop (no usable
	// path). Pick does not allocate when cap(dst) suffices (one index
	// per path is always enough), and does not retain paths.
	Pick(dst []int, p Packet, paths []PathState) []int
}

// Mode names a scheduling policy.
type Mode string

// The modes. The empty Mode means Failover: a configuration written before
// the other modes existed keeps its behaviour. New configurations should
// name Auto.
const (
	Failover  Mode = "failover"
	Aggregate Mode = "aggregate"
	Redundant Mode = "redundant"
	Flow      Mode = "flow"
	Auto      Mode = "auto"
)

// Modes lists every Mode, for help texts and validation.
var Modes = []Mode{Failover, Aggregate, Redundant, Flow, Auto}

// ParseMode returns the Mode named s. The empty string means Failover.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return Failover, nil
	case Failover, Aggregate, Redundant, Flow, Auto:
		return m, nil
	}
	return "", fmt.Errorf("scheduler: unknown mode %q (want one of %v)", s, Modes)
}

// New returns a new Scheduler for mode, with default settings (Redundant
// sends DefaultCopies copies).
func New(mode Mode) (Scheduler, error) {
	m, err := ParseMode(string(mode))
	if err != nil {
		return nil, err
	}
	switch m {
	case Aggregate:
		return new(aggregate), nil
	case Redundant:
		return NewRedundant(DefaultCopies), nil
	case Flow:
		return flow{}, nil
	case Auto:
		return auto{}, nil
	default:
		return failover{}, nil
	}
}

// AskBeforeResend decides what a client does with bytes that a path which
// just died sent in the round trip before it was last heard from: most of
// them usually arrived (a link that goes down loses what its own queues
// held, and congestion a packet here and there), but nothing says which.
// Resending them all at once costs the surviving paths their carriage,
// and holds up what follows; asking the peer which it lacks holds all of
// them back for a round trip of the surviving paths (and the peer's wait
// for the dead path to fall quiet). It asks when the path failed here
// (failedHere: its interface lost carrier or its address, so what it lost
// is what it had not yet written, which the caller resends at once and
// which is not among bytes), when carrying the bytes takes longer than
// two such round trips, or when every surviving path is metered (the
// bytes cost money); with no surviving path, or none whose rate is known,
// it does not. Measured in the failover report (50 Mbit/s 20 ms path
// cut, 20 Mbit/s 60 ms survivor): resending a round trip of the dead path
// at once filled the survivor for 150 ms, and a packet of it lost again
// to the survivor's queue cost the inner TCP its retransmission timeout.
func AskBeforeResend(states []PathState, bytes int, failedHere bool) bool {
	var rate float64
	var rtt time.Duration
	unmetered, up := false, false
	for _, st := range states {
		if !st.Up {
			continue
		}
		up = true
		if st.Metered {
			continue
		}
		unmetered = true
		rate += st.Rate
		r := st.MinRTT
		if r == 0 {
			r = st.RTT
		}
		if r > 0 && (rtt == 0 || r < rtt) {
			rtt = r
		}
	}
	switch {
	case !up:
		return false
	case failedHere, !unmetered:
		return true
	case rate <= 0 || rtt == 0:
		return false
	}
	return time.Duration(float64(bytes)/rate*float64(time.Second)) > 2*rtt
}

// OnePath reports whether exactly one path is up. Then no choice among
// paths depends on what QUIC's congestion control holds back, and the
// caller may send everything beside QUIC, as direct datagrams: the inner
// flows' own congestion control paces them, as over WireGuard, where
// QUIC's second one on top would only slow them down (measured: one TCP
// flow through braid at 0.72-0.83 of WireGuard inside QUIC, 1.27-1.59 of
// it beside).
func OnePath(paths []PathState) bool {
	n := 0
	for i := range paths {
		if paths[i].Up {
			n++
		}
	}
	return n == 1
}
