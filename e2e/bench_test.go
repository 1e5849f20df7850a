//go:build !race

package e2e

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/braid-tunnel/braid/e2e/lab"
	"github.com/braid-tunnel/braid/transport"
)

// BenchmarkDataPath is issue 3's benchmark, in the namespace lab on one
// unshaped veth path (TopologyOptions{Direct: true}, uplink 2 cut): raw
// TCP, userspace WireGuard (wireguard-go's device package, run by
// e2e/cmd/wgpeer) and braid with one path, each carrying 1 and 8 TCP flows
// in both directions; then the latency each tunnel adds on the idle path,
// and the concentrator's memory per idle client session.
//
// Raw TCP runs first, between the client host and the concentrator host
// (nothing else is reachable outside a tunnel). Then WireGuard and braid
// are both up and carry the same traffic, between the LAN host and the
// server: their peers are in the client's and the concentrator's
// namespaces, over uplink 1. Policy rules, added and removed between
// runs, send the server's prefix and the LAN through WireGuard; without
// them braid's routes apply. Each case runs four times for half the
// duration, through WireGuard, braid, braid and WireGuard, so that a load
// that drifts during the case (the machine is shared) weighs on both
// alike. Run it as root:
//
//	go test -run '^$' -bench DataPath -benchtime 1x ./e2e
//
// It prints REPORT lines per case and a summary, and reports metrics per
// sub-benchmark. It fails only if something breaks (a transfer damaged, a
// tunnel not up, traffic that missed its tunnel), never on a figure. The ratios are the ones to read: the
// machine is shared, so absolute figures move between runs.
//
// Cores used are CPU time (utime+stime from /proc/PID/stat) over wall
// time: for raw TCP, of the traffic generator (this test process; the
// kernel's forwarding on the veths runs mostly in softirq and is not
// counted); for WireGuard, of the two wgpeer processes; for braid, of the
// client and the concentrator. The generator's own share is printed for
// every case (it hashes every byte on both ends, SHA-256).
func BenchmarkDataPath(b *testing.B) {
	requireRoot(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	e := onePathLab(b)
	results := map[string]caseResult{}

	for _, c := range flowCases {
		name := "raw/" + c.name()
		b.Run(name, func(b *testing.B) {
			var s sample
			for range b.N {
				s.add(measure(b, carrier{name: "raw"}, func() (TransferResult, error) {
					return e.TransferRawFlows(ctx, c.flows, c.dir, benchDuration)
				}))
			}
			r := s.result()
			results[name] = r
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.mbits, "Mbit/s")
			b.ReportMetric(r.generator, "cores")
			b.Logf("REPORT datapath %s: %.0f Mbit/s, generator %.2f cores (the kernel's forwarding, mostly softirq, is not counted)",
				name, r.mbits, r.generator)
		})
	}

	if err := e.Up(ctx); err != nil {
		b.Fatal(err)
	}
	if err := e.WaitMTU(ctx, 10*time.Second); err != nil {
		b.Fatal(err)
	}
	client, conc := e.PIDs()
	wg := startWireGuard(b, e)
	viaWG := carrier{name: "wireguard", pids: wg.pids(), ns: e.Topo.Client, dev: "wg0"}
	viaBraid := carrier{name: "braid", pids: []int{client, conc}, ns: e.Topo.Client, dev: "braid0"}
	for _, c := range flowCases {
		b.Run("tunnels/"+c.name(), func(b *testing.B) {
			var sw, sb sample
			var loss braidLoss
			for range b.N {
				for _, via := range []carrier{viaWG, viaBraid, viaBraid, viaWG} {
					wg.route(b, via.name == "wireguard")
					before := braidCounts(b, e)
					s := measure(b, via, func() (TransferResult, error) {
						return e.TransferFlows(ctx, c.flows, c.dir, benchDuration/2)
					})
					if via.name == "wireguard" {
						sw.add(s)
					} else {
						sb.add(s)
						loss.add(braidCounts(b, e).minus(before))
					}
				}
			}
			w, br := sw.result(), sb.result()
			results["wireguard/"+c.name()], results["braid/"+c.name()] = w, br
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(w.mbits, "wg-Mbit/s")
			b.ReportMetric(w.cores, "wg-cores")
			b.ReportMetric(br.mbits, "braid-Mbit/s")
			b.ReportMetric(br.cores, "braid-cores")
			b.ReportMetric(br.mbits/w.mbits, "braid/wg")
			for _, x := range []struct {
				name, who string
				r         caseResult
			}{{"wireguard", "wgpeer processes", w}, {"braid", "braid client+concentrator", br}} {
				b.Logf("REPORT datapath %s/%s: %.0f Mbit/s, %.2f cores (%s), generator %.2f cores",
					x.name, c.name(), x.r.mbits, x.r.cores, x.who, x.r.generator)
			}
			b.Logf("REPORT datapath %s: braid/wireguard %.2f", c.name(), br.mbits/w.mbits)
			b.Logf("REPORT datapath braid/%s inner packets, both ways: %d datagrams sent on the path (%d of them direct, beside QUIC), %d (%.2f%%) of them not received; %d more dropped by braid's own queues before sending",
				c.name(), loss.sent, loss.direct, loss.sent-min(loss.sent, loss.received), loss.lostPercent(), loss.dropped)
			b.Logf("REPORT datapath braid/%s receive side: %d datagrams discarded by quic-go's datagram queue or braid's direct queue; %d QUIC packets declared lost (%d of them discarded by quic-go's connection queue)",
				c.name(), loss.rxQueue, loss.quicLost, loss.quicDropped)
		})
	}
	var wgLat, braidLat [2]time.Duration
	wg.route(b, true)
	b.Run("latency/wireguard", func(b *testing.B) { wgLat[0], wgLat[1] = benchLatency(b, e, "wireguard") })
	wg.route(b, false)
	b.Run("latency/braid", func(b *testing.B) { braidLat[0], braidLat[1] = benchLatency(b, e, "braid") })
	wg.stop()

	b.Run("idle-sessions", func(b *testing.B) { benchIdleSessions(b, ctx, e) })

	// A benchmark with sub-benchmarks prints no log of its own: the
	// summary goes to stdout.
	fmt.Println("REPORT datapath summary, Mbit/s (cores of the tunnel's processes):")
	for _, c := range flowCases {
		raw, w, br := results["raw/"+c.name()], results["wireguard/"+c.name()], results["braid/"+c.name()]
		fmt.Printf("REPORT datapath %-16s raw TCP %6.0f | wireguard %6.0f (%.2f) | braid %6.0f (%.2f) | braid/wireguard %.2f\n",
			c.name(), raw.mbits, w.mbits, w.cores, br.mbits, br.cores, br.mbits/w.mbits)
	}
	fmt.Printf("REPORT latency added on the idle path: wireguard p50 %v p99 %v | braid p50 %v p99 %v\n",
		us(wgLat[0]), us(wgLat[1]), us(braidLat[0]), us(braidLat[1]))
}

