package scheduler

import (
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const ms = time.Millisecond

func TestEstimatorRTT(t *testing.T) {
	var e Estimator
	if e.RTT() != 0 || e.MinRTT() != 0 || e.Jitter() != 0 {
		t.Fatalf("zero Estimator: rtt %v min %v jitter %v", e.RTT(), e.MinRTT(), e.Jitter())
	}
	steps := []struct {
		now, sample           time.Duration
		srtt, rttvar, minimum time.Duration
	}{
		{0, 0, 0, 0, 0}, // ignored
		{1 * ms, 100 * ms, 100 * ms, 50 * ms, 100 * ms}, // first sample, RFC 9002 5.3
		{2 * ms, 60 * ms, 95 * ms, 47500 * time.Microsecond, 60 * ms},
		{3 * ms, 95 * ms, 95 * ms, 35625 * time.Microsecond, 60 * ms},
		// The minimum is forgotten after minRTTWindow.
		{3*ms + minRTTWindow + 1, 80 * ms, 93125 * time.Microsecond, 30468750, 80 * ms},
		{3*ms + minRTTWindow + 2, -5 * ms, 93125 * time.Microsecond, 30468750, 80 * ms}, // ignored
	}
	for i, st := range steps {
		e.OnRTT(st.now, st.sample)
		if e.RTT() != st.srtt || e.Jitter() != st.rttvar || e.MinRTT() != st.minimum {
			t.Errorf("step %d: srtt %v rttvar %v min %v; want %v %v %v", i, e.RTT(), e.Jitter(), e.MinRTT(), st.srtt, st.rttvar, st.minimum)
		}
	}
}

// send records n packets of size bytes, with or without a backlog.
func send(e *Estimator, n, size int, backlog bool) {
	for range n {
		e.OnSent(size, backlog)
	}
}

func TestEstimatorRate(t *testing.T) {
	tests := []struct {
		name string
		run  func(e *Estimator)
		want float64
	}{
		{"no report", func(e *Estimator) { send(e, 10, 1000, true) }, 0},
		{"one report", func(e *Estimator) {
			send(e, 10, 1000, true)
			e.OnReport(time.Second, 10000, 10)
		}, 0},
		{"first sample believed", func(e *Estimator) {
			e.OnReport(time.Second, 0, 0)
			send(e, 1000, 1000, false)
			e.OnReport(2*time.Second, 1e6, 1000)
		}, 1e6},
		{"busy sample lowers", func(e *Estimator) {
			e.OnReport(0, 0, 0)
			send(e, 1000, 1000, true)
			e.OnReport(time.Second, 1e6, 1000)
			send(e, 500, 1000, true)
			e.OnReport(2*time.Second, 1.5e6, 1500)
		}, 0.75e6},
		{"idle sample does not lower", func(e *Estimator) {
			e.OnReport(0, 0, 0)
			send(e, 1000, 1000, true)
			e.OnReport(time.Second, 1e6, 1000)
			send(e, 100, 1000, false)
			e.OnReport(2*time.Second, 1.1e6, 1100)
		}, 1e6},
		{"idle sample raises", func(e *Estimator) {
			e.OnReport(0, 0, 0)
			send(e, 1000, 1000, true)
			e.OnReport(time.Second, 1e6, 1000)
			send(e, 2000, 1000, false)
			e.OnReport(2*time.Second, 3e6, 3000)
		}, 2e6},
		{"report too soon is not a sample", func(e *Estimator) {
			e.OnReport(0, 0, 0)
			send(e, 1000, 1000, true)
			e.OnReport(10*ms, 10, 1) // ignored, base kept
			e.OnReport(time.Second, 1e6, 1000)
		}, 1e6},
		{"counters restart", func(e *Estimator) {
			e.OnReport(0, 0, 0)
			send(e, 1000, 1000, true)
			e.OnReport(time.Second, 1e6, 1000)
			e.OnReport(2*time.Second, 5, 5) // peer restarted: new base
			send(e, 1000, 1000, true)
			e.OnReport(3*time.Second, 5+2e6, 1005)
		}, 2e6},
		{"clock backwards", func(e *Estimator) {
			e.OnReport(time.Second, 0, 0)
			e.OnReport(0, 1e9, 1e6) // new base
			send(e, 1000, 1000, false)
			e.OnReport(time.Second, 1e9+1e6, 1e6+1000)
		}, 1e6},
		{"capped", func(e *Estimator) {
			e.Cap = 0.5e6
			e.OnReport(0, 0, 0)
			e.OnReport(time.Second, 1e6, 1000)
		}, 0.5e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Estimator
			tt.run(&e)
			if got := e.Rate(); math.Abs(got-tt.want) > 1 {
				t.Errorf("Rate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEstimatorLoss(t *testing.T) {
	var e Estimator
	e.OnLossCounts(0, 0) // a base
	var sent, lost uint64
	count := func(n, l int) {
		sent += uint64(n)
		lost += uint64(l)
		e.OnLossCounts(sent, lost)
	}
	count(50, 5) // too few packets: no sample yet
	if e.Loss() != 0 {
		t.Errorf("after 50 packets: Loss = %v, want 0", e.Loss())
	}
	count(50, 5) // 100 packets, 10 lost: first sample
	if want := 0.1; math.Abs(e.Loss()-want) > 1e-9 {
		t.Errorf("after 100 packets: Loss = %v, want %v", e.Loss(), want)
	}
	count(100, 0)
	if want := 0.1 * (1 - lossGain); math.Abs(e.Loss()-want) > 1e-9 {
		t.Errorf("after 200 packets: Loss = %v, want %v", e.Loss(), want)
	}
	for range 100 {
		count(200, 2)
	}
	if math.Abs(e.Loss()-0.01) > 1e-3 {
		t.Errorf("steady 1%%: Loss = %v", e.Loss())
	}
	// Reports of what the peer received do not move it: the packets in
	// flight at a report are not lost.
	before := e.Loss()
	e.OnReport(0, 0, 0)
	send(&e, 1000, 100, true)
	e.OnReport(time.Second, 900*100, 900)
	if e.Loss() != before {
		t.Errorf("a report moved Loss from %v to %v", before, e.Loss())
	}
	// Counters that went backwards (a new connection) are a new base.
	e.OnLossCounts(10, 10)
	e.OnLossCounts(110, 10)
	want := before * (1 - lossGain)
	if math.Abs(e.Loss()-want) > 1e-9 {
		t.Errorf("after a restart of the counters: Loss = %v, want %v", e.Loss(), want)
	}
	// What is sent before SkipLoss does not count: 50 of 60 lost, then
	// none of the next 100.
	e.OnLossCounts(170, 60)
	e.SkipLoss()
	e.OnLossCounts(170, 60)
	e.OnLossCounts(270, 60)
	if want *= 1 - lossGain; math.Abs(e.Loss()-want) > 1e-9 {
		t.Errorf("after SkipLoss: Loss = %v, want %v", e.Loss(), want)
	}
	// Clamped to [0, 1].
	e = Estimator{loss: -0.5}
	if e.Loss() != 0 {
		t.Errorf("Loss = %v, want 0", e.Loss())
	}
	e.loss = 2
	if e.Loss() != 1 {
		t.Errorf("Loss = %v, want 1", e.Loss())
	}
}

func TestEstimatorSetRTT(t *testing.T) {
	var e Estimator
	e.OnRTT(0, 50*ms)
	e.SetRTT(30*ms, 20*ms, 4*ms)
	if e.RTT() != 30*ms || e.MinRTT() != 20*ms || e.Jitter() != 4*ms {
		t.Errorf("after SetRTT: %v %v %v", e.RTT(), e.MinRTT(), e.Jitter())
	}
	e.SetRTT(0, 0, 0)
	if e.RTT() != 30*ms || e.MinRTT() != 20*ms {
		t.Errorf("zeros were not ignored: %v %v", e.RTT(), e.MinRTT())
	}
}

func TestEstimatorFill(t *testing.T) {
	var e Estimator
	s := PathState{RTT: 7 * ms}
	e.Fill(&s)
	if s.RTT != 7*ms || s.Rate != 0 || s.MinRTT != 0 {
		t.Errorf("empty Fill: %+v", s)
	}
	e.OnRTT(0, 40*ms)
	e.OnReport(0, 0, 0)
	e.OnReport(time.Second, 1000, 1)
	e.Fill(&s)
	if s.RTT != 40*ms || s.MinRTT != 40*ms || s.Jitter != 20*ms || s.Rate != 1000 {
		t.Errorf("Fill: %+v", s)
	}
}

func TestEstimatorAllocs(t *testing.T) {
	var e Estimator
	var now time.Duration
	allocs := testing.AllocsPerRun(1000, func() {
		now += ms
		e.OnSent(1200, true)
		e.OnRTT(now, 30*ms)
		e.OnReport(now, uint64(now), uint64(now/ms))
	})
	if allocs != 0 {
		t.Errorf("Estimator allocates %v times per run", allocs)
	}
}

// simLink is a path in virtual time: a bottleneck of rate bytes/s with a
// bounded queue, a one-way delay, and a loss of one packet in lossEvery.
type simLink struct {
	mu        sync.Mutex
	rate      float64
	delay     time.Duration
	lossEvery int

	queue     int // packets in the bottleneck queue
	n         int // packets through the bottleneck, for loss
	lost      int // of them, dropped
	rxBytes   uint64
	rxPackets uint64
}

const simPacket = 1000 // bytes

// TestEstimatorSimulation runs a sender, a bottleneck and a reporting
// receiver in virtual time and checks that the estimator follows the
// link's capacity, ignores application-limited periods, and sees its
// loss and RTT.
func TestEstimatorSimulation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		now := func() time.Duration { return time.Since(start) }
		link := &simLink{rate: 1.25e6, delay: 20 * ms, lossEvery: 50} // 10 Mbit/s, 2% loss
		var mu sync.Mutex
		var e Estimator
		offer := 2.5e6 // bytes/s the application offers: twice the link
		done := make(chan struct{})
		var wg sync.WaitGroup

		// The sender: each millisecond, the application adds offer/1000
		// bytes; the path takes what fits in the bottleneck queue (64
		// packets), the rest waits (a backlog).
		wg.Go(func() {
			tick := time.NewTicker(ms)
			defer tick.Stop()
			backlog := 0.0
			for {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				mu.Lock()
				backlog = min(backlog+offer/1000/simPacket, 256)
				link.mu.Lock()
				for backlog >= 1 && link.queue < 64 {
					backlog--
					link.queue++
					e.OnSent(simPacket, backlog >= 1)
				}
				link.mu.Unlock()
				mu.Unlock()
			}
		})
		// The bottleneck: each millisecond it forwards rate/1000 bytes,
		// delivered delay later; the RTT sample is 2*delay plus the
		// queueing delay.
		wg.Go(func() {
			tick := time.NewTicker(ms)
			defer tick.Stop()
			credit := 0.0
			for {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				var rtt time.Duration
				link.mu.Lock()
				credit = min(credit+link.rate/1000/simPacket, 4)
				for credit >= 1 && link.queue > 0 {
					credit--
					link.queue--
					link.n++
					if link.n%link.lossEvery == 0 {
						link.lost++
						continue
					}
					queueing := time.Duration(float64(link.queue*simPacket) / link.rate * float64(time.Second))
					time.AfterFunc(link.delay, func() {
						link.mu.Lock()
						link.rxBytes += simPacket
						link.rxPackets++
						link.mu.Unlock()
					})
					if link.n%100 == 1 {
						rtt = 2*link.delay + queueing
					}
				}
				link.mu.Unlock()
				if rtt > 0 { // not under link.mu: the sender locks mu, then link.mu
					mu.Lock()
					e.OnRTT(now(), rtt)
					mu.Unlock()
				}
			}
		})
		// The receiver reports every second; the report takes delay.
		// The sender learns of losses about as late.
		wg.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				link.mu.Lock()
				b, p := link.rxBytes, link.rxPackets
				n, lost := uint64(link.n), uint64(link.lost)
				link.mu.Unlock()
				time.AfterFunc(link.delay, func() {
					mu.Lock()
					e.OnReport(now(), b, p)
					e.OnLossCounts(n, lost) // as QUIC declares them, about when the report comes
					mu.Unlock()
				})
			}
		})
		check := func(when string, wantRate, tol float64) {
			t.Helper()
			mu.Lock()
			defer mu.Unlock()
			delivered := wantRate * (1 - 1/float64(link.lossEvery))
			if r := e.Rate(); math.Abs(r-delivered) > tol*delivered {
				t.Errorf("%s: Rate = %.0f, want %.0f±%.0f%%", when, r, delivered, tol*100)
			}
			t.Logf("%s: rate %.0f B/s, loss %.3f, srtt %v, min %v, jitter %v", when, e.Rate(), e.Loss(), e.RTT(), e.MinRTT(), e.Jitter())
		}

		time.Sleep(10 * time.Second)
		check("saturated", 1.25e6, 0.05)
		mu.Lock()
		if l := e.Loss(); math.Abs(l-0.02) > 0.005 {
			t.Errorf("Loss = %v, want 0.02", l)
		}
		if e.MinRTT() < 40*ms || e.MinRTT() > 45*ms || e.RTT() < e.MinRTT() {
			t.Errorf("MinRTT %v, RTT %v; want 40ms and above", e.MinRTT(), e.RTT())
		}
		offer = 0.1e6 // the application goes quiet
		mu.Unlock()

		time.Sleep(10 * time.Second)
		check("application-limited", 1.25e6, 0.05)

		link.mu.Lock()
		link.rate = 0.625e6 // capacity halves
		link.mu.Unlock()
		mu.Lock()
		offer = 2.5e6
		mu.Unlock()
		time.Sleep(8 * time.Second)
		check("after capacity halved", 0.625e6, 0.1)

		close(done)
		wg.Wait()
	})
}

// TestRateIsCapacityOnlyWhenBusy: a rate measured while the path had a
// backlog is its capacity; one measured while it was idle is not.
func TestRateIsCapacityOnlyWhenBusy(t *testing.T) {
	for _, busy := range []bool{false, true} {
		var e Estimator
		var delivered uint64
		for i := range 5 {
			for range 100 {
				e.OnSent(1000, busy)
			}
			delivered += 100 * 1000
			e.OnReport(time.Duration(i+1)*time.Second, delivered, delivered/1000)
		}
		var s PathState
		e.Fill(&s)
		if s.Rate <= 0 || s.RateIsCapacity != busy {
			t.Errorf("busy %v: Rate %v, RateIsCapacity %v", busy, s.Rate, s.RateIsCapacity)
		}
	}
}
