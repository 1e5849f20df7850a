package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
	"github.com/braid-tunnel/braid/tunnel"
)

// Roaming and hot-plug (issue 5, item 3): an uplink whose address
// changes keeps the session; an interface plugged while the client runs,
// named in the config or matched by a pattern, carries traffic within
// about a second. The figures are for the report (grep REPORT).

// pathState returns the client's path called name (ok false if it has
// none now).
func (e *Env) pathState(name string) (tunnel.PathStatus, bool, error) {
	st, err := e.ClientStatus()
	if err != nil {
		return tunnel.PathStatus{}, false, err
	}
	for _, p := range st.Paths {
		if p.Name == name {
			return p, true, nil
		}
	}
	return tunnel.PathStatus{}, false, nil
}

// waitPath polls (the status is the only view from outside the process)
// until the path called name satisfies cond, and returns how long that
// took from start.
func (e *Env) waitPath(ctx context.Context, name string, start time.Time, timeout time.Duration, cond func(tunnel.PathStatus) bool) (time.Duration, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p, ok, err := e.pathState(name)
		if err != nil {
			return 0, err
		}
		if ok && cond(p) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("path %s: not as awaited %v after start (present %v, state %s, local %s)", name, timeout, ok, p.State, p.Local)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// waitTraffic waits until the path called name carries data (more than a
// few packets beyond what it had sent at the first look, 0 if absent).
func (e *Env) waitTraffic(ctx context.Context, name string, start time.Time, timeout time.Duration) (time.Duration, error) {
	p, _, err := e.pathState(name)
	if err != nil {
		return 0, err
	}
	first := p.TxPackets
	return e.waitPath(ctx, name, start, timeout, func(p tunnel.PathStatus) bool {
		if p.TxPackets < first { // a fresh path counts from zero
			first = 0
		}
		return p.State == "up" && p.TxPackets > first+10
	})
}

// moveUplink1 gives uplink 1 the address to in place of from, as a DHCP
// client would on a renewal with a new lease: the new address, its source
// rule, then the old one removed (promote_secondaries keeps the new one
// when the old primary goes).
func (e *Env) moveUplink1(from, to netip.Addr) error {
	t := e.Topo
	if err := t.Client.Sysctl("net/ipv4/conf/"+t.Uplink1Dev+"/promote_secondaries", "1"); err != nil {
		return err
	}
	if err := t.Client.AddAddrs(t.Uplink1Dev, netip.PrefixFrom(to, 24)); err != nil {
		return err
	}
	err := t.Client.AddSourceRule(netip.PrefixFrom(to, 32), t.Uplink1Table, lab.SourceRulePref)
	if err != nil && !strings.Contains(err.Error(), "exists") {
		return err
	}
	return t.Client.DelAddrs(t.Uplink1Dev, netip.PrefixFrom(from, 24))
}

// settleLab readies a fresh lab for a measurement. It waits for the inner
// MTU, which follows the paths after they are up and, settled, does not
// disturb what is measured. Then it sends a short UDP stream through the
// tunnel: the first packets of a fresh lab wait for neighbour resolution
// on the way, which drops some at 1000 packets/s.
func settleLab(t *testing.T, ctx context.Context, e *Env) {
	t.Helper()
	if err := e.WaitMTU(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Call(ctx, 100, time.Second); err != nil {
		t.Fatal(err)
	}
}

// renewUplink1 gives uplink 1 the address to after it had none, with
// the routes a DHCP client sets up (the kernel flushed them with the last
// address).
func (e *Env) renewUplink1(to netip.Addr) error {
	t := e.Topo
	if err := t.Client.AddAddrs(t.Uplink1Dev, netip.PrefixFrom(to, 24)); err != nil {
		return err
	}
	err := t.Client.AddSourceRule(netip.PrefixFrom(to, 32), t.Uplink1Table, lab.SourceRulePref)
	if err != nil && !strings.Contains(err.Error(), "exists") {
		return err
	}
	if err := t.Client.AddTableRoute(t.Uplink1Table, t.Uplink1Prefix, netip.Addr{}, t.Uplink1Dev); err != nil {
		return err
	}
	if err := t.Client.AddTableRoute(t.Uplink1Table, netip.MustParsePrefix("0.0.0.0/0"), t.ISP1Gateway, t.Uplink1Dev); err != nil {
		return err
	}
	return t.Client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), t.ISP1Gateway, t.Uplink1Dev)
}

