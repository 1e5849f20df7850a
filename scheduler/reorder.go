package scheduler

import (
	"math"
	"math/bits"
	"time"
)

// Reorder is the receiver's reorder buffer for one session: it takes the
// session's data packets, tagged with their sequence number, after the
// duplicate filter ([Window]) and before the TUN writer, and releases them
// in sequence order. Packets striped over paths of unequal delay arrive
// out of order, which the inner TCP would read as loss.
//
//	path receivers ──▶ Window.Accept ──▶ Reorder.Push ──▶ TUN writer
//	timer at Deadline ──────────────────▶ Reorder.Expire ─┘
//
// A gap (a sequence number not yet seen) is waited for at most Hold after
// the arrival of the oldest packet held behind it: then the buffer gives
// up on it and releases what follows, up to the next gap. It gives up
// sooner when told (Passed) that every path in use has delivered beyond
// the gap: each path delivers in order, so the gap was lost. The caller sets
// the base hold from the paths in use (see HoldFor), and 0 when only one
// path carries data: then the buffer gets out of the way and releases
// every packet as it comes.
//
// The paths' RTTs do not tell the whole delay spread: packets also wait
// in the sender's queues, and a sender that spills onto a second path
// only when the first one's queue is full (failover's overflow, auto)
// puts them on the idle path a whole queue ahead. So the buffer also
// measures the spread itself: how long each filled gap was waited for,
// and how late a packet came whose gap had been given up on at the
// deadline. Hold is the larger of the base and that measured spread (its
// decaying maximum, plus an eighth), at most MaxHold.
//
// Memory is bounded twice: held packets never total more than the byte
// budget (to take a packet that would exceed it, the buffer first
// releases from the front, giving up on the gaps in between, so it
// flushes rather than grows), and they are kept in a ring of a fixed
// number of slots allocated once (a packet too far ahead of the front for
// the ring makes room the same way). Nothing is allocated per packet:
// values are stored in the ring and released by appending to the caller's
// slice.
//
// No packet is ever dropped: every value pushed is released exactly once.
// A packet whose gap was already given up on (it arrived after the
// deadline, or after a flush, or is older than any seen) is released at
// once, out of order, and counted as Late: it is late already, and the
// inner protocol copes better with a late packet than with a lost one.
//
// Sequence numbers are compared in serial number arithmetic (RFC 1982,
// over 64 bits), so a wrap of the uint64 is just a step forward. (braid's
// 56-bit numbers last millennia, and the Window upstream rejects one that
// went backwards, so this is a matter of robustness only.)
//
// Per session, not per flow. The sequence number is per session, and a
// receiver cannot tell which flow a missing number belonged to, so a
// per-flow buffer would have to wait on every gap for every flow anyway.
// Instead, a packet known not to need ordering (its flow was pinned to one
// path by the sender, which a header flag could say) is given to Bypass:
// it is released at once and leaves no gap, so only striped flows wait.
//
// The zero Reorder is not usable; NewReorder makes one. It is not safe
// for concurrent use: the caller serialises calls, e.g. under the same
// lock as the session's Window.
type Reorder[T any] struct {
	hold   time.Duration // in force: max(base, measured spread), at most MaxHold
	base   time.Duration // set by SetHold
	budget int

	// spread is the measured delay spread: the decaying maximum of the
	// waits of filled gaps and of the lateness of late packets, as of
	// spreadAt. expired remembers the last gaps given up at the deadline,
	// to tell how late a packet of theirs came.
	spread   time.Duration
	spreadAt time.Duration
	expired  [expiredGaps]expiredGap
	expNext  int

	ring []reorderSlot[T] // len is a power of two
	mask uint64

	next    uint64 // lowest sequence number neither released nor given up
	entries int    // slots in use: held packets and bypass marks
	held    int    // packets held
	bytes   int    // bytes held
	since   time.Duration

	stats ReorderStats
}

// expiredGap is a run of sequence numbers given up on at the deadline.
type expiredGap struct {
	from, to uint64        // [from, to)
	at       time.Duration // when
	hold     time.Duration // after waiting this long
}

// expiredGaps is how many given-up gaps a Reorder remembers (2 KiB): a
// packet later than that many deadlines is not measured. A spill onto
// an idle path that gives up a gap every few milliseconds is still
// measured 100 ms later.
const expiredGaps = 64

// spreadHalfLife is how fast the measured spread decays: reordering
// that stops (a spill that ended) frees the flows of the longer hold
// within seconds.
const spreadHalfLife = 2 * time.Second

type reorderSlot[T any] struct {
	v      T
	seq    uint64
	at     time.Duration // arrival
	size   int
	used   bool
	bypass bool // a mark for a packet already released by Bypass
}

