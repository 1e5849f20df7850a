package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// checkTooBig parses the ICMP error out of dst[:n] and checks it against
// the invoking packet pkt.
func checkTooBig(t *testing.T, out, pkt []byte, mtu int, from netip.Addr) {
	t.Helper()
	info, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(TooBig output): %v", err)
	}
	orig, _ := Parse(pkt)
	if info.Len != len(out) || info.Src != from || info.Dst != orig.Src {
		t.Errorf("got %+v, want length %d, %v -> %v", info, len(out), from, orig.Src)
	}
	msg := out[info.HdrLen:]
	quote := msg[8:]
	if !bytes.Equal(quote, pkt[:len(quote)]) {
		t.Errorf("quoted packet differs from the invoking packet")
	}
	if !l4Valid(out) {
		t.Errorf("ICMP checksum does not verify")
	}
	if info.Version == 4 {
		if refChecksum(out[:20]) != 0 {
			t.Errorf("IPv4 header checksum does not verify")
		}
		if out[8] != 64 || out[6]&0x20 != 0 || info.Fragment {
			t.Errorf("TTL %d, flags %#x", out[8], out[6])
		}
		if info.Proto != protoICMP || msg[0] != 3 || msg[1] != 4 {
			t.Errorf("proto %d type %d code %d, want 1, 3, 4", info.Proto, msg[0], msg[1])
		}
		if got := int(binary.BigEndian.Uint16(msg[6:])); got != mtu {
			t.Errorf("Next-Hop MTU = %d, want %d", got, mtu)
		}
		if want := min(576, 28+orig.Len); len(out) != want {
			t.Errorf("length %d, want %d", len(out), want)
		}
		return
	}
	if out[7] != 64 || info.Proto != protoICMPv6 || msg[0] != 2 || msg[1] != 0 {
		t.Errorf("hop limit %d proto %d type %d code %d, want 64, 58, 2, 0", out[7], info.Proto, msg[0], msg[1])
	}
	if got := int(binary.BigEndian.Uint32(msg[4:])); got != mtu {
		t.Errorf("MTU = %d, want %d", got, mtu)
	}
	if want := min(1280, 48+orig.Len); len(out) != want {
		t.Errorf("length %d, want %d", len(out), want)
	}
}

func TestTooBig(t *testing.T) {
	from4 := netip.MustParseAddr("100.64.0.1")
	from6 := netip.MustParseAddr("fd00::1")
	big4 := ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcp(40000, 443, flagACK, nil, payload(1460)), v4opts{df: true})
	big6 := ipv6("2001:db8::1", "2001:db8:1::2", 0, protoUDP, udp(4000, 443, payload(1452)))
	frag6 := ipv6("2001:db8::1", "2001:db8:1::2", 0, protoUDP, payload(1400), fragHdr(100, true))
	mcast6 := ipv6("2001:db8::1", "ff05::1:3", 0, protoUDP, udp(4000, 443, payload(1400)))
	v4opt := ipv4("192.0.2.1", "198.51.100.2", protoUDP, udp(1, 2, payload(1400)), v4opts{df: true, options: []byte{1, 1, 1, 0}})
	tests := []struct {
		name string
		pkt  []byte
		mtu  int
		from netip.Addr
	}{
		{"v4 TCP", big4, 1400, from4},
		{"v4 with options", v4opt, 1400, from4},
		{"v4 small", syn4, 68, from4},
		{"v4 echo request", ping4, 80, from4},
		{"v4 first fragment", ipv4("192.0.2.1", "198.51.100.2", protoUDP, payload(1000), v4opts{df: true, more: true}), 576, from4},
		{"v6 UDP", big6, 1280, from6},
		{"v6 large MTU", big6, 1 << 20, from6},
		{"v6 small", syn6, 1280, from6},
		{"v6 echo request", ping6, 1280, from6},
		{"v6 later fragment", frag6, 1300, from6},
		{"v6 to multicast", mcast6, 1300, from6},
	}
	dst := make([]byte, MaxTooBigLen)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := append([]byte{}, tt.pkt...)
			n, err := TooBig(dst, pkt, tt.mtu, tt.from)
			if err != nil {
				t.Fatalf("TooBig: %v", err)
			}
			if !bytes.Equal(pkt, tt.pkt) {
				t.Error("TooBig changed the packet")
			}
			checkTooBig(t, dst[:n], pkt, tt.mtu, tt.from)
		})
	}
}

