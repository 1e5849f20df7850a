package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
)

// A link is one live path of a session, with the goroutines that own it:
//
//	TUN reader ──▶ queue ──▶ sender ──▶ Path.Send        (one per link)
//	Path.Receive ──▶ receiver ──▶ endpoint.deliver       (one per link)
//	control stream ──▶ controlReader (peer reports)      (one per link)
//	ticker: probes, reports, RTT and MTU refresh         (one per link)
//
// Liveness comes from the data itself: the client probes every path every
// probeInterval and the concentrator echoes, so each side hears from a
// working path at least that often. A path silent for deadAfter is out of
// the scheduler's choice until it speaks again.

const (
	// sendQueueLen bounds a link's send queue: room for a full TUN read
	// batch (up to 128 segments of one GSO read) while the sender drains
	// into quic-go's own 32-datagram queue; a longer queue would only add
	// delay under load.
	sendQueueLen = 128
	// probeInterval is how often the client probes each path: 20 probes
	// of 8 bytes (about 60 bytes on the wire) a second per path, so that a
	// silent path is noticed within a few hundred milliseconds.
	probeInterval = 50 * time.Millisecond
	// reportInterval is how often each side reports what it received.
	reportInterval = time.Second
	// minDeadAfter is the shortest silence that declares a path dead.
	minDeadAfter = 250 * time.Millisecond
)

var clockStart = time.Now()

// monotime is a monotonic clock in nanoseconds, cheap to store atomically.
func monotime() int64 { return int64(time.Since(clockStart)) }

// endpoint receives the data datagrams of its links.
type endpoint interface {
	deliver(ctx context.Context, l *link, seq uint64, pkt []byte)
}

type link struct {
	name     string
	hello    transport.Hello
	path     *transport.Path
	probe    bool // this side sends probes (the client)
	counters *Counters
	log      *slog.Logger

	queue chan packetRef

	lastRecv  atomic.Int64 // monotime of the last datagram received
	rtt       atomic.Int64 // smoothed RTT in nanoseconds
	mtu       atomic.Int32 // largest inner packet the path carries now
	txPackets atomic.Uint64
	txBytes   atomic.Uint64
	rxPackets atomic.Uint64
	rxBytes   atomic.Uint64
	peer      atomic.Pointer[transport.Report]

	highestSeq atomic.Uint64 // highest data sequence number received on this path
}

func newLink(name string, hello transport.Hello, p *transport.Path, probe bool, c *Counters, log *slog.Logger) *link {
	l := &link{
		name:     name,
		hello:    hello,
		path:     p,
		probe:    probe,
		counters: c,
		log:      log.With("path", name),
		queue:    make(chan packetRef, sendQueueLen),
	}
	l.lastRecv.Store(monotime())
	l.refresh()
	return l
}

// deadAfter is how long the path may stay silent before it is out of use:
// four probe intervals plus twice the RTT, so a probe and its echo have
// had four chances; the RTT includes the queueing delay of a loaded path.
func (l *link) deadAfter() int64 {
	return max(int64(minDeadAfter), int64(4*probeInterval)+2*l.rtt.Load())
}

// alive says whether the path has been heard from recently enough.
func (l *link) alive(now int64) bool {
	return now-l.lastRecv.Load() < l.deadAfter()
}

// state is the scheduler's view of the link.
func (l *link) state(now int64) scheduler.PathState {
	return scheduler.PathState{
		Up:       l.alive(now),
		Priority: l.hello.Priority,
		Weight:   l.hello.Weight,
		RTT:      time.Duration(l.rtt.Load()),
		Queued:   len(l.queue),
		QueueCap: cap(l.queue),
	}
}

// refresh updates RTT and MTU from QUIC's view of the path.
func (l *link) refresh() {
	if rtt := l.path.Stats().SmoothedRTT; rtt > 0 {
		l.rtt.Store(int64(rtt))
	}
	l.mtu.Store(int32(l.path.MaxDatagram() - transport.HeaderLen))
}

// run serves the link until its connection dies or ctx is done, then
// closes it and frees what is left in its queue.
func (l *link) run(ctx context.Context, ep endpoint) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, fn := range []func(context.Context) error{
		l.sender,
		func(ctx context.Context) error { return l.receiver(ctx, ep) },
		l.controlReader,
		l.ticker,
	} {
		wg.Go(func() { cancel(fn(ctx)) })
	}
	select {
	case <-ctx.Done():
	case <-l.path.Done():
		cancel(l.path.Err())
	}
	l.path.Close("path closed")
	wg.Wait()
	l.drain()
	return context.Cause(ctx)
}

