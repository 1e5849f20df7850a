package tunnel

import "sync/atomic"

// Counters count what an endpoint did with packets, above all every
// packet it dropped and why. All fields are updated atomically.
type Counters struct {
	TunRxPackets atomic.Uint64 // read from the TUN
	TunTxPackets atomic.Uint64 // written to the TUN

	DropMalformed  atomic.Uint64 // not an IP packet we could parse
	DropNoPath     atomic.Uint64 // no usable path (or no session) for it
	DropQueueFull  atomic.Uint64 // every chosen path's queue was full
	DropAQM        atomic.Uint64 // a path's queue stood too long (CoDel): the inner flows are told to slow down
	DropTooBig     atomic.Uint64 // larger than the path MTU; ICMP sent back
	DropDuplicate  atomic.Uint64 // seen before (another path, or a replay)
	DropBadDgram   atomic.Uint64 // datagram with a bad header
	DropSpoofed    atomic.Uint64 // inner source not the client's
	DropNoRoute    atomic.Uint64 // concentrator: no client owns the destination
	DropSendFailed atomic.Uint64 // the path refused the datagram
	ICMPSent       atomic.Uint64 // "too big" messages written to the TUN
	MSSClamped     atomic.Uint64 // SYNs whose MSS we lowered
	Resent         atomic.Uint64 // in flight on (or held for) a path that died: sent on another
	ResendSkipped  atomic.Uint64 // in flight on a path that died, not sent again: the peer said it had it
	ResendExpired  atomic.Uint64 // in flight on a path that died, held back for the peer's answer, which came too late
	ResendNoRoom   atomic.Uint64 // in flight on a path that died, not sent again: its turn came later than maxResendWait, no room, or no path
	LossResent     atomic.Uint64 // in a packet QUIC declared lost: sent again
	DirectTx       atomic.Uint64 // direct datagrams sent (transport/direct.go), copies included
	DirectRx       atomic.Uint64 // direct datagrams accepted
	DropBadDirect  atomic.Uint64 // not QUIC, and not a direct datagram of a path
	// ReaderWaitNs is the time the TUN reader spent waiting for room in a
	// path's queue (nanoseconds): the backpressure of the paths.
	ReaderWaitNs atomic.Uint64
}

// CounterSnapshot is a copy of Counters for status output.
type CounterSnapshot map[string]uint64

// Snapshot copies the counters.
func (c *Counters) Snapshot() CounterSnapshot {
	return CounterSnapshot{
		"tun_rx_packets":   c.TunRxPackets.Load(),
		"resent":           c.Resent.Load(),
		"resend_skipped":   c.ResendSkipped.Load(),
		"resend_expired":   c.ResendExpired.Load(),
		"resend_no_room":   c.ResendNoRoom.Load(),
		"loss_resent":      c.LossResent.Load(),
		"direct_tx":        c.DirectTx.Load(),
		"direct_rx":        c.DirectRx.Load(),
		"drop_bad_direct":  c.DropBadDirect.Load(),
		"tun_tx_packets":   c.TunTxPackets.Load(),
		"drop_malformed":   c.DropMalformed.Load(),
		"drop_no_path":     c.DropNoPath.Load(),
		"drop_queue_full":  c.DropQueueFull.Load(),
		"drop_aqm":         c.DropAQM.Load(),
		"drop_too_big":     c.DropTooBig.Load(),
		"drop_duplicate":   c.DropDuplicate.Load(),
		"drop_bad_dgram":   c.DropBadDgram.Load(),
		"drop_spoofed":     c.DropSpoofed.Load(),
		"drop_no_route":    c.DropNoRoute.Load(),
		"drop_send_failed": c.DropSendFailed.Load(),
		"icmp_sent":        c.ICMPSent.Load(),
		"mss_clamped":      c.MSSClamped.Load(),
		"reader_wait_ns":   c.ReaderWaitNs.Load(),
	}
}
