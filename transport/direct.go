package transport

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// Direct datagrams carry braid datagrams beside QUIC rather than inside it:
// on the path's own UDP socket, to the same address, sealed with keys
// that the path's TLS handshake exported (RFC 8446 §7.5).
//
// Every QUIC datagram waits for room in QUIC's congestion window, and on a
// lossy path that window stays small whatever the path's capacity: with
// 3% random loss, quic-go's NewReno settles near 1.22/sqrt(p) packets,
// measured at 11-15 KB over a 122 ms round trip, a third of what a call of
// 1000 packets a second needs. After the other path of a redundant call
// was cut, 15-39% of the call was lost waiting for room on the survivor,
// which had capacity to spare. A packet of a redundant class is protected
// by its copies rather than by retransmission, and its application sends
// at its own pace (a call, a game), which is how WireGuard and other
// bonding tools carry all traffic. So braid sends redundant packets
// direct, within a rate per session (see the tunnel package) beyond which
// they go through QUIC and its congestion control again.
//
// A direct datagram is:
//
//	byte 0      directMarker
//	bytes 1-8   lane ID: the path it belongs to (a concentrator's socket is shared)
//	bytes 9-16  counter, never repeated under one key
//	bytes 17-   the braid datagram (header and packet) sealed with
//	            AES-256-GCM: bytes 5-16 are the nonce, bytes 0-16 the
//	            additional data; 16-byte tag
//
// The keys and the lane ID are exported from the path's TLS session, so
// they are new for every connection and only its two ends know them. A
// replayed datagram carries a sequence number that the session's
// duplicate filter has seen, or that is too old for it, and is dropped as
// a late copy is.
const (
	// directMarker clears QUIC's fixed bit (0x40) and long header bit
	// (0x80), which every QUIC version 1 packet sets (RFC 9000 §17), so
	// quic-go hands the packet to Transport.ReadNonQUICPacket.
	directMarker    = 0x01
	directHeaderLen = 1 + 8 + 8
	directTagLen    = 16
	// DirectOverhead is what a direct datagram adds to the braid datagram
	// it carries: less than QUIC does (short header with 17-byte
	// connection IDs, packet number, DATAGRAM frame header and AEAD tag:
	// 37 bytes or more), so what fits in a path's QUIC datagram fits in a
	// direct one.
	DirectOverhead = directHeaderLen + directTagLen
	// directLabel names braid's keys among the TLS exporter's (labels
	// beginning "EXPORTER" are for private use, RFC 5705 §4).
	directLabel = "EXPORTER-braid direct datagrams"
)

// ErrBadDirect is returned for a datagram that is not a direct datagram of
// the path, or does not authenticate.
var ErrBadDirect = errors.New("transport: not a direct datagram of this path")

// directLane is one path's direct datagram keys.
type directLane struct {
	id     uint64
	keys   [64]byte // client to concentrator, then concentrator to client
	client bool

	// The ciphers are made on first use: most paths of a concentrator
	// never carry a redundant class, and two AES-GCM ciphers cost about
	// 1 KiB.
	once       sync.Once
	sealer     cipher.AEAD
	opener     cipher.AEAD
	nextNonce  atomic.Uint64
	sent, recv atomic.Uint64 // direct datagrams sent and accepted
}

// newDirectLane exports the keys of a connection's direct datagrams.
func newDirectLane(state tls.ConnectionState, client bool) (*directLane, error) {
	m, err := state.ExportKeyingMaterial(directLabel, nil, 64+8)
	if err != nil {
		return nil, err
	}
	d := &directLane{id: binary.BigEndian.Uint64(m[64:]), client: client}
	copy(d.keys[:], m)
	clear(m)
	return d, nil
}

func (d *directLane) init() {
	d.once.Do(func() {
		up, down := newGCM(d.keys[:32]), newGCM(d.keys[32:])
		d.sealer, d.opener = down, up
		if d.client {
			d.sealer, d.opener = up, down
		}
	})
}

// newGCM returns AES-256-GCM; it cannot fail for a 32-byte key.
func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

// seal appends the direct datagram carrying b to dst. The nonce is the
// header's last 12 bytes: the lane ID's last 4 and the counter, which
// alone makes it unique under the key.
func (d *directLane) seal(dst, b []byte) []byte {
	d.init()
	start := len(dst)
	dst = append(dst, directMarker)
	dst = binary.BigEndian.AppendUint64(dst, d.id)
	dst = binary.BigEndian.AppendUint64(dst, d.nextNonce.Add(1))
	hdr := dst[start:]
	return d.sealer.Seal(dst, hdr[directHeaderLen-12:], b, hdr)
}

