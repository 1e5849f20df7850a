package packet

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestChecksumReference checks Checksum against values computed elsewhere.
func TestChecksumReference(t *testing.T) {
	// The IPv4 header example of Wikipedia's "Internet checksum" and
	// "IPv4 header checksum" articles: checksum 0xb861.
	hdr, _ := hex.DecodeString("450000730000400040110000c0a80001c0a800c7")
	if got := Checksum(hdr, 0); got != 0xb861 {
		t.Errorf("Checksum(Wikipedia header) = %#04x, want 0xb861", got)
	}
	// RFC 1071 §3 example words 0001 f203 f4f5 f6f7: sum 0xddf2.
	words := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Checksum(words, 0); got != ^uint16(0xddf2) {
		t.Errorf("Checksum(RFC 1071 example) = %#04x, want %#04x", got, ^uint16(0xddf2))
	}

	// Checksums of packets built by the tests, computed independently:
	// with golang.org/x/net/icmp (Marshal with IPv6PseudoHeader) for
	// ICMPv6, with a Python RFC 1071 implementation for the others.
	dst := make([]byte, MaxTooBigLen)
	n, err := TooBig(dst, syn6, 1280, netip.MustParseAddr("fd00::1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(dst[42:]); n != 128 || got != 0xa887 {
		t.Errorf("ICMPv6 Packet Too Big: length %d checksum %#04x, want 128, 0xa887", n, got)
	}
	n, err = TooBig(dst, syn4, 1400, netip.MustParseAddr("100.64.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if ip, icmp := binary.BigEndian.Uint16(dst[10:]), binary.BigEndian.Uint16(dst[22:]); n != 88 || ip != 0x53a3 || icmp != 0xe3e9 {
		t.Errorf("ICMP fragmentation needed: length %d checksums %#04x %#04x, want 88, 0x53a3, 0xe3e9", n, ip, icmp)
	}
	syn := append([]byte{}, syn6...)
	if got := binary.BigEndian.Uint16(syn[56:]); got != 0x3fac {
		t.Fatalf("syn6 TCP checksum %#04x, want 0x3fac", got)
	}
	ClampMSS(syn, 1360)
	if got := binary.BigEndian.Uint16(syn[56:]); got != 0x3ffc {
		t.Errorf("clamped syn6 TCP checksum %#04x, want 0x3ffc", got)
	}
}

// TestChecksumRandom compares Checksum and pseudoSum with the naive
// reference on random data of every length up to 100.
func TestChecksumRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 100 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := Checksum(b, 0), refChecksum(b); got != want {
			t.Fatalf("Checksum(%x) = %#04x, want %#04x", b, got, want)
		}
		all1 := make([]byte, n)
		for i := range all1 {
			all1[i] = 0xff
		}
		if got, want := Checksum(all1, 0), refChecksum(all1); got != want {
			t.Fatalf("Checksum(%x) = %#04x, want %#04x", all1, got, want)
		}
		var a4, b4 [4]byte
		var a6, b6 [16]byte
		for _, s := range [][]byte{a4[:], b4[:], a6[:], b6[:]} {
			for i := range s {
				s[i] = byte(r.Uint32())
			}
		}
		for _, p := range [][2]netip.Addr{{netip.AddrFrom4(a4), netip.AddrFrom4(b4)}, {netip.AddrFrom16(a6), netip.AddrFrom16(b6)}} {
			length := r.IntN(1 << 16) // IPv4 lengths are 16 bits
			if p[0].Is6() {
				length = r.IntN(1 << 20)
			}
			got := Checksum(b, pseudoSum(p[0].AsSlice(), p[1].AsSlice(), protoTCP, length))
			if want := refChecksum(refPseudo(p[0], p[1], protoTCP, length), b); got != want {
				t.Fatalf("pseudo-header checksum %v %v %d: %#04x, want %#04x", p[0], p[1], length, got, want)
			}
		}
	}
}

// TestUpdateChecksum checks RFC 1624 incremental updates against a full
// recomputation.
func TestUpdateChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		b := make([]byte, 2+2*r.IntN(20))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(4) == 0 {
			clear(b) // all-zero data: the one's complement corner
		}
		binary.BigEndian.PutUint16(b, 0)
		binary.BigEndian.PutUint16(b, refChecksum(b))
		at := 2 * (1 + r.IntN(len(b)/2))
		if at >= len(b) {
			continue
		}
		old := binary.BigEndian.Uint16(b[at:])
		v := uint16(r.Uint32())
		binary.BigEndian.PutUint16(b[at:], v)
		binary.BigEndian.PutUint16(b, updateChecksum(binary.BigEndian.Uint16(b), old, v))
		if refChecksum(b) != 0 {
			t.Fatalf("checksum of %x does not verify after update", b)
		}
	}
}
