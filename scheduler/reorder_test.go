package scheduler

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// An rop is one step of a reorder test.
type rop struct {
	kind byte // 'p' push, 'b' bypass, 'e' expire, 'h' set hold (to size ms)
	at   time.Duration
	seq  uint64
	size int
	want []uint64 // released by this step
}

func passed(seq uint64, want ...uint64) rop {
	return rop{kind: 'x', seq: seq, want: want}
}

func push(at time.Duration, seq uint64, want ...uint64) rop {
	return rop{kind: 'p', at: at, seq: seq, size: 1000, want: want}
}

func bypass(at time.Duration, seq uint64, want ...uint64) rop {
	return rop{kind: 'b', at: at, seq: seq, want: want}
}

func expire(at time.Duration, want ...uint64) rop {
	return rop{kind: 'e', at: at, want: want}
}

func setHold(d time.Duration) rop { return rop{kind: 'h', at: d} }

func TestReorder(t *testing.T) {
	tests := []struct {
		name   string
		budget int
		slots  int
		ops    []rop
		late   uint64
	}{
		{"in order", 0, 0, []rop{push(0, 1, 1), push(0, 2, 2), push(1, 3, 3)}, 0},
		{"swap", 0, 0, []rop{push(0, 2), push(0, 1, 1, 2), push(0, 4), push(1, 3, 3, 4)}, 0},
		{"gap filled", 0, 0, []rop{push(0, 1, 1), push(0, 3), push(0, 4), push(5*ms, 2, 2, 3, 4)}, 0},
		{"gap expires, then late", 0, 0, []rop{
			push(0, 1, 1), push(0, 3), expire(9 * ms), expire(10*ms, 3), push(11*ms, 2, 2),
		}, 1},
		{"two gaps expire in turn", 0, 0, []rop{
			push(0, 1, 1), push(0, 3), push(5*ms, 5), expire(10*ms, 3), expire(14 * ms), expire(15*ms, 5),
		}, 0},
		{"oldest packet behind a later gap", 0, 0, []rop{
			push(0, 1, 1), push(0, 5), push(8*ms, 3), expire(10*ms, 3, 5),
		}, 0},
		{"starts at 1", 0, 0, []rop{push(0, 2), push(0, 1, 1, 2), push(0, 3, 3)}, 0},
		{"starts in the middle", 0, 0, []rop{push(0, 5), expire(10*ms, 5), push(0, 6, 6), push(0, 4, 4)}, 1},
		{"starts far in the middle", 0, 4, []rop{push(0, 5), push(0, 2, 2), push(0, 9, 5), expire(10*ms, 9)}, 0},
		{"hold 0 passes through", 0, 0, []rop{setHold(0), push(0, 1, 1), push(0, 3, 3), push(0, 2, 2)}, 1},
		{"hold 0 flushes", 0, 0, []rop{push(0, 1, 1), push(0, 3), setHold(0), push(0, 5, 3, 5)}, 0},
		{"hold 0 flushes at expire", 0, 0, []rop{push(0, 1, 1), push(0, 3), setHold(0), expire(0, 3)}, 0},
		{"duplicate released", 0, 0, []rop{push(0, 1, 1), push(0, 3), push(0, 3, 3), push(0, 2, 2, 3)}, 0},
		{"budget flushes", 3000, 0, []rop{
			push(0, 1, 1), push(0, 3), push(0, 4), push(0, 5), push(0, 7, 3, 4, 5), push(0, 6, 6, 7),
		}, 0},
		{"too big for the budget", 1500, 0, []rop{
			push(0, 1, 1), push(0, 3), {kind: 'p', seq: 5, size: 2000, want: []uint64{3, 5}}, push(0, 4, 4),
		}, 1},
		{"ring makes room", 0, 4, []rop{
			push(0, 1, 1), push(0, 3), push(0, 4), push(0, 10, 3, 4), push(0, 8), push(0, 9), push(0, 7, 7, 8, 9, 10),
		}, 0},
		{"huge jump", 0, 4, []rop{
			push(0, 1, 1), push(0, 3), push(0, 1<<50, 3), push(0, 1<<50-1), push(0, 1<<50-3, 1<<50-3),
			push(0, 1<<50-2, 1<<50-2, 1<<50-1, 1<<50), push(0, 2, 2),
		}, 1},
		{"passed gives up below", 0, 0, []rop{
			push(0, 1, 1), push(0, 3), push(0, 5), push(0, 7), passed(2), passed(4, 3), passed(7, 5, 7), push(0, 6, 6), push(0, 8, 8),
		}, 1},
		{"passed with nothing held", 0, 0, []rop{push(0, 1, 1), passed(5), push(0, 3, 3), push(0, 5, 5)}, 1},
		{"passed behind the front", 0, 0, []rop{push(0, 1, 1), push(0, 2, 2), passed(1), push(0, 3, 3)}, 0},
		{"bypass at the front", 0, 0, []rop{push(0, 1, 1), push(0, 3), bypass(0, 2, 2, 3), push(0, 4, 4)}, 0},
		{"bypass leaves no gap", 0, 0, []rop{
			push(0, 1, 1), bypass(0, 3, 3), push(0, 4), push(0, 2, 2, 4), push(0, 5, 5),
		}, 0},
		{"bypass marks expire", 0, 0, []rop{
			push(0, 1, 1), bypass(0, 3, 3), push(0, 5), expire(10*ms, 5), push(0, 6, 6),
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReorder[uint64](tt.budget, tt.slots)
			r.SetHold(10 * ms)
			var out []uint64
			for i, op := range tt.ops {
				out = out[:0]
				switch op.kind {
				case 'p':
					out = r.Push(out, op.at, op.seq, op.size, op.seq)
				case 'b':
					out = r.Bypass(out, op.seq, op.seq)
				case 'e':
					out = r.Expire(out, op.at)
				case 'x':
					out = r.Passed(out, op.seq)
				case 'h':
					r.SetHold(op.at)
				}
				if !slices.Equal(out, op.want) {
					t.Fatalf("step %d (%c %d): released %v, want %v", i, op.kind, op.seq, out, op.want)
				}
			}
			if got := r.Stats().Late; got != tt.late {
				t.Errorf("Late = %d, want %d", got, tt.late)
			}
		})
	}
}

