package tunnel

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.zx2c4.com/wireguard/tun"
)

// DefaultGracePeriod is how long a session outlives its last path.
const DefaultGracePeriod = 120 * time.Second

// Peer is a client the concentrator admits.
type Peer struct {
	Name      string
	PublicKey ed25519.PublicKey
	Prefixes  []netip.Prefix // LAN prefixes routed to this client
}

// ConcentratorOptions configure a Concentrator.
type ConcentratorOptions struct {
	Device      tun.Device     // owned by the concentrator from Run on
	Conn        net.PacketConn // the UDP socket paths arrive on
	PrivateKey  ed25519.PrivateKey
	Peers       []Peer
	Pool4       netip.Prefix // inner IPv4 pool; invalid for none
	Pool6       netip.Prefix // inner IPv6 pool; invalid for none
	StateFile   string       // lease file; "" keeps leases in memory
	GracePeriod time.Duration
	MTU         int // the concentrator's TUN MTU, announced to clients
	Logger      *slog.Logger
}

// Concentrator is the server end: many clients, each a session with its
// inner addresses, on one TUN.
type Concentrator struct {
	opts     ConcentratorOptions
	log      *slog.Logger
	counters Counters
	writer   *tunWriter
	ln       *transport.Listener
	gw       gateways

	// accepted wakes releaseMemory when a path arrives.
	accepted chan struct{}
	// readBudget bounds the TUN reader's waits for room on full paths
	// (see waitBudget); the reader's own.
	readBudget waitBudget

	// directs finds the path of a direct datagram by its lane ID.
	directMu sync.RWMutex
	directs  map[uint64]directPath

	// Immutable after NewConcentrator: lookups on the packet path take no lock.
	peers    map[string]*peer // by public key
	byAddr   map[netip.Addr]*peer
	byPrefix []prefixRoute // longest prefix first
}

type prefixRoute struct {
	prefix netip.Prefix
	peer   *peer
}

// peer is a configured client and its session, if any.
type peer struct {
	Peer
	addrs []netip.Prefix // inner addresses, with the pool's prefix length

	mu       sync.Mutex // serialises session creation
	sess     atomicSession
	instance uint64
}

// owns reports whether src may appear as the source of this client's packets.
func (p *peer) owns(src netip.Addr) bool {
	for _, a := range p.addrs {
		if a.Addr() == src {
			return true
		}
	}
	for _, pfx := range p.Prefixes {
		if pfx.Contains(src) {
			return true
		}
	}
	return false
}

// NewConcentrator assigns every peer its addresses and starts listening.
func NewConcentrator(opts ConcentratorOptions) (*Concentrator, error) {
	if opts.Device == nil || opts.Conn == nil {
		return nil, errors.New("concentrator needs a device and a socket")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	c := &Concentrator{opts: opts, log: opts.Logger, peers: map[string]*peer{}, byAddr: map[netip.Addr]*peer{},
		accepted: make(chan struct{}, 1), directs: map[uint64]directPath{}}
	if opts.Pool4.IsValid() {
		c.gw.v4 = gatewayFor(opts.Pool4)
	}
	if opts.Pool6.IsValid() {
		c.gw.v6 = gatewayFor(opts.Pool6)
	}
	if err := c.assign(); err != nil {
		return nil, err
	}
	tlsConf, err := transport.ServerTLS(opts.PrivateKey, func(k ed25519.PublicKey) bool { return c.peers[string(k)] != nil })
	if err != nil {
		return nil, err
	}
	if c.ln, err = transport.Listen(opts.Conn, tlsConf, opts.PrivateKey.Seed()); err != nil {
		return nil, err
	}
	c.writer = newTunWriter(opts.Device, &c.counters, c.log)
	return c, nil
}

// assign loads leases and builds the lookup tables.
func (c *Concentrator) assign() error {
	leases, err := LoadLeases(c.opts.StateFile, c.opts.Pool4, c.opts.Pool6)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(c.opts.Peers))
	for _, p := range c.opts.Peers {
		names = append(names, p.Name)
	}
	if err := leases.Assign(names); err != nil {
		return err
	}
	for _, cfg := range c.opts.Peers {
		p := &peer{Peer: cfg}
		lease := leases.Get(cfg.Name)
		if lease.IPv4.IsValid() {
			p.addrs = append(p.addrs, netip.PrefixFrom(lease.IPv4, c.opts.Pool4.Bits()))
		}
		if lease.IPv6.IsValid() {
			p.addrs = append(p.addrs, netip.PrefixFrom(lease.IPv6, c.opts.Pool6.Bits()))
		}
		c.peers[string(cfg.PublicKey)] = p
		for _, a := range p.addrs {
			c.byAddr[a.Addr()] = p
		}
		for _, pfx := range cfg.Prefixes {
			c.byPrefix = append(c.byPrefix, prefixRoute{pfx.Masked(), p})
		}
	}
	sort.SliceStable(c.byPrefix, func(i, j int) bool { return c.byPrefix[i].prefix.Bits() > c.byPrefix[j].prefix.Bits() })
	return nil
}

