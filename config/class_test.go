package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const classesClient = minimalClient + `
redundancy: 2
classes:
  - name: calls
    mode: redundant
    protocol: udp
    dst_ports: [5300, "10000-20000"]
    dscp: [EF, af41, 34, cs1]
    dst: [192.0.2.0/24, 2001:db8::/32]
  - name: web
    mode: aggregate
    protocol: 6
    ports: ["443"]
    src_ports: [1024-65535]
    src: [10.0.0.0/8]
    interactive: true
  - name: bulk
    mode: flow
`

func TestClassesLoad(t *testing.T) {
	c, err := LoadClient(writeConfig(t, classesClient))
	if err != nil {
		t.Fatal(err)
	}
	want := []Class{
		{Name: "calls", Mode: ModeRedundant, Copies: 2, Protocol: 17,
			DstPorts: []PortRange{{5300, 5300}, {10000, 20000}}, DSCP: []DSCP{46, 34, 34, 8},
			Dst: prefixes("192.0.2.0/24", "2001:db8::/32")},
		{Name: "web", Mode: ModeAggregate, Protocol: 6, Interactive: true,
			Ports: []PortRange{{443, 443}}, SrcPorts: []PortRange{{1024, 65535}}, Src: prefixes("10.0.0.0/8")},
		{Name: "bulk", Mode: ModeFlow},
	}
	if !reflect.DeepEqual(c.Classes, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c.Classes, want)
	}
}

// TestClassScalars: a single value stands for a list of one, and a
// number for its text.
func TestClassScalars(t *testing.T) {
	text := minimalClient + "    rate_cap: 64000\nclasses:\n  - {name: a, mode: flow, dst_ports: 5300, dscp: EF, src: 10.0.0.0/8, protocol: 17}\n"
	c, err := LoadClient(writeConfig(t, text))
	if err != nil {
		t.Fatal(err)
	}
	want := Class{Name: "a", Mode: ModeFlow, DstPorts: []PortRange{{5300, 5300}}, DSCP: []DSCP{46}, Src: prefixes("10.0.0.0/8"), Protocol: 17}
	if !reflect.DeepEqual(c.Classes[0], want) || c.Uplinks[1].RateCap != 64000 {
		t.Errorf("got %+v and rate_cap %v, want %+v and 64000", c.Classes[0], c.Uplinks[1].RateCap, want)
	}
}

// TestClassCopiesDefault: a redundant class sends as many copies as the
// client's redundancy unless it says otherwise.
func TestClassCopiesDefault(t *testing.T) {
	text := minimalClient + "  - interface: wwan0\nredundancy: 3\nclasses:\n  - {name: a, mode: redundant}\n  - {name: b, mode: redundant, copies: 2}\n"
	c, err := LoadClient(writeConfig(t, text))
	if err != nil {
		t.Fatal(err)
	}
	if c.Redundancy != 3 || c.Classes[0].Copies != 3 || c.Classes[1].Copies != 2 {
		t.Errorf("redundancy %d, copies %d and %d; want 3, 3 and 2", c.Redundancy, c.Classes[0].Copies, c.Classes[1].Copies)
	}
}

