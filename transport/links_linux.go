package transport

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkEvent says that an interface's carrier came or went.
type LinkEvent struct {
	Interface string
	Up        bool // administratively up and with carrier
}

// linkUpdatesLen bounds netlink updates waiting to be read: a burst of a
// few per interface when links flap; the kernel drops beyond its socket
// buffer anyway.
const linkUpdatesLen = 64

// WatchLinks reports every change of an interface's carrier on events,
// from the kernel's netlink notifications, until ctx is done. The kernel
// tells of a cut the moment it sees it, long before probes time out.
func WatchLinks(ctx context.Context, events chan<- LinkEvent) error {
	updates := make(chan netlink.LinkUpdate, linkUpdatesLen)
	done := make(chan struct{})
	if err := netlink.LinkSubscribe(updates, done); err != nil {
		return fmt.Errorf("watching links: %w", err)
	}
	defer close(done)
	last := map[string]bool{}
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				return fmt.Errorf("watching links: netlink subscription ended")
			}
			name := u.Attrs().Name
			up := u.Header.Type != unix.RTM_DELLINK &&
				u.IfInfomsg.Flags&unix.IFF_UP != 0 && u.IfInfomsg.Flags&unix.IFF_LOWER_UP != 0
			if prev, seen := last[name]; seen && prev == up {
				continue
			}
			last[name] = up
			select {
			case events <- LinkEvent{Interface: name, Up: up}:
			case <-ctx.Done():
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}
