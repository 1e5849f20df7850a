package tunnel

import "sync"

const (
	// headroom is reserved in front of every packet: the braid header goes
	// there on send (transport.HeaderLen), and the TUN's virtio-net header
	// (10 bytes) on read and write, so a packet is never moved.
	headroom = 16
	// bufSize holds the largest packet the TUN can coalesce (GRO) on write.
	bufSize = headroom + 65535
)

// buffer holds one packet at b[headroom:headroom+n].
type buffer struct {
	b [bufSize]byte
}

var buffers = sync.Pool{New: func() any { return new(buffer) }}

func getBuffer() *buffer  { return buffers.Get().(*buffer) }
func putBuffer(b *buffer) { buffers.Put(b) }

// packetRef is a packet in a pooled buffer, passed by value through the
// queues: whoever receives it owns the buffer and returns it to the pool.
type packetRef struct {
	buf *buffer
	n   int // packet length after headroom
}

// packet is the inner IP packet.
func (p packetRef) packet() []byte { return p.buf.b[headroom : headroom+p.n] }

// datagram is the packet with the braid header in front of it.
func (p packetRef) datagram() []byte { return p.buf.b[headroom-8 : headroom+p.n] }
