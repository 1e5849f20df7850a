// Package proxy is a UDP proxy on loopback that impairs what it forwards:
// delay, loss, and cuts that either refuse (the uplink is down) or
// silently drop (a blackhole). Root-free integration tests put one between
// each client path and the concentrator, as an uplink.
//
//	client path ──▶ Proxy.Addr ──(delay, loss, cut)──▶ server
//	client path ◀── Proxy.Addr ◀──(delay, loss, cut)── server
//
// Each client address gets its own upstream socket, as a NAT would give it.
package proxy

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// queueLen bounds the packets held for delay in each direction of one
// client: at 10k packets a 100 ms delay holds 100k packets/s, more than a
// test on loopback sends; beyond it packets are dropped, as a full router
// queue would.
const queueLen = 10000

// Impairment is what the proxy does to packets, in both directions.
type Impairment struct {
	Delay time.Duration // added one way
	Loss  float64       // probability of dropping each packet, 0..1
	Cut   bool          // drop everything
}

// Proxy forwards UDP between clients and one server.
type Proxy struct {
	conn   *net.UDPConn
	server netip.AddrPort
	imp    atomic.Pointer[Impairment]

	mu      sync.Mutex
	clients map[netip.AddrPort]*flow
	closed  chan struct{}
	wg      sync.WaitGroup

	// Forwarded and Dropped count packets, both directions.
	Forwarded, Dropped atomic.Uint64
}

// flow is one client's upstream socket and delay queues.
type flow struct {
	up         *net.UDPConn
	toServer   chan held
	fromServer chan held
}

type held struct {
	due  time.Time
	data []byte
}

// New starts a proxy on 127.0.0.1 to server.
func New(server netip.AddrPort) (*Proxy, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &Proxy{conn: conn, server: server, clients: map[netip.AddrPort]*flow{}, closed: make(chan struct{})}
	p.imp.Store(&Impairment{})
	p.wg.Go(p.readClients)
	return p, nil
}

// Addr is where clients send.
func (p *Proxy) Addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Set changes the impairment; packets already held keep their delay.
func (p *Proxy) Set(imp Impairment) { p.imp.Store(&imp) }

// Close stops the proxy.
func (p *Proxy) Close() error {
	close(p.closed)
	p.conn.Close()
	p.mu.Lock()
	for _, f := range p.clients {
		f.up.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Proxy) readClients() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		f, err := p.flow(from)
		if err != nil {
			continue
		}
		p.hold(f.toServer, buf[:n])
	}
}

// flow returns the upstream of client from, starting it on first use.
func (p *Proxy) flow(from netip.AddrPort) (*flow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.clients[from]; f != nil {
		return f, nil
	}
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.server))
	if err != nil {
		return nil, err
	}
	f := &flow{up: up, toServer: make(chan held, queueLen), fromServer: make(chan held, queueLen)}
	p.clients[from] = f
	p.wg.Go(func() { p.readServer(f) })
	p.wg.Go(func() { p.release(f.toServer, func(b []byte) { up.Write(b) }) })
	p.wg.Go(func() { p.release(f.fromServer, func(b []byte) { p.conn.WriteToUDPAddrPort(b, from) }) })
	return f, nil
}

func (p *Proxy) readServer(f *flow) {
	buf := make([]byte, 65536)
	for {
		n, err := f.up.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// A connected UDP socket reports the ICMP errors of what it
			// sent (ECONNREFUSED while the server restarts): the flow
			// goes on.
			continue
		}
		p.hold(f.fromServer, buf[:n])
	}
}

// hold queues a copy of b for release after the delay, or drops it.
func (p *Proxy) hold(q chan held, b []byte) {
	imp := p.imp.Load()
	if imp.Cut || imp.Loss > 0 && rand.Float64() < imp.Loss {
		p.Dropped.Add(1)
		return
	}
	select {
	case q <- held{due: time.Now().Add(imp.Delay), data: append([]byte(nil), b...)}:
	default:
		p.Dropped.Add(1)
	}
}

// release sends held packets in order when they are due. A cut that
// starts while packets are held drops them too.
func (p *Proxy) release(q chan held, send func([]byte)) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var h held
		select {
		case h = <-q:
		case <-p.closed:
			return
		}
		if d := time.Until(h.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-p.closed:
				return
			}
		}
		if p.imp.Load().Cut {
			p.Dropped.Add(1)
			continue
		}
		send(h.data)
		p.Forwarded.Add(1)
	}
}
