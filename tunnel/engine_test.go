package tunnel

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/e2e/proxy"
	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// These tests join a client and a concentrator over loopback UDP, each
// path through its own impairing proxy, with in-memory TUN devices:
// netstack (a userspace TCP/IP stack) where real TCP runs through the
// tunnel, a channel TUN where a test writes and reads raw packets. No root.

var (
	pool4 = netip.MustParsePrefix("100.96.0.0/16")
	pool6 = netip.MustParsePrefix("fd62:7261:6964::/64")
)

type harness struct {
	t          *testing.T
	serverKey  ed25519.PrivateKey
	clientKey  ed25519.PrivateKey
	name       string // the client's name at the concentrator
	stateFile  string
	port       netip.AddrPort
	log        *slog.Logger
	conc       *Concentrator
	concDev    tun.Device
	concStop   func()
	proxies    []*proxy.Proxy
	client     *Client
	clientStop func()
	linkEvents chan transport.LinkEvent
	metered    map[int]bool    // paths of the next client that are metered
	budgets    map[int]*Budget // data budgets of the next client's paths
	rateCaps   map[int]float64 // rate caps (bytes/s) of the next client's paths
	classes    []scheduler.Class
	clock      func() time.Time // the next client's wall clock; nil for time.Now
	// sources are the source addresses of the paths, by index; unset
	// means 127.0.0.1. A test may change one while the client runs.
	sources sync.Map
	// absent holds the paths (by index) whose interface is missing: their
	// Resolve fails.
	absent sync.Map
	// match makes path i of the next client a Match entry with this
	// pattern, over the interfaces that interfaces lists.
	match      map[int]string
	interfaces func() ([]transport.Interface, error)
}

func (h *harness) sourceOf(i int) netip.Addr {
	if a, ok := h.sources.Load(i); ok {
		return a.(netip.Addr)
	}
	return netip.MustParseAddr("127.0.0.1")
}

