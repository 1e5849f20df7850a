package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// TestDirectDatagrams: a direct datagram goes each way on a path, the
// concentrator finds its path by its ID, and what another path's keys
// sealed, or a tampered datagram, is refused.
func TestDirectDatagrams(t *testing.T) {
	pr := connect(t, &Hello{Version: 1, Uplink: "wifi", Direct: true}, &Welcome{Session: 1, Direct: true})
	other := connect(t, &Hello{Version: 1, Uplink: "4g"}, &Welcome{Session: 2})
	cp, sp := pr.client, pr.server
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cp.DirectID() != sp.DirectID() || cp.DirectID() == other.client.DirectID() {
		t.Fatalf("lane IDs: client %x, server %x, another path %x", cp.DirectID(), sp.DirectID(), other.client.DirectID())
	}

	scratch := make([]byte, 0, 2048)
	if err := cp.SendDirect([]byte("up"), scratch); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := pr.listener.ReadDirect(ctx, int(sp.DirectID()%uint64(pr.listener.DirectShards())), buf)
	if err != nil {
		t.Fatal(err)
	}
	raw := buf[:n]
	if id, ok := DirectID(raw); !ok || id != sp.DirectID() {
		t.Fatalf("DirectID = %x, %v; want %x", id, ok, sp.DirectID())
	}
	if n != len("up")+DirectOverhead {
		t.Errorf("direct datagram of %d bytes, want %d", n, len("up")+DirectOverhead)
	}
	if got, err := sp.OpenDirect(nil, raw); err != nil || string(got) != "up" {
		t.Fatalf("server opened %q, %v", got, err)
	}
	if _, err := other.server.OpenDirect(nil, raw); !errors.Is(err, ErrBadDirect) {
		t.Errorf("another path opened it: %v", err)
	}
	if _, err := cp.OpenDirect(nil, raw); !errors.Is(err, ErrBadDirect) {
		t.Errorf("its sender opened it (the two directions share a key?): %v", err)
	}
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x10
		if _, err := sp.OpenDirect(nil, bad); err == nil {
			t.Fatalf("accepted with byte %d changed", i)
		}
	}

	if err := sp.SendDirect([]byte("down"), scratch); err != nil {
		t.Fatal(err)
	}
	n, err = cp.ReadDirect(ctx, buf)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cp.OpenDirect(nil, buf[:n]); err != nil || string(got) != "down" {
		t.Fatalf("client opened %q, %v", got, err)
	}
	if s, r := cp.DirectCounts(); s != 1 || r != 1 {
		t.Errorf("client counts: sent %d, received %d; want 1, 1", s, r)
	}
	if _, err := sp.ReadDirect(ctx, buf); err == nil {
		t.Error("ReadDirect on a concentrator's path: no error")
	}
}

// TestDirectNonceNeverRepeats: each datagram sealed under a key has a
// counter (the nonce) of its own, even for the same payload.
func TestDirectNonceNeverRepeats(t *testing.T) {
	d := &directLane{id: 7, client: true}
	seen := map[string]bool{}
	for range 100 {
		out := d.seal(nil, []byte("same"))
		nonce := string(out[directHeaderLen-12 : directHeaderLen])
		if seen[nonce] {
			t.Fatalf("nonce %x used twice", nonce)
		}
		seen[nonce] = true
	}
}

func TestSealDirectDoesNotAllocate(t *testing.T) {
	d := &directLane{id: 7, client: true}
	b := make([]byte, 1200)
	scratch := make([]byte, 0, 2048)
	d.seal(scratch, b) // makes the ciphers
	if n := testing.AllocsPerRun(100, func() { d.seal(scratch, b) }); n != 0 {
		t.Errorf("seal allocates %v times", n)
	}
}

// TestDirectEpochs: the keys change every 2^directEpochBits datagrams; the
// receiver follows, takes the previous epoch's late datagrams, and refuses
// an epoch it cannot have reached without deriving its key.
func TestDirectEpochs(t *testing.T) {
	client := &directLane{id: 9, client: true, bases: [2][32]byte{{1}, {2}}}
	server := &directLane{id: 9, bases: client.bases}
	client.nextNonce.Store(1<<directEpochBits - 3)
	var sealed [][]byte
	for i := range 6 {
		sealed = append(sealed, client.seal(nil, []byte{byte(i)}))
	}
	if a, b := client.sealer.Load().epoch, uint64(1); a != b {
		t.Fatalf("sealing in epoch %d, want %d", a, b)
	}
	// Epoch 0's key does not open epoch 1's datagrams.
	other := &directLane{id: 9, bases: client.bases}
	other.openers[0] = other.newEpochCipher(0, 0)
	hdr := sealed[5][:directHeaderLen]
	if _, err := other.openers[0].aead.Open(nil, hdr[directHeaderLen-12:], sealed[5][directHeaderLen:], hdr); err == nil {
		t.Error("epoch 0's key opened a datagram of epoch 1")
	}
	// In order, then one of epoch 0 late.
	for _, i := range []int{0, 1, 3, 4, 2, 5} {
		if got, err := server.open(nil, sealed[i]); err != nil || len(got) != 1 || got[0] != byte(i) {
			t.Fatalf("datagram %d: %v, %v", i, got, err)
		}
	}
	far := client.seal(nil, nil)
	binary.BigEndian.PutUint64(far[9:], 5<<directEpochBits)
	if _, err := server.open(nil, far); !errors.Is(err, ErrBadDirect) {
		t.Errorf("a datagram of epoch 5 after epoch 1: %v, want ErrBadDirect", err)
	}
	if server.openers[0].epoch != 1 || server.openers[1].epoch != 0 {
		t.Errorf("receiver keeps epochs %d and %d, want 1 and 0", server.openers[0].epoch, server.openers[1].epoch)
	}
}

// FuzzOpenDirect: the receiver of direct datagrams takes any bytes from
// the network without panicking, and accepts only what the peer sealed.
func FuzzOpenDirect(f *testing.F) {
	client := &directLane{id: 0x0102030405060708, client: true}
	for i := range client.bases {
		client.bases[i][0] = byte(i + 1)
	}
	server := &directLane{id: client.id, bases: client.bases}
	f.Add(client.seal(nil, []byte("hello")))
	f.Add(client.seal(nil, nil))
	f.Add([]byte{directMarker})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := server.open(nil, b)
		if err != nil {
			return
		}
		if id, ok := DirectID(b); !ok || id != server.id {
			t.Fatalf("opened a datagram of lane %x", id)
		}
		if len(out) != len(b)-DirectOverhead {
			t.Fatalf("opened %d bytes from %d", len(out), len(b))
		}
		if _, err := client.open(nil, b); err == nil {
			t.Fatal("the sealing side opened its own datagram")
		}
	})
}
