package tunnel

import (
	"net/netip"
	"path/filepath"
	"testing"
)

func TestLeasesStableAcrossReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	p4, p6 := netip.MustParsePrefix("10.9.0.0/29"), netip.MustParsePrefix("fd00:9::/125")
	l, err := LoadLeases(file, p4, p6)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Assign([]string{"b", "a"}); err != nil {
		t.Fatal(err)
	}
	a, b := l.Get("a"), l.Get("b")
	if a.IPv4 != netip.MustParseAddr("10.9.0.2") || b.IPv4 != netip.MustParseAddr("10.9.0.3") {
		t.Errorf("leases a=%v b=%v, want .2 and .3 (.1 is the concentrator's)", a, b)
	}
	// A reload with a client removed and one added keeps the others' addresses.
	l2, err := LoadLeases(file, p4, p6)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Assign([]string{"c", "b"}); err != nil {
		t.Fatal(err)
	}
	if l2.Get("b") != b {
		t.Errorf("b moved from %v to %v", b, l2.Get("b"))
	}
	if c := l2.Get("c"); c.IPv4 == a.IPv4 || c.IPv4 == b.IPv4 || !p4.Contains(c.IPv4) || !p6.Contains(c.IPv6) {
		t.Errorf("c got %v, overlapping or outside the pools", c)
	}
}

func TestLeasesExhausted(t *testing.T) {
	l, _ := LoadLeases("", netip.MustParsePrefix("10.9.0.0/30"), netip.Prefix{})
	// A /30 has network, gateway, one client and broadcast.
	if err := l.Assign([]string{"a"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Assign([]string{"a", "b"}); err == nil {
		t.Errorf("second client in a /30 got %v", l.Get("b"))
	}
}
