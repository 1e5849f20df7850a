// The standard braid topology built by NewTopology. Every link carries
// IPv4 and IPv6; ".N" is the host part in the link's prefixes. [x] is
// namespace <prefix>-x; the same namespace appears on several lines.
//
//	            192.168.50.0/24                 10.101.0.0/24                     10.111.0.0/24
//	            fd00:50::/64                    fd00:101::/64                     fd00:111::/64
//	[lanhost] eth0 .2 ---- .1 lan0 [client] up1 .2 -------- .1 cust0 [isp1] core0 .2 -------- .1 isp1 [core]
//	                              [client] up2 .2 -------- .1 cust0 [isp2] core0 .2 -------- .1 isp2 [core]
//	                                            10.102.0.0/24                     10.112.0.0/24
//	                                            fd00:102::/64                     fd00:112::/64
//
//	                10.200.0.0/24                     10.210.0.0/24
//	                fd00:200::/64                     fd00:210::/64
//	[core] conc0 .1 -------- .2 wan0 [conc] srv0 .1 -------- .2 eth0 [server]
//
// client: main table default via isp1 (v4 and v6); per-uplink tables 101
// and 102 (connected prefix + default via that ISP) selected by
// `from <uplink address> lookup 10x` rules at preference 1000, so a socket
// bound to an uplink address leaves through that uplink.
// lanhost: default via client; without braid's tunnel, LAN traffic goes
// no further than the ISPs, which have no route back to the LAN (the
// client does not NAT). isp1/isp2: default via core; masquerade
// out of core0 (the ISP's NAT, also NAT66); optional tbf on cust0 and core0
// (so the rate applies in each direction); an Impairer between cust0 and
// core0. core: connected routes only, it knows neither the client's nor
// the LAN's prefixes. conc: default via core. server: default via conc.

package lab

import (
	"net/netip"
	"time"
)

// Device names in the ISP namespaces of a Topology.
const (
	ISPClientDev = "cust0" // toward the client
	ISPCoreDev   = "core0" // toward the core, masqueraded
)

// SourceRulePref is the preference of the client's per-uplink source rules.
const SourceRulePref = 1000

// TopologyOptions configures the ISPs of a Topology. Zero values mean
// unshaped, no delay, no jitter, no loss.
type TopologyOptions struct {
	Rate1, Rate2     uint64 // bit/s, each direction
	Delay1, Delay2   time.Duration
	Jitter1, Jitter2 time.Duration
	Loss1, Loss2     float64
	// Direct leaves out the userspace Impairers (Imp1 and Imp2 are nil),
	// so the ISPs forward at kernel speed: for throughput baselines.
	Direct bool
}

// Topology is braid's standard lab: a client with two ISP uplinks and a
// LAN host, a core network, and a concentrator with a server behind it.
// See the diagram at the top of topology.go.
type Topology struct {
	Lab *Lab

	Client, ISP1, ISP2, Core, Conc, Server, LANHost *NS

	// Client devices and per-uplink routing tables.
	Uplink1Dev, Uplink2Dev, LANDev string
	Uplink1Table, Uplink2Table     int

	// Client uplink addresses and their ISP gateways.
	ClientUplink1Addr, ClientUplink1Addr6 netip.Addr
	ClientUplink2Addr, ClientUplink2Addr6 netip.Addr
	ISP1Gateway, ISP1Gateway6             netip.Addr
	ISP2Gateway, ISP2Gateway6             netip.Addr
	// Uplink1Prefix, Uplink2Prefix (and 6) are the client-ISP links.
	Uplink1Prefix, Uplink1Prefix6 netip.Prefix
	Uplink2Prefix, Uplink2Prefix6 netip.Prefix

	// ISP NAT addresses: the source the concentrator sees per uplink.
	ISP1PublicAddr, ISP1PublicAddr6 netip.Addr
	ISP2PublicAddr, ISP2PublicAddr6 netip.Addr

	// Concentrator's public address on the core, and its server side.
	ConcAddr, ConcAddr6             netip.Addr
	ConcServerAddr, ConcServerAddr6 netip.Addr // conc on srv0
	ServerAddr, ServerAddr6         netip.Addr
	ServerPrefix, ServerPrefix6     netip.Prefix

	// Client's LAN.
	ClientLANAddr, ClientLANAddr6 netip.Addr // client on lan0
	LANHostAddr, LANHostAddr6     netip.Addr
	LANPrefix, LANPrefix6         netip.Prefix

	// Impairers on the ISPs, between cust0 and core0 (nil if Direct).
	Imp1, Imp2 *Impairer

	direct bool
}

