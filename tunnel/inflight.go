package tunnel

import "sync"

// inflightLen bounds the datagrams a link keeps after sending them: about
// 1.4 MB of 1400-byte packets, 220 ms at 50 Mbit/s, more than the
// bufferbloat of a typical uplink holds and, at 2 KiB a buffer, 2 MiB of
// memory per busy link. Older datagrams are given up on: the inner
// transport recovers them itself.
const inflightLen = 1024

// inflight keeps the data datagrams a link sent recently, so that when the
// path dies with them on the wire they can be sent again on another path
// at once, instead of waiting for the inner TCP's retransmission timeout.
// The receiver's duplicate filter drops the copies that did arrive.
//
// The link's sender adds to it; the TUN reader takes from it when it sees
// the path go down; the link's sender trims it on its ticks, so an idle link holds no
// buffers.
type inflight struct {
	mu   sync.Mutex
	ring []sentPacket // nil while empty
	head int
	n    int
	// pending is the packet the link's sender is handing to QUIC (hand).
	// Send blocks while quic-go's queue is full, which on a path that just
	// went down lasts until QUIC's probe timeout (70-100 ms, measured in
	// the failover report, every cut), so take resends a copy of it.
	pending packetRef
	// taken is set by take and cleared by reopen: the path went down and
	// its session resent what it had in flight; nothing more is kept.
	taken bool
}

type sentPacket struct {
	ref    packetRef // buf nil once taken out by remove
	at     int64     // monotime it was handed to QUIC
	resent bool      // sent again after QUIC lost it once (not again)
}

// hand notes p as being handed to QUIC, until add or unhand, and reports
// whether it may be: not after take, until reopen (the path is down and
// the caller resends p elsewhere).
func (f *inflight) hand(p packetRef) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.taken {
		return false
	}
	f.pending = p
	return true
}

// unhand forgets the packet being handed over: QUIC refused it.
func (f *inflight) unhand() {
	f.mu.Lock()
	f.pending = packetRef{}
	f.mu.Unlock()
}

// add keeps p, the packet handed over (hand), sent at now, dropping what
// was sent before keepSince, and reports whether it did: not if take came
// first, which resent a copy of p (the caller frees p). resent says p is
// itself the resend of a datagram QUIC lost.
func (f *inflight) add(p packetRef, now, keepSince int64, resent bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = packetRef{}
	if f.taken {
		return false
	}
	if f.ring == nil {
		f.ring = make([]sentPacket, inflightLen)
	}
	f.trimLocked(keepSince)
	if f.n == len(f.ring) {
		f.popLocked()
	}
	f.ring[(f.head+f.n)%len(f.ring)] = sentPacket{ref: p, at: now, resent: resent}
	f.n++
	return true
}

// reopen has add keep packets again: the path is back up.
func (f *inflight) reopen() {
	f.mu.Lock()
	f.taken = false
	f.mu.Unlock()
}

// trim drops what was sent before keepSince, and the ring once it is
// empty; it reports whether it is.
func (f *inflight) trim(keepSince int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trimLocked(keepSince)
	if f.n == 0 {
		f.ring = nil
	}
	return f.n == 0
}

func (f *inflight) trimLocked(keepSince int64) {
	for f.n > 0 && f.ring[f.head].at < keepSince {
		f.popLocked()
	}
}

func (f *inflight) popLocked() {
	if b := f.ring[f.head].ref.buf; b != nil {
		putBuffer(b)
	}
	f.ring[f.head] = sentPacket{}
	f.head = (f.head + 1) % len(f.ring)
	f.n--
}

// take appends to dst, oldest first, the packets sent at or after since
// and a copy of the one being handed over, frees the rest, and keeps
// nothing more until reopen. It also returns how many of those it
// appended were sent before split but for the last queued of those: the
// datagrams still in quic-go's queue at split (see session.resend). The
// caller owns what it gets.
func (f *inflight) take(dst []packetRef, since, split int64, queued int) ([]packetRef, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trimLocked(since)
	before := 0
	for f.n > 0 {
		if e := f.ring[f.head]; e.ref.buf != nil { // nil: taken out by remove
			if e.at < split {
				before++
			}
			dst = append(dst, e.ref)
		}
		f.ring[f.head] = sentPacket{}
		f.head = (f.head + 1) % len(f.ring)
		f.n--
	}
	f.ring = nil
	if p := f.pending; p.buf != nil {
		c := packetRef{buf: getBuffer(p.n), n: p.n}
		copy(c.datagram(), p.datagram())
		dst = append(dst, c)
		f.pending = packetRef{}
	}
	f.taken = true
	return dst, max(before-queued, 0)
}

// remove takes out the packet with sequence number seq, if it was sent at
// or after since and is not itself a resend of a lost datagram. The
// caller owns what it gets.
func (f *inflight) remove(seq uint64, since int64) (packetRef, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Newest first: QUIC declares a loss about a round trip after the send.
	for i := f.n - 1; i >= 0; i-- {
		e := &f.ring[(f.head+i)%len(f.ring)]
		if e.at < since {
			break
		}
		if e.ref.buf == nil || e.ref.seq() != seq {
			continue
		}
		if e.resent {
			return packetRef{}, false
		}
		p := e.ref
		e.ref = packetRef{}
		return p, true
	}
	return packetRef{}, false
}