func TestClassErrors(t *testing.T) {
	tests := []struct{ name, add, want string }{
		{"no name", "  - mode: flow\n", `key "classes[1].name" is empty`},
		{"bad name", "  - {name: my class, mode: flow}\n", `key "classes[1].name": "my class" is not a valid name`},
		{"duplicate name", "  - {name: voice, mode: flow}\n", `key "classes[1].name": name "voice" is used by another class`},
		{"no mode", "  - name: x\n", `key "classes[1].mode" is empty`},
		{"bad mode", "  - {name: x, mode: fastest}\n", `key "classes[1].mode": "fastest" is not one of failover, aggregate, redundant, flow, auto`},
		{"copies not redundant", "  - {name: x, mode: flow, copies: 2}\n", `key "classes[1].copies": only a class of mode redundant has copies`},
		{"one copy", "  - {name: x, mode: redundant, copies: 1}\n", `key "classes[1].copies": 1 is less than 2 copies`},
		{"copies over uplinks", "  - {name: x, mode: redundant, copies: 3}\n", `key "classes[1].copies": 3 copies need as many uplinks, there are 2`},
		{"bad protocol", "  - {name: x, mode: flow, protocol: quic}\n", `key "classes[1].protocol": "quic" is not a valid protocol (tcp, udp, icmp, icmpv6 or 0..255)`},
		{"protocol too big", "  - {name: x, mode: flow, protocol: 256}\n", `key "classes[1].protocol": "256" is not a valid protocol`},
		{"port too big", "  - {name: x, mode: flow, ports: [443, 70000]}\n", `key "classes[1].ports[1]": "70000" is not a valid port or port range (e.g. 443, 10000-20000)`},
		{"port zero", "  - {name: x, mode: flow, src_ports: [0]}\n", `key "classes[1].src_ports[0]": "0" is not a valid port or port range`},
		{"empty range", "  - {name: x, mode: flow, dst_ports: [20000-10000]}\n", `key "classes[1].dst_ports[0]": "20000-10000" is not a valid port or port range`},
		{"port word", "  - {name: x, mode: flow, ports: [https]}\n", `key "classes[1].ports[0]": "https" is not a valid port or port range`},
		{"map for ports", "  - {name: x, mode: flow, ports: {a: 1}}\n", `unknown key "classes[1].ports[0].a"`},
		{"dscp too big", "  - {name: x, mode: flow, dscp: [EF, 64]}\n", `key "classes[1].dscp[1]": "64" is not a valid DSCP code point (0..63, EF, AF41, CS1...)`},
		{"dscp bad name", "  - {name: x, mode: flow, dscp: [AF44]}\n", `key "classes[1].dscp[0]": "AF44" is not a valid DSCP code point`},
		{"bad prefix", "  - {name: x, mode: flow, src: [10.0.0.0/33]}\n", `key "classes[1].src[0]": "10.0.0.0/33" is not a valid prefix`},
		{"host bits", "  - {name: x, mode: flow, dst: [10.0.0.0/8, 10.1.2.3/16]}\n", `key "classes[1].dst[1]": 10.1.2.3/16 has host bits set; did you mean 10.1.0.0/16?`},
		{"unknown key", "  - {name: x, mode: flow, port: 443}\n", `unknown key "classes[1].port"`},
	}
	base := minimalClient + "classes:\n  - {name: voice, mode: redundant, dscp: [EF]}\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, base+tt.add)
			_, err := LoadClient(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config "+path+": ") || !strings.Contains(msg, tt.want) {
				t.Errorf("got  %s\nwant config %s: ...%s...", msg, path, tt.want)
			}
		})
	}
}

