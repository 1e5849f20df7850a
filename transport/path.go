package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
)

// Timeouts of a path. Liveness is judged by braid's own probes (see the
// tunnel package), far faster than these; they only reclaim connections
// nobody closed.
const (
	handshakeTimeout = 5 * time.Second
	idleTimeout      = 15 * time.Second
)

// IdleTimeout is how long a silent connection lives: a client that was
// away longer (a host asleep) knows the concentrator has dropped its
// connections.
const IdleTimeout = idleTimeout

// handshakesPerSecond is how many new connections a concentrator accepts
// per second before it demands address validation (a QUIC Retry, RFC 9000
// §8.1.2) from further ones: a flood from spoofed addresses then costs one
// stateless packet each.
const handshakesPerSecond = 200

// initialPacketSize is the smallest QUIC packet a path sends (before path
// MTU discovery finds more). At quic-go's default of 1280 a datagram
// carries only about 1235 bytes, and an inner MTU below 1280 disables
// IPv6 on the TUN, so braid starts at 1350 bytes, as browsers do: that
// fits every common path (PPPoE, mobile, IPv6 tunnels) and leaves room
// for a 1280-byte inner packet.
const initialPacketSize = 1350

// connectionIDLength makes a full-size datagram fill a QUIC packet
// exactly. quic-go caps a datagram at the packet size minus 37 bytes (an
// estimate for 20-byte connection IDs), and batches packets into one GSO
// send only while each is exactly full size; with 17-byte connection IDs
// (and the usual 2-byte packet numbers) a maximum datagram makes a
// full-size packet, so a stream of full-size inner packets leaves in GSO
// batches instead of one syscall each (see shared PERF-NOTES). It costs
// nothing in datagram size, which quic-go computes for 20-byte IDs anyway.
// quic-go's own batching rarely applies to a tunnel (the ACK frames for
// the reverse traffic's datagrams break its runs); braid batches below it
// instead (batchConn), where equal-size packets still make the longest
// GSO runs.
const connectionIDLength = 17

// controlWindow is the flow control window of the control stream, and of
// the connection (datagrams are not flow controlled): room for four of
// the largest control messages, where quic-go's defaults (512 KiB growing
// to 6 MiB, 15 MiB for the connection) would let a peer make us buffer
// megabytes per path.
const controlWindow = 4 * MaxControlMessage

// quicConfig is the configuration of the connections on a socket whose
// reader gate holds back (nil for none).
func quicConfig(gate *rxGate) *quic.Config {
	return &quic.Config{
		InitialPacketSize:              initialPacketSize,
		InitialStreamReceiveWindow:     controlWindow,
		MaxStreamReceiveWindow:         controlWindow,
		InitialConnectionReceiveWindow: controlWindow,
		MaxConnectionReceiveWindow:     controlWindow,
		EnableDatagrams:                true,
		HandshakeIdleTimeout:           handshakeTimeout,
		MaxIdleTimeout:                 idleTimeout,
		MaxIncomingStreams:             1, // the control stream
		MaxIncomingUniStreams:          -1,
		Tracer:                         tracerFor(gate),
	}
}

// DatagramTooLargeError is returned by Send for a datagram the path cannot
// carry now; Max is the largest payload it can.
type DatagramTooLargeError struct{ Max int }

func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("datagram too large for path (max %d)", e.Max)
}

// Stats are a path's transport statistics, from QUIC's view.
type Stats struct {
	SmoothedRTT   time.Duration
	MinRTT        time.Duration
	RTTVar        time.Duration
	Cwnd          uint64
	BytesSent     uint64
	BytesReceived uint64
	PacketsSent   uint64
	PacketsRecv   uint64
	PacketsLost   uint64
	PacketsRecvd  uint64
	// Discarded on receipt for want of room in quic-go's queues: QUIC
	// packets (the peer sees them lost) and datagrams (acknowledged: the
	// peer never learns).
	PacketsDropped   uint64
	DatagramsDropped uint64
	// SpuriousLosses counts packets QUIC declared lost that the peer
	// acknowledged afterwards.
	SpuriousLosses uint64
}

// Path is one QUIC connection over one uplink, with its control stream.
// Send and Receive may be called concurrently with each other and with the
// control methods.
type Path struct {
	conn *quic.Conn
	ctrl *quic.Stream
	peer ed25519.PublicKey

	// Owned by a client path, nil on the concentrator where they are shared.
	tr  *quic.Transport
	udp net.PacketConn

	direct *directLane
	out    *quic.Transport // where direct datagrams leave

	writeMu sync.Mutex // serialises control messages

	loss *lossTracker // nil if quic-go gave the connection no tracer
}

// newPath wraps an established connection.
func newPath(conn *quic.Conn) *Path {
	p := &Path{conn: conn}
	p.loss, _ = conn.QlogTrace().(*lossTracker)
	return p
}