// ReorderStats counts what a Reorder did.
type ReorderStats struct {
	Held       uint64 // packets that waited for a gap
	Late       uint64 // packets released out of order: their gap was given up
	Skipped    uint64 // sequence numbers given up on
	Expired    uint64 // gaps given up on at the deadline
	Overflows  uint64 // gaps given up on to keep within the budget or the ring
	Duplicates uint64 // packets whose sequence number was already held (released anyway)
}

const (
	// DefaultReorderBudget is the default byte budget of a session's
	// buffer: 100 ms of a 100 Mbit/s path's traffic, enough to cover the
	// delay spread of two terrestrial uplinks at that rate.
	DefaultReorderBudget = 1 << 20 // bytes
	// DefaultReorderSlots is the default ring size: at the budget, 1024
	// packets average 1 KiB, and smaller packets than that are rarely the
	// ones that fill a link. The ring costs some 48 bytes a slot (plus
	// the size of T) per session.
	DefaultReorderSlots = 1024
	// maxReorderSlots bounds the ring: a Window accepts nothing more than
	// WindowSize behind its newest packet, so a longer ring would hold
	// packets for gaps that can never be filled.
	maxReorderSlots = 8192
	// MaxHold is the longest Hold: Linux's minimum TCP retransmission
	// timeout is 200 ms, and holding a packet longer than the sender's
	// timeout makes it retransmit what was merely reordered.
	MaxHold = 200 * time.Millisecond
)

// FirstSeq is the first sequence number of a session, the one a new or
// reset buffer waits for. A buffer that starts in the middle of a session
// gives up on the numbers below the first it gets at the deadline, or at
// once when they are more than the ring can span.
const FirstSeq = 1

// NewReorder returns a buffer holding at most budget bytes in slots
// slots (rounded up to a power of two, at most 8192); zero or negative
// values mean the defaults. Hold starts at 0: packets pass straight
// through until SetHold.
func NewReorder[T any](budget, slots int) *Reorder[T] {
	if budget <= 0 {
		budget = DefaultReorderBudget
	}
	if slots <= 0 {
		slots = DefaultReorderSlots
	}
	n := 1 << bits.Len(uint(min(slots, maxReorderSlots)-1))
	return &Reorder[T]{budget: budget, ring: make([]reorderSlot[T], n), mask: uint64(n - 1), next: FirstSeq}
}

// SetHold sets how long a gap is waited for, at most MaxHold. 0 makes the
// buffer pass packets straight through; what it holds is released at the
// next Push or Expire.
func (r *Reorder[T]) SetHold(d time.Duration) {
	r.base = min(max(d, 0), MaxHold)
	r.setHold()
}

// Hold returns the hold time in force: the base that SetHold set, or
// the measured spread when that is longer (0 while the base is 0).
func (r *Reorder[T]) Hold() time.Duration { return r.hold }

// Spread returns the measured delay spread (see Reorder).
func (r *Reorder[T]) Spread() time.Duration { return r.spread }

func (r *Reorder[T]) setHold() {
	r.hold = r.base
	if r.base > 0 {
		r.hold = min(max(r.base, r.spread+r.spread/8), MaxHold)
	}
}

// measure takes a sample d of the delay spread at now.
func (r *Reorder[T]) measure(now, d time.Duration) {
	r.decay(now)
	if d > r.spread {
		r.spread = d
		r.setHold()
	}
}

// tick lets the measured spread decay as time passes, every spreadTick.
func (r *Reorder[T]) tick(now time.Duration) {
	if r.spread > 0 && now-r.spreadAt >= spreadTick {
		r.decay(now)
		r.setHold()
	}
}

// spreadTick is how often the measured spread decays: often enough to
// follow spreadHalfLife, seldom enough to cost nothing per packet.
const spreadTick = 50 * time.Millisecond

// decay halves the measured spread every spreadHalfLife since it was
// last measured, and notes now.
func (r *Reorder[T]) decay(now time.Duration) {
	if now <= r.spreadAt {
		return
	}
	if r.spread > 0 {
		dt := now - r.spreadAt
		if dt >= 16*spreadHalfLife {
			r.spread = 0
		} else {
			r.spread = time.Duration(float64(r.spread) * math.Exp2(-float64(dt)/float64(spreadHalfLife)))
		}
	}
	r.spreadAt = now
}

// Stats returns the counters.
func (r *Reorder[T]) Stats() ReorderStats { return r.stats }

// Len returns the number of packets and bytes held.
func (r *Reorder[T]) Len() (packets, bytes int) { return r.held, r.bytes }

