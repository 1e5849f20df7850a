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
//	put on each path's queue; when every queue is full, the reader waits
//	for room (the concentrator's, while it serves several clients, only
//	within a budget: see waitBudget), then drops and counts, as a router
//	does; a packet too big for the path becomes an ICMP error written back
//	into the TUN.
//
// Inbound flow: link.receiver ──▶ endpoint's deliver: duplicate filter,
// (concentrator: source check) ──▶ tunWriter ──Write(batch)──▶ TUN.

// readTUN reads batches from dev, parses each packet and hands it to
// handle, which takes ownership of its buffer; packets that do not parse
// are dropped and counted. It returns when the device fails or is closed.
func readTUN(dev tun.Device, c *Counters, handle func(packetRef, *packet.Info)) error {
	batch := max(dev.BatchSize(), 1)
	mtu, err := dev.MTU()
	if err != nil {
		return err
	}
	// Room for a packet of the device's MTU, or of any MTU followMTU may
	// set later (a path's datagrams stay below a small buffer), whichever
	// is larger.
	mtu = max(mtu, smallSize-headroom)
	refs := make([]*buffer, batch)
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
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
func readUntilDone(ctx context.Context, dev tun.Device, c *Counters, handle func(packetRef, *packet.Info)) error {
	readErr := make(chan error, 1)
	go func() { readErr <- readTUN(dev, c, handle) }()
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

// minWatch is the shortest wait between two calls of watch's function:
// a path's silentAt read just after a look found it up may already have
// passed, and the next look, this much later, takes it out of use.
const minWatch = time.Millisecond

// watch calls look at once, then every interval, and sooner where look
// asks for it: look returns the monotime at which it should run again at
// the latest (the first of the paths it saw up goes out of use then,
// unless heard from), so that a path gone silent under load is given up
// when its time comes, not up to an interval later.
func watch(ctx context.Context, interval time.Duration, look func() (next int64)) {
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		t.Reset(min(interval, max(minWatch, time.Duration(look()-monotime()))))
		select {
		case <-t.C:
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
func forward(s *session, p packetRef, info *packet.Info, budget *waitBudget, w *tunWriter, gw *gateways, c *Counters) {
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

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

// The concentrator's TUN reader serves every client. A client whose path
// cannot take what is sent to it (QUIC's congestion window; a path gone
// silent and not yet declared dead) would hold up every other client's
// packets if the reader waited for its room as a client's reader does, up
// to two of its round trips per packet: measured (TestReportFairness),
// 60 Mbit/s of UDP toward a client on a 20 Mbit/s path stopped another
// client's download for good. So while the reader forwards for more than
// one session, it waits within a budget that grows with the time that
// passes, and beyond it packets for full paths are dropped, as a router
// drops at a full output queue. While it forwards for one session only, it
// waits as a client's reader does, so that a lone busy client's flows see
// delay rather than loss: with the budget alone, a single client's
// download through a concentrator short of CPU lost 6-18% of its packets
// to full queues (BenchmarkDataPath).
const (
	// waitShare is the most of its time the shared reader spends waiting.
	waitShare = 8 // an eighth
	// waitBurst bounds one wait and what the budget saves up: a
	// goroutine on two busy cores may wait that long for a core, and a
	// path's sender with it.
	waitBurst = 6 * time.Millisecond
	// sharedWindow is how recently another session must have sent
	// through the reader for the budget to apply.
	sharedWindow = 100 * time.Millisecond
)

// waitBudget is the time a reader may still spend waiting for room, and
// the sessions it forwarded for last.
type waitBudget struct {
	left time.Duration
	at   int64 // monotime when left was last topped up

	// recent are the last two sessions the reader forwarded for, the
	// latest first, and recentAt when it last did for each.
	recent   [2]*session
	recentAt [2]int64
}

// shared notes that the reader forwards a packet for s at now, and reports
// whether another session sent through it within sharedWindow: only then
// does the budget bound the reader's waits.
func (b *waitBudget) shared(s *session, now int64) bool {
	if b.recent[0] != s {
		b.recent[1], b.recentAt[1] = b.recent[0], b.recentAt[0]
		b.recent[0] = s
	}
	b.recentAt[0] = now
	return b.recent[1] != nil && now-b.recentAt[1] < int64(sharedWindow)
}

// available tops the budget up for the time since the last call and
// returns it.
func (b *waitBudget) available(now int64) time.Duration {
	b.left = min(waitBurst, b.left+time.Duration(now-b.at)/waitShare)
	b.at = now
	return b.left
}

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