// open appends the braid datagram that the direct datagram b carries to
// dst.
func (d *directLane) open(dst, b []byte) ([]byte, error) {
	if id, ok := DirectID(b); !ok || id != d.id {
		return nil, ErrBadDirect
	}
	d.init()
	hdr := b[:directHeaderLen]
	out, err := d.opener.Open(dst, hdr[directHeaderLen-12:], b[directHeaderLen:], hdr)
	if err != nil {
		return nil, ErrBadDirect
	}
	return out, nil
}

// DirectID returns the lane ID of a direct datagram; false if b cannot be
// one.
func DirectID(b []byte) (uint64, bool) {
	if len(b) < DirectOverhead || b[0] != directMarker {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[1:9]), true
}

// DirectID is the ID of the path's direct datagrams, which the
// concentrator looks them up by.
func (p *Path) DirectID() uint64 { return p.direct.id }

// SendDirect sends b, a braid datagram, as a direct datagram, built in
// scratch (which needs room for len(b)+DirectOverhead bytes to spare no
// allocation). It may be called concurrently with everything else.
func (p *Path) SendDirect(b, scratch []byte) error {
	out := p.direct.seal(scratch[:0], b)
	if _, err := p.out.WriteTo(out, p.conn.RemoteAddr()); err != nil {
		return err
	}
	p.direct.sent.Add(1)
	return nil
}

// OpenDirect appends to dst the braid datagram that the direct datagram b
// carries. It fails with ErrBadDirect for one that is not the path's.
// Not safe for concurrent use with itself: one goroutine receives.
func (p *Path) OpenDirect(dst, b []byte) ([]byte, error) {
	out, err := p.direct.open(dst, b)
	if err == nil {
		p.direct.recv.Add(1)
	}
	return out, err
}

// DirectCounts returns the direct datagrams the path sent and accepted.
func (p *Path) DirectCounts() (sent, received uint64) {
	return p.direct.sent.Load(), p.direct.recv.Load()
}

// ReadDirect reads the next packet that arrived on a client path's socket
// and may be a direct datagram, if OpenDirect accepts it.
func (p *Path) ReadDirect(ctx context.Context, b []byte) (int, error) {
	if p.tr == nil {
		return 0, errors.New("transport: ReadDirect on a concentrator's path (use the Listener's)")
	}
	return readDirect(ctx, p.tr, p.udp, 0, b)
}

// ReadDirect reads the next packet of a shard (0 up to DirectShards) that
// arrived on the listener's socket and may be a direct datagram; DirectID
// says which path it claims to belong to. The datagrams of a path are all
// in one shard, so one goroutine per shard reads each path's in order.
func (l *Listener) ReadDirect(ctx context.Context, shard int, b []byte) (int, error) {
	return readDirect(ctx, l.tr, l.batcher, shard, b)
}

// DirectShards is how many shards the listener reads direct datagrams
// from: as many as there are processors, since decrypting and delivering
// them is work for all.
func (l *Listener) DirectShards() int {
	if d, ok := l.batcher.(directSource); ok {
		return d.directShards()
	}
	return 1
}

// DirectDropped counts the direct datagrams that arrived on the path's
// socket (a client's) or the listener's while too many waited to be read.
func (p *Path) DirectDropped() uint64     { return droppedDirect(p.udp) }
func (l *Listener) DirectDropped() uint64 { return droppedDirect(l.batcher) }

// directSource is a socket that takes direct datagrams out of what it
// reads (batchConn, on Linux).
type directSource interface {
	readDirect(ctx context.Context, shard int, b []byte) (int, error)
	droppedDirect() uint64
	directShards() int
}

func readDirect(ctx context.Context, tr *quic.Transport, pc net.PacketConn, shard int, b []byte) (int, error) {
	if d, ok := pc.(directSource); ok {
		return d.readDirect(ctx, shard, b)
	}
	n, _, err := tr.ReadNonQUICPacket(ctx, b)
	return n, err
}

func droppedDirect(pc net.PacketConn) uint64 {
	if d, ok := pc.(directSource); ok {
		return d.droppedDirect()
	}
	return 0
}
