// Command wgpeer is one userspace WireGuard peer (the device package of
// golang.zx2c4.com/wireguard, with its TUN offloads and batched UDP), for
// the e2e benchmark's baseline. It creates a TUN device, gives it an
// address and routes, reads the device configuration in WireGuard's UAPI text format
// (private_key=..., listen_port=..., public_key=..., ...) from stdin, says
// "ready" on stdout and runs until SIGTERM or SIGINT. Run it as root in
// the namespace where the peer belongs.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

func main() {
	name := flag.String("tun", "wg0", "TUN device name")
	addr := flag.String("addr", "", "address of the TUN device, as a prefix (10.250.0.1/24)")
	mtu := flag.Int("mtu", device.DefaultMTU, "MTU of the TUN device")
	table := flag.Int("table", 0, "routing table for the routes (0: main)")
	verbose := flag.Bool("v", false, "log WireGuard's verbose messages")
	var routes []netip.Prefix
	flag.Func("route", "a prefix to route through the TUN device (repeatable)", func(s string) error {
		p, err := netip.ParsePrefix(s)
		routes = append(routes, p)
		return err
	})
	flag.Parse()
	if err := run(*name, *addr, routes, *table, *mtu, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "wgpeer:", err)
		os.Exit(1)
	}
}

func run(name, addr string, routes []netip.Prefix, table, mtu int, verbose bool) error {
	prefix, err := netip.ParsePrefix(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	uapi, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	level := device.LogLevelError
	if verbose {
		level = device.LogLevelVerbose
	}
	wg := device.NewDevice(dev, conn.NewDefaultBind(), device.NewLogger(level, "wgpeer: "))
	defer wg.Close()
	if err := wg.IpcSet(string(uapi)); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := configure(name, prefix, routes, table); err != nil {
		return err
	}
	if err := wg.Up(); err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-wg.Wait():
	}
	return nil
}

// configure gives the TUN device its address, brings it up and routes
// the prefixes through it, in table.
func configure(name string, prefix netip.Prefix, routes []netip.Prefix, table int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(prefix)}); err != nil {
		return fmt.Errorf("address %v on %s: %w", prefix, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	for _, p := range routes {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p.Masked()), Table: table}); err != nil {
			return fmt.Errorf("route %v dev %s table %d: %w", p, name, table, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
