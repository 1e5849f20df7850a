package tunnel

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.zx2c4.com/wireguard/tun"
)

// batchTUN is a device whose reads return the batches it was given, one
// per Read, then os.ErrClosed.
type batchTUN struct {
	tun.Device // only the methods below are called
	batches    [][][]byte
}

func (d *batchTUN) BatchSize() int    { return 4 }
func (d *batchTUN) MTU() (int, error) { return 1500, nil }
func (d *batchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(d.batches) == 0 {
		return 0, os.ErrClosed
	}
	b := d.batches[0]
	d.batches = d.batches[1:]
	for i, p := range b {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(b), nil
}

// TestReadTUNCallsBatch: readTUN announces each batch it read before
// handing over its packets, so that the concentrator's reader renews its
// wait budget once per batch, not once per packet.
func TestReadTUNCallsBatch(t *testing.T) {
	src, dst := netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("10.210.0.2")
	pkt := udp4(src, dst, 100, true)
	dev := &batchTUN{batches: [][][]byte{{pkt, pkt, pkt}, {pkt}, {pkt, pkt}}}
	var events []string
	var c Counters
	err := readTUN(dev, &c, func() { events = append(events, "batch") }, func(p packetRef, _ *packet.Info) {
		events = append(events, "packet")
		putBuffer(p.buf)
	})
	if err == nil {
		t.Fatal("readTUN returned no error for a closed device")
	}
	want := []string{"batch", "packet", "packet", "packet", "batch", "packet", "batch", "packet", "packet"}
	if !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
}