// ip and pfx parse literals of the address plan.
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// NewTopology builds the standard topology in a new Lab whose namespaces
// are named <prefix><id>-<name>. On error everything built is removed.
func NewTopology(prefix string, opt TopologyOptions) (_ *Topology, err error) {
	l, err := New(prefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	t := &Topology{
		direct:       opt.Direct,
		Lab:          l,
		Uplink1Dev:   "up1",
		Uplink2Dev:   "up2",
		LANDev:       "lan0",
		Uplink1Table: 101,
		Uplink2Table: 102,

		ClientUplink1Addr: ip("10.101.0.2"), ClientUplink1Addr6: ip("fd00:101::2"),
		ClientUplink2Addr: ip("10.102.0.2"), ClientUplink2Addr6: ip("fd00:102::2"),
		ISP1Gateway: ip("10.101.0.1"), ISP1Gateway6: ip("fd00:101::1"),
		ISP2Gateway: ip("10.102.0.1"), ISP2Gateway6: ip("fd00:102::1"),
		Uplink1Prefix: pfx("10.101.0.0/24"), Uplink1Prefix6: pfx("fd00:101::/64"),
		Uplink2Prefix: pfx("10.102.0.0/24"), Uplink2Prefix6: pfx("fd00:102::/64"),
		ISP1PublicAddr: ip("10.111.0.2"), ISP1PublicAddr6: ip("fd00:111::2"),
		ISP2PublicAddr: ip("10.112.0.2"), ISP2PublicAddr6: ip("fd00:112::2"),
		ConcAddr: ip("10.200.0.2"), ConcAddr6: ip("fd00:200::2"),
		ConcServerAddr: ip("10.210.0.1"), ConcServerAddr6: ip("fd00:210::1"),
		ServerAddr: ip("10.210.0.2"), ServerAddr6: ip("fd00:210::2"),
		ServerPrefix: pfx("10.210.0.0/24"), ServerPrefix6: pfx("fd00:210::/64"),
		ClientLANAddr: ip("192.168.50.1"), ClientLANAddr6: ip("fd00:50::1"),
		LANHostAddr: ip("192.168.50.2"), LANHostAddr6: ip("fd00:50::2"),
		LANPrefix: pfx("192.168.50.0/24"), LANPrefix6: pfx("fd00:50::/64"),
	}
	for _, ns := range []struct {
		p    **NS
		name string
	}{
		{&t.Client, "client"}, {&t.ISP1, "isp1"}, {&t.ISP2, "isp2"}, {&t.Core, "core"},
		{&t.Conc, "conc"}, {&t.Server, "server"}, {&t.LANHost, "lanhost"},
	} {
		if *ns.p, err = l.NS(ns.name); err != nil {
			return nil, err
		}
	}
	isps := []ispConfig{{
		ns: t.ISP1, up: t.Uplink1Dev, table: t.Uplink1Table, coreDev: "isp1",
		client: [2]netip.Addr{t.ClientUplink1Addr, t.ClientUplink1Addr6},
		gw:     [2]netip.Addr{t.ISP1Gateway, t.ISP1Gateway6},
		public: [2]netip.Addr{t.ISP1PublicAddr, t.ISP1PublicAddr6},
		core:   [2]netip.Addr{ip("10.111.0.1"), ip("fd00:111::1")},
		rate:   opt.Rate1, imp: Impairment{opt.Delay1, opt.Jitter1, opt.Loss1}, dst: &t.Imp1,
	}, {
		ns: t.ISP2, up: t.Uplink2Dev, table: t.Uplink2Table, coreDev: "isp2",
		client: [2]netip.Addr{t.ClientUplink2Addr, t.ClientUplink2Addr6},
		gw:     [2]netip.Addr{t.ISP2Gateway, t.ISP2Gateway6},
		public: [2]netip.Addr{t.ISP2PublicAddr, t.ISP2PublicAddr6},
		core:   [2]netip.Addr{ip("10.112.0.1"), ip("fd00:112::1")},
		rate:   opt.Rate2, imp: Impairment{opt.Delay2, opt.Jitter2, opt.Loss2}, dst: &t.Imp2,
	}}
	for _, c := range isps {
		if err := t.buildISP(c); err != nil {
			return nil, err
		}
	}
	if err := t.buildRest(); err != nil {
		return nil, err
	}
	return t, nil
}

// ispConfig describes one ISP of a Topology. Address pairs are IPv4, IPv6.
type ispConfig struct {
	ns      *NS
	up      string // client device
	table   int    // client routing table
	coreDev string // core device toward the ISP
	client  [2]netip.Addr
	gw      [2]netip.Addr // ISP on cust0
	public  [2]netip.Addr // ISP on core0
	core    [2]netip.Addr // core toward the ISP
	rate    uint64
	imp     Impairment
	dst     **Impairer
}

// buildISP wires client - ISP - core for one uplink.
func (t *Topology) buildISP(c ispConfig) error {
	l, isp := t.Lab, c.ns
	if _, err := l.Veth(t.Client, c.up, prefixes(c.client[:]), isp, ISPClientDev, prefixes(c.gw[:])); err != nil {
		return err
	}
	if _, err := l.Veth(isp, ISPCoreDev, prefixes(c.public[:]), t.Core, c.coreDev, prefixes(c.core[:])); err != nil {
		return err
	}
	for f, link := range prefixes(c.client[:]) {
		// Client: per-uplink table and source rule.
		if err := t.Client.AddTableRoute(c.table, link.Masked(), netip.Addr{}, c.up); err != nil {
			return err
		}
		if err := t.Client.AddTableRoute(c.table, defaultRoute(c.gw[f]), c.gw[f], c.up); err != nil {
			return err
		}
		if err := t.Client.AddSourceRule(netip.PrefixFrom(c.client[f], c.client[f].BitLen()), c.table, SourceRulePref); err != nil {
			return err
		}
		// ISP: default via core.
		if err := isp.AddRoute(defaultRoute(c.core[f]), c.core[f], ISPCoreDev); err != nil {
			return err
		}
	}
	if err := isp.Masquerade(ISPCoreDev); err != nil {
		return err
	}
	if c.rate > 0 {
		for _, dev := range []string{ISPClientDev, ISPCoreDev} {
			if err := isp.Shape(dev, c.rate); err != nil {
				return err
			}
		}
	}
	if t.direct {
		return nil
	}
	imp, err := isp.Impair(ISPClientDev, ISPCoreDev, c.imp)
	if err != nil {
		return err
	}
	*c.dst = imp
	return nil
}

// buildRest wires the LAN, core - conc - server, and default routes.
func (t *Topology) buildRest() error {
	l := t.Lab
	link := func(a *NS, aDev string, aAddrs []netip.Addr, b *NS, bDev string, bAddrs []netip.Addr) error {
		_, err := l.Veth(a, aDev, prefixes(aAddrs), b, bDev, prefixes(bAddrs))
		return err
	}
	if err := link(t.Client, t.LANDev, []netip.Addr{t.ClientLANAddr, t.ClientLANAddr6},
		t.LANHost, "eth0", []netip.Addr{t.LANHostAddr, t.LANHostAddr6}); err != nil {
		return err
	}
	coreConc4, coreConc6 := ip("10.200.0.1"), ip("fd00:200::1")
	if err := link(t.Core, "conc0", []netip.Addr{coreConc4, coreConc6},
		t.Conc, "wan0", []netip.Addr{t.ConcAddr, t.ConcAddr6}); err != nil {
		return err
	}
	if err := link(t.Conc, "srv0", []netip.Addr{t.ConcServerAddr, t.ConcServerAddr6},
		t.Server, "eth0", []netip.Addr{t.ServerAddr, t.ServerAddr6}); err != nil {
		return err
	}
	defaults := []struct {
		ns  *NS
		gw  netip.Addr
		dev string
	}{
		{t.Client, t.ISP1Gateway, t.Uplink1Dev}, {t.Client, t.ISP1Gateway6, t.Uplink1Dev},
		{t.LANHost, t.ClientLANAddr, "eth0"}, {t.LANHost, t.ClientLANAddr6, "eth0"},
		{t.Conc, coreConc4, "wan0"}, {t.Conc, coreConc6, "wan0"},
		{t.Server, t.ConcServerAddr, "eth0"}, {t.Server, t.ConcServerAddr6, "eth0"},
	}
	for _, d := range defaults {
		if err := d.ns.AddRoute(defaultRoute(d.gw), d.gw, d.dev); err != nil {
			return err
		}
	}
	return nil
}

// prefixes gives each address its link prefix: every link of the
// topology is a /24 (IPv4) and a /64 (IPv6).
func prefixes(addrs []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		bits := 64
		if a.Is4() {
			bits = 24
		}
		out = append(out, netip.PrefixFrom(a, bits))
	}
	return out
}

// defaultRoute returns 0.0.0.0/0 or ::/0, matching a's family.
func defaultRoute(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// Close removes the whole topology. It is idempotent.
func (t *Topology) Close() error { return t.Lab.Close() }

// ISP returns the namespace of ISP i (1 or 2).
func (t *Topology) ISP(i int) *NS {
	if i == 1 {
		return t.ISP1
	}
	return t.ISP2
}

// Imp returns the Impairer of ISP i (1 or 2).
func (t *Topology) Imp(i int) *Impairer {
	if i == 1 {
		return t.Imp1
	}
	return t.Imp2
}

// SetUplinkUp cuts (false) or restores (true) uplink i (1 or 2) by taking
// the ISP's end of the client link down: the client's device loses
// carrier, as when a modem's upstream fails, and keeps its addresses and
// routes, so braid sees the link go down and come back.
func (t *Topology) SetUplinkUp(i int, up bool) error {
	return t.ISP(i).SetLinkUp(ISPClientDev, up)
}
