package tunnel

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/e2e/proxy"
	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// redundantPair starts a concentrator and a client in mode redundant with
// n paths, on channel TUNs.
func redundantPair(t *testing.T, n int) (h *harness, client, conc *tuntest.ChannelTUN) {
	h = newHarness(t)
	conc, client = tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.startClient(client.TUN(), scheduler.Redundant, n)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(n))
	return h, client, conc
}

// receive reads n packets from in, failing the test, with both ends'
// counters and paths, if they take long.
func receive(t *testing.T, h *harness, what string, in chan []byte, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-in:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: %d of %d packets arrived; the client's counters %v, paths %+v; the concentrator's counters %v, clients %+v",
				what, i, n, h.client.Status().Counters, h.client.Status().Paths, h.conc.Status().Counters, h.conc.Status().Clients)
		}
	}
}

// TestDirectBothWays: in mode redundant, each packet goes as a direct
// datagram on each path, both ways, and arrives once.
func TestDirectBothWays(t *testing.T) {
	h, client, conc := redundantPair(t, 2)
	own := h.conc.Addresses("laptop")[0].Addr()
	far := netip.MustParseAddr("10.210.0.2")
	const n = 20
	// One at a time: the paths' warm-up padding fills the proxies'
	// sockets, and a burst on top of it would lose packets there.
	for range n {
		client.Outbound <- udp4(own, far, 200, true)
		receive(t, h, "up", conc.Inbound, 1)
	}
	for range n {
		conc.Outbound <- udp4(far, own, 200, true)
		receive(t, h, "down", client.Inbound, 1)
	}

	for _, end := range []struct {
		name string
		c    CounterSnapshot
	}{{"client", h.client.Status().Counters}, {"concentrator", h.conc.Status().Counters}} {
		if end.c["direct_tx"] != 2*n {
			t.Errorf("%s: direct_tx = %d, want %d (both copies of each packet)", end.name, end.c["direct_tx"], 2*n)
		}
	}
	// The copies that arrive second are duplicates. The proxies may lose
	// a copy (the paths' warm-up padding fills their sockets), but
	// nothing else: every copy accepted beyond a packet's first is dropped.
	waitFor(t, "the second copies", 5*time.Second, func() bool {
		for _, c := range []CounterSnapshot{h.client.Status().Counters, h.conc.Status().Counters} {
			if c["direct_rx"] <= n || c["direct_rx"]-n != c["drop_duplicate"] {
				return false
			}
		}
		return true
	})
	for _, p := range h.client.Status().Paths {
		if p.TxPackets != p.DirectTx || p.DirectTx != n || p.DirectRx == 0 || p.DirectRx > n {
			t.Errorf("path %s: %d data packets sent, %d of them direct, %d received direct; want %d, all, 1 to %d", p.Name, p.TxPackets, p.DirectTx, p.DirectRx, n, n)
		}
	}
	if c := h.conc.Status().Counters; c["drop_bad_direct"] != 0 {
		t.Errorf("concentrator refused %d direct datagrams", c["drop_bad_direct"])
	}
}

// TestDirectCopiesOnOnePath: with one path left, a redundant packet goes
// on it twice, so that one random loss does not lose it; on a path
// measured to lose 3% of its packets, in as many copies as
// scheduler.CopiesFor asks (four: two would lose one packet in 1,100).
// The concentrator delivers each packet once.
func TestDirectCopiesOnOnePath(t *testing.T) {
	for _, tt := range []struct {
		name string
		loss float64
	}{{"clean", 0}, {"lossy", 0.03}} {
		t.Run(tt.name, func(t *testing.T) {
			h, client, conc := redundantPair(t, 1)
			want := 2
			if tt.loss > 0 {
				l := (*h.client.sess.links.Load())[0]
				l.estMu.Lock()
				l.est.OnLossCounts(1000, 0)
				l.est.OnLossCounts(1100, uint64(tt.loss*100)) // a sample of 100 packets
				l.estMu.Unlock()
				want = scheduler.CopiesFor([]scheduler.PathState{{Loss: tt.loss}}, []int{0}, 2)
				if want <= 2 {
					t.Fatalf("CopiesFor at %v loss = %d, want more than 2", tt.loss, want)
				}
			}
			own := h.conc.Addresses("laptop")[0].Addr()
			const n = 20
			for i := range n {
				client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), 200, true)
				select {
				case <-conc.Inbound:
				case <-time.After(5 * time.Second):
					t.Fatalf("packet %d not delivered in 5 s; the client's counters %v, paths %+v; the concentrator's counters %v", i, h.client.Status().Counters, h.client.Status().Paths, h.conc.Status().Counters)
				}
			}
			// Every copy after the first is dropped (loopback may lose
			// one when the machine is busy: see TestClassTakesEffect).
			waitFor(t, "the further copies", 5*time.Second, func() bool {
				c := h.conc.Status().Counters
				return h.client.Status().Paths[0].DirectTx >= uint64(want*n) &&
					c["direct_rx"] >= uint64(want*n)-1 && c["direct_rx"]-n == c["drop_duplicate"]
			})
			if p := h.client.Status().Paths[0]; p.DirectTx != uint64(want*n) || p.TxPackets != p.DirectTx {
				t.Errorf("path %s sent %d data packets, %d of them direct, want %d, all", p.Name, p.TxPackets, p.DirectTx, want*n)
			}
			select {
			case <-conc.Inbound:
				t.Error("a packet was delivered twice")
			default:
			}
		})
	}
}