// tooLargeProbe is never written: SendDatagram checks the length first.
var tooLargeProbe = make([]byte, 1<<16)

// Send sends one datagram. It blocks while quic-go's send queue is full,
// which is the path's backpressure. The payload is copied. Send is not
// safe for concurrent use: the loss tracker matches datagrams to QUIC
// packets by their order.
func (p *Path) Send(b []byte) error {
	if p.loss != nil {
		p.loss.queue(b)
	}
	err := p.conn.SendDatagram(b)
	if err == nil {
		return nil
	}
	if p.loss != nil {
		p.loss.unqueue()
	}
	var tl *quic.DatagramTooLargeError
	if errors.As(err, &tl) {
		return &DatagramTooLargeError{Max: int(tl.MaxDatagramPayloadSize)}
	}
	return err
}

// QUICSendQueue is the length of quic-go's datagram send queue
// (maxDatagramSendQueueLen, v0.65): a datagram Send hands over leaves
// after at most that many handed over before it.
const QUICSendQueue = 32

// Backlog returns how many datagrams wait in quic-go's send queue (of
// QUICSendQueue), for the congestion window or the pacer: a full one
// makes Send block. -1 if that is not known (no loss tracker).
func (p *Path) Backlog() int {
	if p.loss == nil {
		return -1
	}
	return p.loss.backlog()
}

// Drained returns a channel signalled when quic-go sent a packet and at
// most level datagrams remain in its send queue; a negative level stops
// the signals. The caller owns the signals: one waiter at a time.
func (p *Path) Drained(level int) <-chan struct{} {
	if p.loss == nil {
		return nil
	}
	p.loss.drainLevel.Store(int32(level))
	if level < 0 {
		return nil
	}
	return p.loss.drained
}

// InSlowStart reports whether QUIC's congestion controller is still in
// slow start, where the window doubles every round trip it is filled;
// false if that is not known (no loss tracker).
func (p *Path) InSlowStart() bool {
	return p.loss != nil && !p.loss.slowStartDone.Load()
}

// Settled reports whether QUIC's congestion controller has left slow
// start and the recovery that ended it; true if that is not known (no
// loss tracker).
func (p *Path) Settled() bool {
	return p.loss == nil || p.loss.settled.Load()
}

// LossCounts returns the 1-RTT packets QUIC sent on the path and the loss
// events among those sent since the last ForgetLosses (cumulative): a
// loss and those of the packets sent before QUIC declared it are one
// event. Zeros without a loss tracker.
func (p *Path) LossCounts() (sent, events uint64) {
	if p.loss == nil {
		return 0, 0
	}
	return p.loss.sentPackets.Load(), p.loss.lossEvents.Load()
}

// ForgetLosses leaves the packets sent so far out of LossCounts' lost
// ones, even those QUIC declares lost later: slow start's overshoot of the
// bottleneck's queue says nothing of the path's own loss.
func (p *Path) ForgetLosses() {
	if p.loss != nil {
		p.loss.countLostFrom.Store(p.loss.lastSentPN.Load() + 1)
	}
}

// Lost is signalled when QUIC declared packets lost that carried data
// datagrams; TakeLost says which.
func (p *Path) Lost() <-chan struct{} {
	if p.loss == nil {
		return nil
	}
	return p.loss.ready
}

// TakeLost appends to dst the sequence numbers of the data datagrams
// declared lost since the last call.
func (p *Path) TakeLost(dst []uint64) []uint64 {
	if p.loss == nil {
		return dst
	}
	return p.loss.takeLost(dst)
}

// AckedAt is when the peer last acknowledged a packet it had not
// acknowledged before: the last proof that the path carries what we send.
// It is zero if that never happened, or the path has no loss tracker.
func (p *Path) AckedAt() time.Time {
	if p == nil || p.loss == nil {
		return time.Time{}
	}
	d := p.loss.ackedAt.Load()
	if d == 0 {
		return time.Time{}
	}
	return lossEpoch.Add(time.Duration(d))
}

// ReleaseIdle frees what the path keeps to tell lost datagrams apart; the
// caller says the path has sent no data for longer than a loss takes to
// be noticed.
func (p *Path) ReleaseIdle() {
	if p.loss != nil {
		p.loss.release()
	}
}

// MaxDatagram is the largest datagram payload the path can carry now. It
// grows as path MTU discovery (RFC 8899) finds room.
func (p *Path) MaxDatagram() int {
	var tl *quic.DatagramTooLargeError
	if errors.As(p.conn.SendDatagram(tooLargeProbe), &tl) {
		return int(tl.MaxDatagramPayloadSize)
	}
	return len(tooLargeProbe)
}

