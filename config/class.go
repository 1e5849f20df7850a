package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// Class is a traffic class of the client: the packets it matches are
// scheduled by its own mode instead of the client's. Every condition
// that is set must hold; an empty list matches anything. A packet belongs
// to the first class that matches. cmd/braid turns it into a
// scheduler.Class.
type Class struct {
	Name        string `mapstructure:"name"`        // required, unique
	Mode        string `mapstructure:"mode"`        // required, one of the Mode constants
	Copies      int    `mapstructure:"copies"`      // mode redundant only; default the client's redundancy
	Interactive bool   `mapstructure:"interactive"` // its packets count as interactive (auto duplicates them)

	Protocol Protocol       `mapstructure:"protocol"`  // 0 matches any
	Ports    []PortRange    `mapstructure:"ports"`     // source or destination port
	SrcPorts []PortRange    `mapstructure:"src_ports"` // source port
	DstPorts []PortRange    `mapstructure:"dst_ports"` // destination port
	DSCP     []DSCP         `mapstructure:"dscp"`      // code points
	Src      []netip.Prefix `mapstructure:"src"`       // source address
	Dst      []netip.Prefix `mapstructure:"dst"`       // destination address
}

// Protocol is an IP protocol number, written as tcp, udp, icmp, icmpv6
// or a number from 0 to 255. 0 means any protocol.
type Protocol uint8

var protocols = map[string]Protocol{"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmpv6": 58, "sctp": 132}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Protocol) UnmarshalText(b []byte) error {
	s := strings.ToLower(strings.TrimSpace(string(b)))
	if v, ok := protocols[s]; ok {
		*p = v
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return fmt.Errorf("%q is not a protocol", string(b))
	}
	*p = Protocol(n)
	return nil
}

// PortRange is an inclusive range of ports, written as a port (443) or
// a range (10000-20000).
type PortRange struct {
	Lo, Hi uint16
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *PortRange) UnmarshalText(b []byte) error {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(string(b)), "-")
	if !isRange {
		hi = lo
	}
	l, err1 := parsePort(lo)
	h, err2 := parsePort(hi)
	if err1 != nil || err2 != nil || l > h {
		return fmt.Errorf("%q is not a port range", string(b))
	}
	*r = PortRange{Lo: l, Hi: h}
	return nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err == nil && n == 0 {
		err = strconv.ErrRange // 0 is the port of packets without ports
	}
	return uint16(n), err
}

// DSCP is a Differentiated Services code point (RFC 2474), written as a
// number from 0 to 63 or by name: EF (46, RFC 3246), AF11..AF43 (RFC
// 2597), CS0..CS7, VA (44, RFC 5865), LE (1, RFC 8622), DF or BE (0).
type DSCP uint8

