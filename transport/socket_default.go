//go:build !linux

package transport

import (
	"errors"
	"net"
	"net/netip"
)

// ListenUDP opens the UDP socket of one path. Pinning a socket to a device
// and marking it are Linux features; elsewhere only the source address is
// honoured.
func ListenUDP(iface string, src netip.Addr, mark uint32) (*net.UDPConn, error) {
	if iface != "" || mark != 0 {
		return nil, errors.New("binding a path to an interface needs Linux")
	}
	return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
}
