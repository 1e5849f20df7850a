package tunnel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/e2e/proxy"
	"github.com/braid-tunnel/braid/scheduler"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// pathNamed returns the named path of a status.
func pathNamed(t *testing.T, paths []PathStatus, name string) PathStatus {
	t.Helper()
	for _, p := range paths {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no path %q in %+v", name, paths)
	return PathStatus{}
}

// budgetHarness runs a client whose preferred path, wifi, has a small
// budget with action, and whose lte path has none; a first transfer uses
// the budget up. It returns the client's and the server's stacks.
func budgetHarness(t *testing.T, action string) (*harness, *netstack.Net, *netstack.Net) {
	const limit = 256 << 10
	h := newHarness(t)
	server := h.netstackConcentrator()
	h.budgets = map[int]*Budget{0: {Limit: limit, Period: config.PeriodDaily, Action: action, Warn: 0.5}}
	client := h.netstackClient(scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	transfer(t, client, server, 2<<20, nil)
	// The meter counts at the sender's ticks (probeInterval): over
	// loopback, 2 MiB may be through before the next one.
	waitFor(t, "wifi's budget used up", 5*time.Second, func() bool {
		return h.client.Status().Budgets[0].State == "exhausted"
	})
	if b := h.client.Status().Budgets[0]; b.UsedBytes < limit || b.Uplink != "wifi" || b.Action != action {
		t.Fatalf("budget after 2 MiB: %+v", b)
	}
	if p := pathNamed(t, h.client.Status().Paths, "lte"); p.TxPackets == 0 {
		transferPort(t, client, server, 5009, 256<<10)
		if p := pathNamed(t, h.client.Status().Paths, "lte"); p.TxPackets == 0 {
			t.Error("traffic did not move to lte once wifi's budget was used")
		}
	}
	// The client tells the concentrator, which restricts its end too.
	waitFor(t, "the concentrator to learn of the budget", 5*time.Second, func() bool {
		for _, c := range h.conc.Status().Clients {
			for _, p := range c.Paths {
				if p.Name == "wifi" && p.Budget == action {
					return true
				}
			}
		}
		return false
	})
	return h, client, server
}

// wifiDelta runs fn and returns how many data packets the client sent and
// received on wifi meanwhile.
func wifiDelta(t *testing.T, h *harness, fn func()) (tx, rx uint64) {
	before := pathNamed(t, h.client.Status().Paths, "wifi")
	fn()
	after := pathNamed(t, h.client.Status().Paths, "wifi")
	return after.TxPackets - before.TxPackets, after.RxPackets - before.RxPackets
}

// TestBudgetBlock: once wifi's budget is used, it carries no data either
// way, and traffic flows on lte.
func TestBudgetBlock(t *testing.T) {
	h, client, server := budgetHarness(t, config.ActionBlock)
	tx, rx := wifiDelta(t, h, func() { transferPort(t, client, server, 5002, 1<<20) })
	if tx != 0 || rx != 0 {
		t.Errorf("blocked wifi carried %d data packets up and %d down", tx, rx)
	}
	if p := pathNamed(t, h.client.Status().Paths, "wifi"); p.State != "up" || p.Budget != config.ActionBlock {
		t.Errorf("wifi: %+v; want up (probed) and blocked", p)
	}
}

// TestBudgetFailoverOnly: once wifi's budget is used, it is a metered
// standby: unused while lte is up, used when lte is cut.
func TestBudgetFailoverOnly(t *testing.T) {
	h, client, server := budgetHarness(t, config.ActionFailoverOnly)
	lte0 := pathNamed(t, h.client.Status().Paths, "lte").TxPackets
	tx, rx := wifiDelta(t, h, func() { transferPort(t, client, server, 5002, 1<<20) })
	lte := pathNamed(t, h.client.Status().Paths, "lte").TxPackets - lte0
	// On a loaded machine lte's probes may be late enough for it to seem
	// down for a moment, when wifi is rightly used: so "hardly", not "never".
	if (tx+rx)*20 > lte {
		t.Errorf("failover-only wifi carried %d data packets up and %d down while lte was up (lte: %d up)", tx, rx, lte)
	}
	h.proxies[1].Set(proxy.Impairment{Cut: true})
	tx, _ = wifiDelta(t, h, func() { transferPort(t, client, server, 5003, 1<<20) })
	if tx == 0 {
		t.Error("failover-only wifi did not take over when lte was cut")
	}
}

// TestBudgetInteractiveOnly: once wifi's budget is used, bulk data moves
// to lte while small UDP packets and the server's pure ACKs stay on wifi.
func TestBudgetInteractiveOnly(t *testing.T) {
	h, client, server := budgetHarness(t, config.ActionInteractiveOnly)
	tx, rx := wifiDelta(t, h, func() { transferPort(t, client, server, 5002, 1<<20) })
	// The upload is some 750 full segments; the client's interactive
	// packets are a handful (its handshake ACK, FIN, ACKs of the
	// server's FIN, a window update or two).
	if tx > 8 {
		t.Errorf("interactive-only wifi carried %d packets of a bulk upload", tx)
	}
	if rx == 0 {
		t.Error("the server's pure ACKs did not come back on interactive-only wifi")
	}
	dst := netip.AddrPortFrom(gatewayFor(pool4), 9000)
	ln, err := server.ListenUDPAddrPort(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := client.DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 20
	tx, _ = wifiDelta(t, h, func() {
		buf := make([]byte, 100)
		ln.SetReadDeadline(time.Now().Add(10 * time.Second))
		for range n {
			if _, err := conn.Write(buf[:64]); err != nil {
				t.Fatal(err)
			}
			if _, err := ln.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
	})
	if tx < n {
		t.Errorf("interactive-only wifi carried %d of %d small UDP datagrams", tx, n)
	}
}