// Addresses returns the inner addresses of the named client.
func (c *Concentrator) Addresses(name string) []netip.Prefix {
	for _, p := range c.peers {
		if p.Name == name {
			return p.addrs
		}
	}
	return nil
}

// TunAddresses are the concentrator's own inner addresses, with the pool
// prefix lengths, to configure on its TUN.
func (c *Concentrator) TunAddresses() []netip.Prefix {
	var out []netip.Prefix
	if c.gw.v4.IsValid() {
		out = append(out, netip.PrefixFrom(c.gw.v4, c.opts.Pool4.Bits()))
	}
	if c.gw.v6.IsValid() {
		out = append(out, netip.PrefixFrom(c.gw.v6, c.opts.Pool6.Bits()))
	}
	return out
}

// Addr is the UDP address paths arrive on.
func (c *Concentrator) Addr() net.Addr { return c.ln.Addr() }

// Run serves clients until ctx is done, then closes the listener and the
// device.
func (c *Concentrator) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { c.writer.run(ctx) })
	wg.Go(func() { c.accept(ctx, &wg) })
	wg.Go(func() { c.reap(ctx) })
	wg.Go(func() { c.releaseMemory(ctx) })
	wg.Go(func() { watch(ctx, probeInterval, c.failover) })
	for shard := range c.ln.DirectShards() {
		wg.Go(func() { c.receiveDirect(ctx, shard) })
	}
	err := readUntilDone(ctx, c.opts.Device, &c.counters, c.outbound)
	cancel()
	c.ln.Close()
	c.opts.Device.Close()
	wg.Wait()
	return err
}

func (c *Concentrator) accept(ctx context.Context, wg *sync.WaitGroup) {
	for {
		p, err := c.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Debug("accept", "err", err)
			continue
		}
		select {
		case c.accepted <- struct{}{}:
		default:
		}
		wg.Go(func() { c.serve(ctx, wg, p) })
	}
}

// With Go's default GOGC the heap grows to twice what is live before a
// collection, and the runtime returns freed memory to the OS only above
// that goal: an idle concentrator's resident memory is about twice its
// live heap, most of it garbage (handshakes, reports, quic-go's packet
// buffers). On a small machine that is what limits the clients it can
// serve, so the concentrator collects and returns the free memory
// (debug.FreeOSMemory) itself: once a burst of paths arriving is over
// (the concentrator starting, an ISP coming back; the handshakes leave
// most garbage), and every releaseEvery otherwise. It costs one
// collection each, at most one per minRelease, and changes nothing in
// the collector's pacing under load.
const (
	// burstQuiet is how long no path must arrive before a burst is over.
	burstQuiet = time.Second
	// releaseEvery bounds the garbage an idle concentrator keeps to what
	// its sessions make in that time.
	releaseEvery = 30 * time.Second
	// minRelease is the least time between two releases, so a steady
	// trickle of reconnects costs at most a collection every minRelease.
	minRelease = 10 * time.Second
)

