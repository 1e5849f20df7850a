package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// This file is the kernel side of an endpoint: the TUN device, its
// addresses and routes (netlink), the policy rules that send everything
// but the tunnel's own packets into the TUN, and egress NAT (nftables).

// CreateTUN creates a TUN device with the kernel's offloads (GSO on read,
// GRO coalescing on write) and returns it with its actual name.
func CreateTUN(name string, mtu int) (tun.Device, string, error) {
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, "", fmt.Errorf("create TUN %q: %w (needs root or CAP_NET_ADMIN and /dev/net/tun)", name, err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, "", err
	}
	return dev, real, nil
}

// kernelDropped returns how many packets the kernel dropped on their way
// to dev's reader, from the device's statistics: the TUN driver drops
// what its queue (txqueuelen packets) has no room for while the reader is
// behind, or waits for room on a full path. Those never reach braid's own
// counters. ok is false if dev is not a kernel device.
func kernelDropped(dev tun.Device) (n uint64, ok bool) {
	name, err := dev.Name()
	if err != nil {
		return 0, false
	}
	link, err := netlink.LinkByName(name)
	if err != nil || link.Attrs().Statistics == nil {
		return 0, false
	}
	return link.Attrs().Statistics.TxDropped, true
}

// addKernelDropped adds dev's kernelDropped to a status's counters, as
// tun_kernel_dropped, if dev is a kernel device.
func addKernelDropped(counters CounterSnapshot, dev tun.Device) {
	if n, ok := kernelDropped(dev); ok {
		counters["tun_kernel_dropped"] = n
	}
}

// ConfigureLink sets addrs and mtu on the device and brings it up.
func ConfigureLink(name string, addrs []netip.Prefix, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("device %s: %w", name, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("device %s: set MTU %d: %w", name, mtu, err)
		}
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("device %s: add address %s: %w", name, a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("device %s: up: %w", name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// AddRoutes routes each prefix through the device, in table (0: main).
func AddRoutes(dev string, table int, prefixes []netip.Prefix) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("device %s: %w", dev, err)
	}
	for _, p := range prefixes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p.Masked()), Table: table}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s dev %s table %d: %w", p, dev, table, err)
		}
	}
	return nil
}

// ClientRouting sends the configured prefixes into the TUN, the way
// wg-quick does for a full tunnel: the routes live in their own table,
// selected by a rule for every packet that does not carry the tunnel's
// mark, and a rule before it lets more specific routes of the main table
// win (suppress_prefixlength 0), so local networks stay reachable. The
// paths' sockets are marked, so their packets never loop into the TUN.
type ClientRouting struct {
	Device string
	Table  int
	Mark   uint32
	Routes []netip.Prefix
	// Priority of the first rule; the second takes Priority+1.
	Priority int

	rules []*netlink.Rule
}

// Install adds the routes and rules. Call Remove to undo.
func (r *ClientRouting) Install() error {
	if err := AddRoutes(r.Device, r.Table, r.Routes); err != nil {
		return err
	}
	if err := r.installMarkRestore(); err != nil {
		return err
	}
	families := map[int]bool{}
	for _, p := range r.Routes {
		families[family(p)] = true
	}
	for fam := range families {
		suppress := netlink.NewRule()
		suppress.Family, suppress.Priority, suppress.Table, suppress.SuppressPrefixlen = fam, r.Priority, unix.RT_TABLE_MAIN, 0
		tunnel := netlink.NewRule()
		tunnel.Family, tunnel.Priority, tunnel.Table, tunnel.Mark, tunnel.Invert = fam, r.Priority+1, r.Table, r.Mark, true
		mask := uint32(0xffffffff)
		tunnel.Mask = &mask
		for _, rule := range []*netlink.Rule{suppress, tunnel} {
			err := netlink.RuleAdd(rule)
			if errors.Is(err, unix.EEXIST) {
				continue // not ours to remove later
			}
			if err != nil {
				r.Remove()
				return fmt.Errorf("policy rule (priority %d, table %d): %w", rule.Priority, rule.Table, err)
			}
			r.rules = append(r.rules, rule)
		}
	}
	return nil
}

// Remove deletes the rules Install added (the routes go with the device).
func (r *ClientRouting) Remove() error {
	errs := []error{removeTable(clientTable)}
	for _, rule := range r.rules {
		if err := netlink.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	r.rules = nil
	return errors.Join(errs...)
}

// clientTable is the client's nftables table.
const clientTable = "braid-client"

// installMarkRestore makes replies to the paths' marked packets carry the
// mark too, as wg-quick does: the mark is saved in the connection's
// conntrack entry on the way out and restored on the way in, and
// src_valid_mark lets the reverse-path filter see it. Without this, a host
// with strict rp_filter and no source-specific rules drops the replies,
// since the unmarked reverse route to the concentrator leads into the TUN,
// not the uplink.
func (r *ClientRouting) installMarkRestore() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/src_valid_mark", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("src_valid_mark: %w", err)
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := freshTable(conn, clientTable)
	mark := binary.NativeEndian.AppendUint32(nil, r.Mark)
	udp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
	}
	save := conn.AddChain(&nftables.Chain{Name: "postmangle", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle})
	conn.AddRule(&nftables.Rule{Table: table, Chain: save, Exprs: append(append([]expr.Any{}, udp...),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	)})
	restore := conn.AddChain(&nftables.Chain{Name: "premangle", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	conn.AddRule(&nftables.Rule{Table: table, Chain: restore, Exprs: append(append([]expr.Any{}, udp...),
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	)})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: install mark restore: %w", err)
	}
	return nil
}

// freshTable queues the creation of an empty inet table called name,
// replacing any left by an earlier run.
func freshTable(conn *nftables.Conn, name string) *nftables.Table {
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)
	return table
}

// removeTable deletes braid's inet table called name.
func removeTable(name string) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	conn.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	return conn.Flush()
}

// EnableForwarding turns on IPv4 and IPv6 forwarding, unless it is on
// already (in a container /proc/sys is read-only: set it with --sysctl).
func EnableForwarding() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if cur, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(cur)) == "1" {
			continue
		}
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}

// natTable is braid's nftables table.
const natTable = "braid"

// NAT masquerades the tunnel's inner sources as they leave the
// concentrator, through nftables (table inet braid).
type NAT struct {
	TunDevice string         // traffic leaving through any other device is masqueraded...
	OutDevice string         // ...or only traffic leaving through this one, if set
	Sources   []netip.Prefix // inner pools and client LAN prefixes
}

// Install replaces braid's table with one masquerade rule per source.
func (n *NAT) Install() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := freshTable(conn, natTable)
	chain := conn.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	for _, src := range n.Sources {
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: n.masquerade(src)})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: install NAT: %w", err)
	}
	return nil
}

// masquerade is `meta nfproto F ip saddr SRC oifname (!= tun | == out) masquerade`.
func (n *NAT) masquerade(src netip.Prefix) []expr.Any {
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(12)
	if src.Addr().Is6() {
		proto, offset = unix.NFPROTO_IPV6, 8
	}
	size := uint32(src.Addr().BitLen() / 8)
	mask := net.CIDRMask(src.Bits(), src.Addr().BitLen())
	oif, op := n.TunDevice, expr.CmpOpNeq
	if n.OutDevice != "" {
		oif, op = n.OutDevice, expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.Masked().Addr().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(oif)},
		&expr.Masq{},
	}
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// Remove deletes braid's table.
func (n *NAT) Remove() error { return removeTable(natTable) }
