package transport

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go/qlog"
)

// TestRxGate: a connection's datagrams that pile up in quic-go's receive
// queue close its socket's gate, the reader waits there, and the gate
// opens once the receiver has taken all but gateLow of them, or when the
// connection is gone. A wait never lasts longer than gateMaxWait.
func TestRxGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRxGate()
		tr := newLossTracker()
		tr.rx.gate = g
		received := func(n int) {
			fs := make([]qlog.Frame, n)
			for i := range fs {
				fs[i] = qlog.Frame{Frame: &qlog.DatagramFrame{Length: 1200}}
			}
			tr.RecordEvent(qlog.PacketReceived{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT}, Frames: fs})
		}

		received(gateHigh - 1)
		if g.wait() {
			t.Fatal("the reader waited below the high mark")
		}
		received(1)
		tr.RecordEvent(qlog.DatagramDropped{Direction: qlog.DirectionReceiving})
		received(1)
		if g.held.Load() != 1 {
			t.Fatalf("gate holders = %d at %d queued, want 1", g.held.Load(), tr.rx.queued.Load())
		}

		// The receiver takes all but gateLow: the waiting reader goes on at once.
		start := time.Now()
		done := make(chan bool)
		go func() { done <- g.wait() }()
		synctest.Wait() // the reader is waiting
		for range gateHigh - gateLow {
			tr.rx.add(-1)
		}
		if waited := <-done; !waited || time.Since(start) != 0 {
			t.Errorf("reader: waited %v for %v, want true for 0 (opened by the receiver)", waited, time.Since(start))
		}

		// A receiver that takes nothing holds the reader gateMaxWait at most.
		received(gateHigh)
		start = time.Now()
		if !g.wait() || time.Since(start) != gateMaxWait {
			t.Errorf("reader at a gate nobody opens waited %v, want %v", time.Since(start), gateMaxWait)
		}

		// The connection's end opens its gate.
		tr.Close()
		if g.held.Load() != 0 || g.wait() {
			t.Errorf("gate still held (%d) after the connection ended", g.held.Load())
		}
	})
}

// TestRxGateReadAhead: the reader waits once it is gateAhead packets
// ahead of quic-go, until quic-go has processed half of them; a wait that
// gateMaxWait ends forgets the count (packets no connection reports).
func TestRxGateReadAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRxGate()
		tr := newLossTracker()
		tr.rx.gate = g
		g.read(gateAhead - 1)
		if g.wait() {
			t.Fatal("the reader waited below gateAhead")
		}
		g.read(1)
		start := time.Now()
		done := make(chan bool)
		go func() { done <- g.wait() }()
		synctest.Wait()
		for range gateAhead / 2 {
			tr.RecordEvent(qlog.PacketReceived{Header: qlog.PacketHeader{PacketType: qlog.PacketType1RTT}})
		}
		if waited := <-done; !waited || time.Since(start) != 0 {
			t.Errorf("reader: waited %v for %v, want true for 0 (quic-go caught up)", waited, time.Since(start))
		}

		g.read(gateAhead) // that no connection will report
		start = time.Now()
		if !g.wait() || time.Since(start) != gateMaxWait {
			t.Errorf("reader waited %v, want %v", time.Since(start), gateMaxWait)
		}
		if g.wait() {
			t.Error("the count was not reset by the timeout")
		}
		tr.RecordEvent(qlog.PacketDropped{})
		if n := g.ahead.Load(); n != 0 {
			t.Errorf("read-ahead %d after more packets processed than read, want 0", n)
		}
	})
}
