package tunnel

import (
	"context"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.org/x/time/rate"
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

	// The receive side (reorder.go), shared by all receivers.
	rxMu      sync.Mutex
	window    scheduler.Window
	rxHighest uint64                        // highest sequence number accepted
	reorder   *scheduler.Reorder[packetRef] // nil while one path delivers
	released  []packetRef
	expiry    *time.Timer // calls expire at the reorder buffer's deadline
	rxWriter  *tunWriter  // where expire releases to
	rxStates  []scheduler.PathState
	// reorders says whether the session's mode spreads a flow's packets
	// over paths, so that the receiver must restore their order. Flow
	// keeps each flow on one path, and redundant's first copy comes by
	// the fastest path; a per-session buffer would only hold every flow
	// behind another's lost packet.
	reorders bool
	// reorderDone sums the counts of reorder buffers since freed.
	reorderDone scheduler.ReorderStats

	// single says the client has one uplink: while its path is up, every
	// packet goes direct (sendDirect). Set on the client when it starts,
	// on the concentrator by each path's hello.
	single atomic.Bool

	// announce, on the client, wakes announcePaths when a path went
	// down or came back; capacity 1, the latest state is what is sent.
	announce chan struct{}

	// Held by the goroutine that reads the TUN, and by failover.
	sendMu sync.Mutex
	sched  *scheduler.Multi
	seq    uint64
	states []scheduler.PathState
	picks  []int
	resent []packetRef
	// limbo holds, on the client, what dead paths sent in the round trip
	// before they were last heard from, until the concentrator says which
	// of it it lacks (transport.Missing) or limboUntil passes.
	limbo      []packetRef
	limboUntil int64
	// diedAt is when a path last went down (monotime; see aqmAllowed).
	diedAt int64
	timer  *time.Timer   // bounds a wait for queue room (enqueueWait)
	direct *rate.Limiter // direct datagrams' bytes (sendDirect); nil until the first
}

// What a session sends of a redundant class as direct datagrams
// (sendDirect), copies included, unless its client has one uplink: a
// redundant class is for calls and games, a few hundred kbit/s (a voice
// call) to a few Mbit/s (a video call). Beyond directRate what the class
// carries is bulk, and goes through QUIC, whose congestion control keeps
// it from flooding a path. directBurst lets a video key frame of tens of
// kilobytes go in its copies at once.
const (
	directRate  = 12e6 / 8 // bytes a second
	directBurst = 128 << 10
)

