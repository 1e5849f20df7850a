package scheduler

import (
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"failover", Failover, false},
		{"aggregate", Aggregate, false},
		{"redundant", Redundant, false},
		{"flow", Flow, false},
		{"auto", Auto, false},
		{"", Failover, false},
		{"Failover", "", true},
		{"fastest", "", true},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseMode(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNew(t *testing.T) {
	for _, m := range append(Modes, "") {
		if s, err := New(m); s == nil || err != nil {
			t.Errorf("New(%q) = %v, %v", m, s, err)
		}
	}
	if s, err := New("bogus"); s != nil || err == nil {
		t.Errorf("New(bogus) = %v, %v; want error", s, err)
	}
}

func TestUsable(t *testing.T) {
	tests := []struct {
		s    PathState
		want bool
	}{
		{PathState{Up: true, QueueCap: 4}, true},
		{PathState{Up: true, Queued: 3, QueueCap: 4}, true},
		{PathState{Up: true, Queued: 4, QueueCap: 4}, false},
		{PathState{Up: true, Queued: 5, QueueCap: 4}, false},
		{PathState{Up: false, QueueCap: 4}, false},
		{PathState{Up: true, Queued: 100}, true}, // QueueCap 0: unbounded
	}
	for _, tt := range tests {
		if got := tt.s.usable(false); got != tt.want {
			t.Errorf("%+v usable = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// pick is Pick for tests that expect at most one path: it returns the index,
// or -1 for drop.
func pick(t testing.TB, s Scheduler, p Packet, paths []PathState) int {
	t.Helper()
	got := s.Pick(nil, p, paths)
	switch len(got) {
	case 0:
		return -1
	case 1:
		return got[0]
	}
	t.Fatalf("Pick = %v, want at most one path", got)
	return -1
}

func TestPickAppends(t *testing.T) {
	paths := []PathState{up(0, 1), up(0, 1)}
	for _, m := range Modes {
		s, _ := New(m)
		dst := s.Pick([]int{42}, Packet{}, paths)
		if len(dst) < 2 || dst[0] != 42 {
			t.Errorf("%s: Pick([42]) = %v, want [42 x]", m, dst)
		}
		if dst := s.Pick([]int{42}, Packet{}, nil); len(dst) != 1 {
			t.Errorf("%s: Pick([42], no paths) = %v, want [42]", m, dst)
		}
	}
}

// benchPaths are four paths, without estimates (as before the first
// report) and with them.
var benchPaths = map[string][]PathState{
	"unrated": {up(0, 3), up(0, 1), up(1, 2), {Up: false}},
	"rated": {
		with(rated(0, 6.25e6, 20*ms), queued(20)), rated(0, 2.5e6, 60*ms),
		with(rated(0, 1e6, 30*ms), metered), {Up: false},
	},
}

func TestPickAllocs(t *testing.T) {
	for name, paths := range benchPaths {
		for _, m := range Modes {
			s, _ := New(m)
			dst := make([]int, 0, len(paths))
			var flow uint64
			allocs := testing.AllocsPerRun(1000, func() {
				flow++
				dst = s.Pick(dst[:0], Packet{Flow: flow, Size: 1200, Interactive: flow%4 == 0}, paths)
			})
			if allocs != 0 {
				t.Errorf("%s, %s: Pick allocates %v times per run", m, name, allocs)
			}
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, name := range []string{"unrated", "rated"} {
		paths := benchPaths[name]
		for _, m := range Modes {
			b.Run(string(m)+"/"+name, func(b *testing.B) {
				s, _ := New(m)
				dst := make([]int, 0, len(paths))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					dst = s.Pick(dst[:0], Packet{Flow: uint64(i), Size: 1200}, paths)
				}
			})
		}
	}
}

// up is a usable path with the given priority and weight and room in its
// queue.
func up(prio int, weight float64) PathState {
	return PathState{Up: true, Priority: prio, Weight: weight, QueueCap: 64}
}

// full is up, with a full queue.
func full(prio int, weight float64) PathState {
	s := up(prio, weight)
	s.Queued = s.QueueCap
	return s
}

func down(prio int, weight float64) PathState {
	s := up(prio, weight)
	s.Up = false
	return s
}

func TestAskBeforeResend(t *testing.T) {
	const ms = time.Millisecond
	dead := PathState{Up: false, Rate: 6e6, MinRTT: 40 * ms}
	fourG := PathState{Up: true, Rate: 1.25e6, MinRTT: 60 * ms}   // 10 Mbit/s
	slowFar := PathState{Up: true, Rate: 2.5e6, MinRTT: 120 * ms} // 20 Mbit/s, 120 ms
	metered := PathState{Up: true, Rate: 1.25e6, MinRTT: 60 * ms, Metered: true}
	unknown := PathState{Up: true, RTT: 60 * ms}
	tests := []struct {
		name   string
		states []PathState
		bytes  int
		here   bool // failed here
		want   bool
	}{
		{"a round trip of 50 Mbit/s over 10 Mbit/s", []PathState{dead, fourG}, 375_000, false, true},       // 300 ms > 2 x 60 ms
		{"a few packets over 10 Mbit/s", []PathState{dead, fourG}, 100_000, false, false},                  // 80 ms < 2 x 60 ms
		{"far survivor: resend", []PathState{dead, slowFar}, 400_000, false, false},                        // 160 ms < 2 x 120 ms
		{"far survivor, more bytes: ask", []PathState{dead, slowFar}, 700_000, false, true},                // 280 ms > 2 x 120 ms
		{"two survivors carry it sooner", []PathState{dead, fourG, fourG, slowFar}, 600_000, false, false}, // 120 ms, not above 2 x 60 ms
		{"only metered survivors: ask", []PathState{dead, metered}, 10_000, false, true},
		{"metered survivor beside an unmetered one", []PathState{dead, metered, fourG}, 30_000, false, false},
		{"rate unknown: resend", []PathState{dead, unknown}, 375_000, false, false},
		{"no survivor", []PathState{dead}, 375_000, false, false},
		{"failed here: ask", []PathState{dead, slowFar}, 10_000, true, true},
		{"failed here, no survivor", []PathState{dead}, 10_000, true, false},
	}
	for _, tt := range tests {
		if got := AskBeforeResend(tt.states, tt.bytes, tt.here); got != tt.want {
			t.Errorf("%s: AskBeforeResend(%d bytes, failed here %v) = %v, want %v", tt.name, tt.bytes, tt.here, got, tt.want)
		}
	}
}

func TestOnePath(t *testing.T) {
	for _, tt := range []struct {
		up   []bool
		want bool
	}{{nil, false}, {[]bool{true}, true}, {[]bool{false}, false}, {[]bool{true, false}, true},
		{[]bool{false, false, true}, true}, {[]bool{true, true}, false}, {[]bool{true, false, true}, false}} {
		paths := make([]PathState, len(tt.up))
		for i, up := range tt.up {
			paths[i].Up = up
		}
		if got := OnePath(paths); got != tt.want {
			t.Errorf("OnePath(up %v) = %v, want %v", tt.up, got, tt.want)
		}
	}
}
