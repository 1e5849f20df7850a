package scheduler

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func udp(dport uint16, payload int) Info {
	return Info{Proto: ProtoUDP, Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 40000, DstPort: dport, Payload: payload, Size: 28 + payload}
}

func tcp(dport uint16, payload int, flags uint8) Info {
	return Info{Proto: ProtoTCP, Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 40000, DstPort: dport, Payload: payload, TCPFlags: flags, Size: 40 + max(payload, 0)}
}

func TestIsInteractive(t *testing.T) {
	with := func(i Info, f func(*Info)) Info { f(&i); return i }
	tests := []struct {
		name string
		info Info
		want bool
	}{
		{"DNS query", udp(53, 40), true},
		{"DNS answer", with(udp(40000, 900), func(i *Info) { i.SrcPort = 53 }), true},
		{"DNS over TCP", tcp(53, 300, tcpACK), true},
		{"VoIP", udp(5004, 172), true},
		{"small UDP limit", udp(443, smallUDP), true},
		{"QUIC data", udp(443, 1200), false},
		{"UDP fragment", udp(0, -1), false},
		{"pure ACK", tcp(443, 0, tcpACK), true},
		{"SYN-ACK", tcp(443, 0, tcpSYN|tcpACK), true},
		{"FIN-ACK", tcp(443, 0, tcpFIN|tcpACK), true},
		{"RST-ACK", tcp(443, 0, tcpRST|tcpACK), false},
		{"bare SYN", tcp(443, 0, tcpSYN), false},
		{"TCP data", tcp(443, 1448, tcpACK), false},
		{"TCP unknown payload", tcp(443, -1, tcpACK), false},
		{"EF", with(tcp(443, 1448, tcpACK), func(i *Info) { i.DSCP = 46 }), true},
		{"EF ICMP", Info{Proto: 1, DSCP: 46}, true},
		{"ICMP", Info{Proto: 1, Payload: -1}, false},
	}
	for _, tt := range tests {
		if got := IsInteractive(&tt.info); got != tt.want {
			t.Errorf("%s: IsInteractive = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func testClasses() []Class {
	return []Class{
		{Name: "voice", Mode: Redundant, Copies: 3, DSCP: []uint8{46, 34}},
		{Name: "ssh", Mode: Auto, Interactive: true, Proto: ProtoTCP, Ports: []PortRange{{22, 22}}},
		{Name: "backup", Mode: Flow, Dst: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")}},
		{Name: "games", Mode: Aggregate, Proto: ProtoUDP, DstPorts: []PortRange{{27000, 27100}, {3074, 3074}}},
		{Name: "lan", Mode: Failover, Src: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, SrcPorts: []PortRange{{1000, 2000}}},
	}
}

func TestClassify(t *testing.T) {
	c, err := NewClassifier(testClasses())
	if err != nil {
		t.Fatal(err)
	}
	with := func(i Info, f func(*Info)) Info { f(&i); return i }
	tests := []struct {
		name string
		info Info
		want int
	}{
		{"none", udp(443, 1200), -1},
		{"dscp EF", with(udp(443, 1200), func(i *Info) { i.DSCP = 46 }), 0},
		{"dscp AF41", with(tcp(443, 10, 0), func(i *Info) { i.DSCP = 34 }), 0},
		{"dscp other", with(tcp(443, 10, 0), func(i *Info) { i.DSCP = 10 }), -1},
		{"ssh to", tcp(22, 10, 0), 1},
		{"ssh from", with(tcp(40000, 10, 0), func(i *Info) { i.SrcPort = 22 }), 1},
		{"ssh port on UDP", udp(22, 10), -1},
		{"backup v4", with(tcp(443, 10, 0), func(i *Info) { i.Dst = netip.MustParseAddr("198.51.100.7") }), 2},
		{"backup v4-mapped", with(tcp(443, 10, 0), func(i *Info) { i.Dst = netip.MustParseAddr("::ffff:198.51.100.7") }), 2},
		{"backup v6", with(tcp(443, 10, 0), func(i *Info) { i.Dst = netip.MustParseAddr("2001:db8::1") }), 2},
		{"backup is dst only", with(tcp(443, 10, 0), func(i *Info) { i.Src = netip.MustParseAddr("198.51.100.7") }), -1},
		{"games range", udp(27050, 100), 3},
		{"games single", udp(3074, 100), 3},
		{"games range end", udp(27101, 100), -1},
		{"games is dst only", with(udp(443, 100), func(i *Info) { i.SrcPort = 27050 }), -1},
		{"lan needs both", with(udp(443, 100), func(i *Info) { i.Src = netip.MustParseAddr("10.1.2.3") }), -1},
		{"lan", with(udp(443, 100), func(i *Info) { i.Src = netip.MustParseAddr("10.1.2.3"); i.SrcPort = 1500 }), 4},
		{"first wins", with(tcp(22, 10, 0), func(i *Info) { i.DSCP = 46 }), 0},
	}
	for _, tt := range tests {
		if got := c.Classify(&tt.info); got != tt.want {
			t.Errorf("%s: Classify = %d, want %d", tt.name, got, tt.want)
		}
	}
	if c.Len() != 5 || c.Class(1).Name != "ssh" {
		t.Errorf("Len %d, Class(1) %q", c.Len(), c.Class(1).Name)
	}
}

func TestNewClassifierErrors(t *testing.T) {
	bad := []Class{
		{Name: "a", Mode: "fastest"},
		{Name: "b", DSCP: []uint8{64}},
		{Name: "c", Ports: []PortRange{{10, 5}}},
		{Name: "d", Dst: []netip.Prefix{{}}},
		{Name: "e", Mode: Redundant, Copies: -1},
	}
	for _, cl := range bad {
		if _, err := NewClassifier([]Class{{Name: "ok"}, cl}); err == nil || !strings.Contains(err.Error(), `class 1 ("`+cl.Name+`")`) {
			t.Errorf("class %q: err %v", cl.Name, err)
		}
	}
	// The classifier keeps its own copy.
	cls := testClasses()
	c, _ := NewClassifier(cls)
	cls[1].Ports[0] = PortRange{80, 80}
	if i := tcp(22, 10, 0); c.Classify(&i) != 1 {
		t.Error("classifier shares the caller's slices")
	}
}

func TestMulti(t *testing.T) {
	m, err := NewMulti(Failover, testClasses())
	if err != nil {
		t.Fatal(err)
	}
	paths := []PathState{up(0, 1), up(1, 1), up(2, 1), up(3, 1)}
	voice := udp(5004, 160)
	voice.DSCP = 46
	p := m.Packet(&voice, 7)
	if p.Class != 1 || !p.Interactive || p.Flow != 7 || p.Size != voice.Size {
		t.Errorf("voice Packet = %+v", p)
	}
	if got := m.Pick(nil, p, paths); len(got) != 3 {
		t.Errorf("voice (redundant, 3 copies): Pick = %v", got)
	}
	if n := m.Copies(p); n != 3 {
		t.Errorf("voice (redundant, 3 copies): Copies = %d", n)
	}
	ssh := tcp(22, 100, tcpACK)
	if p := m.Packet(&ssh, 1); p.Class != 2 || !p.Interactive {
		t.Errorf("ssh Packet = %+v", p)
	}
	bulk := tcp(443, 1448, tcpACK)
	p = m.Packet(&bulk, 1)
	if p.Class != 0 || p.Interactive {
		t.Errorf("bulk Packet = %+v", p)
	}
	if got := m.Pick(nil, p, paths); len(got) != 1 || got[0] != 0 {
		t.Errorf("bulk (failover): Pick = %v", got)
	}
	if n := m.Copies(p); n != 0 {
		t.Errorf("bulk (failover): Copies = %d, want 0", n)
	}
	p.Class = 99
	if got := m.Pick(nil, p, paths); len(got) != 1 || got[0] != 0 {
		t.Errorf("class out of range: Pick = %v", got)
	}
	if _, err := NewMulti("bogus", nil); err == nil {
		t.Error("NewMulti(bogus) succeeded")
	}
	if _, err := NewMulti(Auto, []Class{{Mode: "x"}}); err == nil {
		t.Error("NewMulti with a bad class succeeded")
	}
}

func TestClassifyAllocs(t *testing.T) {
	m, _ := NewMulti(Auto, testClasses())
	paths := []PathState{rated(0, 1e6, 20*ms), rated(0, 1e6, 30*ms)}
	infos := []Info{udp(5004, 160), tcp(22, 10, 0), tcp(443, 1448, tcpACK), udp(27050, 100)}
	infos[2].Dst = netip.MustParseAddr("2001:db8::1")
	dst := make([]int, 0, 4)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		info := &infos[i%len(infos)]
		i++
		dst = m.Pick(dst[:0], m.Packet(info, uint64(i)), paths)
	})
	if allocs != 0 {
		t.Errorf("Packet+Pick allocates %v times per run", allocs)
	}
}

func BenchmarkClassify(b *testing.B) {
	m, _ := NewMulti(Auto, testClasses())
	info := tcp(443, 1448, tcpACK)
	info.Dst = netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Packet(&info, 1)
	}
}

// TestMultiCopies: the default scheduler of mode Redundant sends the
// configured number of copies; other modes ignore it.
func TestMultiCopies(t *testing.T) {
	paths := []PathState{up(0, 1), up(1, 1), up(2, 1), up(3, 1)}
	bulk := tcp(443, 1448, tcpACK)
	for _, tt := range []struct {
		mode       Mode
		copies     int
		want       int
		copiesWant int
	}{{Redundant, 3, 3, 3}, {Redundant, 0, DefaultCopies, DefaultCopies}, {Redundant, 9, 4, 9}, {Failover, 3, 1, 0}} {
		m, err := NewMultiCopies(tt.mode, tt.copies, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Pick(nil, m.Packet(&bulk, 1), paths); len(got) != tt.want {
			t.Errorf("%s with %d copies: Pick = %v, want %d paths", tt.mode, tt.copies, got, tt.want)
		}
		// Copies is what the class asks for, however few paths there are.
		if got := m.Copies(m.Packet(&bulk, 1)); got != tt.copiesWant {
			t.Errorf("%s with %d copies: Copies = %d, want %d", tt.mode, tt.copies, got, tt.copiesWant)
		}
	}
	if _, err := NewMultiCopies("bogus", 2, nil); err == nil {
		t.Error("NewMultiCopies(bogus) succeeded")
	}
}

// TestMaySpill: which schedulers may move a flow off its path as that
// path's queue builds, and onto which paths.
func TestMaySpill(t *testing.T) {
	at := func(rtt time.Duration, loss float64, metered bool) PathState {
		s := up(0, 1)
		s.RTT, s.MinRTT, s.Loss, s.Metered = rtt, rtt, loss, metered
		return s
	}
	fast := at(40*time.Millisecond, 0, false)
	near := at(120*time.Millisecond, 0, false)
	far := at(400*time.Millisecond, 0, false)
	lossy := at(40*time.Millisecond, 0.2, false)
	metered := at(40*time.Millisecond, 0, true)
	down := near
	down.Up = false
	lower := near
	lower.Priority = 1
	for _, tt := range []struct {
		mode  Mode
		paths []PathState
		want  bool
	}{
		{Auto, []PathState{fast}, false},
		{Auto, []PathState{fast, near}, true},
		{Auto, []PathState{fast, far}, false},   // beyond the spill limit
		{Auto, []PathState{fast, lossy}, false}, // too lossy to take the excess
		{Auto, []PathState{fast, down}, false},
		{Auto, []PathState{fast, metered}, false}, // a standby while an unmetered path is up
		{Auto, []PathState{fast, lower}, false},   // auto keeps to the best tier
		{Aggregate, []PathState{fast, far}, true},
		{Aggregate, []PathState{fast, down}, false},
		{Failover, []PathState{fast, lower}, true}, // the overflow
		{Failover, []PathState{fast, metered}, false},
		{Flow, []PathState{fast, near}, false},
		{Redundant, []PathState{fast, near}, false},
	} {
		m, err := NewMulti(tt.mode, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.MaySpill(Packet{Size: 1200}, tt.paths, 0); got != tt.want {
			t.Errorf("%s over %d paths (%+v): MaySpill = %v, want %v", tt.mode, len(tt.paths), tt.paths[1:], got, tt.want)
		}
	}
}
