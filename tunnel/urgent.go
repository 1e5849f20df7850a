package tunnel

import "sync"

// urgentQueue holds a link's resends: what a dead path had in flight, the
// holes the inner flows wait for. The link's sender sends them before
// anything in its queue, and the session never waits for room for them.
// In the queue, they waited behind what the surviving path had queued
// (a full queue is 70 ms of a 20 Mbit/s uplink) and the session waited
// for room for them holding its sendMu, the TUN reader's and every
// failover's; put in front of the queue by taking it out and back, what
// had been queued found no room and was lost.
//
// What waits longer than maxResendWait is dropped when its turn comes:
// the inner flows have resent it themselves by then. urgentLen bounds the
// rest.
type urgentQueue struct {
	mu     sync.Mutex
	pkts   []urgentPacket // nil while empty
	ready  chan struct{}  // signalled when pkts becomes non-empty
	closed bool           // the link's sender is gone: push refuses
}

type urgentPacket struct {
	ref packetRef
	at  int64 // monotime it was pushed
}

// urgentLen bounds an urgent queue: what two dead paths can have had in
// flight and queued.
const urgentLen = 2 * (inflightLen + sendQueueLen)

func newUrgentQueue() urgentQueue {
	return urgentQueue{ready: make(chan struct{}, 1)}
}

// push queues p, pushed at now, and reports whether there was room (and
// a sender to send it); the queue owns p either way.
func (u *urgentQueue) push(p packetRef, now int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed || len(u.pkts) >= urgentLen {
		putBuffer(p.buf)
		return false
	}
	u.pkts = append(u.pkts, urgentPacket{p, now})
	select {
	case u.ready <- struct{}{}:
	default:
	}
	return true
}

// pop returns the oldest packet pushed at or after since, freeing older
// ones and counting them in expired.
func (u *urgentQueue) pop(since int64) (p packetRef, ok bool, expired int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for len(u.pkts) > 0 {
		e := u.pkts[0]
		u.pkts[0] = urgentPacket{}
		u.pkts = u.pkts[1:]
		if len(u.pkts) == 0 {
			u.pkts = nil
		}
		if e.at >= since {
			return e.ref, true, expired
		}
		putBuffer(e.ref.buf)
		expired++
	}
	return packetRef{}, false, expired
}

// takeAll appends what is queued to dst, oldest first, and empties the
// queue. The caller owns what it gets.
func (u *urgentQueue) takeAll(dst []packetRef) []packetRef {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.pkts {
		dst = append(dst, e.ref)
	}
	u.pkts = nil
	return dst
}

// close frees what is queued and has push refuse from now on: the link's
// sender is gone.
func (u *urgentQueue) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.pkts {
		putBuffer(e.ref.buf)
	}
	u.pkts = nil
	u.closed = true
}
