package packet

import (
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
)

// MaxTooBigLen is the length of the longest packet TooBig writes, the IPv6
// minimum MTU (RFC 8200 §5). TooBig needs a dst buffer at least this long.
const MaxTooBigLen = 1280

const (
	ipv4MinMTU   = 68  // RFC 791 §3.2, "Fragmentation and Reassembly"
	ipv4ErrorMax = 576 // RFC 1812 §4.3.2.3: longest ICMPv4 error
	icmpHeader   = 8

	icmpTooBigType = 3 // Destination Unreachable
	icmpTooBigCode = 4 // Fragmentation Needed and DF Set
	icmpv6TooBig   = 2 // Packet Too Big

	// tosInternetControl is precedence 6 (RFC 1812 §4.3.2.5), DSCP CS6.
	tosInternetControl = 0xc0
	defaultTTL         = 64
)

// Errors returned by TooBig besides those of Parse.
var (
	// ErrMayFragment reports an IPv4 packet whose Don't Fragment flag is
	// clear: the caller may fragment it instead of rejecting it.
	ErrMayFragment = errors.New("packet: DF clear, packet may be fragmented")
	// ErrNoICMP reports a packet that must not be answered with an ICMP
	// error (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
	ErrNoICMP = errors.New("packet: no ICMP error allowed for this packet")
	// ErrFamily reports a from address of the wrong address family.
	ErrFamily = errors.New("packet: source address of wrong family")
	// ErrMTU reports an MTU below the minimum of the IP version (68 or
	// 1280) or above the largest the ICMP message can carry.
	ErrMTU = errors.New("packet: MTU out of range")
	// ErrShortBuffer reports a dst shorter than MaxTooBigLen.
	ErrShortBuffer = errors.New("packet: buffer shorter than MaxTooBigLen")
)

// TooBig writes into dst the ICMP error that tells the sender of pkt that
// pkt is larger than mtu, and returns its length:
//
//   - for IPv4, a Destination Unreachable, Fragmentation Needed and DF Set
//     (type 3, code 4) with the next-hop MTU (RFC 792, RFC 1191 §4) quoting
//     as much of pkt as fits in 576 bytes (RFC 1812 §4.3.2.3);
//   - for IPv6, a Packet Too Big (RFC 4443 §3.2) quoting as much of pkt as
//     fits in MaxTooBigLen bytes (RFC 4443 §2.4(c)).
//
// The error goes from from, which must be of pkt's address family, to pkt's
// source, with TTL or hop limit 64. dst must hold at least MaxTooBigLen
// bytes and must not overlap pkt.
//
// TooBig writes nothing and returns ErrMayFragment for an IPv4 packet
// without Don't Fragment flag, and ErrNoICMP for a packet that must not be
// answered with an error: an ICMP error itself, a packet from an
// unspecified, loopback, multicast or broadcast address, an IPv4 packet to
// a multicast or broadcast address, or a non-initial IPv4 fragment.
func TooBig(dst []byte, pkt []byte, mtu int, from netip.Addr) (int, error) {
	if len(dst) < MaxTooBigLen {
		return 0, ErrShortBuffer
	}
	var info Info
	later, err := parse(pkt, &info)
	if err != nil {
		return 0, err
	}
	if info.Version == 4 {
		return tooBig4(dst, pkt, &info, later, mtu, from)
	}
	return tooBig6(dst, pkt, &info, later, mtu, from)
}

// tooBig4 is TooBig for an IPv4 packet.
func tooBig4(dst, pkt []byte, info *Info, later bool, mtu int, from netip.Addr) (int, error) {
	const dontFragment = 0x40
	switch {
	case !from.Is4():
		return 0, ErrFamily
	case mtu < ipv4MinMTU || mtu > math.MaxUint16:
		return 0, ErrMTU
	case pkt[6]&dontFragment == 0:
		return 0, ErrMayFragment
	case later || isICMPError4(pkt, info) || !replyable4(info):
		return 0, ErrNoICMP
	}
	q := min(info.Len, ipv4ErrorMax-ipv4MinHeader-icmpHeader)
	n := ipv4MinHeader + icmpHeader + q

	// RFC 791 §3.1 header without options.
	ip := dst[:ipv4MinHeader]
	clear(ip)
	ip[0] = 4<<4 | ipv4MinHeader/4
	ip[1] = tosInternetControl
	binary.BigEndian.PutUint16(ip[2:4], uint16(n))
	ip[8] = defaultTTL
	ip[9] = protoICMP
	src, to := from.As4(), info.Src.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], to[:])
	binary.BigEndian.PutUint16(ip[10:12], Checksum(ip, 0))

	// RFC 1191 §4: type, code, checksum, unused, Next-Hop MTU.
	icmp := dst[ipv4MinHeader:n]
	icmp[0], icmp[1] = icmpTooBigType, icmpTooBigCode
	clear(icmp[2:6])
	binary.BigEndian.PutUint16(icmp[6:8], uint16(mtu))
	copy(icmp[icmpHeader:], pkt[:q])
	binary.BigEndian.PutUint16(icmp[2:4], Checksum(icmp, 0))
	return n, nil
}

