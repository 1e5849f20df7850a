// Package scheduler decides which path(s) each tunnelled packet is sent on,
// and filters duplicate packets on the receiving side.
//
// It is pure policy: no I/O, no goroutines, no clock. The caller takes a
// snapshot of its paths ([PathState]) and asks a [Scheduler] to pick for
// one [Packet]; every decision is a function of that snapshot, the packet
// and the scheduler's own small state, and allocates nothing.
//
// A path is usable when it is Up and its send queue is not full. A
// Metered path (a 4G data plan) is usable only while no unmetered path is
// Up: it carries traffic when it is the only way through, never merely
// because an unmetered path is busy. The modes:
//
//   - [Failover]: paths are grouped in tiers by Priority (lower preferred).
//     The best tier with a usable path carries all traffic; a lower tier
//     carries traffic only when every higher one is down or full. Within a
//     tier, flows are spread across its usable paths by rendezvous hashing
//     of the flow hash, so a flow stays on one path while the tier's set of
//     usable paths is stable, and only the flows of a path that leaves the
//     tier move when it does.
//   - [Aggregate]: every usable path carries packets, in proportion to its
//     Weight, interleaved by smooth weighted round-robin (as in nginx).
//     Priority is ignored. Packets of a flow may be reordered across paths;
//     the receiver's [Window] tolerates that.
//
// Paths are identified by their index in the snapshot. Schedulers keep
// per-index state, which is reset when the number of paths changes.
package scheduler

import (
	"fmt"
	"time"
)

// PathState is what the scheduler knows about one path at decision time.
type PathState struct {
	Up       bool          // usable (handshake done, not declared dead)
	Priority int           // lower is preferred (failover tiers)
	Weight   float64       // configured/estimated share for aggregate (>0)
	RTT      time.Duration // smoothed RTT, 0 if unknown
	Queued   int           // packets waiting in this path's send queue
	QueueCap int           // capacity of that queue; Queued >= QueueCap means full; 0 means unbounded
	Metered  bool          // costs money per byte: used only when no unmetered path is up
}

// usable reports whether the path can take a packet now: it is up, its
// queue is not full, and it is unmetered or allowed to be used (metered
// is true when no unmetered path is up).
func (s *PathState) usable(metered bool) bool {
	return s.Up && (s.QueueCap <= 0 || s.Queued < s.QueueCap) && (!s.Metered || metered)
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

// The modes. The empty Mode means Failover, the default.
const (
	Failover  Mode = "failover"
	Aggregate Mode = "aggregate"
)

// ParseMode returns the Mode named s. The empty string means Failover.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return Failover, nil
	case Failover, Aggregate:
		return m, nil
	}
	return "", fmt.Errorf("scheduler: unknown mode %q (want %q or %q)", s, Failover, Aggregate)
}

// New returns a new Scheduler for mode.
func New(mode Mode) (Scheduler, error) {
	m, err := ParseMode(string(mode))
	if err != nil {
		return nil, err
	}
	switch m {
	case Aggregate:
		return new(aggregate), nil
	default:
		return failover{}, nil
	}
}
