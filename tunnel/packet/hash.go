package packet

import "encoding/binary"

// FlowHash hashes the 5-tuple of info (addresses, protocol, ports) with
// seed. The hash is stable: the same tuple and seed give the same value in
// every process and on every platform. It is fast, not cryptographic.
//
// The ports of a fragmented datagram are left out, so that all of its
// fragments (only the first carries ports) hash alike and take the same
// path.
func FlowHash(info *Info, seed uint64) uint64 {
	src, dst := info.Src.As16(), info.Dst.As16()
	tuple := uint64(info.Proto) << 32
	if info.Src.Is4() {
		tuple |= 1 << 40 // As16 maps IPv4 into IPv6: tell them apart
	}
	if !info.Fragment {
		tuple |= uint64(info.SrcPort)<<16 | uint64(info.DstPort)
	}
	h := seed ^ 0x9e3779b97f4a7c15
	h = mix(h, binary.BigEndian.Uint64(src[:8]))
	h = mix(h, binary.BigEndian.Uint64(src[8:]))
	h = mix(h, binary.BigEndian.Uint64(dst[:8]))
	h = mix(h, binary.BigEndian.Uint64(dst[8:]))
	h = mix(h, tuple)
	return fmix64(h)
}

// mix absorbs the word w into the hash state h.
func mix(h, w uint64) uint64 {
	h ^= w
	h *= 0xff51afd7ed558ccd
	return h ^ h>>32
}

// fmix64 is the MurmurHash3 64-bit finalizer: it spreads every input bit
// over the whole output.
func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	return h ^ h>>33
}
