package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is a veth pair between two namespaces.
type Link struct {
	A, B End
}

// End is one end of a Link.
type End struct {
	NS   *NS
	Name string
}

// Veth creates a veth pair with end aName in a and bName in b, assigns
// the addresses (IPv4 and/or IPv6; IPv6 without DAD, so they are usable at
// once), brings both ends up and waits until they are operationally up.
// a and b may be the same namespace.
func (l *Lab) Veth(a *NS, aName string, aAddrs []netip.Prefix, b *NS, bName string, bAddrs []netip.Prefix) (*Link, error) {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b.handle),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("lab: veth %s/%s - %s/%s: %w", a.Name, aName, b.Name, bName, err)
	}
	link := &Link{A: End{a, aName}, B: End{b, bName}}
	for _, e := range []struct {
		End
		addrs []netip.Prefix
	}{{link.A, aAddrs}, {link.B, bAddrs}} {
		if err := e.NS.AddAddrs(e.Name, e.addrs...); err != nil {
			return nil, err
		}
		if err := e.NS.SetLinkUp(e.Name, true); err != nil {
			return nil, err
		}
	}
	for _, e := range []End{link.A, link.B} {
		if err := e.NS.waitOperUp(e.Name, 5*time.Second); err != nil {
			return nil, err
		}
	}
	return link, nil
}

// AddAddrs adds addresses to dev. IPv6 addresses skip duplicate address
// detection.
func (n *NS) AddAddrs(dev string, addrs ...netip.Prefix) error {
	link, err := n.link(dev)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := n.nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("lab: %s: add %v to %s: %w", n.Name, p, dev, err)
		}
	}
	return nil
}

// DelAddrs removes addresses from dev.
func (n *NS) DelAddrs(dev string, addrs ...netip.Prefix) error {
	link, err := n.link(dev)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		if err := n.nl.AddrDel(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
			return fmt.Errorf("lab: %s: delete %v from %s: %w", n.Name, p, dev, err)
		}
	}
	return nil
}

// DelLink deletes dev (both ends of a veth).
func (n *NS) DelLink(dev string) error {
	link, err := n.link(dev)
	if err != nil {
		return err
	}
	if err := n.nl.LinkDel(link); err != nil {
		return fmt.Errorf("lab: %s: delete %s: %w", n.Name, dev, err)
	}
	return nil
}

// link looks dev up in n.
func (n *NS) link(dev string) (netlink.Link, error) {
	link, err := n.nl.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("lab: %s: link %s: %w", n.Name, dev, err)
	}
	return link, nil
}

// waitOperUp polls until dev is operationally up (veth: both ends up).
func (n *NS) waitOperUp(dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		link, err := n.link(dev)
		if err != nil {
			return err
		}
		if s := link.Attrs().OperState; s == netlink.OperUp || s == netlink.OperUnknown {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s: %s not up after %v", n.Name, dev, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SetLinkUp sets dev administratively up or down.
//
// To cut a link while keeping the routes of the other side, set the far end
// down: the near end then loses carrier and its routes stay (marked
// linkdown). Setting an end itself down makes the kernel flush the IPv4
// routes through it, except the prefix routes of its addresses, which come
// back with the link.
func (n *NS) SetLinkUp(dev string, up bool) error {
	link, err := n.link(dev)
	if err != nil {
		return err
	}
	if up {
		err = n.nl.LinkSetUp(link)
	} else {
		err = n.nl.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("lab: %s: set %s up=%v: %w", n.Name, dev, up, err)
	}
	return nil
}

// AddRoute adds (or replaces) a route in the main table. If gw is invalid
// the route is a device route; if dev is empty the kernel picks the device
// from gw.
func (n *NS) AddRoute(dst netip.Prefix, gw netip.Addr, dev string) error {
	return n.AddTableRoute(unix.RT_TABLE_MAIN, dst, gw, dev)
}

// DelRoute deletes the route to dst through dev from the main table.
func (n *NS) DelRoute(dst netip.Prefix, dev string) error {
	link, err := n.link(dev)
	if err != nil {
		return err
	}
	r := &netlink.Route{Dst: ipNet(dst), LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	if err := n.nl.RouteDel(r); err != nil {
		return fmt.Errorf("lab: %s: delete route %v dev %s: %w", n.Name, dst, dev, err)
	}
	return nil
}

// AddTableRoute is AddRoute for routing table table.
func (n *NS) AddTableRoute(table int, dst netip.Prefix, gw netip.Addr, dev string) error {
	r := &netlink.Route{Dst: ipNet(dst), Table: table}
	if dev != "" {
		link, err := n.link(dev)
		if err != nil {
			return err
		}
		r.LinkIndex = link.Attrs().Index
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("lab: %s: route %v via %v dev %q table %d: %w", n.Name, dst, gw, dev, table, err)
	}
	return nil
}

// addThrowRoute adds a throw route: lookups in table for dst fall through
// to the next policy rule.
func (n *NS) addThrowRoute(table int, dst netip.Prefix) error {
	r := &netlink.Route{Dst: ipNet(dst), Table: table, Type: unix.RTN_THROW}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("lab: %s: throw %v table %d: %w", n.Name, dst, table, err)
	}
	return nil
}

// AddSourceRule adds the policy rule `from src lookup table pref pref`,
// so that packets from src (e.g. a socket bound to an uplink address) are
// routed by table.
func (n *NS) AddSourceRule(src netip.Prefix, table, pref int) error {
	r := netlink.NewRule()
	r.Family = family(src.Addr())
	r.Src = ipNet(src)
	r.Table = table
	r.Priority = pref
	if err := n.nl.RuleAdd(r); err != nil {
		return fmt.Errorf("lab: %s: rule from %v table %d: %w", n.Name, src, table, err)
	}
	return nil
}

// Shape puts a tbf qdisc rate-limiting egress of dev to rate bits per
// second, replacing any root qdisc. The bucket holds 5 ms of traffic
// (at least 4 KiB) and the queue at most ~50 ms, so shaping adds tens of
// milliseconds of queueing delay at most. Shape(dev, 0) removes it.
func (n *NS) Shape(dev string, rate uint64) error {
	link, err := n.link(dev)
	if err != nil {
		return err
	}
	attrs := netlink.QdiscAttrs{
		LinkIndex: link.Attrs().Index,
		Handle:    netlink.MakeHandle(1, 0),
		Parent:    netlink.HANDLE_ROOT,
	}
	if rate == 0 {
		err := n.nl.QdiscDel(&netlink.Tbf{QdiscAttrs: attrs})
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("lab: %s: unshape %s: %w", n.Name, dev, err)
		}
		return nil
	}
	bytesPerSec := rate / 8
	burst := max(bytesPerSec/200, 4096)          // 5 ms
	limit := max(bytesPerSec/20, 4*1514) + burst // 50 ms
	tbf := &netlink.Tbf{
		QdiscAttrs: attrs,
		Rate:       bytesPerSec,
		Limit:      uint32(min(limit, 1<<31)),
		Buffer:     netlink.Xmittime(bytesPerSec, uint32(min(burst, 1<<31))),
	}
	if err := n.nl.QdiscReplace(tbf); err != nil {
		return fmt.Errorf("lab: %s: shape %s to %d bit/s: %w", n.Name, dev, rate, err)
	}
	return nil
}

// ipNet converts a prefix to the net.IPNet netlink wants.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// family returns the netlink address family of a.
func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
