package transport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

func TestBatchMessagesCoalesceRuns(t *testing.T) {
	a := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	a2 := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} // equal, another pointer
	b := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}
	ecn := []byte("not-a-real-cmsg!")
	batch := newSendBatch()
	for _, p := range []struct {
		n    int
		oob  []byte
		addr *net.UDPAddr
	}{
		{1200, nil, a}, {1200, nil, a2}, {1200, nil, a}, {800, nil, a}, // one GSO message, short last
		{1200, nil, a},                 // after a short one: a new message
		{1200, nil, b}, {1200, nil, b}, // another address
		{1200, ecn, b},                                 // other control messages
		{1000, nil, a}, {1200, nil, a}, {1000, nil, a}, // a longer one cannot follow
	} {
		batch.add(bytes.Repeat([]byte{byte(len(batch.pkts))}, p.n), p.oob, nil, p.addr)
	}
	type msg struct{ len, seg int }
	want := []msg{{4400, 1200}, {1200, 0}, {2400, 1200}, {1200, 0}, {1000, 0}, {2200, 1200}}
	var got []msg
	for _, m := range batch.messages(true) {
		_, _, seg := stripSegmentSize(m.OOB)
		got = append(got, msg{len(m.Buffers[0]), seg})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GSO messages = %v, want %v", got, want)
	}
	if n := len(batch.messages(false)); n != len(batch.pkts) {
		t.Errorf("without GSO: %d messages for %d packets", n, len(batch.pkts))
	}
}

// appendTOS appends an IP_TOS control message, as quic-go does for ECN
// after its UDP_SEGMENT message.
func appendTOS(b []byte, tos byte) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(1))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(1))
	b[start+unix.CmsgSpace(0)] = tos
	return b
}

func TestSegmentSizeRoundTrip(t *testing.T) {
	oob := appendSegmentSize(nil, 1337)
	before, after, seg := stripSegmentSize(oob)
	if seg != 1337 || len(before)+len(after) != 0 {
		t.Fatalf("stripSegmentSize = %d, %d bytes left; want 1337, 0", seg, len(before)+len(after))
	}
	if _, _, seg := stripSegmentSize([]byte{1, 2, 3}); seg != 0 {
		t.Fatalf("garbage: segment size %d", seg)
	}
	// quic-go's order: UDP_SEGMENT, then ECN. What is left is the ECN
	// message alone.
	oob = appendTOS(appendSegmentSize(nil, 1337), 2)
	before, after, seg = stripSegmentSize(oob)
	if seg != 1337 || len(before) != 0 {
		t.Fatalf("UDP_SEGMENT before IP_TOS: segment size %d, %d bytes before it", seg, len(before))
	}
	h, body, next, err := unix.ParseOneSocketControlMessage(after)
	if err != nil || h.Level != unix.IPPROTO_IP || h.Type != unix.IP_TOS || len(body) < 1 || body[0] != 2 || len(next) != 0 {
		t.Errorf("left after UDP_SEGMENT: %+v %v %d bytes more, %v; want the IP_TOS message alone", h, body, len(next), err)
	}
}

// loopbackPair returns a batching sender and a batching receiver on
// loopback, the receiver with a large buffer so nothing is lost.
func loopbackPair(t *testing.T) (*batchConn, *batchConn) {
	t.Helper()
	tx, rx := loopbackPairStopped(t)
	return tx.start(), rx
}

// loopbackPairStopped is loopbackPair with the sender's writer not
// started yet.
func loopbackPairStopped(t *testing.T) (*batchConn, *batchConn) {
	t.Helper()
	open := func() *batchConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadBuffer(8 << 20)
		bc := newBatchConn(c, 1)
		t.Cleanup(func() { bc.Close() })
		return bc
	}
	return open(), open().start()
}

// readAll reads n packets through ReadBatch, as quic-go does.
func readAll(t *testing.T, c *batchConn, n int) [][]byte {
	t.Helper()
	ms := make([]ipv4.Message, 8)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1500)}
		ms[i].OOB = make([]byte, 128)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got [][]byte
	for len(got) < n {
		k, err := c.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d of %d packets: %v", len(got), n, err)
		}
		for _, m := range ms[:k] {
			got = append(got, bytes.Clone(m.Buffers[0][:m.N]))
		}
	}
	return got
}

