package transport

import (
	"context"
	"crypto/ed25519"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/qlog"
)

func datagram(kind Kind, seq uint64, n int) []byte {
	b := make([]byte, n)
	PutHeader(b, kind, seq)
	return b
}

// TestLossTrackerMatchesFrames feeds the tracker the events quic-go
// records: each DATAGRAM frame is matched to the oldest queued datagram of
// its length (skipping one quic-go dropped), and a lost packet reports
// the data datagrams it carried, not probes and not those of other
// packets or of other packet number spaces.
func TestLossTrackerMatchesFrames(t *testing.T) {
	tr := newLossTracker()
	tr.queue(datagram(KindData, 1, 100))
	tr.queue(datagram(KindData, 2, 1300)) // dropped by quic-go: never in a packet
	tr.queue(datagram(KindData, 3, 200))
	tr.queue(datagram(KindProbe, 7, 8))
	tr.queue(datagram(KindData, 4, 100))
	tr.queue(datagram(KindData, 5, 300))
	tr.queue(datagram(KindData, 6, 400)) // refused by quic-go
	tr.unqueue()
	frames := func(lens ...int64) []qlog.Frame {
		var fs []qlog.Frame
		fs = append(fs, qlog.Frame{Frame: &qlog.AckFrame{}})
		for _, n := range lens {
			fs = append(fs, qlog.Frame{Frame: &qlog.DatagramFrame{Length: n}})
		}
		return fs
	}
	sent := func(pn int64, typ qlog.PacketType, fs []qlog.Frame) {
		tr.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: typ, PacketNumber: qlog.PacketNumber(pn)}, Frames: fs})
	}
	lost := func(pn int64, typ qlog.PacketType) {
		tr.RecordEvent(qlog.PacketLost{Header: qlog.PacketHeader{PacketType: typ, PacketNumber: qlog.PacketNumber(pn)}})
	}
	sent(0, qlog.PacketTypeHandshake, frames())
	sent(10, qlog.PacketType1RTT, frames(100))
	sent(11, qlog.PacketType1RTT, frames(200, 8))
	sent(12, qlog.PacketType1RTT, frames(100, 300))
	sent(13, qlog.PacketType1RTT, frames(400)) // nothing queued of this length

	lost(0, qlog.PacketTypeHandshake)
	if got := tr.takeLost(nil); len(got) != 0 {
		t.Fatalf("a lost handshake packet reported %v", got)
	}
	lost(11, qlog.PacketType1RTT)
	select {
	case <-tr.ready:
	default:
		t.Fatal("no signal after a loss")
	}
	if got := tr.takeLost(nil); len(got) != 1 || got[0] != 3 {
		t.Errorf("packet 11 lost: reported %v, want [3] (the probe is not data)", got)
	}
	lost(12, qlog.PacketType1RTT)
	lost(13, qlog.PacketType1RTT)
	lost(99, qlog.PacketType1RTT)
	if got := tr.takeLost(nil); len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Errorf("packets 12, 13 and 99 lost: reported %v, want [4 5]", got)
	}
	if got := tr.takeLost(nil); len(got) != 0 {
		t.Errorf("reported again: %v", got)
	}
	// The peer acknowledges 10 to 12 after all: two losses were spurious,
	// and the path is known to work now.
	if tr.ackedAt.Load() != 0 {
		t.Fatal("acknowledgement progress before any acknowledgement")
	}
	tr.RecordEvent(qlog.PacketReceived{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT},
		Frames: []qlog.Frame{{Frame: &qlog.AckFrame{AckRanges: []qlog.AckRange{{Smallest: 10, Largest: 12}}}}}})
	if n := tr.spurious.Load(); n != 2 {
		t.Errorf("%d spurious losses, want 2 (packets 11 and 12)", n)
	}
	if tr.ackedAt.Load() == 0 {
		t.Error("no acknowledgement progress noted")
	}

	// An idle path frees its ring; losses of what it sent before are not
	// reported.
	tr.queue(datagram(KindData, 8, 500))
	sent(14, qlog.PacketType1RTT, frames(500))
	tr.release()
	if tr.sent != nil {
		t.Error("release kept the ring")
	}
	lost(14, qlog.PacketType1RTT)
	if got := tr.takeLost(nil); len(got) != 0 {
		t.Errorf("after release, reported %v", got)
	}
}

// lossyConn drops every tenth packet it reads once dropping is on.
type lossyConn struct {
	net.PacketConn
	drop atomic.Bool
	n    int
}

func (c *lossyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.drop.Load() {
			return n, addr, err
		}
		c.n++
		if c.n%10 != 0 {
			return n, addr, err
		}
	}
}

