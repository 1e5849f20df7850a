package transport

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
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
// they go through QUIC and its congestion control again. A client with
// one uplink sends everything direct: no choice among paths needs QUIC's
// congestion state then, and QUIC's per-packet work and second congestion
// control held one TCP flow to 0.72-0.83 of WireGuard's goodput (1.4-1.5
// direct).
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
	// (0x80), which every QUIC version 1 packet sets (RFC 9000 §17):
	// batchConn takes such packets out before quic-go reads (elsewhere
	// quic-go hands them to Transport.ReadNonQUICPacket).
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

// directEpochBits says how often a lane's keys change: every 2^24
// datagrams in each direction, the counter's higher bits being the key's
// epoch. AES-GCM's confidentiality holds for about 2^36 blocks under one
// key (RFC 9001 §6.6 and its Appendix B), 7·10^8 full-size datagrams,
// which a busy path sends in under two hours; an epoch is a fortieth of
// that.
const directEpochBits = 24

// directLane is one path's direct datagram keys.
type directLane struct {
	id     uint64
	bases  [2][32]byte // secrets of the epochs' keys: client to concentrator, then back
	client bool

	nextNonce  atomic.Uint64
	sealer     atomic.Pointer[epochCipher] // the sending epoch's, made on first use
	sent, recv atomic.Uint64               // direct datagrams sent and accepted

	// The receiver's ciphers, of the last two epochs it saw; one
	// goroutine receives.
	openers [2]*epochCipher
}

// epochCipher is the AES-256-GCM cipher of one epoch of a direction.
type epochCipher struct {
	epoch uint64
	aead  cipher.AEAD
}

// newDirectLane exports the keys of a connection's direct datagrams.
func newDirectLane(state tls.ConnectionState, client bool) (*directLane, error) {
	m, err := state.ExportKeyingMaterial(directLabel, nil, 64+8)
	if err != nil {
		return nil, err
	}
	d := &directLane{id: binary.BigEndian.Uint64(m[64:]), client: client}
	copy(d.bases[0][:], m[:32])
	copy(d.bases[1][:], m[32:64])
	clear(m)
	return d, nil
}

// newEpochCipher makes the cipher of an epoch of direction dir (0 client
// to concentrator, 1 back): its key is HKDF-Expand (RFC 5869) of the
// direction's secret with the epoch.
func (d *directLane) newEpochCipher(dir int, epoch uint64) *epochCipher {
	key, err := hkdf.Expand(sha256.New, d.bases[dir][:], "braid direct epoch "+strconv.FormatUint(epoch, 10), 32)
	if err != nil {
		panic(err) // only for a length SHA-256 cannot give
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // only for a key that is not 16, 24 or 32 bytes
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err) // only for a block size that is not AES's
	}
	return &epochCipher{epoch: epoch, aead: g}
}

// dirs returns the directions d seals and opens.
func (d *directLane) dirs() (seal, open int) {
	if d.client {
		return 0, 1
	}
	return 1, 0
}

// seal appends the direct datagram carrying b to dst. The nonce is the
// header's last 12 bytes: the lane ID's last 4 and the counter, which
// alone makes it unique under the key. It may be called concurrently.
func (d *directLane) seal(dst, b []byte) []byte {
	n := d.nextNonce.Add(1)
	c := d.sealer.Load()
	if epoch := n >> directEpochBits; c == nil || c.epoch != epoch {
		dir, _ := d.dirs()
		c = d.newEpochCipher(dir, epoch)
		d.sealer.Store(c) // two sealers at the turn of an epoch make the same
	}
	start := len(dst)
	dst = append(dst, directMarker)
	dst = binary.BigEndian.AppendUint64(dst, d.id)
	dst = binary.BigEndian.AppendUint64(dst, n)
	hdr := dst[start:]
	return c.aead.Seal(dst, hdr[directHeaderLen-12:], b, hdr)
}

// open appends the braid datagram that the direct datagram b carries to
// dst. Only the epochs next to the last one seen are tried, so a forged
// counter costs no key derivation beyond one per epoch.
func (d *directLane) open(dst, b []byte) ([]byte, error) {
	if id, ok := DirectID(b); !ok || id != d.id {
		return nil, ErrBadDirect
	}
	hdr := b[:directHeaderLen]
	epoch := binary.BigEndian.Uint64(hdr[9:]) >> directEpochBits
	c, fresh := d.opener(epoch)
	if c == nil {
		return nil, ErrBadDirect
	}
	out, err := c.aead.Open(dst, hdr[directHeaderLen-12:], b[directHeaderLen:], hdr)
	if err != nil {
		return nil, ErrBadDirect
	}
	if fresh { // authenticated: keep its cipher, in place of the older one
		d.openers[1], d.openers[0] = d.openers[0], c
	}
	return out, nil
}

// opener returns the cipher of an epoch, and whether it is new: known, or
// the one after the latest known (or the first two, before any).
func (d *directLane) opener(epoch uint64) (c *epochCipher, fresh bool) {
	for _, c := range d.openers {
		if c != nil && c.epoch == epoch {
			return c, false
		}
	}
	if latest := d.openers[0]; latest != nil && epoch != latest.epoch+1 || latest == nil && epoch > 1 {
		return nil, false
	}
	_, dir := d.dirs()
	return d.newEpochCipher(dir, epoch), true
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
