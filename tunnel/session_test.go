package tunnel

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
)

// fullSession returns a session with one link whose queue is full.
func fullSession(t *testing.T) (*session, *link) {
	t.Helper()
	s, err := newSession(1, scheduler.Failover, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := testLink("a", 0)
	l.stopped = make(chan struct{})
	s.addLink(l)
	for range cap(l.queue) {
		l.queue <- filler()
	}
	return s, l
}

func sendOne(t *testing.T, s *session, c *Counters) sendResult {
	t.Helper()
	return sendOneWithin(t, s, nil, c)
}

// TestFullQueueWaitsForRoom: when every live path's queue is full the TUN
// reader waits for room instead of dropping, so braid's own queue is not
// where a flow loses packets.
func TestFullQueueWaitsForRoom(t *testing.T) {
	s, l := fullSession(t)
	var c Counters
	done := make(chan sendResult)
	go func() { done <- sendOne(t, s, &c) }()
	putBuffer((<-l.queue).buf) // the sender takes one: room for the waiting packet
	if res := <-done; res != sent {
		t.Fatalf("send = %v, want sent", res)
	}
	if n := c.DropQueueFull.Load(); n != 0 {
		t.Errorf("drop_queue_full = %d, want 0", n)
	}
	if len(l.queue) != cap(l.queue) {
		t.Errorf("queue holds %d, want %d (the waiting packet)", len(l.queue), cap(l.queue))
	}
}

// TestStuckQueueDrops: a queue nobody drains, on a path that stays up,
// costs the reader at most maxQueueWait per packet, then the packet is
// dropped and counted.
func TestStuckQueueDrops(t *testing.T) {
	s, l := fullSession(t)
	l.graceUntil.Store(monotime() + int64(time.Minute)) // up throughout, as if heard from
	var c Counters
	if res := sendOne(t, s, &c); res != queueFull {
		t.Fatalf("send = %v, want queueFull", res)
	}
	if n := c.DropQueueFull.Load(); n != 1 {
		t.Errorf("drop_queue_full = %d, want 1", n)
	}
}

// sendOneWithin sends a packet through s for a reader with wait budget b
// (nil: none, as the client's).
func sendOneWithin(t *testing.T, s *session, b *waitBudget, c *Counters) sendResult {
	t.Helper()
	p, info := parsedPacket(t, udp4(netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("10.210.0.2"), 1200, true))
	res, _ := s.send(p, &info, b, c)
	return res
}

// TestReaderWaitsWithinBudget: a reader that serves other sessions too
// (the concentrator's) waits for room on a stuck path only as long as its
// budget allows, however long the path's round trip would have it wait,
// and not at all with the budget spent, so one client's full path cannot
// hold up the packets of the others.
func TestReaderWaitsWithinBudget(t *testing.T) {
	s, l := fullSession(t)
	l.rtt.Store(int64(time.Second)) // a client's reader would wait maxQueueWait
	var c Counters
	const allowed = 5 * time.Millisecond
	b := waitBudget{left: allowed, at: monotime()}
	if res := sendOneWithin(t, s, &b, &c); res != queueFull {
		t.Fatalf("send = %v, want queueFull", res)
	}
	waited := time.Duration(c.ReaderWaitNs.Load())
	if waited < allowed || waited >= maxQueueWait || b.left > 0 {
		t.Fatalf("waited %v (budget left %v), want the budget of %v spent and no more than that (not %v)", waited, b.left, allowed, maxQueueWait)
	}
	b.left = -time.Second // spent, as it is after a second of waiting
	for range 3 {
		if res := sendOneWithin(t, s, &b, &c); res != queueFull {
			t.Fatalf("send = %v, want queueFull", res)
		}
	}
	if w := time.Duration(c.ReaderWaitNs.Load()); w != waited {
		t.Errorf("waited %v more with the budget spent, want no wait", w-waited)
	}
	if n := c.DropQueueFull.Load(); n != 4 {
		t.Errorf("drop_queue_full = %d, want 4", n)
	}
}

// TestReaderBudgetAllowsRoom: within its budget a shared reader waits for
// room as a client's does, and the wait comes off the budget.
func TestReaderBudgetAllowsRoom(t *testing.T) {
	s, l := fullSession(t)
	var c Counters
	b := waitBudget{left: waitBurst, at: monotime()}
	done := make(chan sendResult)
	go func() { done <- sendOneWithin(t, s, &b, &c) }()
	putBuffer((<-l.queue).buf) // the sender takes one: room for the waiting packet
	if res := <-done; res != sent {
		t.Fatalf("send = %v, want sent", res)
	}
	if spent, waited := waitBurst-b.left, time.Duration(c.ReaderWaitNs.Load()); spent != waited {
		t.Errorf("budget spent %v, reader_wait_ns %v: want the same", spent, waited)
	}
}

// TestWaitBudget: the budget grows by an eighth of the time that passes,
// to waitBurst at most, and what is spent comes off it.
func TestWaitBudget(t *testing.T) {
	ms := int64(time.Millisecond)
	var b waitBudget
	for _, step := range []struct {
		now   int64
		spend time.Duration
		want  time.Duration
	}{
		{now: 8 * ms, want: time.Millisecond},
		{now: 16 * ms, spend: 2 * time.Millisecond, want: 2 * time.Millisecond},
		{now: 16 * ms, want: 0}, // no time passed
		{now: 1000 * ms, want: waitBurst},
		{now: 1000 * ms, spend: 10 * time.Millisecond, want: waitBurst},
		{now: 1008 * ms, want: -3 * time.Millisecond}, // in debt by 4 ms, a millisecond earned
	} {
		if got := b.available(step.now); got != step.want {
			t.Fatalf("at %v: available %v, want %v", time.Duration(step.now), got, step.want)
		}
		b.left -= step.spend
	}
}

// TestWaitBudgetShared: the budget applies only while another session
// sent through the reader within sharedWindow.
func TestWaitBudgetShared(t *testing.T) {
	ms := int64(time.Millisecond)
	var b waitBudget
	x, y := &session{id: 1}, &session{id: 2}
	for i, step := range []struct {
		s    *session
		now  int64
		want bool
	}{
		{x, 0, false}, // the first session
		{x, 50 * ms, false},
		{y, 60 * ms, true},   // x sent 10 ms ago
		{y, 140 * ms, true},  // x 90 ms ago
		{y, 160 * ms, false}, // x 110 ms ago: y alone
		{x, 170 * ms, true},  // y 10 ms ago
		{x, 500 * ms, false},
	} {
		if got := b.shared(step.s, step.now); got != step.want {
			t.Errorf("step %d: session %d at %v: shared %v, want %v", i, step.s.id, time.Duration(step.now), got, step.want)
		}
	}
}

func TestInflightKeepsRecentAndBounded(t *testing.T) {
	var f inflight
	for i := range inflightLen + 10 {
		f.add(packetRef{buf: getBuffer(100), n: 100 + i}, int64(i), 0, false)
	}
	if f.n != inflightLen {
		t.Fatalf("holds %d, want the bound %d", f.n, inflightLen)
	}
	// Keep only what was sent at or after 1000; count what was sent before
	// 1010 but for the 5 sent last before it (still in quic-go's queue).
	got, before := f.take(nil, 1000, 1010, 5)
	if len(got) != inflightLen+10-1000 || got[0].n != 100+1000 || got[len(got)-1].n != 100+inflightLen+9 {
		t.Fatalf("take returned %d packets from n=%d: want the %d newest, oldest first", len(got), got[0].n, inflightLen+10-1000)
	}
	if before != 5 {
		t.Errorf("take counted %d sent before the split, want 5", before)
	}
	if f.n != 0 || f.ring != nil {
		t.Errorf("after take: %d kept, ring allocated %v", f.n, f.ring != nil)
	}
	if f.add(packetRef{buf: getBuffer(100), n: 1}, 5, 0, false) {
		t.Error("kept a packet after take")
	}
	f.reopen()
	if !f.add(packetRef{buf: getBuffer(100), n: 1}, 5, 0, false) || f.n != 1 {
		t.Error("not kept after reopen")
	}
	f.trim(6)
	if f.n != 0 || f.ring != nil {
		t.Errorf("after trim: %d kept, ring allocated %v: an idle link must hold no buffers", f.n, f.ring != nil)
	}
}

// seqPacket is a packet whose braid header carries seq.
func seqPacket(seq uint64) packetRef {
	p := filler()
	transport.PutHeader(p.datagram(), transport.KindData, seq)
	return p
}

// TestInflightRemove: a datagram QUIC lost is taken out of the ring by
// its sequence number, once, only while recent, and never after it was
// itself a resend; what is left is still taken in order on a path cut.
func TestInflightRemove(t *testing.T) {
	var f inflight
	for seq := uint64(1); seq <= 10; seq++ {
		f.add(seqPacket(seq), int64(seq)*10, 0, seq == 9)
	}
	if p, ok := f.remove(5, 0); !ok || p.seq() != 5 {
		t.Fatalf("remove(5) = %v, %v; want seq 5", ok, p.buf != nil && p.seq() == 5)
	}
	if _, ok := f.remove(5, 0); ok {
		t.Error("seq 5 removed twice")
	}
	if _, ok := f.remove(3, 40); ok {
		t.Error("seq 3, sent at 30, removed with since 40")
	}
	if _, ok := f.remove(9, 0); ok {
		t.Error("seq 9, itself a resend, removed again")
	}
	if _, ok := f.remove(42, 0); ok {
		t.Error("seq 42, never sent, removed")
	}
	got, _ := f.take(nil, 0, 0, 0)
	var taken []uint64
	for _, p := range got {
		taken = append(taken, p.seq())
	}
	if want := []uint64{1, 2, 3, 4, 6, 7, 8, 9, 10}; !slices.Equal(taken, want) {
		t.Errorf("take after remove = %v, want %v", taken, want)
	}
}

func TestRotateLeft(t *testing.T) {
	a := []int{1, 2, 3, 4, 5, 6}
	rotateLeft(a, 2)
	if want := []int{3, 4, 5, 6, 1, 2}; !slices.Equal(a, want) {
		t.Errorf("rotateLeft(2) = %v, want %v", a, want)
	}
	rotateLeft(a, 0)
	rotateLeft(a, len(a))
	if want := []int{3, 4, 5, 6, 1, 2}; !slices.Equal(a, want) {
		t.Errorf("rotating by 0 and by the length changed it to %v", a)
	}
}

// killInFlight sends inFlight packets through s, all queued on a, has
// a's sender send all but the last (1 and 2, then the quic-go queue's
// worth, 3 to inFlight-4, before it last heard from the peer, the next
// three after; the last is still queued), all within its last round trip,
// and declares a dead. 1 and 2 are the only ones that left before it was
// last heard from: the others were still in quic-go's queue then.
func killInFlight(t *testing.T, s *session, a *link, c *Counters) {
	t.Helper()
	for range inFlight {
		if res := sendOne(t, s, c); res != sent {
			t.Fatalf("send = %v", res)
		}
	}
	t0 := monotime()
	for i := range inFlight - 1 {
		p := <-a.queue
		at := t0
		if i >= inFlight-4 {
			at = t0 + 2
		}
		a.sent.add(p, at, 0, false)
	}
	a.lastRecv.Store(t0 + 1)
	a.rtt.Store(int64(time.Second))
	a.dead.Store(true)
}

// inFlight is how many packets killInFlight sends.
const inFlight = 2 + transport.QUICSendQueue + 4

// seqs returns the sequence numbers from to to, and then more.
func seqs(from, to uint64, more ...uint64) []uint64 {
	var s []uint64
	for q := from; q <= to; q++ {
		s = append(s, q)
	}
	return append(s, more...)
}

// urgentSeqs empties l's urgent queue (resends) and returns their
// sequence numbers, oldest first.
func urgentSeqs(l *link) []uint64 {
	var seqs []uint64
	for _, p := range l.urgent.takeAll(nil) {
		seqs = append(seqs, p.seq())
		putBuffer(p.buf)
	}
	return seqs
}

// twoLinks returns a failover session and two links for it, a (priority
// 0) and b (1), not yet added.
func twoLinks(t *testing.T) (s *session, a, b *link) {
	t.Helper()
	s, err := newSession(1, scheduler.Failover, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b = testLink("a", 0), testLink("b", 1)
	a.stopped, b.stopped = make(chan struct{}), make(chan struct{})
	return s, a, b
}

// TestResendOnPathDown: what a link had in flight when it went down is
// queued on the path the scheduler picks now, with its sequence number:
// first what it sent after it last heard from the peer and what was still
// queued for it, then what it sent in the round trip before.
func TestResendOnPathDown(t *testing.T) {
	s, a, b := twoLinks(t)
	s.addLink(a)
	s.addLink(b)
	var c Counters
	killInFlight(t, s, a, &c)
	s.failover(&c)
	if n := c.Resent.Load(); n != inFlight {
		t.Fatalf("resent = %d, want %d", n, inFlight)
	}
	order := urgentSeqs(b)
	if want := seqs(3, inFlight, 1, 2); !slices.Equal(order, want) {
		t.Errorf("resent in the order %v, want %v", order, want)
	}
	s.failover(&c)
	if n := c.Resent.Load(); n != inFlight {
		t.Errorf("resent = %d after a second look, want %d: once only", n, inFlight)
	}
}

// TestResendAsksFirst: a client whose only surviving path is metered
// resends at once what the dead path sent after it was last heard from
// and what was still queued for it, holds back what it sent in the round
// trip before, and resends of that only what the concentrator says it
// lacks; what it holds past limboWait is let go.
func TestResendAsksFirst(t *testing.T) {
	s, err := newSession(1, scheduler.Failover, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := testLink("a", 0), testLink("b", 1)
	b.hello.Metered = true
	s.addLink(a)
	s.addLink(b)
	var c Counters
	killInFlight(t, s, a, &c)
	// A client's (set now: its links have no paths to announce on, and
	// the sends above looked at them).
	s.announce = make(chan struct{}, 1)
	links := *s.links.Load()
	s.sendMu.Lock()
	s.resend(links, a, monotime(), &c)
	a.wasUp = false // as look does
	s.sendMu.Unlock()
	if got, want := urgentSeqs(b), seqs(3, inFlight); !slices.Equal(got, want) {
		t.Fatalf("resent at once %v, want %v", got, want)
	}
	if len(s.limbo) != 2 {
		t.Fatalf("holds %d back, want 2", len(s.limbo))
	}
	s.resendMissing(&transport.Missing{Highest: inFlight, From: 1, Gaps: [][2]uint64{{2, 2}}}, &c)
	if got, want := urgentSeqs(b), []uint64{2}; !slices.Equal(got, want) {
		t.Errorf("resent on the answer %v, want %v", got, want)
	}
	if n := c.ResendSkipped.Load(); n != 1 || len(s.limbo) != 0 {
		t.Errorf("skipped %d, %d still held; want 1, 0", n, len(s.limbo))
	}

	// Held back again, and no answer comes in time.
	for range 2 {
		if res := sendOne(t, s, &c); res != sent {
			t.Fatalf("send = %v", res)
		}
	}
	s.limbo = append(s.limbo, <-b.queue, <-b.queue)
	s.limboUntil = monotime() - 1
	s.failover(&c)
	if n := c.ResendExpired.Load(); n != 2 || len(s.limbo) != 0 {
		t.Errorf("after limboWait: %d expired, %d still held; want 2, 0", n, len(s.limbo))
	}
}

// TestResendAfterCarrierLoss: when an uplink's interface loses carrier,
// what its path handed to QUIC from localLag before the session heard of
// it (and the quic-go queue's worth before that) is resent at once, and
// what it sent before that is held back for the concentrator's word: it
// left before the carrier went, and mostly arrived. A path that went
// silent is judged by when it was last heard from alone: what it sent
// in the round trip before that, a few packets the survivor carries at
// once, goes again at once, last.
func TestResendAfterCarrierLoss(t *testing.T) {
	const n = 2 + transport.QUICSendQueue + 2
	for _, carrierLost := range []bool{false, true} {
		t.Run(fmt.Sprintf("carrier lost %v", carrierLost), func(t *testing.T) {
			s, a, b := twoLinks(t)
			s.addLink(a)
			s.addLink(b)
			var c Counters
			for range n {
				if res := sendOne(t, s, &c); res != sent {
					t.Fatalf("send = %v", res)
				}
			}
			now := monotime()
			heard := now - int64(time.Millisecond)
			for i := range n {
				var at int64
				switch {
				case i < 2:
					at = heard - 10*int64(localLag) // long before
				case i < n-2:
					at = heard - 4*int64(localLag) // in quic-go's queue at the failure
				default:
					at = heard - int64(localLag)/2 // just before the last answer, after the failure
				}
				a.sent.add(<-a.queue, at, at-int64(time.Hour), false)
			}
			a.lastRecv.Store(heard)
			a.rtt.Store(int64(time.Second))
			var carrier atomic.Bool
			carrier.Store(carrierLost)
			a.carrierDown = &carrier
			a.dead.Store(!carrierLost)
			s.announce = make(chan struct{}, 1) // a client's
			links := *s.links.Load()
			s.sendMu.Lock()
			s.resend(links, a, now, &c)
			s.sendMu.Unlock()
			atOnce := urgentSeqs(b)
			want, held := seqs(5, n, 1, 2, 3, 4), 0
			if carrierLost {
				want, held = seqs(3, n), 2
			}
			if !slices.Equal(atOnce, want) || len(s.limbo) != held {
				t.Errorf("resent at once %v and held back %d, want %v and %d", atOnce, len(s.limbo), want, held)
			}
			s.limbo = freeAll(s.limbo)
		})
	}
}

// TestHandedOverWhenPathDiesResent: the datagram the link's sender is
// handing to QUIC when the path goes down (Send blocks on quic-go's full
// queue until QUIC's probe timeout, 70-100 ms later) is resent at once
// with what the path had in flight, as a copy, and not kept when Send
// returns; one the sender picks up after that is resent instead of sent.
// Once the path is back up, what it sends is kept again.
func TestHandedOverWhenPathDiesResent(t *testing.T) {
	s, a, b := twoLinks(t)
	s.addLink(a)
	s.addLink(b)
	var c Counters
	a.counters = &c
	for range 2 {
		if res := sendOne(t, s, &c); res != sent { // to a
			t.Fatalf("send = %v", res)
		}
	}
	p, q := <-a.queue, <-a.queue
	if !a.sent.hand(p) {
		t.Fatal("hand refused on a live path")
	}
	a.dead.Store(true)
	s.failover(&c)
	resent := b.urgent.takeAll(nil)
	if len(resent) != 1 {
		t.Fatalf("%d resent at once, want 1: the packet being handed over", len(resent))
	}
	cp := resent[0]
	if cp.buf == p.buf || !bytes.Equal(cp.datagram(), p.datagram()) {
		t.Error("resent the sender's own buffer, or not a copy of it")
	}
	putBuffer(cp.buf)
	if a.sent.add(p, monotime(), 0, false) {
		t.Error("kept a packet handed over after its copy was resent")
	}
	putBuffer(p.buf)
	if a.sent.hand(q) {
		t.Fatal("hand accepted on a path whose in-flight datagrams were resent")
	}
	if !a.resendLate(q) || !slices.Equal(urgentSeqs(b), []uint64{q.seq()}) {
		t.Fatal("a packet picked up after the failover not resent on the surviving path")
	}
	// Back up, before the session looked: the sender sends it itself.
	a.dead.Store(false)
	r := filler()
	if a.resendLate(r) {
		t.Fatal("resent elsewhere a packet of a path back up")
	}
	if !a.sent.hand(r) || !a.sent.add(r, monotime(), 0, false) {
		t.Error("the path, back up, does not keep what it sends")
	}
	a.sent.trim(math.MaxInt64)
}

// TestPeerDownFollowsClient: the concentrator takes out exactly the paths
// the client last said were down, and is told when one went down that was
// not (it then resends what that one had in flight at once).
func TestPeerDownFollowsClient(t *testing.T) {
	s, _ := newSession(1, scheduler.Failover, 0, nil)
	a, b := testLink("a", 0), testLink("b", 1)
	s.addLink(a)
	s.addLink(b)
	now := monotime()
	if !s.setPeerDown([]string{"a"}) {
		t.Error("down [a] after none: no path newly down")
	}
	if a.alive(now) || !b.alive(now) {
		t.Fatalf("after down [a]: a alive %v, b alive %v", a.alive(now), b.alive(now))
	}
	if s.setPeerDown([]string{"a"}) {
		t.Error("down [a] again: a path newly down")
	}
	if s.setPeerDown(nil) {
		t.Error("down [] after [a]: a path newly down")
	}
	if !a.alive(now) {
		t.Fatal("a still down after the client said it is up")
	}
}

// pathsApart returns a session in mode with two paths that both just
// delivered data, with RTTs of 10 and 60 ms.
func pathsApart(mode scheduler.Mode) (s *session, fast, slow *link) {
	s, _ = newSession(1, mode, 0, nil)
	fast, slow = testLink("fast", 0), testLink("slow", 0)
	fast.rtt.Store(int64(10 * time.Millisecond))
	slow.rtt.Store(int64(60 * time.Millisecond))
	now := monotime()
	fast.lastData.Store(now)
	slow.lastData.Store(now)
	s.addLink(fast)
	s.addLink(slow)
	return s, fast, slow
}

// TestReorderAcrossPaths: with two paths of different delay delivering,
// packets that arrive out of order reach the TUN writer in order; with
// one path, the buffer is out of the way (and holds no memory).
func TestReorderAcrossPaths(t *testing.T) {
	s, fast, slow := pathsApart(scheduler.Aggregate)
	now := fast.lastData.Load()
	w := &tunWriter{queue: make(chan packetRef, 16), done: make(chan struct{})}
	var c Counters
	ctx := context.Background()
	s.deliver(ctx, fast, 1, []byte{1}, nil, w, &c) // one path so far: straight through
	s.updateHold(w)
	if s.reorder == nil || s.reorder.Hold() < 50*time.Millisecond {
		t.Fatalf("reorder buffer not in place for two paths 50 ms apart")
	}
	s.deliver(ctx, fast, 3, []byte{3}, nil, w, &c) // 2 is still on the slow path
	s.deliver(ctx, slow, 2, []byte{2}, nil, w, &c)
	for _, want := range []byte{1, 2, 3} {
		p := <-w.queue
		if got := p.packet()[0]; got != want {
			t.Fatalf("TUN got packet %d, want %d", got, want)
		}
	}
	slow.lastData.Store(now - int64(2*dataRecently)) // the slow path went quiet
	s.updateHold(w)
	if s.reorder != nil {
		t.Error("reorder buffer kept with one path delivering")
	}
}

// TestFlowModeNeedsNoReorder: in flow mode each flow keeps to one path,
// so the receiver holds nothing back even with two paths delivering.
func TestFlowModeNeedsNoReorder(t *testing.T) {
	s, _, _ := pathsApart(scheduler.Flow)
	s.updateHold(&tunWriter{queue: make(chan packetRef, 1), done: make(chan struct{})})
	if s.reorder != nil {
		t.Error("flow mode put a reorder buffer in place")
	}
}

// TestBusyPathGivenUpWhenUnanswered: data sent on a path that then stays
// silent takes it out of use after busyDeadAfter, sooner than the probes'
// deadAfter would; a path whose data was answered, or that carries none,
// lives until deadAfter.
func TestBusyPathGivenUpWhenUnanswered(t *testing.T) {
	l := testLink("a", 0)
	l.probe = true
	l.probeEvery.Store(int64(probeInterval))
	l.rtt.Store(int64(40 * time.Millisecond))
	busy, idle := l.busyDeadAfter(), l.deadAfter()
	if busy >= idle {
		t.Fatalf("busyDeadAfter %v not shorter than deadAfter %v", time.Duration(busy), time.Duration(idle))
	}
	heard := int64(10 * time.Hour) // a fixed clock reading, past any grace period
	l.lastRecv.Store(heard)
	now := heard + busy + 10*int64(time.Millisecond)
	if !l.alive(now) {
		t.Fatal("an idle path heard from within deadAfter is down")
	}
	l.unanswered.Store(heard + 5*int64(time.Millisecond)) // data sent after the last answer
	if !l.alive(heard + busy) {
		t.Error("down before busyDeadAfter passed")
	}
	if l.alive(now + 5*int64(time.Millisecond)) {
		t.Error("still up after its data went unanswered for longer than busyDeadAfter")
	}
	l.lastRecv.Store(heard + 20*int64(time.Millisecond)) // an answer came after that send
	if !l.alive(now + 5*int64(time.Millisecond)) {
		t.Error("down although its data was answered")
	}
}

// TestBlockedSendCountsAsUnanswered: a sender blocked in Send (QUIC's
// window full of data in flight) since before the path was last heard
// from has data unanswered since then, though no Send returned after it:
// the path is given up after busyDeadAfter, not deadAfter.
func TestBlockedSendCountsAsUnanswered(t *testing.T) {
	l := testLink("a", 0)
	l.probe = true
	l.probeEvery.Store(int64(probeInterval))
	l.rtt.Store(int64(40 * time.Millisecond))
	busy := l.busyDeadAfter()
	heard := int64(10 * time.Hour)
	l.lastRecv.Store(heard)
	l.unanswered.Store(heard - int64(time.Millisecond)) // the last Send returned before the last answer
	l.sendingSince.Store(heard - 2*int64(time.Millisecond))
	if !l.alive(heard + busy) {
		t.Error("down before busyDeadAfter passed")
	}
	if l.alive(heard + busy + 5*int64(time.Millisecond)) {
		t.Error("still up although its sender has been blocked unanswered for longer than busyDeadAfter")
	}
	l.sendingSince.Store(0) // Send returned: the window opened
	if !l.alive(heard + busy + 5*int64(time.Millisecond)) {
		t.Error("down with no data unanswered, within deadAfter")
	}
	// Blocked since after the last answer: unanswered from then on.
	l.sendingSince.Store(heard + 50*int64(time.Millisecond))
	if !l.alive(heard + busy + 5*int64(time.Millisecond)) {
		t.Error("down before busyDeadAfter passed since Send blocked")
	}
	if l.alive(heard + 50*int64(time.Millisecond) + busy + 5*int64(time.Millisecond)) {
		t.Error("still up after Send blocked unanswered for longer than busyDeadAfter")
	}
}

// TestLinkDownBeforeFirstLook: a link that dies before the session ever
// looked at it (its uplink's carrier lost just after its handshake) has
// gone down all the same: what it sent is resent, and the concentrator
// is told (the same change of state).
func TestLinkDownBeforeFirstLook(t *testing.T) {
	s, a, b := twoLinks(t)
	var c Counters
	s.addLink(b)
	s.failover(&c)
	s.addLink(a)
	pkt := udp4(netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("10.210.0.2"), 100, true)
	buf := getBuffer(len(pkt))
	p := packetRef{buf: buf, n: copy(buf.b[headroom:], pkt)}
	transport.PutHeader(p.datagram(), transport.KindData, 1)
	a.sent.add(p, monotime(), 0, false)
	a.dead.Store(true)
	s.failover(&c)
	if n := c.Resent.Load(); n != 1 {
		t.Fatalf("resent = %d, want 1", n)
	}
	if got := urgentSeqs(b); !slices.Equal(got, []uint64{1}) {
		t.Errorf("resent %v, want [1]", got)
	}
}

// TestWaitEndsWhenPathGoesDown: a reader waiting for room on a path that
// goes down (the kernel's carrier event, or the client's word on the
// concentrator) stops waiting at once, and one waiting on a path gone
// silent under load waits until the path is given up: the session looks
// at its links, resends what the dead one had in flight, then sends the
// packet it was holding with those resends, on the path the scheduler
// picks now. Before, the wait ran out first (up to two round trips of the
// dead path, holding the session's sendMu, so the failover waited too)
// and the packet was dropped: a hole the inner TCP filled only after its
// queue on the surviving path.
func TestWaitEndsWhenPathGoesDown(t *testing.T) {
	for _, how := range []string{"carrier", "peer", "silent", "stuck while waiting"} {
		t.Run(how, func(t *testing.T) {
			s, a, b := twoLinks(t)
			s.addLink(a)
			s.addLink(b)
			var carrier atomic.Bool
			a.carrierDown = &carrier
			a.rtt.Store(int64(time.Second)) // a wait on a would last maxQueueWait
			// Both queues full, so that the reader waits on a.
			for range cap(a.queue) {
				a.queue <- filler()
				b.queue <- filler()
			}
			if how == "silent" {
				// a's sender has been stuck in Send since before a was
				// last heard from, long enough ago that a is given up
				// 40 ms from now: after its queueWait (20 ms), when the reader
				// gave up waiting before and dropped the packet.
				a.rtt.Store(int64(10 * time.Millisecond))
				a.probeEvery.Store(int64(probeInterval))
				now := monotime()
				heard := now - a.busyDeadAfter() + int64(40*time.Millisecond)
				a.lastRecv.Store(heard)
				a.unanswered.Store(heard - 2) // its last Send returned before that
				a.sendingSince.Store(heard - 1)
				if d := time.Duration(a.silentAt() - now); d <= a.queueWait() || d > maxQueueWait {
					t.Fatalf("a is given up in %v, want that after its queueWait, %v", d, a.queueWait())
				}
			}
			var heard int64
			if how == "stuck while waiting" {
				// a was heard from 50 ms ago, and its sender gets stuck
				// in Send only once the reader waits: due then to be
				// given up 225 ms from now, after its queueWait (200
				// ms), before which it was not due within maxQueueWait.
				a.rtt.Store(int64(100 * time.Millisecond))
				a.probeEvery.Store(int64(100 * time.Millisecond))
				heard = monotime() - int64(50*time.Millisecond)
				a.lastRecv.Store(heard)
				a.unanswered.Store(heard - 2)
			}
			var c Counters
			done := make(chan sendResult)
			go func() { done <- sendOne(t, s, &c) }()
			for s.sendMu.TryLock() { // until the reader holds it: it is about to wait, or waits
				s.sendMu.Unlock()
				runtime.Gosched()
			}
			switch how {
			case "stuck while waiting":
				a.sendingSince.Store(heard - 1)
			case "carrier":
				carrier.Store(true)
				a.interrupt()
			case "peer":
				s.setPeerDown([]string{a.name})
			}
			if how == "carrier" || how == "peer" {
				// If a went down before the reader picked its path, it
				// waits on b instead: b's sender takes one.
				putBuffer((<-b.queue).buf)
			}
			if res := <-done; res != sent {
				t.Fatalf("send = %v, want sent", res)
			}
			var queued []uint64
			for len(b.queue) > 0 {
				p := <-b.queue
				queued = append(queued, p.seq())
				putBuffer(p.buf)
			}
			if got := urgentSeqs(b); !slices.Contains(got, s.seq) && !slices.Contains(queued, s.seq) {
				t.Errorf("the surviving path's resends are %v, want the packet the reader held, %d, among them (resent %d, no room %d, full %d, aqm %d)", got, s.seq, c.Resent.Load(), c.ResendNoRoom.Load(), c.DropQueueFull.Load(), c.DropAQM.Load())
			}
			if n := c.DropQueueFull.Load(); n != 0 {
				t.Errorf("drop_queue_full = %d, want 0", n)
			}
		})
	}
}

// TestOnePathDirectAfterQUIC: with one path up, a packet goes direct only
// once what waits for QUIC on the path has gone: after a failover that is
// what the dead path lost, which the inner flows need first.
func TestOnePathDirectAfterQUIC(t *testing.T) {
	s, err := newSession(1, scheduler.Failover, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.single.Store(true)
	l := testLink("a", 0)
	l.direct.Store(true)
	s.addLink(l)
	l.queue <- filler() // a resend, say
	var c Counters
	if res := sendOne(t, s, &c); res != sent {
		t.Fatalf("send = %v, want sent", res)
	}
	if len(l.queue) != 2 || c.DirectTx.Load() != 0 {
		t.Errorf("queue holds %d, %d sent direct; want the packet queued behind the first, none direct", len(l.queue), c.DirectTx.Load())
	}
	for range 2 {
		putBuffer((<-l.queue).buf)
	}
	if l.quiet(monotime()) {
		t.Error("quiet right after a packet was queued for QUIC; want direct held back until it is out of the way")
	}
	// QUIC busy, then idle for the quiet gap: direct again.
	now := monotime()
	l.quicSince, l.quicAt = now, now
	if l.quiet(now + int64(directQuiet) - 1) {
		t.Error("quiet before the quiet gap")
	}
	if !l.quiet(now + int64(directQuiet)) {
		t.Error("not quiet after the quiet gap")
	}
	// Traffic that keeps QUIC busy for directSwitch goes direct anyway:
	// packets queued every half gap for directSwitch.
	gap := int64(directQuiet) / 2
	for at := now; at < now+int64(directSwitch); at += gap {
		l.noteQUIC(at)
		if l.quiet(at) {
			t.Fatalf("quiet %v into a busy spell", time.Duration(at-now))
		}
	}
	if at := now + int64(directSwitch); !l.quiet(at) {
		t.Error("a spell of QUIC traffic longer than directSwitch never ends")
	}
	// After a gap, a new spell begins.
	at := now + int64(directSwitch) + int64(directQuiet)
	l.noteQUIC(at)
	if l.quiet(at + 1) {
		t.Error("quiet at the start of a new spell")
	}
}

// bulkPacket and callPacket return a packet to send through s: a full
// UDP datagram, and a small one (interactive, as a call's frame).
func bulkPacket(t *testing.T) (packetRef, packet.Info) { return testPacket(t, 1200) }
func callPacket(t *testing.T) (packetRef, packet.Info) { return testPacket(t, 180) }

func testPacket(t *testing.T, size int) (packetRef, packet.Info) {
	t.Helper()
	return parsedPacket(t, udp4To(netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("10.210.0.2"), 9000, size))
}

// parsedPacket puts pkt in a pooled buffer and parses it.
func parsedPacket(t *testing.T, pkt []byte) (packetRef, packet.Info) {
	t.Helper()
	buf := getBuffer(len(pkt))
	p := packetRef{buf: buf, n: copy(buf.b[headroom:], pkt)}
	info, err := packet.Parse(p.packet())
	if err != nil {
		t.Fatal(err)
	}
	return p, info
}

// TestCoDelCallsForDrops: packets that stood in a link's queue longer
// than the target for an interval make its sender call for a drop, which
// the TUN reader makes on the next bulk packet for the link, before that
// packet takes a sequence number; a call's packets are spared, and so is
// a flow the scheduler may spill onto another path (aggregate beside a
// second path).
func TestCoDelCallsForDrops(t *testing.T) {
	for _, tt := range []struct {
		mode  scheduler.Mode
		links int
		drops bool
	}{
		{scheduler.Failover, 1, true},
		{scheduler.Auto, 1, true},
		{scheduler.Aggregate, 2, false},
	} {
		s, err := newSession(1, tt.mode, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		l := testLink("a", 0)
		s.addLink(l)
		if tt.links > 1 {
			// b is full: the packets go on a, whose drop is called for,
			// and b is where the flow may spill once it has room.
			b := testLink("b", 0)
			for range cap(b.queue) {
				b.queue <- filler()
			}
			s.addLink(b)
		}
		var c Counters
		// The sender's view: every packet leaving the queue waited 30 ms,
		// with more behind it, for longer than an interval.
		start := monotime()
		for now := start; now < start+int64(aqmInterval+10*time.Millisecond); now += int64(time.Millisecond) {
			p := filler()
			p.buf.queued = now - int64(30*time.Millisecond)
			l.queue <- filler()
			l.measureQueue(p, now)
			putBuffer((<-l.queue).buf)
			putBuffer(p.buf)
		}
		if l.aqmDrop.Load() == 0 {
			t.Fatalf("%s: no drop called for after a standing queue of 30 ms for %v", tt.mode, aqmInterval+10*time.Millisecond)
		}
		call, info := callPacket(t)
		if res, _ := s.send(call, &info, nil, &c); res != sent || c.DropAQM.Load() != 0 {
			t.Fatalf("%s: a call's packet: send = %v, drop_aqm %d; want it sent", tt.mode, res, c.DropAQM.Load())
		}
		seq := s.seq
		bulk, info := bulkPacket(t)
		s.send(bulk, &info, nil, &c)
		if !tt.drops {
			if c.DropAQM.Load() != 0 || len(l.queue) != 2 || l.aqmDrop.Load() == 0 {
				t.Errorf("%s over %d paths: drop_aqm %d, %d packets on the path that called for a drop (want 2), call still pending %v; want the call left alone for a flow that may spill",
					tt.mode, tt.links, c.DropAQM.Load(), len(l.queue), l.aqmDrop.Load() != 0)
			}
			continue
		}
		if c.DropAQM.Load() != 1 || s.seq != seq {
			t.Errorf("%s: drop_aqm %d, sequence number %d -> %d; want the bulk packet dropped before it took one", tt.mode, c.DropAQM.Load(), seq, s.seq)
		}
		bulk, info = bulkPacket(t)
		if res, _ := s.send(bulk, &info, nil, &c); res != sent || c.DropAQM.Load() != 1 {
			t.Errorf("%s: the next bulk packet: send = %v, drop_aqm %d; want one drop per call", tt.mode, res, c.DropAQM.Load())
		}
	}
}

// TestDroppable: the AQM drops bulk packets only.
func TestDroppable(t *testing.T) {
	data := scheduler.Info{Proto: scheduler.ProtoTCP, Size: 1400, Payload: 1360, TCPFlags: 0x10}
	for _, tt := range []struct {
		name string
		info scheduler.Info
		want bool
	}{
		{"TCP data", data, true},
		{"UDP datagram", scheduler.Info{Proto: scheduler.ProtoUDP, Size: 1200, Payload: 1172}, true},
		{"small TCP data", scheduler.Info{Proto: scheduler.ProtoTCP, Size: 100, Payload: 60, TCPFlags: 0x18}, false},
		{"SYN with data", scheduler.Info{Proto: scheduler.ProtoTCP, Size: 1400, Payload: 1360, TCPFlags: tcpSYN}, false},
		{"FIN with data", scheduler.Info{Proto: scheduler.ProtoTCP, Size: 1400, Payload: 1360, TCPFlags: 0x10 | tcpFIN}, false},
		{"ICMP", scheduler.Info{Proto: 1, Size: 1400, Payload: -1}, false},
		{"fragment", scheduler.Info{Proto: scheduler.ProtoTCP, Size: 1400, Payload: -1}, false},
	} {
		pk := scheduler.Packet{Size: tt.info.Size, Interactive: scheduler.IsInteractive(&tt.info)}
		if got := droppable(pk, &tt.info); got != tt.want {
			t.Errorf("%s: droppable = %v, want %v", tt.name, got, tt.want)
		}
	}
	pk := scheduler.Packet{Size: 1400, Interactive: true} // a class's
	if droppable(pk, &data) {
		t.Error("an interactive class's data: droppable")
	}
}

// TestStandingQueueDropsRatherThanWaits: with every queue full, the TUN
// reader waits for room (TestFullQueueWaitsForRoom), but not where the
// queue stands because the path is slower than the flows: there a bulk
// packet is dropped at once. A call's packet still waits.
func TestStandingQueueDropsRatherThanWaits(t *testing.T) {
	s, l := fullSession(t)
	l.standingAt.Store(monotime())
	var c Counters
	bulk, info := bulkPacket(t)
	if res, _ := s.send(bulk, &info, nil, &c); res != queueFull || c.DropAQM.Load() != 1 || c.ReaderWaitNs.Load() != 0 {
		t.Fatalf("bulk: send = %v, drop_aqm %d, waited %v; want dropped without a wait", res, c.DropAQM.Load(), time.Duration(c.ReaderWaitNs.Load()))
	}
	done := make(chan sendResult)
	go func() {
		call, info := callPacket(t)
		res, _ := s.send(call, &info, nil, &c)
		done <- res
	}()
	putBuffer((<-l.queue).buf) // the sender takes one: room for the waiting packet
	if res := <-done; res != sent {
		t.Errorf("call: send = %v, want sent after waiting for room", res)
	}
	// A queue that stood an interval ago, the sender idle since, says
	// nothing of the queue now: a bulk packet waits too.
	l.standingAt.Store(monotime() - int64(2*aqmInterval))
	go func() {
		bulk, info := bulkPacket(t)
		res, _ := s.send(bulk, &info, nil, &c)
		done <- res
	}()
	putBuffer((<-l.queue).buf)
	if res := <-done; res != sent || c.DropAQM.Load() != 1 {
		t.Errorf("bulk after the queue stood long ago: send = %v, drop_aqm %d; want it sent after waiting", res, c.DropAQM.Load())
	}
}

// TestInteractivePassesReorder: with two paths delivering, a bulk packet
// behind a gap is held until the gap fills, while a call's packet behind
// the same gap is written at once.
func TestInteractivePassesReorder(t *testing.T) {
	s, fast, slow := pathsApart(scheduler.Aggregate)
	w := &tunWriter{queue: make(chan packetRef, 16), done: make(chan struct{})}
	var c Counters
	ctx := context.Background()
	src, dst := netip.MustParseAddr("10.210.0.2"), netip.MustParseAddr("100.96.0.2")
	bulk := func(id byte) []byte { b := udp4To(src, dst, 9000, 1200); b[100] = id; return b }
	call := func(id byte) []byte { b := udp4To(src, dst, 9000, 180); b[100] = id; return b }
	s.deliver(ctx, fast, 1, bulk(1), nil, w, &c)
	s.updateHold(w)
	if s.reorder == nil {
		t.Fatal("no reorder buffer for two paths")
	}
	s.deliver(ctx, fast, 3, bulk(3), nil, w, &c) // 2 is still on the slow path
	s.deliver(ctx, fast, 4, call(4), nil, w, &c)
	s.deliver(ctx, slow, 2, bulk(2), nil, w, &c)
	for _, want := range []byte{1, 4, 2, 3} {
		p := <-w.queue
		if got := p.packet()[100]; got != want {
			t.Fatalf("TUN got packet %d, want %d (the call's packet 4 first, the bulk ones in order)", got, want)
		}
	}
}

// TestNoAQMRightAfterFailover: within aqmGrace of a path going down, the
// survivor's queue carries the flows across; the AQM drops nothing.
func TestNoAQMRightAfterFailover(t *testing.T) {
	s, a, b := twoLinks(t)
	s.addLink(a)
	s.addLink(b)
	var c Counters
	s.failover(&c) // both up
	before := s.diedAt
	a.lastRecv.Store(-int64(time.Hour)) // a goes silent: dead at the next look
	s.failover(&c)
	if s.diedAt == before {
		t.Fatal("the session did not note the path going down")
	}
	send := func() {
		b.aqmDrop.Store(monotime())
		bulk, info := bulkPacket(t)
		s.send(bulk, &info, nil, &c)
	}
	send()
	if n := c.DropAQM.Load(); n != 0 {
		t.Fatalf("drop_aqm %d right after a path went down, want 0", n)
	}
	s.diedAt = monotime() - int64(aqmGrace) // the grace is over
	send()
	if n := c.DropAQM.Load(); n != 1 {
		t.Errorf("drop_aqm %d after the grace, want 1", n)
	}
}

// TestWatchLooksWhenDue: the endpoint's watch looks at the paths again
// when the session asks for it, the moment the first path still up is to
// be given up if nothing is heard from it (its silentAt), not up to an
// interval later.
func TestWatchLooksWhenDue(t *testing.T) {
	s, a, b := twoLinks(t)
	s.addLink(a)
	s.addLink(b)
	var c Counters
	a.lastRecv.Store(monotime() - int64(100*time.Millisecond)) // a is due sooner than b
	if next, want := s.failover(&c), a.silentAt(); next != want || want >= b.silentAt() {
		t.Errorf("failover asks to look again at %d, want %d (a's silentAt, before b's %d)", next, want, b.silentAt())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	looks := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		watch(ctx, time.Hour, func() int64 {
			select {
			case looks <- struct{}{}:
			default:
			}
			return monotime() + int64(time.Millisecond)
		})
	}()
	for range 3 {
		select {
		case <-looks:
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not look again when asked to (its interval is an hour)")
		}
	}
	cancel()
	<-done
}