// Deadline returns when Expire must be called next: the arrival of the
// oldest held packet plus Hold. ok is false when nothing is held.
func (r *Reorder[T]) Deadline() (d time.Duration, ok bool) {
	if r.held == 0 {
		return 0, false
	}
	return r.since + r.hold, true
}

// Reset releases everything held, in order, and forgets the sequence, as
// for a new session.
func (r *Reorder[T]) Reset(out []T) []T {
	out = r.flush(out)
	r.next = FirstSeq
	return out
}

// Start empties the buffer, as Reset does, and expects seq next: for a
// buffer put in place while a session's packets are already flowing.
func (r *Reorder[T]) Start(out []T, seq uint64) []T {
	out = r.flush(out)
	r.next = seq
	return out
}

// Push takes the packet v of size bytes with sequence number seq,
// arrived at now, and appends to out, in order, the packets it releases
// (v among them, or not yet).
func (r *Reorder[T]) Push(out []T, now time.Duration, seq uint64, size int, v T) []T {
	r.tick(now)
	switch {
	case r.hold == 0:
		return r.pass(r.flush(out), seq, v)
	case before(seq, r.next):
		r.stats.Late++
		r.measureLate(now, seq)
		return append(out, v)
	case seq == r.next && r.entries == 0:
		r.next++ // in order with nothing held: the common case
		return append(out, v)
	}
	out = r.makeRoom(out, seq, size)
	if before(seq, r.next) { // the room made passed seq
		r.stats.Late++
		return append(out, v)
	}
	s := &r.ring[seq&r.mask]
	if s.used {
		r.stats.Duplicates++
		return append(out, v)
	}
	*s = reorderSlot[T]{v: v, seq: seq, at: now, size: size, used: true}
	r.entries++
	r.held++
	r.bytes += size
	if r.held == 1 || now < r.since {
		r.since = now
	}
	if seq == r.next {
		if r.held > 1 { // it filled a gap that others waited behind
			r.measure(now, now-r.since)
		}
		return r.releaseRun(out)
	}
	r.stats.Held++
	return out
}

// measureLate measures how late the packet seq came, if its gap was given
// up on at a deadline that the buffer remembers.
func (r *Reorder[T]) measureLate(now time.Duration, seq uint64) {
	for i := range r.expired {
		e := &r.expired[i]
		if e.to != e.from && !before(seq, e.from) && before(seq, e.to) {
			r.measure(now, now-e.at+e.hold)
			return
		}
	}
}

// Bypass releases v (sequence number seq) at once, out of order with
// whatever is held, and notes seq as released so that it leaves no gap.
// It is for packets that need no ordering, such as those of a flow that
// the sender kept on one path.
func (r *Reorder[T]) Bypass(out []T, seq uint64, v T) []T {
	if r.hold == 0 {
		return r.pass(r.flush(out), seq, v)
	}
	if before(seq, r.next) {
		return append(out, v)
	}
	out = r.makeRoom(out, seq, 0)
	if seq == r.next {
		r.next++
		return r.releaseRun(append(out, v))
	}
	if s := &r.ring[seq&r.mask]; !s.used {
		*s = reorderSlot[T]{seq: seq, used: true, bypass: true}
		r.entries++
	}
	return append(out, v)
}

// Passed tells the buffer that every path in use has delivered some
// sequence number at or above seq: as a path delivers in order, a gap
// below seq can no longer be filled, so the buffer gives up on it at
// once instead of at the deadline, and appends what that releases to
// out. The caller passes the lowest, over the paths that carry data, of
// the highest sequence number each delivered; a path that has not carried
// data lately must be left out (it would only delay this), and a packet
// that arrives after all (reordered within a path) is released as Late.
func (r *Reorder[T]) Passed(out []T, seq uint64) []T {
	if r.hold == 0 || !before(r.next, seq) {
		return out
	}
	return r.advance(out, seq)
}

// pass releases v at once, as the buffer does while Hold is 0: a packet
// ahead of the front moves it past v, a packet behind it is Late.
func (r *Reorder[T]) pass(out []T, seq uint64, v T) []T {
	if before(seq, r.next) {
		r.stats.Late++
	} else {
		r.stats.Skipped += seq - r.next
		r.next = seq + 1
	}
	return append(out, v)
}

// Expire gives up on gaps whose deadline has passed at now, appending the
// packets that it releases to out.
func (r *Reorder[T]) Expire(out []T, now time.Duration) []T {
	r.tick(now)
	if r.hold == 0 {
		return r.flush(out)
	}
	for r.held > 0 && now-r.since >= r.hold {
		r.stats.Expired++
		from, skipped := r.next, r.stats.Skipped
		out = r.skipGap(out)
		r.expired[r.expNext] = expiredGap{from: from, to: from + (r.stats.Skipped - skipped), at: now, hold: r.hold}
		r.expNext = (r.expNext + 1) % expiredGaps
	}
	return out
}

