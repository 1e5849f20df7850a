package scheduler

import "time"

// Estimator measures one path without configuration: its delivery rate,
// RTT (smoothed, minimum and variation) and loss rate. The sender of a
// path feeds it what it sends (OnSent), the RTT samples it gets (OnRTT,
// e.g. from probe echoes, or SetRTT with QUIC's own estimates) and the
// peer's periodic reports
// of what it received on the path (OnReport, cumulative counters, as on
// braid's control stream) and the transport's loss counts (OnLossCounts).
// Fill copies the estimates into a [PathState].
//
// Delivery rate. Each report gives a sample: bytes delivered since the
// previous report over the time between the two, on the sender's clock
// (so no clock is shared with the peer). A sample measures the path's
// capacity only when the sender kept the path busy; when it did not (the
// path was application-limited, as BBR calls it), the sample is a lower
// bound and may only raise the estimate. The sender tells which by
// saying, for each packet, whether more were waiting behind it (OnSent's
// backlog). Busy samples move the estimate by rateGain, so a path whose
// capacity drops is followed within a few reports.
//
// Loss is a loss event rate, from the transport's own accounting
// (OnLossCounts: QUIC's packets sent and loss events, cumulative; a loss
// event is the losses of one round trip, as TFRC's, RFC 5348 section 5.2),
// not from the peer's reports: a report a second apart counts the packets
// still in flight as lost, which on a busy path with a queue read as 9%
// of loss on a path that lost none, and auto then moved its flows to a
// worse one. Events, not packets: a queue overflow loses a burst at once,
// and TCP's rate follows the events (one window cut each). Once at least
// minLossPackets were sent since the last sample, events/sent over them is
// a sample, smoothed by lossGain (the first is believed). A quiet path
// keeps its last estimate.
//
// RTT, as RFC 9002 section 5.3: smoothed RTT with gain 1/8, variation
// (jitter) with gain 1/4, and a minimum that is forgotten after
// minRTTWindow so that a path whose route lengthens is believed.
//
// Times are monotonic durations since any epoch the caller likes. The
// zero Estimator knows nothing and is ready to use. It is not safe for
// concurrent use: the caller serialises calls (e.g. under the lock of the
// path's statistics, or from the one goroutine that owns them).
type Estimator struct {
	// Cap, if positive, is the most the rate estimate may be, in bytes/s
	// (a configured ceiling, e.g. for a metered link).
	Cap float64

	rate     float64 // bytes/s, 0 until the first sample
	capacity bool    // a sample was taken while the path was the limit

	srtt, rttvar, minRTT time.Duration
	minRTTAt             time.Duration // when minRTT was sampled

	loss   float64
	lossOK bool // a loss sample was taken

	// Sent, cumulative.
	sentBytes, sentPackets, busyBytes uint64

	// The counters at the start of the current rate and loss samples.
	// They are separate because a loss sample waits for minLossPackets.
	rateBase struct {
		ok              bool
		at              time.Duration
		delivered, sent uint64 // bytes
		busy            uint64 // bytes sent with a backlog
	}
	// lossBase is the transport's counters at the start of the current
	// loss sample.
	lossBase struct {
		ok         bool
		sent, lost uint64 // packets, loss events
	}
}

const (
	// rateGain is the weight of a busy rate sample: with one report a
	// second, a drop of capacity is 90% followed after 4 reports.
	rateGain = 0.5
	// lossGain is the weight of a loss sample: loss is noisy (one or two
	// packets lost per sample at 1%), so it is averaged over about 8
	// samples.
	lossGain = 1.0 / 8
	// minSampleInterval is the shortest time between reports that makes a
	// sample: a shorter one says more about the report's own jitter.
	minSampleInterval = 50 * time.Millisecond
	// minLossPackets is the fewest packets sent that make a loss sample:
	// fewer cannot tell 1% of loss from none.
	minLossPackets = 100
	// busyShare is the share of a sample's bytes that must have been sent
	// with a backlog for the sample to measure capacity: a path idle for
	// more than about a tenth of the interval delivers measurably less
	// than it could, and the sample would wrongly lower the estimate.
	busyShare = 0.9
	// minRTTWindow is how long a minimum RTT is believed, as BBR's
	// min_rtt filter (10 s): long enough to see the path idle once, short
	// enough to follow a route change.
	minRTTWindow = 10 * time.Second
)

// OnSent records a packet of size bytes sent; backlog says whether more
// packets were waiting to be sent on the path behind it (the path, not the
// application, was the limit). The sender calls it once per packet.
func (e *Estimator) OnSent(size int, backlog bool) {
	e.sentBytes += uint64(size)
	e.sentPackets++
	if backlog {
		e.busyBytes += uint64(size)
	}
}

