package packet

import (
	"encoding/binary"
	"net/netip"
)

// This file builds real packets for the tests. Checksums are computed with
// refChecksum, a deliberately naive RFC 1071 implementation independent of
// the package's Checksum, so that the tests can catch its mistakes.

// refChecksum is the Internet checksum of the concatenation of parts, one
// 16-bit word at a time, folding at the end (RFC 1071 §4.1 in Go).
func refChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint64
	for i := 0; i < len(all); i += 2 {
		s += uint64(all[i])<<8 | uint64(all[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// refPseudo is the pseudo-header of RFC 9293 §3.1 (IPv4, 12 bytes) or
// RFC 8200 §8.1 (IPv6, 40 bytes) as bytes.
func refPseudo(src, dst netip.Addr, proto uint8, length int) []byte {
	if src.Is4() {
		p := append(src.AsSlice(), dst.AsSlice()...)
		return append(p, 0, proto, byte(length>>8), byte(length))
	}
	p := append(src.AsSlice(), dst.AsSlice()...)
	return append(p, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
}

// l4ChecksumAt is the offset of the checksum in the upper-layer header.
func l4ChecksumAt(proto uint8) int {
	switch proto {
	case protoTCP:
		return 16
	case protoUDP:
		return 6
	case protoICMP, protoICMPv6:
		return 2
	}
	return -1
}

// l4Valid reports whether the upper-layer checksum of an unfragmented
// packet verifies, recomputed from scratch.
func l4Valid(b []byte) bool {
	info, err := Parse(b)
	if err != nil || info.Fragment {
		return false
	}
	l4 := b[info.HdrLen:info.Len]
	if info.Proto == protoICMP {
		return refChecksum(l4) == 0
	}
	return refChecksum(refPseudo(info.Src, info.Dst, info.Proto, len(l4)), l4) == 0
}

// setL4Checksum fills in the upper-layer checksum of l4, sent from src to
// dst.
func setL4Checksum(l4 []byte, src, dst netip.Addr, proto uint8) {
	at := l4ChecksumAt(proto)
	if at < 0 || len(l4) < at+2 {
		return
	}
	l4[at], l4[at+1] = 0, 0
	var ck uint16
	if proto == protoICMP {
		ck = refChecksum(l4)
	} else {
		ck = refChecksum(refPseudo(src, dst, proto, len(l4)), l4)
	}
	binary.BigEndian.PutUint16(l4[at:], ck)
}

type v4opts struct {
	tos     uint8
	df      bool
	more    bool   // MF flag
	offset  uint16 // in 8-byte units
	options []byte // IP options, a multiple of 4 bytes
}

// ipv4 builds an IPv4 packet around l4, filling in both checksums.
func ipv4(src, dst string, proto uint8, l4 []byte, o v4opts) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	hl := 20 + len(o.options)
	b := make([]byte, hl+len(l4))
	b[0] = 0x40 | byte(hl/4)
	b[1] = o.tos
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	fo := o.offset
	if o.df {
		fo |= 0x4000
	}
	if o.more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = 64
	b[9] = proto
	copy(b[12:], s.AsSlice())
	copy(b[16:], d.AsSlice())
	copy(b[20:], o.options)
	binary.BigEndian.PutUint16(b[10:], refChecksum(b[:hl]))
	copy(b[hl:], l4)
	if !o.more && o.offset == 0 {
		setL4Checksum(b[hl:], s, d, proto)
	}
	return b
}

// ext is an IPv6 extension header; its first byte (Next Header) is filled
// in by ipv6.
type ext struct {
	proto uint8
	body  []byte
}

func hopByHop() ext { return ext{protoHopByHop, []byte{0, 0, 1, 4, 0, 0, 0, 0}} }
func destOpts(units int) ext {
	b := make([]byte, 8*(units+1))
	b[1] = byte(units)
	b[2], b[3] = 1, byte(len(b)-4) // PadN
	return ext{protoDestOpts, b}
}
func routing() ext {
	return ext{protoRouting, []byte{0, 0, 0, 0, 0, 0, 0, 0}} // type 0, segments left 0
}
func fragHdr(offset uint16, more bool) ext {
	fo := offset << 3
	if more {
		fo |= 1
	}
	return ext{protoFragment, []byte{0, 0, byte(fo >> 8), byte(fo), 0xde, 0xad, 0xbe, 0xef}}
}
func authHdr() ext {
	return ext{protoAH, []byte{0, 4, 0, 0, 1, 2, 3, 4, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}} // 24 bytes: (4+2)*4
}

// ipv6 builds an IPv6 packet around l4 with the extension headers exts,
// filling in the upper-layer checksum unless a fragment header is present.
func ipv6(src, dst string, tc uint8, proto uint8, l4 []byte, exts ...ext) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	b := make([]byte, 40, 40+len(l4)+64)
	b[0] = 0x60 | tc>>4
	b[1] = tc << 4
	b[2], b[3] = 0xbe, 0xef // flow label
	b[7] = 64
	copy(b[8:], s.AsSlice())
	copy(b[24:], d.AsSlice())
	nextAt := 6
	frag := false
	for _, e := range exts {
		b[nextAt] = e.proto
		nextAt = len(b)
		b = append(b, e.body...)
		frag = frag || e.proto == protoFragment
	}
	b[nextAt] = proto
	hl := len(b)
	b = append(b, l4...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	if !frag {
		setL4Checksum(b[hl:], s, d, proto)
	}
	return b
}

// tcp builds a TCP header with options opts (padded to 4 bytes with EOL)
// followed by payload.
func tcp(sport, dport uint16, flags uint8, opts []byte, payload []byte) []byte {
	ol := (len(opts) + 3) &^ 3
	b := make([]byte, 20+ol+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x01020304)
	b[12] = byte((20+ol)/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	copy(b[20:], opts)
	copy(b[20+ol:], payload)
	return b
}

// Typical SYN options: MSS 1460, SACK permitted, timestamps, NOP, window
// scale 7 (as Linux sends them).
func synOpts(mss uint16) []byte {
	return []byte{
		2, 4, byte(mss >> 8), byte(mss),
		4, 2,
		8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0,
		1,
		3, 3, 7,
	}
}

const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagACK = 0x10
)

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

// icmpMsg builds an ICMP or ICMPv6 message of type t and code c with 4
// bytes of "rest of header" and payload; the checksum is filled in later.
func icmpMsg(t, c uint8, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0], b[1] = t, c
	binary.BigEndian.PutUint32(b[4:], 0x00010002)
	copy(b[8:], payload)
	return b
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// Common packets.
var (
	syn4  = ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcp(40000, 443, flagSYN, synOpts(1460), nil), v4opts{df: true})
	syn6  = ipv6("2001:db8::1", "2001:db8:1::2", 0, protoTCP, tcp(40000, 443, flagSYN, synOpts(1440), nil))
	udp4  = ipv4("192.0.2.1", "198.51.100.2", protoUDP, udp(5353, 53, payload(30)), v4opts{tos: 0xb8})
	udp6  = ipv6("2001:db8::1", "2001:db8:1::2", 0xb8, protoUDP, udp(5353, 53, payload(31)))
	ping4 = ipv4("192.0.2.1", "198.51.100.2", protoICMP, icmpMsg(8, 0, payload(56)), v4opts{df: true})
	ping6 = ipv6("2001:db8::1", "2001:db8:1::2", 0, protoICMPv6, icmpMsg(128, 0, payload(56)))
)

func netip4(s string) netip.Addr { return netip.MustParseAddr(s) }
