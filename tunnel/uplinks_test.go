package tunnel

import (
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

func matchPattern(name, pattern string) Uplink {
	return Uplink{Name: name, Priority: 3, Weight: 2, Metered: true,
		Match:    func(i transport.Interface) bool { ok, _ := path.Match(pattern, i.Name); return ok },
		PathName: func(ifname string) string { return name + "-" + ifname }}
}

func TestMatchedUplinks(t *testing.T) {
	addr := []netip.Addr{netip.MustParseAddr("192.0.2.7")}
	ifaces := []transport.Interface{
		{Name: "wlan0", Up: true, Addrs: addr},
		{Name: "wlan1", Up: false, Addrs: addr}, // no carrier
		{Name: "wlan2", Up: true},               // no address yet
		{Name: "wlan3", Up: true, Addrs: addr},  // named by a plain entry
		{Name: "wwan0", Up: true, Addrs: addr},
		{Name: "braid0", Up: true, Addrs: addr}, // the tunnel itself
		{Name: "eth0", Up: true, Addrs: addr},
	}
	uplinks := []Uplink{
		{Name: "home", Interface: "wlan3"},
		matchPattern("wifi", "wlan*"),
		matchPattern("any", "w*"), // wlan0 is wifi's: the first entry wins
		matchPattern("all", "*"),
		{Name: "all-eth0", Interface: "eth9"}, // takes the name all would give eth0
	}
	got := matchedUplinks(uplinks, ifaces, func() (string, error) { return "braid0", nil })
	var names []string
	for _, u := range got {
		names = append(names, u.Name+"@"+u.Interface+"/"+u.entry)
		if u.Priority != 3 || u.Weight != 2 || !u.Metered || u.Match == nil {
			t.Errorf("%s lost its entry's settings: %+v", u.Name, u)
		}
	}
	want := []string{"wifi-wlan0@wlan0/wifi", "any-wwan0@wwan0/any"}
	if !slices.Equal(names, want) {
		t.Errorf("matched %v, want %v", names, want)
	}
}

// TestAddressChangeRedials: when an uplink's source address changes, its
// path is closed and a fresh one dialled from the new address joins the
// same session, and traffic flows on.
func TestAddressChangeRedials(t *testing.T) {
	h, client, conc := channelPair(t)
	before := h.client.Status()
	if local := before.Paths[0].Local; !strings.HasPrefix(local, "127.0.0.1:") {
		t.Fatalf("path from %s, want 127.0.0.1", local)
	}
	// An address event that changes nothing keeps the path.
	h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Addr: netip.MustParsePrefix("fe80::1/64")}
	h.sources.Store(0, netip.MustParseAddr("127.0.0.2"))
	h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Addr: netip.MustParsePrefix("127.0.0.2/8")}
	waitFor(t, "path from the new address", 10*time.Second, func() bool {
		p := h.client.Status().Paths
		return len(p) == 1 && p[0].State == "up" && strings.HasPrefix(p[0].Local, "127.0.0.2:")
	})
	after := h.client.Status()
	if after.Session != before.Session || !slices.Equal(after.Addresses, before.Addresses) {
		t.Errorf("session %x %v became %x %v", before.Session, before.Addresses, after.Session, after.Addresses)
	}
	own := h.conc.Addresses("laptop")[0].Addr()
	client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), 100, true)
	select {
	case <-conc.Inbound:
	case <-time.After(5 * time.Second):
		t.Fatal("no traffic after the address change")
	}
}

// fakeInterfaces is a host's interface list that a test changes.
type fakeInterfaces struct {
	mu     sync.Mutex
	ifaces []transport.Interface
}

func (f *fakeInterfaces) list() ([]transport.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ifaces), nil
}

func (f *fakeInterfaces) set(ifaces ...transport.Interface) {
	f.mu.Lock()
	f.ifaces = ifaces
	f.mu.Unlock()
}

// TestMatchedUplinkComesAndGoes: a Match entry makes a path when a
// matching interface appears (told by an event) and closes it when the
// interface goes.
func TestMatchedUplinkComesAndGoes(t *testing.T) {
	h := newHarness(t)
	conc := tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	var f fakeInterfaces
	h.interfaces = f.list
	h.match = map[int]string{1: "wl*"}
	client := tuntest.NewChannelTUN()
	h.startClient(client.TUN(), scheduler.Failover, 2)
	waitFor(t, "the plain uplink's path", 10*time.Second, h.pathsUp(1))
	names := func() []string {
		var out []string
		for _, p := range h.client.Status().Paths {
			out = append(out, p.Name)
		}
		slices.Sort(out)
		return out
	}

	f.set(transport.Interface{Name: "wlan5", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
		transport.Interface{Name: "eth1", Up: true, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	h.linkEvents <- transport.LinkEvent{Interface: "wlan5", Addr: netip.MustParsePrefix("127.0.0.1/8")}
	waitFor(t, "the matched interface's path", 10*time.Second, func() bool {
		return slices.Equal(names(), []string{"lte-wlan5", "wifi"}) && h.pathsUp(2)()
	})
	for _, p := range h.client.Status().Paths {
		if p.Name == "lte-wlan5" && p.Priority != 1 {
			t.Errorf("matched path has priority %d, want the entry's 1", p.Priority)
		}
	}

	f.set()
	h.linkEvents <- transport.LinkEvent{Interface: "wlan5", Deleted: true}
	waitFor(t, "the matched path closed", 10*time.Second, func() bool { return slices.Equal(names(), []string{"wifi"}) })
}

// TestMissingInterfaceWaits: an uplink whose interface is missing at
// start does not stop the client; it is dialled once the interface
// appears, and joins the session the other path opened.
func TestMissingInterfaceWaits(t *testing.T) {
	h := newHarness(t)
	conc := tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.absent.Store(1, true)
	client := tuntest.NewChannelTUN()
	h.startClient(client.TUN(), scheduler.Failover, 2)
	waitFor(t, "the present uplink's path", 10*time.Second, h.pathsUp(1))
	session := h.client.Status().Session
	if n := len(h.client.Status().Paths); n != 1 {
		t.Fatalf("%d paths with one interface missing", n)
	}
	h.absent.Delete(1)
	h.linkEvents <- transport.LinkEvent{Interface: "wwan0", Up: true}
	waitFor(t, "the plugged uplink's path", 10*time.Second, h.pathsUp(2))
	if st := h.client.Status(); st.Session != session {
		t.Errorf("session %x became %x", session, st.Session)
	}
}
