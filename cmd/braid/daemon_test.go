package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/scheduler"
)

// TestClassesConversion: the classes of a config file become scheduler
// classes that classify packets as the file says.
func TestClassesConversion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.yaml")
	text := `
concentrator: vpn.example.com:4443
concentrator_public_key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
private_key_file: /k
uplinks:
  - interface: wlan0
    rate_cap: 20Mbit
  - interface: wwan0
mode: failover
classes:
  - name: dns
    mode: redundant
    protocol: udp
    dst_ports: [5300, "6000-6010"]
  - name: voice
    mode: auto
    interactive: true
    dscp: [EF, 34]
    ports: [5060]
    src_ports: ["1024-65535"]
    src: [192.168.50.0/24]
    dst: [2001:db8::/32]
`
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	got := classes(cfg.Classes)
	want := []scheduler.Class{
		{Name: "dns", Mode: scheduler.Redundant, Copies: 2, Proto: scheduler.ProtoUDP,
			DstPorts: []scheduler.PortRange{{Lo: 5300, Hi: 5300}, {Lo: 6000, Hi: 6010}}},
		{Name: "voice", Mode: scheduler.Auto, Interactive: true, DSCP: []uint8{46, 34},
			Ports: []scheduler.PortRange{{Lo: 5060, Hi: 5060}}, SrcPorts: []scheduler.PortRange{{Lo: 1024, Hi: 65535}},
			Src: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}, Dst: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
	c, err := scheduler.NewClassifier(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		info scheduler.Info
		want int
	}{
		{scheduler.Info{Proto: scheduler.ProtoUDP, DstPort: 6005}, 0},
		{scheduler.Info{Proto: scheduler.ProtoTCP, DstPort: 5300}, -1},
		{scheduler.Info{Proto: scheduler.ProtoUDP, SrcPort: 40000, DstPort: 5060, DSCP: 46,
			Src: netip.MustParseAddr("192.168.50.7"), Dst: netip.MustParseAddr("2001:db8::1")}, 1},
		{scheduler.Info{Proto: scheduler.ProtoUDP, SrcPort: 40000, DstPort: 5060, DSCP: 0,
			Src: netip.MustParseAddr("192.168.50.7"), Dst: netip.MustParseAddr("2001:db8::1")}, -1},
	} {
		if got := c.Classify(&tt.info); got != tt.want {
			t.Errorf("Classify(%+v) = %d, want %d", tt.info, got, tt.want)
		}
	}
	if r := cfg.Uplinks[0].RateCap.BytesPerSecond(); r != 2.5e6 {
		t.Errorf("rate_cap 20Mbit = %v bytes/s, want 2.5e6", r)
	}
	if classes(nil) != nil {
		t.Error("no classes should convert to nil")
	}
}