func TestTooBigRefused(t *testing.T) {
	from4 := netip.MustParseAddr("100.64.0.1")
	from6 := netip.MustParseAddr("fd00::1")
	tcp4 := func(src, dst string, o v4opts) []byte {
		return ipv4(src, dst, protoTCP, tcp(1, 2, flagACK, nil, payload(100)), o)
	}
	udp6 := func(src, dst string, exts ...ext) []byte {
		return ipv6(src, dst, 0, protoUDP, udp(1, 2, payload(100)), exts...)
	}
	icmp4 := func(typ uint8) []byte {
		return ipv4("192.0.2.1", "198.51.100.2", protoICMP, icmpMsg(typ, 0, syn4), v4opts{df: true})
	}
	icmp6 := func(typ uint8) []byte {
		return ipv6("2001:db8::1", "2001:db8::2", 0, protoICMPv6, icmpMsg(typ, 0, syn6))
	}
	df := v4opts{df: true}
	tests := []struct {
		name string
		pkt  []byte
		mtu  int
		from netip.Addr
		want error
	}{
		{"v4 DF clear", tcp4("192.0.2.1", "198.51.100.2", v4opts{}), 576, from4, ErrMayFragment},
		{"v4 DF clear fragment", tcp4("192.0.2.1", "198.51.100.2", v4opts{more: true}), 576, from4, ErrMayFragment},
		{"v4 dest unreachable", icmp4(3), 576, from4, ErrNoICMP},
		{"v4 time exceeded", icmp4(11), 576, from4, ErrNoICMP},
		{"v4 redirect", icmp4(5), 576, from4, ErrNoICMP},
		{"v4 parameter problem", icmp4(12), 576, from4, ErrNoICMP},
		{"v4 ICMP without type", ipv4("192.0.2.1", "198.51.100.2", protoICMP, nil, df), 576, from4, ErrNoICMP},
		{"v4 later fragment", tcp4("192.0.2.1", "198.51.100.2", v4opts{df: true, offset: 10}), 576, from4, ErrNoICMP},
		{"v4 from 0.0.0.0", tcp4("0.0.0.0", "198.51.100.2", df), 576, from4, ErrNoICMP},
		{"v4 from loopback", tcp4("127.0.0.1", "198.51.100.2", df), 576, from4, ErrNoICMP},
		{"v4 from multicast", tcp4("224.0.0.5", "198.51.100.2", df), 576, from4, ErrNoICMP},
		{"v4 from broadcast", tcp4("255.255.255.255", "198.51.100.2", df), 576, from4, ErrNoICMP},
		{"v4 from class E", tcp4("240.0.0.1", "198.51.100.2", df), 576, from4, ErrNoICMP},
		{"v4 to multicast", tcp4("192.0.2.1", "239.1.2.3", df), 576, from4, ErrNoICMP},
		{"v4 to broadcast", tcp4("192.0.2.1", "255.255.255.255", df), 576, from4, ErrNoICMP},
		{"v4 from IPv6", syn4, 576, from6, ErrFamily},
		{"v4 from invalid", syn4, 576, netip.Addr{}, ErrFamily},
		{"v4 MTU too small", syn4, 67, from4, ErrMTU},
		{"v4 MTU too large", syn4, 65536, from4, ErrMTU},
		{"v6 packet too big", icmp6(2), 1280, from6, ErrNoICMP},
		{"v6 dest unreachable", icmp6(1), 1280, from6, ErrNoICMP},
		{"v6 error type 127", icmp6(127), 1280, from6, ErrNoICMP},
		{"v6 redirect", icmp6(137), 1280, from6, ErrNoICMP},
		{"v6 ICMPv6 later fragment", ipv6("2001:db8::1", "2001:db8::2", 0, protoICMPv6, payload(100), fragHdr(1, false)), 1280, from6, ErrNoICMP},
		{"v6 ICMPv6 without type", ipv6("2001:db8::1", "2001:db8::2", 0, protoICMPv6, nil), 1280, from6, ErrNoICMP},
		{"v6 from ::", udp6("::", "2001:db8::2"), 1280, from6, ErrNoICMP},
		{"v6 from ::1", udp6("::1", "2001:db8::2"), 1280, from6, ErrNoICMP},
		{"v6 from multicast", udp6("ff02::1", "2001:db8::2"), 1280, from6, ErrNoICMP},
		{"v6 from IPv4", syn6, 1280, from4, ErrFamily},
		{"v6 from v4-mapped", syn6, 1280, netip.MustParseAddr("::ffff:100.64.0.1"), ErrFamily},
		{"v6 MTU below 1280", syn6, 1279, from6, ErrMTU},
		{"garbage", []byte{0x00, 1, 2, 3}, 1280, from6, ErrVersion},
		{"truncated", syn6[:50], 1280, from6, ErrTruncated},
	}
	dst := make([]byte, MaxTooBigLen)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clear(dst)
			n, err := TooBig(dst, tt.pkt, tt.mtu, tt.from)
			if !errors.Is(err, tt.want) || n != 0 {
				t.Errorf("TooBig = %d, %v; want 0, %v", n, err, tt.want)
			}
			if !bytes.Equal(dst, make([]byte, MaxTooBigLen)) {
				t.Error("TooBig wrote into dst")
			}
		})
	}
	if _, err := TooBig(make([]byte, MaxTooBigLen-1), syn4, 576, from4); err != ErrShortBuffer {
		t.Errorf("short dst: %v, want ErrShortBuffer", err)
	}
}
