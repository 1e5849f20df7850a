package tunnel

import (
	"slices"
	"testing"
)

// TestUrgentQueue: resends come out oldest first; what waited past the
// caller's limit is dropped and counted on the way; the queue is bounded,
// holds no memory once empty, and refuses packets once its link's sender
// is gone.
func TestUrgentQueue(t *testing.T) {
	u := newUrgentQueue()
	for seq := uint64(1); seq <= 4; seq++ {
		if !u.push(seqPacket(seq), int64(seq)*10) {
			t.Fatalf("push %d refused", seq)
		}
	}
	select {
	case <-u.ready:
	default:
		t.Error("not signalled after a push")
	}
	p, ok, expired := u.pop(25) // 1 and 2 pushed before 25
	if !ok || p.seq() != 3 || expired != 2 {
		t.Fatalf("pop(25) = %v, %v, %d expired; want seq 3, 2 expired", p.buf != nil && p.seq() == 3, ok, expired)
	}
	putBuffer(p.buf)
	var rest []uint64
	for _, p := range u.takeAll(nil) {
		rest = append(rest, p.seq())
		putBuffer(p.buf)
	}
	if !slices.Equal(rest, []uint64{4}) || u.pkts != nil {
		t.Errorf("takeAll = %v, holds %v; want [4] and nothing", rest, u.pkts)
	}
	if _, ok, _ := u.pop(0); ok {
		t.Error("pop from an empty queue")
	}
	for i := range urgentLen {
		u.push(seqPacket(uint64(i)), 0)
	}
	if u.push(seqPacket(1), 0) {
		t.Errorf("push beyond urgentLen (%d) accepted", urgentLen)
	}
	u.close()
	if u.pkts != nil || u.push(seqPacket(1), 0) {
		t.Error("closed: still holds packets, or accepts more")
	}
}
