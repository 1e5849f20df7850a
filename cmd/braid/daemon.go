package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel"
	"github.com/spf13/cobra"
)

// initialClientMTU is the client TUN's MTU until the first path tells
// what it carries: the IPv6 minimum, which every path carries.
const initialClientMTU = 1280

// defaultConcentratorMTU is the concentrator TUN's MTU unless configured:
// a little below what a path over a 1500-byte (or PPPoE 1492-byte) link
// carries (about 1394 and 1386 bytes), so the concentrator's kernel
// itself fragments larger IPv4 packets without DF and answers the others
// with ICMP, before they reach braid. Packets a narrower path cannot carry
// still get ICMP "too big" from braid, and TCP SYNs are clamped to the
// client's paths.
const defaultConcentratorMTU = 1380

func clientCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "client --config FILE",
		Short: "Run the client: a TUN device whose traffic goes over every uplink to the concentrator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadClientWith(file, flagOverrides(cmd, map[string]string{
				"concentrator": "concentrator", "mode": "mode", "tun-name": "tun.name", "tun-mtu": "tun.mtu", "log-level": "log_level",
			}))
			if err != nil {
				return err
			}
			return runClient(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&file, "config", "/etc/braid/client.yaml", "config file")
	cmd.Flags().String("concentrator", "", "concentrator HOST:PORT (overrides the config)")
	cmd.Flags().String("mode", "", "scheduler mode: failover, aggregate, redundant, flow or auto (overrides the config)")
	cmd.Flags().String("tun-name", "", "TUN device name (overrides the config)")
	cmd.Flags().Int("tun-mtu", 0, "TUN MTU, 0 for automatic (overrides the config)")
	cmd.Flags().String("log-level", "", "debug, info, warn or error (overrides the config)")
	return cmd
}

func concentratorCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "concentrator --config FILE",
		Short: "Run the concentrator: the stable end that clients' paths join",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadConcentratorWith(file, flagOverrides(cmd, map[string]string{
				"listen": "listen", "tun-name": "tun.name", "tun-mtu": "tun.mtu", "log-level": "log_level",
			}))
			if err != nil {
				return err
			}
			return runConcentrator(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&file, "config", "/etc/braid/concentrator.yaml", "config file")
	cmd.Flags().String("listen", "", "UDP address to listen on (overrides the config)")
	cmd.Flags().String("tun-name", "", "TUN device name (overrides the config)")
	cmd.Flags().Int("tun-mtu", 0, "TUN MTU (overrides the config)")
	cmd.Flags().String("log-level", "", "debug, info, warn or error (overrides the config)")
	return cmd
}

// flagOverrides maps the flags the user set to config keys.
func flagOverrides(cmd *cobra.Command, keys map[string]string) map[string]any {
	out := map[string]any{}
	for flag, key := range keys {
		if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
			out[key] = f.Value.String()
		}
	}
	return out
}