func newSession(id uint64, mode scheduler.Mode, copies int, classes []scheduler.Class) (*session, error) {
	sched, err := scheduler.NewMultiCopies(mode, copies, classes)
	if err != nil {
		return nil, err
	}
	s := &session{id: id, sched: sched, timer: time.NewTimer(time.Hour),
		reorders: mode != scheduler.Flow && mode != scheduler.Redundant}
	s.timer.Stop()
	s.diedAt = monotime() - int64(aqmGrace) // none has: no grace to wait out
	s.expiry = time.AfterFunc(time.Hour, s.expire)
	s.expiry.Stop()
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
	l.sess.Store(s)
	// A new link is up: its handshake just succeeded. If it is down at
	// the session's first look (its uplink lost carrier just after), it
	// went down, and the peer has to hear of it. Set before the link is
	// published, so it needs no sendMu.
	l.wasUp = true
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
func (s *session) send(p packetRef, info *packet.Info, budget *waitBudget, c *Counters) (sendResult, int) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	links := s.look(c)
	si := schedInfo(p.packet(), info)
	pk := s.sched.Packet(&si, packet.FlowHash(info, 0))
	now := monotime()
	s.fillStates(links, now, pk.Interactive)
	s.picks = s.sched.Pick(s.picks[:0], pk, s.states)
	wait, full := false, len(s.picks) == 0 && anyUp(s.states)
	if full && (budget == nil || budget.available(monotime()) > 0) {
		// Every live path's queue is full. Rather than drop, wait for
		// room on the path the packet would take: the TUN reader stops
		// reading meanwhile and the kernel holds the packets, as
		// wireguard-go's reader does, so the inner TCP sees delay where
		// it would otherwise see braid's loss. A reader that serves other
		// sessions too waits only within its budget (see waitBudget).
		for i := range s.states {
			s.states[i].QueueCap = 0
		}
		s.picks = s.sched.Pick(s.picks[:0], pk, s.states)
		wait = true
		// But not where the queue is full because the path is slower
		// than the inner flows (what leaves it stood there longer than
		// CoDel's target) and the flow has no other path to spill onto:
		// waiting would move the standing queue into the kernel's TUN
		// ring, where the packets of a call wait behind it too, and hide
		// from the flows that they must slow down. (Interactive packets
		// still wait: they are few and small.)
		if len(s.picks) > 0 && droppable(pk, &si) && links[s.picks[0]].standing(now) && s.aqmAllowed(pk, now) {
			putBuffer(p.buf)
			c.DropAQM.Add(1)
			return queueFull, 0
		}
	}
	if len(s.picks) == 0 {
		putBuffer(p.buf)
		if full {
			c.DropQueueFull.Add(1)
			return queueFull, 0
		}
		c.DropNoPath.Add(1)
		return noPath, 0
	}
	for _, i := range s.picks {
		if mtu := int(links[i].mtu.Load()); p.n > mtu {
			c.DropTooBig.Add(1)
			return tooBig, mtu
		}
	}
	best := links[s.picks[0]]
	if len(s.picks) == 1 && best.aqmDrop.Load() != 0 && droppable(pk, &si) && s.sched.Copies(pk) <= 1 && s.aqmAllowed(pk, now) && best.takeDrop(now) {
		putBuffer(p.buf) // the path's CoDel called for it (link.measureQueue)
		c.DropAQM.Add(1)
		return sent, 0
	}
	s.seq++
	transport.PutHeader(p.buf.b[headroom-transport.HeaderLen:], transport.KindData, s.seq)
	one := s.single.Load() && scheduler.OnePath(s.states) && best.direct.Load() && best.drained(now)
	if copies := s.sched.Copies(pk); (copies > 1 || one) && s.sendDirect(links, copies, p, !one) {
		return sent, 0
	}
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
		if k == 0 && wait {
			l := links[i]
			start := monotime()
			var woken bool
			for {
				// The path's silentAt moves as it is heard from, or as
				// its sender gets stuck: look again at each timeout.
				now := monotime()
				d := l.roomWait(start, now)
				if budget != nil {
					d = min(d, budget.left-time.Duration(now-start))
				}
				queued, woken = l.enqueueWait(ref, s.timer, d)
				if queued || woken || d <= 0 || !l.alive(monotime()) {
					break
				}
			}
			waited := time.Duration(monotime() - start)
			c.ReaderWaitNs.Add(uint64(waited))
			if budget != nil {
				budget.left -= waited
			}
			switch {
			case woken || !queued && !l.alive(monotime()):
				// The path may have gone down, or has (silent until its
				// time came): look now (resending what it had in
				// flight), and send the packet after that, with those
				// resends, on the paths the scheduler picks then.
				links = s.look(c)
				one := [1]packetRef{ref}
				s.requeue(links, one[:], monotime(), c)
				queued = true
			case !queued:
				putBuffer(ref.buf)
			}
			continue
		}
		ref.buf.queued = now
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
	if wait {
		now = monotime() // queued after the wait
	}
	best.noteQUIC(now)
	return sent, 0
}

// aqmAllowed reports whether the AQM may drop p, a packet for
// s.picks[0]: only if its flow has nowhere to spill (scheduler MaySpill),
// and not within aqmGrace of a path going down. The flows then arrive at
// the survivor with windows sized for the capacity lost; their queue
// there is what carries them across, with the resends of what the dead
// path had in flight, and a drop makes a flow wait a round trip of the
// survivor's at least: measured, with CoDel on the survivor at once, the
// failover report's TCP stall after a link-down went from 39 to 316 ms
// (median of 3), after a blackhole from 243 to 469 ms. sendMu is held.
func (s *session) aqmAllowed(p scheduler.Packet, now int64) bool {
	return now-s.diedAt >= int64(aqmGrace) && !s.sched.MaySpill(p, s.states, s.picks[0])
}

// aqmGrace is how long after a path went down the AQM leaves the queues
// alone: the inner flows' recovery from the cut (the resends, a few round
// trips of the survivor), with room to spare.
const aqmGrace = 3 * time.Second

// droppable reports whether the AQM may drop a packet (link.measureQueue):
// a bulk one, 512 bytes or more of TCP data or UDP, since a drop is to
// tell a flow that sends much to slow down. Not a SYN, RST or FIN (a lost
// SYN costs its connection a second), nor ICMP, nor an interactive packet.
func droppable(pk scheduler.Packet, si *scheduler.Info) bool {
	switch {
	case pk.Interactive || si.Size < minDroppable:
		return false
	case si.Proto == scheduler.ProtoTCP:
		return si.Payload > 0 && si.TCPFlags&(tcpSYN|tcpRST|tcpFIN) == 0
	default:
		return si.Proto == scheduler.ProtoUDP
	}
}

