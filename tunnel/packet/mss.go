package packet

import "encoding/binary"

// TCP header fields and options (RFC 9293 §3.1, §3.2).
const (
	tcpFlagSYN    = 0x02
	tcpChecksumAt = 16
	tcpOptEOL     = 0
	tcpOptNOP     = 1
	tcpOptMSS     = 2
	tcpOptMSSLen  = 4
)

// ClampMSS lowers the Maximum Segment Size option (RFC 9293 §3.7.1) of the
// TCP SYN or SYN-ACK in b to mss, in place, and updates the TCP checksum
// incrementally (RFC 1624), so the checksum stays valid if it was. It
// reports whether b changed.
//
// b is left alone if it is not an unfragmented IPv4 or IPv6 TCP segment with
// SYN set, or if its options are malformed, or if its MSS is already at most
// mss. A SYN without MSS option is left alone too: its peer then assumes the
// default MSS of 536 (IPv4) or 1220 (IPv6) bytes (RFC 9293 §3.7.1, MUST-15),
// small enough for any path with the IPv6 minimum MTU of 1280.
func ClampMSS(b []byte, mss uint16) bool {
	var info Info
	if _, err := parse(b, &info); err != nil ||
		info.Proto != protoTCP || info.Fragment || info.TCPFlags&tcpFlagSYN == 0 {
		return false
	}
	tcp := b[info.HdrLen:info.Len]
	dataOff := int(tcp[12]>>4) * 4
	if dataOff < tcpMinHeader || dataOff > len(tcp) {
		return false
	}
	return clampOptions(tcp, dataOff, mss)
}

// clampOptions walks the options of the TCP header tcp[:dataOff] and
// clamps every MSS option to mss. It stops at End of Option List or at the
// first malformed option.
func clampOptions(tcp []byte, dataOff int, mss uint16) bool {
	changed := false
	for i := tcpMinHeader; i < dataOff; {
		switch tcp[i] {
		case tcpOptEOL:
			return changed
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= dataOff {
			return changed
		}
		n := int(tcp[i+1])
		if n < 2 || i+n > dataOff {
			return changed
		}
		if tcp[i] == tcpOptMSS {
			if n != tcpOptMSSLen {
				return changed
			}
			changed = setMSS(tcp, i+2, mss) || changed
		}
		i += n
	}
	return changed
}

// setMSS lowers the MSS value at tcp[at:at+2] to mss and updates the TCP
// checksum. The value may sit at an odd offset (options need no
// alignment); the checksum then sees its bytes swapped (RFC 1071 §2(B)).
func setMSS(tcp []byte, at int, mss uint16) bool {
	old := binary.BigEndian.Uint16(tcp[at:])
	if old <= mss {
		return false
	}
	binary.BigEndian.PutUint16(tcp[at:], mss)
	from, to := old, mss
	if at%2 == 1 {
		from, to = swap16(from), swap16(to)
	}
	ck := binary.BigEndian.Uint16(tcp[tcpChecksumAt:])
	binary.BigEndian.PutUint16(tcp[tcpChecksumAt:], updateChecksum(ck, from, to))
	return true
}

func swap16(v uint16) uint16 { return v<<8 | v>>8 }
