// Package lab builds throw-away network labs out of Linux network
// namespaces, veth pairs, policy routing, tbf and nftables, for braid's
// end-to-end tests and for `braid demo`.
//
// Everything is configured through netlink and nftables from Go; no shell
// commands are run. Delay, jitter and loss are emulated in userspace (see
// [Impairer]) because the lab must work on kernels without netem.
//
// A Lab owns every namespace it creates and removes them all on Close.
// Namespaces are bind-mounted at /run/netns/<name>, so that
// `ip netns exec <name> ...` works for debugging. Everything requires root.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, as with `ip netns`.
const netnsDir = "/run/netns"

// Lab is a set of network namespaces and the resources in them.
// Its methods are safe for concurrent use.
type Lab struct {
	prefix string

	mu        sync.Mutex
	closed    bool
	nss       []*NS
	impairers []*Impairer
	nextID    int // for impairer tables and device names
}

// New returns an empty lab. Its namespaces are named
// <prefix><id>-<name>, where id is a short random hex string, so labs
// created concurrently (or left over by a crashed run) never collide.
func New(prefix string) (*Lab, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, err
	}
	return &Lab{prefix: prefix + hex.EncodeToString(b[:])}, nil
}

// Prefix returns the unique prefix of the lab's namespace names.
func (l *Lab) Prefix() string { return l.prefix }

// Close stops all impairers and removes all namespaces of the lab.
// It is idempotent. Processes started in the namespaces are not killed;
// a namespace lives on, unnamed, until its last process or socket is gone.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, imp := range l.impairers {
		errs = append(errs, imp.Close())
	}
	for _, n := range l.nss {
		errs = append(errs, n.close())
	}
	l.impairers, l.nss = nil, nil
	return errors.Join(errs...)
}

// allocID returns a lab-unique small integer.
func (l *Lab) allocID() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	return l.nextID
}

// NS is a network namespace owned by a Lab.
type NS struct {
	// Name is the namespace's name: <lab prefix>-<short name>,
	// usable with `ip netns exec`.
	Name string

	lab    *Lab
	path   string
	handle netns.NsHandle
	nl     *netlink.Handle
	nftMu  sync.Mutex // serialises read-modify-write of nftables state
}

// NS creates a namespace named <prefix>-<name> with loopback up, IPv4 and
// IPv6 forwarding on, rp_filter off, IPv6 DAD off and IPv6 addresses kept
// when a link goes down.
func (l *Lab) NS(name string) (*NS, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("lab: closed")
	}
	full := l.prefix + "-" + name
	n := &NS{Name: full, lab: l, path: filepath.Join(netnsDir, full), handle: netns.None()}
	if err := n.create(); err != nil {
		return nil, fmt.Errorf("lab: namespace %s: %w", full, err)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		n.close()
		return nil, errors.New("lab: closed")
	}
	l.nss = append(l.nss, n)
	l.mu.Unlock()
	if err := n.setup(); err != nil {
		return nil, fmt.Errorf("lab: namespace %s: %w", full, err)
	}
	return n, nil
}

// create makes the namespace and its bind mount and opens handles to it.
func (n *NS) create() error {
	f, err := os.OpenFile(n.path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err // e.g. the name is taken: leave it alone
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread ends up in the new namespace; it stays locked so
		// that the runtime discards it when this goroutine exits.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", n.path, "", unix.MS_BIND, "")
	}()
	err = <-errc
	if err == nil {
		n.handle, err = netns.GetFromPath(n.path)
	}
	if err == nil {
		n.nl, err = netlink.NewHandleAt(n.handle)
	}
	if err != nil {
		n.close()
	}
	return err
}

// sysctls are set in every new namespace, before any link is added, so
// that the "default" values apply to all links.
var sysctls = []struct{ key, val string }{
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv4/conf/all/rp_filter", "0"},
	{"net/ipv4/conf/default/rp_filter", "0"},
	{"net/ipv4/ping_group_range", "0 2147483647"},
	{"net/ipv6/conf/all/forwarding", "1"},
	{"net/ipv6/conf/default/forwarding", "1"},
	{"net/ipv6/conf/all/accept_dad", "0"},
	{"net/ipv6/conf/default/accept_dad", "0"},
	{"net/ipv6/conf/all/keep_addr_on_down", "1"},
	{"net/ipv6/conf/default/keep_addr_on_down", "1"},
}

// setup brings loopback up and applies sysctls.
func (n *NS) setup() error {
	err := n.Do(func() error {
		for _, s := range sysctls {
			if err := writeSysctl(s.key, s.val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return n.SetLinkUp("lo", true)
}

// writeSysctl writes /proc/sys/<key> in the calling thread's namespace.
func writeSysctl(key, val string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644)
}

// Sysctl sets a sysctl in n. key is a path below /proc/sys such as
// "net/ipv4/conf/up1/rp_filter", or a dotted name without slashes such as
// "net.ipv4.tcp_congestion_control".
func (n *NS) Sysctl(key, val string) error {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return n.Do(func() error { return writeSysctl(key, val) })
}

// close releases the handles and removes the bind mount.
func (n *NS) close() error {
	if n.nl != nil {
		n.nl.Close()
	}
	n.handle.Close() // no-op if not open
	err := unix.Unmount(n.path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("lab: unmount %s: %w", n.path, err)
	}
	if err := os.Remove(n.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Path returns the namespace file, e.g. for nsenter --net=PATH or
// setns(2) in another process.
func (n *NS) Path() string { return n.path }

// Handle returns the netlink handle bound to the namespace. It is owned
// by the NS; do not close it.
func (n *NS) Handle() *netlink.Handle { return n.nl }

// Do runs fn on a separate goroutine, locked to an OS thread that has been
// switched into the namespace. Sockets and devices created by fn belong to
// the namespace and may be used from any goroutine afterwards. fn must not
// call t.Fatal or runtime.UnlockOSThread. If the thread cannot be switched
// back it is discarded rather than reused.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("lab: setns %s: %w", n.Name, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Start starts cmd inside the namespace. Go cannot setns(2) in a child
// between fork and exec, so cmd must be started through this method (or
// Run) rather than cmd.Start: the child inherits the namespace of the
// thread that forks it. Wait on cmd as usual.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Run starts cmd inside the namespace and waits for it.
func (n *NS) Run(cmd *exec.Cmd) error {
	if err := n.Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// Addrs returns the addresses configured on dev.
func (n *NS) Addrs(dev string) ([]netip.Prefix, error) {
	link, err := n.nl.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %s: %w", n.Name, dev, err)
	}
	addrs, err := n.nl.AddrList(link, unix.AF_UNSPEC)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
	}
	return out, nil
}
