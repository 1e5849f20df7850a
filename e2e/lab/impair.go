package lab

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Impairment is what an Impairer does to every packet it forwards, in each
// direction independently.
type Impairment struct {
	// Delay is added to each packet's one-way latency, so a round trip
	// through the impaired hop takes 2×Delay longer.
	Delay time.Duration
	// Jitter spreads each packet's delay uniformly over
	// [Delay-Jitter, Delay+Jitter] (clamped at 0). Packets are never
	// reordered: a packet is not released before the previous packet of
	// the same direction, as on a real link where jitter comes from
	// queueing. The mean delay is therefore somewhat above Delay.
	Jitter time.Duration
	// Loss is the probability (0..1) that a packet is dropped.
	Loss float64
}

// ImpairStats counts an Impairer's packets, both directions together.
type ImpairStats struct {
	Forwarded uint64 // written back to the kernel after their delay
	Lost      uint64 // dropped by Loss
	Overflow  uint64 // dropped because the direction's queue was full
	Errors    uint64 // failed writes
}

// Queue bounds, per direction. A real link buffers little, and an
// unbounded queue would let an unshaped sender grow memory without limit
// and would hide congestion from its congestion controller. The bounds are
// generous enough for 1 Gbit/s with 100 ms of delay in a test; shape the
// link with tbf to model a smaller bottleneck buffer.
const (
	maxQueuePackets = 10000
	maxQueueBytes   = 16 << 20
)

// Policy routing in namespaces with impairers. The local table's rule is
// moved from 0 to localRulePref so that impairRulePref rules also catch
// packets addressed to the namespace itself (e.g. replies to its NAT).
// Impairer id uses tables impairTableMin+2id (devA) and +1 (devB), and
// the same offsets from impairMarkMin as firewall marks.
const (
	impairRulePref = 100
	localRulePref  = 500
	impairTableMin = 10000
	impairMarkMin  = 0x1ab0000
	tunMTU         = 65535
)

// fullMask matches the whole firewall mark.
var fullMask uint32 = 0xffffffff

// throwPrefixes are never steered into an impairer: link-local and
// multicast traffic (MLD, for instance) is for the namespace itself and
// must not be forwarded, even through a TUN.
var throwPrefixes = []netip.Prefix{
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// defaultRoutes are the routes pointing into an impairer's TUN.
var defaultRoutes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/0"),
	netip.MustParsePrefix("::/0"),
}

// Impairer delays and drops the packets a namespace forwards between two
// of its devices, in userspace, because the kernel has no netem.
//
// Packets arriving on devA or devB get a firewall mark (nftables, raw
// prerouting) and a policy rule `iif devX fwmark M lookup T`, placed before
// the local table, steers them into a TUN device per direction. A goroutine
// reads each packet, drops it with probability Loss, and queues it; another
// writes it back into the same TUN when its delay has elapsed. Written
// packets enter the stack again with iif=TUN and no mark, so the local and
// main tables route them to their real destination: the namespace routes
// every packet twice. (The mark keeps ARP's route lookups, which carry no
// mark, on the local table.) Link-local, multicast and IPv6 neighbour
// discovery traffic is not impaired.
//
// Connection tracking only sees the second pass: the first (devX → TUN)
// is exempted by a notrack rule. NAT, conntrack matches and local delivery
// therefore behave as without impairer, except that iif is the TUN device
// in the second pass. Filter rules on devA/devB in the forward hook see
// the first pass (iif devX) and the second (oif devX). TTL and hop limit
// are decremented twice. Traffic the namespace itself originates is not
// impaired; traffic addressed to it is.
type Impairer struct {
	ns    *NS
	id    int
	imp   atomic.Pointer[Impairment]
	pipes [2]*pipe
	done  chan struct{}
	wg    sync.WaitGroup

	forwarded, lost, overflow, errs atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// pipe is one direction: the packets arriving on dev.
type pipe struct {
	dev   string
	tun   string
	table int
	mark  uint32 // firewall mark of packets arriving on dev
	file  *os.File
	q     chan packet
	bytes atomic.Int64 // bytes in q
	last  time.Time    // release time of the last queued packet; reader only
}

// packet is a packet waiting for its release time.
type packet struct {
	at time.Time
	b  []byte
}

// Impair starts impairing the traffic n forwards between devA and devB
// (both directions). The Impairer is closed by Close or by the lab's Close.
// Several impairers may share a namespace if their devices differ.
func (n *NS) Impair(devA, devB string, imp Impairment) (_ *Impairer, err error) {
	id := n.lab.allocID()
	i := &Impairer{ns: n, id: id, done: make(chan struct{})}
	i.Set(imp)
	for d, dev := range []string{devA, devB} {
		i.pipes[d] = &pipe{
			dev:   dev,
			tun:   fmt.Sprintf("imp%d%c", id, 'a'+d),
			table: impairTableMin + 2*id + d,
			mark:  impairMarkMin + uint32(2*id+d),
			q:     make(chan packet, maxQueuePackets),
		}
	}
	defer func() {
		if err != nil {
			i.Close()
			err = fmt.Errorf("lab: %s: impair %s-%s: %w", n.Name, devA, devB, err)
		}
	}()
	for _, p := range i.pipes {
		if err := i.setupTUN(p); err != nil {
			return nil, err
		}
	}
	if err := n.moveLocalRule(); err != nil {
		return nil, err
	}
	marks := map[string]uint32{devA: i.pipes[0].mark, devB: i.pipes[1].mark}
	if err := n.addSteering(steeringTable(id), marks); err != nil {
		return nil, err
	}
	for _, p := range i.pipes {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			if err := n.nl.RuleAdd(p.rule(fam)); err != nil {
				return nil, fmt.Errorf("rule iif %s: %w", p.dev, err)
			}
		}
	}
	for _, p := range i.pipes {
		i.wg.Add(2)
		go i.read(p)
		go i.write(p)
	}
	n.lab.mu.Lock()
	n.lab.impairers = append(n.lab.impairers, i)
	n.lab.mu.Unlock()
	return i, nil
}

