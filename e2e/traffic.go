package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
)

// TransferResult is what one TCP transfer through the tunnel did.
type TransferResult struct {
	Bytes        int64
	Duration     time.Duration
	LongestStall time.Duration // longest time the receiver got nothing
	StallEnd     time.Duration // when it ended, from the start
	Intact       bool          // every byte arrived, in order, unchanged

	Start time.Time // when the receiver started
	// Gaps are the times the receiver got nothing for at least
	// recordedGap, from the start.
	Gaps []Gap
}

// Gap is a time the receiver of a transfer got nothing, from its start.
type Gap struct{ From, To time.Duration }

// Len is how long the gap lasted.
func (g Gap) Len() time.Duration { return g.To - g.From }

// recordedGap is the shortest gap a TransferResult records: shorter ones
// happen between any two reads.
const recordedGap = 10 * time.Millisecond

// StallAround returns the longest gap that overlaps [at, at+window]: the
// stall an event at that time (a cut) caused, leaving out the gaps a
// transfer has anyway, long before or after it.
func (r TransferResult) StallAround(at time.Time, window time.Duration) Gap {
	from := at.Sub(r.Start)
	var longest Gap
	for _, g := range r.Gaps {
		if g.To >= from && g.From <= from+window && g.Len() > longest.Len() {
			longest = g
		}
	}
	return longest
}

// Goodput in bits per second.
func (r TransferResult) Goodput() float64 {
	return float64(r.Bytes) * 8 / r.Duration.Seconds()
}

func (r TransferResult) String() string {
	return fmt.Sprintf("%d bytes in %v (%.1f Mbit/s), longest stall %v (ending at %v), intact %v",
		r.Bytes, r.Duration.Round(time.Millisecond), r.Goodput()/1e6, r.LongestStall.Round(time.Millisecond),
		r.StallEnd.Round(time.Millisecond), r.Intact)
}

// transferPort is the server's TCP port for transfers.
const transferPort = 5201

// Transfer streams from the LAN host to the server over one TCP connection
// until limit bytes are sent (limit > 0) or dur has passed (dur > 0),
// calling during with the bytes received so far as they arrive. The
// receiver checks every byte against the sender's hash.
func (e *Env) Transfer(ctx context.Context, limit int64, dur time.Duration, during func(received int64)) (TransferResult, error) {
	return e.transfer(ctx, e.Topo.ServerAddr, limit, dur, during)
}

// Transfer6 is Transfer over IPv6.
func (e *Env) Transfer6(ctx context.Context, limit int64, dur time.Duration) (TransferResult, error) {
	return e.transfer(ctx, e.Topo.ServerAddr6, limit, dur, nil)
}

func (e *Env) transfer(ctx context.Context, server netip.Addr, limit int64, dur time.Duration, during func(int64)) (TransferResult, error) {
	return transferBetween(ctx, e.Topo.LANHost, e.Topo.Server, server, limit, dur, during)
}

// transferBetween runs a transfer from a host in namespace from to a
// listener on addr in namespace to.
func transferBetween(ctx context.Context, from, to *lab.NS, addr netip.Addr, limit int64, dur time.Duration, during func(int64)) (TransferResult, error) {
	ln, dial, err := listenDial(from, to, addr)
	if err != nil {
		return TransferResult{}, err
	}
	defer ln.Close()
	return runTransfer(ctx, ln, dial, limit, dur, during)
}

// listenDial listens on addr's transfer port in namespace to, and returns
// a dialer of it from namespace from.
func listenDial(from, to *lab.NS, addr netip.Addr) (net.Listener, func(context.Context) (net.Conn, error), error) {
	hostport := netip.AddrPortFrom(addr, transferPort).String()
	var ln net.Listener
	if err := to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", hostport)
		return err
	}); err != nil {
		return nil, nil, err
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		var conn net.Conn
		err := from.Do(func() error {
			var err error
			var d net.Dialer
			conn, err = d.DialContext(ctx, "tcp", hostport)
			return err
		})
		return conn, err
	}
	return ln, dial, nil
}