// minDroppable is the smallest packet the AQM drops: smaller ones are
// keystrokes, acknowledgements and control, which make no queue.
const minDroppable = 512

// sendDirect sends p as direct datagrams (transport/direct.go), beside
// QUIC rather than inside it, in two cases.
//
// For a client with one uplink (single), while its path is up, every
// packet goes direct: no choice among paths depends on QUIC's congestion
// state, and the inner flows' own congestion control paces them, as over
// WireGuard (see scheduler.OnePath). Not before what the path sent through
// QUIC is out of the way (link.drained), though. A client with more uplinks
// keeps QUIC on the one path a cut leaves it: its inner flows arrive there
// sized for the lost capacity, and QUIC's pacing, and the resends of what
// QUIC lost, absorb that; direct, they met the survivor's bottleneck
// themselves, and once in 6 runs a TCP flow stalled for 1.5 s after the
// cut (a retransmission timeout), and for 1 s when the uplink came back
// (QUIC's window on the survivor was cold then).
//
// A packet of a redundant class (copies > 1) goes direct while the
// session's direct rate allows (limited): QUIC's congestion control would
// hold it back on a lossy path although the path has room (measured:
// 15-39% of a call lost), and it is protected by its copies instead. One
// copy goes on each picked path; when fewer paths are usable than two,
// the best one takes a second copy, so that a random loss on it still
// takes two losses to lose the packet; and on lossy paths more copies go,
// in turn on each picked path, as scheduler.CopiesFor says.
//
// It takes p's buffer and reports true; false, leaving p to the caller,
// when a picked path's peer does not take direct datagrams or the rate is
// spent. sendMu is held.
func (s *session) sendDirect(links []*link, copies int, p packetRef, limited bool) bool {
	for _, i := range s.picks {
		if !links[i].direct.Load() {
			return false
		}
	}
	n := scheduler.CopiesFor(s.states, s.picks, copies)
	d := p.datagram()
	if limited {
		if s.direct == nil {
			s.direct = rate.NewLimiter(directRate, directBurst)
		}
		if !s.direct.AllowN(time.Now(), n*len(d)) {
			return false
		}
	}
	scratch := getBuffer(len(d) + transport.DirectOverhead)
	for k := range n {
		links[s.picks[k%len(s.picks)]].sendDirect(d, scratch.b[:0])
	}
	putBuffer(scratch)
	putBuffer(p.buf)
	return true
}

// failover resends what the links that went down since the last look had
// in flight. The TUN reader looks at every packet; the endpoint also calls
// failover periodically and on kernel link events, since the inner flows
// may send nothing more until what they lost is recovered. It returns
// when the first of the links still up goes out of use unless heard from
// (link.silentAt): when the endpoint should look again.
func (s *session) failover(c *Counters) (next int64) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	next = math.MaxInt64
	for _, l := range s.look(c) {
		if l.wasUp {
			next = min(next, l.silentAt())
		}
	}
	return next
}

// look resends the in-flight datagrams of the links that went down since
// the last look, and returns the links. s.sendMu is held.
//
// On the client, the concentrator hears of the change first: until it
// does, it goes on sending on the dead path (the inner flows' returning
// acknowledgements, among others), and a message written after the
// resends would wait behind them in the surviving path's queues (QUIC
// packs datagrams before stream data) and its bottleneck queue: 200-250
// ms on a 20 Mbit/s uplink, measured, most of the inner TCP's stall.
func (s *session) look(c *Counters) []*link {
	links := *s.links.Load()
	now := monotime()
	changed := false
	var died []*link // rare: allocated only when a link dies
	for _, l := range links {
		up := l.alive(now) // not what a data budget allows: that is no failure
		if l.wasUp && !up {
			died = append(died, l)
			s.diedAt = now
		}
		if !l.wasUp && up {
			l.sent.reopen()
		}
		changed = changed || l.wasUp != up
		l.wasUp = up
	}
	if changed && s.announce != nil && !s.tryAnnounce(links, now) {
		select {
		case s.announce <- struct{}{}: // announcePaths writes it, waiting if need be
		default:
		}
	}
	for _, l := range died {
		s.resend(links, l, now, c)
	}
	if len(s.limbo) > 0 && now > s.limboUntil {
		c.ResendExpired.Add(uint64(len(s.limbo)))
		s.limbo = freeAll(s.limbo)
	}
	return links
}

