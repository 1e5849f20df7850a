package scheduler

import (
	"errors"
	"fmt"
	"net/netip"
)

// Info is what the classifier knows about one packet. It maps field by
// field onto the tunnel's parsed packet header (tunnel/packet.Info), with
// Payload computed from the lengths.
type Info struct {
	Proto            uint8 // IP protocol: 6 TCP, 17 UDP, ...
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // 0 when the packet has none (or is a later fragment)
	DSCP             uint8  // RFC 2474 code point, 0..63
	Size             int    // IP packet length
	// Payload is the length of the TCP or UDP payload, or -1 when unknown
	// (another protocol, or a fragment).
	Payload  int
	TCPFlags uint8 // byte 13 of the TCP header
}

// IP protocol numbers and TCP flags the classifier knows.
const (
	ProtoTCP = 6
	ProtoUDP = 17

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

const (
	// dscpEF is Expedited Forwarding (RFC 3246), the code point of voice.
	dscpEF = 46
	// portDNS is DNS's port, on UDP and TCP (RFC 1035).
	portDNS = 53
	// smallUDP is the largest UDP payload taken for interactive: a VoIP
	// frame (20 ms of G.711 is 160 bytes, of Opus typically under 160)
	// or a game update, with room for an RTP header.
	smallUDP = 200
)

// IsInteractive is the default rule for latency-sensitive packets: DNS
// (UDP or TCP port 53), small UDP (payload at most 200 bytes: VoIP, game
// updates), TCP segments without payload that carry an ACK (pure ACKs,
// SYN-ACKs, FINs: the flow's progress waits on them) and DSCP EF.
func IsInteractive(info *Info) bool {
	switch {
	case info.DSCP == dscpEF:
		return true
	case info.Proto != ProtoTCP && info.Proto != ProtoUDP:
		return false
	case info.SrcPort == portDNS || info.DstPort == portDNS:
		return true
	case info.Proto == ProtoUDP:
		return info.Payload >= 0 && info.Payload <= smallUDP
	default:
		return info.Payload == 0 && info.TCPFlags&tcpACK != 0 && info.TCPFlags&tcpRST == 0
	}
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Lo, Hi uint16
}

func (r PortRange) contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// A Class is a traffic class: the packets it matches are scheduled by
// its own Mode. Every condition that is set must hold; an empty list
// matches anything. A packet belongs to the first class that matches.
type Class struct {
	Name        string
	Mode        Mode
	Copies      int  // copies for Redundant; 0 means DefaultCopies
	Interactive bool // the class's packets are Interactive (auto duplicates them)

	Proto    uint8          // 0 matches any protocol
	Ports    []PortRange    // source or destination port
	SrcPorts []PortRange    // source port
	DstPorts []PortRange    // destination port
	DSCP     []uint8        // code points, 0..63
	Src      []netip.Prefix // source address
	Dst      []netip.Prefix // destination address
}

// A Classifier matches packets to traffic classes. It is immutable after
// NewClassifier and safe for concurrent use.
type Classifier struct {
	classes []Class
	dscp    []uint64 // per class, a bitmap of its code points; 0 for any
}

// NewClassifier checks and copies classes.
func NewClassifier(classes []Class) (*Classifier, error) {
	c := &Classifier{classes: make([]Class, len(classes)), dscp: make([]uint64, len(classes))}
	var errs []error
	for i, cl := range classes {
		if err := cl.check(); err != nil {
			errs = append(errs, fmt.Errorf("class %d (%q): %w", i, cl.Name, err))
			continue
		}
		c.classes[i] = cl.clone()
		for _, d := range cl.DSCP {
			c.dscp[i] |= 1 << d
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func (cl *Class) check() error {
	var errs []error
	if _, err := ParseMode(string(cl.Mode)); err != nil {
		errs = append(errs, err)
	}
	if cl.Copies < 0 {
		errs = append(errs, fmt.Errorf("copies %d is negative", cl.Copies))
	}
	for _, d := range cl.DSCP {
		if d > 63 {
			errs = append(errs, fmt.Errorf("DSCP %d is not in 0..63", d))
		}
	}
	for _, rs := range [][]PortRange{cl.Ports, cl.SrcPorts, cl.DstPorts} {
		for _, r := range rs {
			if r.Lo > r.Hi {
				errs = append(errs, fmt.Errorf("port range %d-%d is empty", r.Lo, r.Hi))
			}
		}
	}
	for _, ps := range [][]netip.Prefix{cl.Src, cl.Dst} {
		for _, p := range ps {
			if !p.IsValid() {
				errs = append(errs, fmt.Errorf("prefix %v is not valid", p))
			}
		}
	}
	return errors.Join(errs...)
}

// clone copies the class's lists, with prefixes masked.
func (cl Class) clone() Class {
	cl.Ports = append([]PortRange(nil), cl.Ports...)
	cl.SrcPorts = append([]PortRange(nil), cl.SrcPorts...)
	cl.DstPorts = append([]PortRange(nil), cl.DstPorts...)
	cl.DSCP = append([]uint8(nil), cl.DSCP...)
	cl.Src = masked(cl.Src)
	cl.Dst = masked(cl.Dst)
	return cl
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// Len returns the number of classes.
func (c *Classifier) Len() int { return len(c.classes) }

// Class returns class i (a copy sharing its lists: do not modify them).
func (c *Classifier) Class(i int) Class { return c.classes[i] }

// Classify returns the index of the first class that matches info, or -1.
// It allocates nothing.
func (c *Classifier) Classify(info *Info) int {
	for i := range c.classes {
		if c.matches(i, info) {
			return i
		}
	}
	return -1
}

func (c *Classifier) matches(i int, info *Info) bool {
	cl := &c.classes[i]
	return (cl.Proto == 0 || cl.Proto == info.Proto) &&
		(c.dscp[i] == 0 || c.dscp[i]&(1<<(info.DSCP&63)) != 0) &&
		(len(cl.Ports) == 0 || inRanges(cl.Ports, info.SrcPort) || inRanges(cl.Ports, info.DstPort)) &&
		(len(cl.SrcPorts) == 0 || inRanges(cl.SrcPorts, info.SrcPort)) &&
		(len(cl.DstPorts) == 0 || inRanges(cl.DstPorts, info.DstPort)) &&
		(len(cl.Src) == 0 || inPrefixes(cl.Src, info.Src)) &&
		(len(cl.Dst) == 0 || inPrefixes(cl.Dst, info.Dst))
}

func inRanges(rs []PortRange, p uint16) bool {
	for _, r := range rs {
		if r.contains(p) {
			return true
		}
	}
	return false
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap() // an IPv4-mapped address matches IPv4 prefixes
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
