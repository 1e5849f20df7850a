package scheduler

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refWindow is the reference model of Window: it remembers every sequence
// number it accepted.
type refWindow struct {
	last uint64
	seen map[uint64]bool
}

func newRefWindow() *refWindow { return &refWindow{seen: map[uint64]bool{}} }

func (r *refWindow) Accept(seq uint64) bool {
	if seq < r.last && r.last-seq > WindowSize || r.seen[seq] {
		return false
	}
	r.seen[seq] = true
	r.last = max(r.last, seq)
	return true
}

func TestWindow(t *testing.T) {
	const W = WindowSize
	type step struct {
		seq  uint64
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"zero first", []step{{0, true}, {0, false}, {1, true}, {1, false}, {0, false}}},
		{"in order", []step{{1, true}, {2, true}, {3, true}, {4, true}, {5, true}}},
		{"duplicates", []step{{1, true}, {1, false}, {2, true}, {1, false}, {2, false}}},
		{"reordered", []step{{5, true}, {3, true}, {4, true}, {1, true}, {2, true}, {0, true}, {3, false}, {6, true}}},
		{"across blocks", []step{{130, true}, {63, true}, {64, true}, {127, true}, {128, true}, {64, false}, {129, true}}},
		{"edge", []step{{W + 10, true}, {10, true}, {9, false}, {10, false}, {11, true}}},
		{"edge from zero", []step{{W, true}, {0, true}, {W + 1, true}, {1, true}, {0, false}}},
		{"just past edge", []step{{W + 1, true}, {0, false}, {1, true}}},
		{"edge after slide", []step{{5, true}, {5 + W, true}, {5, false}, {6, true}, {6 + W, true}, {6, false}}},
		{"big jump", []step{{1, true}, {2, true}, {1 << 40, true}, {1, false}, {2, false}, {1<<40 - 1, true}, {1 << 40, false}}},
		{"jump clears old bits", []step{
			// Same ring slot as seq 7, one ring and more later.
			{7, true}, {7 + 128*64, true}, {7 + 2*128*64, true}, {7 + 128*64, false},
			{7 + 2*128*64 - 1, true}, {7 + 2*128*64 - W, true}, {7 + 2*128*64 - W - 1, false},
		}},
		{"slide by one block reuses slot", []step{{5, true}, {5 + 127*64, true}, {5 + 128*64, true}, {5 + 128*64 - W, true}, {5, false}}},
		{"jump of exactly one ring", []step{{100, true}, {100 + 128*64, true}, {100 + 128*64 - W, true}, {100 + 64*128 - 64, true}}},
		{"max", []step{{math.MaxUint64, true}, {math.MaxUint64, false}, {math.MaxUint64 - W, true}, {math.MaxUint64 - W - 1, false}, {0, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w Window
			ref := newRefWindow()
			for i, s := range tt.steps {
				if got := w.Accept(s.seq); got != s.want {
					t.Fatalf("step %d: Accept(%d) = %v, want %v", i, s.seq, got, s.want)
				}
				if got := ref.Accept(s.seq); got != s.want {
					t.Fatalf("step %d: reference Accept(%d) = %v, want %v", i, s.seq, got, s.want)
				}
			}
		})
	}
}

func TestWindowReset(t *testing.T) {
	var w Window
	for seq := range uint64(100) {
		w.Accept(seq * 97)
	}
	w.Accept(1 << 50)
	w.Reset()
	for seq := range uint64(100) {
		if !w.Accept(seq * 97) {
			t.Fatalf("Accept(%d) after Reset = false", seq*97)
		}
	}
}

// TestWindowRandom checks Window against the reference model on streams
// mixing in-order, reordered, duplicated, stale and far-ahead seqs.
func TestWindowRandom(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var w Window
		ref := newRefWindow()
		var next uint64
		for i := range 50_000 {
			var seq uint64
			switch r := rng.IntN(100); {
			case r < 50: // next in order
				seq = next
				next++
			case r < 75: // reordered, around the window edge at most
				seq = ref.last - min(ref.last, rng.Uint64N(WindowSize+100))
			case r < 90: // ahead by a little
				seq = ref.last + rng.Uint64N(3*64)
			case r < 95: // exactly at the edge
				seq = ref.last - min(ref.last, WindowSize+rng.Uint64N(3)-1)
			case r < 99: // ahead by up to a few rings
				seq = ref.last + rng.Uint64N(4*ringBlocks*blockBits)
			default: // huge jump
				seq = ref.last + rng.Uint64N(1<<40)
			}
			if got, want := w.Accept(seq), ref.Accept(seq); got != want {
				t.Fatalf("seed %d op %d: Accept(%d) = %v, want %v (last %d)", seed, i, seq, got, want, ref.last)
			}
			next = max(next, ref.last-min(ref.last, 50))
		}
	}
}

func FuzzWindow(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 3, 2, 1, 0})
	f.Add([]byte{0xff, 0x1f, 0xc0, 0, 0x1f, 0xc0, 0, 0x1f, 0xc1, 1})
	f.Add(binary.BigEndian.AppendUint64([]byte{0xfe}, math.MaxUint64))
	f.Fuzz(func(t *testing.T, data []byte) {
		var w Window
		ref := newRefWindow()
		for len(data) > 0 {
			var seq uint64
			seq, data = fuzzSeq(ref.last, data)
			if got, want := w.Accept(seq), ref.Accept(seq); got != want {
				t.Fatalf("Accept(%d) = %v, want %v (last %d)", seq, got, want, ref.last)
			}
		}
	})
}

