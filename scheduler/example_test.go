package scheduler_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
)

// A path's sender feeds its Estimator; the TUN reader copies the
// estimates into the path's PathState before each Pick.
func ExampleEstimator() {
	var e scheduler.Estimator
	start := time.Duration(0) // the caller's monotonic clock
	e.OnReport(start, 0, 0)   // the peer's first report: a base
	for range 1000 {
		e.OnSent(1250, true) // sent, with more waiting behind it
	}
	e.SetRTT(30*time.Millisecond, 25*time.Millisecond, 2*time.Millisecond) // QUIC's estimates
	e.OnLossCounts(0, 0)                                                   // QUIC's counters at the start
	e.OnLossCounts(1000, 10)                                               // QUIC declared 10 of them lost
	e.OnReport(start+time.Second, 1250*990, 990)                           // the peer got 990 of them

	st := scheduler.PathState{Up: true, QueueCap: 128}
	e.Fill(&st)
	fmt.Printf("rate %.0f B/s, rtt %v, min %v, loss %.2f\n", st.Rate, st.RTT, st.MinRTT, st.Loss)
	// Output: rate 1237500 B/s, rtt 30ms, min 25ms, loss 0.01
}

// The receiver of a session: duplicates are dropped by the Window, then
// the Reorder buffer restores the order; Expire runs at its Deadline.
func ExampleReorder() {
	var w scheduler.Window
	r := scheduler.NewReorder[string](0, 0)
	r.SetHold(scheduler.HoldFor([]scheduler.PathState{
		{Up: true, RTT: 20 * time.Millisecond},
		{Up: true, RTT: 60 * time.Millisecond},
	}))
	var out []string
	deliver := func(now time.Duration, seq uint64, pkt string) {
		if !w.Accept(seq) {
			return // a duplicate
		}
		out = r.Push(out, now, seq, len(pkt), pkt)
	}
	ms := time.Millisecond
	deliver(0, 1, "one")
	deliver(1*ms, 3, "three") // 2 is on the slow path
	deliver(2*ms, 4, "four")
	deliver(3*ms, 3, "three") // a redundant copy
	deliver(40*ms, 2, "two")  // 3 waited 39 ms for it: the hold, 41 ms, becomes 9/8 of that
	deliver(41*ms, 6, "six")  // 5 is lost
	if d, ok := r.Deadline(); ok {
		out = r.Expire(out, d) // a timer fires at the deadline
		fmt.Println("gave up on 5 at", d)
	}
	fmt.Println(out)
	// Output:
	// gave up on 5 at 84.875ms
	// [one two three four six]
}

// The TUN reader classifies each packet and picks its paths.
func ExampleMulti() {
	m, err := scheduler.NewMulti(scheduler.Auto, []scheduler.Class{
		{Name: "voice", Mode: scheduler.Redundant, DSCP: []uint8{46}},
		{Name: "backup", Mode: scheduler.Flow, Dst: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	})
	if err != nil {
		panic(err)
	}
	paths := []scheduler.PathState{ // rates measured while each path was the limit
		{Up: true, QueueCap: 128, Rate: 6.25e6, RateIsCapacity: true, RTT: 20 * time.Millisecond},
		{Up: true, QueueCap: 128, Rate: 2.5e6, RateIsCapacity: true, RTT: 60 * time.Millisecond},
	}
	info := scheduler.Info{Proto: scheduler.ProtoUDP, Dst: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 5004, DstPort: 5004, DSCP: 46, Size: 200, Payload: 172}
	var picks []int
	picks = m.Pick(picks[:0], m.Packet(&info, 42), paths)
	fmt.Println("voice:", picks)
	info = scheduler.Info{Proto: scheduler.ProtoTCP, Dst: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 40000, DstPort: 443, Size: 1500, Payload: 1448, TCPFlags: 0x10}
	picks = m.Pick(picks[:0], m.Packet(&info, 42), paths)
	fmt.Println("bulk:", picks)
	// Output:
	// voice: [0 1]
	// bulk: [0]
}