// makeRoom releases from the front until a packet of size bytes with
// sequence number seq fits within the ring and the budget.
func (r *Reorder[T]) makeRoom(out []T, seq uint64, size int) []T {
	if seq-r.next >= uint64(len(r.ring)) {
		r.stats.Overflows++
		out = r.advance(out, seq-uint64(len(r.ring))+1)
	}
	for r.bytes+size > r.budget && r.held > 0 {
		r.stats.Overflows++
		out = r.skipGap(out)
	}
	if size > r.budget && before(r.next, seq) {
		// Too big to hold at all: give up on everything before it.
		r.stats.Overflows++
		out = r.advance(out, seq)
	}
	return out
}

// advance gives up on every sequence number below base, releasing the
// packets held there in order, then releases the run from base.
func (r *Reorder[T]) advance(out []T, base uint64) []T {
	for ; r.entries > 0 && before(r.next, base); r.next++ {
		out = r.take(out, r.next)
	}
	if before(r.next, base) {
		r.stats.Skipped += base - r.next
		r.next = base
	}
	out = r.releaseRun(out)
	if r.held > 0 {
		r.since = r.oldest()
	}
	return out
}

// skipGap gives up on the gap at the front: the front moves to the
// lowest sequence number in use, and the run from there is released.
func (r *Reorder[T]) skipGap(out []T) []T {
	first := r.next
	for !r.ring[first&r.mask].used || r.ring[first&r.mask].seq != first {
		first++
	}
	r.stats.Skipped += first - r.next
	r.next = first
	return r.releaseRun(out)
}

// releaseRun releases the packets held from the front on, up to the next
// gap, then finds the new oldest packet.
func (r *Reorder[T]) releaseRun(out []T) []T {
	oldest := false
	for {
		s := &r.ring[r.next&r.mask]
		if !s.used || s.seq != r.next {
			break
		}
		oldest = oldest || !s.bypass && s.at <= r.since
		out = r.take(out, r.next)
		r.next++
	}
	if oldest && r.held > 0 {
		r.since = r.oldest()
	}
	return out
}

// take frees the slot of seq, appending its packet (if it holds one, not
// a bypass mark) to out. It does not move the front.
func (r *Reorder[T]) take(out []T, seq uint64) []T {
	s := &r.ring[seq&r.mask]
	if !s.used || s.seq != seq {
		r.stats.Skipped++
		return out
	}
	if !s.bypass {
		out = append(out, s.v)
		r.held--
		r.bytes -= s.size
	}
	r.entries--
	*s = reorderSlot[T]{} // drop the reference to v
	return out
}

// oldest returns the earliest arrival among the held packets, which must
// be some.
func (r *Reorder[T]) oldest() time.Duration {
	var at time.Duration
	seen := 0
	for seq := r.next; seen < r.held; seq++ {
		if s := &r.ring[seq&r.mask]; s.used && s.seq == seq && !s.bypass {
			if seen == 0 || s.at < at {
				at = s.at
			}
			seen++
		}
	}
	return at
}

// flush releases everything held, in order, giving up on the gaps.
func (r *Reorder[T]) flush(out []T) []T {
	for r.entries > 0 {
		out = r.skipGap(out)
	}
	return out
}

// HoldFor returns the hold time for a receiver whose paths in use (those
// that delivered data recently: the caller leaves the others out, or not
// Up) are paths: the spread of their RTTs plus twice the largest jitter,
// at most MaxHold; 0 when fewer than two are in use. The whole RTT spread
// is used, not half of it, because paths are often asymmetric (an LTE
// uplink is slower than its downlink) and the spread may lie in one
// direction.
func HoldFor(paths []PathState) time.Duration {
	var lo, hi, jitter time.Duration
	n := 0
	for i := range paths {
		s := &paths[i]
		if !s.Up || s.RTT <= 0 {
			continue
		}
		if n == 0 || s.RTT < lo {
			lo = s.RTT
		}
		hi = max(hi, s.RTT)
		jitter = max(jitter, s.Jitter)
		n++
	}
	if n < 2 {
		return 0
	}
	return min(hi-lo+2*jitter+minHold, MaxHold)
}

// minHold is added to every hold: packets sent back to back on two paths
// of equal delay still arrive a scheduling quantum apart.
const minHold = time.Millisecond

// before reports whether sequence number a comes before b, in serial
// number arithmetic (RFC 1982): a is less than half the space behind b.
func before(a, b uint64) bool {
	return int64(a-b) < 0
}
