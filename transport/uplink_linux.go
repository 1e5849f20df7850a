package transport

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UplinkSource returns the address a path over iface should use as its
// source: the interface's first global address of the wanted family.
func UplinkSource(iface string, v6 bool) (netip.Addr, error) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("uplink interface %q: %w", iface, err)
	}
	fam := netlink.FAMILY_V4
	if v6 {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, fam)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("uplink interface %q: %w", iface, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().IsGlobalUnicast() {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("uplink interface %q has no usable %s address", iface, map[bool]string{false: "IPv4", true: "IPv6"}[v6])
}

// Interface is a network interface as uplink matching sees it.
type Interface struct {
	Name  string
	Up    bool         // administratively up and with carrier
	Addrs []netip.Addr // global unicast addresses
	// DefaultRoute says the main routing table has a default route
	// (IPv4 or IPv6) through the interface.
	DefaultRoute bool
}

// Interfaces lists the host's interfaces with their global addresses
// and, if defaultRoutes is set, whether a default route of the main table
// leaves through them (reading the main table costs more: a router's may
// be large).
func Interfaces(defaultRoutes bool) ([]Interface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var routes []netlink.Route
	if defaultRoutes {
		routes, err = netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
	}
	byIndex := map[int]*Interface{}
	out := make([]Interface, len(links))
	for i, l := range links {
		a := l.Attrs()
		out[i] = Interface{Name: a.Name, Up: a.Flags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0}
		byIndex[a.Index] = &out[i]
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if iface := byIndex[a.LinkIndex]; ok && iface != nil && ip.Unmap().IsGlobalUnicast() {
			iface.Addrs = append(iface.Addrs, ip.Unmap())
		}
	}
	for _, r := range routes {
		if ones, _ := maskSize(r); ones != 0 {
			continue
		}
		if iface := byIndex[r.LinkIndex]; iface != nil {
			iface.DefaultRoute = true
		}
		for _, nh := range r.MultiPath {
			if iface := byIndex[nh.LinkIndex]; iface != nil {
				iface.DefaultRoute = true
			}
		}
	}
	return out, nil
}

// maskSize is the prefix length of r's destination; a default route has
// none (nil) or a zero-length one, depending on the netlink version.
func maskSize(r netlink.Route) (int, int) {
	if r.Dst == nil {
		return 0, 0
	}
	return r.Dst.Mask.Size()
}