// Receive returns the next datagram.
func (p *Path) Receive(ctx context.Context) ([]byte, error) {
	b, err := p.conn.ReceiveDatagram(ctx)
	if err == nil && p.loss != nil {
		p.loss.rx.add(-1)
	}
	return b, err
}

// ReadControl reads the next control message. One goroutine reads.
func (p *Path) ReadControl() (*Message, error) { return ReadMessage(p.ctrl) }

// WriteControl writes one control message.
func (p *Path) WriteControl(m *Message) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	return WriteMessage(p.ctrl, m)
}

// TryWriteControl queues one control message if it can do so without
// waiting (for another writer, or for QUIC's flow control), and returns
// ErrWouldBlock otherwise, having written nothing. Then it waits, at most
// for wait, until QUIC has sent a packet with control stream data.
//
// What the caller sends after it then goes out after the message: QUIC
// packs queued datagrams before stream data, so a message written just
// before a burst of datagrams waits behind the whole burst, in the
// connection's queues and then in the path's bottleneck queue.
func (p *Path) TryWriteControl(m *Message, wait time.Duration) error {
	if !p.writeMu.TryLock() {
		return ErrWouldBlock
	}
	defer p.writeMu.Unlock()
	b, err := marshalMessage(m)
	if err != nil {
		return err
	}
	var before uint64
	if p.loss != nil {
		before = p.loss.ctrlSent.Load()
	}
	if err := p.ctrl.TryWriteAll(b); errors.Is(err, quic.ErrWouldBlock) {
		return ErrWouldBlock
	} else if err != nil {
		return err
	}
	if p.loss == nil || wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for p.loss.ctrlSent.Load() == before {
		select {
		case <-p.loss.ctrlSignal:
		case <-t.C:
			return nil
		case <-p.conn.Context().Done():
			return nil
		}
	}
	return nil
}

// ErrWouldBlock is TryWriteControl's: the message would have to wait.
var ErrWouldBlock = errors.New("transport: control message would block")

// Stats returns QUIC's statistics of the path.
func (p *Path) Stats() Stats {
	s := p.conn.ConnectionStats()
	st := Stats{
		SmoothedRTT:   s.SmoothedRTT,
		MinRTT:        s.MinRTT,
		RTTVar:        s.MeanDeviation,
		Cwnd:          s.CongestionWindow,
		BytesSent:     s.BytesSent,
		BytesReceived: s.BytesReceived,
		PacketsSent:   s.PacketsSent,
		PacketsRecv:   s.PacketsReceived,
		PacketsLost:   s.PacketsLost,
		PacketsRecvd:  s.PacketsReceived,
	}
	if p.loss != nil {
		st.PacketsDropped = p.loss.packetsDropped.Load()
		st.DatagramsDropped = p.loss.datagramsDropped.Load()
		st.SpuriousLosses = p.loss.spurious.Load()
	}
	return st
}

// PeerKey is the authenticated key of the peer.
func (p *Path) PeerKey() ed25519.PublicKey { return p.peer }

// LocalAddr and RemoteAddr are the path's UDP addresses.
func (p *Path) LocalAddr() net.Addr  { return p.conn.LocalAddr() }
func (p *Path) RemoteAddr() net.Addr { return p.conn.RemoteAddr() }

// Done is closed when the connection is gone.
func (p *Path) Done() <-chan struct{} { return p.conn.Context().Done() }

// Err says why the connection is gone, once Done is closed.
func (p *Path) Err() error { return context.Cause(p.conn.Context()) }

// Close closes the connection, telling the peer why, and the socket of a
// client path.
func (p *Path) Close(reason string) error {
	err := p.conn.CloseWithError(0, reason)
	if p.tr != nil {
		err = errors.Join(err, p.tr.Close())
	}
	if p.udp != nil {
		err = errors.Join(err, p.udp.Close())
	}
	return err
}

// DialConfig says how a client reaches the concentrator over one uplink.
type DialConfig struct {
	Remote    netip.AddrPort
	Interface string     // device the socket is bound to; "" for none
	Source    netip.Addr // source address; invalid for any
	Mark      uint32     // firewall mark on the path's packets; 0 for none
	TLS       *tls.Config
}

// Dial opens a path: a QUIC connection from the uplink to the concentrator,
// then the control stream, on which it sends hello and waits for the
// welcome.
func Dial(ctx context.Context, cfg DialConfig, hello *Hello) (*Path, *Welcome, error) {
	udp, err := ListenUDP(cfg.Interface, cfg.Source, cfg.Mark)
	if err != nil {
		return nil, nil, err
	}
	pc := batching(udp, 1)
	tr := &quic.Transport{Conn: pc, ConnectionIDLength: connectionIDLength}
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(cfg.Remote), cfg.TLS, quicConfig(gateOf(pc)))
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, nil, err
	}
	p := newPath(conn)
	p.tr, p.udp, p.out = tr, pc, tr
	if p.direct, err = newDirectLane(conn.ConnectionState().TLS, true); err != nil {
		p.Close("no keys")
		return nil, nil, err
	}
	w, err := p.clientHandshake(ctx, hello)
	if err != nil {
		p.Close("handshake failed")
		return nil, nil, err
	}
	return p, w, nil
}

