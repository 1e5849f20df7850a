package tunnel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// udp4To is udp4 to destination port port.
func udp4To(src, dst netip.Addr, port uint16, size int) []byte {
	b := udp4(src, dst, size, true)
	b[22], b[23] = byte(port>>8), byte(port)
	return b
}

// txPackets returns the data packets the client sent on wifi and lte.
func (h *harness) txPackets() []uint64 {
	paths := h.client.Status().Paths
	return []uint64{pathNamed(h.t, paths, "wifi").TxPackets, pathNamed(h.t, paths, "lte").TxPackets}
}

// TestClassTakesEffect: on a client in failover mode with two paths, a
// class sends UDP to port 5300 redundantly: every packet goes on both
// paths and the concentrator drops the second copy. TCP, and UDP to
// another port, stay on the preferred path.
func TestClassTakesEffect(t *testing.T) {
	h := newHarness(t)
	client, conc := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.classes = []scheduler.Class{{Name: "dns", Mode: scheduler.Redundant, Proto: scheduler.ProtoUDP,
		DstPorts: []scheduler.PortRange{{Lo: 5300, Hi: 5300}}}}
	h.startClient(client.TUN(), scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	done := make(chan struct{})
	defer close(done)
	delivered := make(chan struct{}, 1000)
	go func() { // the concentrator's TUN must be read for it to go on
		for {
			select {
			case <-conc.Inbound:
				delivered <- struct{}{}
			case <-done:
				return
			}
		}
	}()
	own := h.conc.Addresses("laptop")[0].Addr()
	dst := netip.MustParseAddr("10.210.0.2")
	const n = 20
	// send sends n packets, each once the last was delivered, and returns
	// what each path sent meanwhile, once wifi has sent them all and lte
	// all it is expected to (a copy on the other path may still be in its
	// sender when the first is delivered).
	send := func(what string, lteWants uint64, pkt func(i int) []byte) (tx []uint64) {
		t.Helper()
		before := h.txPackets()
		for i := range n {
			client.Outbound <- pkt(i)
			select {
			case <-delivered:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: packet %d not delivered", what, i)
			}
		}
		sent := func() []uint64 {
			after := h.txPackets()
			return []uint64{after[0] - before[0], after[1] - before[1]}
		}
		deadline := time.Now().Add(5 * time.Second)
		for tx = sent(); (tx[0] < n || tx[1] < lteWants) && time.Now().Before(deadline); tx = sent() {
			time.Sleep(10 * time.Millisecond)
		}
		return tx
	}

	directBefore := h.client.Status().Counters["direct_tx"]
	tx := send("udp 5300", n, func(int) []byte { return udp4To(own, dst, 5300, 100) })
	if tx[0] != n || tx[1] != n {
		t.Errorf("UDP to 5300 (redundant class): %v packets sent on the paths, want %d on each", tx, n)
	}
	if got := h.client.Status().Counters["direct_tx"] - directBefore; got != 2*n {
		t.Errorf("UDP to 5300 (redundant class): %d direct datagrams sent, want %d: both copies of each", got, 2*n)
	}
	// Every copy that arrives after the first is dropped. Loopback, and
	// the harness's proxies, may lose one when the machine is busy (seen
	// once in about twenty runs of the package): wait for all, but ask
	// only that most arrived.
	var cc map[string]uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cc = h.conc.Status().Counters; cc["direct_rx"] >= 2*n && cc["drop_duplicate"] >= n {
			break
		}
	}
	if cc["drop_duplicate"] != cc["direct_rx"]-n || cc["drop_duplicate"] < n*3/4 {
		t.Fatalf("the concentrator received %d direct datagrams for %d packets and dropped %d as duplicates, want all but the first copies; proxies dropped %d and %d",
			cc["direct_rx"], n, cc["drop_duplicate"], h.proxies[0].Dropped.Load(), h.proxies[1].Dropped.Load())
	}
	dups := h.conc.Status().Counters["drop_duplicate"]

	tx = send("udp 5301", 0, func(int) []byte { return udp4To(own, dst, 5301, 100) })
	if tx[0] != n || tx[1] != 0 {
		t.Errorf("UDP to 5301 (no class, failover): %v packets sent on the paths, want %d on wifi only", tx, n)
	}
	tx = send("tcp", 0, func(int) []byte { return tcpSYN4(own, dst, 1200) })
	if tx[0] != n || tx[1] != 0 {
		t.Errorf("TCP (no class, failover): %v packets sent on the paths, want %d on wifi only", tx, n)
	}
	if got := h.conc.Status().Counters["drop_duplicate"]; got != dups {
		t.Errorf("drop_duplicate grew from %d to %d without redundant traffic", dups, got)
	}
}

// TestRateCapReachesEstimator: an uplink's rate cap is its path's
// estimator's ceiling.
func TestRateCapReachesEstimator(t *testing.T) {
	h := newHarness(t)
	h.startConcentrator(tuntest.NewChannelTUN().TUN())
	h.rateCaps = map[int]float64{1: 2.5e6}
	h.startClient(tuntest.NewChannelTUN().TUN(), scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	for _, l := range *h.client.sess.links.Load() {
		l.estMu.Lock()
		got := l.est.Cap
		l.estMu.Unlock()
		if want := h.rateCaps[map[string]int{"wifi": 0, "lte": 1}[l.name]]; got != want {
			t.Errorf("path %s: estimator cap %v, want %v", l.name, got, want)
		}
	}
}

// TestRedundantCopies: ClientOptions.Copies sets how many paths mode
// redundant sends each packet on.
func TestRedundantCopies(t *testing.T) {
	for _, copies := range []int{0, 3} {
		s, err := newSession(1, scheduler.Redundant, copies, nil)
		if err != nil {
			t.Fatal(err)
		}
		paths := make([]scheduler.PathState, 3)
		for i := range paths {
			paths[i] = scheduler.PathState{Up: true, Weight: 1}
		}
		want := max(copies, scheduler.DefaultCopies)
		if got := s.sched.Pick(nil, scheduler.Packet{}, paths); len(got) != want {
			t.Errorf("copies %d: Pick = %v, want %d paths", copies, got, want)
		}
		s.expiry.Stop()
	}
}
