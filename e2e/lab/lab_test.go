package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// requireRoot skips the test unless it runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab tests need root: they create network namespaces, veths, TUNs and nftables rules")
	}
}

// newTopology builds a topology that is removed when the test ends.
func newTopology(t *testing.T, opt TopologyOptions) *Topology {
	t.Helper()
	requireRoot(t)
	topo, err := NewTopology("bt", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	return topo
}

// echoServer runs a UDP server in ns on addr that answers each datagram
// with its first 4 bytes followed by the sender's address as it sees it.
func echoServer(t *testing.T, ns *NS, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 4 {
				continue
			}
			reply := append(buf[:4:4], from.Addr().Unmap().String()...)
			c.WriteToUDPAddrPort(reply, from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// pinger measures round trips to an echoServer.
type pinger struct {
	c   *net.UDPConn
	seq uint32
}

// newPinger opens a UDP socket in ns, bound to src if valid, to dst.
func newPinger(t *testing.T, ns *NS, src netip.Addr, dst netip.AddrPort) *pinger {
	t.Helper()
	var laddr *net.UDPAddr
	if src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pinger{c: c}
}

// ping does one round trip. It returns the RTT and the address the echo
// server saw.
func (p *pinger) ping(timeout time.Duration) (time.Duration, string, error) {
	p.seq++
	start := time.Now()
	p.c.SetDeadline(start.Add(timeout))
	if _, err := p.c.Write(binary.BigEndian.AppendUint32(nil, p.seq)); err != nil {
		return 0, "", err
	}
	buf := make([]byte, 1500)
	for {
		n, err := p.c.Read(buf)
		if err != nil {
			return 0, "", err
		}
		if n >= 4 && binary.BigEndian.Uint32(buf) == p.seq {
			return time.Since(start), string(buf[4:n]), nil
		}
	}
}

// waitPing pings until a reply arrives, for up to 5 s (links may take a
// moment to come back). It returns the address the server saw.
func (p *pinger) waitPing(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, seen, err := p.ping(200 * time.Millisecond)
		if err == nil {
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo from %v: %v", p.c.RemoteAddr(), err)
		}
	}
}

// expectNoPing fails the test if any of a few pings gets an answer.
func (p *pinger) expectNoPing(t *testing.T) {
	t.Helper()
	for range 3 {
		if _, _, err := p.ping(300 * time.Millisecond); err == nil {
			t.Fatalf("unexpected echo from %v", p.c.RemoteAddr())
		}
	}
}

// rtts returns the minimum and median of n round trips.
func (p *pinger) rtts(t *testing.T, n int) (minRTT, median time.Duration) {
	t.Helper()
	var d []time.Duration
	for range n {
		rtt, _, err := p.ping(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		d = append(d, rtt)
	}
	slices.Sort(d)
	return d[0], d[len(d)/2]
}

// uplink describes a client uplink of the topology for table-driven tests.
type uplink struct {
	i          int
	src, nat   netip.Addr
	concAddr   netip.Addr
	familyName string
}

// uplinks returns the four (uplink, family) combinations.
func uplinks(topo *Topology) []uplink {
	return []uplink{
		{1, topo.ClientUplink1Addr, topo.ISP1PublicAddr, topo.ConcAddr, "v4"},
		{1, topo.ClientUplink1Addr6, topo.ISP1PublicAddr6, topo.ConcAddr6, "v6"},
		{2, topo.ClientUplink2Addr, topo.ISP2PublicAddr, topo.ConcAddr, "v4"},
		{2, topo.ClientUplink2Addr6, topo.ISP2PublicAddr6, topo.ConcAddr6, "v6"},
	}
}

func (u uplink) String() string { return fmt.Sprintf("up%d-%s", u.i, u.familyName) }

func TestTopologyReachability(t *testing.T) {
	t.Parallel()
	topo := newTopology(t, TopologyOptions{})
	for _, u := range uplinks(topo) {
		t.Run(u.String(), func(t *testing.T) {
			srv := echoServer(t, topo.Conc, u.concAddr)
			p := newPinger(t, topo.Client, u.src, srv)
			if seen := p.waitPing(t); seen != u.nat.String() {
				t.Errorf("concentrator saw %s, want ISP%d NAT address %s", seen, u.i, u.nat)
			}
		})
	}
	t.Run("lanhost", func(t *testing.T) {
		for _, c := range []struct{ client, server netip.Addr }{
			{topo.ClientLANAddr, topo.ServerAddr},
			{topo.ClientLANAddr6, topo.ServerAddr6},
		} {
			p := newPinger(t, topo.LANHost, netip.Addr{}, echoServer(t, topo.Client, c.client))
			p.waitPing(t)
			// Without a tunnel the LAN reaches nothing beyond the client:
			// the ISPs know no route back to it.
			p = newPinger(t, topo.LANHost, netip.Addr{}, echoServer(t, topo.Server, c.server))
			p.expectNoPing(t)
		}
	})
	t.Run("conc-to-server", func(t *testing.T) {
		for _, dst := range []netip.Addr{topo.ServerAddr, topo.ServerAddr6} {
			srv := echoServer(t, topo.Server, dst)
			p := newPinger(t, topo.Conc, netip.Addr{}, srv)
			p.waitPing(t)
		}
	})
}

func TestImpairDelay(t *testing.T) {
	t.Parallel()
	const delay = 20 * time.Millisecond
	topo := newTopology(t, TopologyOptions{Delay2: delay})
	for _, u := range uplinks(topo) {
		t.Run(u.String(), func(t *testing.T) {
			srv := echoServer(t, topo.Conc, u.concAddr)
			p := newPinger(t, topo.Client, u.src, srv)
			p.waitPing(t)
			imp := topo.Imp(u.i)
			if u.i == 1 {
				base, baseMed := p.rtts(t, 10)
				t.Logf("no delay: min RTT %v, median %v", base, baseMed)
				imp.Set(Impairment{Delay: delay})
				defer imp.Set(Impairment{})
			}
			minRTT, med := p.rtts(t, 20)
			t.Logf("delay %v each way: min RTT %v, median %v", delay, minRTT, med)
			if minRTT < 2*delay-5*time.Millisecond {
				t.Errorf("min RTT %v with %v delay each way, want >= %v", minRTT, delay, 2*delay-5*time.Millisecond)
			}
		})
	}
	t.Run("jitter", func(t *testing.T) {
		srv := echoServer(t, topo.Conc, topo.ConcAddr)
		p := newPinger(t, topo.Client, topo.ClientUplink1Addr, srv)
		topo.Imp1.Set(Impairment{Delay: 30 * time.Millisecond, Jitter: 10 * time.Millisecond})
		defer topo.Imp1.Set(Impairment{})
		minRTT, med := p.rtts(t, 20)
		t.Logf("delay 30ms±10ms each way: min RTT %v, median %v", minRTT, med)
		if minRTT < 35*time.Millisecond {
			t.Errorf("min RTT %v, want >= 35ms", minRTT)
		}
	})
}

func TestImpairLoss(t *testing.T) {
	t.Parallel()
	topo := newTopology(t, TopologyOptions{})
	srv := echoServer(t, topo.Conc, topo.ConcAddr6)
	p := newPinger(t, topo.Client, topo.ClientUplink1Addr6, srv)
	p.waitPing(t)
	topo.Imp1.Set(Impairment{Loss: 1})
	p.expectNoPing(t)
	if st := topo.Imp1.Stats(); st.Lost == 0 {
		t.Errorf("stats %+v: no packets lost", st)
	}
	topo.Imp1.Set(Impairment{})
	p.waitPing(t)

	// Half of the packets reaching the impairer are lost, give or take a
	// margin that makes a flake astronomically unlikely.
	topo.Imp1.Set(Impairment{Loss: 0.5})
	before := topo.Imp1.Stats()
	const n = 1000
	for range n {
		p.c.Write([]byte("lossy"))
	}
	deadline := time.Now().Add(5 * time.Second)
	var lost, total uint64
	for total < n && time.Now().Before(deadline) {
		st := topo.Imp1.Stats()
		lost = st.Lost - before.Lost
		total = lost + st.Forwarded - before.Forwarded
		time.Sleep(10 * time.Millisecond) // poll until the counters settle
	}
	t.Logf("loss 0.5: %d of %d packets lost", lost, total)
	if total < n/2 || lost < total/4 || lost > total*3/4 {
		t.Errorf("loss 0.5: %d of %d packets lost", lost, total)
	}
	topo.Imp1.Set(Impairment{})

	// A closed impairer leaves a direct path.
	if err := topo.Imp1.Close(); err != nil {
		t.Fatal(err)
	}
	p.waitPing(t)
}

func TestUplinkDown(t *testing.T) {
	t.Parallel()
	topo := newTopology(t, TopologyOptions{})
	srv := echoServer(t, topo.Conc, topo.ConcAddr)
	srv6 := echoServer(t, topo.Conc, topo.ConcAddr6)
	p1 := newPinger(t, topo.Client, topo.ClientUplink1Addr, srv)
	p1v6 := newPinger(t, topo.Client, topo.ClientUplink1Addr6, srv6)
	p2 := newPinger(t, topo.Client, topo.ClientUplink2Addr, srv)
	p1.waitPing(t)
	p1v6.waitPing(t)

	if err := topo.SetUplinkUp(1, false); err != nil {
		t.Fatal(err)
	}
	p1.expectNoPing(t)
	p1v6.expectNoPing(t)
	p2.waitPing(t)

	if err := topo.SetUplinkUp(1, true); err != nil {
		t.Fatal(err)
	}
	p1.waitPing(t)
	p1v6.waitPing(t)
}

func TestBlackhole(t *testing.T) {
	t.Parallel()
	topo := newTopology(t, TopologyOptions{})
	srv := echoServer(t, topo.Conc, topo.ConcAddr)
	p1 := newPinger(t, topo.Client, topo.ClientUplink1Addr, srv)
	p2 := newPinger(t, topo.Client, topo.ClientUplink2Addr, srv)
	p1.waitPing(t)

	for _, c := range []struct {
		name string
		ns   *NS
		dev  string
	}{
		{"isp-forward", topo.ISP1, ISPClientDev},
		{"client-output", topo.Client, topo.Uplink1Dev},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.ns.Blackhole(c.dev, true); err != nil {
				t.Fatal(err)
			}
			if err := c.ns.Blackhole(c.dev, true); err != nil { // idempotent
				t.Fatal(err)
			}
			p1.expectNoPing(t)
			p2.waitPing(t)
			if err := c.ns.Blackhole(c.dev, false); err != nil {
				t.Fatal(err)
			}
			p1.waitPing(t)
		})
	}
}

func TestShape(t *testing.T) {
	t.Parallel()
	const rate = 10_000_000 // bit/s
	topo := newTopology(t, TopologyOptions{Rate1: rate})

	var ln net.Listener
	err := topo.Conc.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(topo.ConcAddr, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- -1
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			received <- -1
			return
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := io.CopyBuffer(io.Discard, c, buf)
		received <- n + 1
	}()

	var c net.Conn
	err = topo.Client.Do(func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(topo.ClientUplink1Addr, 0))}
		c, err = d.Dial("tcp", ln.Addr().String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	n := <-received
	if n <= 0 {
		t.Fatal("nothing received")
	}
	t.Logf("shaped to %d bit/s: received %d bit in 1 s", rate, 8*n)
	if 8*n >= 2*rate {
		t.Errorf("received %d bit in 1 s over a %d bit/s link", 8*n, rate)
	}
}

func TestLabClose(t *testing.T) {
	requireRoot(t)
	l, err := New("bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	a, err := l.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.NS("a"); err == nil {
		t.Error("creating namespace a twice succeeded")
	}
	for _, dev := range []string{"x1", "x2"} {
		if _, err := l.Veth(a, dev, nil, b, dev, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Impair("x1", "x2", Impairment{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*NS{a, b} {
		if _, err := os.Stat(n.Path()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, n := range []*NS{a, b} {
		if _, err := os.Stat(n.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close: %v", n.Path(), err)
		}
	}
}

// TestHelperProcess is not a test: TestStart runs the test binary as a
// child process in a namespace, and this prints the child's interfaces.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("LAB_HELPER_PROCESS") != "1" {
		return
	}
	ifs, err := net.Interfaces()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, ifc := range ifs {
		fmt.Println(ifc.Name)
	}
	os.Exit(0)
}

func TestStart(t *testing.T) {
	t.Parallel()
	topo := newTopology(t, TopologyOptions{})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "LAB_HELPER_PROCESS=1")
	var out strings.Builder
	cmd.Stdout = &out
	if err := topo.Client.Run(cmd); err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(out.String())
	for _, want := range []string{"lo", "up1", "up2", "lan0"} {
		if !slices.Contains(got, want) {
			t.Errorf("child in client namespace sees interfaces %q, missing %q", got, want)
		}
	}
}