func runClient(ctx context.Context, cfg *config.Client) error {
	log := newLogger(cfg.LogLevel)
	key, err := config.LoadPrivateKey(cfg.PrivateKeyFile)
	if err != nil {
		return err
	}
	serverKey, err := config.ParsePublicKey(cfg.ConcentratorPublicKey)
	if err != nil {
		return fmt.Errorf("key \"concentrator_public_key\": %w", err)
	}
	remote, err := resolve(cfg.Concentrator)
	if err != nil {
		return fmt.Errorf("key \"concentrator\": %w", err)
	}
	for _, u := range cfg.Uplinks {
		if u.Interface == "" {
			continue
		}
		if _, err := net.InterfaceByName(u.Interface); err != nil {
			log.Warn("uplink interface missing; waiting for it", "path", u.Name, "interface", u.Interface)
		}
	}
	tlsConf, err := transport.ClientTLS(key, serverKey)
	if err != nil {
		return err
	}
	mtu := initialClientMTU
	if cfg.Tun.MTU > 0 {
		mtu = cfg.Tun.MTU
	}
	dev, name, err := tunnel.CreateTUN(cfg.Tun.Name, mtu)
	if err != nil {
		return err
	}
	routing := &tunnel.ClientRouting{Device: name, Table: cfg.Table, Mark: cfg.FwMark, Routes: cfg.Routes, Priority: cfg.Table}
	defer routing.Remove()
	var once sync.Once
	configure := func(addrs []netip.Prefix, mtu int) error {
		if err := tunnel.ConfigureLink(name, addrs, mtu); err != nil {
			return err
		}
		var err error
		once.Do(func() { err = routing.Install() })
		return err
	}
	var uplinks []tunnel.Uplink
	defaultRoutes := false // does a match entry need the main table's default routes?
	for _, u := range cfg.Uplinks {
		defaultRoutes = defaultRoutes || u.Match == config.MatchDefaultRoute
		tu := tunnel.Uplink{
			Name: u.Name, Interface: u.Interface, Priority: u.Priority, Weight: u.Weight, Metered: u.Metered,
			Budget: budget(u), RateCap: u.RateCap.BytesPerSecond(),
			Resolve: func(iface string) (transport.DialConfig, error) {
				src := u.Source
				if !src.IsValid() {
					var err error
					if src, err = transport.UplinkSource(iface, remote.Addr().Is6()); err != nil {
						return transport.DialConfig{}, err
					}
				}
				return transport.DialConfig{Remote: remote, Interface: iface, Source: src, Mark: cfg.FwMark, TLS: tlsConf}, nil
			},
		}
		if u.Match != "" {
			tu.Match = func(i transport.Interface) bool { return u.Matches(i.Name, i.DefaultRoute) }
			tu.PathName = u.PathName
		}
		uplinks = append(uplinks, tu)
	}
	events := make(chan transport.LinkEvent, linkEventsLen)
	go func() {
		if err := transport.WatchLinks(ctx, events); err != nil {
			log.Warn("link events unavailable; cuts are found by probes alone", "err", err)
		}
	}()
	client, err := tunnel.NewClient(tunnel.ClientOptions{
		Device: dev, Uplinks: uplinks, Mode: scheduler.Mode(cfg.Mode), Copies: cfg.Redundancy, Classes: classes(cfg.Classes),
		MTU: cfg.Tun.MTU, Configure: configure,
		LinkEvents: events, UsageFile: cfg.UsageFile, Logger: log,
		Interfaces: func() ([]transport.Interface, error) { return transport.Interfaces(defaultRoutes) },
	})
	if err != nil {
		dev.Close()
		return err
	}
	go func() {
		if err := tunnel.ServeStatus(ctx, cfg.Control, func() any { return client.Status() }); err != nil {
			log.Warn("control socket", "err", err)
		}
	}()
	log.Info("client started", "tun", name, "concentrator", remote, "uplinks", len(uplinks), "mode", cfg.Mode)
	return client.Run(ctx)
}

// linkEventsLen bounds link and address events waiting for the client: a
// burst when an interface appears with its addresses.
const linkEventsLen = 16

// budget is an uplink's data budget, or nil.
func budget(u config.Uplink) *tunnel.Budget {
	if u.Budget == 0 {
		return nil
	}
	return &tunnel.Budget{Limit: uint64(u.Budget), Period: u.BudgetPeriod, StartDay: u.BudgetStartDay,
		Action: u.BudgetAction, Warn: float64(u.BudgetWarn) / 100}
}

// classes turns the config's traffic classes into the scheduler's.
func classes(in []config.Class) []scheduler.Class {
	var out []scheduler.Class
	for _, c := range in {
		out = append(out, scheduler.Class{
			Name: c.Name, Mode: scheduler.Mode(c.Mode), Copies: c.Copies, Interactive: c.Interactive,
			Proto: uint8(c.Protocol), Ports: portRanges(c.Ports), SrcPorts: portRanges(c.SrcPorts), DstPorts: portRanges(c.DstPorts),
			DSCP: dscps(c.DSCP), Src: c.Src, Dst: c.Dst,
		})
	}
	return out
}

