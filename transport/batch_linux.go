package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// batchConn is a path's UDP socket as quic-go sees it: the socket itself for
// everything but reading and writing packets, which it batches.
//
// quic-go writes one packet per call, and on the datagram path each call is
// a sendmsg of its own (~11 µs here, half of the client's CPU: shared
// PERF-NOTES). batchConn copies each packet into a batch and returns; one
// writer goroutine sends the batch in one sendmmsg, with runs of equal-size
// packets to the same address coalesced into UDP GSO messages. While the
// writer is in its syscall the next batch fills, so batches grow with the
// load and an idle path sends each packet at once.
//
// On the receiving side it turns on UDP GRO and splits what the kernel
// coalesced into the single packets quic-go reads (quic-go asks for them
// through ReadBatch, which batchConn implements).
type batchConn struct {
	*net.UDPConn
	xc *ipv4.PacketConn // sendmmsg and recvmmsg on the socket

	mu      sync.Mutex
	taken   sync.Cond  // signalled when the writer takes the filling batch
	filling *sendBatch // the writer holds the other one
	closed  bool
	wake    chan struct{} // capacity 1: work for the writer
	done    chan struct{} // closed when the writer has exited

	gso atomic.Bool // UDP GSO works on this socket

	rx   rxState // owned by the goroutine calling ReadBatch (quic-go's reader)
	gate *rxGate // holds ReadBatch back while receivers are behind

	// SendCalls and SentPackets count sendmmsg calls and packets sent, for
	// tests and statistics; sendFailed the messages the kernel refused,
	// which are dropped (and logged: see send).
	sendCalls, sentPackets, sendFailed atomic.Uint64

	// direct holds the direct datagrams read (see divert) until
	// readDirect takes them, in shards by lane ID so that several
	// goroutines can take a concentrator's, each path's in order;
	// directDropped counts those that found their shard full.
	direct        []chan *directPacket
	directDropped atomic.Uint64
	divertTimer   *time.Timer // bounds divert's wait; owned by the reader
}

// Bounds of a batch. maxBatchPackets is the UDP GSO segment limit of
// Linux (UDP_MAX_SEGMENTS) and a batch's arena holds that many packets of
// the largest size quic-go sends; a writer that fills a batch waits for
// the previous one to be sent, which is the backpressure quic-go's own
// send queue then sees.
const (
	maxBatchPackets = 64
	maxPacketSize   = 1500 // quic-go never sends more than a 1500-byte MTU allows
	maxGSOBytes     = 65000
	maxOOB          = 128 // packet info + ECN control messages
)

// sendBatch is a set of packets copied from quic-go, in the order written.
type sendBatch struct {
	arena []byte // packets back to back
	pkts  []pkt
	oob   []byte // control messages back to back

	// Scratch for sending, reused.
	msgs   []ipv4.Message
	bufs   [][]byte
	msgOOB [maxBatchPackets][maxOOB + 16]byte
}

type pkt struct {
	off, n       int // in arena
	oobOff, oobN int // in oob
	addr         *net.UDPAddr
}

func newSendBatch() *sendBatch {
	return &sendBatch{
		arena: make([]byte, 0, maxBatchPackets*maxPacketSize),
		pkts:  make([]pkt, 0, maxBatchPackets),
		oob:   make([]byte, 0, maxBatchPackets*maxOOB),
		msgs:  make([]ipv4.Message, maxBatchPackets),
		bufs:  make([][]byte, maxBatchPackets),
	}
}

func (b *sendBatch) full(n, oobn int) bool {
	return len(b.pkts) == maxBatchPackets || len(b.arena)+n > cap(b.arena) || len(b.oob)+oobn > cap(b.oob)
}

func (b *sendBatch) add(p []byte, oob1, oob2 []byte, addr *net.UDPAddr) {
	b.pkts = append(b.pkts, pkt{off: len(b.arena), n: len(p), oobOff: len(b.oob), oobN: len(oob1) + len(oob2), addr: addr})
	b.arena = append(b.arena, p...)
	b.oob = append(b.oob, oob1...)
	b.oob = append(b.oob, oob2...)
}