// resend sends again, on the paths the scheduler picks now, the datagrams
// that dead sent in its last round trip before it went silent (those may
// have died with it) and those still waiting in its queue. They keep
// their sequence numbers, so the peer drops the ones that did arrive.
//
// What was sent after dead was last heard from (or, where it failed here,
// after it failed: localLag before the session heard of it, if sooner)
// is lost whatever failed, as are the datagrams still in quic-go's queue
// then, which left after: up to the queue's length of those sent last
// before (transport.QUICSendQueue). That goes at once, oldest first, then
// what is still queued. Measured in the failover report before the queue
// was counted: the packet the inner TCP waited for, handed to QUIC 7 ms
// before the path was last heard from, left after it, 35 ms after the
// inner TCP sent it, and was resent last, 400 ms after the cut. What was
// sent in the round trip before that was lost only if the failure was
// far from us, or to congestion QUIC had no time to declare: mostly it
// arrived. Where the path failed here, or carrying it
// would take the surviving paths longer than two of their round trips (a
// round trip of a fast path over a slow one), or cost a metered path's
// plan, the client holds it back (limbo) until the concentrator, told of
// the dead path, answers which of it it lacks (resendMissing; see
// scheduler.AskBeforeResend). Otherwise, and on the concentrator, whom
// nobody answers, that part is resent last.
func (s *session) resend(links []*link, dead *link, now int64, c *Counters) {
	last := dead.heard()
	split := last
	if dead.failedHere() {
		split = min(split, now-int64(localLag))
	}
	var early int
	s.resent, early = dead.sent.take(s.resent[:0], min(last-dead.rtt.Load(), split), split, transport.QUICSendQueue)
	// And what is still queued for it, resends first: a silent path's
	// sender is stuck in QUIC's full send queue and will not get to them
	// in time.
	s.resent = dead.urgent.takeAll(s.resent)
	for len(dead.queue) > 0 {
		select {
		case p := <-dead.queue:
			s.resent = append(s.resent, p)
		default:
		}
	}
	if s.announce != nil && early > 0 && s.askFirst(links, now, s.resent[:early], dead.failedHere()) {
		s.limbo = append(s.limbo, s.resent[:early]...)
		s.limboUntil = now + int64(limboWait)
		n := copy(s.resent, s.resent[early:])
		clear(s.resent[n:])
		s.resent = s.resent[:n]
	} else {
		rotateLeft(s.resent, early)
	}
	s.requeue(links, s.resent, now, c)
}

// askFirst says whether to hold back pkts and ask which of them the
// concentrator lacks, rather than resend them at once (see
// scheduler.AskBeforeResend).
func (s *session) askFirst(links []*link, now int64, pkts []packetRef, failedHere bool) bool {
	bytes := 0
	for _, p := range pkts {
		bytes += p.n
	}
	s.fillStates(links, now, false)
	return scheduler.AskBeforeResend(s.states, bytes, failedHere)
}

// limboWait bounds how long the client holds what a dead path may have
// lost for the concentrator's answer: the surviving path's round trip
// (hundreds of milliseconds on a poor uplink) plus the concentrator's
// wait for the dead path to fall quiet (missingQuietMax).
const limboWait = 500 * time.Millisecond

// resendMissing resends, of what the client holds back (limbo), what the
// concentrator says it lacks, and frees the rest.
func (s *session) resendMissing(m *transport.Missing, c *Counters) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.resent = s.resent[:0]
	for _, p := range s.limbo {
		if m.Lacks(p.seq()) {
			s.resent = append(s.resent, p)
		} else {
			putBuffer(p.buf)
			c.ResendSkipped.Add(1)
		}
	}
	clear(s.limbo)
	s.limbo = s.limbo[:0]
	s.requeue(s.look(c), s.resent, monotime(), c) // look: a path back up takes its share again
}