// onePathLab builds the unshaped lab of the data-path benchmarks, with
// the idle sessions' keys, braid not started yet (Up waits for its one
// path), a client with one uplink (isp1: every packet goes beside QUIC, as
// direct datagrams), and uplink 2 cut, so that raw TCP and WireGuard take
// the same single path that braid will.
func onePathLab(b *testing.B) *Env {
	e, err := Build(braidBin, Options{Links: lab.TopologyOptions{Direct: true}, ExtraClients: idleSessions, UpPaths: 1,
		Uplinks: "  - name: isp1\n    interface: up1\n"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if b.Failed() {
			b.Log(e.Logs())
		}
		e.Close()
	})
	if err := e.CutUplink(2, LinkDown); err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkIdleSessions is BenchmarkDataPath's idle-sessions case alone,
// without the throughput and latency cases or WireGuard:
//
//	go test -run '^$' -bench IdleSessions -benchtime 1x ./e2e
//
// With BRAID_MEMPROFILE=FILE (%s for the role) in the environment, the
// concentrator writes its heap and goroutine profiles once the sessions
// are counted.
func BenchmarkIdleSessions(b *testing.B) {
	requireRoot(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := onePathLab(b)
	if err := e.Up(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("idle-sessions", func(b *testing.B) { benchIdleSessions(b, ctx, e) })
}

// benchDuration is how long each throughput case runs through each
// carrier (in two halves for the tunnels).
const benchDuration = 5 * time.Second

// idleSessions is how many idle client sessions the memory case opens.
const idleSessions = 1000

type flowCase struct {
	flows int
	dir   Direction
}

func (c flowCase) name() string {
	unit := "flows"
	if c.flows == 1 {
		unit = "flow"
	}
	return fmt.Sprintf("%d%s/%v", c.flows, unit, c.dir)
}

var flowCases = []flowCase{{1, Upload}, {1, Download}, {8, Upload}, {8, Download}}

type caseResult struct {
	mbits     float64
	cores     float64 // of the tunnel's processes
	generator float64 // of this test process, which sends and receives
}

// carrier is what carries a case: raw TCP or a tunnel.
type carrier struct {
	name string  // raw, wireguard or braid
	pids []int   // the tunnel's processes; nil for raw TCP
	ns   *lab.NS // where dev is
	dev  string  // the tunnel's device on the client; "" for raw TCP
}

// sample adds up runs of one carrier in one case.
type sample struct {
	bytes       int64
	dur, wall   time.Duration // receivers' time; wall time of the runs
	tunnel, gen time.Duration // CPU time of the tunnel's processes, of the generator
}

func (s *sample) add(o sample) {
	s.bytes += o.bytes
	s.dur += o.dur
	s.wall += o.wall
	s.tunnel += o.tunnel
	s.gen += o.gen
}

// result gives goodput over the receivers' time, as Transfer reports
// it, and cores as CPU time over wall time.
func (s sample) result() caseResult {
	return caseResult{
		mbits:     float64(s.bytes) * 8 / s.dur.Seconds() / 1e6,
		cores:     s.tunnel.Seconds() / s.wall.Seconds(),
		generator: s.gen.Seconds() / s.wall.Seconds(),
	}
}

// measure runs one transfer through via. It fails the benchmark if the
// data was damaged, or if the tunnel's device did not carry at least the
// bytes transferred (the traffic took another path).
func measure(b *testing.B, via carrier, run func() (TransferResult, error)) sample {
	self := []int{os.Getpid()}
	tun0, gen0, dev0 := cpuTime(b, via.pids), cpuTime(b, self), deviceBytes(b, via)
	start := time.Now()
	res, err := run()
	if err != nil {
		b.Fatalf("%s: %v", via.name, err)
	}
	if !res.Intact {
		b.Fatalf("%s: data damaged: %s", via.name, res)
	}
	s := sample{bytes: res.Bytes, dur: res.Duration, wall: time.Since(start)}
	s.tunnel, s.gen = cpuTime(b, via.pids)-tun0, cpuTime(b, self)-gen0
	if carried := deviceBytes(b, via) - dev0; via.dev != "" && carried < uint64(res.Bytes) {
		b.Fatalf("%s: %s carried %d bytes of the %d transferred: the traffic took another path", via.name, via.dev, carried, res.Bytes)
	}
	return s
}

// braidLoss counts braid's data datagrams, both ways, and the packets
// braid dropped from its own queues (drop_queue_full, drop_send_failed),
// on both ends.
// Of the datagrams not received: rxQueue were discarded by quic-go's
// datagram receive queue, quicLost were in QUIC packets declared lost
// (by the network, the kernel's socket buffer, or quic-go's connection
// queue: quicDropped).
type braidLoss struct {
	sent, received, dropped        uint64
	rxQueue, quicLost, quicDropped uint64
	direct                         uint64 // of sent, those sent as direct datagrams
}

func (l *braidLoss) add(o braidLoss) {
	l.sent += o.sent
	l.received += o.received
	l.dropped += o.dropped
	l.rxQueue += o.rxQueue
	l.quicLost += o.quicLost
	l.quicDropped += o.quicDropped
	l.direct += o.direct
}

func (l braidLoss) minus(o braidLoss) braidLoss {
	return braidLoss{l.sent - o.sent, l.received - o.received, l.dropped - o.dropped,
		l.rxQueue - o.rxQueue, l.quicLost - o.quicLost, l.quicDropped - o.quicDropped, l.direct - o.direct}
}

func (l braidLoss) lostPercent() float64 {
	if l.sent == 0 {
		return 0
	}
	return float64(l.sent-min(l.sent, l.received)) * 100 / float64(l.sent)
}

// braidCounts reads the counters of the client and of its session on the
// concentrator.
func braidCounts(b *testing.B, e *Env) braidLoss {
	cs, err := e.ClientStatus()
	if err != nil {
		b.Fatal(err)
	}
	ss, err := e.ConcentratorStatus()
	if err != nil {
		b.Fatal(err)
	}
	var l braidLoss
	paths := cs.Paths
	for _, c := range ss.Clients {
		if c.Name == "branch" {
			paths = append(paths, c.Paths...)
		}
	}
	for _, p := range paths {
		l.sent += p.TxPackets
		l.received += p.RxPackets
		l.direct += p.DirectTx
		l.rxQueue += p.DatagramDropped
		l.quicLost += p.QUICLost
		l.quicDropped += p.QUICDropped
	}
	for _, counters := range []map[string]uint64{cs.Counters, ss.Counters} {
		l.dropped += counters["drop_queue_full"] + counters["drop_send_failed"]
		l.rxQueue += counters["drop_direct_queue"]
	}
	return l
}

// deviceBytes is what the carrier's device has received and sent (0 for
// raw TCP).
func deviceBytes(b *testing.B, via carrier) uint64 {
	if via.dev == "" {
		return 0
	}
	link, err := via.ns.Handle().LinkByName(via.dev)
	if err != nil {
		b.Fatal(err)
	}
	st := link.Attrs().Statistics
	return st.RxBytes + st.TxBytes
}

// cpuTime sums utime+stime of the processes (all their threads).
func cpuTime(b *testing.B, pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime 14, stime 15.
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		for _, s := range f[11:13] {
			ticks, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				b.Fatalf("/proc/%d/stat: %v", pid, err)
			}
			total += time.Duration(ticks) * time.Second / clockTicks
		}
	}
	return total
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// WireGuard's inner addresses: a prefix the lab does not use.
var (
	wgClientAddr = netip.MustParsePrefix("10.250.0.1/24")
	wgConcAddr   = netip.MustParsePrefix("10.250.0.2/24")
)

const wgPort = 51820

// WireGuard's routes live in wgTable, chosen by rules at wgRulePref, ahead
// of braid's full-tunnel rules (at its table number, 7800) and the main
// table.
const (
	wgTable    = 250
	wgRulePref = 100
	// braidMark is braid's default fwmark (config: fwmark): the client's
	// WireGuard socket carries it, so braid's full-tunnel rules let its
	// packets out by the main table instead of into braid's TUN.
	braidMark = 0x7800
)

type wgPeers struct {
	cmds []*exec.Cmd
	done []chan struct{}
	// rules route through WireGuard: in each namespace, to the far
	// side's prefix.
	rules []wgRule
	on    bool
}

type wgRule struct {
	ns  *lab.NS
	dst netip.Prefix
}

// rule is `to DST lookup wgTable` at wgRulePref.
func (r wgRule) rule() *netlink.Rule {
	rule := netlink.NewRule()
	rule.Family, rule.Priority, rule.Table = unix.AF_INET, wgRulePref, wgTable
	rule.Dst = &net.IPNet{IP: r.dst.Addr().AsSlice(), Mask: net.CIDRMask(r.dst.Bits(), 32)}
	return rule
}

// route adds (on) or removes the rules that send the LAN host's and the
// server's traffic through WireGuard.
func (w *wgPeers) route(b *testing.B, on bool) {
	if on == w.on {
		return
	}
	for _, r := range w.rules {
		add := r.ns.Handle().RuleAdd
		if !on {
			add = r.ns.Handle().RuleDel
		}
		if err := add(r.rule()); err != nil {
			b.Fatalf("%s: rule to %v (on: %v): %v", r.ns.Name, r.dst, on, err)
		}
	}
	w.on = on
}

// startWireGuard runs a wgpeer in the client's namespace and one in the
// concentrator's, peered over uplink 1 (the client dials the
// concentrator's address, as braid does), with routes to the server's
// prefix and the LAN in wgTable; route(true) puts them to use.
func startWireGuard(b *testing.B, e *Env) *wgPeers {
	bin := filepath.Join(e.Dir, "wgpeer")
	build := exec.Command("go", "build", "-o", bin, "github.com/braid-tunnel/braid/e2e/cmd/wgpeer")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building wgpeer: %v\n%s", err, out)
	}
	clientKey, concKey := wgKey(b), wgKey(b)
	hexKey := func(k []byte) string { return hex.EncodeToString(k) }
	t := e.Topo
	concConf := fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nallowed_ip=%s\nallowed_ip=%s\n",
		hexKey(concKey.Bytes()), wgPort, hexKey(clientKey.PublicKey().Bytes()), netip.PrefixFrom(wgClientAddr.Addr(), 32), t.LANPrefix)
	clientConf := fmt.Sprintf("private_key=%s\nfwmark=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\nallowed_ip=%s\n",
		hexKey(clientKey.Bytes()), braidMark, hexKey(concKey.PublicKey().Bytes()), netip.AddrPortFrom(t.ConcAddr, wgPort),
		netip.PrefixFrom(wgConcAddr.Addr(), 32), t.ServerPrefix)
	w := &wgPeers{rules: []wgRule{{t.Client, t.ServerPrefix}, {t.Conc, t.LANPrefix}}}
	b.Cleanup(w.stop)
	for _, p := range []struct {
		ns    *lab.NS
		role  string
		addr  netip.Prefix
		route netip.Prefix
		conf  string
	}{{t.Conc, "conc", wgConcAddr, t.LANPrefix, concConf}, {t.Client, "client", wgClientAddr, t.ServerPrefix, clientConf}} {
		logf, err := os.Create(filepath.Join(e.Dir, "wgpeer-"+p.role+".log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "-tun", "wg0", "-addr", p.addr.String(), "-route", p.route.String(), "-table", strconv.Itoa(wgTable))
		cmd.Stdin = strings.NewReader(p.conf)
		cmd.Stderr = logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := p.ns.Start(cmd); err != nil {
			logf.Close()
			b.Fatalf("starting wgpeer (%s): %v", p.role, err)
		}
		done := make(chan struct{})
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			ok := sc.Scan() && sc.Text() == "ready"
			ready <- ok
			for sc.Scan() {
			}
			cmd.Wait()
			logf.Close()
			close(done)
		}()
		w.cmds, w.done = append(w.cmds, cmd), append(w.done, done)
		select {
		case ok := <-ready:
			if !ok {
				<-done
				log, _ := os.ReadFile(logf.Name())
				b.Fatalf("wgpeer (%s) did not start: %s", p.role, log)
			}
		case <-time.After(20 * time.Second):
			b.Fatalf("wgpeer (%s) not ready after 20 s", p.role)
		}
	}
	return w
}

func wgKey(b *testing.B) *ecdh.PrivateKey {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func (w *wgPeers) pids() []int {
	var pids []int
	for _, c := range w.cmds {
		pids = append(pids, c.Process.Pid)
	}
	return pids
}

// stop ends the peers: SIGTERM, then SIGKILL after 5 s; their routes go
// with their devices, and their rules are removed. Idempotent.
func (w *wgPeers) stop() {
	if w.on {
		for _, r := range w.rules {
			r.ns.Handle().RuleDel(r.rule())
		}
		w.on = false
	}
	for i, c := range w.cmds {
		c.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done[i]:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-w.done[i]
		}
	}
	w.cmds, w.done = nil, nil
}

// Latency: ICMP echo through the tunnel (LAN host to server) and outside
// it (client host to the concentrator's address) alternate every
// pingInterval, so both see the same conditions. The kernels answer, so
// nothing in userspace is measured but braid.
const (
	pings        = 400
	pingInterval = 10 * time.Millisecond
	pingTimeout  = time.Second
)

// benchLatency pings through the tunnel that is up, named tunnel, and
// outside it; it returns the added p50 and p99 round-trip times.
func benchLatency(b *testing.B, e *Env, tunnel string) (add50, add99 time.Duration) {
	// Bound to uplink 1's address, the client host's echoes leave by
	// its source rule, ahead of braid's full-tunnel rules.
	outside := newPinger(b, e.Topo.Client, e.Topo.ClientUplink1Addr, e.Topo.ConcAddr)
	defer outside.close()
	inside := newPinger(b, e.Topo.LANHost, netip.IPv4Unspecified(), e.Topo.ServerAddr)
	defer inside.close()
	var out, in []time.Duration
	lost := 0
	tick := time.NewTicker(pingInterval)
	defer tick.Stop()
	for i := range pings {
		<-tick.C
		for _, p := range []struct {
			p   *pinger
			rtt *[]time.Duration
		}{{outside, &out}, {inside, &in}} {
			rtt, err := p.p.ping(uint16(i))
			if err != nil {
				lost++
				continue
			}
			*p.rtt = append(*p.rtt, rtt)
		}
	}
	if len(in) < pings/2 || len(out) < pings/2 {
		b.Fatalf("too many pings lost: %d of %d through the tunnel, %d of %d outside answered", len(in), pings, len(out), pings)
	}
	in50, in99 := percentile(in, 50), percentile(in, 99)
	out50, out99 := percentile(out, 50), percentile(out, 99)
	add50, add99 = in50-out50, in99-out99
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(add50.Microseconds()), "µs-added-p50")
	b.ReportMetric(float64(add99.Microseconds()), "µs-added-p99")
	b.Logf("REPORT latency on the idle path (%d ICMP echoes each, every %v, %d lost): through %s p50 %v p99 %v; outside p50 %v p99 %v; added p50 %v p99 %v",
		pings, pingInterval, lost, tunnel, us(in50), us(in99), us(out50), us(out99), us(add50), us(add99))
	return add50, add99
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/1e3) }

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(float64(p) / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

// pinger sends ICMP echoes from an unprivileged ping socket (the lab
// allows them: net.ipv4.ping_group_range) in one namespace.
type pinger struct {
	conn *icmp.PacketConn
	dst  net.Addr
	buf  []byte
}

func newPinger(b *testing.B, ns *lab.NS, src, dst netip.Addr) *pinger {
	var conn *icmp.PacketConn
	if err := ns.Do(func() error {
		var err error
		conn, err = icmp.ListenPacket("udp4", src.String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return &pinger{conn: conn, dst: &net.UDPAddr{IP: dst.AsSlice()}, buf: make([]byte, 1500)}
}

func (p *pinger) close() { p.conn.Close() }

// ping sends one echo request and waits for its reply.
func (p *pinger) ping(seq uint16) (time.Duration, error) {
	data := make([]byte, 56) // ping's default
	binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 1, Seq: int(seq), Data: data}}
	req, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := p.conn.WriteTo(req, p.dst); err != nil {
		return 0, err
	}
	p.conn.SetReadDeadline(start.Add(pingTimeout))
	for {
		n, _, err := p.conn.ReadFrom(p.buf)
		if err != nil {
			return 0, err
		}
		rtt := time.Since(start)
		reply, err := icmp.ParseMessage(1, p.buf[:n]) // 1: ICMP for IPv4
		if err != nil {
			continue
		}
		if echo, ok := reply.Body.(*icmp.Echo); ok && reply.Type == ipv4.ICMPTypeEchoReply && echo.Seq == int(seq) {
			return rtt, nil
		}
	}
}

// Idle sessions: the concentrator is restarted (so that the throughput
// cases' buffers are not in its baseline), and once braid's client has
// rejoined, idleSessions more identities each open one path from the
// client host, the way braid's client does (transport.Dial: QUIC
// handshake, hello, welcome), and then stay idle. The concentrator's RSS
// before and after gives the memory per idle session.
const (
	// dialsPerSecond stays under the concentrator's handshake limit
	// (transport: 200 a second before it demands a Retry).
	dialsPerSecond = 150
	// dialsInFlight bounds concurrent handshakes.
	dialsInFlight = 32
	// settleTime is how long the concentrator is left alone before its
	// resident memory is read.
	settleTime = 3 * time.Second
)

func benchIdleSessions(b *testing.B, ctx context.Context, e *Env) {
	e.StopConcentrator()
	if err := e.StartConcentrator(); err != nil {
		b.Fatal(err)
	}
	if err := waitSessions(ctx, e, 1, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	time.Sleep(settleTime)
	_, before, err := e.RSS()
	if err != nil {
		b.Fatal(err)
	}
	concPub, err := e.ConcentratorPublicKey()
	if err != nil {
		b.Fatal(err)
	}
	var instance [8]byte
	rand.Read(instance[:])
	var (
		mu    sync.Mutex
		paths []*transport.Path
		errs  []error
		wg    sync.WaitGroup
	)
	defer func() {
		for _, p := range paths {
			p.Close("benchmark done")
		}
	}()
	sem := make(chan struct{}, dialsInFlight)
	tick := time.NewTicker(time.Second / dialsPerSecond)
	start := time.Now()
	for i, key := range e.ExtraKeys {
		<-tick.C
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tlsConf, err := transport.ClientTLS(key, concPub)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			hello := &transport.Hello{Version: transport.ProtocolVersion, Uplink: "isp1", Mode: "failover",
				Instance: binary.BigEndian.Uint64(instance[:]) + uint64(i)}
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			var p *transport.Path
			err = e.Topo.Client.Do(func() error {
				var err error
				p, _, err = transport.Dial(dctx, transport.DialConfig{
					Remote:    netip.AddrPortFrom(e.Topo.ConcAddr, ConcPort),
					Interface: e.Topo.Uplink1Dev, Source: e.Topo.ClientUplink1Addr, // as braid's client: outside the tunnel
					TLS: tlsConf,
				}, hello)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("session %d: %w", i, err))
				return
			}
			paths = append(paths, p)
			go drainControl(p)
		})
	}
	tick.Stop()
	wg.Wait()
	opened := time.Since(start)
	if len(errs) > 0 {
		b.Fatalf("%d of %d sessions failed, first: %v", len(errs), len(e.ExtraKeys), errs[0])
	}
	if err := waitSessions(ctx, e, 1+len(paths), 10*time.Second); err != nil {
		b.Fatal(err)
	}
	time.Sleep(settleTime)
	_, after, err := e.RSS()
	if err != nil {
		b.Fatal(err)
	}
	if err := waitSessions(ctx, e, 1+len(paths), time.Second); err != nil {
		b.Fatal(err) // they are still there: the RSS counted them
	}
	if os.Getenv("BRAID_MEMPROFILE") != "" {
		_, conc := e.PIDs()
		syscall.Kill(conc, syscall.SIGUSR1)
		time.Sleep(time.Second) // a GC and two profiles
	}
	perSession := float64(after-before) / float64(len(paths)) / 1024
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(perSession, "KiB/session")
	b.Logf("REPORT concentrator memory: RSS %d KiB with 1 client, %d KiB with %d more idle sessions (opened in %v): %.1f KiB per idle session",
		before>>10, after>>10, len(paths), opened.Round(100*time.Millisecond), perSession)
	// BRAID_BENCH_IDLE_HOLD=DURATION reads the RSS again after that much
	// more idle time: the heap regrows towards the GC's goal as the
	// sessions' reports leave garbage.
	if hold, err := time.ParseDuration(os.Getenv("BRAID_BENCH_IDLE_HOLD")); err == nil && hold > 0 {
		time.Sleep(hold)
		if _, later, err := e.RSS(); err == nil {
			b.Logf("REPORT concentrator memory %v later: RSS %d KiB: %.1f KiB per idle session",
				hold, later>>10, float64(later-before)/float64(len(paths))/1024)
		}
		if os.Getenv("BRAID_MEMPROFILE") != "" {
			_, conc := e.PIDs()
			syscall.Kill(conc, syscall.SIGUSR1) // the profiles of then, over those of before
			time.Sleep(time.Second)
		}
		if err := waitSessions(ctx, e, 1+len(paths), time.Second); err != nil {
			b.Fatal(err) // they were still there: the RSS counted them
		}
	}
}

// drainControl reads the concentrator's reports on an idle path until it
// is closed, as braid's client does.
func drainControl(p *transport.Path) {
	for {
		if _, err := p.ReadControl(); err != nil {
			return
		}
	}
}

// waitSessions waits until the concentrator has at least n active
// sessions with a path up.
func waitSessions(ctx context.Context, e *Env, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	active := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := e.ConcentratorStatus()
		if err == nil {
			active = 0
			for _, c := range st.Clients {
				if c.State == "active" {
					active++
				}
			}
			if active >= n {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%d of %d sessions active after %v", active, n, timeout)
}
