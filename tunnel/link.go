package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"golang.org/x/time/rate"
)

// A link is one live path of a session, with the goroutines that own it:
//
//	TUN reader ──▶ queue ──▶ sender ──▶ Path.Send        (run's goroutine)
//	           its ticks: probes, reports, RTT and MTU refresh
//	Path.Receive ──▶ receiver ──▶ endpoint.deliver       (one per link)
//	control stream ──▶ controlReader (peer reports)      (one per link)
//
// Liveness comes from the data itself: the client probes every path every
// probeInterval and the concentrator echoes, so each side hears from a
// working path at least that often. A path silent for deadAfter is out of
// the scheduler's choice until it speaks again.

const (
	// sendQueueLen bounds a link's send queue: room for a full TUN read
	// batch (up to 128 segments of one GSO read) while the sender drains
	// into quic-go's own 32-datagram queue; a longer queue would only add
	// delay under load.
	sendQueueLen = 128
	// minQueueWait and maxQueueWait bound how long the TUN reader waits
	// for room when every live path's queue is full: two round trips of
	// the path (queueWait), since a sender held back by QUIC's congestion
	// window gets room only as acknowledgements return. A path that
	// stays full longer is stuck (silent until it is declared dead), and
	// the packet is dropped.
	minQueueWait = 20 * time.Millisecond
	maxQueueWait = 250 * time.Millisecond
	// maxResendWait bounds how long the resends of what a dead path had
	// in flight may wait to be sent on another: the surviving path may
	// have to open its congestion window first (a round trip or two on a
	// slow uplink), but what leaves later than this would only duplicate
	// the inner transport's own retransmissions.
	maxResendWait = 300 * time.Millisecond
	// probeQueueLen bounds probes and echoes waiting for the sender; one
	// is sent every probe interval, so more waiting means the path is
	// saturated and a late echo says nothing new: it is dropped.
	probeQueueLen = 4
	// probeInterval is how often the client probes each path: 20 probes
	// of 8 bytes (about 60 bytes on the wire) a second per path, so that a
	// silent path is noticed within a few hundred milliseconds.
	probeInterval = 50 * time.Millisecond
	// meteredIdleProbe is how often an idle metered path is probed: a
	// metered path is a standby while an unmetered one is up, and probing
	// it at probeInterval would cost a data plan some 400 MB a day; at
	// this rate it costs a few hundred bytes a second.
	meteredIdleProbe = 2 * time.Second
	// reportInterval is how often each side reports what it received,
	// and busyReportInterval how often while data arrives: the sender's
	// rate estimate takes one sample per report, and with one a second
	// auto knew no rate for a new path's first 2 s, so a lone flow's
	// excess could not spill onto a second path until then.
	reportInterval     = time.Second
	busyReportInterval = 250 * time.Millisecond
	// minDeadAfter is the shortest silence that declares a path dead.
	minDeadAfter = 250 * time.Millisecond
	// minBusyDeadAfter is the shortest time data sent on a path may go
	// unanswered before the path is dead (see busyDeadAfter).
	minBusyDeadAfter = 150 * time.Millisecond
	// aqmInterval and aqmTarget are CoDel's parameters for a path's queue
	// (see measureQueue): RFC 8289's 100 ms and 5 ms, for the round trips
	// of the Internet's flows. A path with a longer base round trip uses
	// it as the interval, and a twentieth of it as the target, since the
	// inner flows cannot react sooner than it.
	aqmInterval = 100 * time.Millisecond
	aqmTarget   = 5 * time.Millisecond
)

var clockStart = time.Now()

// monotime is a monotonic clock in nanoseconds, cheap to store atomically.
func monotime() int64 { return int64(time.Since(clockStart)) }

// endpoint receives the data datagrams of its links; l is nil for a
// direct datagram.
type endpoint interface {
	deliver(ctx context.Context, l *link, seq uint64, pkt []byte)
}