func newHarness(t *testing.T) *harness {
	_, sk, _ := ed25519.GenerateKey(nil)
	_, ck, _ := ed25519.GenerateKey(nil)
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	h := &harness{
		t:         t,
		serverKey: sk,
		clientKey: ck,
		name:      "laptop",
		stateFile: filepath.Join(t.TempDir(), "leases.json"),
		log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	if h.clientStop != nil {
		h.clientStop()
	}
	if h.concStop != nil {
		h.concStop()
	}
	for _, p := range h.proxies {
		p.Close()
	}
}

// run starts fn in a goroutine and returns a func that cancels it and
// waits for it.
func run(fn func(ctx context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fn(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// startConcentrator starts a concentrator on dev (on the same port as the
// previous one, if any).
func (h *harness) startConcentrator(dev tun.Device, peers ...Peer) {
	h.t.Helper()
	addr := net.UDPAddrFromAddrPort(h.port)
	if !h.port.IsValid() {
		addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.port = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if len(peers) == 0 {
		peers = []Peer{{Name: "laptop", PublicKey: h.clientKey.Public().(ed25519.PublicKey), Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}}}
	}
	c, err := NewConcentrator(ConcentratorOptions{
		Device: dev, Conn: conn, PrivateKey: h.serverKey, Peers: peers,
		Pool4: pool4, Pool6: pool6, StateFile: h.stateFile, MTU: 1500, Logger: h.log.With("end", "concentrator"),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.conc, h.concDev = c, dev
	stop := run(c.Run)
	h.concStop = func() { stop(); conn.Close() }
}

func (h *harness) stopConcentrator() {
	h.concStop()
	h.concStop = nil
}

// netstackConcentrator starts a concentrator whose TUN is a userspace
// stack holding the pool's gateway address: a server behind it.
func (h *harness) netstackConcentrator() *netstack.Net {
	dev, tnet, err := netstack.CreateNetTUN([]netip.Addr{gatewayFor(pool4), gatewayFor(pool6)}, nil, 1500)
	if err != nil {
		h.t.Fatal(err)
	}
	h.startConcentrator(dev)
	return tnet
}

// startClient starts a client with n paths, path i through proxy i at
// priority i.
func (h *harness) startClient(dev tun.Device, mode scheduler.Mode, n int) {
	h.t.Helper()
	tlsConf, err := transport.ClientTLS(h.clientKey, h.serverKey.Public().(ed25519.PublicKey))
	if err != nil {
		h.t.Fatal(err)
	}
	var uplinks []Uplink
	for i := range n {
		if i >= len(h.proxies) {
			p, err := proxy.New(h.port)
			if err != nil {
				h.t.Fatal(err)
			}
			h.proxies = append(h.proxies, p)
		}
		p := h.proxies[i]
		u := Uplink{
			Name: []string{"wifi", "lte", "dsl"}[i], Interface: []string{"wlan0", "wwan0", "eth0"}[i], Priority: i, Weight: 1,
			Metered: h.metered[i], Budget: h.budgets[i], RateCap: h.rateCaps[i],
			Resolve: func(iface string) (transport.DialConfig, error) {
				if _, gone := h.absent.Load(i); gone {
					return transport.DialConfig{}, fmt.Errorf("uplink interface %q: Link not found", iface)
				}
				return transport.DialConfig{Remote: p.Addr(), Source: h.sourceOf(i), TLS: tlsConf}, nil
			},
		}
		if pattern := h.match[i]; pattern != "" {
			u.Interface = ""
			u.Match = func(iface transport.Interface) bool { ok, _ := path.Match(pattern, iface.Name); return ok }
			u.PathName = func(ifname string) string { return u.Name + "-" + ifname }
		}
		uplinks = append(uplinks, u)
	}
	h.linkEvents = make(chan transport.LinkEvent)
	c, err := NewClient(ClientOptions{Device: dev, Uplinks: uplinks, Mode: mode, Classes: h.classes, LinkEvents: h.linkEvents, Clock: h.clock,
		Interfaces: h.interfaces, Logger: h.log.With("end", "client")})
	if err != nil {
		h.t.Fatal(err)
	}
	h.client = c
	h.clientStop = run(c.Run)
}

// netstackClient starts a client whose TUN is a userspace stack holding
// the client's inner address.
func (h *harness) netstackClient(mode scheduler.Mode, n int) *netstack.Net {
	addrs := h.conc.Addresses(h.name)
	dev, tnet, err := netstack.CreateNetTUN([]netip.Addr{addrs[0].Addr(), addrs[1].Addr()}, nil, 1280)
	if err != nil {
		h.t.Fatal(err)
	}
	h.startClient(dev, mode, n)
	return tnet
}

// waitFor polls cond until it holds or the deadline passes. Path state is
// observed, not signalled, so polling is the event here.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) pathsUp(n int) func() bool {
	return func() bool {
		up := 0
		for _, p := range h.client.Status().Paths {
			if p.State == "up" {
				up++
			}
		}
		return up == n
	}
}

// stream is a deterministic byte stream, so the receiver can check every
// byte.
func stream(seed uint64) io.Reader {
	return &rngReader{r: rand.NewChaCha8([32]byte{byte(seed)})}
}

type rngReader struct{ r *rand.ChaCha8 }

func (r *rngReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// transfer sends size bytes from client to server over TCP through the
// tunnel, calling during(received) as bytes arrive, and returns the
// longest time no byte arrived.
func transfer(t *testing.T, client, server *netstack.Net, size int64, during func(received int64)) time.Duration {
	return transferOn(t, client, server, 5001, size, during)
}

func transferPort(t *testing.T, client, server *netstack.Net, port uint16, size int64) {
	transferOn(t, client, server, port, size, nil)
}

func transferOn(t *testing.T, client, server *netstack.Net, port uint16, size int64, during func(received int64)) time.Duration {
	t.Helper()
	ln, err := server.ListenTCPAddrPort(netip.AddrPortFrom(gatewayFor(pool4), port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// After a cut of every path, the userspace TCP's retransmission
	// backoff stalls the transfer for 30 s and more in some runs (31-47 s
	// measured with the race detector beside the e2e suite, before and
	// after this session's changes): the inner TCP's timer, not braid's.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	go func() {
		conn, err := client.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(gatewayFor(pool4), port))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.Copy(conn, io.LimitReader(stream(1), size))
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()

	got, want := sha256.New(), sha256.New()
	io.Copy(want, io.LimitReader(stream(1), size))
	buf := make([]byte, 64<<10)
	var received int64
	var stall time.Duration
	last := time.Now()
	for received < size {
		n, err := conn.Read(buf)
		if n > 0 {
			now := time.Now()
			stall = max(stall, now.Sub(last))
			last = now
			got.Write(buf[:n])
			received += int64(n)
			if during != nil {
				during(received)
			}
		}
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", received, size, err)
		}
	}
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatal("the bytes that arrived differ from those sent")
	}
	return stall
}

func TestTCPThroughTunnel(t *testing.T) {
	h := newHarness(t)
	server := h.netstackConcentrator()
	client := h.netstackClient(scheduler.Failover, 1)
	waitFor(t, "path up", 10*time.Second, h.pathsUp(1))
	transfer(t, client, server, 4<<20, nil)
	st := h.client.Status()
	if st.Addresses[0] != h.conc.Addresses("laptop")[0] {
		t.Errorf("client has %v, concentrator assigned %v", st.Addresses, h.conc.Addresses("laptop"))
	}
}

// TestTCPSurvivesPathCut cuts the busy path in the middle of a transfer,
// restores it, then cuts the other one.
func TestTCPSurvivesPathCut(t *testing.T) {
	h := newHarness(t)
	server := h.netstackConcentrator()
	client := h.netstackClient(scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	const size = 12 << 20
	// What each path carried, read before each cut: a path cut for
	// longer than QUIC's idle timeout (a slow machine, -race) comes back
	// as a new connection whose counters start from zero.
	carried := map[string]uint64{}
	count := func() {
		for _, p := range h.client.Status().Paths {
			carried[p.Name] = max(carried[p.Name], p.TxPackets)
		}
	}
	var once [3]sync.Once
	stall := transfer(t, client, server, size, func(n int64) {
		switch {
		case n > size/4 && n < size/2:
			once[0].Do(func() { count(); h.proxies[0].Set(proxy.Impairment{Cut: true}) })
		case n > size/2 && n < 3*size/4:
			once[1].Do(func() {
				count()
				h.proxies[0].Set(proxy.Impairment{})
				h.proxies[1].Set(proxy.Impairment{Cut: true})
			})
		case n > 3*size/4:
			once[2].Do(func() { h.proxies[1].Set(proxy.Impairment{}) })
		}
	})
	t.Logf("longest stall %v", stall)
	count()
	for _, name := range []string{"wifi", "lte"} {
		if carried[name] == 0 {
			t.Errorf("path %s carried nothing", name)
		}
	}
}

// TestCutAsksConcentrator: when the busy path goes down (a kernel event)
// and the path left is metered, the client holds back what the dead path
// sent in its last round trip, the concentrator says what it lacks, and
// the client resends only that: here nothing, since the path died only in
// the kernel's word and delivered everything.
func TestCutAsksConcentrator(t *testing.T) {
	h := newHarness(t)
	h.metered = map[int]bool{1: true}
	server := h.netstackConcentrator()
	client := h.netstackClient(scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	// A round trip of 40 ms, not loopback's fraction of a millisecond:
	// what the path sends in its last round trip is then more than a
	// datagram or two, however the machine's load spaces the sends.
	h.proxies[0].Set(proxy.Impairment{Delay: 20 * time.Millisecond})
	const size = 8 << 20
	var once sync.Once
	transfer(t, client, server, size, func(n int64) {
		if n > size/3 {
			once.Do(func() { h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Up: false} })
		}
	})
	// The answer may come after the transfer ends (the concentrator waits
	// for the path to fall quiet, and the client still probes it).
	answered := func() bool {
		c := h.client.Status().Counters
		return c["resend_skipped"] > 0 || c["resend_expired"] > 0
	}
	waitFor(t, "the held back datagrams to be dealt with", 5*time.Second, answered)
	if c := h.client.Status().Counters; c["resend_skipped"] == 0 || c["resend_expired"] != 0 {
		t.Errorf("resend_skipped %d, resend_expired %d: want some skipped on the concentrator's word, none expired", c["resend_skipped"], c["resend_expired"])
	}
}

func TestAggregateUsesBothPaths(t *testing.T) {
	h := newHarness(t)
	server := h.netstackConcentrator()
	client := h.netstackClient(scheduler.Aggregate, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	transfer(t, client, server, 4<<20, nil)
	paths := h.client.Status().Paths
	total := paths[0].TxPackets + paths[1].TxPackets
	// Once the paths have rate estimates, each packet goes where it is
	// predicted to arrive first: on two equal loopback paths that is near
	// half each, but a path whose sender the machine's load starves of CPU
	// has the longer queue and gets less (33-67% in quiet runs, 25% once in
	// CI). An eighth still fails if aggregate leaves a path idle.
	for _, p := range paths {
		if p.TxPackets < total/8 {
			t.Errorf("path %s carried %d of %d packets; aggregate over two equal paths should use both", p.Name, p.TxPackets, total)
		}
	}
}

// TestSessionSurvivesAllPathsDown cuts every path long enough for both to
// be declared dead; the same TCP connection completes afterwards.
func TestSessionSurvivesAllPathsDown(t *testing.T) {
	h := newHarness(t)
	server := h.netstackConcentrator()
	client := h.netstackClient(scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	session := h.client.Status().Session
	var once sync.Once
	transfer(t, client, server, 4<<20, func(n int64) {
		if n < 1<<20 {
			return
		}
		once.Do(func() {
			for _, p := range h.proxies {
				p.Set(proxy.Impairment{Cut: true})
			}
			waitFor(t, "paths down", 10*time.Second, h.pathsUp(0))
			time.Sleep(time.Second) // the outage itself: a duration, not a synchronisation
			for _, p := range h.proxies {
				p.Set(proxy.Impairment{})
			}
		})
	})
	if got := h.client.Status().Session; got != session {
		t.Errorf("session changed from %d to %d", session, got)
	}
}

// TestConcentratorRestartKeepsAddress restarts the concentrator: the
// client joins a new session with the same inner addresses.
func TestConcentratorRestartKeepsAddress(t *testing.T) {
	h := newHarness(t)
	h.netstackConcentrator()
	h.netstackClient(scheduler.Failover, 1)
	waitFor(t, "path up", 10*time.Second, h.pathsUp(1))
	before := h.client.Status()
	h.stopConcentrator()
	server := h.netstackConcentrator()
	waitFor(t, "new session", 15*time.Second, func() bool {
		st := h.client.Status()
		return st.Session != before.Session && len(st.Paths) == 1 && st.Paths[0].State == "up"
	})
	after := h.client.Status()
	if after.Addresses[0] != before.Addresses[0] || after.Addresses[1] != before.Addresses[1] {
		t.Errorf("addresses changed from %v to %v", before.Addresses, after.Addresses)
	}
	_ = server
}

// channelPair starts both ends on channel TUNs, for raw packet tests.
func channelPair(t *testing.T) (h *harness, client, conc *tuntest.ChannelTUN) {
	h = newHarness(t)
	conc, client = tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	h.startClient(client.TUN(), scheduler.Failover, 1)
	waitFor(t, "path up", 10*time.Second, h.pathsUp(1))
	return h, client, conc
}

func TestSpoofedSourceDropped(t *testing.T) {
	h, client, conc := channelPair(t)
	own := h.conc.Addresses("laptop")[0].Addr()
	dst := netip.MustParseAddr("10.210.0.2")
	for _, src := range []netip.Addr{netip.MustParseAddr("100.96.0.77"), own, netip.MustParseAddr("192.168.50.9")} {
		client.Outbound <- udp4(src, dst, 100, true)
	}
	// The two legitimate packets (own address, own LAN prefix) arrive;
	// the spoofed one never does. Not necessarily in order: the first
	// packets of a one-path session may go through QUIC and the rest
	// direct, and a direct datagram overtakes one that a busy receiver
	// has not taken out of quic-go yet (link.quiet bounds how often).
	want := map[netip.Addr]bool{own: true, netip.MustParseAddr("192.168.50.9"): true}
	for len(want) > 0 {
		select {
		case got := <-conc.Inbound:
			src := netip.AddrFrom4([4]byte(got[12:16]))
			if !want[src] {
				t.Fatalf("concentrator TUN got a packet from %v, want one from %v; the client's counters %v; the concentrator's %v",
					src, want, h.client.Status().Counters, h.conc.Status().Counters)
			}
			delete(want, src)
		case <-time.After(10 * time.Second):
			t.Fatalf("no packet from %v arrived", want)
		}
	}
	if n := h.conc.Status().Counters["drop_spoofed"]; n != 1 {
		t.Errorf("drop_spoofed = %d, want 1", n)
	}
}

func TestTooBigAnsweredWithICMP(t *testing.T) {
	h, client, _ := channelPair(t)
	mtu := h.client.Status().Paths[0].MTU
	own := h.conc.Addresses("laptop")[0].Addr()
	client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), mtu+100, true)
	select {
	case icmp := <-client.Inbound:
		hl := int(icmp[0]&0xf) * 4
		if icmp[9] != 1 || icmp[hl] != 3 || icmp[hl+1] != 4 {
			t.Fatalf("got proto %d type %d code %d, want ICMP fragmentation needed", icmp[9], icmp[hl], icmp[hl+1])
		}
		if got := int(icmp[hl+6])<<8 | int(icmp[hl+7]); got != mtu {
			t.Errorf("ICMP announces MTU %d, want the path's %d", got, mtu)
		}
		if dst := netip.AddrFrom4([4]byte(icmp[16:20])); dst != own {
			t.Errorf("ICMP sent to %v, want %v", dst, own)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ICMP error for a packet bigger than the path MTU")
	}
}

func TestSYNGetsMSSClamped(t *testing.T) {
	h, client, conc := channelPair(t)
	mtu := h.client.Status().Paths[0].MTU
	own := h.conc.Addresses("laptop")[0].Addr()
	client.Outbound <- tcpSYN4(own, netip.MustParseAddr("10.210.0.2"), 1460)
	select {
	case got := <-conc.Inbound:
		if mss := int(got[20+22])<<8 | int(got[20+23]); mss != mtu-40 {
			t.Errorf("MSS at the concentrator = %d, want %d (path MTU %d - 40)", mss, mtu-40, mtu)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SYN did not arrive")
	}
}

// TestUnknownClientsGetNothing floods the concentrator with handshakes
// from unknown keys; none gets a session and a known client still joins.
func TestUnknownClientsGetNothing(t *testing.T) {
	h := newHarness(t)
	h.startConcentrator(tuntest.NewChannelTUN().TUN())
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			_, stranger, _ := ed25519.GenerateKey(nil)
			conf, _ := transport.ClientTLS(stranger, h.serverKey.Public().(ed25519.PublicKey))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p, _, err := transport.Dial(ctx, transport.DialConfig{Remote: h.port, TLS: conf}, &transport.Hello{Version: transport.ProtocolVersion, Mode: "failover"})
			if err == nil {
				p.Close("")
				t.Error("an unknown client got a session")
			}
		})
	}
	wg.Wait()
	h.startClient(tuntest.NewChannelTUN().TUN(), scheduler.Failover, 1)
	waitFor(t, "path up", 10*time.Second, h.pathsUp(1))
	for _, c := range h.conc.Status().Clients {
		if c.State != "active" && c.Name == "laptop" {
			t.Errorf("known client's session is %s", c.State)
		}
	}
}

// udp4 builds an IPv4 UDP packet of total length size.
func udp4(src, dst netip.Addr, size int, df bool) []byte {
	b := make([]byte, size)
	b[0], b[8], b[9] = 0x45, 64, 17
	b[2], b[3] = byte(size>>8), byte(size)
	if df {
		b[6] = 0x40
	}
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	b[20], b[21], b[22], b[23] = 0x30, 0x39, 0x00, 0x35
	b[24], b[25] = byte((size-20)>>8), byte(size-20)
	ipChecksum(b[:20])
	return b
}

// tcpSYN4 builds an IPv4 TCP SYN carrying an MSS option.
func tcpSYN4(src, dst netip.Addr, mss int) []byte {
	b := make([]byte, 20+24)
	b[0], b[3], b[6], b[8], b[9] = 0x45, byte(len(b)), 0x40, 64, 6
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	tcp := b[20:]
	tcp[0], tcp[1], tcp[2], tcp[3] = 0x30, 0x39, 0x00, 0x50
	tcp[12], tcp[13] = 6<<4, 0x02 // data offset 6 words, SYN
	tcp[14], tcp[15] = 0xff, 0xff
	tcp[20], tcp[21], tcp[22], tcp[23] = 2, 4, byte(mss>>8), byte(mss)
	ipChecksum(b[:20])
	return b
}

func ipChecksum(h []byte) {
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	h[10], h[11] = byte(^sum>>8), byte(^sum)
}

var _ = errors.New

// secondClient returns a harness for another client of h's concentrator.
func (h *harness) secondClient(name string, key ed25519.PrivateKey) *harness {
	h2 := &harness{t: h.t, serverKey: h.serverKey, clientKey: key, name: name, port: h.port, log: h.log, conc: h.conc}
	h.t.Cleanup(h2.close)
	return h2
}

func TestTwoClientsAtOnce(t *testing.T) {
	h := newHarness(t)
	_, phoneKey, _ := ed25519.GenerateKey(nil)
	dev, server, err := netstack.CreateNetTUN([]netip.Addr{gatewayFor(pool4), gatewayFor(pool6)}, nil, 1500)
	if err != nil {
		t.Fatal(err)
	}
	h.startConcentrator(dev,
		Peer{Name: "laptop", PublicKey: h.clientKey.Public().(ed25519.PublicKey)},
		Peer{Name: "phone", PublicKey: phoneKey.Public().(ed25519.PublicKey)})
	phone := h.secondClient("phone", phoneKey)
	laptopNet := h.netstackClient(scheduler.Failover, 1)
	phoneNet := phone.netstackClient(scheduler.Failover, 1)
	waitFor(t, "laptop path up", 10*time.Second, h.pathsUp(1))
	waitFor(t, "phone path up", 10*time.Second, phone.pathsUp(1))
	if a, b := h.client.Status().Addresses, phone.client.Status().Addresses; a[0] == b[0] || a[1] == b[1] {
		t.Fatalf("two clients share addresses: %v and %v", a, b)
	}
	var wg sync.WaitGroup
	for i, client := range []*netstack.Net{laptopNet, phoneNet} {
		wg.Go(func() { transferPort(t, client, server, uint16(5001+i), 2<<20) })
	}
	wg.Wait()
	for _, c := range h.conc.Status().Clients {
		if c.State != "active" {
			t.Errorf("client %s: session %s", c.Name, c.State)
		}
	}
}

// TestBadDatagramsCounted sends garbage, truncated and replayed datagrams
// over an authenticated path: nothing breaks, each is counted, and the
// replayed packet is delivered once.
func TestBadDatagramsCounted(t *testing.T) {
	h := newHarness(t)
	conc := tuntest.NewChannelTUN()
	h.startConcentrator(conc.TUN())
	tlsConf, _ := transport.ClientTLS(h.clientKey, h.serverKey.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, w, err := transport.Dial(ctx, transport.DialConfig{Remote: h.port, TLS: tlsConf}, &transport.Hello{Version: transport.ProtocolVersion, Uplink: "raw", Mode: "failover", Instance: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close("done")
	pkt := udp4(w.Addresses[0].Addr(), netip.MustParseAddr("10.210.0.2"), 60, true)
	data := make([]byte, transport.HeaderLen+len(pkt))
	transport.PutHeader(data, transport.KindData, 1)
	copy(data[transport.HeaderLen:], pkt)
	for _, d := range [][]byte{
		{1, 2, 3},                     // shorter than the header
		{0x7f, 0, 0, 0, 0, 0, 0, 1},   // unknown kind
		data[:transport.HeaderLen+10], // truncated IP packet
		data, data, data,              // the same packet three times
	} {
		if err := p.Send(d); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-conc.Inbound:
		if len(got) != len(pkt) {
			t.Fatalf("concentrator TUN got %d bytes, want the %d-byte packet", len(got), len(pkt))
		}
	case <-ctx.Done():
		t.Fatal("the valid packet was not delivered")
	}
	waitFor(t, "drops counted", 5*time.Second, func() bool {
		c := h.conc.Status().Counters
		return c["drop_bad_dgram"] == 2 && c["drop_malformed"] == 1 && c["drop_duplicate"] == 2
	})
	select {
	case got := <-conc.Inbound:
		t.Fatalf("a second packet reached the TUN: %x", got)
	default:
	}
}

// TestLinkEventTakesPathOutAtOnce: the kernel's word that an uplink lost
// carrier takes its path out of use though its probes still succeed, and
// carrier back brings it back.
func TestLinkEventTakesPathOutAtOnce(t *testing.T) {
	h, client, conc := channelPair(t)
	pathState := func(want string) func() bool {
		return func() bool { return h.client.Status().Paths[0].State == want }
	}
	h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Up: false}
	waitFor(t, "path down on the link event", 5*time.Second, pathState("down"))
	own := h.conc.Addresses("laptop")[0].Addr()
	client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), 100, true)
	waitFor(t, "packet dropped for want of a path", 5*time.Second, func() bool { return h.client.Status().Counters["drop_no_path"] == 1 })
	h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Up: true}
	waitFor(t, "path up again", 5*time.Second, pathState("up"))
	client.Outbound <- udp4(own, netip.MustParseAddr("10.210.0.2"), 100, true)
	select {
	case <-conc.Inbound:
	case <-time.After(5 * time.Second):
		t.Fatal("no traffic after the link came back")
	}
}

// TestNoGoroutineLeak runs both ends, carries traffic, cuts and restores a
// path, stops both, and checks that the goroutines they started are gone.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		h := newHarness(t)
		server := h.netstackConcentrator()
		client := h.netstackClient(scheduler.Failover, 2)
		waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
		transfer(t, client, server, 1<<20, func(n int64) {
			if n > 1<<19 {
				h.proxies[0].Set(proxy.Impairment{Cut: true})
			}
		})
		h.proxies[0].Set(proxy.Impairment{})
		h.close()
		h.clientStop, h.concStop, h.proxies = nil, nil, nil
	}()
	// quic-go and netstack end their goroutines asynchronously after Close.
	waitFor(t, "goroutines to end", 10*time.Second, func() bool { return runtime.NumGoroutine() <= before })
}

// TestIdleMeteredPathProbedRarely: a metered standby path costs a few
// packets a second, not the fast probes of an unmetered one, and takes
// over at once when the unmetered path dies.
func TestIdleMeteredPathProbedRarely(t *testing.T) {
	h := newHarness(t)
	server := h.netstackConcentrator()
	h.metered = map[int]bool{1: true}
	client := h.netstackClient(scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	wifi0, lte0 := h.proxies[0].Forwarded.Load(), h.proxies[1].Forwarded.Load()
	time.Sleep(3 * time.Second) // the interval measured
	wifi, lte := h.proxies[0].Forwarded.Load()-wifi0, h.proxies[1].Forwarded.Load()-lte0
	t.Logf("packets in 3 s while idle: unmetered %d, metered %d", wifi, lte)
	if lte*5 > wifi {
		t.Errorf("idle metered path exchanged %d packets in 3 s, unmetered %d: want far fewer", lte, wifi)
	}
	h.proxies[0].Set(proxy.Impairment{Cut: true})
	transfer(t, client, server, 1<<20, nil)
	if st := h.client.Status(); st.Paths[1].TxPackets == 0 {
		t.Error("the metered path did not take over")
	}
}

// TestConcentratorHearsOfDownPath: when the client loses an uplink, the
// concentrator stops using that path at once because the client says so
// on the other path, not after the path fell silent (here it never does:
// its proxy keeps forwarding).
func TestConcentratorHearsOfDownPath(t *testing.T) {
	h := newHarness(t)
	h.startConcentrator(tuntest.NewChannelTUN().TUN())
	h.startClient(tuntest.NewChannelTUN().TUN(), scheduler.Failover, 2)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(2))
	concState := func(want string) func() bool {
		return func() bool {
			for _, c := range h.conc.Status().Clients {
				for _, p := range c.Paths {
					if p.Name == "wifi" {
						return p.State == want
					}
				}
			}
			return false
		}
	}
	h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Up: false}
	waitFor(t, "concentrator to take wifi out", 5*time.Second, concState("down"))
	h.linkEvents <- transport.LinkEvent{Interface: "wlan0", Up: true}
	waitFor(t, "concentrator to use wifi again", 5*time.Second, concState("up"))
}

// TestNewPathWarmsUp: a new unmetered path sends padding on both sides
// while QUIC is in slow start, so its congestion window is open before
// traffic needs it; a metered path, and one with a data budget, send
// none either way.
func TestNewPathWarmsUp(t *testing.T) {
	for warmups.Tokens() < 4 { // other tests' paths took the process's warm-ups
		time.Sleep(50 * time.Millisecond)
	}
	h := newHarness(t)
	h.startConcentrator(tuntest.NewChannelTUN().TUN())
	h.metered = map[int]bool{1: true}
	h.budgets = map[int]*Budget{2: {Limit: 1 << 30, Period: config.PeriodDaily, Action: config.ActionFailoverOnly, Warn: 0.5}}
	h.startClient(tuntest.NewChannelTUN().TUN(), scheduler.Failover, 3)
	waitFor(t, "paths up", 10*time.Second, h.pathsUp(3))
	const initialWindow = 32 * 1350 // quic-go's, at braid's initial packet size
	path := func(paths []PathStatus, name string) PathStatus {
		for _, p := range paths {
			if p.Name == name {
				return p
			}
		}
		return PathStatus{}
	}
	concPath := func(name string) PathStatus {
		for _, c := range h.conc.Status().Clients {
			if p := path(c.Paths, name); p.Name != "" {
				return p
			}
		}
		return PathStatus{}
	}
	waitFor(t, "both ends of wifi to open their window with padding", 10*time.Second, func() bool {
		c, s := path(h.client.Status().Paths, "wifi"), concPath("wifi")
		return c.PadBytes > 0 && c.Cwnd > 2*initialWindow && s.PadBytes > 0 && s.Cwnd > 2*initialWindow
	})
	for _, name := range []string{"lte", "dsl"} { // metered, budgeted
		c, s := path(h.client.Status().Paths, name), concPath(name)
		if s.Name == "" {
			t.Fatalf("the concentrator has no path %s", name)
		}
		if c.PadBytes != 0 || s.PadBytes != 0 {
			t.Errorf("path %s padded: client %d bytes, concentrator %d", name, c.PadBytes, s.PadBytes)
		}
	}
}
