package tunnel

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/e2e/proxy"
	"github.com/braid-tunnel/braid/scheduler"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestLostDatagramsResent: over a path that loses 5% of its packets in
// each direction, the datagrams QUIC declares lost are sent again, so
// nearly all of a UDP stream arrives; without the resends one in twenty
// packets would be missing. The client has a standby path: alone, the
// lossy one would carry the stream beside QUIC (scheduler.OnePath).
func TestLostDatagramsResent(t *testing.T) {
	h := newHarness(t)
	conc, client := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.startClient(client.TUN(), scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	h.proxies[0].Set(proxy.Impairment{Loss: 0.05})
	own := h.conc.Addresses("laptop")[0].Addr()
	dst := netip.MustParseAddr("10.210.0.2")

	const count = 2000
	got := make(map[uint32]bool)
	done := make(chan struct{})
	go func() {
		defer close(done)
		timeout := time.After(20 * time.Second)
		for len(got) < count {
			select {
			case p := <-conc.Inbound:
				got[binary.BigEndian.Uint32(p[28:])] = true
			case <-timeout:
				return
			}
		}
	}()
	for i := range uint32(count) {
		p := udp4(own, dst, 100, true)
		binary.BigEndian.PutUint32(p[28:], i)
		client.Outbound <- p
		time.Sleep(500 * time.Microsecond) // a steady stream, whose acknowledgements reveal the losses
	}
	// The last packets' losses show only as later packets are
	// acknowledged: keep the stream going with packets not counted.
	for extra := uint32(count); ; extra++ {
		p := udp4(own, dst, 100, true)
		binary.BigEndian.PutUint32(p[28:], extra)
		client.Outbound <- p
		select {
		case <-done:
		case <-time.After(time.Millisecond):
			continue
		}
		break
	}
	missing := 0
	for i := range uint32(count) {
		if !got[i] {
			missing++
		}
	}
	resent := h.client.Status().Counters["loss_resent"]
	t.Logf("%d of %d missing, %d resent after QUIC declared them lost, proxy dropped %d", missing, count, resent, h.proxies[0].Dropped.Load())
	if resent == 0 {
		t.Error("nothing resent")
	}
	// 5% lost; a resend is lost again 5% of the time: 0.25% expected.
	if missing > count/100 {
		t.Errorf("%d of %d packets missing: lost datagrams were not resent", missing, count)
	}
}