// runTransfer sends over a connection from dial to one accepted on ln.
func runTransfer(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), limit int64, dur time.Duration, during func(int64)) (TransferResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sent := make(chan sendResult, 1)
	go func() {
		r := send(ctx, dial, limit, dur)
		if r.err != nil {
			cancel() // unblocks Accept and the receiver
		}
		sent <- r
	}()
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	conn, err := ln.Accept()
	stopAccept()
	if err != nil {
		return TransferResult{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	res, got, rerr := receive(conn, during)
	return checked(res, got, rerr, <-sent)
}

type sendResult struct {
	bytes int64
	sum   [32]byte
	err   error
}

// send writes a pseudo-random stream and returns its length and hash.
func send(ctx context.Context, dial func(context.Context) (net.Conn, error), limit int64, dur time.Duration) sendResult {
	conn, err := dial(ctx)
	if err != nil {
		return sendResult{err: err}
	}
	defer conn.Close()
	return sendOn(conn, limit, dur)
}

// sendOn writes a pseudo-random stream on conn until limit bytes are sent
// (limit > 0) or dur has passed (dur > 0) and returns its length and hash.
func sendOn(conn net.Conn, limit int64, dur time.Duration) sendResult {
	rng := rand.NewChaCha8([32]byte{42})
	h := sha256.New()
	buf := make([]byte, 32<<10)
	var total int64
	deadline := time.Now().Add(dur)
	for (limit <= 0 || total < limit) && (dur <= 0 || time.Now().Before(deadline)) {
		n := len(buf)
		if limit > 0 {
			n = int(min(int64(n), limit-total))
		}
		rng.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := conn.Write(buf[:n]); err != nil {
			return sendResult{bytes: total, err: err}
		}
		total += int64(n)
	}
	var r sendResult
	r.bytes = total
	copy(r.sum[:], h.Sum(nil))
	return r
}

// receive reads to EOF, hashing and timing what arrives.
func receive(conn net.Conn, during func(int64)) (TransferResult, [32]byte, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	start := time.Now()
	last := start
	res := TransferResult{Start: start}
	var sum [32]byte
	for {
		n, err := conn.Read(buf)
		now := time.Now()
		if n > 0 {
			gap := now.Sub(last)
			if gap > res.LongestStall {
				res.LongestStall, res.StallEnd = gap, now.Sub(start)
			}
			if gap >= recordedGap {
				res.Gaps = append(res.Gaps, Gap{From: last.Sub(start), To: now.Sub(start)})
			}
			last = now
			h.Write(buf[:n])
			res.Bytes += int64(n)
			if during != nil {
				during(res.Bytes)
			}
		}
		if errors.Is(err, io.EOF) {
			res.Duration = last.Sub(start)
			copy(sum[:], h.Sum(nil))
			return res, sum, nil
		}
		if err != nil {
			res.Duration = now.Sub(start)
			return res, sum, err
		}
	}
}

// Direction says which end of a transfer sends: the host that dials or
// the host that listens. Every transfer is dialed from the client's side
// (the LAN host, or the client host outside the tunnel), since the ISPs'
// NAT lets nothing in; a download is sent back on the dialed connection.
type Direction int

const (
	Upload   Direction = iota // the dialing (client-side) host sends
	Download                  // the listening (concentrator-side) host sends
)

func (d Direction) String() string {
	if d == Download {
		return "download"
	}
	return "upload"
}

// TransferFlows runs flows parallel TCP transfers for dur between the LAN
// host and the server, through the tunnel, in direction dir. The result
// adds up the flows' bytes over the longest flow's duration; it is intact
// if every flow is (each flow is checked against its sender's hash).
func (e *Env) TransferFlows(ctx context.Context, flows int, dir Direction, dur time.Duration) (TransferResult, error) {
	return FlowsBetween(ctx, e.Topo.LANHost, e.Topo.Server, e.Topo.ServerAddr, flows, dir, dur)
}

// TransferRawFlows is TransferFlows outside the tunnel, between the client
// host and the concentrator host over uplink 1 (see TransferRaw).
func (e *Env) TransferRawFlows(ctx context.Context, flows int, dir Direction, dur time.Duration) (TransferResult, error) {
	return FlowsBetween(ctx, e.Topo.Client, e.Topo.Conc, e.Topo.ConcAddr, flows, dir, dur)
}

// FlowsBetween runs flows parallel transfers for dur between a host in
// namespace from, which dials, and a listener on addr in namespace to.
func FlowsBetween(ctx context.Context, from, to *lab.NS, addr netip.Addr, flows int, dir Direction, dur time.Duration) (TransferResult, error) {
	ln, dial, err := listenDial(from, to, addr)
	if err != nil {
		return TransferResult{}, err
	}
	defer ln.Close()
	return runFlows(ctx, ln, dial, flows, dir, dur)
}

// runFlows connects flows pairs of connections, one at a time so that each
// dialed end is known with its accepted end, then streams over all of them
// at once.
func runFlows(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), flows int, dir Direction, dur time.Duration) (TransferResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	var conns []net.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	defer closeAll()
	type pair struct{ dialed, accepted net.Conn }
	pairs := make([]pair, flows)
	for i := range pairs {
		type dialResult struct {
			conn net.Conn
			err  error
		}
		dialed := make(chan dialResult, 1)
		go func() {
			c, err := dial(ctx)
			if err != nil {
				cancel() // unblocks Accept
			}
			dialed <- dialResult{c, err}
		}()
		acc, aerr := ln.Accept()
		d := <-dialed
		for _, c := range []net.Conn{d.conn, acc} {
			if c != nil {
				conns = append(conns, c)
			}
		}
		if d.err != nil {
			return TransferResult{}, fmt.Errorf("flow %d: dial: %w", i, d.err)
		}
		if aerr != nil {
			return TransferResult{}, fmt.Errorf("flow %d: accept: %w", i, aerr)
		}
		pairs[i] = pair{d.conn, acc}
	}
	stopAll := context.AfterFunc(ctx, closeAll)
	defer stopAll()
	results := make([]TransferResult, flows)
	errs := make([]error, flows)
	var wg sync.WaitGroup
	for i, p := range pairs {
		src, dst := p.dialed, p.accepted
		if dir == Download {
			src, dst = dst, src
		}
		wg.Go(func() {
			results[i], errs[i] = stream(src, dst, dur)
			if errs[i] != nil {
				cancel() // a broken flow ends the others
				errs[i] = fmt.Errorf("flow %d: %w", i, errs[i])
			}
		})
	}
	wg.Wait()
	total := TransferResult{Intact: true}
	for _, r := range results {
		total.Bytes += r.Bytes
		total.Duration = max(total.Duration, r.Duration)
		if r.LongestStall > total.LongestStall {
			total.LongestStall, total.StallEnd = r.LongestStall, r.StallEnd
		}
		total.Intact = total.Intact && r.Intact
	}
	return total, errors.Join(errs...)
}

// stream sends for dur on src and receives on dst, checking every byte.
func stream(src, dst net.Conn, dur time.Duration) (TransferResult, error) {
	sent := make(chan sendResult, 1)
	go func() {
		r := sendOn(src, 0, dur)
		src.Close() // EOF for the receiver
		if r.err != nil {
			dst.Close()
		}
		sent <- r
	}()
	res, got, rerr := receive(dst, nil)
	if rerr != nil {
		src.Close() // the sender must not wait for a reader that is gone
	}
	return checked(res, got, rerr, <-sent)
}

// checked is the result of a transfer whose receiver got res (with hash
// got, and error rerr) from a sender that reported s.
func checked(res TransferResult, got [32]byte, rerr error, s sendResult) (TransferResult, error) {
	if s.err != nil {
		return res, fmt.Errorf("sender: %w", s.err)
	}
	if rerr != nil {
		return res, fmt.Errorf("receiver after %d bytes: %w", res.Bytes, rerr)
	}
	res.Intact = res.Bytes == s.bytes && got == s.sum
	return res, nil
}
