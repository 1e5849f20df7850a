package tunnel

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
)

// A session is one client's tunnel as either end sees it: the links of all
// its paths, the sequence numbers it sends and the duplicate filter for
// what it receives. Every path of a client joins the same session.
type session struct {
	id uint64

	linksMu sync.Mutex // serialises changes; readers load the snapshot
	links   atomic.Pointer[[]*link]
	// emptySince is the monotime at which the last link left (0 while
	// links exist), for the concentrator's grace period.
	emptySince atomic.Int64

	rxMu   sync.Mutex // the duplicate filter is shared by all receivers
	window scheduler.Window

	// Owned by the goroutine that reads the TUN.
	sched  scheduler.Scheduler
	seq    uint64
	states []scheduler.PathState
	picks  []int
}

func newSession(id uint64, mode scheduler.Mode) (*session, error) {
	sched, err := scheduler.New(mode)
	if err != nil {
		return nil, err
	}
	s := &session{id: id, sched: sched}
	s.links.Store(&[]*link{})
	s.emptySince.Store(monotime())
	return s, nil
}

// addLink adds l, replacing (and returning) a link of the same name: a
// path that reconnected replaces its dead predecessor at once.
func (s *session) addLink(l *link) (old *link) {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	cur := *s.links.Load()
	next := make([]*link, 0, len(cur)+1)
	for _, x := range cur {
		if x.name == l.name {
			old = x
			continue
		}
		next = append(next, x)
	}
	next = append(next, l)
	s.links.Store(&next)
	s.emptySince.Store(0)
	return old
}

// removeLink removes l if it is still in the session.
func (s *session) removeLink(l *link) {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	cur := *s.links.Load()
	next := make([]*link, 0, len(cur))
	for _, x := range cur {
		if x != l {
			next = append(next, x)
		}
	}
	s.links.Store(&next)
	if len(next) == 0 {
		s.emptySince.Store(monotime())
	}
}

// accept reports whether seq is new to the session.
func (s *session) accept(seq uint64) bool {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	return s.window.Accept(seq)
}

func (s *session) resetWindow() {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	s.window.Reset()
}

// sendResult says what became of a packet given to send.
type sendResult int

const (
	sent sendResult = iota
	noPath
	queueFull
	tooBig
)

// send schedules p onto the session's paths and queues it; ownership of
// p's buffer passes to the queues (or back to the pool). For tooBig it
// also returns the MTU to announce, and p is left to the caller.
func (s *session) send(p packetRef, info *packet.Info, c *Counters) (sendResult, int) {
	links := *s.links.Load()
	now := monotime()
	interactive := isInteractive(p.packet(), info)
	s.states = s.states[:0]
	for _, l := range links {
		s.states = append(s.states, l.state(now, interactive))
	}
	s.picks = s.sched.Pick(s.picks[:0], scheduler.Packet{
		Flow:        packet.FlowHash(info, 0),
		Size:        p.n,
		Interactive: interactive,
	}, s.states)
	if len(s.picks) == 0 {
		if anyUp(s.states) {
			c.DropQueueFull.Add(1) // the live paths' queues are full
		} else {
			c.DropNoPath.Add(1)
		}
		putBuffer(p.buf)
		return noPath, 0
	}
	for _, i := range s.picks {
		if mtu := int(links[i].mtu.Load()); p.n > mtu {
			c.DropTooBig.Add(1)
			return tooBig, mtu
		}
	}
	s.seq++
	transport.PutHeader(p.buf.b[headroom-transport.HeaderLen:], transport.KindData, s.seq)
	queued := false
	// Queue the original last: once queued, its buffer belongs to that
	// path's sender, so every other copy must be made before.
	for k := len(s.picks) - 1; k >= 0; k-- {
		i := s.picks[k]
		ref := p
		if k > 0 { // another copy, for redundancy
			ref = packetRef{buf: getBuffer(p.n), n: p.n}
			copy(ref.datagram(), p.datagram())
		}
		select {
		case links[i].queue <- ref:
			queued = true
		default:
			putBuffer(ref.buf)
		}
	}
	if !queued {
		c.DropQueueFull.Add(1)
		return queueFull, 0
	}
	return sent, 0
}

// Interactive packets, which a path whose data budget is used up may
// still carry with budget_action interactive-only (see budget.go).
const (
	dnsPort = 53
	// maxInteractiveUDP is the largest UDP packet (IP header included)
	// counted as interactive: voice frames, game state, keystrokes over
	// QUIC, DNS; bulk transfers fill their packets.
	maxInteractiveUDP = 200
	tcpACK            = 0x10
	tcpFIN            = 0x01
	tcpRST            = 0x04
)

// isInteractive says whether a packet is latency-sensitive and small:
// DNS (UDP or TCP, port 53 either way), UDP packets of at most
// maxInteractiveUDP bytes, and pure TCP acknowledgements (no payload, no
// SYN, FIN or RST), which keep the other direction of a transfer going.
// It reads only what packet.Parse found, plus the TCP data offset.
func isInteractive(b []byte, info *packet.Info) bool {
	if info.Fragment {
		return false
	}
	switch info.Proto {
	case 17:
		return info.Len <= maxInteractiveUDP || info.SrcPort == dnsPort || info.DstPort == dnsPort
	case 6:
		if info.SrcPort == dnsPort || info.DstPort == dnsPort {
			return true
		}
		if info.TCPFlags&(tcpSYN|tcpFIN|tcpRST) != 0 || info.TCPFlags&tcpACK == 0 || info.HdrLen+13 > len(b) {
			return false
		}
		return info.Len == info.HdrLen+int(b[info.HdrLen+12]>>4)*4
	}
	return false
}

func anyUp(states []scheduler.PathState) bool {
	for _, st := range states {
		if st.Up {
			return true
		}
	}
	return false
}

// minMTU is the smallest MTU among the session's live links, or 0.
func (s *session) minMTU() int {
	now := monotime()
	m := 0
	for _, l := range *s.links.Load() {
		if mtu := int(l.mtu.Load()); l.alive(now) && (m == 0 || mtu < m) {
			m = mtu
		}
	}
	return m
}

func (s *session) pathStatus() []PathStatus {
	links := *s.links.Load()
	out := make([]PathStatus, 0, len(links))
	for _, l := range links {
		out = append(out, l.status())
	}
	return out
}

// gatewayFor is the concentrator's inner address in the pool that prefix
// belongs to: the first host address. Both ends derive it the same way.
func gatewayFor(prefix netip.Prefix) netip.Addr {
	return prefix.Masked().Addr().Next()
}

// atomicSession holds a peer's current session, or nil.
type atomicSession = atomic.Pointer[session]
