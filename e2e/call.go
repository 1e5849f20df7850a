package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
)

// CallResult is what a steady UDP stream (the shape of a voice call) saw.
type CallResult struct {
	Sent, Received int
	Duplicates     int
	LongestGap     time.Duration // longest time between two arrivals
	GapEnd         time.Duration // when it ended, from the start
}

// Lost is the number of packets that never arrived.
func (r CallResult) Lost() int { return r.Sent - r.Received }

func (r CallResult) String() string {
	return fmt.Sprintf("%d sent, %d lost, %d duplicated, longest gap %v (ending at %v)",
		r.Sent, r.Lost(), r.Duplicates, r.LongestGap.Round(time.Millisecond), r.GapEnd.Round(time.Millisecond))
}

const (
	callPort    = 5300
	callPayload = 160 // bytes: one 20 ms G.711 frame
)

// Call sends a UDP stream of pps packets a second from the LAN host to the
// server for dur, and reports what arrived.
func (e *Env) Call(ctx context.Context, pps int, dur time.Duration) (CallResult, error) {
	return udpStream(ctx, e.Topo.LANHost, e.Topo.Server, e.Topo.ServerAddr, pps, dur)
}

func udpStream(ctx context.Context, from, to *lab.NS, addr netip.Addr, pps int, dur time.Duration) (CallResult, error) {
	dst := netip.AddrPortFrom(addr, callPort)
	var rx, tx *net.UDPConn
	if err := to.Do(func() (err error) {
		rx, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return CallResult{}, err
	}
	defer rx.Close()
	if err := from.Do(func() (err error) {
		tx, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return CallResult{}, err
	}
	defer tx.Close()

	n := int(dur.Seconds() * float64(pps))
	start := time.Now()
	got := make(chan CallResult, 1)
	go func() { got <- receiveStream(rx, n, start) }()

	interval := time.Second / time.Duration(pps)
	buf := make([]byte, callPayload)
	sent := 0
	for i := range n {
		if err := ctx.Err(); err != nil {
			return CallResult{}, err
		}
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		binary.BigEndian.PutUint64(buf, uint64(i))
		if _, err := tx.Write(buf); err == nil {
			sent++
		}
	}
	// Stragglers: the slowest path is well under a second.
	time.Sleep(time.Second)
	rx.Close()
	r := <-got
	r.Sent = sent
	return r, nil
}

// receiveStream reads sequence-numbered packets until the socket closes.
func receiveStream(c *net.UDPConn, n int, start time.Time) CallResult {
	var r CallResult
	seen := make([]bool, n)
	last := start
	buf := make([]byte, 2048)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return r
		}
		now := time.Now()
		if k < 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(buf)
		if seq >= uint64(n) {
			continue
		}
		if seen[seq] {
			r.Duplicates++
			continue
		}
		seen[seq] = true
		r.Received++
		if gap := now.Sub(last); gap > r.LongestGap {
			r.LongestGap, r.GapEnd = gap, now.Sub(start)
		}
		last = now
	}
}