func (p *Path) clientHandshake(ctx context.Context, hello *Hello) (*Welcome, error) {
	state := p.conn.ConnectionState().TLS
	peer, err := peerKey(rawCerts(state))
	if err != nil {
		return nil, err
	}
	p.peer = peer
	if p.ctrl, err = p.conn.OpenStreamSync(ctx); err != nil {
		return nil, err
	}
	if err := p.WriteControl(&Message{Hello: hello}); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		p.ctrl.SetReadDeadline(dl)
		defer p.ctrl.SetReadDeadline(time.Time{})
	}
	m, err := p.ReadControl()
	if err != nil {
		return nil, fmt.Errorf("waiting for welcome: %w", err)
	}
	if m.Error != "" {
		return nil, fmt.Errorf("concentrator refused: %s", m.Error)
	}
	if m.Welcome == nil {
		return nil, fmt.Errorf("%w: expected welcome", ErrBadMessage)
	}
	return m.Welcome, nil
}

func rawCerts(s tls.ConnectionState) [][]byte {
	raw := make([][]byte, len(s.PeerCertificates))
	for i, c := range s.PeerCertificates {
		raw[i] = c.Raw
	}
	return raw
}

// Listener accepts paths on the concentrator.
type Listener struct {
	tr      *quic.Transport
	ln      *quic.Listener
	batcher net.PacketConn // the batching wrapper of a UDP socket, or nil
}

// Listen accepts paths on pc, authenticating clients with tlsConf.
// resetSecret seeds the stateless reset key (RFC 9000 §10.3): derived from
// a secret that survives restarts, it lets a restarted concentrator tell
// clients at once that their old connections are gone, so they redial
// instead of waiting for the idle timeout.
func Listen(pc net.PacketConn, tlsConf *tls.Config, resetSecret []byte) (*Listener, error) {
	limiter := rate.NewLimiter(handshakesPerSecond, handshakesPerSecond)
	resetKey := quic.StatelessResetKey(sha256.Sum256(append([]byte("braid stateless reset\x00"), resetSecret...)))
	var batcher net.PacketConn
	if udp, ok := pc.(*net.UDPConn); ok {
		batcher = batching(udp, runtime.GOMAXPROCS(0))
		pc = batcher
	}
	tr := &quic.Transport{
		Conn:                pc,
		ConnectionIDLength:  connectionIDLength,
		StatelessResetKey:   &resetKey,
		VerifySourceAddress: func(net.Addr) bool { return !limiter.Allow() },
	}
	ln, err := tr.Listen(tlsConf, quicConfig(gateOf(batcher)))
	if err != nil {
		if batcher != nil {
			batcher.Close()
		}
		return nil, err
	}
	return &Listener{tr: tr, ln: ln, batcher: batcher}, nil
}

// Accept returns the next authenticated connection. Its control stream is
// not open yet: call Handshake on it (in its own goroutine, so that one
// slow client cannot hold up the others).
func (l *Listener) Accept(ctx context.Context) (*Path, error) {
	conn, err := l.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	peer, err := peerKey(rawCerts(conn.ConnectionState().TLS))
	if err != nil {
		conn.CloseWithError(1, "bad certificate")
		return nil, err
	}
	p := newPath(conn)
	p.peer = peer
	p.out = l.tr
	if p.direct, err = newDirectLane(conn.ConnectionState().TLS, false); err != nil {
		conn.CloseWithError(1, "no keys")
		return nil, err
	}
	return p, nil
}

// Handshake waits for the client's control stream and its hello.
func (p *Path) Handshake(ctx context.Context) (*Hello, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	var err error
	if p.ctrl, err = p.conn.AcceptStream(ctx); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	p.ctrl.SetReadDeadline(dl)
	defer p.ctrl.SetReadDeadline(time.Time{})
	m, err := p.ReadControl()
	if err != nil {
		return nil, err
	}
	if m.Hello == nil {
		return nil, fmt.Errorf("%w: expected hello", ErrBadMessage)
	}
	return m.Hello, nil
}

// Addr is the listener's UDP address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting and closes every connection. A UDP socket given
// to Listen is closed too (its batching writer must stop with it).
func (l *Listener) Close() error {
	err := errors.Join(l.ln.Close(), l.tr.Close())
	if l.batcher != nil {
		err = errors.Join(err, l.batcher.Close())
	}
	return err
}
