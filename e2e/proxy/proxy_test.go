package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// echo answers every datagram on conn until conn is closed.
func echo(conn *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

// TestProxySurvivesServerRestart: a flow keeps forwarding after its server
// went away and came back on the same port. While the server is away, the
// flow's connected socket reads the ICMP errors of what it forwarded
// (ECONNREFUSED); that must not end the flow.
func TestProxySurvivesServerRestart(t *testing.T) {
	server, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := server.LocalAddr().(*net.UDPAddr).AddrPort()
	go echo(server)
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	roundTrip := func() bool {
		client.Write([]byte("ping"))
		client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 16)
		n, err := client.Read(buf)
		return err == nil && string(buf[:n]) == "ping"
	}
	if !roundTrip() {
		t.Fatal("no echo through the proxy")
	}

	server.Close()
	// Sent to a closed port: each draws an ICMP port unreachable.
	for range 5 {
		roundTrip()
	}
	server, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Addr(), addr.Port())))
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go echo(server)
	for range 10 {
		if roundTrip() {
			return
		}
	}
	t.Fatal("the proxy no longer forwards the server's answers after its restart")
}