// TestBatchConnDelivers sends a burst of packets of mixed sizes and checks
// that they all arrive, in order and intact, and that a batch written
// while the writer was busy left in one system call (the point of
// batchConn: this fails if batching stops).
func TestBatchConnDelivers(t *testing.T) {
	tx, rx := loopbackPairStopped(t)
	dst := rx.LocalAddr().(*net.UDPAddr)
	const n = 1000
	var sent [][]byte
	for i := range n {
		if i == maxBatchPackets {
			tx.start() // the first batch is full: a busy writer's view
		}
		size := 1200
		if i%7 == 6 {
			size = 100 + i%500 // ACK-sized packets between full ones
		}
		p := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, size/2)
		p[0] = 0x40 // QUIC's fixed bit: a packet for quic-go, not a direct datagram
		sent = append(sent, p)
		if _, _, err := tx.WriteMsgUDP(p, nil, dst); err != nil {
			t.Fatal(err)
		}
		if i == maxBatchPackets-1 {
			if calls := tx.sendCalls.Load(); calls != 0 {
				t.Fatalf("%d sendmmsg calls before the writer started", calls)
			}
		}
	}
	got := readAll(t, rx, n)
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("packet %d: got %d bytes, want %d (reordered or damaged)", i, len(got[i]), len(sent[i]))
		}
	}
	calls, pkts := tx.sendCalls.Load(), tx.sentPackets.Load()
	t.Logf("%d packets in %d sendmmsg calls", pkts, calls)
	if pkts != n || calls > n-maxBatchPackets+1 {
		t.Errorf("%d packets in %d sendmmsg calls: the first %d were not sent in one", pkts, calls, maxBatchPackets)
	}
}

// TestBatchConnSplitsGSOWrites checks that a GSO write from quic-go
// (UDP_SEGMENT control message) arrives as its separate packets.
func TestBatchConnSplitsGSOWrites(t *testing.T) {
	tx, rx := loopbackPair(t)
	dst := rx.LocalAddr().(*net.UDPAddr)
	b := append(bytes.Repeat([]byte{0x41}, 1000), bytes.Repeat([]byte{0x42}, 1000)...)
	b = append(b, bytes.Repeat([]byte{0x43}, 300)...)
	if n, _, err := tx.WriteMsgUDP(b, appendSegmentSize(nil, 1000), dst); err != nil || n != len(b) {
		t.Fatalf("WriteMsgUDP = %d, %v", n, err)
	}
	got := readAll(t, rx, 3)
	for i, want := range []int{1000, 1000, 300} {
		if len(got[i]) != want || got[i][0] != byte(0x41+i) {
			t.Errorf("packet %d: %d bytes of %#x, want %d bytes of %#x", i, len(got[i]), got[i][0], want, 0x41+i)
		}
	}
}

// TestBatchConnSplitsGSOWritesWithECN: quic-go puts its ECN message after
// UDP_SEGMENT. Two such GSO writes batched together must still arrive as
// their separate packets: taken for single packets, they were sent as one
// GSO run of their whole length, which a real link's MTU refuses (and
// both writes' packets were lost).
func TestBatchConnSplitsGSOWritesWithECN(t *testing.T) {
	tx, rx := loopbackPairStopped(t)
	dst := rx.LocalAddr().(*net.UDPAddr)
	var want []int
	for range 2 {
		b := append(bytes.Repeat([]byte{0x41}, 1000), bytes.Repeat([]byte{0x42}, 300)...)
		if n, _, err := tx.WriteMsgUDP(b, appendTOS(appendSegmentSize(nil, 1000), 2), dst); err != nil || n != len(b) {
			t.Fatalf("WriteMsgUDP = %d, %v", n, err)
		}
		want = append(want, 1000, 300)
	}
	tx.start()
	got := readAll(t, rx, len(want))
	for i, n := range want {
		if len(got[i]) != n {
			t.Fatalf("packet %d has %d bytes, want %d (got %d packets: GSO writes not split)", i, len(got[i]), n, len(got))
		}
	}
}

func TestBatchConnCloseStopsWriter(t *testing.T) {
	tx, rx := loopbackPair(t)
	if _, err := tx.WriteTo([]byte("last words"), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rx, 1); string(got[0]) != "last words" {
		t.Errorf("got %q: a packet queued before Close was not sent", got[0])
	}
	if _, err := tx.WriteTo([]byte("x"), rx.LocalAddr()); err == nil {
		t.Error("write after Close succeeded")
	}
}