func TestReorderDeadline(t *testing.T) {
	r := NewReorder[uint64](0, 0)
	r.SetHold(10 * ms)
	if _, ok := r.Deadline(); ok {
		t.Error("empty buffer has a deadline")
	}
	r.Push(nil, 0, 1, 100, 1)
	r.Push(nil, 2*ms, 3, 100, 3)
	r.Push(nil, 3*ms, 5, 100, 5)
	if d, ok := r.Deadline(); !ok || d != 12*ms {
		t.Errorf("Deadline = %v, %v; want 12ms", d, ok)
	}
	r.Push(nil, 4*ms, 2, 100, 2) // releases 2, 3: 5 is the oldest
	if d, ok := r.Deadline(); !ok || d != 13*ms {
		t.Errorf("Deadline = %v, %v; want 13ms", d, ok)
	}
	if n, b := r.Len(); n != 1 || b != 100 {
		t.Errorf("Len = %d, %d; want 1, 100", n, b)
	}
	r.SetHold(time.Hour)
	if r.Hold() != MaxHold {
		t.Errorf("Hold = %v, want MaxHold", r.Hold())
	}
	if out := r.Reset(nil); !slices.Equal(out, []uint64{5}) {
		t.Errorf("Reset released %v", out)
	}
	if out := r.Push(nil, 0, 1, 100, 1); !slices.Equal(out, []uint64{1}) {
		t.Errorf("after Reset: %v", out)
	}
}

func TestNewReorderSlots(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, DefaultReorderSlots}, {1, 1}, {3, 4}, {1000, 1024}, {1 << 20, maxReorderSlots}} {
		if got := len(NewReorder[int](0, tt.in).ring); got != tt.want {
			t.Errorf("NewReorder(0, %d): %d slots, want %d", tt.in, got, tt.want)
		}
	}
}