// TestDirectRateFallsBackToQUIC: while more than one path is up,
// redundant packets beyond the session's direct rate go through QUIC, and
// none is lost on the way.
func TestDirectRateFallsBackToQUIC(t *testing.T) {
	h, client, conc := redundantPair(t, 2)
	own := h.conc.Addresses("laptop")[0].Addr()
	const n, size = 300, 1200 // 1.4 MB in their copies, far beyond directBurst
	start := time.Now()
	for range n { // one at a time: a burst of them would overflow socket buffers
		client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), size, true)
		receive(t, h, "up", conc.Inbound, 1)
	}
	elapsed := time.Since(start)
	var direct, quic uint64
	count := func() bool {
		direct, quic = 0, 0
		for _, p := range h.client.Status().Paths {
			direct += p.DirectTx
			quic += p.TxPackets - p.DirectTx
		}
		// More if QUIC's losses on loopback made a path read as lossy
		// (scheduler.CopiesFor).
		return direct+quic >= 2*n
	}
	// The copies on the slower path may still wait in its queue.
	waitFor(t, "every copy sent", 5*time.Second, count)
	if direct == 0 || quic == 0 {
		t.Errorf("%d packets in two copies: %d direct datagrams, %d in QUIC; want both lanes used", n, direct, quic)
	}
	allowed := (directBurst + directRate*elapsed.Seconds()) / (size + transport.HeaderLen)
	if float64(direct) > allowed {
		t.Errorf("%d direct datagrams of %d bytes in %v, beyond the rate's %.0f", direct, size, elapsed, allowed)
	}
}

// TestOneUplinkGoesDirect: a client with one uplink sends every packet
// as a direct datagram, both ways, at any rate; one with two uplinks
// keeps QUIC, even with one of them down.
func TestOneUplinkGoesDirect(t *testing.T) {
	const n, size = 200, 1200
	both := func(t *testing.T, h *harness, client, conc *tuntest.ChannelTUN) {
		own := h.conc.Addresses("laptop")[0].Addr()
		far := netip.MustParseAddr("10.210.0.2")
		for range n {
			client.Outbound <- udp4(own, far, size, true)
			receive(t, h, "up", conc.Inbound, 1)
			conc.Outbound <- udp4(far, own, size, true)
			receive(t, h, "down", client.Inbound, 1)
		}
	}
	h, client, conc := channelPair(t) // one uplink
	both(t, h, client, conc)
	// A packet finding a probe in quic-go's queue goes through QUIC
	// behind it (link.drained): nearly all go direct.
	if p := h.client.Status().Paths[0]; p.TxPackets != n || p.DirectTx < n*9/10 || p.DirectRx < n*9/10 {
		t.Errorf("one uplink: %d data packets sent, %d of them direct, %d received direct; want %d, nearly all, nearly %d", p.TxPackets, p.DirectTx, p.DirectRx, n, n)
	}

	h = newHarness(t)
	client, conc = tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.startClient(client.TUN(), scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	h.proxies[1].Set(proxy.Impairment{Cut: true})
	waitFor(t, "lte down", 10*time.Second, func() bool { return pathNamed(t, h.client.Status().Paths, "lte").State == "down" })
	both(t, h, client, conc)
	for _, c := range []CounterSnapshot{h.client.Status().Counters, h.conc.Status().Counters} {
		if c["direct_tx"] != 0 || c["direct_rx"] != 0 {
			t.Errorf("two uplinks, one down: %d direct datagrams sent, %d received; want none", c["direct_tx"], c["direct_rx"])
		}
	}
}

// TestBadDirectDropped: what claims to be a direct datagram but is not a
// path's, or does not authenticate, is counted and dropped.
func TestBadDirectDropped(t *testing.T) {
	h, _, _ := redundantPair(t, 1)
	id := (*h.client.sess.links.Load())[0].path.DirectID()
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(h.port))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	forged := make([]byte, 100)
	forged[0] = 0x01
	binary.BigEndian.PutUint64(forged[1:], id)
	stranger := append([]byte{0x01}, make([]byte, 99)...)
	binary.BigEndian.PutUint64(stranger[1:], id+1)
	for _, b := range [][]byte{forged, stranger} {
		if _, err := u.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the concentrator to refuse both", 5*time.Second, func() bool {
		return h.conc.Status().Counters["drop_bad_direct"] == 2
	})
	if n := h.conc.Status().Counters["tun_tx_packets"]; n != 0 {
		t.Errorf("the concentrator wrote %d packets to its TUN", n)
	}
}

// TestDirectCountsAgainstBudget: the bytes of direct datagrams, both
// copies, count against their uplink's data budget as QUIC's do.
func TestDirectCountsAgainstBudget(t *testing.T) {
	h := newHarness(t)
	client, conc := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.budgets = map[int]*Budget{0: {Limit: 1 << 30, Period: config.PeriodDaily, Action: config.ActionBlock}}
	h.startClient(client.TUN(), scheduler.Redundant, 1)
	waitFor(t, "path up", 10*time.Second, h.pathsUp(1))
	own := h.conc.Addresses("laptop")[0].Addr()
	const n, size = 50, 1000
	before := h.client.Status().Budgets[0].UsedBytes
	for range n {
		client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), size, true)
		receive(t, h, "up", conc.Inbound, 1)
	}
	if p := h.client.Status().Paths[0]; p.DirectTx != 2*n {
		t.Fatalf("%d direct datagrams sent, want %d", p.DirectTx, 2*n)
	}
	// IP, UDP and direct headers on each copy of each packet.
	want := before + 2*n*(size+transport.HeaderLen+transport.DirectOverhead+28)
	waitFor(t, "the budget to count the direct datagrams", 5*time.Second, func() bool {
		return h.client.Status().Budgets[0].UsedBytes >= want
	})
}
