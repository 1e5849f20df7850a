package transport

import (
	"sync/atomic"
	"time"
)

// quic-go puts each DATAGRAM frame it receives into a queue of 128 that
// braid's receiver drains (Path.Receive), and discards the frame when that
// queue is full, after the packet was acknowledged: the sender never
// learns, and the inner flow loses the packet. Under one bulk flow on two
// cores that happened to 5-6% of datagrams. The socket's reader goroutine
// ran hundreds of packets ahead of the connection's run loop (whose own
// queue of 256 packets overflowed too), and the run loop, once it had them,
// turned them into datagrams faster than the receiver was scheduled.
//
// An rxGate holds back the reader of one socket (batchConn.ReadBatch)
// while either
//   - the packets it read and quic-go has not processed yet reach
//     gateAhead, or
//   - a connection's datagrams wait unread in its queue (gateHigh; it lets
//     go once its receiver has taken all but gateLow of them).
//
// Meanwhile new packets wait in the kernel's socket buffer, and if that
// overflows the kernel drops packets that QUIC then sees lost: the
// sender's congestion control hears of it, and braid's loss tracker
// resends them. The connections' loss trackers, which see every packet
// quic-go processes and every datagram it queues, keep the counts.
type rxGate struct {
	held    atomic.Int32 // connections over gateHigh
	ahead   atomic.Int64 // packets read, not yet processed
	waiting atomic.Bool  // the reader waits at the gate
	open    chan struct{}
}

const (
	// gateAhead bounds the packets read ahead of quic-go's run loops;
	// with gateHigh datagrams already queued, a connection's run loop
	// still has room in its 128-datagram queue for all of them.
	gateAhead = 64
	// gateHigh is how many unread datagrams of one connection close the
	// gate: with gateAhead more on the way, 112 of quic-go's 128.
	gateHigh = 48
	// gateLow is where a connection lets the reader go again: its
	// receiver runs, and 16 datagrams keep it busy while the reader's
	// next batch goes through the run loop.
	gateLow = 16
	// gateMaxWait bounds one wait: the gate holds back every connection
	// of the socket (a concentrator's many clients), so a receiver that
	// does not run for other reasons slows the reader and never stops it.
	// It also corrects the read-ahead count for packets that no
	// connection reports (for unknown connections, or stateless ones).
	// On two busy cores a receiver often waits longer than 2 ms for a
	// core: with a 2 ms bound quic-go discarded 250-740 datagrams per
	// 5 s transfer of the data-path benchmark, with 6 ms 0-8 (and
	// 8 flows ran 10-20% faster).
	gateMaxWait = 6 * time.Millisecond
)

func newRxGate() *rxGate { return &rxGate{open: make(chan struct{}, 1)} }

// shut reports whether the reader must wait.
func (g *rxGate) shut() bool {
	return g.held.Load() > 0 || g.ahead.Load() >= gateAhead
}

// wait returns once the gate is open, or after gateMaxWait. It reports
// whether it waited.
func (g *rxGate) wait() bool {
	if g == nil || !g.shut() {
		return false
	}
	g.waiting.Store(true) // before the check: a release after it signals
	defer g.waiting.Store(false)
	t := time.NewTimer(gateMaxWait)
	defer t.Stop()
	for g.shut() {
		select {
		case <-g.open:
		case <-t.C:
			g.ahead.Store(0)
			return true
		}
	}
	return true
}

// read counts n packets the reader hands to quic-go.
func (g *rxGate) read(n int) {
	if g != nil {
		g.ahead.Add(int64(n))
	}
}

// processed counts one packet quic-go processed (or discarded).
func (g *rxGate) processed() {
	switch v := g.ahead.Add(-1); {
	case v < 0: // a packet of several QUIC packets, or one read before a resync
		g.ahead.CompareAndSwap(v, 0)
	case v == gateAhead/2 && g.waiting.Load():
		g.signal()
	}
}

// release drops one connection's hold of the gate.
func (g *rxGate) release() {
	if g.held.Add(-1) <= 0 {
		g.signal()
	}
}

func (g *rxGate) signal() {
	select {
	case g.open <- struct{}{}:
	default:
	}
}

// rxBacklog counts one connection's datagrams that quic-go queued for the
// receiver and the receiver has not taken yet, and holds its gate shut
// while there are too many.
type rxBacklog struct {
	gate   *rxGate // set before quic-go's first event
	queued atomic.Int64
	over   atomic.Bool // this connection holds its gate
}

// add counts n datagrams queued (negative: taken or discarded).
func (b *rxBacklog) add(n int64) {
	q := b.queued.Add(n)
	if b.gate == nil {
		return
	}
	switch {
	case q >= gateHigh && !b.over.Load():
		if b.over.CompareAndSwap(false, true) {
			b.gate.held.Add(1)
		}
	case q <= gateLow && b.over.Load():
		if b.over.CompareAndSwap(true, false) {
			b.gate.release()
		}
	}
}

// processed counts a packet quic-go processed for the connection.
func (b *rxBacklog) processed() {
	if b.gate != nil {
		b.gate.processed()
	}
}

// close lets go of the gate for good: the connection is gone, and what it
// had queued is never taken.
func (b *rxBacklog) close() {
	b.queued.Store(0)
	if b.gate != nil && b.over.CompareAndSwap(true, false) {
		b.gate.release()
	}
}
