package tunnel

import (
	"context"
	"net/netip"
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
		l.queue <- packetRef{buf: getBuffer(100), n: 100}
	}
	return s, l
}

func sendOne(t *testing.T, s *session, c *Counters) sendResult {
	t.Helper()
	pkt := udp4(netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("10.210.0.2"), 1200, true)
	buf := getBuffer(len(pkt))
	p := packetRef{buf: buf, n: copy(buf.b[headroom:], pkt)}
	info, err := packet.Parse(p.packet())
	if err != nil {
		t.Fatal(err)
	}
	res, _ := s.send(p, &info, c)
	return res
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

// TestStuckQueueDrops: a queue nobody drains costs the reader at most
// maxQueueWait per packet, then the packet is dropped and counted.
func TestStuckQueueDrops(t *testing.T) {
	s, _ := fullSession(t)
	var c Counters
	if res := sendOne(t, s, &c); res != queueFull {
		t.Fatalf("send = %v, want queueFull", res)
	}
	if n := c.DropQueueFull.Load(); n != 1 {
		t.Errorf("drop_queue_full = %d, want 1", n)
	}
}

func TestInflightKeepsRecentAndBounded(t *testing.T) {
	var f inflight
	for i := range inflightLen + 10 {
		f.add(packetRef{buf: getBuffer(100), n: 100 + i}, int64(i), 0)
	}
	if f.n != inflightLen {
		t.Fatalf("holds %d, want the bound %d", f.n, inflightLen)
	}
	// Keep only what was sent at or after 1000.
	got := f.take(nil, 1000)
	if len(got) != inflightLen+10-1000 || got[0].n != 100+1000 || got[len(got)-1].n != 100+inflightLen+9 {
		t.Fatalf("take returned %d packets from n=%d: want the %d newest, oldest first", len(got), got[0].n, inflightLen+10-1000)
	}
	if f.n != 0 || f.ring != nil {
		t.Errorf("after take: %d kept, ring allocated %v", f.n, f.ring != nil)
	}
	f.add(packetRef{buf: getBuffer(100), n: 1}, 5, 0)
	f.trim(6)
	if f.n != 0 || f.ring != nil {
		t.Errorf("after trim: %d kept, ring allocated %v: an idle link must hold no buffers", f.n, f.ring != nil)
	}
}

// TestResendOnPathDown: what a link had in flight when it went down is
// queued on the path the scheduler picks now, with its sequence number.
func TestResendOnPathDown(t *testing.T) {
	s, err := newSession(1, scheduler.Failover, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := testLink("a", 0), testLink("b", 1)
	a.stopped, b.stopped = make(chan struct{}), make(chan struct{})
	s.addLink(a)
	s.addLink(b)
	var c Counters
	for range 3 {
		if res := sendOne(t, s, &c); res != sent {
			t.Fatalf("send = %v", res)
		}
	}
	// a's sender sends them: they are now in flight on a.
	for range 3 {
		p := <-a.queue
		a.sent.add(p, monotime(), 0)
	}
	a.rtt.Store(int64(time.Second)) // all three sent within the last round trip
	a.dead.Store(true)
	s.failover(&c)
	if n := c.Resent.Load(); n != 3 {
		t.Fatalf("resent = %d, want 3", n)
	}
	for want := uint64(1); want <= 3; want++ {
		p := <-b.queue
		_, seq, _, err := transport.ParseHeader(p.datagram())
		if err != nil || seq != want {
			t.Errorf("resent packet has seq %d (%v), want %d", seq, err, want)
		}
	}
	s.failover(&c)
	if n := c.Resent.Load(); n != 3 {
		t.Errorf("resent = %d after a second look, want 3: once only", n)
	}
}

// TestPeerDownFollowsClient: the concentrator takes out exactly the paths
// the client last said were down.
func TestPeerDownFollowsClient(t *testing.T) {
	s, _ := newSession(1, scheduler.Failover, 0, nil)
	a, b := testLink("a", 0), testLink("b", 1)
	s.addLink(a)
	s.addLink(b)
	now := monotime()
	s.setPeerDown([]string{"a"})
	if a.alive(now) || !b.alive(now) {
		t.Fatalf("after down [a]: a alive %v, b alive %v", a.alive(now), b.alive(now))
	}
	s.setPeerDown(nil)
	if !a.alive(now) {
		t.Fatal("a still down after the client said it is up")
	}
}

// TestReorderAcrossPaths: with two paths of different delay delivering,
// packets that arrive out of order reach the TUN writer in order; with
// one path, the buffer is out of the way (and holds no memory).
func TestReorderAcrossPaths(t *testing.T) {
	s, _ := newSession(1, scheduler.Aggregate, 0, nil)
	fast, slow := testLink("fast", 0), testLink("slow", 0)
	fast.rtt.Store(int64(10 * time.Millisecond))
	slow.rtt.Store(int64(60 * time.Millisecond))
	now := monotime()
	fast.lastData.Store(now)
	slow.lastData.Store(now)
	s.addLink(fast)
	s.addLink(slow)
	w := &tunWriter{queue: make(chan packetRef, 16), done: make(chan struct{})}
	var c Counters
	ctx := context.Background()
	s.deliver(ctx, fast, 1, []byte{1}, w, &c) // one path so far: straight through
	s.updateHold(w)
	if s.reorder == nil || s.reorder.Hold() < 50*time.Millisecond {
		t.Fatalf("reorder buffer not in place for two paths 50 ms apart")
	}
	s.deliver(ctx, fast, 3, []byte{3}, w, &c) // 2 is still on the slow path
	s.deliver(ctx, slow, 2, []byte{2}, w, &c)
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
	s, _ := newSession(1, scheduler.Flow, 0, nil)
	fast, slow := testLink("fast", 0), testLink("slow", 0)
	fast.rtt.Store(int64(10 * time.Millisecond))
	slow.rtt.Store(int64(60 * time.Millisecond))
	fast.lastData.Store(monotime())
	slow.lastData.Store(monotime())
	s.addLink(fast)
	s.addLink(slow)
	s.updateHold(&tunWriter{queue: make(chan packetRef, 1), done: make(chan struct{})})
	if s.reorder != nil {
		t.Error("flow mode put a reorder buffer in place")
	}
}