// releaseMemory returns free memory to the OS after bursts of paths and
// every releaseEvery.
func (c *Concentrator) releaseMemory(ctx context.Context) {
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	periodic := time.NewTicker(releaseEvery)
	defer periodic.Stop()
	var last time.Time
	release := func() {
		debug.FreeOSMemory()
		last = time.Now()
	}
	for {
		select {
		case <-c.accepted:
			quiet.Reset(max(burstQuiet, minRelease-time.Since(last)))
		case <-quiet.C:
			release()
		case <-periodic.C:
			if time.Since(last) >= minRelease {
				release()
			}
		case <-ctx.Done():
			return
		}
	}
}

// serve runs one path of a client: handshake, join the session, then
// carry traffic until the path dies, on a goroutine of its own. The
// handshake and the logging around it grow this goroutine's stack to 8 KiB
// or more, and a goroutine keeps a grown stack while it blocks, which an
// idle path's sender does for the path's life: started afresh, it stays
// at its first 2 KiB. Measured (BenchmarkIdleSessions): the concentrator's
// stacks went from 29 to 21 MB for 1,000 idle sessions.
func (c *Concentrator) serve(ctx context.Context, wg *sync.WaitGroup, p *transport.Path) {
	pr := c.peers[string(p.PeerKey())]
	hello, err := p.Handshake(ctx)
	if err != nil || pr == nil {
		c.log.Debug("handshake failed", "remote", p.RemoteAddr(), "err", err)
		p.Close("handshake failed")
		return
	}
	log := c.log.With("client", pr.Name, "path", hello.Uplink)
	l := newLink(hello.Uplink, *hello, p, false, &c.counters, c.log.With("client", pr.Name))
	sess, err := c.join(pr, l)
	if err != nil {
		p.WriteControl(&transport.Message{Error: err.Error()})
		log.Warn("refused path", "err", err)
		p.Close("refused")
		return
	}
	ep := &peerEndpoint{c: c, peer: pr, sess: sess}
	direct := c.addDirect(l, ep) // before the welcome: the client may send at once
	welcome := &transport.Welcome{Session: sess.id, Name: pr.Name, Addresses: pr.addrs, Routes: c.TunAddresses(), MTU: c.opts.MTU, Direct: direct}
	if err := p.WriteControl(&transport.Message{Welcome: welcome}); err != nil {
		c.removeDirect(l)
		sess.removeLink(l)
		p.Close("welcome failed")
		return
	}
	log.Info("path up", "remote", p.RemoteAddr(), "session", sess.id)
	wg.Go(func() {
		err := l.run(ctx, ep)
		c.removeDirect(l)
		sess.removeLink(l)
		if ctx.Err() == nil {
			log.Info("path down", "err", err)
		}
	})
}

// directPath is where a direct datagram goes.
type directPath struct {
	l  *link
	ep *peerEndpoint
}

// addDirect makes l's direct datagrams reach ep, and reports whether the
// concentrator takes them; l sends them if the client takes them too.
func (c *Concentrator) addDirect(l *link, ep *peerEndpoint) bool {
	id := l.path.DirectID()
	c.directMu.Lock()
	defer c.directMu.Unlock()
	if _, taken := c.directs[id]; taken {
		return false // two connections exported the same 64 bits: the later goes without
	}
	c.directs[id] = directPath{l, ep}
	l.direct.Store(l.hello.Direct) // the link is in the session already
	return true
}

// removeDirect forgets l's direct datagrams.
func (c *Concentrator) removeDirect(l *link) {
	id := l.path.DirectID()
	c.directMu.Lock()
	defer c.directMu.Unlock()
	if c.directs[id].l == l {
		delete(c.directs, id)
	}
}