func portRanges(in []config.PortRange) []scheduler.PortRange {
	var out []scheduler.PortRange
	for _, r := range in {
		out = append(out, scheduler.PortRange{Lo: r.Lo, Hi: r.Hi})
	}
	return out
}

func dscps(in []config.DSCP) []uint8 {
	var out []uint8
	for _, d := range in {
		out = append(out, uint8(d))
	}
	return out
}

// resolve turns HOST:PORT into an address, once, at start.
func resolve(hostport string) (netip.AddrPort, error) {
	a, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("cannot resolve %q: %w", hostport, err)
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func runConcentrator(ctx context.Context, cfg *config.Concentrator) error {
	log := newLogger(cfg.LogLevel)
	key, err := config.LoadPrivateKey(cfg.PrivateKeyFile)
	if err != nil {
		return err
	}
	var peers []tunnel.Peer
	var routed []netip.Prefix
	for i, c := range cfg.Clients {
		pub, err := config.ParsePublicKey(c.PublicKey)
		if err != nil {
			return fmt.Errorf("key \"clients[%d].public_key\": %w", i, err)
		}
		peers = append(peers, tunnel.Peer{Name: c.Name, PublicKey: pub, Prefixes: c.Prefixes})
		routed = append(routed, c.Prefixes...)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen))
	if err != nil {
		return fmt.Errorf("key \"listen\": %w", err)
	}
	defer conn.Close()
	mtu := defaultConcentratorMTU
	if cfg.Tun.MTU > 0 {
		mtu = cfg.Tun.MTU
	}
	dev, name, err := tunnel.CreateTUN(cfg.Tun.Name, mtu)
	if err != nil {
		return err
	}
	conc, err := tunnel.NewConcentrator(tunnel.ConcentratorOptions{
		Device: dev, Conn: conn, PrivateKey: key, Peers: peers,
		Pool4: cfg.Pool.IPv4, Pool6: cfg.Pool.IPv6, StateFile: cfg.StateFile,
		GracePeriod: cfg.GracePeriod, MTU: mtu, Logger: log,
	})
	if err != nil {
		dev.Close()
		return err
	}
	if err := setupConcentratorHost(name, mtu, conc.TunAddresses(), routed, cfg); err != nil {
		dev.Close()
		return err
	}
	if cfg.NAT.Enabled {
		defer (&tunnel.NAT{}).Remove()
	}
	go func() {
		if err := tunnel.ServeStatus(ctx, cfg.Control, func() any { return conc.Status() }); err != nil {
			log.Warn("control socket", "err", err)
		}
	}()
	log.Info("concentrator started", "listen", conn.LocalAddr(), "tun", name, "clients", len(peers))
	return conc.Run(ctx)
}

// setupConcentratorHost configures the TUN, routes the clients' LAN
// prefixes into it, turns on forwarding and installs egress NAT.
func setupConcentratorHost(dev string, mtu int, addrs, routed []netip.Prefix, cfg *config.Concentrator) error {
	if err := tunnel.ConfigureLink(dev, addrs, mtu); err != nil {
		return err
	}
	if err := tunnel.AddRoutes(dev, 0, routed); err != nil {
		return err
	}
	if err := tunnel.EnableForwarding(); err != nil {
		return err
	}
	if !cfg.NAT.Enabled {
		return nil
	}
	var sources []netip.Prefix
	for _, p := range []netip.Prefix{cfg.Pool.IPv4, cfg.Pool.IPv6} {
		if p.IsValid() {
			sources = append(sources, p.Masked())
		}
	}
	nat := &tunnel.NAT{TunDevice: dev, OutDevice: cfg.NAT.Interface, Sources: append(sources, routed...)}
	return nat.Install()
}
