package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A valid public key: 32 zero bytes.
const testKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

const minimalClient = `
concentrator: vpn.example.com:4443
concentrator_public_key: ` + testKey + `
private_key_file: /etc/braid/client.key
uplinks:
  - interface: wlan0
  - interface: eth0
    name: wired
    source: 192.0.2.10
    priority: 5
    metered: true
    weight: 2.5
`

const minimalConcentrator = `
private_key_file: /etc/braid/concentrator.key
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "braid.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestClientDefaults(t *testing.T) {
	got, err := LoadClient(writeConfig(t, minimalClient))
	if err != nil {
		t.Fatal(err)
	}
	want := &Client{
		Concentrator:          "vpn.example.com:4443",
		ConcentratorPublicKey: testKey,
		PrivateKeyFile:        "/etc/braid/client.key",
		Uplinks: []Uplink{
			{Name: "wlan0", Interface: "wlan0", Weight: 1},
			{Name: "wired", Interface: "eth0", Source: netip.MustParseAddr("192.0.2.10"), Priority: 5, Metered: true, Weight: 2.5},
		},
		Mode:       ModeAuto,
		Redundancy: 2,
		Routes:     prefixes("0.0.0.0/0", "::/0"),
		Tun:        Tun{Name: "braid0"},
		Table:      7800,
		FwMark:     0x7800,
		Control:    "/run/braid/client.sock",
		LogLevel:   "info",
		UsageFile:  "/var/lib/braid/usage.json",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestConcentratorDefaults(t *testing.T) {
	got, err := LoadConcentrator(writeConfig(t, minimalConcentrator))
	if err != nil {
		t.Fatal(err)
	}
	want := &Concentrator{
		Listen:         netip.MustParseAddrPort("0.0.0.0:4443"),
		PrivateKeyFile: "/etc/braid/concentrator.key",
		Pool:           Pool{IPv4: netip.MustParsePrefix("100.96.0.0/16"), IPv6: netip.MustParsePrefix("fd62:7261:6964::/64")},
		NAT:            NAT{Enabled: true},
		Tun:            Tun{Name: "braid0"},
		StateFile:      "/var/lib/braid/leases.json",
		GracePeriod:    2 * time.Minute,
		Control:        "/run/braid/concentrator.sock",
		LogLevel:       "info",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestClientEnv(t *testing.T) {
	path := writeConfig(t, minimalClient+"mode: failover\nlog_level: warn\n")
	t.Setenv("BRAID_MODE", "aggregate")                    // in the file
	t.Setenv("BRAID_TUN_MTU", "1300")                      // absent, nested
	t.Setenv("BRAID_ROUTES", "10.0.0.0/8, 192.168.0.0/16") // a list
	t.Setenv("BRAID_FWMARK", "0x7900")                     // hex
	t.Setenv("BRAID_CONCENTRATOR_PUBLIC_KEY", strings.Repeat("B", 43)+"=")
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeAggregate || c.Tun.MTU != 1300 || c.FwMark != 0x7900 || c.LogLevel != "warn" {
		t.Errorf("mode %q, tun.mtu %d, fwmark %#x, log_level %q", c.Mode, c.Tun.MTU, c.FwMark, c.LogLevel)
	}
	if want := prefixes("10.0.0.0/8", "192.168.0.0/16"); !reflect.DeepEqual(c.Routes, want) {
		t.Errorf("routes %v, want %v", c.Routes, want)
	}
	if c.ConcentratorPublicKey == testKey {
		t.Errorf("concentrator_public_key not overridden")
	}
}

func TestConcentratorEnv(t *testing.T) {
	t.Setenv("BRAID_GRACE_PERIOD", "30s")
	t.Setenv("BRAID_NAT_ENABLED", "false")
	t.Setenv("BRAID_POOL_IPV4", "10.99.0.0/24")
	t.Setenv("BRAID_LISTEN", "[::]:443")
	c, err := LoadConcentrator(writeConfig(t, minimalConcentrator+"nat:\n  interface: eth0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.GracePeriod != 30*time.Second || c.NAT.Enabled || c.NAT.Interface != "eth0" ||
		c.Pool.IPv4 != netip.MustParsePrefix("10.99.0.0/24") || c.Listen != netip.MustParseAddrPort("[::]:443") {
		t.Errorf("got %+v", c)
	}
}

func TestPoolFamilyDisabled(t *testing.T) {
	c, err := LoadConcentrator(writeConfig(t, minimalConcentrator+"pool:\n  ipv6: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pool.IPv6.IsValid() || c.Pool.IPv4 != netip.MustParsePrefix("100.96.0.0/16") {
		t.Errorf("pool %+v", c.Pool)
	}
}

func TestOverrides(t *testing.T) {
	t.Setenv("BRAID_MODE", "aggregate")
	c, err := LoadClientWith(writeConfig(t, minimalClient), map[string]any{
		"mode": "failover", "tun.mtu": "1400", "concentrator": "198.51.100.1:9",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeFailover || c.Tun.MTU != 1400 || c.Concentrator != "198.51.100.1:9" {
		t.Errorf("got %+v", c)
	}
	k, err := LoadConcentratorWith(writeConfig(t, minimalConcentrator), map[string]any{"listen": "127.0.0.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Listen != netip.MustParseAddrPort("127.0.0.1:5000") {
		t.Errorf("listen %v", k.Listen)
	}
}

func TestNoFile(t *testing.T) {
	t.Setenv("BRAID_PRIVATE_KEY_FILE", "/k")
	if _, err := LoadConcentratorWith("", nil); err != nil {
		t.Fatal(err)
	}
	_, err := LoadClientWith("", nil)
	if want := `config: key "concentrator" is empty`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
		concentrator     bool
	}{
		{"unknown key", minimalClient + "uplinkz: []\n", `unknown key "uplinkz"`, false},
		{"unknown keys", minimalClient + "b: 1\na: 2\n", `unknown keys "a", "b"`, false},
		{"unknown nested key", minimalClient + "tun:\n  mtuu: 1300\n", `unknown key "tun.mtuu"`, false},
		{"unknown uplink key", minimalClient + "  - interface: wwan0\n    nmae: lte\n", `unknown key "uplinks[2].nmae"`, false},
		{"unknown client key", minimalConcentrator + "clients:\n  - name: a\n    key: x\n", `unknown key "clients[0].key"`, true},
		{"bad prefix", minimalClient + "routes: [10.0.0.0/8, 10.0.0.0/33]\n", `key "routes[1]": "10.0.0.0/33" is not a valid prefix`, false},
		{"bad address", strings.Replace(minimalClient, "192.0.2.10", "192.0.2.300", 1), `key "uplinks[1].source": "192.0.2.300" is not a valid IP address`, false},
		{"bad integer", minimalClient + "tun:\n  mtu: big\n", `key "tun.mtu": "big" is not a valid integer`, false},
		{"list for map", minimalClient + "tun: [1, 2]\n", `key "tun": expected a map`, false},
		{"list for integer", minimalClient + "tun:\n  mtu: [1]\n", `key "tun.mtu": expected integer, got list`, false},
		{"bad duration", minimalConcentrator + "grace_period: soon\n", `key "grace_period": "soon" is not a valid duration`, true},
		{"bad listen", minimalConcentrator + "listen: example.com:80\n", `key "listen": "example.com:80" is not a valid IP:port address`, true},
		{"bad yaml", "mode: [\n", `yaml: `, false},
		{"invalid", minimalClient + "mode: fastest\n", `key "mode": "fastest" is not one of failover, aggregate`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.text)
			var err error
			if tt.concentrator {
				_, err = LoadConcentrator(path)
			} else {
				_, err = LoadClient(path)
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config "+path+": ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("got  %s\nwant config %s: ...%s...", msg, path, tt.want)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := LoadClient(path)
	if want := "config " + path + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func validClient() *Client {
	return &Client{
		Concentrator:          "vpn.example.com:4443",
		ConcentratorPublicKey: testKey,
		PrivateKeyFile:        "/k",
		Uplinks:               []Uplink{{Name: "wifi", Interface: "wlan0", Weight: 1}, {Name: "lte", Interface: "wwan0", Weight: 1}},
		Mode:                  ModeFailover,
		Redundancy:            2,
		Routes:                prefixes("0.0.0.0/0"),
		Tun:                   Tun{Name: "braid0"},
		Table:                 7800,
		FwMark:                0x7800,
		Control:               "/run/braid/client.sock",
		LogLevel:              "info",
	}
}

func TestClientValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Client)
		want   string
	}{
		{"valid", func(c *Client) {}, ""},
		{"no concentrator", func(c *Client) { c.Concentrator = "" }, `key "concentrator" is empty`},
		{"concentrator not host:port", func(c *Client) { c.Concentrator = "foo" }, `key "concentrator": "foo" is not host:port`},
		{"concentrator bad port", func(c *Client) { c.Concentrator = "foo:http" }, `key "concentrator": "foo:http" is not host:port`},
		{"ipv6 concentrator", func(c *Client) { c.Concentrator = "[2001:db8::1]:443" }, ""},
		{"no public key", func(c *Client) { c.ConcentratorPublicKey = "" }, `key "concentrator_public_key" is empty`},
		{"short public key", func(c *Client) { c.ConcentratorPublicKey = "AAAA" }, `key "concentrator_public_key": "AAAA" is not a base64 ed25519 public key (32 bytes)`},
		{"no key file", func(c *Client) { c.PrivateKeyFile = "" }, `key "private_key_file" is empty`},
		{"no uplinks", func(c *Client) { c.Uplinks = nil }, `key "uplinks": at least one uplink is needed`},
		{"empty interface", func(c *Client) { c.Uplinks[1].Interface = "" }, `keys "uplinks[1].interface" and "uplinks[1].match" are both empty; give one`},
		{"interface and match", func(c *Client) { c.Uplinks[1].Match = "wwan*" }, `keys "uplinks[1].interface" and "uplinks[1].match" are both set; give one`},
		{"match pattern", func(c *Client) { c.Uplinks[1].Interface, c.Uplinks[1].Match = "", "wwan*" }, ""},
		{"match default route", func(c *Client) { c.Uplinks[1].Interface, c.Uplinks[1].Match = "", "default-route" }, ""},
		{"match without name", func(c *Client) { c.Uplinks[1] = Uplink{Match: "wl*", Weight: 1} }, ""},
		{"bad match", func(c *Client) { c.Uplinks[1].Interface, c.Uplinks[1].Match = "", "wl[an" }, `key "uplinks[1].match": "wl[an" is not a valid interface name pattern`},
		{"match with slash", func(c *Client) { c.Uplinks[1].Interface, c.Uplinks[1].Match = "", "a/b" }, `key "uplinks[1].match": "a/b" is not a valid interface name pattern`},
		{"match with source", func(c *Client) {
			c.Uplinks[1].Interface, c.Uplinks[1].Match, c.Uplinks[1].Source = "", "wl*", netip.MustParseAddr("192.0.2.1")
		}, `key "uplinks[1].source": cannot be set with "uplinks[1].match"`},
		{"match long name", func(c *Client) {
			c.Uplinks[1].Interface, c.Uplinks[1].Match, c.Uplinks[1].Name = "", "wl*", "wireless-uplink-x"
		}, `key "uplinks[1].name": "wireless-uplink-x" is too long for a match entry`},
		{"match budget without name", func(c *Client) { c.Uplinks[1] = Uplink{Match: "wl*", Weight: 1, Budget: 1 << 30} }, `key "uplinks[1].name": a match entry with a budget needs a name`},
		{"long interface", func(c *Client) { c.Uplinks[1].Interface = "wwan0123456789ab" }, `key "uplinks[1].interface": "wwan0123456789ab" is not a valid interface name`},
		{"duplicate names", func(c *Client) { c.Uplinks[1].Name = "wifi" }, `key "uplinks[1].name": name "wifi" is used by another uplink`},
		{"bad name", func(c *Client) { c.Uplinks[0].Name = "my wifi" }, `key "uplinks[0].name": "my wifi" is not a valid name`},
		{"zero weight", func(c *Client) { c.Uplinks[0].Weight = 0 }, `key "uplinks[0].weight": 0 is not a positive weight`},
		{"negative weight", func(c *Client) { c.Uplinks[0].Weight = -1 }, `key "uplinks[0].weight": -1 is not a positive weight`},
		{"unspecified source", func(c *Client) { c.Uplinks[0].Source = netip.IPv4Unspecified() }, `key "uplinks[0].source": 0.0.0.0 is not a unicast address`},
		{"bad mode", func(c *Client) { c.Mode = "fastest" }, `key "mode": "fastest" is not one of failover, aggregate`},
		{"route host bits", func(c *Client) { c.Routes = prefixes("10.1.2.3/8") }, `key "routes[0]": 10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?`},
		{"no routes", func(c *Client) { c.Routes = nil }, ""},
		{"empty tun name", func(c *Client) { c.Tun.Name = "" }, `key "tun.name" is empty`},
		{"small mtu", func(c *Client) { c.Tun.MTU = 1000 }, `key "tun.mtu": 1000 is not 0 (automatic) or 1280..65535`},
		{"large mtu", func(c *Client) { c.Tun.MTU = 65536 }, `key "tun.mtu": 65536 is not 0 (automatic) or 1280..65535`},
		{"min mtu", func(c *Client) { c.Tun.MTU = 1280 }, ""},
		{"table", func(c *Client) { c.Table = 0 }, `key "table": 0 is not a routing table number (1..4294967295)`},
		{"fwmark", func(c *Client) { c.FwMark = 0 }, `key "fwmark": must not be 0`},
		{"control", func(c *Client) { c.Control = "" }, `key "control" is empty`},
		{"log level", func(c *Client) { c.LogLevel = "loud" }, `key "log_level": "loud" is not one of debug, info, warn, error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validClient()
			tt.change(c)
			checkErr(t, c.Validate(), tt.want)
		})
	}
}

