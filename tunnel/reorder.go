package tunnel

import (
	"context"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
)

// The receive side of a session: duplicate filter, then reorder buffer,
// then the TUN writer.
//
//	link receivers ──▶ Window ──▶ Reorder ──▶ tunWriter
//	expiry timer ─────────────────▶ Reorder.Expire ─┘
//
// The reorder buffer exists only while two or more paths deliver data
// (see updateHold): with one path packets arrive in order, and an idle
// session holds no buffer (a concentrator keeps many idle sessions).
const (
	// reorderBudget bounds the bytes a session's reorder buffer holds:
	// 200 ms (scheduler.MaxHold) of 40 Mbit/s. A gap that would need
	// more is given up on: the buffer flushes rather than grows.
	reorderBudget = 1 << 20
	// reorderSlots bounds the packets it holds (a power of two).
	reorderSlots = 1024
	// dataRecently is how recently a path must have delivered data to
	// count as in use for the hold time: long enough that a path used
	// now and then (failover's spill) keeps the buffer in place.
	dataRecently = 10 * time.Second
)

// deliver takes a data packet received with sequence number seq, and
// what the caller parsed of it (nil if it did not). A duplicate is
// dropped; the rest reaches w in sequence order, as far as the reorder
// buffer can restore it.
func (s *session) deliver(ctx context.Context, l *link, seq uint64, pkt []byte, info *packet.Info, w *tunWriter, c *Counters) {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	// Under rxMu, so that passed never counts a packet not yet pushed. A
	// direct datagram (l nil) may overtake the path's QUIC datagrams, so
	// it says nothing of what the path lost.
	if l != nil && seq > l.highestSeq.Load() {
		l.highestSeq.Store(seq)
	}
	if !s.window.Accept(seq) {
		c.DropDuplicate.Add(1)
		return
	}
	s.rxHighest = max(s.rxHighest, seq)
	if s.reorder == nil {
		w.writeCopy(ctx, pkt)
		return
	}
	buf := getLarge()
	n := copy(buf.b[headroom:], pkt)
	now := time.Duration(monotime())
	if unordered(pkt, info) {
		s.released = s.reorder.Bypass(s.released[:0], seq, packetRef{buf: buf, n: n})
	} else {
		s.released = s.reorder.Push(s.released[:0], now, seq, n, packetRef{buf: buf, n: n})
	}
	if passed := s.passed(int64(now)); passed > 0 {
		s.released = s.reorder.Passed(s.released, passed)
	}
	s.writeReleased(w)
	s.armExpiry(now)
}

// unordered reports whether pkt goes past the reorder buffer: the
// interactive packets of scheduler.IsInteractive but TCP's (a call's
// frames, DNS over UDP, other small UDP, what is marked EF). Held behind a
// gap, they would wait for the bulk data striped or spilled onto a slower
// path: measured, a 20 ms echo sharing the uplinks with an upload in
// failover mode rose from 42 ms idle to 106 ms (p50) and 189 ms (p99), 50
// and 120 ms more than outside the tunnel over the same uplink
// (TestReportLatencyUnderLoad). Their applications take reordering in
// their stride (a jitter buffer, a query's retries). TCP's stay in order:
// its segments would read as loss, and letting its acknowledgements past
// showed no gain (aggregate's goodput in TestReportGoodput, within the
// runs' spread of 0.93-1.20 of the best uplink either way).
// info is what the caller parsed of pkt; nil, unordered parses it.
func unordered(pkt []byte, info *packet.Info) bool {
	if info == nil {
		parsed, err := packet.Parse(pkt)
		if err != nil {
			return false
		}
		info = &parsed
	}
	si := schedInfo(pkt, info)
	if si.Proto == scheduler.ProtoTCP {
		return false // TCP's segments and acknowledgements stay in order
	}
	return scheduler.IsInteractive(&si)
}

// passed is the lowest, over the paths that are up, of the highest
// sequence number each delivered: each path delivers in order, so a gap
// below it was lost, not delayed. Every path that is up counts, even one
// idle for long: the packet that fills the gap may be its first in a
// while. 0 if no path is up.
func (s *session) passed(now int64) uint64 {
	var low uint64
	for _, l := range *s.links.Load() {
		if !l.alive(now) {
			continue
		}
		if h := l.highestSeq.Load(); low == 0 || h < low {
			low = h
		}
	}
	return low
}

// writeReleased hands what the buffer released to w. rxMu is held.
func (s *session) writeReleased(w *tunWriter) {
	for i, p := range s.released {
		w.put(p)
		s.released[i] = packetRef{}
	}
}

