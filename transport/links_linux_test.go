package transport

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func linkUpdate(typ uint16, index int, name string, flags uint32) netlink.LinkUpdate {
	return netlink.LinkUpdate{
		IfInfomsg: nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Flags: flags, Index: int32(index)}},
		Header:    unix.NlMsghdr{Type: typ},
		Link:      &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index}},
	}
}

// TestLinkWatch: link updates become events only when the state changes,
// a deletion always does, and an address is named by its interface, even
// after the interface is gone.
func TestLinkWatch(t *testing.T) {
	const idx = 1 << 30 // no such interface on this host
	w := linkWatch{last: map[string]bool{}, names: map[int]string{}}
	up := uint32(unix.IFF_UP | unix.IFF_LOWER_UP)
	steps := []struct {
		u      netlink.LinkUpdate
		want   LinkEvent
		report bool
	}{
		{linkUpdate(unix.RTM_NEWLINK, idx, "wlan7", unix.IFF_UP), LinkEvent{Interface: "wlan7"}, true},
		{linkUpdate(unix.RTM_NEWLINK, idx, "wlan7", unix.IFF_UP), LinkEvent{}, false},
		{linkUpdate(unix.RTM_NEWLINK, idx, "wlan7", up), LinkEvent{Interface: "wlan7", Up: true}, true},
		{linkUpdate(unix.RTM_DELLINK, idx, "wlan7", 0), LinkEvent{Interface: "wlan7", Deleted: true}, true},
	}
	for i, s := range steps {
		got, report := w.link(s.u)
		if report != s.report || got != s.want {
			t.Errorf("step %d: got %+v, %v; want %+v, %v", i, got, report, s.want, s.report)
		}
	}
	ev, report := w.addr(netlink.AddrUpdate{LinkIndex: idx, NewAddr: false,
		LinkAddress: net.IPNet{IP: net.IPv4(192, 0, 2, 7), Mask: net.CIDRMask(24, 32)}})
	want := LinkEvent{Interface: "wlan7", Addr: netip.MustParsePrefix("192.0.2.7/24"), Removed: true}
	if !report || ev != want || !ev.IsAddr() {
		t.Errorf("address event %+v, %v; want %+v", ev, report, want)
	}
	if _, report := w.addr(netlink.AddrUpdate{LinkIndex: idx + 1, NewAddr: true,
		LinkAddress: net.IPNet{IP: net.IPv4(192, 0, 2, 8), Mask: net.CIDRMask(24, 32)}}); report {
		t.Error("an address of an unknown interface was reported")
	}
}