func (b *sendBatch) reset() {
	b.arena, b.pkts, b.oob = b.arena[:0], b.pkts[:0], b.oob[:0]
	clear(b.bufs)
	for i := range b.msgs {
		b.msgs[i] = ipv4.Message{}
	}
}

func (b *sendBatch) data(p *pkt) []byte    { return b.arena[p.off : p.off+p.n] }
func (b *sendBatch) control(p *pkt) []byte { return b.oob[p.oobOff : p.oobOff+p.oobN] }

// sameFlow reports whether q can follow p in one GSO message: same address
// and the same control messages.
func (b *sendBatch) sameFlow(p, q *pkt) bool {
	sameAddr := p.addr == q.addr || (p.addr.IP.Equal(q.addr.IP) && p.addr.Port == q.addr.Port)
	return sameAddr && bytes.Equal(b.control(p), b.control(q))
}

// messages turns the batch into sendmmsg messages: each run of packets with
// the same address and control messages, all of one size but the last
// which may be shorter, becomes one GSO message (UDP_SEGMENT). The packets
// of a run are adjacent in the arena, so a message is a slice of it.
func (b *sendBatch) messages(gso bool) []ipv4.Message {
	msgs := b.msgs[:0]
	for i := 0; i < len(b.pkts); {
		first := &b.pkts[i]
		j, size := i+1, first.n
		for gso && j < len(b.pkts) {
			q := &b.pkts[j]
			if !b.sameFlow(first, q) || q.n > size || (j-i+1)*size > maxGSOBytes || b.pkts[j-1].n != size {
				break
			}
			j++
		}
		end := b.pkts[j-1].off + b.pkts[j-1].n
		m := len(msgs)
		oob := append(b.msgOOB[m][:0], b.control(first)...)
		if j-i > 1 {
			oob = appendSegmentSize(oob, uint16(size))
		}
		b.bufs[m] = b.arena[first.off:end]
		msgs = append(msgs, ipv4.Message{Buffers: b.bufs[m : m+1], OOB: oob, Addr: first.addr})
		i = j
	}
	return msgs
}

// newBatchConn wraps c; start starts its writer.
func newBatchConn(c *net.UDPConn, shards int) *batchConn {
	bc := &batchConn{
		UDPConn: c,
		xc:      ipv4.NewPacketConn(c),
		filling: newSendBatch(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		gate:    newRxGate(),
		direct:  make([]chan *directPacket, max(shards, 1)),
	}
	for i := range bc.direct {
		bc.direct[i] = make(chan *directPacket, directQueueLen)
	}
	bc.taken.L = &bc.mu
	bc.gso.Store(supportsGSO(c))
	bc.rx.init(c)
	return bc
}

// start starts the writer; newBatchConn's caller does, once.
func (c *batchConn) start() *batchConn {
	go c.writer()
	return c
}

// WriteMsgUDP queues one packet (or a GSO batch of them, split into its
// packets) and returns. Errors of the send itself are not reported to the
// caller: a lost UDP packet is QUIC's to recover.
func (c *batchConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	before, after, seg := stripSegmentSize(oob)
	if seg == 0 || seg >= len(b) {
		return len(b), len(oob), c.queue(b, before, after, addr)
	}
	for p := b; len(p) > 0; {
		k := min(seg, len(p))
		if err := c.queue(p[:k], before, after, addr); err != nil {
			return 0, 0, err
		}
		p = p[k:]
	}
	return len(b), len(oob), nil
}

// WriteTo is WriteMsgUDP without control messages.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.InvalidAddrError("not a UDP address")}
	}
	n, _, err := c.WriteMsgUDP(b, nil, ua)
	return n, err
}

