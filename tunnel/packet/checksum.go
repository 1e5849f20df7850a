package packet

import "encoding/binary"

// Checksum returns the Internet checksum (RFC 1071) of b: the one's
// complement of the one's complement sum of its 16-bit big-endian words,
// an odd last byte padded with zero. initial is a partial sum to start
// from, for instance a pseudo-header sum (see pseudoSum), or 0.
//
// Writing Checksum(b, initial) into a zeroed checksum field makes the
// packet valid; a packet whose checksum field is filled in is valid when
// Checksum over it returns 0.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, initial))
}

// sum adds the 16-bit words of b to s. The result is not folded.
func sum(b []byte, s uint32) uint32 {
	acc := uint64(s)
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v>>48 + v>>32&0xffff + v>>16&0xffff + v&0xffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return uint32(fold64(acc))
}

// fold64 folds the carries of a 64-bit sum into 16 bits (RFC 1071 §2(C)).
func fold64(s uint64) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// fold folds the carries of a 32-bit sum into 16 bits.
func fold(s uint32) uint16 { return fold64(uint64(s)) }

// pseudoSum is the sum of the TCP/UDP/ICMPv6 pseudo-header: RFC 9293
// §3.1 for IPv4 (4-byte addresses) and RFC 8200 §8.1 for IPv6 (16-byte
// addresses). length is the upper-layer packet length.
func pseudoSum(src, dst []byte, proto uint8, length int) uint32 {
	s := sum(src, 0)
	s = sum(dst, s)
	return s + uint32(proto) + uint32(length>>16) + uint32(length&0xffff)
}

// updateChecksum returns checksum ck after a 16-bit word of the data it
// covers changed from "from" to "to": RFC 1624 §3, equation 3,
// HC' = ~(~HC + ~m + m').
func updateChecksum(ck, from, to uint16) uint16 {
	return ^fold(uint32(^ck) + uint32(^from) + uint32(to))
}
