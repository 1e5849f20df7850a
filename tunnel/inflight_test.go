package tunnel

import (
	"math"
	"testing"
)

// TestHandedSince: the handover time of the oldest of the k packets added
// last, which a path that failed here uses to tell what quic-go still
// held (link.wentAt).
func TestHandedSince(t *testing.T) {
	var f inflight
	if _, ok := f.handedSince(3); ok {
		t.Error("ok with nothing kept")
	}
	for at := int64(10); at <= 50; at += 10 {
		if !f.hand(packetRef{buf: getBuffer(1), n: 1}) {
			t.Fatal("hand refused")
		}
		f.add(f.pending, at, 0, false)
	}
	for _, tt := range []struct {
		k    int
		want int64
		ok   bool
	}{{0, 0, false}, {-1, 0, false}, {1, 50, true}, {3, 30, true}, {5, 10, true}, {9, 10, true}} {
		if at, ok := f.handedSince(tt.k); at != tt.want || ok != tt.ok {
			t.Errorf("handedSince(%d) = %d, %v; want %d, %v", tt.k, at, ok, tt.want, tt.ok)
		}
	}
	f.trim(math.MaxInt64)
}