// queue adds packet b, whose control messages are oob1 followed by oob2.
func (c *batchConn) queue(b, oob1, oob2 []byte, addr *net.UDPAddr) error {
	if len(b) > maxPacketSize || len(oob1)+len(oob2) > maxOOB {
		// Never happens with quic-go; send it on its own rather than fail.
		_, _, err := c.UDPConn.WriteMsgUDP(b, append(slices.Clip(oob1), oob2...), addr)
		return err
	}
	c.mu.Lock()
	for !c.closed && c.filling.full(len(b), len(oob1)+len(oob2)) {
		c.taken.Wait()
	}
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.filling.add(b, oob1, oob2, addr)
	select {
	case c.wake <- struct{}{}:
	default: // the writer has a wake-up pending
	}
	c.mu.Unlock()
	return nil
}

// writer owns the socket's sending: it takes the filling batch, puts its
// spare one in its place, and sends.
func (c *batchConn) writer() {
	defer close(c.done)
	spare := newSendBatch()
	for range c.wake {
		for {
			c.mu.Lock()
			b := c.filling
			if len(b.pkts) == 0 {
				c.mu.Unlock()
				break
			}
			c.filling = spare
			c.taken.Broadcast()
			c.mu.Unlock()

			c.send(b)
			b.reset()
			spare = b
		}
	}
}

// send writes the batch with as few sendmmsg calls as the kernel allows.
func (c *batchConn) send(b *sendBatch) {
	msgs := b.messages(c.gso.Load())
	for len(msgs) > 0 {
		n, err := c.xc.WriteBatch(msgs, 0)
		c.sendCalls.Add(1)
		if err != nil {
			if c.gso.Load() && errors.Is(err, unix.EIO) {
				// The device cannot checksum GSO packets: send singly from now on.
				slog.Warn("UDP GSO failed, sending packets singly", "local", c.LocalAddr(), "err", err)
				c.gso.Store(false)
				msgs = b.messages(false)
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// As a kernel drops a packet it cannot send: skip the
			// message that failed and send the rest. Logged, the 1st,
			// 2nd, 4th... time, since nothing else would show the loss.
			if k := c.sendFailed.Add(1); k&(k-1) == 0 {
				slog.Warn("UDP send failed: packet dropped", "local", c.LocalAddr(), "to", msgs[0].Addr, "err", err, "failures", k)
			}
			n = 1
		}
		for i := range msgs[:n] {
			c.sentPackets.Add(uint64(segments(&msgs[i])))
		}
		msgs = msgs[n:]
	}
}

// segments is the number of packets in a message.
func segments(m *ipv4.Message) int {
	_, _, seg := stripSegmentSize(m.OOB)
	if seg == 0 {
		return 1
	}
	return (len(m.Buffers[0]) + seg - 1) / seg
}

// Close stops the writer after it sent what was queued, then closes the
// socket.
func (c *batchConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.UDPConn.Close()
	}
	c.closed = true
	c.taken.Broadcast()
	close(c.wake) // under mu: queue sends on it only under mu, before closed
	c.mu.Unlock()
	// Let the writer send what was queued (a CONNECTION_CLOSE, say), but
	// not wait on a socket that cannot send: closing it ends the writer.
	select {
	case <-c.done:
	case <-time.After(closeLinger):
	}
	err := c.UDPConn.Close()
	<-c.done
	return err
}

// closeLinger bounds how long Close waits for queued packets to be sent.
const closeLinger = 100 * time.Millisecond

// supportsGSO reports whether the kernel does UDP GSO on c's socket.
func supportsGSO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false
	}
	return serr == nil
}

// appendSegmentSize appends a UDP_SEGMENT control message.
func appendSegmentSize(b []byte, size uint16) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[start+unix.CmsgSpace(0):], size)
	return b
}