func TestRedundancyErrors(t *testing.T) {
	tests := []struct{ name, add, want string }{
		{"one", "redundancy: 1\n", `key "redundancy": 1 is less than 2 copies`},
		{"over uplinks", "redundancy: 3\n", `key "redundancy": 3 copies need as many uplinks, there are 2`},
		{"word", "redundancy: many\n", `key "redundancy": "many" is not a valid integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, minimalClient+tt.add)
			_, err := LoadClient(path)
			if err == nil || !strings.HasPrefix(err.Error(), "config "+path+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got  %v\nwant config %s: ...%s...", err, path, tt.want)
			}
		})
	}
	// Two copies are allowed with one uplink: the default must load.
	one := strings.SplitAfter(minimalClient, "  - interface: wlan0\n")[0]
	if _, err := LoadClient(writeConfig(t, one+"mode: redundant\n")); err != nil {
		t.Errorf("one uplink, mode redundant: %v", err)
	}
}

func TestRedundancyEnv(t *testing.T) {
	t.Setenv("BRAID_REDUNDANCY", "3")
	c, err := LoadClient(writeConfig(t, minimalClient+"  - interface: wwan0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Redundancy != 3 {
		t.Errorf("redundancy = %d, want 3 from the environment", c.Redundancy)
	}
}

func TestRateCap(t *testing.T) {
	c, err := LoadClient(writeConfig(t, minimalClient+"    rate_cap: 20Mbit\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Uplinks[1].RateCap; got != 20e6 || got.BytesPerSecond() != 2.5e6 {
		t.Errorf("rate_cap = %v (%v bytes/s), want 20Mbit", got, got.BytesPerSecond())
	}
	for _, bad := range []struct{ val, want string }{
		{"20MB", `key "uplinks[1].rate_cap": "20MB" is not a valid bit rate (e.g. 500kbit, 20Mbit, 1.5Gbit)`},
		{"fast", `key "uplinks[1].rate_cap": "fast" is not a valid bit rate`},
		{"-5Mbit", `key "uplinks[1].rate_cap": "-5Mbit" is not a valid bit rate`},
		{"-5", `key "uplinks[1].rate_cap": "-5" is not a valid bit rate`},
	} {
		path := writeConfig(t, minimalClient+"    rate_cap: "+bad.val+"\n")
		_, err := LoadClient(path)
		if err == nil || !strings.HasPrefix(err.Error(), "config "+path+": ") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("rate_cap %s: got %v, want ...%s...", bad.val, err, bad.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Rate
	}{
		{"20Mbit", 20e6}, {"1.5Gbit", 1.5e9}, {"500kbit", 500e3}, {"500 Kbit", 500e3},
		{"100mbps", 100e6}, {"64000", 64000}, {"1e3", 0}, {"10 MiB", 0}, {"", 0}, {"bit", 0},
	} {
		got, err := ParseRate(tt.in)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("ParseRate(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if s := Rate(1.5e9).String(); s != "1.5Gbit" {
		t.Errorf("String() = %s, want 1.5Gbit", s)
	}
}

func TestDSCPNames(t *testing.T) {
	for in, want := range map[string]DSCP{
		"EF": 46, "ef": 46, "AF11": 10, "AF23": 22, "AF41": 34, "AF43": 38, "CS0": 0, "CS1": 8, "CS6": 48,
		"CS7": 56, "VA": 44, "LE": 1, "BE": 0, "63": 63,
	} {
		var d DSCP
		if err := d.UnmarshalText([]byte(in)); err != nil || d != want {
			t.Errorf("%s = %d, %v; want %d", in, d, err, want)
		}
	}
	for _, in := range []string{"AF51", "AF14", "CS8", "64", "-1", "voice"} {
		var d DSCP
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%s parsed as %d, want an error", in, d)
		}
	}
}

func TestClassValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Client)
		want   string
	}{
		{"valid", func(c *Client) { c.Classes = []Class{{Name: "a", Mode: ModeRedundant, Copies: 2}} }, ""},
		{"redundant without copies", func(c *Client) { c.Classes = []Class{{Name: "a", Mode: ModeRedundant}} }, `key "classes[0].copies": 0 is less than 2 copies`},
		{"zero port", func(c *Client) {
			c.Classes = []Class{{Name: "a", Mode: ModeFlow, DstPorts: []PortRange{{0, 10}}}}
		}, `key "classes[0].dst_ports[0]": 0-10 is not a port range (1..65535)`},
		{"reversed range", func(c *Client) {
			c.Classes = []Class{{Name: "a", Mode: ModeFlow, Ports: []PortRange{{10, 5}}}}
		}, `key "classes[0].ports[0]": 10-5 is not a port range`},
		{"dscp", func(c *Client) { c.Classes = []Class{{Name: "a", Mode: ModeFlow, DSCP: []DSCP{64}}} }, `key "classes[0].dscp[0]": 64 is not a DSCP code point (0..63)`},
		{"empty prefix", func(c *Client) { c.Classes = []Class{{Name: "a", Mode: ModeFlow, Src: []netip.Prefix{{}}}} }, `key "classes[0].src[0]" is empty`},
		{"redundancy", func(c *Client) { c.Redundancy = 0 }, `key "redundancy": 0 is less than 2 copies`},
		{"redundancy over uplinks", func(c *Client) { c.Redundancy = 5 }, `key "redundancy": 5 copies need as many uplinks, there are 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validClient()
			tt.change(c)
			checkErr(t, c.Validate(), tt.want)
		})
	}
}
