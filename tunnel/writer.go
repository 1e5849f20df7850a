package tunnel

import (
	"context"
	"log/slog"

	"golang.zx2c4.com/wireguard/tun"
)

// writerQueueLen bounds packets waiting for the TUN writer: two batches,
// so receivers keep filling one while the writer writes the other. The
// receivers block when it is full, which leaves the drop to quic-go's
// receive queue (counted by QUIC as loss) rather than to ours.
const writerQueueLen = 256

// tunWriter is the one goroutine that writes to the TUN device, in batches
// so the device can coalesce them (GRO).
type tunWriter struct {
	dev      tun.Device
	queue    chan packetRef
	done     chan struct{} // closed when run returns
	counters *Counters
	log      *slog.Logger
}

func newTunWriter(dev tun.Device, c *Counters, log *slog.Logger) *tunWriter {
	return &tunWriter{dev: dev, queue: make(chan packetRef, writerQueueLen), done: make(chan struct{}), counters: c, log: log}
}

// write hands p to the writer, waiting while the queue is full. It
// returns false (and frees p) once ctx is done.
func (w *tunWriter) write(ctx context.Context, p packetRef) bool {
	select {
	case w.queue <- p:
		return true
	case <-ctx.Done():
		putBuffer(p.buf)
		return false
	}
}

// put hands p to the writer, waiting while the queue is full, until the
// writer stops.
func (w *tunWriter) put(p packetRef) {
	select {
	case w.queue <- p:
	case <-w.done:
		putBuffer(p.buf)
	}
}

// tryWrite hands p to the writer if there is room, else frees it and
// reports false: for the TUN reader, which must never block.
func (w *tunWriter) tryWrite(p packetRef) bool {
	select {
	case w.queue <- p:
		return true
	default:
		putBuffer(p.buf)
		return false
	}
}

// writeCopy copies pkt into a pooled buffer and hands it to the writer.
// The buffer is a large one, so the TUN can coalesce what follows into it.
func (w *tunWriter) writeCopy(ctx context.Context, pkt []byte) {
	buf := getLarge()
	n := copy(buf.b[headroom:], pkt)
	w.write(ctx, packetRef{buf: buf, n: n})
}

// run writes batches until ctx is done.
func (w *tunWriter) run(ctx context.Context) {
	defer close(w.done)
	batch := max(w.dev.BatchSize(), 1) * 4
	refs := make([]packetRef, 0, batch)
	bufs := make([][]byte, 0, batch)
	for {
		refs = refs[:0]
		select {
		case p := <-w.queue:
			refs = append(refs, p)
		case <-ctx.Done():
			return
		}
	fill:
		for len(refs) < batch {
			select {
			case p := <-w.queue:
				refs = append(refs, p)
			default:
				break fill
			}
		}
		bufs = bufs[:0]
		for _, p := range refs {
			bufs = append(bufs, p.buf.b[:headroom+p.n])
		}
		if _, err := w.dev.Write(bufs, headroom); err != nil {
			w.log.Debug("tun write", "err", err)
		}
		w.counters.TunTxPackets.Add(uint64(len(refs)))
		for i, p := range refs {
			putBuffer(p.buf)
			refs[i] = packetRef{}
		}
	}
}
