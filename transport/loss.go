package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// QUIC never retransmits a DATAGRAM frame: a datagram in a packet that
// QUIC declares lost is gone, and the inner flow has to recover it a
// round trip later, or after its retransmission timeout if the loss hit
// its own retransmission. Most of that loss is the congestion controller
// overshooting a shallow bottleneck queue, in bursts. A lossTracker tells
// braid which data datagrams were in the packets QUIC declared lost, so it
// can send them again at once (the receiver's duplicate filter drops the
// copies of those that did arrive late).
//
// quic-go reports neither which packet carried a datagram nor which
// packets were lost, except to its qlog tracer (quic.Config.Tracer, public
// API). The tracer sees each sent packet's frames, with a DATAGRAM frame's
// length but not its data; datagrams leave quic-go's queue in the order
// Send queued them, so the tracker matches each DATAGRAM frame to the
// oldest datagram queued with that length (datagrams quic-go dropped
// instead of sending are skipped over by the same rule).

// Bounds of a lossTracker.
const (
	// lossQueued bounds datagrams handed to quic-go and not yet seen in a
	// sent packet: quic-go queues at most 32, one more is being handed
	// over. Older ones were dropped by quic-go (the match skips them).
	lossQueued = 64
	// lossSent bounds the sent datagrams remembered: a loss is declared
	// about a round trip after the send, and 4096 datagrams cover a round
	// trip of 80 ms at 50,000 datagrams a second. A loss older than that
	// is not reported (the inner flow has already recovered it).
	lossSent = 4096
	// lossPending bounds lost datagrams not yet taken by the sender; more
	// are dropped, since a sender that far behind has no room to resend.
	lossPending = 1024
)

type queuedDatagram struct {
	seq  uint64 // braid sequence number
	n    int32  // datagram length
	data bool   // a data datagram, the only kind worth resending
}

type sentDatagram struct {
	pn  int64 // QUIC packet number
	seq uint64
}

// lossTracker implements qlogwriter.Trace and Recorder for one connection.
type lossTracker struct {
	mu     sync.Mutex
	queued [lossQueued]queuedDatagram
	qHead  int
	qLen   atomic.Int32   // changed under mu; backlog reads it without
	sent   []sentDatagram // ring of lossSent, ascending packet numbers; nil while idle
	sHead  int
	sLen   int
	lost   []uint64
	ready  chan struct{} // signalled when lost becomes non-empty

	// What quic-go discarded on receipt, for the path's statistics: QUIC
	// packets its connection's queue had no room for (the peer sees them
	// lost), and datagrams its 128-datagram receive queue had no room for
	// (acknowledged, so the peer never learns; braid's own loss).
	packetsDropped   atomic.Uint64
	datagramsDropped atomic.Uint64

	// lostPNs are the packet numbers declared lost most recently; one the
	// peer acknowledges later was lost spuriously (reordered or its
	// acknowledgement delayed), and counts in spurious.
	lostPNs  [64]int64
	lostNext int
	spurious atomic.Uint64

	// largestAcked is the largest packet number the peer acknowledged,
	// and ackedAt (time since lossEpoch) when it last grew: the last
	// proof that what we send arrives.
	largestAcked int64
	ackedAt      atomic.Int64

	// rx counts the datagrams waiting in quic-go's receive queue.
	rx rxBacklog

	// slowStartDone is set once quic-go's congestion controller has left
	// slow start, for good: it never goes back.
	slowStartDone atomic.Bool
	// settled is set once slow start and the recovery that ended it are
	// over.
	settled atomic.Bool

	// The path's loss counts: ack-eliciting 1-RTT packets sent (see
	// ackEliciting), and loss events among those sent at or after
	// countLostFrom (a packet number). A loss event is a loss and those of
	// the packets sent before it was declared (up to eventEnd): one
	// congestion episode, as NewReno's recovery and TFRC's loss event rate
	// (RFC 5348 section 5.2) count it. A queue overflow loses a burst in
	// one round trip, random loss one packet here and there; TCP's rate
	// follows the events, not the packets.
	sentPackets, lossEvents             atomic.Uint64
	lastSentPN, countLostFrom, eventEnd atomic.Int64

	// drained is signalled when quic-go sent a packet and at most
	// drainLevel datagrams remain queued, while drainLevel >= 0 (someone
	// waits for room).
	drained    chan struct{}
	drainLevel atomic.Int32

	// ctrlSent counts the packets that carried control stream data, and
	// ctrlSignal is signalled on each (see Path.TryWriteControl).
	ctrlSent   atomic.Uint64
	ctrlSignal chan struct{}
}