// TestAddressChange changes uplink 1's address under a TCP transfer, back
// under a 1000 packets/s UDP stream, then removes it and gives it a new
// one half a second later (break before make) under the stream again:
// the session and the inner address are kept, and the path is redialled
// from the new address.
func TestAddressChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := start(t, Options{Links: shaped})
	settleLab(t, ctx, e)
	before, err := e.ClientStatus()
	if err != nil {
		t.Fatal(err)
	}
	oldAddr, newAddr := e.Topo.ClientUplink1Addr, netip.MustParseAddr("10.101.0.3")

	change := func(from, to netip.Addr, redial *time.Duration) func() error {
		return func() error {
			start := time.Now()
			if err := e.moveUplink1(from, to); err != nil {
				return err
			}
			d, err := e.waitPath(ctx, "isp1", start, 10*time.Second, func(p tunnel.PathStatus) bool {
				return p.State == "up" && strings.HasPrefix(p.Local, to.String()+":")
			})
			*redial = d
			return err
		}
	}
	var redial1, redial2 time.Duration
	wait := schedule(t, []step{{2 * time.Second, change(oldAddr, newAddr, &redial1)}})
	tcp, err := e.Transfer(ctx, 0, 6*time.Second, nil)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	if !tcp.Intact {
		t.Fatalf("data damaged: %s", tcp)
	}
	wait = schedule(t, []step{{2 * time.Second, change(newAddr, oldAddr, &redial2)}})
	call, err := e.Call(ctx, 1000, 6*time.Second)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	var redial3 time.Duration
	third := netip.MustParseAddr("10.101.0.4")
	wait = schedule(t, []step{
		{2 * time.Second, func() error { return e.Topo.Client.DelAddrs(e.Topo.Uplink1Dev, netip.PrefixFrom(oldAddr, 24)) }},
		{2500 * time.Millisecond, func() error {
			start := time.Now()
			if err := e.renewUplink1(third); err != nil {
				return err
			}
			d, err := e.waitPath(ctx, "isp1", start, 10*time.Second, func(p tunnel.PathStatus) bool {
				return p.State == "up" && strings.HasPrefix(p.Local, third.String()+":")
			})
			redial3 = d
			return err
		}},
	})
	call2, err := e.Call(ctx, 1000, 6*time.Second)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	after := sessionKept(t, e, before)
	if !slices.Equal(after.Addresses, before.Addresses) {
		t.Errorf("inner addresses changed from %v to %v", before.Addresses, after.Addresses)
	}
	t.Logf("REPORT address change on uplink 1 (%s -> %s) under TCP: longest stall %v (ending at %v, change at 2 s); path redialled from the new address %v after the change",
		oldAddr, newAddr, tcp.LongestStall.Round(time.Millisecond), tcp.StallEnd.Round(time.Millisecond), redial1.Round(time.Millisecond))
	t.Logf("REPORT address change on uplink 1 (%s -> %s) under a 1000 pkt/s call: %s; path redialled %v after the change; session kept %v, same inner address %v",
		newAddr, oldAddr, call, redial2.Round(time.Millisecond), after.Session == before.Session, slices.Equal(after.Addresses, before.Addresses))
	t.Logf("REPORT uplink 1 loses its address (at 2 s) and gets %s 0.5 s later under a 1000 pkt/s call: %s; path up from the new address %v after it was given; session kept %v, same inner address %v",
		third, call2, redial3.Round(time.Millisecond), after.Session == before.Session, slices.Equal(after.Addresses, before.Addresses))
}

// plugged is an interface plugged into the client while it runs: a veth
// to ISP 2 on a link of its own, with the routing a DHCP client would set
// up (a table with the connected prefix and a default route, selected by
// a source rule).
type plugged struct {
	dev, ispDev string
	client, gw  netip.Addr
	table       int
}

func (e *Env) plug(p plugged) error {
	t := e.Topo
	if _, err := t.Lab.Veth(t.Client, p.dev, []netip.Prefix{netip.PrefixFrom(p.client, 24)},
		t.ISP2, p.ispDev, []netip.Prefix{netip.PrefixFrom(p.gw, 24)}); err != nil {
		return err
	}
	if err := t.Client.AddTableRoute(p.table, netip.PrefixFrom(p.client, 24).Masked(), netip.Addr{}, p.dev); err != nil {
		return err
	}
	if err := t.Client.AddTableRoute(p.table, netip.MustParsePrefix("0.0.0.0/0"), p.gw, p.dev); err != nil {
		return err
	}
	err := t.Client.AddSourceRule(netip.PrefixFrom(p.client, 32), p.table, lab.SourceRulePref)
	if err != nil && !strings.Contains(err.Error(), "exists") {
		return err
	}
	return nil
}

func (e *Env) unplug(p plugged) error { return e.Topo.Client.DelLink(p.dev) }

