package packet

import (
	"bytes"
	"net/netip"
	"testing"
)

// seeds are real packets for the fuzz corpora.
func seeds() [][]byte {
	tcpSeg := tcp(1000, 80, flagSYN, []byte{1, 2, 4, 0x05, 0xb4, 1, 1, 1, 4, 2}, nil)
	return [][]byte{
		syn4, syn6, udp4, udp6, ping4, ping6,
		ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcpSeg, v4opts{df: true, options: []byte{1, 1, 1, 0}}),
		ipv4("192.0.2.1", "198.51.100.2", protoUDP, payload(64), v4opts{df: true, more: true}),
		ipv4("192.0.2.1", "198.51.100.2", protoICMP, icmpMsg(3, 4, syn4), v4opts{df: true}),
		ipv6("2001:db8::1", "2001:db8::2", 0, protoTCP, tcpSeg, hopByHop(), destOpts(1), routing(), authHdr()),
		ipv6("2001:db8::1", "2001:db8::2", 0, protoUDP, payload(64), fragHdr(0, true)),
		ipv6("2001:db8::1", "2001:db8::2", 0, protoUDP, payload(64), fragHdr(8, false)),
		ipv6("2001:db8::1", "2001:db8::2", 0, protoICMPv6, icmpMsg(2, 0, syn6)),
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Parse(b)
		if err != nil {
			if info != (Info{}) {
				t.Fatalf("Parse error %v with non-zero Info %+v", err, info)
			}
			return
		}
		minHdr := map[uint8]int{4: 20, 6: 40}[info.Version]
		if minHdr == 0 || info.Src.Is4() != (info.Version == 4) ||
			info.Len > len(b) || info.HdrLen < minHdr || info.HdrLen > info.Len || info.DSCP > 63 {
			t.Fatalf("bad Info %+v for %d bytes", info, len(b))
		}
		// Bytes after the packet are ignored.
		again, err := Parse(b[:info.Len])
		if err != nil || again != info {
			t.Fatalf("Parse(b[:Len]) = %+v, %v; want %+v", again, err, info)
		}
	})
}

func FuzzClampMSS(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s, uint16(1360))
	}
	f.Add(syn4, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, mss uint16) {
		// Most mutations break the checksum: repair it, so that the
		// incremental update is checked on every input.
		if info, err := Parse(b); err == nil && info.Proto == protoTCP && !info.Fragment {
			setL4Checksum(b[info.HdrLen:info.Len], info.Src, info.Dst, protoTCP)
		}
		orig := append([]byte{}, b...)
		valid := l4Valid(orig)
		if !ClampMSS(b, mss) {
			if !bytes.Equal(b, orig) {
				t.Fatal("ClampMSS changed the packet but returned false")
			}
			return
		}
		if valid && !l4Valid(b) {
			t.Fatal("TCP checksum no longer verifies")
		}
		before, _ := Parse(orig)
		after, err := Parse(b)
		if err != nil || after != before {
			t.Fatalf("Parse after ClampMSS = %+v, %v; want %+v", after, err, before)
		}
		// Only the TCP options and checksum may change.
		for i := range b {
			inTCP := i >= before.HdrLen+16 && i < before.HdrLen+int(b[before.HdrLen+12]>>4)*4
			if b[i] != orig[i] && (!inTCP || i == before.HdrLen+18 || i == before.HdrLen+19) {
				t.Fatalf("byte %d changed", i)
			}
		}
		if ClampMSS(b, mss) {
			t.Fatal("second ClampMSS changed the packet again")
		}
	})
}

func FuzzTooBig(f *testing.F) {
	from4, from6 := []byte{100, 64, 0, 1}, netip.MustParseAddr("fd00::1").AsSlice()
	for _, s := range seeds() {
		f.Add(s, 1280, from4)
		f.Add(s, 1300, from6)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, mtu int, fromBytes []byte) {
		from, _ := netip.AddrFromSlice(fromBytes)
		dst := make([]byte, MaxTooBigLen)
		orig := append([]byte{}, pkt...)
		n, err := TooBig(dst, pkt, mtu, from)
		if !bytes.Equal(pkt, orig) {
			t.Fatal("TooBig changed the packet")
		}
		if err != nil {
			if n != 0 {
				t.Fatalf("TooBig = %d, %v", n, err)
			}
			return
		}
		if n > MaxTooBigLen {
			t.Fatalf("TooBig wrote %d bytes", n)
		}
		checkTooBig(t, dst[:n], pkt, mtu, from)
	})
}