// tooBig6 is TooBig for an IPv6 packet.
func tooBig6(dst, pkt []byte, info *Info, later bool, mtu int, from netip.Addr) (int, error) {
	switch {
	case !from.Is6() || from.Is4In6():
		return 0, ErrFamily
	case mtu < MaxTooBigLen || uint64(mtu) > math.MaxUint32:
		return 0, ErrMTU
	case isICMPError6(pkt, info, later) || !replyable6(info):
		return 0, ErrNoICMP
	}
	q := min(info.Len, MaxTooBigLen-ipv6Header-icmpHeader)
	n := ipv6Header + icmpHeader + q

	// RFC 8200 §3: traffic class and flow label 0.
	ip := dst[:ipv6Header]
	clear(ip[:4])
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:6], uint16(n-ipv6Header))
	ip[6] = protoICMPv6
	ip[7] = defaultTTL
	src, to := from.As16(), info.Src.As16()
	copy(ip[8:24], src[:])
	copy(ip[24:40], to[:])

	// RFC 4443 §3.2: type, code, checksum, MTU.
	icmp := dst[ipv6Header:n]
	icmp[0], icmp[1] = icmpv6TooBig, 0
	clear(icmp[2:4])
	binary.BigEndian.PutUint32(icmp[4:8], uint32(mtu))
	copy(icmp[icmpHeader:], pkt[:q])
	ck := Checksum(icmp, pseudoSum(src[:], to[:], protoICMPv6, len(icmp)))
	binary.BigEndian.PutUint16(icmp[2:4], ck)
	return n, nil
}

// isICMPError4 reports whether pkt is an ICMP error message (RFC 792), or
// an ICMP message too short to tell.
func isICMPError4(pkt []byte, info *Info) bool {
	if info.Proto != protoICMP {
		return false
	}
	if info.HdrLen >= info.Len {
		return true
	}
	switch pkt[info.HdrLen] {
	case 3, 4, 5, 11, 12: // unreachable, quench, redirect, time, parameter
		return true
	}
	return false
}

// replyable4 reports whether an ICMP error may answer a packet from
// info.Src to info.Dst (RFC 1122 §3.2.2): the source must be a single host
// and the destination not a broadcast or multicast address.
func replyable4(info *Info) bool {
	src, dst := info.Src.As4(), info.Dst.As4()
	classE := func(a [4]byte) bool { return a[0] >= 240 } // incl. broadcast
	return !info.Src.IsUnspecified() && !info.Src.IsLoopback() &&
		!info.Src.IsMulticast() && !classE(src) &&
		!info.Dst.IsMulticast() && !classE(dst)
}

// isICMPError6 reports whether pkt is an ICMPv6 error message (type below
// 128, RFC 4443 §2.1) or a Redirect (RFC 4443 §2.4(e)), or an ICMPv6
// message whose type cannot be seen.
func isICMPError6(pkt []byte, info *Info, later bool) bool {
	if info.Proto != protoICMPv6 {
		return false
	}
	if later || info.HdrLen >= info.Len {
		return true
	}
	const redirect = 137
	t := pkt[info.HdrLen]
	return t < 128 || t == redirect
}

// replyable6 reports whether an ICMPv6 error may answer a packet from
// info.Src: RFC 4443 §2.4(e) excludes sources that do not identify a single
// node. Packet Too Big may answer packets to multicast addresses.
func replyable6(info *Info) bool {
	return !info.Src.IsUnspecified() && !info.Src.IsLoopback() &&
		!info.Src.IsMulticast()
}