type link struct {
	name     string
	hello    transport.Hello
	path     *transport.Path
	probe    bool // this side sends probes (the client)
	counters *Counters
	log      *slog.Logger

	queue   chan packetRef
	urgent  urgentQueue   // resends, sent before queue
	stopped chan struct{} // closed when run ends: nobody drains queue
	wake    chan struct{} // ends a wait for room in queue (interrupt)
	sent    inflight      // data recently sent, to resend if the path dies
	// aqm is the sender's CoDel on the delay of queue; aqmDrop is when it
	// last called for a drop (monotime; 0: none pending), which the TUN
	// reader makes (see measureQueue).
	aqm     scheduler.CoDel
	aqmDrop atomic.Int64
	// standingAt is when a packet last left queue after standing in it
	// longer than CoDel's target (monotime; 0 if the last one had not):
	// the TUN reader then drops rather than wait for room (see standing).
	standingAt atomic.Int64
	lost       []uint64 // sequence numbers QUIC lost, owned by the sender
	// quicAt is when the session last queued data for QUIC on the link,
	// and quicSince when it began to after a quiet gap (monotime; see
	// drained). The session's sendMu guards both.
	quicAt, quicSince int64
	// peerDown is set on the concentrator when the client said this path
	// is down (transport.Paths); the client is the judge of its uplinks.
	peerDown atomic.Bool
	sess     atomic.Pointer[session] // the session the link joined
	// wasUp is whether the path was up at the session's last look (under
	// its sendMu), true when it joins; sent is resent when it goes down.
	wasUp bool
	// probes carries probes and probe echoes to the sender, so the
	// receiver never blocks on a full QUIC send queue.
	probes chan [transport.HeaderLen]byte
	dead   atomic.Bool // set when run ends: out of the scheduler's choice
	// probeEvery is the current probe interval (nanoseconds); graceUntil
	// (monotime) keeps a path that just went from slow to fast probing
	// alive until the fast probes have had their chance.
	probeEvery atomic.Int64
	graceUntil atomic.Int64
	// carrierDown, if set, says the uplink's interface has lost carrier:
	// the kernel told us, so the path is out of use before probes miss.
	carrierDown *atomic.Bool
	// closedHere is set when this host closed the path because its
	// uplink lost its address or interface (Client.closeCurrent).
	closedHere atomic.Bool

	lastRecv atomic.Int64 // monotime of the last datagram received
	// unanswered is the monotime of the first data datagram sent after
	// the path was last heard from (see alive); set by the sender.
	unanswered atomic.Int64
	// sendingSince is the monotime at which the sender called Path.Send,
	// 0 when it is not in it. Send blocks while quic-go's datagram queue
	// is full, that is while QUIC's congestion window is full of data in
	// flight: a sender blocked since before the path was last heard from
	// has data unanswered since then, though no Send returned after it
	// to set unanswered (measured in the failover report: a saturated
	// path cut silently was given up only by deadAfter, 250-290 ms after
	// the cut, where busyDeadAfter was 165 ms).
	sendingSince atomic.Int64
	lastData     atomic.Int64 // monotime of the last data datagram received
	rtt          atomic.Int64 // smoothed RTT in nanoseconds
	minRTT       atomic.Int64 // QUIC's minimum RTT in nanoseconds: the path without queueing
	mtu          atomic.Int32 // largest inner packet the path carries now
	txPackets    atomic.Uint64
	txBytes      atomic.Uint64
	padBytes     atomic.Uint64 // warm-up padding sent (see warmup)
	rxPackets    atomic.Uint64
	rxBytes      atomic.Uint64
	peer         atomic.Pointer[transport.Report]

	// highestSeq is the highest data sequence number received on this
	// path, set by the session's deliver under its rxMu.
	highestSeq atomic.Uint64

	estMu sync.Mutex // the estimator is fed by the sender and the control reader
	est   scheduler.Estimator
	// countLoss says QUIC's loss counts feed est: not before slow start
	// and the recovery that ended it are over (Path.Settled), since slow
	// start (the warm-up's padding, or data) ends by overflowing the
	// bottleneck's queue: 200 losses on a 30 Mbit/s uplink, 16% of what
	// it had sent, kept auto off that uplink for seconds. Owned by the
	// sender.
	countLoss bool

	// meter, on the client, counts the path's bytes against its uplink's
	// data budget (nil without one); counted is how much of QUIC's
	// totals it has been given and wireOverhead the IP and UDP header
	// bytes per packet. Owned by the sender (and run, after it).
	meter        *meter
	counted      uint64
	wireOverhead uint64
	// peerRestrict, on the concentrator, is the restriction the client
	// reported for the path (see budget.go).
	peerRestrict atomic.Int32

	// direct says the peer takes direct datagrams on the path (and, on
	// the client, that the concentrator sends them).
	direct atomic.Bool
	// The payload bytes of direct datagrams sent and accepted, for status
	// and (with their headers) the meter.
	directTxBytes, directRxBytes atomic.Uint64
}

func newLink(name string, hello transport.Hello, p *transport.Path, probe bool, c *Counters, log *slog.Logger) *link {
	l := &link{
		name:     name,
		hello:    hello,
		path:     p,
		probe:    probe,
		counters: c,
		log:      log.With("path", name),
		queue:    make(chan packetRef, sendQueueLen),
		urgent:   newUrgentQueue(),
		stopped:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		probes:   make(chan [transport.HeaderLen]byte, probeQueueLen),
	}
	l.lastRecv.Store(monotime())
	l.wireOverhead = 20 + 8
	if a, ok := p.RemoteAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		l.wireOverhead = 40 + 8
	}
	l.probeEvery.Store(int64(probeInterval))
	if hello.Metered && !probe {
		// The client probes an idle metered path slowly: judge it by that.
		l.probeEvery.Store(int64(meteredIdleProbe))
	}
	l.refresh(true)
	return l
}

// deadAfter is how long the path may stay silent before it is out of use:
// four probe intervals plus twice the RTT, so a probe and its echo have
// had four chances; the RTT includes the queueing delay of a loaded path.
func (l *link) deadAfter() int64 {
	every := l.probeEvery.Load()
	if !l.probe && l.restriction() != restrictNone {
		// The client probes a restricted path slowly while it is idle.
		every = max(every, int64(meteredIdleProbe))
	}
	return max(int64(minDeadAfter), 4*every+2*l.rtt.Load())
}

// restriction is what the uplink's used-up data budget does to the path.
func (l *link) restriction() restriction {
	if l.meter != nil {
		return restriction(l.meter.restrict.Load())
	}
	return restriction(l.peerRestrict.Load())
}

// keepSent is how long a sent datagram is kept for a resend: until the
// path would have been declared dead had it been lost, plus a round trip.
func (l *link) keepSent() int64 {
	return l.deadAfter() + l.rtt.Load()
}

// alive says whether the path has been heard from recently enough, and
// has answered the data sent on it.
func (l *link) alive(now int64) bool {
	if l.dead.Load() || l.peerDown.Load() || l.carrierDown != nil && l.carrierDown.Load() {
		return false
	}
	return now < l.silentAt()
}

// silentAt is when the path goes out of use unless it is heard from
// before: deadAfter after it was last heard from, or, where data sent
// since went unanswered, busyDeadAfter after that data went out (a path
// gone silent under load); never within its grace period.
func (l *link) silentAt() int64 {
	heard := l.heard()
	at := heard + l.deadAfter()
	u := l.unanswered.Load()
	if s := l.sendingSince.Load(); s != 0 && u <= heard {
		u = max(s, heard+1) // blocked in Send: unanswered since it blocked, or since heard
	}
	if u > heard {
		at = min(at, u+l.busyDeadAfter())
	}
	return max(at, l.graceUntil.Load())
}