// receiveDirect reads the direct datagrams of a shard of the paths, which
// arrive on the listener's shared socket, and delivers them.
func (c *Concentrator) receiveDirect(ctx context.Context, shard int) {
	raw := make([]byte, maxDirect)
	var scratch []byte
	for {
		n, err := c.ln.ReadDirect(ctx, shard, raw)
		if err != nil {
			return
		}
		id, _ := transport.DirectID(raw[:n])
		c.directMu.RLock()
		d, ok := c.directs[id]
		c.directMu.RUnlock()
		if !ok {
			c.counters.DropBadDirect.Add(1)
			continue
		}
		scratch = d.l.receiveDirect(ctx, d.ep, raw[:n], scratch)
	}
}

// join adds l to the client's session, starting a new session when there
// is none or the client process is new. Under pr.mu, so that the session
// cannot expire between being chosen and receiving the link.
func (c *Concentrator) join(pr *peer, l *link) (*session, error) {
	hello := &l.hello
	if hello.Version != transport.ProtocolVersion {
		return nil, fmt.Errorf("protocol version %d not supported (want %d)", hello.Version, transport.ProtocolVersion)
	}
	mode, err := scheduler.ParseMode(hello.Mode)
	if err != nil {
		return nil, err
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	s := pr.sess.Load()
	if s == nil || pr.instance != hello.Instance {
		var b [8]byte
		rand.Read(b[:])
		if s, err = newSession(binary.BigEndian.Uint64(b[:]), mode, 0, nil); err != nil {
			return nil, err
		}
		if old := pr.sess.Swap(s); old != nil {
			for _, x := range *old.links.Load() {
				x.path.Close("client restarted")
			}
		}
		pr.instance = hello.Instance
		c.log.Info("session started", "client", pr.Name, "session", s.id, "addresses", pr.addrs)
	}
	if old := s.addLink(l); old != nil {
		old.path.Close("replaced by a new connection")
	}
	s.single.Store(hello.Single)
	return s, nil
}

// failover resends what paths that went down had in flight, for sessions
// whose inner flows have stopped sending (the TUN reader sees the others),
// and returns when it should run again at the latest (session.failover).
func (c *Concentrator) failover() (next int64) {
	next = math.MaxInt64
	for _, pr := range c.peers {
		if s := pr.sess.Load(); s != nil {
			next = min(next, s.failover(&c.counters))
			s.updateHold(c.writer)
		}
	}
	return next
}

// reap ends sessions that have had no path for the grace period.
func (c *Concentrator) reap(ctx context.Context) {
	every(ctx, time.Second, func() {
		now := monotime()
		for _, pr := range c.peers {
			s := pr.sess.Load()
			if s == nil {
				continue
			}
			if since := s.emptySince.Load(); since != 0 && time.Duration(now-since) > c.opts.GracePeriod {
				c.expire(pr, s)
			}
		}
	})
}

// expire ends session s of pr if it still has no link.
func (c *Concentrator) expire(pr *peer, s *session) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if len(*s.links.Load()) == 0 && pr.sess.CompareAndSwap(s, nil) {
		c.log.Info("session expired", "client", pr.Name, "session", s.id)
	}
}

// lookup finds the client that owns dst.
func (c *Concentrator) lookup(dst netip.Addr) *peer {
	if p := c.byAddr[dst]; p != nil {
		return p
	}
	for _, r := range c.byPrefix {
		if r.prefix.Contains(dst) {
			return r.peer
		}
	}
	return nil
}

// outbound sends a packet read from the TUN to the client that owns its
// destination.
func (c *Concentrator) outbound(p packetRef, info *packet.Info) {
	pr := c.lookup(info.Dst)
	if pr == nil {
		c.counters.DropNoRoute.Add(1)
		putBuffer(p.buf)
		return
	}
	s := pr.sess.Load()
	if s == nil {
		c.counters.DropNoPath.Add(1)
		putBuffer(p.buf)
		return
	}
	budget := &c.readBudget
	if !budget.shared(s, monotime()) {
		budget = nil // one session: it may wait as a client's reader does
	}
	forward(s, p, info, budget, c.writer, &c.gw, &c.counters)
}

