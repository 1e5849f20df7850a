package transport

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
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