// failedHere says the path went down on this host's side: its interface
// lost carrier, or the path was closed here. What it wrote before that
// left the host, and arrived unless lost on the way, whereas a path that
// went silent may have failed anywhere, any time since it was last
// heard from.
func (l *link) failedHere() bool {
	return l.carrierDown != nil && l.carrierDown.Load() || l.closedHere.Load()
}

// localLag is how long, at most, a path that failed here may have gone on
// writing into a dead interface before the session heard of it: the
// kernel's netlink event reaches the uplink watcher within a millisecond
// (measured: 0.1 ms), more on a loaded host.
const localLag = 5 * time.Millisecond

// heard is when the path last proved to work: the last datagram from the
// peer, or the peer's acknowledging a packet it had not acknowledged yet.
func (l *link) heard() int64 {
	h := l.lastRecv.Load()
	if at := l.path.AckedAt(); !at.IsZero() {
		h = max(h, int64(at.Sub(clockStart)))
	}
	return h
}

// busyDeadAfter is how long data sent on the path may go unanswered
// before the path is out of use: the peer acknowledges within a round
// trip plus its acknowledgement delay (25 ms), so twice the RTT plus 75 ms
// leaves room for a queue that builds up meanwhile; minBusyDeadAfter
// keeps a fast path from dying of a scheduling hiccup. A busy path is
// thus given up within a few round trips, where probes alone (deadAfter)
// take four probe intervals more.
func (l *link) busyDeadAfter() int64 {
	return max(int64(minBusyDeadAfter), 2*l.rtt.Load()+int64(75*time.Millisecond))
}

// state is the scheduler's view of the link for a packet that is
// interactive or not. A used-up data budget restricts the path: as a
// metered one (failover-only), for interactive packets only (the path is
// down for the others), or not at all for data (block).
func (l *link) state(now int64, interactive bool) scheduler.PathState {
	st := scheduler.PathState{
		Up:       l.alive(now),
		Priority: l.hello.Priority,
		Weight:   l.hello.Weight,
		RTT:      time.Duration(l.rtt.Load()),
		Queued:   len(l.queue),
		QueueCap: cap(l.queue),
		Metered:  l.hello.Metered,
	}
	l.estMu.Lock()
	l.est.Fill(&st)
	l.estMu.Unlock()
	switch l.restriction() {
	case restrictFailover:
		st.Metered = true
	case restrictInteractive:
		st.Up = st.Up && interactive
	case restrictBlock:
		st.Up = false
	}
	return st
}

// refresh updates RTT, loss (and MTU if mtu) from QUIC's view of the path, and
// counts its bytes against the uplink's budget. Reading the MTU costs
// quic-go two allocations (Path.MaxDatagram), so the ticks read it only
// every mtuTicks.
func (l *link) refresh(mtu bool) {
	s := l.path.Stats()
	l.estMu.Lock()
	if s.SmoothedRTT > 0 {
		l.rtt.Store(int64(s.SmoothedRTT))
		l.minRTT.Store(int64(s.MinRTT))
		l.est.SetRTT(s.SmoothedRTT, s.MinRTT, s.RTTVar)
	}
	l.tuneAQM()
	if !l.countLoss && l.path.Settled() {
		l.countLoss = true
		l.path.ForgetLosses() // what was sent before is slow start's
		l.est.SkipLoss()
	}
	if l.countLoss {
		l.est.OnLossCounts(l.path.LossCounts())
	}
	l.estMu.Unlock()
	if mtu {
		l.mtu.Store(int32(l.path.MaxDatagram() - transport.HeaderLen))
	}
	l.count(s)
}

// count gives the meter the bytes the path carried since the last call:
// QUIC's UDP payload bytes both ways plus the IP and UDP headers.
func (l *link) count(s transport.Stats) {
	if l.meter == nil {
		return
	}
	total := s.BytesSent + s.BytesReceived + l.wireOverhead*(s.PacketsSent+s.PacketsRecv)
	dtx, drx := l.path.DirectCounts()
	total += l.directTxBytes.Load() + l.directRxBytes.Load() + (dtx+drx)*(transport.HeaderLen+transport.DirectOverhead+l.wireOverhead)
	if total > l.counted {
		l.meter.add(total - l.counted)
		l.counted = total
	}
}

// run serves the link until its connection dies or ctx is done, then
// closes it and frees what is left in its queue. Its own goroutine is the
// sender; the receiver and the control reader have theirs.
func (l *link) run(ctx context.Context, ep endpoint) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() { cancel(l.receiver(ctx, ep)) })
	wg.Go(func() { cancel(l.controlReader(ctx)) })
	if l.direct.Load() && l.probe {
		// A client path's own socket; the concentrator reads its shared
		// one in one place (Concentrator.receiveDirect).
		wg.Go(func() { cancel(l.directReceiver(ctx, ep)) })
	}
	cancel(l.sender(ctx))
	l.dead.Store(true)
	close(l.stopped)
	l.path.Close("path closed")
	wg.Wait()
	l.count(l.path.Stats()) // the last bytes, the close included
	l.drain()
	l.sent.trim(math.MaxInt64)
	return context.Cause(ctx)
}

func (l *link) drain() {
	l.urgent.close()
	for {
		select {
		case p := <-l.queue:
			putBuffer(p.buf)
		default:
			return
		}
	}
}

