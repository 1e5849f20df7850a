package tunnel

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/braid-tunnel/braid/e2e/lab"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// inNamespace runs fn in a fresh network namespace (root only).
func inNamespace(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("BRAID_E2E") == "1" {
			t.Fatal("BRAID_E2E=1 but not root")
		}
		t.Skip("needs root (network namespaces)")
	}
	l, err := lab.New("bt")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ns, err := l.NS("sys")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// chains lists the chains of braid's inet table name.
func chains(t *testing.T, name string) []string {
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	all, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range all {
		if c.Table.Name == name {
			rules, _ := conn.GetRules(c.Table, c)
			out = append(out, c.Name+":"+strings.Repeat("r", len(rules)))
		}
	}
	return out
}

func markRules(t *testing.T, mark uint32) int {
	rules, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules {
		if r.Mark == mark && r.Invert || r.SuppressPrefixlen == 0 && r.Table == unix.RT_TABLE_MAIN {
			n++
		}
	}
	return n
}

func TestClientRoutingInstallAndRemove(t *testing.T) {
	inNamespace(t, func() error {
		dev, name, err := CreateTUN("braidtest0", 1280)
		if err != nil {
			return err
		}
		defer dev.Close()
		if err := ConfigureLink(name, []netip.Prefix{netip.MustParsePrefix("100.96.0.2/16"), netip.MustParsePrefix("fd62::2/64")}, 1400); err != nil {
			return err
		}
		r := &ClientRouting{Device: name, Table: 7800, Mark: 0x7800, Priority: 7800,
			Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
		if err := r.Install(); err != nil {
			return err
		}
		if n := markRules(t, 0x7800); n != 4 {
			t.Errorf("%d policy rules installed, want 4 (suppress and not-fwmark, for each family)", n)
		}
		routes, _ := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 7800}, netlink.RT_FILTER_TABLE)
		if len(routes) != 2 {
			t.Errorf("table 7800 has %d routes, want 2 defaults", len(routes))
		}
		if got := chains(t, clientTable); len(got) != 2 || !strings.HasSuffix(got[0], ":r") || !strings.HasSuffix(got[1], ":r") {
			t.Errorf("nftables chains %v, want postmangle and premangle with a rule each", got)
		}
		if v, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/src_valid_mark"); strings.TrimSpace(string(v)) != "1" {
			t.Errorf("src_valid_mark = %q", v)
		}
		r.Remove()
		if n := markRules(t, 0x7800); n != 0 {
			t.Errorf("%d policy rules left after Remove", n)
		}
		if got := chains(t, clientTable); len(got) != 0 {
			t.Errorf("nftables chains left after Remove: %v", got)
		}
		return nil
	})
}

func TestNATInstallAndRemove(t *testing.T) {
	inNamespace(t, func() error {
		n := &NAT{TunDevice: "braid0", Sources: []netip.Prefix{netip.MustParsePrefix("100.96.0.0/16"), netip.MustParsePrefix("fd62::/64")}}
		if err := n.Install(); err != nil {
			return err
		}
		if err := n.Install(); err != nil { // again, as after a restart
			return err
		}
		if got := chains(t, natTable); len(got) != 1 || got[0] != "postrouting:rr" {
			t.Errorf("NAT chains %v, want postrouting with one rule per source", got)
		}
		if err := n.Remove(); err != nil {
			return err
		}
		if got := chains(t, natTable); len(got) != 0 {
			t.Errorf("NAT chains left after Remove: %v", got)
		}
		return nil
	})
}

// TestKernelDropped: packets the kernel drops because a TUN device's
// reader does not keep up show in kernelDropped. The test routes UDP into
// a TUN nobody reads, more than its queue holds.
func TestKernelDropped(t *testing.T) {
	inNamespace(t, func() error {
		dev, name, err := CreateTUN("bt0", 1400)
		if err != nil {
			return err
		}
		defer dev.Close()
		if err := ConfigureLink(name, []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}, 0); err != nil {
			return err
		}
		before, ok := kernelDropped(dev)
		if !ok {
			t.Fatalf("no statistics for %s", name)
		}
		conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(10, 99, 0, 2), Port: 9})
		if err != nil {
			return err
		}
		defer conn.Close()
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		queue := link.Attrs().TxQLen
		sent := 0
		for range queue + 500 {
			if _, err := conn.Write(make([]byte, 100)); err == nil {
				sent++
			}
		}
		after, _ := kernelDropped(dev)
		if after-before < 500 || after-before > uint64(sent) {
			t.Errorf("kernel dropped %d of %d packets sent into a TUN whose queue holds %d, want at least 500", after-before, sent, queue)
		}
		return nil
	})
}

// TestKernelDroppedNotKernel: a device that is not the kernel's has no
// such count.
func TestKernelDroppedNotKernel(t *testing.T) {
	if _, ok := kernelDropped(tuntest.NewChannelTUN().TUN()); ok {
		t.Error("a channel TUN has kernel statistics")
	}
}