// TestPathReportsLostDatagrams: over a link that loses every tenth
// packet, the sender learns the sequence numbers of data datagrams that
// did not arrive, and only of those.
func TestPathReportsLostDatagrams(t *testing.T) {
	serverKey, clientKey := newKey(t), newKey(t)
	conf, err := ServerTLS(serverKey, func(ed25519.PublicKey) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lossy := &lossyConn{PacketConn: udp}
	l, err := Listen(lossy, conf, serverKey.Seed())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close(); udp.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var mu sync.Mutex
	received := map[uint64]bool{}
	go func() {
		p, err := l.Accept(ctx)
		if err != nil {
			return
		}
		if _, err := p.Handshake(ctx); err != nil {
			return
		}
		p.WriteControl(&Message{Welcome: &Welcome{Session: 1}})
		for {
			d, err := p.Receive(ctx)
			if err != nil {
				return
			}
			_, seq, _, _ := ParseHeader(d)
			mu.Lock()
			received[seq] = true
			mu.Unlock()
		}
	}()
	cp, _, err := Dial(ctx, dialConfig(t, l, clientKey, serverKey.Public().(ed25519.PublicKey)), &Hello{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close("done")
	if cp.loss == nil {
		t.Fatal("the path has no loss tracker")
	}

	lossy.drop.Store(true)
	const count = 2000
	for seq := uint64(1); seq <= count; seq++ {
		if err := cp.Send(datagram(KindData, seq, 200)); err != nil {
			t.Fatal(err)
		}
	}
	var reported []uint64
	for len(reported) < 20 {
		select {
		case <-cp.Lost():
			reported = cp.TakeLost(reported)
		case <-ctx.Done():
			t.Fatalf("only %d datagrams reported lost", len(reported))
		}
	}
	if cp.AckedAt().IsZero() {
		t.Error("the peer's acknowledgements were not noticed")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, seq := range reported {
		if seq < 1 || seq > count || received[seq] {
			t.Errorf("seq %d reported lost, but it arrived (or was never sent)", seq)
		}
	}
}

// TestLossTrackerBacklog: the backlog is what was handed to quic-go and
// not seen in a sent packet yet; one quic-go dropped goes when a later
// datagram is sent.
func TestLossTrackerBacklog(t *testing.T) {
	tr := newLossTracker()
	for i := range 10 {
		tr.queue(datagram(KindData, uint64(i), 100+i))
	}
	if n := tr.backlog(); n != 10 {
		t.Fatalf("backlog %d after 10 queued, want 10", n)
	}
	tr.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT, PacketNumber: 1},
		Frames: []qlog.Frame{{Frame: &qlog.DatagramFrame{Length: 100}}, {Frame: &qlog.DatagramFrame{Length: 103}}}})
	if n := tr.backlog(); n != 6 { // 101 and 102 were dropped on the way
		t.Errorf("backlog %d after 4 sent or skipped, want 6", n)
	}
}

// TestLossCounts: the tracker counts ack-eliciting 1-RTT packets sent and loss events
// (the losses of packets sent before the first was declared are one);
// after ForgetLosses, a packet sent before it does not count even when
// QUIC declares it lost later (slow start's overshoot). It also
// says when slow start and its recovery are over, and signals Drained.
func TestLossCounts(t *testing.T) {
	tr := newLossTracker()
	p := &Path{loss: tr}
	sent := func(pn int64) {
		tr.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT, PacketNumber: qlog.PacketNumber(pn)},
			Frames: []qlog.Frame{{Frame: &qlog.AckFrame{}}, {Frame: &qlog.PingFrame{}}}})
	}
	// A packet of acknowledgements only is never declared lost: it does
	// not count.
	ackOnly := func(pn int64) {
		tr.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT, PacketNumber: qlog.PacketNumber(pn)},
			Frames: []qlog.Frame{{Frame: &qlog.AckFrame{}}}})
	}
	lost := func(pn int64) {
		tr.RecordEvent(qlog.PacketLost{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT, PacketNumber: qlog.PacketNumber(pn)}})
	}
	state := func(s qlog.CongestionState) { tr.RecordEvent(qlog.CongestionStateUpdated{State: s}) }
	for pn := range int64(10) {
		sent(pn)
	}
	ackOnly(10)
	lost(2)
	if s, l := p.LossCounts(); s != 10 || l != 1 {
		t.Fatalf("LossCounts = %d, %d; want 10, 1", s, l)
	}
	state(qlog.CongestionStateApplicationLimited) // still in slow start
	state(qlog.CongestionStateRecovery)
	if p.InSlowStart() || p.Settled() {
		t.Fatalf("in recovery: InSlowStart %v, Settled %v; want false, false", p.InSlowStart(), p.Settled())
	}
	state(qlog.CongestionStateApplicationLimited)
	if !p.Settled() {
		t.Fatal("not settled after the recovery")
	}
	p.ForgetLosses()
	lost(5) // sent before: forgotten
	sent(11)
	sent(12)
	sent(13)
	lost(11)
	lost(12) // sent before 11 was declared lost: the same event
	sent(14)
	lost(13) // the same
	lost(14) // sent after: a new event
	if s, l := p.LossCounts(); s != 14 || l != 3 {
		t.Fatalf("after ForgetLosses: LossCounts = %d, %d; want 14, 3", s, l)
	}

	// Drained: signalled when quic-go sent a packet and at most the level
	// are queued; not once the level is negative.
	ch := p.Drained(1)
	tr.queue(datagram(KindPad, 0, 100))
	tr.queue(datagram(KindPad, 0, 100))
	tr.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT, PacketNumber: 15},
		Frames: []qlog.Frame{{Frame: &qlog.DatagramFrame{Length: 100}}}})
	select {
	case <-ch:
	default:
		t.Fatal("no drained signal with one datagram left")
	}
	p.Drained(-1)
	tr.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT, PacketNumber: 16},
		Frames: []qlog.Frame{{Frame: &qlog.DatagramFrame{Length: 100}}}})
	select {
	case <-ch:
		t.Fatal("drained signal after Drained(-1)")
	default:
	}
}
