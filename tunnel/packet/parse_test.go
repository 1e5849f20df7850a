package packet

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	a4, b4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	a6, b6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:1::2")
	tcpSeg := tcp(1000, 80, flagSYN|flagACK, synOpts(1460), payload(10))
	udpSeg := udp(5353, 53, payload(40))
	trailing := append(append([]byte{}, udp4...), 0xff, 0xff, 0xff)
	tinyFirst := ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcpSeg[:8], v4opts{more: true})

	tests := []struct {
		name string
		pkt  []byte
		want Info
	}{
		{"v4 SYN", syn4, Info{Version: 4, Src: a4, Dst: b4, Proto: protoTCP, SrcPort: 40000, DstPort: 443,
			Len: len(syn4), HdrLen: 20, TCPFlags: flagSYN}},
		{"v4 UDP DSCP EF", udp4, Info{Version: 4, Src: a4, Dst: b4, Proto: protoUDP, SrcPort: 5353, DstPort: 53,
			DSCP: 46, Len: len(udp4), HdrLen: 20}},
		{"v4 trailing bytes", trailing, Info{Version: 4, Src: a4, Dst: b4, Proto: protoUDP, SrcPort: 5353, DstPort: 53,
			DSCP: 46, Len: len(udp4), HdrLen: 20}},
		{"v4 ICMP", ping4, Info{Version: 4, Src: a4, Dst: b4, Proto: protoICMP, Len: len(ping4), HdrLen: 20}},
		{"v4 options", ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcpSeg, v4opts{options: []byte{1, 1, 1, 0, 1, 1, 1, 0}}),
			Info{Version: 4, Src: a4, Dst: b4, Proto: protoTCP, SrcPort: 1000, DstPort: 80,
				Len: 28 + len(tcpSeg), HdrLen: 28, TCPFlags: flagSYN | flagACK}},
		{"v4 first fragment", ipv4("192.0.2.1", "198.51.100.2", protoUDP, udpSeg[:24], v4opts{more: true}),
			Info{Version: 4, Src: a4, Dst: b4, Proto: protoUDP, SrcPort: 5353, DstPort: 53, Len: 44, HdrLen: 20, Fragment: true}},
		{"v4 tiny first fragment", tinyFirst,
			Info{Version: 4, Src: a4, Dst: b4, Proto: protoTCP, Len: 28, HdrLen: 20, Fragment: true}},
		{"v4 last fragment", ipv4("192.0.2.1", "198.51.100.2", protoUDP, udpSeg[24:], v4opts{offset: 3}),
			Info{Version: 4, Src: a4, Dst: b4, Proto: protoUDP, Len: 20 + 24, HdrLen: 20, Fragment: true}},
		{"v6 SYN", syn6, Info{Version: 6, Src: a6, Dst: b6, Proto: protoTCP, SrcPort: 40000, DstPort: 443,
			Len: len(syn6), HdrLen: 40, TCPFlags: flagSYN}},
		{"v6 UDP DSCP EF", udp6, Info{Version: 6, Src: a6, Dst: b6, Proto: protoUDP, SrcPort: 5353, DstPort: 53,
			DSCP: 46, Len: len(udp6), HdrLen: 40}},
		{"v6 ICMPv6", ping6, Info{Version: 6, Src: a6, Dst: b6, Proto: protoICMPv6, Len: len(ping6), HdrLen: 40}},
		{"v6 ext headers", ipv6("2001:db8::1", "2001:db8:1::2", 0, protoTCP, tcpSeg, hopByHop(), destOpts(1), routing(), authHdr(), destOpts(0)),
			Info{Version: 6, Src: a6, Dst: b6, Proto: protoTCP, SrcPort: 1000, DstPort: 80,
				Len: 40 + 8 + 16 + 8 + 24 + 8 + len(tcpSeg), HdrLen: 40 + 8 + 16 + 8 + 24 + 8, TCPFlags: flagSYN | flagACK}},
		{"v6 atomic fragment", ipv6("2001:db8::1", "2001:db8:1::2", 0, protoUDP, udpSeg, fragHdr(0, false)),
			Info{Version: 6, Src: a6, Dst: b6, Proto: protoUDP, SrcPort: 5353, DstPort: 53, Len: 48 + len(udpSeg), HdrLen: 48}},
		{"v6 first fragment", ipv6("2001:db8::1", "2001:db8:1::2", 0, protoUDP, udpSeg[:24], hopByHop(), fragHdr(0, true)),
			Info{Version: 6, Src: a6, Dst: b6, Proto: protoUDP, SrcPort: 5353, DstPort: 53, Len: 56 + 24, HdrLen: 56, Fragment: true}},
		{"v6 later fragment", ipv6("2001:db8::1", "2001:db8:1::2", 0, protoUDP, udpSeg[24:], fragHdr(3, false), destOpts(0)),
			Info{Version: 6, Src: a6, Dst: b6, Proto: protoDestOpts, Len: 48 + 8 + 24, HdrLen: 48, Fragment: true}},
		{"v6 no next header", ipv6("2001:db8::1", "2001:db8:1::2", 0, 59, nil),
			Info{Version: 6, Src: a6, Dst: b6, Proto: 59, Len: 40, HdrLen: 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.pkt)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Errorf("Parse =\n%+v, want\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	set := func(b []byte, at int, v ...byte) []byte {
		b = append([]byte{}, b...)
		copy(b[at:], v)
		return b
	}
	tooMany := []ext{}
	for range maxExtHeaders + 1 {
		tooMany = append(tooMany, destOpts(0))
	}
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 0", make([]byte, 40), ErrVersion},
		{"version 5", set(udp4, 0, 0x55), ErrVersion},
		{"v4 short header", udp4[:19], ErrTruncated},
		{"v4 IHL 4", set(udp4, 0, 0x44), ErrHeader},
		{"v4 total < IHL", set(udp4, 2, 0, 19), ErrHeader},
		{"v4 total > len", udp4[:len(udp4)-1], ErrTruncated},
		{"v4 IHL > total", set(udp4[:24], 0, 0x47, 0, 0, 24), ErrHeader},
		{"v4 TCP short", ipv4("192.0.2.1", "198.51.100.2", protoTCP, make([]byte, 19), v4opts{}), ErrTruncated},
		{"v4 UDP short", ipv4("192.0.2.1", "198.51.100.2", protoUDP, make([]byte, 7), v4opts{}), ErrTruncated},
		{"v6 short header", udp6[:39], ErrTruncated},
		{"v6 payload > len", udp6[:len(udp6)-1], ErrTruncated},
		{"v6 TCP short", ipv6("2001:db8::1", "2001:db8::2", 0, protoTCP, make([]byte, 19)), ErrTruncated},
		{"v6 ext truncated", ipv6("2001:db8::1", "2001:db8::2", 0, protoUDP, nil, ext{protoDestOpts, []byte{0}}), ErrTruncated},
		{"v6 ext length overflow", set(ipv6("2001:db8::1", "2001:db8::2", 0, 59, nil, destOpts(0)), 41, 1), ErrTruncated},
		{"v6 frag truncated", ipv6("2001:db8::1", "2001:db8::2", 0, 59, nil, ext{protoFragment, []byte{0, 0, 0, 0}}), ErrTruncated},
		{"v6 AH truncated", ipv6("2001:db8::1", "2001:db8::2", 0, 59, nil, ext{protoAH, []byte{0, 4, 0, 0, 0, 0, 0, 0}}), ErrTruncated},
		{"v6 too many ext", ipv6("2001:db8::1", "2001:db8::2", 0, 59, nil, tooMany...), ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.pkt)
			if !errors.Is(err, tt.want) {
				t.Errorf("Parse: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestParsePrefixes parses every prefix of real packets: all must fail
// (the length fields say they are longer) without panicking.
func TestParsePrefixes(t *testing.T) {
	for _, pkt := range [][]byte{syn4, syn6, udp4, udp6, ping4, ping6} {
		for n := range len(pkt) {
			if _, err := Parse(pkt[:n]); err == nil {
				t.Errorf("Parse(%x) succeeded on a prefix", pkt[:n])
			}
		}
	}
}

func TestFlowHash(t *testing.T) {
	base, _ := Parse(syn4)
	h := FlowHash(&base, 0)
	if h != FlowHash(&base, 0) {
		t.Fatal("FlowHash not deterministic")
	}
	// A golden value: the hash must be the same in every process, so that
	// both ends of a tunnel could agree on it.
	const golden = 0xb25dd0d08f5ceff5
	if h != golden {
		t.Errorf("FlowHash = %#x, want %#x", h, uint64(golden))
	}
	mods := map[string]func(*Info){
		"seed":    nil,
		"src":     func(i *Info) { i.Src = netip.MustParseAddr("192.0.2.9") },
		"dst":     func(i *Info) { i.Dst = netip.MustParseAddr("198.51.100.9") },
		"v4in6":   func(i *Info) { i.Src = netip.AddrFrom16(i.Src.As16()) },
		"proto":   func(i *Info) { i.Proto = protoUDP },
		"sport":   func(i *Info) { i.SrcPort++ },
		"dport":   func(i *Info) { i.DstPort++ },
		"swapped": func(i *Info) { i.SrcPort, i.DstPort = i.DstPort, i.SrcPort },
	}
	seen := map[uint64]string{h: "base"}
	for name, mod := range mods {
		info, seed := base, uint64(0)
		if mod == nil {
			seed = 1
		} else {
			mod(&info)
		}
		got := FlowHash(&info, seed)
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: same hash as %s", name, prev)
		}
		seen[got] = name
	}

	// DSCP, length and flags are not part of the flow.
	other := base
	other.DSCP, other.Len, other.TCPFlags = 10, 1000, flagACK
	if FlowHash(&other, 0) != h {
		t.Error("FlowHash depends on more than the 5-tuple")
	}
	// All fragments of a datagram hash alike.
	first, later := base, base
	first.Fragment, later.Fragment = true, true
	later.SrcPort, later.DstPort = 0, 0
	if FlowHash(&first, 0) != FlowHash(&later, 0) {
		t.Error("fragments of one datagram hash differently")
	}
}