// queueWait is how long the TUN reader may wait for room in the queue.
func (l *link) queueWait() time.Duration {
	return min(max(2*time.Duration(l.rtt.Load()), minQueueWait), maxQueueWait)
}

// roomWait is how long, from now, the TUN reader that began to wait for
// room in the link's full queue at start waits on: until queueWait has
// passed, or, where the path is due to be given up should it stay silent
// (silentAt) before maxQueueWait has, until then. A queue that stays full
// may be that of a path gone silent under load, whose sender is stuck in
// Send: once the path is given up, the packet goes on another, where a
// wait that ended before dropped it, a hole the inner TCP filled only
// after its queue on the surviving path (measured in the failover
// report: 600 ms after the cut).
func (l *link) roomWait(start, now int64) time.Duration {
	end := start + int64(l.queueWait())
	if at := l.silentAt() + int64(minWatch); at > end && at <= start+int64(maxQueueWait) {
		end = at
	}
	return time.Duration(end - now)
}

// enqueueWait queues p, waiting while the queue is full, but no longer
// than d, the link's end or a wake-up (interrupt). It reports whether p
// was queued, and whether a wake-up ended the wait; if p was not queued,
// it is still the caller's. t is the caller's timer, stopped.
func (l *link) enqueueWait(p packetRef, t *time.Timer, d time.Duration) (queued, woken bool) {
	p.buf.queued = monotime()
	select {
	case l.queue <- p:
		return true, false
	default:
	}
	if d <= 0 {
		return false, false
	}
	if l.alive(monotime()) {
		select {
		case <-l.wake: // a wake-up from before the link was last up
		default:
		}
	}
	t.Reset(d)
	defer t.Stop()
	select {
	case l.queue <- p:
		return true, false
	case <-l.wake:
		return false, true
	case <-l.stopped:
	case <-t.C:
	}
	return false, false
}

// interrupt ends a wait for room in the link's queue (enqueueWait), now or
// the next one: the link may have gone down. The waiter holds its
// session's sendMu, so the session would otherwise look at its links, and
// resend what a dead one had in flight, only once the wait timed out: up
// to two round trips of the dead path later.
func (l *link) interrupt() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// sender owns Path.Send for data and probes, and on its ticks sends
// probes and reports and refreshes RTT and MTU. It returns when the
// connection dies (with why) or ctx is done (nil). One goroutine does both,
// since a goroutine's stack is most of an idle link's memory; a tick waits
// while Path.Send blocks on a full QUIC queue, which only delays what the
// sender would have had to send anyway.
func (l *link) sender(ctx context.Context) error {
	ticks := time.NewTicker(probeInterval)
	defer ticks.Stop()
	reportEvery := busyReportInterval
	if l.hello.Metered {
		reportEvery = meteredIdleProbe // reports are not worth a data plan's bytes
	}
	reports := time.NewTicker(reportEvery)
	defer reports.Stop()
	var t tickState
	w := l.newWarmup()
	for {
		// Resends first, one at a time: between two, what QUIC lost (a
		// resend lost again is the hole an inner flow still waits for)
		// and probe echoes do not wait for the whole backlog.
		if p, ok := l.nextUrgent(); ok {
			if err := l.sendData(p, false); err != nil {
				return err
			}
			select {
			case <-l.path.Lost():
				if err := l.resendLost(); err != nil {
					return err
				}
			case probe := <-l.probes:
				l.send(probe[:])
			case <-l.path.Done():
				return l.path.Err()
			case <-ctx.Done():
				return nil
			default:
			}
			continue
		}
		select {
		case <-l.urgent.ready:
		case p := <-l.queue:
			l.measureQueue(p, monotime())
			if err := l.sendData(p, false); err != nil {
				return err
			}
		case <-w.ready:
			if err := w.pad(l); err != nil {
				return err
			}
		case probe := <-l.probes:
			l.send(probe[:])
		case <-l.path.Lost():
			if err := l.resendLost(); err != nil {
				return err
			}
		case <-ticks.C:
			if err := l.tick(&t); err != nil {
				return err
			}
		case <-reports.C:
			if !l.hello.Metered && l.rxPackets.Load() == t.lastReport.RxPackets && monotime()-t.lastReportAt < int64(reportInterval) {
				continue // no data since the last report: once a second
			}
			if err := l.report(&t); err != nil {
				return err
			}
		case <-l.path.Done():
			return l.path.Err()
		case <-ctx.Done():
			return nil
		}
	}
}

// measureQueue runs CoDel on the delay p stood in the queue, leaving it
// at now.
//
// Over QUIC the inner flows never see the network's loss (QUIC paces to
// its congestion window, and braid resends what QUIC lost), so a bulk
// flow's window grows until it stands in this queue and in the kernel's
// TUN ring behind it: measured, a call sharing the uplink with an upload
// then waited 45-75 ms more than over the bare uplink (median), and
// 110-170 ms more at the 99th percentile (TestReportLatencyUnderLoad).
// CoDel gives the inner flows their signal back. Its drop is not made here but by the TUN
// reader, on the next bulk packet it queues on this path (takeDrop):
// there, the packet has no sequence number yet, so the receiver's reorder
// buffer sees no gap to wait for, and interactive packets are spared. A
// call for a drop that no bulk packet answers within an interval lapses.
//
// Only a flow with nowhere else to go is dropped (scheduler MaySpill):
// where the scheduler may spill a flow onto another path as this queue
// builds (aggregate, auto beside a similar path, failover's overflow),
// the standing queue is how the flow comes to fill both paths. Measured
// in the bonding benchmark with drops there too, a single upload in auto
// over 50 and 20 Mbit/s uplinks fell to 0.62 of their sum and 0.85 of
// the faster one alone (split 96:4).
func (l *link) measureQueue(p packetRef, now int64) {
	sojourn, backlog := time.Duration(now-p.buf.queued), len(l.queue) > 0
	if l.aqm.Drop(time.Duration(now), sojourn, backlog) {
		l.aqmDrop.Store(now)
	}
	switch {
	case sojourn >= l.aqm.Target && backlog:
		l.standingAt.Store(now)
	case l.standingAt.Load() != 0:
		l.standingAt.Store(0)
	}
}

