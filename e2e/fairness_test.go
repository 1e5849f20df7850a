//go:build !race

package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/transport"
)

// TestReportFairness measures what one client whose path is full costs
// the concentrator's other clients. The concentrator reads every client's
// packets from one TUN; a client whose path cannot take what is sent to it
// must not hold that reader up. In the shaped lab, braid's client (B)
// downloads with fairnessFlows TCP flows over uplink 1 (50 Mbit/s) alone,
// then again while the server sends an unresponsive UDP stream of
// floodRate to a second client (A), whose one path runs over uplink 2
// (20 Mbit/s): the two share nothing but the concentrator. The report
// gives B's goodput in both runs and the concentrator's drops and reader
// waits; the test fails if the flood starves B (the download does not end
// within twice its time), as it did when the reader waited for A's room
// for as long as A's round trip warranted.
func TestReportFairness(t *testing.T) {
	e := start(t, Options{Links: shaped, Mode: "failover", ExtraClients: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	a, addr := dialExtraClient(t, ctx, e, 0)
	var wg sync.WaitGroup
	defer func() {
		a.Close("test done") // ends both readers
		wg.Wait()
	}()
	wg.Go(func() { drainControl(a) })
	wg.Go(func() { // A reads what reaches it, as a client would
		for {
			if _, err := a.Receive(ctx); err != nil {
				return
			}
		}
	})

	const dur = 5 * time.Second
	alone, err := e.TransferFlows(ctx, fairnessFlows, Download, dur)
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.ConcentratorStatus()
	if err != nil {
		t.Fatal(err)
	}
	fctx, stopFlood := context.WithCancel(ctx)
	flooded := make(chan int, 1)
	go func() { flooded <- flood(fctx, t, e, addr, floodRate) }()
	// A download the flood starves does not end on its own: it is given
	// up on after as long again as it should take, and counts as nothing.
	tctx, cancelTransfer := context.WithTimeout(ctx, 2*dur)
	shared, err := e.TransferFlows(tctx, fairnessFlows, Download, dur)
	cancelTransfer()
	stopFlood()
	sent := <-flooded
	if err != nil && tctx.Err() == nil {
		t.Fatal(err)
	}
	starved := err != nil
	after, err := e.ConcentratorStatus()
	if err != nil {
		t.Fatal(err)
	}
	if !alone.Intact || !starved && !shared.Intact {
		t.Fatalf("transfer damaged: alone %v, shared %v", alone, shared)
	}
	delta := func(k string) uint64 { return after.Counters[k] - before.Counters[k] }
	t.Logf("REPORT fairness: client B's download alone: %s", alone)
	what := fmt.Sprintf("%s; B's goodput %.2f of alone", shared, shared.Goodput()/alone.Goodput())
	if starved {
		what = fmt.Sprintf("starved: not done after %v", 2*dur)
		t.Errorf("client B's download starved by the flood toward client A")
	}
	t.Logf("REPORT fairness: client B's download while the server sends %.0f Mbit/s of UDP to client A (%d packets), whose path carries 20 Mbit/s: %s",
		floodRate/1e6, sent, what)
	t.Logf("REPORT fairness: concentrator meanwhile: %d packets dropped at full queues, %d with no path, reader waited %v in all",
		delta("drop_queue_full"), delta("drop_no_path"), time.Duration(delta("reader_wait_ns")).Round(time.Millisecond))
}

// floodRate is the UDP the fairness report sends toward client A: three
// times what A's path carries.
const floodRate = 60e6

// fairnessFlows is how many TCP flows client B's download has: several,
// so that its goodput alone varies less from run to run than one flow's.
const fairnessFlows = 4

// dialExtraClient opens a session for e.ExtraKeys[i] over uplink 2, the way
// braid's client dials (outside the tunnel), and returns its path and its
// inner IPv4 address.
func dialExtraClient(t *testing.T, ctx context.Context, e *Env, i int) (*transport.Path, netip.Addr) {
	t.Helper()
	concPub, err := e.ConcentratorPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := transport.ClientTLS(e.ExtraKeys[i], concPub)
	if err != nil {
		t.Fatal(err)
	}
	hello := &transport.Hello{Version: transport.ProtocolVersion, Uplink: "isp2", Mode: "failover", Instance: uint64(time.Now().UnixNano())}
	var p *transport.Path
	var w *transport.Welcome
	err = e.Topo.Client.Do(func() error {
		var err error
		p, w, err = transport.Dial(ctx, transport.DialConfig{
			Remote:    netip.AddrPortFrom(e.Topo.ConcAddr, ConcPort),
			Interface: e.Topo.Uplink2Dev, Source: e.Topo.ClientUplink2Addr,
			TLS: tlsConf,
		}, hello)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range w.Addresses {
		if a.Addr().Is4() {
			return p, a.Addr()
		}
	}
	p.Close("no address")
	t.Fatalf("welcome without an IPv4 address: %v", w.Addresses)
	return nil, netip.Addr{}
}

// flood sends 1200-byte UDP datagrams from the server to addr at rate
// bits per second until ctx is done, and returns how many it sent.
func flood(ctx context.Context, t *testing.T, e *Env, addr netip.Addr, rate float64) int {
	const size = 1200
	var conn *net.UDPConn
	if err := e.Topo.Server.Do(func() (err error) {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 9)))
		return err
	}); err != nil {
		t.Error(fmt.Errorf("flood: %w", err))
		return 0
	}
	defer conn.Close()
	buf := make([]byte, size)
	pps := rate / 8 / size
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		due := int(time.Since(start).Seconds() * pps)
		for ; sent < due; sent++ {
			binary.BigEndian.PutUint64(buf, uint64(sent))
			conn.Write(buf) // a refusal (ICMP from a previous one) is as good as a send here
		}
		select {
		case <-ctx.Done():
			return sent
		case <-tick.C:
		}
	}
}
