package transport

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenUDP opens the UDP socket of one path. With iface set, the socket is
// bound to that device (SO_BINDTODEVICE) so its packets leave through that
// uplink whatever the routing table says; with src valid, it is bound to
// that source address too; with mark non-zero, its packets carry that
// firewall mark, so the policy rule that sends everything into the tunnel
// exempts them and they never loop into the TUN.
func ListenUDP(iface string, src netip.Addr, mark uint32) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if iface != "" {
				if serr = unix.BindToDevice(int(fd), iface); serr != nil {
					serr = fmt.Errorf("bind to device %s: %w", iface, serr)
					return
				}
			}
			if mark != 0 {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
					serr = fmt.Errorf("set mark 0x%x: %w", mark, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	network, laddr := "udp", ":0"
	if src.IsValid() {
		network = "udp6"
		if src.Is4() {
			network = "udp4"
		}
		laddr = netip.AddrPortFrom(src, 0).String()
	}
	pc, err := lc.ListenPacket(context.Background(), network, laddr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