// stripSegmentSize splits oob around its UDP_SEGMENT control message, if
// it has one, and returns the segment size it named (0 for none, and then
// all of oob in before). quic-go writes UDP_SEGMENT before the ECN message,
// so it is not always the last one; control messages are aligned blocks,
// so before and after together are oob without it.
func stripSegmentSize(oob []byte) (before, after []byte, seg int) {
	for rest := oob; len(rest) > 0; {
		h, body, next, err := unix.ParseOneSocketControlMessage(rest)
		if err != nil {
			return oob, nil, 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_SEGMENT && len(body) >= 2 {
			return oob[:len(oob)-len(rest)], next, int(binary.NativeEndian.Uint16(body))
		}
		rest = next
	}
	return oob, nil, 0
}

// Receive side. rxMessages bounds one recvmmsg: quic-go reads 8 packets at
// a time, and with GRO each message may hold up to 64 KiB of coalesced
// packets, so 8 messages of 64 KiB (512 KiB per socket) read a burst of
// several hundred packets in one syscall.
const (
	rxMessages = 8
	rxBufSize  = 1 << 16
	rxOOBSize  = 256
)

// rxState holds what the last recvmmsg returned until quic-go has read
// every packet in it. It is owned by the one goroutine calling ReadBatch.
type rxState struct {
	gro  bool
	msgs []ipv4.Message
	n    int // messages filled by the last recvmmsg
	i    int // the message being split
	off  int // offset of its next packet
	seg  int // its segment size: 0 if it is one packet
}

func (r *rxState) init(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return // without GRO, ReadBatch reads into quic-go's buffers directly
	}
	r.gro = true
	r.msgs = make([]ipv4.Message, rxMessages)
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, rxBufSize)}
		r.msgs[i].OOB = make([]byte, rxOOBSize)
	}
}

// ReadBatch fills ms with received packets, splitting the ones the kernel
// coalesced. quic-go calls it in place of recvmmsg.
func (c *batchConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	// Let the goroutines that consume what was read so far run first.
	// quic-go's reader hands packets to the connection's run loop, which
	// puts their datagrams into a queue of 128 that braid's receiver
	// drains; a reader that keeps the processor reads hundreds of packets
	// ahead and the run loop then overflows that queue before the
	// receiver is scheduled (measured: 10-15% of datagrams discarded
	// under a bulk TCP flow, about 5% with this yield).
	runtime.Gosched()
	// And wait while a connection's datagrams pile up unread (rxGate).
	c.gate.wait()
	r := &c.rx
	if !r.gro {
		for {
			n, err := c.xc.ReadBatch(ms, flags)
			if err != nil {
				c.gate.read(n)
				return n, err
			}
			if n = c.keepQUIC(ms[:n]); n > 0 {
				c.gate.read(n)
				return n, nil
			}
		}
	}
	for {
		if r.i >= r.n {
			n, err := c.xc.ReadBatch(r.msgs, flags)
			if err != nil {
				return 0, err
			}
			r.n, r.i, r.off = n, 0, 0
			r.seg = groSize(&r.msgs[0])
		}
		// Direct datagrams are taken out up to the first QUIC packet ms
		// has no room for, not left for the next read: quic-go makes it
		// after handing these packets on, and the gate may hold it.
		k := 0
		for r.i < r.n {
			m := &r.msgs[r.i]
			size := m.N - r.off
			if r.seg > 0 {
				size = min(size, r.seg)
			}
			b := m.Buffers[0][r.off : r.off+size]
			id, direct := DirectID(b)
			if !direct && k == len(ms) {
				break
			}
			if direct {
				c.divert(b, id)
			} else {
				d := &ms[k]
				d.N = copy(d.Buffers[0], b)
				d.NN = copy(d.OOB, m.OOB[:m.NN])
				d.Flags, d.Addr = m.Flags, m.Addr
				k++
			}
			if r.off += size; r.off >= m.N {
				r.i, r.off = r.i+1, 0
				if r.i < r.n {
					r.seg = groSize(&r.msgs[r.i])
				}
			}
		}
		// quic-go takes a read of no packets for a packet: read on
		// until there is one.
		if k > 0 {
			c.gate.read(k)
			return k, nil
		}
	}
}

