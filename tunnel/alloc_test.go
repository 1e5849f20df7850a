package tunnel

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// testLink is a link with a queue and no connection: enough for the
// scheduler and the TUN reader's side of the hot path.
func testLink(name string, prio int) *link {
	l := &link{name: name, hello: transport.Hello{Priority: prio, Weight: 1}, queue: make(chan packetRef, sendQueueLen), wake: make(chan struct{}, 1)}
	l.lastRecv.Store(monotime())
	l.mtu.Store(1400)
	l.tuneAQM()
	return l
}

// TestHotPathDoesNotAllocate: parsing, scheduling, MSS clamping and
// queueing a packet read from the TUN, and delivering one received,
// allocate nothing in braid's code.
func TestHotPathDoesNotAllocate(t *testing.T) {
	for _, mode := range []scheduler.Mode{scheduler.Failover, scheduler.Aggregate} {
		s, err := newSession(1, mode, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		a, b := testLink("a", 0), testLink("b", 1)
		s.addLink(a)
		s.addLink(b)
		var c Counters
		w := newTunWriter(tuntest.NewChannelTUN().TUN(), &c, slog.New(slog.NewTextHandler(io.Discard, nil)))
		gw := &gateways{v4: netip.MustParseAddr("100.96.0.1")}
		src, dst := netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("10.210.0.2")
		syn, data := tcpSYN4(src, dst, 1460), udp4(src, dst, 1200, true)
		ctx := context.Background()
		send := func(pkt []byte) {
			buf := getBuffer(len(pkt))
			n := copy(buf.b[headroom:], pkt)
			p := packetRef{buf: buf, n: n}
			info, err := packet.Parse(p.packet())
			if err != nil {
				t.Fatal(err)
			}
			forward(s, p, &info, nil, w, gw, &c)
			for _, l := range []*link{a, b} {
				select {
				case q := <-l.queue:
					putBuffer(q.buf)
				default:
				}
			}
		}
		deliver := func() {
			w.writeCopy(ctx, data)
			putBuffer((<-w.queue).buf)
		}
		for _, pkt := range [][]byte{syn, data} {
			if n := testing.AllocsPerRun(1000, func() { send(pkt) }); n != 0 {
				t.Errorf("%s: sending a %d-byte packet allocates %v times", mode, len(pkt), n)
			}
		}
		if n := testing.AllocsPerRun(1000, deliver); n != 0 {
			t.Errorf("delivering a packet allocates %v times", n)
		}
	}
}

// filler is a packet that fills a queue in a test: zeroes, which no
// resend takes for a packet (a pooled buffer may hold one from an earlier
// test).
func filler() packetRef {
	b := getBuffer(100)
	clear(b.b)
	return packetRef{buf: b, n: 100}
}