// setupTUN creates p's TUN device and routing table.
func (i *Impairer) setupTUN(p *pipe) error {
	n := i.ns
	err := n.Do(func() (err error) {
		p.file, err = openTUN(p.tun)
		return err
	})
	if err != nil {
		return fmt.Errorf("tun %s: %w", p.tun, err)
	}
	link, err := n.link(p.tun)
	if err != nil {
		return err
	}
	if err := n.nl.LinkSetMTU(link, tunMTU); err != nil {
		return err
	}
	if err := n.nl.LinkSetTxQLen(link, 1000); err != nil {
		return err
	}
	if err := n.Sysctl("net/ipv4/conf/"+p.tun+"/rp_filter", "0"); err != nil {
		return err
	}
	if err := n.SetLinkUp(p.tun, true); err != nil {
		return err
	}
	for _, dst := range defaultRoutes {
		if err := n.AddTableRoute(p.table, dst, netip.Addr{}, p.tun); err != nil {
			return err
		}
	}
	for _, dst := range throwPrefixes {
		if err := n.addThrowRoute(p.table, dst); err != nil {
			return err
		}
	}
	return nil
}

// rule returns the policy rule steering packets from p.dev into p.table.
func (p *pipe) rule(fam int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = fam
	r.IifName = p.dev
	r.Mark = p.mark
	r.Mask = &fullMask
	r.Table = p.table
	r.Priority = impairRulePref
	return r
}

// moveLocalRule moves the local table's rule from preference 0 to
// localRulePref, for IPv4 and IPv6. It is idempotent.
func (n *NS) moveLocalRule() error {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		r := netlink.NewRule()
		r.Family = fam
		r.Table = unix.RT_TABLE_LOCAL
		r.Priority = localRulePref
		if err := n.nl.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add local rule: %w", err)
		}
		r.Priority = 0
		if err := n.nl.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete local rule: %w", err)
		}
	}
	return nil
}

// Set changes the impairment. It applies to packets read from now on;
// packets already queued keep their release time, and since packets are
// never reordered, new ones queue behind them.
func (i *Impairer) Set(imp Impairment) {
	imp.Loss = min(max(imp.Loss, 0), 1)
	imp.Delay = max(imp.Delay, 0)
	imp.Jitter = max(imp.Jitter, 0)
	i.imp.Store(&imp)
}

// Impairment returns the current impairment.
func (i *Impairer) Impairment() Impairment { return *i.imp.Load() }

// Stats returns the packet counters.
func (i *Impairer) Stats() ImpairStats {
	return ImpairStats{
		Forwarded: i.forwarded.Load(),
		Lost:      i.lost.Load(),
		Overflow:  i.overflow.Load(),
		Errors:    i.errs.Load(),
	}
}

// delay draws one packet's delay.
func (imp *Impairment) delay() time.Duration {
	d := imp.Delay
	if j := imp.Jitter; j > 0 {
		d += time.Duration(rand.Int64N(2*int64(j)+1)) - j
	}
	return max(d, 0)
}

// read reads p's packets from the kernel and queues those not lost.
func (i *Impairer) read(p *pipe) {
	defer i.wg.Done()
	buf := make([]byte, tunMTU+1)
	for {
		n, err := p.file.Read(buf)
		if err != nil {
			return // closed
		}
		imp := i.imp.Load()
		if imp.Loss > 0 && rand.Float64() < imp.Loss {
			i.lost.Add(1)
			continue
		}
		if p.bytes.Add(int64(n)) > maxQueueBytes {
			p.bytes.Add(-int64(n))
			i.overflow.Add(1)
			continue
		}
		at := time.Now().Add(imp.delay())
		if at.Before(p.last) {
			at = p.last
		}
		select {
		case p.q <- packet{at: at, b: bytes.Clone(buf[:n])}:
			p.last = at
		default:
			p.bytes.Add(-int64(n))
			i.overflow.Add(1)
		}
	}
}

// write writes p's queued packets back to the kernel at their release
// time. It is the only writer of p's TUN.
func (i *Impairer) write(p *pipe) {
	defer i.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var pkt packet
		select {
		case pkt = <-p.q:
		case <-i.done:
			return
		}
		if d := time.Until(pkt.at); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-i.done:
				return
			}
		}
		p.bytes.Add(-int64(len(pkt.b)))
		if _, err := p.file.Write(pkt.b); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			i.errs.Add(1)
			continue
		}
		i.forwarded.Add(1)
	}
}

// Close stops impairing: traffic between the devices is forwarded directly
// again and queued packets are dropped. It is idempotent.
func (i *Impairer) Close() error {
	i.closeOnce.Do(func() { i.closeErr = i.close() })
	return i.closeErr
}

func (i *Impairer) close() error {
	n := i.ns
	var errs []error
	// Stop steering packets into the TUNs before tracking them again.
	for _, p := range i.pipes {
		if p == nil {
			continue
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			if err := n.nl.RuleDel(p.rule(fam)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, n.delTable(steeringTable(i.id)))
	close(i.done)
	for _, p := range i.pipes {
		if p == nil {
			continue
		}
		for _, dst := range throwPrefixes {
			r := &netlink.Route{Dst: ipNet(dst), Table: p.table, Type: unix.RTN_THROW}
			if err := n.nl.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
		}
		if p.file != nil {
			p.file.Close() // removes the TUN device and its routes
		}
	}
	i.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: %s: close impairer: %w", n.Name, err)
	}
	return nil
}