// dscpNames are the names of code points that are not AFxy or CSx.
var dscpNames = map[string]DSCP{"ef": 46, "va": 44, "le": 1, "df": 0, "be": 0}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *DSCP) UnmarshalText(b []byte) error {
	s := strings.ToLower(strings.TrimSpace(string(b)))
	if v, ok := dscpName(s); ok {
		*d = v
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n > 63 {
		return fmt.Errorf("%q is not a DSCP code point", string(b))
	}
	*d = DSCP(n)
	return nil
}

func dscpName(s string) (DSCP, bool) {
	if v, ok := dscpNames[s]; ok {
		return v, true
	}
	switch {
	case len(s) == 3 && s[:2] == "cs" && s[2] >= '0' && s[2] <= '7':
		return DSCP(s[2]-'0') * 8, true
	case len(s) == 4 && s[:2] == "af" && s[2] >= '1' && s[2] <= '4' && s[3] >= '1' && s[3] <= '3':
		return DSCP(s[2]-'0')*8 + DSCP(s[3]-'0')*2, true
	}
	return 0, false
}

// Rate is a bit rate in bits per second, written as a number of bits per
// second or with a unit: 500kbit, 20Mbit, 1.5Gbit (also kbps, Mbps,
// Gbps). Units are of 1000, case-insensitive.
type Rate uint64

var rateUnits = map[string]float64{
	"": 1, "bit": 1, "bps": 1,
	"k": 1e3, "kbit": 1e3, "kbps": 1e3,
	"m": 1e6, "mbit": 1e6, "mbps": 1e6,
	"g": 1e9, "gbit": 1e9, "gbps": 1e9,
	"t": 1e12, "tbit": 1e12, "tbps": 1e12,
}

// ParseRate parses a bit rate such as "20Mbit".
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := rateUnits[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || num == "" {
		return 0, fmt.Errorf("%q is not a bit rate (e.g. 500kbit, 20Mbit, 1.5Gbit)", s)
	}
	v := n * mult
	if v >= math.MaxUint64 || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is too large a bit rate", s)
	}
	return Rate(math.Round(v)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// BytesPerSecond is r in bytes per second.
func (r Rate) BytesPerSecond() float64 { return float64(r) / 8 }

// String formats r in the largest unit that keeps it readable.
func (r Rate) String() string {
	f := float64(r)
	for _, u := range []struct {
		name string
		n    float64
	}{{"Tbit", 1e12}, {"Gbit", 1e9}, {"Mbit", 1e6}, {"kbit", 1e3}} {
		if f >= u.n {
			return fmt.Sprintf("%.4g%s", f/u.n, u.name)
		}
	}
	return strconv.FormatUint(uint64(r), 10) + "bit"
}

// MinCopies is the fewest copies redundant mode sends: one copy is no
// redundancy.
const MinCopies = 2

// fillClasses sets the defaults of the classes: a redundant class sends
// as many copies as the client's redundancy.
func (c *Client) fillClasses() {
	for i := range c.Classes {
		cl := &c.Classes[i]
		if cl.Mode == ModeRedundant && cl.Copies == 0 {
			cl.Copies = c.Redundancy
		}
	}
}

// checkCopies checks a number of copies: at least MinCopies, and no more
// than the uplinks (MinCopies is always allowed, so a one-uplink client
// may name redundant mode and add a second uplink later).
func checkCopies(key string, n, uplinks int) error {
	if n < MinCopies {
		return fmt.Errorf("key %q: %d is less than %d copies", key, n, MinCopies)
	}
	if n > max(MinCopies, uplinks) {
		return fmt.Errorf("key %q: %d copies need as many uplinks, there are %d", key, n, uplinks)
	}
	return nil
}

func checkClasses(classes []Class, uplinks int) error {
	seen := map[string]bool{}
	for i, cl := range classes {
		key := fmt.Sprintf("classes[%d]", i)
		if err := cl.check(key, uplinks); err != nil {
			return err
		}
		if seen[cl.Name] {
			return fmt.Errorf("key %q: name %q is used by another class", key+".name", cl.Name)
		}
		seen[cl.Name] = true
	}
	return nil
}

func (cl *Class) check(key string, uplinks int) error {
	if err := checkName(key+".name", cl.Name); err != nil {
		return err
	}
	if cl.Mode == "" {
		return errEmpty(key + ".mode")
	}
	if err := checkOneOf(key+".mode", cl.Mode, modes); err != nil {
		return err
	}
	if cl.Mode != ModeRedundant {
		if cl.Copies != 0 {
			return fmt.Errorf("key %q: only a class of mode redundant has copies", key+".copies")
		}
	} else if err := checkCopies(key+".copies", cl.Copies, uplinks); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		rs   []PortRange
	}{{"ports", cl.Ports}, {"src_ports", cl.SrcPorts}, {"dst_ports", cl.DstPorts}} {
		for j, r := range f.rs {
			if r.Lo == 0 || r.Lo > r.Hi {
				return fmt.Errorf("key %q: %d-%d is not a port range (1..65535)", fmt.Sprintf("%s.%s[%d]", key, f.name, j), r.Lo, r.Hi)
			}
		}
	}
	for j, d := range cl.DSCP {
		if d > 63 {
			return fmt.Errorf("key %q: %d is not a DSCP code point (0..63)", fmt.Sprintf("%s.dscp[%d]", key, j), d)
		}
	}
	for _, f := range []struct {
		name string
		ps   []netip.Prefix
	}{{"src", cl.Src}, {"dst", cl.Dst}} {
		for j, p := range f.ps {
			if err := checkPrefix(fmt.Sprintf("%s.%s[%d]", key, f.name, j), p); err != nil {
				return err
			}
		}
	}
	return nil
}
