package transport

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkEvent says that an interface's carrier came or went, that it was
// deleted, or that one of its addresses was added or removed.
type LinkEvent struct {
	Interface string
	// Link events: Up is administratively up and with carrier; Deleted
	// says the interface is gone (Up is then false).
	Up      bool
	Deleted bool
	// Address events: Addr is the address added (or removed, with
	// Removed). Addr is invalid for link events.
	Addr    netip.Prefix
	Removed bool
	// Route events: DefaultRoute says a default route of the main table
	// through the interface was added (or removed, with Removed).
	DefaultRoute bool
}

// IsAddr says whether e tells of an address rather than of the link.
func (e LinkEvent) IsAddr() bool { return e.Addr.IsValid() }

// IsLink says whether e tells of the link itself: its carrier or its
// deletion.
func (e LinkEvent) IsLink() bool { return !e.IsAddr() && !e.DefaultRoute }

// linkUpdatesLen bounds netlink updates waiting to be read: a burst of a
// few per interface when links flap; the kernel drops beyond its socket
// buffer anyway.
const linkUpdatesLen = 64

// WatchLinks reports every change of an interface's carrier, every
// interface deleted, every address added or removed and every default
// route of the main table added or removed on events, from
// the kernel's netlink notifications, until ctx is done. The kernel tells
// of a cut, a new interface or a new address (DHCP, a roam) the moment it
// sees it, long before probes time out.
func WatchLinks(ctx context.Context, events chan<- LinkEvent) error {
	links := make(chan netlink.LinkUpdate, linkUpdatesLen)
	addrs := make(chan netlink.AddrUpdate, linkUpdatesLen)
	routes := make(chan netlink.RouteUpdate, linkUpdatesLen)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(links, done); err != nil {
		return fmt.Errorf("watching links: %w", err)
	}
	if err := netlink.AddrSubscribe(addrs, done); err != nil {
		return fmt.Errorf("watching addresses: %w", err)
	}
	if err := netlink.RouteSubscribe(routes, done); err != nil {
		return fmt.Errorf("watching routes: %w", err)
	}
	w := linkWatch{last: map[string]bool{}, names: map[int]string{}}
	for {
		var ev LinkEvent
		var report bool
		select {
		case u, ok := <-links:
			if !ok {
				return fmt.Errorf("watching links: netlink subscription ended")
			}
			ev, report = w.link(u)
		case u, ok := <-addrs:
			if !ok {
				return fmt.Errorf("watching addresses: netlink subscription ended")
			}
			ev, report = w.addr(u)
		case u, ok := <-routes:
			if !ok {
				return fmt.Errorf("watching routes: netlink subscription ended")
			}
			ev, report = w.route(u)
		case <-ctx.Done():
			return nil
		}
		if !report {
			continue
		}
		select {
		case events <- ev:
		case <-ctx.Done():
			return nil
		}
	}
}

// linkWatch turns netlink updates into events: only changes of a link's
// state, and addresses named by their interface.
type linkWatch struct {
	last  map[string]bool // by name: up
	names map[int]string  // by index, for addresses of deleted links
}

func (w *linkWatch) link(u netlink.LinkUpdate) (LinkEvent, bool) {
	name := u.Attrs().Name
	deleted := u.Header.Type == unix.RTM_DELLINK
	up := !deleted && u.IfInfomsg.Flags&unix.IFF_UP != 0 && u.IfInfomsg.Flags&unix.IFF_LOWER_UP != 0
	w.names[u.Attrs().Index] = name
	if deleted {
		delete(w.last, name)
		return LinkEvent{Interface: name, Deleted: true}, true
	}
	if prev, seen := w.last[name]; seen && prev == up {
		return LinkEvent{}, false
	}
	w.last[name] = up
	return LinkEvent{Interface: name, Up: up}, true
}

func (w *linkWatch) addr(u netlink.AddrUpdate) (LinkEvent, bool) {
	ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
	if !ok {
		return LinkEvent{}, false
	}
	ones, _ := u.LinkAddress.Mask.Size()
	name := w.names[u.LinkIndex]
	if l, err := netlink.LinkByIndex(u.LinkIndex); err == nil {
		name = l.Attrs().Name
		w.names[u.LinkIndex] = name
	}
	if name == "" {
		return LinkEvent{}, false
	}
	return LinkEvent{Interface: name, Addr: netip.PrefixFrom(ip.Unmap(), ones), Removed: !u.NewAddr}, true
}

// route reports default routes of the main table only: a router's other
// routes change often and tell nothing about uplinks.
func (w *linkWatch) route(u netlink.RouteUpdate) (LinkEvent, bool) {
	if u.Table != unix.RT_TABLE_MAIN && u.Table != 0 {
		return LinkEvent{}, false
	}
	if ones, _ := maskSize(u.Route); ones != 0 {
		return LinkEvent{}, false
	}
	name := w.names[u.LinkIndex]
	if l, err := netlink.LinkByIndex(u.LinkIndex); err == nil {
		name = l.Attrs().Name
	}
	if name == "" {
		return LinkEvent{}, false
	}
	return LinkEvent{Interface: name, DefaultRoute: true, Removed: u.Type == unix.RTM_DELROUTE}, true
}