func (l *link) drain() {
	for {
		select {
		case p := <-l.queue:
			putBuffer(p.buf)
		default:
			return
		}
	}
}

// sender owns Path.Send for data.
func (l *link) sender(ctx context.Context) error {
	for {
		select {
		case p := <-l.queue:
			err := l.path.Send(p.datagram())
			n := p.n
			putBuffer(p.buf)
			if err != nil {
				var tl *transport.DatagramTooLargeError
				if errors.As(err, &tl) {
					l.counters.DropTooBig.Add(1)
					l.mtu.Store(int32(tl.Max - transport.HeaderLen))
					continue
				}
				l.counters.DropSendFailed.Add(1)
				return err
			}
			l.txPackets.Add(1)
			l.txBytes.Add(uint64(n))
		case <-ctx.Done():
			return nil
		}
	}
}

// receiver owns Path.Receive.
func (l *link) receiver(ctx context.Context, ep endpoint) error {
	for {
		d, err := l.path.Receive(ctx)
		if err != nil {
			return err
		}
		kind, seq, payload, err := transport.ParseHeader(d)
		if err != nil {
			l.counters.DropBadDgram.Add(1)
			continue
		}
		l.lastRecv.Store(monotime())
		l.rxPackets.Add(1)
		l.rxBytes.Add(uint64(len(payload)))
		switch kind {
		case transport.KindData:
			if seq > l.highestSeq.Load() {
				l.highestSeq.Store(seq)
			}
			ep.deliver(ctx, l, seq, payload)
		case transport.KindProbe:
			transport.PutHeader(d, transport.KindProbeReply, seq)
			l.path.Send(d)
		}
	}
}

// controlReader reads the peer's control messages.
func (l *link) controlReader(ctx context.Context) error {
	for {
		m, err := l.path.ReadControl()
		if err != nil {
			return err
		}
		switch {
		case m.Report != nil:
			l.peer.Store(m.Report)
		case m.Error != "":
			return errors.New("peer: " + m.Error)
		}
	}
}

// ticker sends probes and reports and refreshes RTT and MTU.
func (l *link) ticker(ctx context.Context) error {
	probes := time.NewTicker(probeInterval)
	defer probes.Stop()
	reports := time.NewTicker(reportInterval)
	defer reports.Stop()
	var probe [transport.HeaderLen]byte
	var seq uint64
	for {
		select {
		case <-probes.C:
			l.refresh()
			if l.probe {
				seq++
				transport.PutHeader(probe[:], transport.KindProbe, seq)
				l.path.Send(probe[:])
			}
		case <-reports.C:
			r := &transport.Report{RxPackets: l.rxPackets.Load(), RxBytes: l.rxBytes.Load(), HighestSeq: l.highestSeq.Load()}
			if err := l.path.WriteControl(&transport.Message{Report: r}); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// PathStatus is one path as `braid status` shows it.
type PathStatus struct {
	Name       string        `json:"name"`
	State      string        `json:"state"` // up or down
	Local      string        `json:"local"`
	Remote     string        `json:"remote"`
	Priority   int           `json:"priority"`
	RTT        time.Duration `json:"rtt_ns"`
	MTU        int           `json:"mtu"`
	TxPackets  uint64        `json:"tx_packets"`
	TxBytes    uint64        `json:"tx_bytes"`
	RxPackets  uint64        `json:"rx_packets"`
	RxBytes    uint64        `json:"rx_bytes"`
	QUICLost   uint64        `json:"quic_packets_lost"`
	PeerRx     uint64        `json:"peer_rx_packets"` // what the peer says it received on this path
	SilenceFor time.Duration `json:"silence_ns"`
}

func (l *link) status() PathStatus {
	now := monotime()
	st := PathStatus{
		Name:       l.name,
		State:      "down",
		Local:      addrString(l.path.LocalAddr()),
		Remote:     addrString(l.path.RemoteAddr()),
		Priority:   l.hello.Priority,
		RTT:        time.Duration(l.rtt.Load()),
		MTU:        int(l.mtu.Load()),
		TxPackets:  l.txPackets.Load(),
		TxBytes:    l.txBytes.Load(),
		RxPackets:  l.rxPackets.Load(),
		RxBytes:    l.rxBytes.Load(),
		QUICLost:   l.path.Stats().PacketsLost,
		SilenceFor: time.Duration(now - l.lastRecv.Load()),
	}
	if l.alive(now) {
		st.State = "up"
	}
	if r := l.peer.Load(); r != nil {
		st.PeerRx = r.RxPackets
	}
	return st
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