// TestPluggedInterface starts the client with an uplink whose interface
// is missing and a match entry that matches nothing, both preferred to
// the lab's two uplinks, then plugs each in turn under a 1000 packets/s
// UDP stream: each carries the traffic soon after it is plugged, and its
// path goes when it is unplugged.
func TestPluggedInterface(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	requireRoot(t)
	e := build(t, Options{Links: shaped, UpPaths: 2, Uplinks: `  - name: isp1
    interface: up1
    priority: 1
  - name: isp2
    interface: up2
    priority: 2
  - name: lte
    interface: wwan0
    priority: 0
  - name: wifi
    match: "wl*"
    priority: 0
`})
	up(t, ctx, e)
	settleLab(t, ctx, e)
	before, err := e.ClientStatus()
	if err != nil {
		t.Fatal(err)
	}
	wwan := plugged{dev: "wwan0", ispDev: "cust1", client: netip.MustParseAddr("10.103.0.2"), gw: netip.MustParseAddr("10.103.0.1"), table: 103}
	wlan := plugged{dev: "wlan0", ispDev: "cust2", client: netip.MustParseAddr("10.104.0.2"), gw: netip.MustParseAddr("10.104.0.1"), table: 104}

	plugAndWait := func(p plugged, path string, total, usable *time.Duration) func() error {
		return func() error {
			start := time.Now()
			if err := e.plug(p); err != nil {
				return err
			}
			ready := time.Now()
			d, err := e.waitTraffic(ctx, path, start, 10*time.Second)
			*total, *usable = d, d-ready.Sub(start)
			return err
		}
	}
	unplugAndWait := func(p plugged, path string) func() error {
		return func() error {
			if err := e.unplug(p); err != nil {
				return err
			}
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if _, ok, err := e.pathState(path); err != nil || !ok {
					return err
				}
			}
			return fmt.Errorf("path %s still there 5 s after %s was unplugged", path, p.dev)
		}
	}
	var lteTotal, lteUsable, wifiTotal, wifiUsable time.Duration
	wait := schedule(t, []step{
		{1 * time.Second, plugAndWait(wwan, "lte", &lteTotal, &lteUsable)},
		{4 * time.Second, func() error { return e.unplug(wwan) }},
		{5 * time.Second, plugAndWait(wlan, "wifi-wlan0", &wifiTotal, &wifiUsable)},
		{8 * time.Second, unplugAndWait(wlan, "wifi-wlan0")},
	})
	call, err := e.Call(ctx, 1000, 14*time.Second)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	sessionKept(t, e, before)
	t.Logf("REPORT newly plugged interface carries traffic: configured uplink missing at start (wwan0) %.2f s after the plug began (%.2f s after its address and routes were in place); matched interface (wlan0 by \"wl*\") %.2f s (%.2f s); call 1000 pkt/s over both plugs and unplugs: %s",
		lteTotal.Seconds(), lteUsable.Seconds(), wifiTotal.Seconds(), wifiUsable.Seconds(), call)
}

// TestDefaultRouteMatch: a `match: default-route` entry makes a path over
// the interface with the main table's default route (uplink 1), which
// goes when the route goes and comes back with it, under a 1000
// packets/s UDP stream.
func TestDefaultRouteMatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	requireRoot(t)
	e := build(t, Options{Links: shaped, UpPaths: 2, Uplinks: `  - name: any
    match: default-route
  - name: isp2
    interface: up2
    priority: 1
`})
	up(t, ctx, e)
	settleLab(t, ctx, e)
	tp := e.Topo
	def := netip.MustParsePrefix("0.0.0.0/0")
	if _, ok, err := e.pathState("any-up1"); err != nil || !ok {
		t.Fatalf("no path any-up1 at start (%v)", err)
	}
	var gone, back time.Duration
	wait := schedule(t, []step{
		{2 * time.Second, func() error {
			start := time.Now()
			if err := tp.Client.DelRoute(def, tp.Uplink1Dev); err != nil {
				return err
			}
			// The IPv6 default route through up1 still makes it match.
			if err := tp.Client.DelRoute(netip.MustParsePrefix("::/0"), tp.Uplink1Dev); err != nil {
				return err
			}
			for time.Since(start) < 5*time.Second {
				if _, ok, err := e.pathState("any-up1"); err != nil || !ok {
					gone = time.Since(start)
					return err
				}
				time.Sleep(10 * time.Millisecond)
			}
			return fmt.Errorf("path any-up1 still there 5 s after the default routes went")
		}},
		{4 * time.Second, func() error {
			start := time.Now()
			if err := tp.Client.AddRoute(def, tp.ISP1Gateway, tp.Uplink1Dev); err != nil {
				return err
			}
			var err error
			back, err = e.waitTraffic(ctx, "any-up1", start, 10*time.Second)
			return err
		}},
	})
	call, err := e.Call(ctx, 1000, 7*time.Second)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("REPORT match default-route: path closed %v after uplink 1's default routes were deleted; back and carrying traffic %.2f s after the route was added; call 1000 pkt/s: %s",
		gone.Round(time.Millisecond), back.Seconds(), call)
}
