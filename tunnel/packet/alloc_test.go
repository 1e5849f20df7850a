package packet

import (
	"net/netip"
	"testing"
)

func TestNoAllocs(t *testing.T) {
	v6 := ipv6("2001:db8::1", "2001:db8::2", 0, protoTCP, tcp(1, 2, flagSYN, synOpts(1440), nil), hopByHop(), destOpts(1))
	buf := make([]byte, len(v6))
	dst := make([]byte, MaxTooBigLen)
	from := netip.MustParseAddr("fd00::1")
	for _, pkt := range [][]byte{syn4, v6, udp6} {
		info, _ := Parse(pkt)
		for name, f := range map[string]func(){
			"Parse":    func() { info, _ = Parse(pkt) },
			"FlowHash": func() { _ = FlowHash(&info, 42) },
			"ClampMSS": func() { copy(buf, pkt); ClampMSS(buf[:len(pkt)], 1000) },
			"TooBig":   func() { _, _ = TooBig(dst, pkt, 1280, from) },
		} {
			if n := testing.AllocsPerRun(100, f); n != 0 {
				t.Errorf("%s allocates %v times", name, n)
			}
		}
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		_, _ = Parse(syn6)
	}
}

func BenchmarkFlowHash(b *testing.B) {
	info, _ := Parse(syn6)
	for b.Loop() {
		_ = FlowHash(&info, 0)
	}
}

func BenchmarkClampMSS(b *testing.B) {
	buf := make([]byte, len(syn4))
	for b.Loop() {
		copy(buf, syn4)
		ClampMSS(buf, 1360)
	}
}