// OnReport records the peer's report, received at now, of the bytes and
// packets it has received on this path so far (cumulative counters). A
// report whose counters went backwards (the peer restarted them) starts
// over from it.
func (e *Estimator) OnReport(now time.Duration, deliveredBytes, deliveredPackets uint64) {
	rb := &e.rateBase
	if !rb.ok || now < rb.at || deliveredBytes < rb.delivered {
		e.rebaseRate(now, deliveredBytes)
		return
	}
	// A report too soon after the base is not a sample: the next one,
	// from the same base, will be.
	if dt := now - rb.at; dt >= minSampleInterval {
		e.rateSample(float64(deliveredBytes-rb.delivered)/dt.Seconds(), e.busyBytes-rb.busy, e.sentBytes-rb.sent)
		e.rebaseRate(now, deliveredBytes)
	}
}

// SkipLoss forgets the loss sample in progress: the next OnLossCounts is a
// new base. For a stretch whose losses say nothing of the path (padding
// that probed for the link's capacity and overflowed its queue).
func (e *Estimator) SkipLoss() { e.lossBase.ok = false }

// OnLossCounts records the transport's cumulative counts of packets sent
// on the path and of loss events. Counters that went backwards (a new
// connection) start over from them.
func (e *Estimator) OnLossCounts(sent, lost uint64) {
	lb := &e.lossBase
	if !lb.ok || sent < lb.sent || lost < lb.lost {
		lb.ok, lb.sent, lb.lost = true, sent, lost
		return
	}
	if n := sent - lb.sent; n >= minLossPackets {
		e.lossSample(min(float64(lost-lb.lost)/float64(n), 1))
		lb.sent, lb.lost = sent, lost
	}
}

func (e *Estimator) rebaseRate(now time.Duration, deliveredBytes uint64) {
	e.rateBase.ok, e.rateBase.at = true, now
	e.rateBase.delivered, e.rateBase.sent, e.rateBase.busy = deliveredBytes, e.sentBytes, e.busyBytes
}

// rateSample folds in a delivery rate sample; busy and sent are the bytes
// sent with a backlog and in all since the base.
func (e *Estimator) rateSample(r float64, busy, sent uint64) {
	switch {
	case e.rate == 0 || r > e.rate:
		e.rate = r // a lower bound in any case: believe it at once
	case sent > 0 && float64(busy) >= busyShare*float64(sent):
		e.rate += rateGain * (r - e.rate)
	}
	if sent > 0 && float64(busy) >= busyShare*float64(sent) {
		e.capacity = true
	}
}

// lossSample folds in a loss sample; the first is believed at once.
func (e *Estimator) lossSample(l float64) {
	if !e.lossOK {
		e.loss, e.lossOK = l, true
		return
	}
	e.loss += lossGain * (l - e.loss)
}

// OnRTT records an RTT sample taken at now.
func (e *Estimator) OnRTT(now, sample time.Duration) {
	if sample <= 0 {
		return
	}
	if e.minRTT == 0 || sample <= e.minRTT || now-e.minRTTAt > minRTTWindow {
		e.minRTT, e.minRTTAt = sample, now
	}
	if e.srtt == 0 {
		e.srtt, e.rttvar = sample, sample/2 // RFC 9002 section 5.3
		return
	}
	d := e.srtt - sample
	if d < 0 {
		d = -d
	}
	e.rttvar = (3*e.rttvar + d) / 4
	e.srtt = (7*e.srtt + sample) / 8
}

// SetRTT replaces the RTT estimates with a transport's own: QUIC keeps
// the same three (RFC 9002 section 5) from every ACK, which is better
// than sampling them again. Zero values are ignored.
func (e *Estimator) SetRTT(smoothed, minimum, variation time.Duration) {
	if smoothed > 0 {
		e.srtt, e.rttvar = smoothed, max(variation, 0)
	}
	if minimum > 0 {
		e.minRTT = minimum
	}
}

// Rate is the estimated delivery rate in bytes/s, at most Cap; 0 if
// unknown.
func (e *Estimator) Rate() float64 {
	if e.Cap > 0 && e.rate > e.Cap {
		return e.Cap
	}
	return e.rate
}

// Loss is the estimated fraction of packets lost, in [0, 1].
func (e *Estimator) Loss() float64 {
	return min(max(e.loss, 0), 1)
}

// RTT is the smoothed RTT, 0 if unknown.
func (e *Estimator) RTT() time.Duration { return e.srtt }

// MinRTT is the lowest RTT of the last minRTTWindow or so, 0 if unknown.
func (e *Estimator) MinRTT() time.Duration { return e.minRTT }

// Jitter is the RTT variation (smoothed mean deviation), 0 if unknown.
func (e *Estimator) Jitter() time.Duration { return e.rttvar }

// Fill copies the estimates into s. It leaves s.RTT alone when the
// estimator has no RTT sample, so a caller may set RTT from elsewhere.
func (e *Estimator) Fill(s *PathState) {
	s.Rate = e.Rate()
	s.RateIsCapacity = e.capacity && s.Rate > 0
	s.Loss = e.Loss()
	s.MinRTT = e.minRTT
	s.Jitter = e.rttvar
	if e.srtt > 0 {
		s.RTT = e.srtt
	}
}