func validConcentrator() *Concentrator {
	return &Concentrator{
		Listen:         netip.MustParseAddrPort("0.0.0.0:4443"),
		PrivateKeyFile: "/k",
		Pool:           Pool{IPv4: netip.MustParsePrefix("100.96.0.0/16"), IPv6: netip.MustParsePrefix("fd62:7261:6964::/64")},
		NAT:            NAT{Enabled: true},
		Clients: []ClientEntry{
			{Name: "alice", PublicKey: testKey},
			{Name: "branch", PublicKey: strings.Repeat("B", 43) + "=", Prefixes: prefixes("10.1.0.0/24")},
		},
		Tun:         Tun{Name: "braid0"},
		StateFile:   "/var/lib/braid/leases.json",
		GracePeriod: 2 * time.Minute,
		Control:     "/run/braid/concentrator.sock",
		LogLevel:    "info",
	}
}

func TestConcentratorValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Concentrator)
		want   string
	}{
		{"valid", func(c *Concentrator) {}, ""},
		{"no clients", func(c *Concentrator) { c.Clients = nil }, ""},
		{"no listen", func(c *Concentrator) { c.Listen = netip.AddrPort{} }, `key "listen" is empty`},
		{"listen port 0", func(c *Concentrator) { c.Listen = netip.MustParseAddrPort("0.0.0.0:0") }, `key "listen": 0.0.0.0:0 has no port`},
		{"no key file", func(c *Concentrator) { c.PrivateKeyFile = "" }, `key "private_key_file" is empty`},
		{"no pool", func(c *Concentrator) { c.Pool = Pool{} }, `keys "pool.ipv4" and "pool.ipv6" are both empty; set at least one`},
		{"ipv4 only", func(c *Concentrator) { c.Pool.IPv6 = netip.Prefix{} }, ""},
		{"ipv6 only", func(c *Concentrator) { c.Pool.IPv4 = netip.Prefix{} }, ""},
		{"v6 in ipv4", func(c *Concentrator) { c.Pool.IPv4 = netip.MustParsePrefix("fd00::/64") }, `key "pool.ipv4": fd00::/64 is not an IPv4 prefix`},
		{"v4 in ipv6", func(c *Concentrator) { c.Pool.IPv6 = netip.MustParsePrefix("10.0.0.0/8") }, `key "pool.ipv6": 10.0.0.0/8 is not an IPv6 prefix`},
		{"pool too small", func(c *Concentrator) { c.Pool.IPv4 = netip.MustParsePrefix("10.0.0.0/31") }, `key "pool.ipv4": 10.0.0.0/31 is too small, use at most /30`},
		{"pool host bits", func(c *Concentrator) { c.Pool.IPv4 = netip.MustParsePrefix("10.0.0.1/24") }, `key "pool.ipv4": 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?`},
		{"empty client name", func(c *Concentrator) { c.Clients[1].Name = "" }, `key "clients[1].name" is empty`},
		{"duplicate client name", func(c *Concentrator) { c.Clients[1].Name = "alice" }, `key "clients[1].name": name "alice" is used by another client`},
		{"no client key", func(c *Concentrator) { c.Clients[0].PublicKey = "" }, `key "clients[0].public_key" is empty`},
		{"bad client key", func(c *Concentrator) { c.Clients[0].PublicKey = "not base64!" }, `key "clients[0].public_key": "not base64!" is not a base64 ed25519 public key (32 bytes)`},
		{"duplicate client key", func(c *Concentrator) { c.Clients[1].PublicKey = testKey }, `key "clients[1].public_key": public key is used by another client`},
		{"prefix overlaps pool", func(c *Concentrator) { c.Clients[1].Prefixes = prefixes("100.96.1.0/24") }, `key "clients[1].prefixes[0]": 100.96.1.0/24 overlaps 100.96.0.0/16 of "pool.ipv4"`},
		{"prefixes overlap", func(c *Concentrator) { c.Clients[0].Prefixes = prefixes("10.0.0.0/8") }, `key "clients[1].prefixes[0]": 10.1.0.0/24 overlaps 10.0.0.0/8 of "clients[0].prefixes[0]"`},
		{"empty tun name", func(c *Concentrator) { c.Tun.Name = "" }, `key "tun.name" is empty`},
		{"bad mtu", func(c *Concentrator) { c.Tun.MTU = 70000 }, `key "tun.mtu": 70000 is not 0 (automatic) or 1280..65535`},
		{"no state file", func(c *Concentrator) { c.StateFile = "" }, `key "state_file" is empty`},
		{"short grace", func(c *Concentrator) { c.GracePeriod = 500 * time.Millisecond }, `key "grace_period": 500ms is less than 1s`},
		{"no control", func(c *Concentrator) { c.Control = "" }, `key "control" is empty`},
		{"log level", func(c *Concentrator) { c.LogLevel = "trace" }, `key "log_level": "trace" is not one of debug, info, warn, error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConcentrator()
			tt.change(c)
			checkErr(t, c.Validate(), tt.want)
		})
	}
}

// checkErr checks err is nil if want is empty, else starts with want.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want %s", want)
	case want != "" && !strings.HasPrefix(err.Error(), want):
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestUplinkMatches(t *testing.T) {
	tests := []struct {
		u       Uplink
		ifname  string
		def     bool
		matches bool
		path    string
	}{
		{Uplink{Name: "wifi", Match: "wlan*"}, "wlan0", false, true, "wifi-wlan0"},
		{Uplink{Name: "wifi", Match: "wlan*"}, "wwan0", true, false, "wifi-wwan0"},
		{Uplink{Match: "wl?"}, "wl0", false, true, "wl0"},
		{Uplink{Match: "eth[0-3]"}, "eth4", false, false, "eth4"},
		{Uplink{Name: "any", Match: MatchDefaultRoute}, "eth0", true, true, "any-eth0"},
		{Uplink{Name: "any", Match: MatchDefaultRoute}, "eth1", false, false, "any-eth1"},
		{Uplink{Name: "lte", Interface: "wwan0"}, "wwan0", false, true, "lte-wwan0"},
		{Uplink{Name: "lte", Interface: "wwan0"}, "wwan1", true, false, "lte-wwan1"},
		{Uplink{Match: "*"}, "-odd@x", false, true, "_odd_x"},
	}
	for _, tt := range tests {
		if got := tt.u.Matches(tt.ifname, tt.def); got != tt.matches {
			t.Errorf("%+v.Matches(%q, %v) = %v, want %v", tt.u, tt.ifname, tt.def, got, tt.matches)
		}
		if got := tt.u.PathName(tt.ifname); got != tt.path {
			t.Errorf("%+v.PathName(%q) = %q, want %q", tt.u, tt.ifname, got, tt.path)
		}
		if err := validName(tt.u.PathName(tt.ifname)); err != nil {
			t.Errorf("PathName(%q): %v", tt.ifname, err)
		}
	}
}

func TestLoadClientMatch(t *testing.T) {
	c, err := LoadClient(writeConfig(t, minimalClient+"  - match: \"wwan*\"\n    name: lte\n    priority: 2\n  - match: default-route\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Uplink{
		{Name: "lte", Match: "wwan*", Priority: 2, Weight: 1},
		{Match: MatchDefaultRoute, Weight: 1},
	}
	for i, w := range want {
		got := c.Uplinks[2+i]
		if got.Name != w.Name || got.Match != w.Match || got.Interface != "" || got.Priority != w.Priority || got.Weight != w.Weight {
			t.Errorf("uplinks[%d] = %+v, want %+v", 2+i, got, w)
		}
	}
	_, err = LoadClient(writeConfig(t, minimalClient+"  - match: \"wwan*\"\n    interface: wwan0\n"))
	if err == nil || !strings.Contains(err.Error(), `keys "uplinks[2].interface" and "uplinks[2].match" are both set`) || !strings.Contains(err.Error(), "config ") {
		t.Errorf("err = %v, want one naming the file and both keys", err)
	}
}