// tuneAQM sets CoDel's parameters from the path's base RTT. The sender
// owns l.aqm: refresh calls it on the sender's ticks, and in newLink
// before the sender starts.
func (l *link) tuneAQM() {
	l.aqm.Interval = l.aqmInterval()
	l.aqm.Target = max(aqmTarget, l.aqm.Interval/20)
}

// aqmInterval is CoDel's interval for the link: aqmInterval, or the
// path's round trip without queueing when longer (the smoothed RTT would
// grow with the very queue CoDel is to keep short).
func (l *link) aqmInterval() time.Duration {
	return max(aqmInterval, time.Duration(l.minRTT.Load()))
}

// standing reports whether the link's queue stands: what last left it
// had waited longer than CoDel's target, within the last interval (a
// sender idle since says nothing of the queue a burst just filled).
func (l *link) standing(now int64) bool {
	at := l.standingAt.Load()
	return at != 0 && now-at < int64(l.aqmInterval())
}

// takeDrop reports whether the sender's CoDel calls for a drop now, and
// takes the call. The TUN reader asks it for a bulk packet it would queue
// on the link, under the session's sendMu.
func (l *link) takeDrop(now int64) bool {
	if l.aqmDrop.Load() == 0 { // the usual case: no write per packet
		return false
	}
	at := l.aqmDrop.Swap(0)
	return at != 0 && now-at < int64(l.aqmInterval())
}

// nextUrgent takes the oldest resend from the urgent queue, dropping what
// waited there longer than maxResendWait.
func (l *link) nextUrgent() (packetRef, bool) {
	p, ok, expired := l.urgent.pop(monotime() - int64(maxResendWait))
	l.counters.ResendNoRoom.Add(uint64(expired))
	return p, ok
}

// send hands b to QUIC, noting while it blocks (see sendingSince).
func (l *link) send(b []byte) error {
	l.sendingSince.Store(monotime())
	err := l.path.Send(b)
	l.sendingSince.Store(0)
	return err
}

// sendData sends p; resent says it is the resend of a datagram QUIC lost.
func (l *link) sendData(p packetRef, resent bool) error {
	for !l.sent.hand(p) { // the path went down since p was queued for it
		if l.resendLate(p) {
			return nil
		}
	}
	err := l.send(p.datagram())
	n := p.n
	if err == nil {
		now := monotime()
		if l.unanswered.Load() <= l.heard() {
			l.unanswered.Store(now)
		}
		l.estMu.Lock()
		l.est.OnSent(n, l.busy())
		l.estMu.Unlock()
		if !l.sent.add(p, now, now-l.keepSent(), resent) {
			putBuffer(p.buf) // the path went down while Send blocked: a copy was resent
		}
	} else {
		l.sent.unhand()
		putBuffer(p.buf)
	}
	var tl *transport.DatagramTooLargeError
	switch {
	case err == nil:
		l.txPackets.Add(1)
		l.txBytes.Add(uint64(n))
	case errors.As(err, &tl):
		l.counters.DropTooBig.Add(1)
		l.mtu.Store(int32(tl.Max - transport.HeaderLen))
	default:
		l.counters.DropSendFailed.Add(1)
		return err
	}
	return nil
}