// Direct datagrams (direct.go) are taken out of what the socket reads
// before quic-go sees them: quic-go keeps at most 32 packets that are not
// QUIC for Transport.ReadNonQUICPacket and drops the rest, and one
// recvmmsg reads hundreds. Measured on loopback: of a burst of 116 direct
// datagrams, 30 arrived through quic-go's queue.
//
// directQueueLen bounds the direct datagrams of a shard read and not yet
// taken: one recvmmsg reads up to 8 messages of 64 KiB of coalesced
// packets, about 350 full-size datagrams.
const directQueueLen = 512

type directPacket struct {
	b [maxPacketSize]byte
	n int
}

var directPackets = sync.Pool{New: func() any { return new(directPacket) }}

// divert queues a copy of the direct datagram b, of lane id, for readDirect. While the
// shard is full it waits, as the reader gate does and as long at a time
// (gateMaxWait): the kernel's socket buffer holds what arrives meanwhile.
// Measured on one unshaped path: dropping at once lost 6-16% of the
// direct datagrams of bulk TCP transfers.
func (c *batchConn) divert(b []byte, id uint64) {
	p := directPackets.Get().(*directPacket)
	p.n = copy(p.b[:], b)
	ch := c.direct[id%uint64(len(c.direct))]
	select {
	case ch <- p:
		return
	default:
	}
	if c.divertTimer == nil {
		c.divertTimer = time.NewTimer(gateMaxWait)
	} else {
		c.divertTimer.Reset(gateMaxWait)
	}
	select {
	case ch <- p:
		c.divertTimer.Stop()
	case <-c.divertTimer.C:
		directPackets.Put(p)
		c.directDropped.Add(1)
	}
}

// keepQUIC takes the direct datagrams out of ms, moving the packets after
// each down in its place, and returns how many are left.
func (c *batchConn) keepQUIC(ms []ipv4.Message) int {
	k := 0
	for i := range ms {
		m := &ms[i]
		if id, direct := DirectID(m.Buffers[0][:m.N]); direct {
			c.divert(m.Buffers[0][:m.N], id)
			continue
		}
		if k != i {
			d := &ms[k]
			d.N = copy(d.Buffers[0], m.Buffers[0][:m.N])
			d.NN = copy(d.OOB, m.OOB[:m.NN])
			d.Flags, d.Addr = m.Flags, m.Addr
		}
		k++
	}
	return k
}

// readDirect returns the next direct datagram of a shard, copied into b.
func (c *batchConn) readDirect(ctx context.Context, shard int, b []byte) (int, error) {
	select {
	case p := <-c.direct[shard]:
		n := copy(b, p.b[:p.n])
		directPackets.Put(p)
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.done:
		return 0, net.ErrClosed
	}
}

// droppedDirect counts the direct datagrams that found the queue full.
func (c *batchConn) droppedDirect() uint64 { return c.directDropped.Load() }

// directShards is how many shards direct datagrams are read from.
func (c *batchConn) directShards() int { return len(c.direct) }

// groSize returns the segment size of a message the kernel coalesced
// (UDP_GRO control message), or 0.
func groSize(m *ipv4.Message) int {
	for rest := m.OOB[:m.NN]; len(rest) > 0; {
		h, body, next, err := unix.ParseOneSocketControlMessage(rest)
		if err != nil {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(body) >= 4 {
			return int(binary.NativeEndian.Uint32(body))
		}
		rest = next
	}
	return 0
}

// batching returns the socket quic-go should use for c: c with batched
// writes and coalesced reads, and its direct datagrams in shards.
func batching(c *net.UDPConn, shards int) net.PacketConn { return newBatchConn(c, shards).start() }

// gateOf returns the reader gate of a socket batching returned, or nil.
func gateOf(pc net.PacketConn) *rxGate {
	if c, ok := pc.(*batchConn); ok {
		return c.gate
	}
	return nil
}