func TestHoldFor(t *testing.T) {
	p := func(up bool, rtt, jitter time.Duration) PathState {
		return PathState{Up: up, RTT: rtt, Jitter: jitter}
	}
	tests := []struct {
		name  string
		paths []PathState
		want  time.Duration
	}{
		{"none", nil, 0},
		{"one path", []PathState{p(true, 20*ms, ms)}, 0},
		{"one up", []PathState{p(true, 20*ms, ms), p(false, 60*ms, ms)}, 0},
		{"unknown RTT", []PathState{p(true, 20*ms, ms), p(true, 0, 0)}, 0},
		{"two", []PathState{p(true, 20*ms, ms), p(true, 60*ms, 3*ms)}, 40*ms + 6*ms + minHold},
		{"equal", []PathState{p(true, 30*ms, 0), p(true, 30*ms, 0)}, minHold},
		{"capped", []PathState{p(true, 10*ms, 0), p(true, time.Second, 0)}, MaxHold},
	}
	for _, tt := range tests {
		if got := HoldFor(tt.paths); got != tt.want {
			t.Errorf("%s: HoldFor = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// reorderChecker drives a Reorder and checks its invariants after every
// call: within budget and ring, every packet released exactly once, and
// out of order only when counted as Late or Duplicates.
type reorderChecker struct {
	t         testing.TB
	r         *Reorder[uint32]
	budget    int
	seqs      []uint64 // by packet id
	released  []int    // times each id was released
	bypassed  []bool   // or duplicates: not checked for order
	seen      map[uint64]bool
	pending   int // packets pushed and not released
	maxSeq    uint64
	anyOut    bool
	unordered uint64
	out       []uint32
}

func newReorderChecker(t testing.TB, budget, slots int) *reorderChecker {
	return &reorderChecker{t: t, r: NewReorder[uint32](budget, slots), budget: budget, seen: make(map[uint64]bool)}
}

func (c *reorderChecker) push(now time.Duration, seq uint64, size int, bypass bool) {
	id := uint32(len(c.seqs))
	c.seqs = append(c.seqs, seq)
	c.released = append(c.released, 0)
	c.bypassed = append(c.bypassed, bypass || c.seen[seq])
	c.seen[seq] = true
	c.pending++
	if bypass {
		c.check(c.r.Bypass(c.out[:0], seq, id))
	} else {
		c.check(c.r.Push(c.out[:0], now, seq, size, id))
	}
}

func (c *reorderChecker) expire(now time.Duration) { c.check(c.r.Expire(c.out[:0], now)) }

func (c *reorderChecker) check(out []uint32) {
	c.t.Helper()
	c.out = out
	c.pending -= len(out)
	for _, id := range out {
		c.released[id]++
		if c.released[id] > 1 {
			c.t.Fatalf("packet %d (seq %d) released twice", id, c.seqs[id])
		}
		if c.bypassed[id] {
			continue
		}
		// Serial number arithmetic (RFC 1982): after the 64-bit
		// sequence wraps, small numbers come after large ones.
		if seq := c.seqs[id]; c.anyOut && seq <= c.maxSeq && c.maxSeq-seq < 1<<63 {
			c.unordered++
		} else {
			c.maxSeq, c.anyOut = seq, true
		}
	}
	st := c.r.Stats()
	if c.unordered > st.Late+st.Duplicates {
		c.t.Fatalf("%d packets out of order, but Late %d + Duplicates %d", c.unordered, st.Late, st.Duplicates)
	}
	n, b := c.r.Len()
	if b > c.budget || b < 0 || n < 0 || n > len(c.r.ring) {
		c.t.Fatalf("holding %d packets, %d bytes: budget %d, %d slots", n, b, c.budget, len(c.r.ring))
	}
	if c.pending != n {
		c.t.Fatalf("%d packets unreleased, buffer says it holds %d", c.pending, n)
	}
}

func (c *reorderChecker) finish() {
	c.t.Helper()
	c.check(c.r.Reset(c.out[:0]))
	for id, k := range c.released {
		if k != 1 {
			c.t.Fatalf("packet %d (seq %d) released %d times", id, c.seqs[id], k)
		}
	}
}

// TestReorderMemoryBound tries hard to make the buffer exceed its budget:
// a path with seconds of delay carrying every third packet, huge
// sequence gaps and jumps, the wrap of a 64-bit sequence, duplicates,
// very old packets after a flush, and packets larger than the budget.
func TestReorderMemoryBound(t *testing.T) {
	const budget = 64 << 10
	c := newReorderChecker(t, budget, 256)
	c.r.SetHold(MaxHold)
	var now time.Duration
	seq := uint64(1)
	type delayed struct {
		at  time.Duration
		seq uint64
	}
	var slow []delayed
	for i := range 20000 {
		now += 100 * time.Microsecond
		size := 64 + (i*7919)%1437
		switch {
		case i%3 == 0: // the slow path: 3 s of delay
			slow = append(slow, delayed{now + 3*time.Second, seq})
		case i%997 == 0: // a jump far ahead
			seq += 1 << 40
			c.push(now, seq, size, false)
		case i%1009 == 0: // a packet far behind: late
			c.push(now, seq-1<<20, size, false)
		case i%101 == 0: // a duplicate of the previous
			c.push(now, seq-1, size, false)
		case i%503 == 0: // bigger than the budget
			c.push(now, seq, 2*budget, false)
		case i%17 == 0:
			c.push(now, seq, size, true)
		default:
			c.push(now, seq, size, false)
		}
		seq++
		for len(slow) > 0 && slow[0].at <= now {
			c.push(now, slow[0].seq, size, false)
			slow = slow[1:]
		}
		if i%50 == 0 {
			c.expire(now)
		}
		if i == 15000 { // the sequence wraps
			seq = math.MaxUint64 - 100
		}
	}
	for _, d := range slow {
		c.push(now, d.seq, 1000, false)
	}
	st := c.r.Stats()
	t.Logf("stats %+v", st)
	if st.Overflows == 0 || st.Late == 0 {
		t.Errorf("the test did not reach the bounds: %+v", st)
	}
	c.finish()
}

// FuzzReorder drives a Reorder with random operations and checks its
// invariants (see reorderChecker). Each operation is 4 bytes: kind,
// sequence step, size, time step.
func FuzzReorder(f *testing.F) {
	f.Add([]byte{0, 1, 10, 1, 0, 2, 10, 1, 0, 255, 200, 5, 2, 0, 0, 200})
	f.Add([]byte{0, 3, 100, 0, 0, 130, 255, 0, 1, 1, 0, 0, 3, 0, 0, 0, 0, 1, 1, 1})
	f.Add(binary.BigEndian.AppendUint64(nil, 0x00ff7f8081fe0102))
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := newReorderChecker(t, 8000, 16)
		c.r.SetHold(5 * ms)
		var now time.Duration
		seq := uint64(1000)
		for ; len(ops) >= 4; ops = ops[4:] {
			kind, step, size, dt := ops[0], int8(ops[1]), int(ops[2])*40, time.Duration(ops[3])*100*time.Microsecond
			now += dt
			switch kind % 8 {
			case 0, 1, 2, 3:
				seq += uint64(int64(step)) // back or forth
				c.push(now, seq, size, false)
			case 4:
				seq += uint64(int64(step)) << 20 // a jump
				c.push(now, seq, size, false)
			case 5:
				seq += uint64(int64(step))
				c.push(now, seq, 0, true)
			case 6:
				c.expire(now)
			case 7:
				if step%2 == 0 {
					c.r.SetHold(time.Duration(step) * ms)
				} else {
					c.check(c.r.Passed(c.out[:0], seq+uint64(int64(step))))
				}
			}
		}
		c.finish()
	})
}

func TestReorderAllocs(t *testing.T) {
	r := NewReorder[[]byte](0, 0)
	r.SetHold(10 * ms)
	buf := make([]byte, 1200)
	out := make([][]byte, 0, 64)
	var seq uint64
	var now time.Duration
	allocs := testing.AllocsPerRun(1000, func() {
		seq += 4
		now += ms
		out = r.Push(out[:0], now, seq+1, len(buf), buf)
		out = r.Push(out[:0], now, seq+3, len(buf), buf)
		out = r.Bypass(out[:0], seq+2, buf)
		out = r.Push(out[:0], now, seq, len(buf), buf)
		out = r.Expire(out[:0], now)
	})
	if allocs != 0 {
		t.Errorf("Reorder allocates %v times per run", allocs)
	}
}

// BenchmarkReorder pushes packets of two paths, one of them 8 packets
// behind the other, as striping over paths of unequal delay does.
func BenchmarkReorder(b *testing.B) {
	r := NewReorder[int](0, 0)
	r.SetHold(50 * ms)
	out := make([]int, 0, 64)
	b.ReportAllocs()
	var now time.Duration
	for i := 0; b.Loop(); i++ {
		seq := uint64(i)
		if i%2 == 0 && i >= 16 {
			seq -= 16 // the slow path's packet sent 8 of its own earlier
		} else if i%2 == 0 {
			continue
		}
		now += 10 * time.Microsecond
		out = r.Push(out[:0], now, seq, 1200, i)
	}
}

// TestReorderSimulation runs a sender striping packets over a 10 ms and a
// 50 ms path, each losing one packet, and a receiver that calls Expire at
// the deadline, in virtual time. Packets come out in order, and the
// packets behind a loss wait exactly the hold. With Passed (the receiver
// tells the buffer what each path has delivered), a loss is given up on
// as soon as the slow path has passed it: the packets behind it wait only
// as long as for reordering.
func TestReorderSimulation(t *testing.T) {
	for _, usePassed := range []bool{false, true} {
		t.Run(fmt.Sprint("passed=", usePassed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { reorderSimulation(t, usePassed) })
		})
	}
}

func reorderSimulation(t *testing.T, usePassed bool) {
	start := time.Now()
	now := func() time.Duration { return time.Since(start) }
	paths := []PathState{{Up: true, RTT: 20 * ms}, {Up: true, RTT: 100 * ms}}
	delays := []time.Duration{10 * ms, 50 * ms}
	hold := HoldFor(paths)                      // 80 ms + minHold: the RTT spread, for asymmetric paths
	const n, lostSlow, lostFast = 400, 201, 300 // one packet a millisecond; odd ones on the slow path
	type arrival struct {
		seq  uint64
		path int
		at   time.Duration
	}
	in := make(chan arrival, n)
	var wg sync.WaitGroup
	// The sender: one packet a millisecond, alternating paths.
	wg.Go(func() {
		for seq := uint64(1); seq <= n; seq++ {
			if seq != lostSlow && seq != lostFast {
				path := int(seq % 2)
				time.AfterFunc(delays[path], func() { in <- arrival{seq, path, now()} })
			}
			time.Sleep(ms)
		}
	})
	// The receiver.
	arrived := make(map[uint64]time.Duration)
	released := make(map[uint64]time.Duration)
	var order []uint64
	wg.Go(func() {
		r := NewReorder[uint64](0, 0)
		r.SetHold(hold)
		timer := time.NewTimer(time.Hour)
		var out []uint64
		var highest [2]uint64 // per path
		for len(order) < n-2 {
			select {
			case a := <-in:
				arrived[a.seq] = a.at
				out = r.Push(out[:0], a.at, a.seq, 1000, a.seq)
				highest[a.path] = max(highest[a.path], a.seq)
				if usePassed {
					out = r.Passed(out, min(highest[0], highest[1]))
				}
			case <-timer.C:
				out = r.Expire(out[:0], now())
			}
			for _, seq := range out {
				released[seq] = now()
				order = append(order, seq)
			}
			if d, ok := r.Deadline(); ok {
				timer.Reset(d - now())
			}
		}
		timer.Stop()
	})
	wg.Wait()
	if !slices.IsSorted(order) {
		t.Errorf("released out of order: %v", order)
	}
	// A fast packet waits for its slow predecessor: 40 ms (the one-way
	// spread) less the 1 ms it was sent later.
	if w := released[lostSlow-1] - arrived[lostSlow-1]; w != 39*ms {
		t.Errorf("packet %d waited %v, want 39ms", lostSlow-1, w)
	}
	// 202 came on the fast path; 201 was lost on the slow one, which
	// passes it with 203, 41 ms after 202 arrived.
	want := map[bool]time.Duration{false: hold, true: 41 * ms}[usePassed]
	if w := released[lostSlow+1] - arrived[lostSlow+1]; w != want {
		t.Errorf("packet after the slow path's loss waited %v, want %v", w, want)
	}
	// 302 came on the fast path, as did the lost 300; the slow path
	// passes it with 301, 39 ms after 302 arrived.
	want = map[bool]time.Duration{false: hold, true: 39 * ms}[usePassed]
	if w := released[lostFast+2] - arrived[lostFast+2]; w != want {
		t.Errorf("packet after the fast path's loss waited %v, want %v", w, want)
	}
	// The slow path's packets behind the gap go with the first.
	if released[lostSlow+2] != released[lostSlow+1] {
		t.Errorf("packet %d released at %v, want with %d at %v", lostSlow+2, released[lostSlow+2], lostSlow+1, released[lostSlow+1])
	}
}

// TestReorderHoldAdapts: a packet that comes after its gap was given up
// on at the deadline lengthens the hold to 9/8 of how late it was (from
// the start of the wait), and so does a gap filled after a long wait; the
// measured spread halves every spreadHalfLife without new samples, and
// never holds packets while the base hold is 0.
func TestReorderHoldAdapts(t *testing.T) {
	r := NewReorder[uint64](0, 0)
	r.SetHold(10 * ms)
	r.Push(nil, 0, 1, 100, 1)
	r.Push(nil, 0, 3, 100, 3)
	if out := r.Expire(nil, 10*ms); !slices.Equal(out, []uint64{3}) {
		t.Fatalf("Expire released %v, want [3]", out)
	}
	r.Push(nil, 25*ms, 2, 100, 2) // 25 ms after 3 arrived
	if got, want := r.Hold(), 25*ms+25*ms/8; got != want {
		t.Fatalf("Hold after a packet 25 ms late = %v, want %v", got, want)
	}
	// A gap now waited for 27 ms is filled, not given up.
	r.Push(nil, 30*ms, 5, 100, 5)
	if out := r.Expire(nil, 57*ms); len(out) != 0 {
		t.Fatalf("Expire at 27 ms released %v", out)
	}
	if out := r.Push(nil, 57*ms, 4, 100, 4); !slices.Equal(out, []uint64{4, 5}) {
		t.Fatalf("released %v, want [4 5]", out)
	}
	if late := r.Stats().Late; late != 1 {
		t.Errorf("Late = %d, want 1", late)
	}
	// No reordering for two half-lives: a quarter of the spread is left.
	r.Push(nil, 57*ms+2*spreadHalfLife, 6, 100, 6)
	if got, want := r.Spread(), (27*ms)/4; got < want-ms/10 || got > want+ms/10 {
		t.Errorf("Spread after two half-lives = %v, want about %v", got, want)
	}
	if r.Hold() != 10*ms {
		t.Errorf("Hold = %v, want the base again", r.Hold())
	}
	r.SetHold(0)
	if r.Hold() != 0 {
		t.Errorf("Hold with base 0 = %v, want 0", r.Hold())
	}
}

// TestReorderSpill: a sender puts every fourth packet on an idle path
// and the rest behind a 50 ms queue on a path of the same RTT, as a
// failover sender spills a full path's excess: the RTT spread is nothing,
// the real spread 50 ms. The buffer releases the first packets late, then
// measures the spread and releases everything in order.
func TestReorderSpill(t *testing.T) {
	const n = 1000 // one packet a millisecond
	type arrival struct {
		at  time.Duration
		seq uint64
	}
	var arrivals []arrival
	for seq := uint64(1); seq <= n; seq++ {
		at := time.Duration(seq)*ms + 10*ms
		if seq%4 != 0 {
			at += 50 * ms
		}
		arrivals = append(arrivals, arrival{at, seq})
	}
	slices.SortStableFunc(arrivals, func(a, b arrival) int { return int(a.at - b.at) })

	r := NewReorder[uint64](0, 0)
	r.SetHold(HoldFor([]PathState{{Up: true, RTT: 20 * ms}, {Up: true, RTT: 20 * ms}}))
	var order []uint64
	lateBefore, learnt := uint64(0), false
	for _, a := range arrivals {
		for d, ok := r.Deadline(); ok && d <= a.at; d, ok = r.Deadline() {
			order = r.Expire(order, d)
		}
		if a.at >= 200*ms && !learnt {
			lateBefore, learnt = r.Stats().Late, true
		}
		order = r.Push(order, a.at, a.seq, 1000, a.seq)
	}
	order = r.Expire(order, time.Hour)
	if lateBefore == 0 {
		t.Error("no packet was late while the buffer learnt the spread: the test shows nothing")
	}
	if late := r.Stats().Late - lateBefore; late != 0 {
		t.Errorf("%d packets late after the first 200 ms (hold %v), want 0", late, r.Hold())
	}
	if len(order) != n {
		t.Errorf("released %d packets, want %d", len(order), n)
	}
	if i := slices.Index(order, 300); i < 0 || !slices.IsSorted(order[i:]) {
		t.Errorf("released out of order after the first 300 ms")
	}
}