// armExpiry sets the timer for the buffer's next deadline. rxMu is held.
func (s *session) armExpiry(now time.Duration) {
	if d, ok := s.reorder.Deadline(); ok {
		s.expiry.Reset(max(d-now, 0))
	}
}

// expire runs when a held gap's deadline passes: it gives up on the gap
// and releases what waited behind it.
func (s *session) expire() {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	if s.reorder == nil || s.rxWriter == nil {
		return
	}
	now := time.Duration(monotime())
	s.released = s.reorder.Expire(s.released[:0], now)
	s.writeReleased(s.rxWriter)
	s.armExpiry(now)
}

// updateHold sets how long the reorder buffer waits for a gap from the
// paths that delivered data lately: their RTT spread plus jitter, or
// nothing with one path in use. w is where held packets go. The endpoint
// calls it periodically.
func (s *session) updateHold(w *tunWriter) {
	now := monotime()
	s.rxStates = s.rxStates[:0]
	for _, l := range *s.links.Load() {
		st := l.state(now, false)
		st.Up = st.Up && now-l.lastData.Load() < int64(dataRecently)
		s.rxStates = append(s.rxStates, st)
	}
	hold := scheduler.HoldFor(s.rxStates)
	if !s.reorders {
		hold = 0
	}

	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	s.rxWriter = w
	switch {
	case hold > 0 && s.reorder == nil:
		s.reorder = scheduler.NewReorder[packetRef](reorderBudget, reorderSlots)
		s.reorder.Start(nil, s.rxHighest+1)
		s.reorder.SetHold(hold)
	case hold > 0:
		s.reorder.SetHold(hold)
	case s.reorder != nil:
		s.released = s.reorder.Reset(s.released[:0])
		s.writeReleased(w)
		s.dropReorder()
	}
}

// dropReorder frees the reorder buffer, keeping its counts. rxMu is held.
func (s *session) dropReorder() {
	addReorderStats(&s.reorderDone, s.reorder.Stats())
	s.reorder = nil
}

// ReorderStatus is what the reorder buffer of a session did.
type ReorderStatus struct {
	Hold time.Duration `json:"hold_ns"` // current hold; 0 while one path delivers
	scheduler.ReorderStats
}

func (s *session) reorderStatus() ReorderStatus {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	st := ReorderStatus{ReorderStats: s.reorderDone}
	if r := s.reorder; r != nil {
		st.Hold = r.Hold()
		addReorderStats(&st.ReorderStats, r.Stats())
	}
	return st
}

func addReorderStats(t *scheduler.ReorderStats, s scheduler.ReorderStats) {
	t.Held += s.Held
	t.Late += s.Late
	t.Skipped += s.Skipped
	t.Expired += s.Expired
	t.Overflows += s.Overflows
	t.Duplicates += s.Duplicates
}

// resetRx starts the receive side afresh, for a new session id.
func (s *session) resetRx(w *tunWriter) {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	s.window.Reset()
	s.rxHighest = 0
	if s.reorder != nil {
		s.released = s.reorder.Reset(s.released[:0])
		s.writeReleased(w)
		s.dropReorder()
	}
}

// answerMissing tells the client, on l, which of its data datagrams the
// session lacks (transport.Missing), once the paths it said are down have
// fallen quiet (missingQuiet), or after missingQuietMax: what they still
// deliver, from their queues, is not missing.
func (s *session) answerMissing(l *link) {
	start := monotime()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		<-t.C
		now := monotime()
		var wait int64
		for _, d := range *s.links.Load() {
			if d.peerDown.Load() {
				wait = max(wait, d.lastRecv.Load()+int64(missingQuiet)-now)
			}
		}
		wait = min(wait, start+int64(missingQuietMax)-now)
		if wait <= 0 {
			break
		}
		t.Reset(time.Duration(wait))
	}
	s.rxMu.Lock()
	m := &transport.Missing{Highest: s.window.Last()}
	m.Gaps, m.From = s.window.Gaps(nil, 0, transport.MaxMissingGaps)
	s.rxMu.Unlock()
	l.path.WriteControl(&transport.Message{Missing: m}) // a path that fails here is being replaced
}

// missingQuiet is how long a dead path must have delivered nothing before
// the concentrator says what it lacks: a busy path delivers a datagram a
// millisecond or more often (at 10 Mbit/s and more), and one silent for
// 10 ms has delivered what its queues held. missingQuietMax bounds the
// wait for one that keeps delivering (its client says it is down all the
// same): a bottleneck queue holds tens of milliseconds.
const (
	missingQuiet    = 10 * time.Millisecond
	missingQuietMax = 100 * time.Millisecond
)
