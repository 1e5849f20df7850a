package tunnel

import (
	"net/netip"
	"testing"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/tunnel/packet"
)

// fullSession returns a session with one link whose queue is full.
func fullSession(t *testing.T) (*session, *link) {
	t.Helper()
	s, err := newSession(1, scheduler.Failover)
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
