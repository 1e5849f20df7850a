package tunnel

import (
	"sync"

	"github.com/braid-tunnel/braid/transport"
)

const (
	// headroom is reserved in front of every packet: the braid header goes
	// there on send (transport.HeaderLen), and the TUN's virtio-net header
	// (10 bytes) on read and write, so a packet is never moved.
	headroom = 16
	// smallSize holds one packet of any MTU a path carries (QUIC packets
	// stop at 1452 bytes on a 1500-byte link): the buffers of packets read
	// from the TUN and waiting in path queues, which are many.
	smallSize = 2048
	// largeSize holds the largest packet the TUN can coalesce (GRO) on
	// write: the buffers of packets on their way into the TUN, and of
	// reads when the TUN's MTU exceeds a small buffer.
	largeSize = headroom + 65535
)

// buffer holds one packet at b[headroom:headroom+n].
type buffer struct {
	b []byte
	// queued is when the packet was offered to a path's queue (monotime;
	// a wait for room counts), for the delay the sender's CoDel measures.
	queued int64
}

var (
	smallBuffers = sync.Pool{New: func() any { return &buffer{b: make([]byte, smallSize)} }}
	largeBuffers = sync.Pool{New: func() any { return &buffer{b: make([]byte, largeSize)} }}
)

// getBuffer returns a buffer that holds a packet of n bytes.
func getBuffer(n int) *buffer {
	if headroom+n <= smallSize {
		return smallBuffers.Get().(*buffer)
	}
	return largeBuffers.Get().(*buffer)
}

// getLarge returns a buffer the TUN can coalesce packets into.
func getLarge() *buffer { return largeBuffers.Get().(*buffer) }

func putBuffer(b *buffer) {
	if len(b.b) == smallSize {
		smallBuffers.Put(b)
	} else {
		largeBuffers.Put(b)
	}
}

// packetRef is a packet in a pooled buffer, passed by value through the
// queues: whoever receives it owns the buffer and returns it to the pool.
type packetRef struct {
	buf *buffer
	n   int // packet length after headroom
}

// packet is the inner IP packet.
func (p packetRef) packet() []byte { return p.buf.b[headroom : headroom+p.n] }

// seq is the sequence number in the braid header in front of the packet.
func (p packetRef) seq() uint64 {
	_, seq, _, _ := transport.ParseHeader(p.datagram())
	return seq
}

// datagram is the packet with the braid header in front of it.
func (p packetRef) datagram() []byte { return p.buf.b[headroom-transport.HeaderLen : headroom+p.n] }