// lossEpoch is the origin of ackedAt's monotonic readings.
var lossEpoch = time.Now()

func newLossTracker() *lossTracker {
	t := &lossTracker{ready: make(chan struct{}, 1), drained: make(chan struct{}, 1), ctrlSignal: make(chan struct{}, 1), largestAcked: -1}
	t.drainLevel.Store(-1)
	t.eventEnd.Store(-1)
	for i := range t.lostPNs {
		t.lostPNs[i] = -1
	}
	return t
}

// AddProducer implements qlogwriter.Trace.
func (t *lossTracker) AddProducer() qlogwriter.Recorder { return t }

// Close implements qlogwriter.Recorder: quic-go calls it when the
// connection is gone.
func (t *lossTracker) Close() error {
	t.rx.close()
	return nil
}

// queue records a datagram about to be handed to quic-go.
func (t *lossTracker) queue(b []byte) {
	kind, seq, _, err := ParseHeader(b)
	if err != nil {
		return // never sent: Send hands over only braid datagrams
	}
	t.mu.Lock()
	if t.qLen.Load() == lossQueued {
		t.qHead = (t.qHead + 1) % lossQueued
		t.qLen.Add(-1)
	}
	t.queued[(t.qHead+int(t.qLen.Load()))%lossQueued] = queuedDatagram{seq: seq, n: int32(len(b)), data: kind == KindData}
	t.qLen.Add(1)
	t.mu.Unlock()
}

// backlog returns how many datagrams handed to quic-go it has not sent yet
// (those it dropped count until a later send skips them). The sender asks
// after every datagram, so it takes no lock.
func (t *lossTracker) backlog() int { return int(t.qLen.Load()) }

// unqueue forgets the datagram queue recorded last, which quic-go refused.
func (t *lossTracker) unqueue() {
	t.mu.Lock()
	if t.qLen.Load() > 0 {
		t.qLen.Add(-1)
	}
	t.mu.Unlock()
}

// RecordEvent implements qlogwriter.Recorder; quic-go calls it from its
// connection's goroutines, so it only records and never blocks.
func (t *lossTracker) RecordEvent(ev qlogwriter.Event) {
	switch ev := ev.(type) {
	case qlog.PacketSent:
		if ev.Header.PacketType == qlog.PacketType1RTT {
			t.lastSentPN.Store(int64(ev.Header.PacketNumber))
			if ackEliciting(ev.Frames) {
				t.sentPackets.Add(1)
			}
			t.packetSent(int64(ev.Header.PacketNumber), ev.Frames)
		}
	case qlog.PacketLost:
		if ev.Header.PacketType == qlog.PacketType1RTT {
			if pn := int64(ev.Header.PacketNumber); pn >= t.countLostFrom.Load() && pn > t.eventEnd.Load() {
				t.lossEvents.Add(1)
				t.eventEnd.Store(t.lastSentPN.Load())
			}
			t.packetLost(int64(ev.Header.PacketNumber))
		}
	case qlog.PacketReceived:
		t.rx.processed()
		if ev.Header.PacketType == qlog.PacketType1RTT {
			var datagrams int64
			for _, f := range ev.Frames {
				switch f := f.Frame.(type) {
				case *qlog.AckFrame:
					t.acked(f.AckRanges)
				case *qlog.DatagramFrame:
					datagrams++
				}
			}
			if datagrams > 0 {
				t.rx.add(datagrams)
			}
		}
	case qlog.PacketDropped:
		t.rx.processed()
		if ev.Trigger == qlog.PacketDropDOSPrevention {
			t.packetsDropped.Add(1)
		}
	case qlog.CongestionStateUpdated:
		switch ev.State {
		case qlog.CongestionStateRecovery:
			t.slowStartDone.Store(true)
		case qlog.CongestionStateCongestionAvoidance:
			t.slowStartDone.Store(true)
			t.settled.Store(true)
		case qlog.CongestionStateApplicationLimited:
			if t.slowStartDone.Load() {
				t.settled.Store(true)
			}
		}
	case qlog.DatagramDropped:
		if ev.Direction == qlog.DirectionReceiving {
			t.datagramsDropped.Add(1)
			t.rx.add(-1) // counted as received, never taken
		}
	}
}

