package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.zx2c4.com/wireguard/tun"
)

// Outbound flow, the same at both ends:
//
//	TUN ──Read(batch)──▶ readTUN ──▶ endpoint's outbound: parse, pick the
//	session (the client has one; the concentrator looks up the destination)
//	──▶ forward: clamp the MSS of SYNs, scheduler picks path(s), header,
//	put on each path's queue; when every queue is full, the client's
//	reader waits for room, the concentrator's (which serves every client)
//	only within a budget per batch, then drops and counts, as a router
//	does; a packet too big for the path becomes an ICMP error written back
//	into the TUN.
//
// Inbound flow: link.receiver ──▶ endpoint's deliver: duplicate filter,
// (concentrator: source check) ──▶ tunWriter ──Write(batch)──▶ TUN.

// readTUN reads batches from dev, parses each packet and hands it to
// handle, which takes ownership of its buffer; packets that do not parse
// are dropped and counted. batch, if not nil, is called before the
// packets of each batch are handled. It returns when the device fails or
// is closed.
func readTUN(dev tun.Device, c *Counters, batch func(), handle func(packetRef, *packet.Info)) error {
	size := max(dev.BatchSize(), 1)
	mtu, err := dev.MTU()
	if err != nil {
		return err
	}
	// Room for a packet of the device's MTU, or of any MTU followMTU may
	// set later (a path's datagrams stay below a small buffer), whichever
	// is larger.
	mtu = max(mtu, smallSize-headroom)
	refs := make([]*buffer, size)
	bufs := make([][]byte, size)
	sizes := make([]int, size)
	for i := range refs {
		refs[i] = getBuffer(mtu)
		bufs[i] = refs[i].b
	}
	defer func() {
		for _, b := range refs {
			putBuffer(b)
		}
	}()
	for {
		n, err := dev.Read(bufs, sizes, headroom)
		if n > 0 && batch != nil {
			batch()
		}
		for i := 0; i < n; i++ {
			p := packetRef{buf: refs[i], n: sizes[i]}
			refs[i] = getBuffer(mtu)
			bufs[i] = refs[i].b
			c.TunRxPackets.Add(1)
			info, err := packet.Parse(p.packet())
			if err != nil {
				c.DropMalformed.Add(1)
				putBuffer(p.buf)
				continue
			}
			handle(p, &info)
		}
		if errors.Is(err, tun.ErrTooManySegments) {
			c.DropMalformed.Add(1)
			continue
		}
		if err != nil {
			return err
		}
	}
}

// readUntilDone reads the TUN until ctx is done (nil) or reading fails.
// The reading goroutine ends when the caller closes the device.
func readUntilDone(ctx context.Context, dev tun.Device, c *Counters, batch func(), handle func(packetRef, *packet.Info)) error {
	readErr := make(chan error, 1)
	go func() { readErr <- readTUN(dev, c, batch, handle) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-readErr:
		return fmt.Errorf("reading TUN: %w", err)
	}
}

// every calls fn every interval until ctx is done.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			fn()
		case <-ctx.Done():
			return
		}
	}
}

// ipv4Overhead and ipv6Overhead are the IP and TCP headers that an MSS
// excludes from the MTU.
const (
	ipv4Overhead = 20 + 20
	ipv6Overhead = 40 + 20
)

// gateways are the addresses ICMP errors come from, one per family: an
// address on the far side of the tunnel, so the kernel accepts them.
type gateways struct{ v4, v6 netip.Addr }

func (g *gateways) for6(v6 bool) netip.Addr {
	if g == nil {
		return netip.Addr{}
	}
	if v6 {
		return g.v6
	}
	return g.v4
}

// forward sends one parsed packet through session s, waiting for room on a
// full path within budget (nil: as long as the path warrants). A packet too
// big for the chosen path is answered with an ICMP error, so it never
// disappears silently (RFC 1191, RFC 8201).
func forward(s *session, p packetRef, info *packet.Info, budget *time.Duration, w *tunWriter, gw *gateways, c *Counters) {
	if info.Proto == 6 && info.TCPFlags&tcpSYN != 0 {
		clampMSS(s, p, info, c)
	}
	res, mtu := s.send(p, info, budget, c)
	if res != tooBig {
		return
	}
	defer putBuffer(p.buf)
	from := gw.for6(info.Version == 6)
	if !from.IsValid() {
		return
	}
	out := getBuffer(packet.MaxTooBigLen)
	n, err := packet.TooBig(out.b[headroom:], p.packet(), mtu, from)
	if err != nil {
		putBuffer(out)
		return
	}
	if w.tryWrite(packetRef{buf: out, n: n}) {
		c.ICMPSent.Add(1)
	}
}

const tcpSYN = 0x02

// clampMSS lowers the MSS of a SYN (or SYN-ACK) so that the TCP segments of
// the connection fit the session's smallest path without fragmentation.
func clampMSS(s *session, p packetRef, info *packet.Info, c *Counters) {
	mtu := s.minMTU()
	overhead := ipv4Overhead
	if info.Version == 6 {
		overhead = ipv6Overhead
	}
	if mtu <= overhead {
		return
	}
	if packet.ClampMSS(p.packet(), uint16(mtu-overhead)) {
		c.MSSClamped.Add(1)
	}
}