// TestBatchConnReaderWaitsAtGate: while a connection's receiver is behind
// (its gate closed), ReadBatch holds back a packet that is already there
// for gateMaxWait (TestRxGate tests the opening).
func TestBatchConnReaderWaitsAtGate(t *testing.T) {
	tx, rx := loopbackPair(t)
	var b rxBacklog
	b.gate = rx.gate
	b.add(gateHigh) // the receiver is behind
	if _, err := tx.WriteTo([]byte("held"), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	readAll(t, rx, 1)
	if d := time.Since(start); d < gateMaxWait {
		t.Errorf("ReadBatch returned after %v with the gate closed, want at least %v", d, gateMaxWait)
	}
}

// TestBatchConnDivertsDirect: direct datagrams never reach quic-go's
// reads (which keep 32 packets that are not QUIC, and drop the rest):
// readDirect takes them, a burst of hundreds among QUIC packets included,
// and quic-go reads the QUIC packets alone, in order.
func TestBatchConnDivertsDirect(t *testing.T) {
	tx, rx := loopbackPair(t)
	dst := rx.LocalAddr().(*net.UDPAddr)
	const n = 300
	for i := range n {
		quic := bytes.Repeat([]byte{0x40, byte(i)}, 600)
		direct := bytes.Repeat([]byte{directMarker, byte(i)}, 600)
		for _, p := range [][]byte{quic, direct} {
			if _, _, err := tx.WriteMsgUDP(p, nil, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := readAll(t, rx, n)
	for i, p := range got {
		if p[0] != 0x40 || p[1] != byte(i) {
			t.Fatalf("quic-go read %#x %d as packet %d, want 0x40 %d", p[0], p[1], i, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b := make([]byte, 2048)
	for i := range n {
		k, err := rx.readDirect(ctx, 0, b)
		if err != nil {
			t.Fatalf("direct datagram %d: %v (%d dropped)", i, err, rx.droppedDirect())
		}
		if k != 1200 || b[0] != directMarker || b[1] != byte(i) {
			t.Fatalf("direct datagram %d: %d bytes, %#x %d", i, k, b[0], b[1])
		}
	}
}

// TestBatchConnDivertsTrailingDirect: a direct datagram read in the same
// batch as QUIC packets that fill quic-go's read is taken out then, not
// left for quic-go's next read (which the gate may hold back): it was
// found one run in 20 of TestBatchConnDivertsDirect, whose reads stop
// after the last QUIC packet.
func TestBatchConnDivertsTrailingDirect(t *testing.T) {
	tx, rx := loopbackPair(t)
	dst := rx.LocalAddr().(*net.UDPAddr)
	const quic = 8 // readAll's batch
	for i := range quic + 1 {
		p := bytes.Repeat([]byte{0x40, byte(i)}, 600)
		if i == quic {
			p[0] = directMarker
		}
		if _, _, err := tx.WriteMsgUDP(p, nil, dst); err != nil {
			t.Fatal(err)
		}
	}
	readAll(t, rx, quic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := rx.readDirect(ctx, 0, make([]byte, 2048)); err != nil {
		t.Fatalf("direct datagram after the QUIC packets: %v", err)
	}
}

// TestDivertWaitsForRoom: a full shard holds the socket reader back (up
// to gateMaxWait) rather than lose the datagram; only past that is it
// dropped and counted.
func TestDivertWaitsForRoom(t *testing.T) {
	_, rx := loopbackPair(t)
	dg := bytes.Repeat([]byte{directMarker}, DirectOverhead)
	for range directQueueLen {
		rx.divert(dg, 0)
	}
	done := make(chan struct{})
	go func() { rx.divert(dg, 0); close(done) }()
	directPackets.Put(<-rx.direct[0]) // room for the one waiting
	<-done
	if n := rx.droppedDirect(); n != 0 {
		t.Fatalf("%d dropped, want 0: divert waited for room", n)
	}
	start := time.Now()
	rx.divert(dg, 0) // nobody takes it
	if n := rx.droppedDirect(); n != 1 {
		t.Fatalf("%d dropped, want 1", n)
	}
	if waited := time.Since(start); waited < gateMaxWait {
		t.Errorf("dropped after %v, before gateMaxWait", waited)
	}
}

// TestBatchConnSkipsRefusedPacket: a packet the kernel refuses (an IPv6
// destination from an IPv4 socket) is counted and dropped, and the packet
// queued behind it in the same batch is still sent.
func TestBatchConnSkipsRefusedPacket(t *testing.T) {
	tx, rx := loopbackPairStopped(t)
	dst := rx.LocalAddr().(*net.UDPAddr)
	refused := []byte{0x40, 1, 2, 3}
	good := []byte{0x40, 4, 5, 6}
	if _, err := tx.WriteTo(refused, &net.UDPAddr{IP: net.IPv6loopback, Port: dst.Port}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.WriteTo(good, dst); err != nil {
		t.Fatal(err)
	}
	tx.start() // both go in one batch
	if got := readAll(t, rx, 1); !bytes.Equal(got[0], good) {
		t.Fatalf("got %x, want %x", got[0], good)
	}
	if n := tx.sendFailed.Load(); n != 1 {
		t.Errorf("sendFailed = %d, want 1", n)
	}
}