// peerEndpoint receives the data of one client's links.
type peerEndpoint struct {
	c    *Concentrator
	peer *peer
	sess *session
}

func (e *peerEndpoint) deliver(ctx context.Context, l *link, seq uint64, pkt []byte) {
	c := e.c
	info, err := packet.Parse(pkt)
	if err != nil {
		c.counters.DropMalformed.Add(1)
		return
	}
	if !e.peer.owns(info.Src) {
		c.counters.DropSpoofed.Add(1)
		return
	}
	// Only a packet that passed the checks takes its sequence number, so
	// a bad copy cannot shadow a good one arriving on another path.
	e.sess.deliver(ctx, l, seq, pkt, &info, c.writer, &c.counters)
}

// SessionStatus is one client as the concentrator sees it.
type SessionStatus struct {
	Name      string         `json:"name"`
	Addresses []netip.Prefix `json:"addresses"`
	Prefixes  []netip.Prefix `json:"prefixes,omitempty"`
	Session   uint64         `json:"session,omitempty"`
	State     string         `json:"state"` // active, grace (no path) or none
	Paths     []PathStatus   `json:"paths,omitempty"`
	Reorder   *ReorderStatus `json:"reorder,omitempty"`
}

// ConcentratorStatus is what `braid status` shows of a concentrator.
type ConcentratorStatus struct {
	Role     string          `json:"role"`
	Listen   string          `json:"listen"`
	Clients  []SessionStatus `json:"clients"`
	Counters CounterSnapshot `json:"counters"`
}

// WriteJSON writes st to w as json.Encoder.Encode would, but one client
// at a time. encoding/json keeps the buffer it encodes a value into for
// reuse, and a concentrator's whole status is about a kilobyte per client:
// encoded in one go, a status request left a megabyte per thousand
// clients in that pool, about 5 KiB per idle session in
// BenchmarkIdleSessions, which asks for the status while it waits.
func (st ConcentratorStatus) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw) // each value ends in a newline, which is JSON whitespace
	var err error
	put := func(raw string, v any) {
		if err == nil {
			bw.WriteString(raw)
			if v != nil {
				err = enc.Encode(v)
			}
		}
	}
	put(`{"role":`, st.Role)
	put(`,"listen":`, st.Listen)
	switch {
	case st.Clients == nil:
		put(`,"clients":null`, nil)
	case len(st.Clients) == 0:
		put(`,"clients":[]`, nil)
	default:
		sep := `,"clients":[`
		for i := range st.Clients {
			put(sep, &st.Clients[i])
			sep = ","
		}
		put("]", nil)
	}
	put(`,"counters":`, st.Counters)
	put("}\n", nil)
	if err != nil {
		return err
	}
	return bw.Flush()
}

// Status returns the concentrator's state.
func (c *Concentrator) Status() ConcentratorStatus {
	st := ConcentratorStatus{Role: "concentrator", Listen: c.ln.Addr().String(), Counters: c.counters.Snapshot()}
	addKernelDropped(st.Counters, c.opts.Device)
	st.Counters["drop_direct_queue"] = c.ln.DirectDropped() // direct datagrams beyond the socket's queue
	for _, pr := range c.peers {
		ss := SessionStatus{Name: pr.Name, Addresses: pr.addrs, Prefixes: pr.Prefixes, State: "none"}
		if s := pr.sess.Load(); s != nil {
			ss.Session, ss.Paths, ss.State = s.id, s.pathStatus(), "active"
			rs := s.reorderStatus()
			ss.Reorder = &rs
			if len(ss.Paths) == 0 {
				ss.State = "grace"
			}
		}
		st.Clients = append(st.Clients, ss)
	}
	sort.Slice(st.Clients, func(i, j int) bool { return st.Clients[i].Name < st.Clients[j].Name })
	return st
}
