package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// listen starts a listener on loopback that admits only client.
func listen(t *testing.T, server ed25519.PrivateKey, client ed25519.PublicKey) *Listener {
	conf, err := ServerTLS(server, func(k ed25519.PublicKey) bool { return bytes.Equal(k, client) })
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(pc, conf, server.Seed())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); pc.Close() })
	return l
}

func dialConfig(t *testing.T, l *Listener, client ed25519.PrivateKey, server ed25519.PublicKey) DialConfig {
	conf, err := ClientTLS(client, server)
	if err != nil {
		t.Fatal(err)
	}
	return DialConfig{Remote: l.Addr().(*net.UDPAddr).AddrPort(), Source: netip.MustParseAddr("127.0.0.1"), TLS: conf}
}

// pair is a path between a client and a listener on loopback, and what
// each end heard in the handshake.
type pair struct {
	client, server *Path
	listener       *Listener
	clientKey      ed25519.PrivateKey
	hello          *Hello   // as the server read it
	welcome        *Welcome // as the client read it
}

// connect dials a path with hello, answered with welcome; the paths close
// when the test ends.
func connect(t *testing.T, hello *Hello, welcome *Welcome) *pair {
	t.Helper()
	serverKey, clientKey := newKey(t), newKey(t)
	l := listen(t, serverKey, clientKey.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr := &pair{clientKey: clientKey, listener: l}
	accepted := make(chan error, 1)
	go func() {
		p, err := l.Accept(ctx)
		if err == nil {
			pr.server = p
			pr.hello, err = p.Handshake(ctx)
		}
		if err == nil {
			err = p.WriteControl(&Message{Welcome: welcome})
		}
		accepted <- err
	}()
	cp, w, err := Dial(ctx, dialConfig(t, l, clientKey, serverKey.Public().(ed25519.PublicKey)), hello)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close("done") })
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	pr.client, pr.welcome = cp, w
	return pr
}

func TestDialHandshakeAndDatagrams(t *testing.T) {
	pr := connect(t, &Hello{Version: 1, Uplink: "wifi"}, &Welcome{Session: 9, Name: "laptop"})
	cp, sp := pr.client, pr.server
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if pr.hello.Uplink != "wifi" {
		t.Errorf("hello as the server read it: %+v", pr.hello)
	}
	if w := pr.welcome; w.Session != 9 || w.Name != "laptop" {
		t.Errorf("welcome = %+v", w)
	}
	if !bytes.Equal(sp.PeerKey(), pr.clientKey.Public().(ed25519.PublicKey)) {
		t.Error("server sees the wrong client key")
	}
	if err := cp.Send([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got, err := sp.Receive(ctx)
	if err != nil || string(got) != "ping" {
		t.Fatalf("Receive = %q, %v", got, err)
	}
	max := cp.MaxDatagram()
	if max < 1000 || max > 1500 {
		t.Errorf("MaxDatagram = %d, want about 1200", max)
	}
	var tl *DatagramTooLargeError
	if err := cp.Send(make([]byte, max+1)); !errors.As(err, &tl) || tl.Max != max {
		t.Errorf("Send(max+1) = %v, want DatagramTooLargeError{%d}", err, max)
	}
}

func TestUnknownClientRefused(t *testing.T) {
	serverKey, clientKey, strangerKey := newKey(t), newKey(t), newKey(t)
	l := listen(t, serverKey, clientKey.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go l.Accept(ctx)
	_, _, err := Dial(ctx, dialConfig(t, l, strangerKey, serverKey.Public().(ed25519.PublicKey)), &Hello{Version: 1})
	if err == nil {
		t.Fatal("a client with an unknown key got a path")
	}
}

func TestWrongConcentratorRefused(t *testing.T) {
	serverKey, clientKey, impostor := newKey(t), newKey(t), newKey(t)
	l := listen(t, serverKey, clientKey.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := Dial(ctx, dialConfig(t, l, clientKey, impostor.Public().(ed25519.PublicKey)), &Hello{Version: 1})
	if !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Dial to a concentrator with the wrong key: err = %v, want ErrUnknownPeer", err)
	}
}

// TestTryWriteControl: the message is queued without waiting for anyone,
// and TryWriteControl returns once QUIC has sent it, so that datagrams
// sent after it cannot go first; with the stream held by another writer
// it writes nothing and says so.
func TestTryWriteControl(t *testing.T) {
	pr := connect(t, &Hello{Version: 1, Uplink: "wifi"}, &Welcome{Session: 1})
	cp, sp := pr.client, pr.server

	cp.writeMu.Lock()
	if err := cp.TryWriteControl(&Message{Paths: &Paths{Down: []string{"held"}}}, time.Second); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("with the stream held: %v, want ErrWouldBlock", err)
	}
	cp.writeMu.Unlock()

	before := cp.loss.ctrlSent.Load()
	if err := cp.TryWriteControl(&Message{Paths: &Paths{Down: []string{"4g"}}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if cp.loss.ctrlSent.Load() == before {
		t.Error("TryWriteControl returned before QUIC sent the message")
	}
	m, err := sp.ReadControl()
	if err != nil || m.Paths == nil || len(m.Paths.Down) != 1 || m.Paths.Down[0] != "4g" {
		t.Fatalf("peer read %+v, %v; want the paths message alone (nothing written while held)", m, err)
	}
}