// fuzzSeq decodes one seq from data, relative to last, and returns the rest
// of data. An op byte selects how the following bytes are read, so that
// small fuzz inputs reach reordering, window edges and big jumps.
func fuzzSeq(last uint64, data []byte) (uint64, []byte) {
	op, data := data[0], data[1:]
	switch op >> 6 {
	case 0: // small absolute seq
		return uint64(op & 0x3f), data
	case 1: // ahead of last
		d, rest := take(data, 2)
		return last + d, rest
	case 2: // behind last, around the edge (delta up to 2^16)
		d, rest := take(data, 2)
		return last - min(last, d), rest
	default: // any absolute seq
		return take(data, 8)
	}
}

// take decodes up to n big-endian bytes from data, and returns the rest.
func take(data []byte, n int) (uint64, []byte) {
	var b [8]byte
	n = min(n, len(data))
	copy(b[8-n:], data[:n])
	return binary.BigEndian.Uint64(b[:]), data[n:]
}

func TestWindowAllocs(t *testing.T) {
	var w Window
	var seq uint64
	allocs := testing.AllocsPerRun(1000, func() {
		seq += 3
		w.Accept(seq)
		w.Accept(seq - 2)
	})
	if allocs != 0 {
		t.Errorf("Accept allocates %v times per run", allocs)
	}
}

func BenchmarkWindowAccept(b *testing.B) {
	b.Run("in-order", func(b *testing.B) {
		var w Window
		b.ReportAllocs()
		for i := uint64(0); b.Loop(); i++ {
			w.Accept(i)
		}
	})
	b.Run("reordered", func(b *testing.B) {
		var w Window
		b.ReportAllocs()
		for i := uint64(0); b.Loop(); i++ {
			w.Accept(i ^ 7) // out of order within blocks of 8
		}
	})
	b.Run("duplicated", func(b *testing.B) {
		var w Window
		b.ReportAllocs()
		for i := uint64(0); b.Loop(); i++ {
			w.Accept(i / 2) // every seq twice, as on two paths
		}
	})
}

func TestWindowGaps(t *testing.T) {
	var w Window
	for _, seq := range []uint64{1, 2, 5, 6, 9, 10} {
		w.Accept(seq)
	}
	tests := []struct {
		from        uint64
		limit       int
		want        [][2]uint64
		wantCovered uint64
	}{
		{0, 10, [][2]uint64{{0, 0}, {3, 4}, {7, 8}}, 0},
		{4, 10, [][2]uint64{{4, 4}, {7, 8}}, 4},
		{0, 1, [][2]uint64{{7, 8}}, 5}, // only the newest: 3 and 4 are not accounted for
		{0, 0, nil, 9},
		{10, 5, nil, 10},
		{20, 5, nil, 10},
	}
	for _, tt := range tests {
		got, covered := w.Gaps(nil, tt.from, tt.limit)
		if !slices.Equal(got, tt.want) || covered != tt.wantCovered {
			t.Errorf("Gaps(from %d, limit %d) = %v, %d; want %v, %d", tt.from, tt.limit, got, covered, tt.want, tt.wantCovered)
		}
	}
}

// TestWindowGapsRandom checks Gaps against the reference model: the ranges
// ascend, hold only unseen seqs, and with what was seen account for every
// seq from the returned one up to the highest.
func TestWindowGapsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 200 {
		var w Window
		ref := newRefWindow()
		base := rng.Uint64N(1 << 40)
		for range rng.IntN(3 * WindowSize) {
			seq := base + rng.Uint64N(2*WindowSize)
			w.Accept(seq)
			ref.Accept(seq)
		}
		from := base + rng.Uint64N(2*WindowSize)
		limit := rng.IntN(50)
		gaps, covered := w.Gaps(nil, from, limit)
		if len(gaps) > limit {
			t.Fatalf("run %d: %d ranges, limit %d", run, len(gaps), limit)
		}
		if covered < from && ref.last > from || ref.last > WindowSize && covered < ref.last-WindowSize {
			t.Fatalf("run %d: covered from %d, asked from %d, highest %d", run, covered, from, ref.last)
		}
		inGap := map[uint64]bool{}
		prev := uint64(0)
		for i, g := range gaps {
			if g[0] > g[1] || i > 0 && g[0] <= prev+1 || g[0] < covered || g[1] >= ref.last {
				t.Fatalf("run %d: bad range %v in %v (covered %d, highest %d)", run, g, gaps, covered, ref.last)
			}
			prev = g[1]
			for seq := g[0]; seq <= g[1]; seq++ {
				inGap[seq] = true
			}
		}
		for seq := covered; seq < ref.last; seq++ {
			if ref.seen[seq] == inGap[seq] {
				t.Fatalf("run %d: seq %d seen %v, in a gap %v", run, seq, ref.seen[seq], inGap[seq])
			}
		}
	}
}
