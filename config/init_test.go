package config

import (
	"bytes"
	"crypto/ed25519"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestWriteInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "braid")
	files, err := WriteInit(InitSpec{
		Dir:          dir,
		Concentrator: "vpn.example.com:9443",
		Clients: []InitClient{
			{Name: "laptop"},
			{Name: "branch", Prefixes: prefixes("10.1.0.0/24", "10.2.0.0/24")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 6 {
		t.Errorf("wrote %d files: %v", len(files), files)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir: %v, %v", fi.Mode(), err)
	}

	conc, err := LoadConcentrator(filepath.Join(dir, "concentrator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if conc.Listen != netip.MustParseAddrPort("0.0.0.0:9443") || conc.PrivateKeyFile != filepath.Join(dir, "concentrator.key") {
		t.Errorf("concentrator: %+v", conc)
	}
	concKey, err := LoadPrivateKey(conc.PrivateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(conc.Clients) != 2 || !reflect.DeepEqual(conc.Clients[1].Prefixes, prefixes("10.1.0.0/24", "10.2.0.0/24")) {
		t.Fatalf("clients: %+v", conc.Clients)
	}

	for i, name := range []string{"laptop", "branch"} {
		c, err := LoadClient(filepath.Join(dir, "client-"+name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if c.Concentrator != "vpn.example.com:9443" || c.Mode != ModeAuto || c.Uplinks[0].Interface != "eth0" {
			t.Errorf("client %s: %+v", name, c)
		}
		if c.ConcentratorPublicKey != EncodePublicKey(concKey.Public().(ed25519.PublicKey)) {
			t.Errorf("client %s: concentrator_public_key does not match concentrator.key", name)
		}
		key, err := LoadPrivateKey(c.PrivateKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		entry := conc.Clients[i]
		pub, _ := ParsePublicKey(entry.PublicKey)
		if entry.Name != name || !bytes.Equal(pub, key.Public().(ed25519.PublicKey)) {
			t.Errorf("concentrator's entry %+v does not match client %s", entry, name)
		}
	}
}

func TestWriteInitNoClients(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteInit(InitSpec{Dir: dir, Concentrator: "[2001:db8::1]:4443"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConcentrator(filepath.Join(dir, "concentrator.yaml")); err != nil {
		t.Fatal(err)
	}
}

func TestWriteInitNoOverwrite(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "client-b.yaml")
	if err := os.WriteFile(existing, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := WriteInit(InitSpec{Dir: dir, Concentrator: "vpn:1", Clients: []InitClient{{Name: "a"}, {Name: "b"}}})
	if err == nil || !strings.Contains(err.Error(), existing) {
		t.Fatalf("got %v, want an error naming %s", err, existing)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("wrote files despite the error: %v", entries)
	}
	if b, _ := os.ReadFile(existing); string(b) != "mine" {
		t.Error("overwrote the existing file")
	}
}

func TestWriteInitBadSpec(t *testing.T) {
	tests := []struct {
		name string
		spec InitSpec
		want string
	}{
		{"no dir", InitSpec{Concentrator: "vpn:1"}, "init: no directory given"},
		{"bad concentrator", InitSpec{Dir: "x", Concentrator: "vpn"}, `init: key "concentrator": "vpn" is not host:port`},
		{"duplicate client", InitSpec{Dir: "x", Concentrator: "vpn:1", Clients: []InitClient{{Name: "a"}, {Name: "a"}}}, `init: client "a" given twice`},
		{"bad name", InitSpec{Dir: "x", Concentrator: "vpn:1", Clients: []InitClient{{Name: "../a"}}}, `init: client "../a" is not a valid name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := WriteInit(tt.spec)
			checkErr(t, err, tt.want)
		})
	}
}

func TestWriteInitInvalidResult(t *testing.T) {
	// A client's LAN inside the default pool is caught by loading the
	// result back, and nothing is left behind.
	dir := t.TempDir()
	spec := InitSpec{Dir: dir, Concentrator: "vpn:1", Clients: []InitClient{{Name: "a", Prefixes: prefixes("100.96.1.0/24")}}}
	_, err := WriteInit(spec)
	checkErr(t, err, "config "+filepath.Join(dir, "concentrator.yaml")+`: key "clients[0].prefixes[0]": 100.96.1.0/24 overlaps`)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left files behind: %v", entries)
	}
}

func TestParseInitClient(t *testing.T) {
	tests := []struct {
		in   string
		want InitClient
		err  string
	}{
		{"laptop", InitClient{Name: "laptop"}, ""},
		{"branch=10.1.0.0/24", InitClient{Name: "branch", Prefixes: prefixes("10.1.0.0/24")}, ""},
		{"branch=10.1.0.0/24, 10.2.0.0/24,fd00:1::/64", InitClient{Name: "branch", Prefixes: prefixes("10.1.0.0/24", "10.2.0.0/24", "fd00:1::/64")}, ""},
		{"", InitClient{}, `"" is not a valid name`},
		{"a/b", InitClient{}, `"a/b" is not a valid name`},
		{"branch=", InitClient{}, `"" is not a valid prefix`},
		{"branch=10.1.0.0/33", InitClient{}, `"10.1.0.0/33" is not a valid prefix`},
		{"branch=10.1.0.1/24", InitClient{}, "10.1.0.1/24 has host bits set; did you mean 10.1.0.0/24?"},
	}
	for _, tt := range tests {
		got, err := ParseInitClient(tt.in)
		if tt.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Errorf("ParseInitClient(%q): got %v, want %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseInitClient(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// TestClientTemplateExamples uncomments the commented examples of the
// client template (the second uplink, redundancy and classes): they load.
func TestClientTemplateExamples(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "braid")
	if _, err := WriteInit(InitSpec{Dir: dir, Concentrator: "vpn.example.com:9443", Clients: []InitClient{{Name: "laptop"}}}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "client-laptop.yaml")
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	inClasses := false
	for _, line := range strings.Split(string(text), "\n") {
		switch {
		case strings.HasPrefix(line, "  # - "), strings.HasPrefix(line, "  #   "):
			line = "  " + line[4:] // the second and third uplinks, not the prose between
		case line == "# redundancy: 2", line == "# classes:":
			line, inClasses = line[2:], line == "# classes:"
		case inClasses && strings.HasPrefix(line, "#   "):
			line = line[2:]
		default:
			inClasses = false
		}
		out = append(out, line)
	}
	uncommented := strings.Join(out, "\n")
	if err := os.WriteFile(path, []byte(uncommented), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadClient(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, uncommented)
	}
	if len(c.Uplinks) != 3 || c.Uplinks[2].Match != "wlan*" || c.Uplinks[1].RateCap != 20e6 || c.Redundancy != 2 || len(c.Classes) != 2 || c.Classes[1].DSCP[0] != 46 {
		t.Errorf("uncommented examples gave %+v", c)
	}
}