func (t *lossTracker) packetSent(pn int64, frames []qlog.Frame) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if level := t.drainLevel.Load(); level >= 0 {
		defer t.signalDrained(level)
	}
	for _, f := range frames {
		if sf, ok := f.Frame.(*qlog.StreamFrame); ok && sf.Length > 0 { // the one stream is the control stream
			t.ctrlSent.Add(1)
			select {
			case t.ctrlSignal <- struct{}{}:
			default:
			}
			continue
		}
		df, ok := f.Frame.(*qlog.DatagramFrame)
		if !ok {
			continue
		}
		// The oldest queued datagram of this length is the one sent;
		// older ones of other lengths were dropped by quic-go.
		for t.qLen.Load() > 0 {
			d := t.queued[t.qHead]
			t.qHead = (t.qHead + 1) % lossQueued
			t.qLen.Add(-1)
			if int64(d.n) == df.Length {
				if d.data {
					t.addSent(pn, d.seq)
				}
				break
			}
		}
	}
}

// ackEliciting reports whether a packet of frames asks for an
// acknowledgement: only such packets are ever declared lost (RFC 9002
// section 2), so only they count among the packets a loss rate divides
// by. A path whose data goes beside QUIC (direct datagrams) sends mostly
// acknowledgements through it: counted, they made 3% of loss read as
// 0.5%.
func ackEliciting(frames []qlog.Frame) bool {
	for _, f := range frames {
		switch f.Frame.(type) {
		case *qlog.AckFrame, *qlog.ConnectionCloseFrame:
		default:
			return true
		}
	}
	return false
}

// signalDrained signals drained if quic-go's queue is down to level.
func (t *lossTracker) signalDrained(level int32) {
	if t.qLen.Load() > level {
		return
	}
	select {
	case t.drained <- struct{}{}:
	default:
	}
}

func (t *lossTracker) addSent(pn int64, seq uint64) {
	if t.sent == nil {
		t.sent = make([]sentDatagram, lossSent)
	}
	if t.sLen == lossSent {
		t.sHead = (t.sHead + 1) % lossSent
		t.sLen--
	}
	t.sent[(t.sHead+t.sLen)%lossSent] = sentDatagram{pn: pn, seq: seq}
	t.sLen++
}

func (t *lossTracker) packetLost(pn int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// Binary search for the first entry with this packet number: packet
	// numbers ascend through the ring.
	lo, hi := 0, t.sLen
	for lo < hi {
		mid := (lo + hi) / 2
		if t.sent[(t.sHead+mid)%lossSent].pn < pn {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	t.lostPNs[t.lostNext] = pn
	t.lostNext = (t.lostNext + 1) % len(t.lostPNs)
	found := false
	for i := lo; i < t.sLen; i++ {
		d := t.sent[(t.sHead+i)%lossSent]
		if d.pn != pn {
			break
		}
		if len(t.lost) < lossPending {
			t.lost = append(t.lost, d.seq)
			found = true
		}
	}
	if found {
		select {
		case t.ready <- struct{}{}:
		default:
		}
	}
}

// acked notes acknowledgement progress, and counts the packets declared
// lost that ranges acknowledge.
func (t *lossTracker) acked(ranges []qlog.AckRange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range ranges {
		if int64(r.Largest) > t.largestAcked {
			t.largestAcked = int64(r.Largest)
			t.ackedAt.Store(int64(time.Since(lossEpoch)))
		}
	}
	for i, pn := range t.lostPNs {
		if pn < 0 {
			continue
		}
		for _, r := range ranges {
			if int64(r.Smallest) <= pn && pn <= int64(r.Largest) {
				t.spurious.Add(1)
				t.lostPNs[i] = -1
				break
			}
		}
	}
}

// release forgets the sent datagrams, and frees their ring, once the path
// has sent no data for a while: an idle connection holds no 64 KiB ring.
func (t *lossTracker) release() {
	t.mu.Lock()
	t.sent, t.sHead, t.sLen = nil, 0, 0
	t.mu.Unlock()
}

// takeLost appends the sequence numbers of the data datagrams lost since
// the last call to dst.
func (t *lossTracker) takeLost(dst []uint64) []uint64 {
	t.mu.Lock()
	dst = append(dst, t.lost...)
	t.lost = t.lost[:0]
	t.mu.Unlock()
	return dst
}

// tracerFor returns quic.Config's Tracer for the connections of a socket
// whose reader gate holds back (nil for none): every connection gets its
// own lossTracker, which the Path finds again with Conn.QlogTrace.
func tracerFor(gate *rxGate) func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
	return func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
		t := newLossTracker()
		t.rx.gate = gate
		return t
	}
}