// resendLate sends p, which was queued for the link before it went down,
// on the path its session picks now, as it did what the link had in
// flight (session.resend), and reports whether it did: not if the link is
// back up (the session's look found it so, and has it keep what it sends
// again), when the caller sends p itself.
func (l *link) resendLate(p packetRef) bool {
	s := l.sess.Load()
	if s == nil {
		putBuffer(p.buf)
		return true
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	links := s.look(l.counters)
	if l.wasUp {
		return false
	}
	s.resent = append(s.resent[:0], p)
	s.requeue(links, s.resent, monotime(), l.counters)
	return true
}

// QUIC's congestion controller (quic-go's, NewReno in v0.65) leaves slow
// start for good once its round trip time grows by an eighth (HyStart),
// even while the connection sends next to nothing. A path that only
// carries acknowledgements while the other direction fills the link's
// queue (an upload, on the concentrator's side) sees exactly that, and is
// left with its initial window of 43 KB; congestion avoidance then grows
// it by one packet per round trip. Measured: a download after an upload ran at 11 Mbit/s on a
// 30 Mbit/s uplink for seconds, and a standby path took over a failed one
// with that window. So a new path sends padding (KindPad) while nothing
// else fills its window, until slow start ends on its own (HyStart finds
// the queue, or a loss) or warmupBytes are spent: what the link can carry
// is then open before it is needed.
const (
	// warmupBytes bounds the padding: a window of 512 KiB carries
	// 100 Mbit/s over 40 ms.
	warmupBytes = 512 << 10
	// warmupsPerSecond bounds the warm-ups a process starts, so that a
	// concentrator that many clients reconnect to at once does not pad
	// its uplink full; the paths that get none start as they would
	// without.
	warmupsPerSecond = 10
)

var warmups = rate.NewLimiter(warmupsPerSecond, warmupsPerSecond)

// warmupQueue is how many padding datagrams may wait in quic-go's send
// queue: enough to keep the window filled between the sender's turns, few
// enough that data and probes queued after them wait for two datagrams at
// most, and that Send never blocks on padding (quic-go's queue holds 32).
const warmupQueue = 2

// closedChan is always ready.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// warmup is a link's padding state, owned by the sender.
type warmup struct {
	ready <-chan struct{} // signalled while padding is due, else nil
	left  int             // bytes of padding still allowed
	buf   []byte
}

// newWarmup returns the link's warm-up: none for a metered path or one
// with a data budget (the client's own, or one its hello announced),
// whose bytes are worth more than the window.
func (l *link) newWarmup() *warmup {
	w := &warmup{}
	if l.hello.Metered || l.hello.Budgeted || l.meter != nil || !l.path.InSlowStart() || !warmups.Allow() {
		return w
	}
	w.ready, w.left = closedChan, warmupBytes
	return w
}

// pad tops quic-go's send queue up to warmupQueue padding datagrams and
// waits for it to drain again; it stops for good once slow start is over
// or the padding is spent. It never blocks: only the sender queues
// datagrams, so quic-go's queue cannot fill between the look and the Send.
func (w *warmup) pad(l *link) error {
	n := int(l.mtu.Load()) + transport.HeaderLen
	if w.left <= 0 || !l.path.InSlowStart() || n <= transport.HeaderLen {
		w.stop(l)
		return nil
	}
	w.ready = l.path.Drained(warmupQueue - 1)
	if len(w.buf) != n {
		w.buf = make([]byte, n)
		transport.PutHeader(w.buf, transport.KindPad, 0)
	}
	// Data waiting in the link's queue goes first, and fills the window
	// as well as padding would.
	for len(l.queue) == 0 && l.path.Backlog() < warmupQueue && w.left > 0 {
		err := l.send(w.buf)
		if tl := (*transport.DatagramTooLargeError)(nil); errors.As(err, &tl) {
			l.mtu.Store(int32(tl.Max - transport.HeaderLen))
			w.ready = closedChan // again, at the new size
			return nil
		}
		if err != nil {
			return err
		}
		w.left -= n
		l.padBytes.Add(uint64(n))
	}
	return nil
}

func (w *warmup) stop(l *link) {
	if w.ready != nil {
		l.path.Drained(-1)
	}
	w.ready, w.buf = nil, nil
}

// busy reports whether the path, not what it is given, limits what it
// sends: datagrams wait in quic-go's queue for the congestion window or
// the pacer. Packets waiting in the link's own queue do not tell: the TUN
// reader queues a batch at a time, and a batch of an upload's
// acknowledgements made a concentrator's path look busy at a few hundred
// kbit/s, a "capacity" that sent downloads to the slower path.
func (l *link) busy() bool {
	if n := l.path.Backlog(); n >= 0 {
		return n >= busyBacklog
	}
	return len(l.queue) > 0
}

// busyBacklog is the quic-go backlog (of 32) from which the path counts
// as the limit: QUIC holds packets back, not for a packet or two.
const busyBacklog = 8

// resendLost sends again, at once and on this path, the data datagrams
// that QUIC declared lost in packets it sent recently: a round trip later
// than the original but sooner than the inner flow would recover them,
// and without the inner flow's congestion response. QUIC's own congestion
// controller has already slowed the path down for the loss. Each datagram
// is resent once; one lost again, or sent more than lossResendAge ago, is
// left to the inner flow.
func (l *link) resendLost() error {
	l.lost = l.path.TakeLost(l.lost[:0])
	now := monotime()
	since := now - lossResendAge(l.rtt.Load())
	for _, seq := range l.lost {
		p, ok := l.sent.remove(seq, since)
		if !ok {
			continue
		}
		l.counters.LossResent.Add(1)
		if err := l.sendData(p, true); err != nil {
			return err
		}
	}
	return nil
}

// lossResendAge is how old a datagram QUIC declared lost may be and still
// be resent: QUIC declares a loss about a round trip after the send (more
// while a queue builds up, and the peer may delay its acknowledgement by
// 25 ms); a resend later than a few round trips would only duplicate the
// inner flow's own retransmission.
func lossResendAge(rtt int64) int64 {
	return 3*rtt + int64(50*time.Millisecond)
}

// queueProbe hands a probe or an echo to the sender, dropping it if the
// sender is behind.
func (l *link) queueProbe(kind transport.Kind, seq uint64) {
	var b [transport.HeaderLen]byte
	transport.PutHeader(b[:], kind, seq)
	select {
	case l.probes <- b:
	default:
	}
}

// receiver owns Path.Receive.
func (l *link) receiver(ctx context.Context, ep endpoint) error {
	for {
		d, err := l.path.Receive(ctx)
		if err != nil {
			return err
		}
		kind, seq, payload, err := transport.ParseHeader(d)
		if err != nil {
			l.counters.DropBadDgram.Add(1)
			continue
		}
		now := monotime()
		l.lastRecv.Store(now)
		switch kind {
		case transport.KindData:
			l.lastData.Store(now)
			l.rxPackets.Add(1) // data only, to match the peer's tx count
			l.rxBytes.Add(uint64(len(payload)))
			ep.deliver(ctx, l, seq, payload)
		case transport.KindProbe:
			l.queueProbe(transport.KindProbeReply, seq)
		}
	}
}

// Direct datagrams take a shorter way through the receiver than QUIC's
// (no connection goroutine, no datagram queue), so one sent right after a
// QUIC datagram can overtake it. A path's packets therefore go direct only
// once the path has queued nothing for QUIC for directQuiet, and quic-go
// has sent what it was given (link.drained). The network does not reorder
// them: both kinds take the path's one 5-tuple, so the gap need cover only
// the receiver's extra hand-offs, not the path's RTT (with the RTT as the
// gap, packets a millisecond apart that followed one sent through QUIC
// stayed there: 23 of a test's 200, under the race detector). Traffic
// that keeps QUIC busy for longer than directSwitch goes direct at the
// next drained moment anyway, at the cost of one reordering, since a
// steady flow might otherwise never leave QUIC.
const (
	directQuiet  = 500 * time.Microsecond
	directSwitch = 50 * time.Millisecond
)

// noteQUIC records that the session queued data for QUIC on the link at
// now. The session's sendMu is held.
func (l *link) noteQUIC(now int64) {
	if now-l.quicAt >= int64(directQuiet) {
		l.quicSince = now
	}
	l.quicAt = now
}

// drained reports whether what went through QUIC on the path is out of
// the way of direct datagrams: nothing waits in the link's queue nor in
// quic-go's, and the last of it was queued long enough ago (see
// directQuiet). The session's sendMu is held.
func (l *link) drained(now int64) bool {
	return l.quiet(now) && len(l.queue) == 0 && l.path.Backlog() <= 0
}

// quiet reports whether the session queued data for QUIC on the link last
// long enough before now, or began to long enough before (directSwitch).
// The session's sendMu is held.
func (l *link) quiet(now int64) bool {
	return now-l.quicAt >= int64(directQuiet) || now-l.quicSince >= int64(directSwitch)
}

// sendDirect sends the braid datagram d as a direct datagram, built in
// scratch. It may be called from any goroutine.
func (l *link) sendDirect(d, scratch []byte) {
	if err := l.path.SendDirect(d, scratch); err != nil {
		l.counters.DropSendFailed.Add(1)
		return
	}
	l.counters.DirectTx.Add(1)
	l.directTxBytes.Add(uint64(len(d) - transport.HeaderLen))
}

// directReceiver reads the direct datagrams that arrive on a client
// path's socket.
func (l *link) directReceiver(ctx context.Context, ep endpoint) error {
	raw := make([]byte, maxDirect)
	var scratch []byte
	for {
		n, err := l.path.ReadDirect(ctx, raw)
		if err != nil {
			return err
		}
		scratch = l.receiveDirect(ctx, ep, raw[:n], scratch)
	}
}

// maxDirect holds any UDP payload of a 1500-byte link, and more.
const maxDirect = 2048

// receiveDirect opens raw, a direct datagram of the path, and delivers the
// packet it carries, using scratch (returned, perhaps grown). One
// goroutine receives a link's direct datagrams.
func (l *link) receiveDirect(ctx context.Context, ep endpoint, raw, scratch []byte) []byte {
	d, err := l.path.OpenDirect(scratch[:0], raw)
	if err != nil {
		l.counters.DropBadDirect.Add(1)
		return scratch
	}
	kind, seq, payload, err := transport.ParseHeader(d)
	if err != nil || kind != transport.KindData {
		l.counters.DropBadDgram.Add(1)
		return d
	}
	now := monotime()
	l.lastRecv.Store(now)
	l.lastData.Store(now)
	l.counters.DirectRx.Add(1)
	l.directRxBytes.Add(uint64(len(payload)))
	ep.deliver(ctx, nil, seq, payload)
	return d
}

// controlReader reads the peer's control messages.
func (l *link) controlReader(ctx context.Context) error {
	for {
		m, err := l.path.ReadControl()
		if err != nil {
			return err
		}
		switch {
		case m.Report != nil:
			l.peer.Store(m.Report)
			l.estMu.Lock()
			l.est.OnReport(time.Duration(monotime()), m.Report.RxBytes, m.Report.RxPackets)
			l.estMu.Unlock()
			if l.meter == nil {
				l.peerRestrict.Store(int32(parseRestriction(m.Report.Budget)))
			}
		case m.Paths != nil && !l.probe: // only a client tells of its paths
			if s := l.sess.Load(); s != nil && s.setPeerDown(m.Paths.Down) {
				s.failover(l.counters) // at once: the inner flows may be waiting for what it resends
				go s.answerMissing(l)
			}
		case m.Missing != nil && l.probe: // only the concentrator answers
			if s := l.sess.Load(); s != nil {
				s.resendMissing(m.Missing, l.counters)
			}
		case m.Error != "":
			return errors.New("peer: " + m.Error)
		}
	}
}

// mtuTicks is how many ticks apart the MTU is read: once a second. Path
// MTU discovery raises it in steps seconds apart, and a send that finds it
// lower (DatagramTooLargeError) lowers it at once.
const mtuTicks = int(time.Second / probeInterval)

// tickState is what the sender's ticks remember.
type tickState struct {
	ticks        int
	seq, lastTx  uint64
	lastProbe    int64
	told         restriction // the restriction the peer was last told of
	lastReport   transport.Report
	lastReportAt int64 // monotime
	released     bool  // the path's loss tracking was freed since data was last sent
}

// tick refreshes RTT and MTU, trims what was sent, and on the client
// probes the path and tells the concentrator of a new restriction.
func (l *link) tick(t *tickState) error {
	t.ticks++
	l.refresh(t.ticks%mtuTicks == 0)
	now := monotime()
	if !l.sent.trim(now - l.keepSent()) {
		t.released = false
	} else if !t.released {
		// No data sent for longer than a loss takes to be noticed.
		l.path.ReleaseIdle()
		t.released = true
	}
	if !l.probe {
		return nil
	}
	tx := l.txPackets.Load()
	l.setProbeInterval(now, tx == t.lastTx)
	t.lastTx = tx
	if now-t.lastProbe >= l.probeEvery.Load() {
		t.seq++
		l.queueProbe(transport.KindProbe, t.seq)
		t.lastProbe = now
	}
	if r := l.restriction(); r != t.told {
		// Tell the concentrator at once, not at the next report.
		t.told = r
		return l.report(t)
	}
	return nil
}

// report tells the peer what this side received, and (from the client)
// the restriction its budget puts on the path.
// A metered path skips a report that would say nothing new: on an idle
// standby 4G uplink, reports every two seconds from both ends were half
// of what it cost (measured: TestReportMeteredIdle).
func (l *link) report(t *tickState) error {
	r := transport.Report{RxPackets: l.rxPackets.Load(), RxBytes: l.rxBytes.Load(), HighestSeq: l.highestSeq.Load()}
	if l.meter != nil {
		r.Budget = l.restriction().String()
	}
	if l.hello.Metered && r == t.lastReport {
		return nil
	}
	t.lastReport, t.lastReportAt = r, monotime()
	return l.path.WriteControl(&transport.Message{Report: &r})
}

// setProbeInterval probes an idle metered (or budget-restricted) path
// slowly and any other path fast. A path that starts carrying data is
// probed fast at once, and kept alive until the fast probes had their
// four chances.
func (l *link) setProbeInterval(now int64, idle bool) {
	every := int64(probeInterval)
	if idle && (l.hello.Metered || l.restriction() != restrictNone) {
		every = int64(meteredIdleProbe)
	}
	if old := l.probeEvery.Swap(every); old > every {
		l.graceUntil.Store(now + 4*every + 2*l.rtt.Load())
	}
}

// PathStatus is one path as `braid status` shows it.
type PathStatus struct {
	Name      string        `json:"name"`
	State     string        `json:"state"` // up or down
	Local     string        `json:"local"`
	Remote    string        `json:"remote"`
	Priority  int           `json:"priority"`
	RTT       time.Duration `json:"rtt_ns"`
	MTU       int           `json:"mtu"`
	TxPackets uint64        `json:"tx_packets"`
	TxBytes   uint64        `json:"tx_bytes"`
	PadBytes  uint64        `json:"pad_bytes"` // warm-up padding sent
	RxPackets uint64        `json:"rx_packets"`
	RxBytes   uint64        `json:"rx_bytes"`
	QUICLost  uint64        `json:"quic_packets_lost"`
	QUICRecvd uint64        `json:"quic_packets_received"`
	Cwnd      uint64        `json:"cwnd_bytes"` // QUIC's congestion window
	// Discarded on receipt for want of room in quic-go's queues.
	QUICDropped     uint64 `json:"quic_packets_dropped"`
	DatagramDropped uint64 `json:"datagrams_dropped"`
	// Packets QUIC declared lost that the peer acknowledged after all.
	QUICSpurious uint64 `json:"quic_spurious_losses"`
	PeerRx       uint64 `json:"peer_rx_packets"` // what the peer says it received on this path
	// Of the data packets above, those sent and accepted as direct
	// datagrams (transport/direct.go), beside QUIC.
	DirectTx uint64 `json:"direct_tx_packets"`
	DirectRx uint64 `json:"direct_rx_packets"`
	// DirectDropped counts direct datagrams that arrived on a client
	// path's socket while too many waited to be read.
	DirectDropped uint64 `json:"direct_dropped,omitempty"`
	// What the scheduler knows of the path: its delivery rate (bytes/s),
	// whether that was measured while the path was the limit (its
	// capacity), and its loss event rate (QUIC's loss events over the
	// packets it sent).
	Rate       float64       `json:"rate_bytes_per_s"`
	IsCapacity bool          `json:"rate_is_capacity"`
	Loss       float64       `json:"loss"`
	SilenceFor time.Duration `json:"silence_ns"`
	// Budget is the restriction a used-up data budget puts on the path
	// (failover-only, interactive-only or block); empty if none.
	Budget string `json:"budget,omitempty"`
}

func (l *link) status() PathStatus {
	now := monotime()
	qs := l.path.Stats()
	st := PathStatus{
		Name:            l.name,
		State:           "down",
		Local:           addrString(l.path.LocalAddr()),
		Remote:          addrString(l.path.RemoteAddr()),
		Priority:        l.hello.Priority,
		RTT:             time.Duration(l.rtt.Load()),
		MTU:             int(l.mtu.Load()),
		TxPackets:       l.txPackets.Load(),
		TxBytes:         l.txBytes.Load(),
		PadBytes:        l.padBytes.Load(),
		RxPackets:       l.rxPackets.Load(),
		RxBytes:         l.rxBytes.Load(),
		QUICLost:        qs.PacketsLost,
		QUICRecvd:       qs.PacketsRecvd,
		Cwnd:            qs.Cwnd,
		QUICDropped:     qs.PacketsDropped,
		DatagramDropped: qs.DatagramsDropped,
		QUICSpurious:    qs.SpuriousLosses,
		SilenceFor:      time.Duration(now - l.lastRecv.Load()),
		Budget:          l.restriction().String(),
	}
	if l.alive(now) {
		st.State = "up"
	}
	st.DirectTx, st.DirectRx = l.path.DirectCounts()
	st.TxPackets += st.DirectTx
	st.RxPackets += st.DirectRx
	st.TxBytes += l.directTxBytes.Load()
	st.RxBytes += l.directRxBytes.Load()
	if l.probe {
		st.DirectDropped = l.path.DirectDropped()
	}
	if r := l.peer.Load(); r != nil {
		st.PeerRx = r.RxPackets
	}
	var ps scheduler.PathState
	l.estMu.Lock()
	l.est.Fill(&ps)
	l.estMu.Unlock()
	st.Rate, st.IsCapacity, st.Loss = ps.Rate, ps.RateIsCapacity, ps.Loss
	return st
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
