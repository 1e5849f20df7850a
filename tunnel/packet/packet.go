// Package packet holds allocation-free helpers for raw IPv4 and IPv6 packets
// as read from or written to a TUN device (no link-layer header):
//
//   - Parse extracts the addresses, protocol, ports and a few flags that the
//     tunnel needs to route and schedule a packet;
//   - FlowHash hashes the 5-tuple so that the packets of one flow stay on
//     one path;
//   - ClampMSS lowers the MSS option of TCP SYNs in place (RFC 6691);
//   - TooBig builds the ICMP "fragmentation needed" (RFC 1191) or ICMPv6
//     "Packet Too Big" (RFC 4443 §3.2) error for a packet that does not fit.
//
// All functions treat their input as untrusted bytes from the network: they
// check every bound and never panic. Parse, FlowHash and ClampMSS do not
// allocate.
package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoICMPv6   = 58
	protoDestOpts = 60
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
	tcpMinHeader  = 20
	udpHeader     = 8

	// maxExtHeaders bounds the IPv6 extension header chain that Parse
	// follows; real packets carry at most a handful (RFC 8200 §4.1).
	maxExtHeaders = 8
)

// Errors returned by Parse. TooBig returns them too for a packet it cannot
// parse.
var (
	ErrTruncated = errors.New("packet: truncated")
	ErrVersion   = errors.New("packet: not IPv4 or IPv6")
	ErrHeader    = errors.New("packet: malformed header")
)

// Info describes one IP packet.
type Info struct {
	Version          uint8 // 4 or 6
	Src, Dst         netip.Addr
	Proto            uint8 // upper-layer protocol, after IPv6 extension headers
	SrcPort, DstPort uint16
	DSCP             uint8 // RFC 2474: upper 6 bits of TOS / traffic class
	Len              int   // packet length from the IP header, <= len(b)
	// HdrLen is the IP header length, including the IPv6 extension
	// headers that Parse skipped: the upper-layer header starts at
	// b[HdrLen].
	HdrLen   int
	TCPFlags uint8 // byte 13 of the TCP header (FIN=0x01, SYN=0x02, ...)
	// Fragment is set for any fragment of a fragmented datagram. Ports
	// and TCPFlags are only filled in for the first fragment.
	Fragment bool
}

// Parse parses the IP header of b and, for a non-fragment or the first
// fragment, the ports of a TCP or UDP header. b may be longer than the
// packet (Info.Len tells its length) but not shorter. A TCP or UDP packet
// that is not fragmented must hold a complete TCP or UDP header; a first
// fragment that does not simply has no ports. On error, Info is zero.
//
// IPv4 header checksums are not verified: the packets come from the local
// kernel or from an authenticated peer.
func Parse(b []byte) (Info, error) {
	var info Info
	if _, err := parse(b, &info); err != nil {
		return Info{}, err
	}
	return info, nil
}

// parse is Parse that also reports whether b is a non-initial fragment,
// whose payload does not start with an upper-layer header.
func parse(b []byte, info *Info) (later bool, err error) {
	if len(b) == 0 {
		return false, ErrTruncated
	}
	switch b[0] >> 4 {
	case 4:
		later, err = parse4(b, info)
	case 6:
		later, err = parse6(b, info)
	default:
		return false, ErrVersion
	}
	if err != nil || later {
		return later, err
	}
	return false, parsePorts(b[info.HdrLen:info.Len], info)
}

// parse4 parses an IPv4 header (RFC 791 §3.1).
func parse4(b []byte, info *Info) (later bool, err error) {
	if len(b) < ipv4MinHeader {
		return false, ErrTruncated
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < ipv4MinHeader || total < hl {
		return false, ErrHeader
	}
	if total > len(b) {
		return false, ErrTruncated
	}
	flagsOff := binary.BigEndian.Uint16(b[6:8])
	const moreFragments, offsetMask = 0x2000, 0x1fff
	*info = Info{
		Version:  4,
		Src:      netip.AddrFrom4([4]byte(b[12:16])),
		Dst:      netip.AddrFrom4([4]byte(b[16:20])),
		Proto:    b[9],
		DSCP:     b[1] >> 2,
		Len:      total,
		HdrLen:   hl,
		Fragment: flagsOff&(moreFragments|offsetMask) != 0,
	}
	return flagsOff&offsetMask != 0, nil
}

// parse6 parses an IPv6 header (RFC 8200 §3) and its extension headers.
// Jumbograms (payload length 0, RFC 2675) are not supported: they parse as
// a packet without payload.
func parse6(b []byte, info *Info) (later bool, err error) {
	if len(b) < ipv6Header {
		return false, ErrTruncated
	}
	total := ipv6Header + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return false, ErrTruncated
	}
	tc := b[0]<<4 | b[1]>>4
	*info = Info{
		Version: 6,
		Src:     netip.AddrFrom16([16]byte(b[8:24])),
		Dst:     netip.AddrFrom16([16]byte(b[24:40])),
		DSCP:    tc >> 2,
		Len:     total,
	}
	return skipExtHeaders(b[:total], b[6], info)
}

// skipExtHeaders follows the IPv6 extension header chain that starts with
// next at b[40] (RFC 8200 §4) and sets Proto, HdrLen and Fragment. It stops
// at the first header that is not an extension header it knows, and at a
// non-initial fragment, whose payload is not an upper-layer header.
func skipExtHeaders(b []byte, next uint8, info *Info) (later bool, err error) {
	off := ipv6Header
	for range maxExtHeaders {
		var n int
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts:
			// RFC 8200 §4.3-4.6: length in 8-octet units, not
			// counting the first 8 octets.
			if off+2 > len(b) {
				return false, ErrTruncated
			}
			n = (int(b[off+1]) + 1) * 8
		case protoAH:
			// RFC 4302 §2.2: length in 4-octet units, minus 2.
			if off+2 > len(b) {
				return false, ErrTruncated
			}
			n = (int(b[off+1]) + 2) * 4
		case protoFragment:
			n = 8 // RFC 8200 §4.5: fixed length
		default:
			info.Proto, info.HdrLen = next, off
			return false, nil
		}
		if off+n > len(b) {
			return false, ErrTruncated
		}
		if next == protoFragment {
			// Fragment Offset (13 bits), Res (2 bits), M flag.
			offM := binary.BigEndian.Uint16(b[off+2 : off+4])
			later = offM&^7 != 0
			info.Fragment = info.Fragment || offM&^6 != 0
		}
		next = b[off]
		off += n
		if later {
			info.Proto, info.HdrLen = next, off
			return true, nil
		}
	}
	return false, ErrHeader
}

// parsePorts reads the ports (and TCP flags) from the upper-layer header l4.
func parsePorts(l4 []byte, info *Info) error {
	var need int
	switch info.Proto {
	case protoTCP:
		need = tcpMinHeader
	case protoUDP:
		need = udpHeader
	default:
		return nil
	}
	if len(l4) < need {
		if info.Fragment {
			return nil // a tiny first fragment; RFC 1858 §3
		}
		return ErrTruncated
	}
	info.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	info.DstPort = binary.BigEndian.Uint16(l4[2:4])
	if info.Proto == protoTCP {
		info.TCPFlags = l4[13]
	}
	return nil
}
