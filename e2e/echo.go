package e2e

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
)

// Echo is ping-like traffic through the tunnel: the LAN host sends a
// small numbered UDP datagram to an echo server on the server host every
// interval, and the replies are timed. It is the shape of a call's
// heartbeat, and tells when traffic flows again after an outage.
type Echo struct {
	srv, conn *net.UDPConn
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu      sync.Mutex
	sentAt  map[uint32]time.Time // seq -> when sent
	sent    int
	replies int
	// lastFresh is when the latest reply to a datagram sent at or after
	// freshAfter arrived.
	freshAfter, lastFresh time.Time
	samples               []rttSample
}

// rttSample is one reply: when its datagram was sent and its round trip.
type rttSample struct {
	at  time.Time
	rtt time.Duration
}

const echoPort = 7007

// StartEcho starts Echo traffic every interval until Close.
func (e *Env) StartEcho(interval time.Duration) (*Echo, error) {
	return startEcho(e.Topo.LANHost, e.Topo.Server, e.Topo.ServerAddr, interval)
}

// StartEchoRaw is StartEcho outside the tunnel, from the client host to
// the concentrator host over uplink 1, as TransferRaw.
func (e *Env) StartEchoRaw(interval time.Duration) (*Echo, error) {
	return startEcho(e.Topo.Client, e.Topo.Conc, e.Topo.ConcAddr, interval)
}

// startEcho starts Echo traffic from namespace from to an echo server on
// addr in namespace to.
func startEcho(from, to *lab.NS, addr netip.Addr, interval time.Duration) (*Echo, error) {
	dst := netip.AddrPortFrom(addr, echoPort)
	ec := &Echo{sentAt: map[uint32]time.Time{}}
	if err := to.Do(func() (err error) {
		ec.srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return nil, err
	}
	if err := from.Do(func() (err error) {
		ec.conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		ec.srv.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ec.cancel = cancel
	ec.wg.Go(ec.serve)
	ec.wg.Go(ec.receive)
	ec.wg.Go(func() { ec.send(ctx, interval) })
	return ec, nil
}

func (ec *Echo) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := ec.srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		ec.srv.WriteToUDPAddrPort(buf[:n], from)
	}
}

func (ec *Echo) send(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var seq uint32
	b := make([]byte, 64)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq++
		binary.BigEndian.PutUint32(b, seq)
		ec.mu.Lock()
		ec.sentAt[seq] = time.Now()
		ec.sent++
		ec.mu.Unlock()
		ec.conn.Write(b) // errors (no route yet) count as losses
	}
}

func (ec *Echo) receive() {
	b := make([]byte, 1500)
	for {
		n, err := ec.conn.Read(b)
		if err != nil {
			if ne, ok := err.(*net.OpError); ok && (os.IsTimeout(ne) || ne.Err == syscall.ECONNREFUSED) {
				continue
			}
			return
		}
		if n < 4 {
			continue
		}
		now := time.Now()
		seq := binary.BigEndian.Uint32(b)
		ec.mu.Lock()
		if at, ok := ec.sentAt[seq]; ok {
			delete(ec.sentAt, seq)
			ec.replies++
			ec.samples = append(ec.samples, rttSample{at, now.Sub(at)})
			if !at.Before(ec.freshAfter) {
				ec.lastFresh = now
			}
		}
		ec.mu.Unlock()
	}
}

// MarkFresh makes only replies to datagrams sent from now on count for
// WaitFresh.
func (ec *Echo) MarkFresh() {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	ec.freshAfter, ec.lastFresh = time.Now(), time.Time{}
}

// WaitFresh waits up to timeout for a reply to a datagram sent since
// MarkFresh, and returns when it arrived (zero on timeout).
func (ec *Echo) WaitFresh(ctx context.Context, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ec.mu.Lock()
		t := ec.lastFresh
		ec.mu.Unlock()
		if !t.IsZero() {
			return t
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}
}

// Counts returns how many datagrams were sent and answered.
func (ec *Echo) Counts() (sent, replies int) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return ec.sent, ec.replies
}

// RTTs returns the round trips of the datagrams sent in [from, to) that
// were answered, and how many sent then were not (yet).
func (ec *Echo) RTTs(from, to time.Time) (rtts []time.Duration, unanswered int) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	for _, s := range ec.samples {
		if !s.at.Before(from) && s.at.Before(to) {
			rtts = append(rtts, s.rtt)
		}
	}
	for _, at := range ec.sentAt {
		if !at.Before(from) && at.Before(to) {
			unanswered++
		}
	}
	return rtts, unanswered
}

// Close stops the traffic.
func (ec *Echo) Close() {
	ec.cancel()
	ec.conn.Close()
	ec.srv.Close()
	ec.wg.Wait()
}