// requeue queues pkts, which it owns, as resends on the paths the
// scheduler picks now: in their urgent queues, which their senders send
// before anything else, and which never make the session wait (see
// urgentQueue). s.sendMu is held.
func (s *session) requeue(links []*link, pkts []packetRef, now int64, c *Counters) {
	for k, p := range pkts {
		pkts[k] = packetRef{}
		info, err := packet.Parse(p.packet())
		if err != nil {
			putBuffer(p.buf)
			continue
		}
		si := schedInfo(p.packet(), &info)
		pk := s.sched.Packet(&si, packet.FlowHash(&info, 0))
		s.fillStates(links, now, pk.Interactive)
		for i := range s.states {
			s.states[i].QueueCap = 0 // full queues are no matter here
		}
		s.picks = s.sched.Pick(s.picks[:0], pk, s.states)
		if len(s.picks) == 0 || p.n > int(links[s.picks[0]].mtu.Load()) {
			putBuffer(p.buf)
			c.ResendNoRoom.Add(1)
			continue
		}
		l := links[s.picks[0]]
		if l.urgent.push(p, monotime()) {
			l.noteQUIC(monotime())
			c.Resent.Add(1)
		} else {
			c.ResendNoRoom.Add(1)
		}
	}
}

// freeAll frees the buffers of pkts and returns it emptied.
func freeAll(pkts []packetRef) []packetRef {
	for i, p := range pkts {
		putBuffer(p.buf)
		pkts[i] = packetRef{}
	}
	return pkts[:0]
}

// tryAnnounce tells the concentrator, on every path that is up, which
// paths are down (see transport.Paths), and waits until QUIC has sent it
// (announceWait at most), but not for a control stream another writer
// holds or QUIC's flow control blocks: it reports whether every message
// was queued.
func (s *session) tryAnnounce(links []*link, now int64) bool {
	m := pathsMessage(links, now)
	ok := true
	for _, l := range links {
		if l.alive(now) && l.path.TryWriteControl(m, announceWait) != nil {
			ok = false
		}
	}
	return ok
}

// announceWait bounds how long the client waits for QUIC to send a path's
// announcement before it resends what the dead path had in flight: a
// packet leaves an idle path at once, and a busy one after the datagrams
// already in its queue (32 of them take 10 ms at 30 Mbit/s).
const announceWait = 10 * time.Millisecond

// rotateLeft moves the first k elements of a to its end, keeping the
// order of both parts.
func rotateLeft[T any](a []T, k int) {
	slices.Reverse(a[:k])
	slices.Reverse(a[k:])
	slices.Reverse(a)
}

// announcePaths writes the announcements tryAnnounce could not, waiting
// for the control streams as need be, and catches changes nobody looked
// for.
func (s *session) announcePaths(ctx context.Context, c *Counters) {
	for {
		select {
		case <-s.announce:
		case <-ctx.Done():
			return
		}
		s.sendMu.Lock()
		links := s.look(c)
		s.sendMu.Unlock()
		now := monotime()
		m := pathsMessage(links, now)
		for _, l := range links {
			if l.alive(now) {
				l.path.WriteControl(m) // a path that fails here is being replaced
			}
		}
	}
}

// pathsMessage names the links that are down.
func pathsMessage(links []*link, now int64) *transport.Message {
	var down []string
	for _, l := range links {
		if !l.alive(now) {
			down = append(down, l.name)
		}
	}
	return &transport.Message{Paths: &transport.Paths{Down: down}}
}

// setPeerDown marks the links the client named as down, and only those;
// it reports whether one of them was not marked before.
func (s *session) setPeerDown(names []string) bool {
	more := false
	for _, l := range *s.links.Load() {
		down := slices.Contains(names, l.name)
		if was := l.peerDown.Swap(down); down && !was {
			more = true
			l.interrupt() // the TUN reader may be waiting for room on it
		}
	}
	return more
}

// schedInfo is what the scheduler's classifier reads of the parsed packet
// b: the header fields, and the length of the TCP or UDP payload.
func schedInfo(b []byte, info *packet.Info) scheduler.Info {
	si := scheduler.Info{
		Proto: info.Proto, Src: info.Src, Dst: info.Dst,
		SrcPort: info.SrcPort, DstPort: info.DstPort,
		DSCP: info.DSCP, Size: info.Len, Payload: -1, TCPFlags: info.TCPFlags,
	}
	switch {
	case info.Fragment:
	case info.Proto == scheduler.ProtoUDP:
		si.Payload = info.Len - info.HdrLen - 8
	case info.Proto == scheduler.ProtoTCP && info.HdrLen+13 <= len(b):
		si.Payload = info.Len - info.HdrLen - int(b[info.HdrLen+12]>>4)*4
	}
	if si.Payload < 0 {
		si.Payload = -1
	}
	return si
}

// fillStates puts the scheduler's view of links into s.states.
func (s *session) fillStates(links []*link, now int64, interactive bool) {
	s.states = s.states[:0]
	for _, l := range links {
		s.states = append(s.states, l.state(now, interactive))
	}
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
