package config

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

// InitSpec says what WriteInit writes.
type InitSpec struct {
	Dir          string // created with mode 0700 if missing
	Concentrator string // the concentrator's host:port as clients reach it
	Clients      []InitClient
}

// InitClient is a client to write a config for.
type InitClient struct {
	Name     string
	Prefixes []netip.Prefix // LAN prefixes the concentrator routes to it
}

// ParseInitClient parses "NAME" or "NAME=PREFIX,PREFIX...".
func ParseInitClient(s string) (InitClient, error) {
	name, list, hasList := strings.Cut(s, "=")
	if err := validName(name); err != nil {
		return InitClient{}, err
	}
	c := InitClient{Name: name}
	if !hasList {
		return c, nil
	}
	for _, f := range strings.Split(list, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return InitClient{}, fmt.Errorf("%q is not a valid prefix", f)
		}
		if p != p.Masked() {
			return InitClient{}, fmt.Errorf("%s has host bits set; did you mean %s?", p, p.Masked())
		}
		c.Prefixes = append(c.Prefixes, p)
	}
	return c, nil
}

// WriteInit writes a fresh set of keys and configs into spec.Dir:
// concentrator.key, concentrator.yaml, and client-NAME.key and
// client-NAME.yaml per client, each config naming its key file by
// absolute path and the other side's public key. It overwrites nothing:
// if any of the files exists, it writes none. It returns the paths
// written.
func WriteInit(spec InitSpec) ([]string, error) {
	dir, err := spec.check()
	if err != nil {
		return nil, err
	}
	for _, f := range spec.files(dir) {
		if _, err := os.Lstat(f); err == nil {
			return nil, fmt.Errorf("%s already exists; not overwriting it", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	w := &initWriter{dir: dir}
	if err := w.write(spec); err != nil {
		for _, f := range w.written {
			os.Remove(f)
		}
		return nil, err
	}
	return w.written, nil
}

// check validates spec and returns its directory made absolute.
func (spec *InitSpec) check() (string, error) {
	if spec.Dir == "" {
		return "", errors.New("init: no directory given")
	}
	if err := checkHostPort("concentrator", spec.Concentrator); err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	seen := map[string]bool{}
	for _, c := range spec.Clients {
		if err := validName(c.Name); err != nil {
			return "", fmt.Errorf("init: client %w", err)
		}
		if seen[c.Name] {
			return "", fmt.Errorf("init: client %q given twice", c.Name)
		}
		seen[c.Name] = true
	}
	return filepath.Abs(spec.Dir)
}

func (spec *InitSpec) files(dir string) []string {
	files := []string{filepath.Join(dir, "concentrator.key"), filepath.Join(dir, "concentrator.yaml")}
	for _, c := range spec.Clients {
		files = append(files, filepath.Join(dir, "client-"+c.Name+".key"), filepath.Join(dir, "client-"+c.Name+".yaml"))
	}
	return files
}

type initWriter struct {
	dir     string
	written []string
}

func (w *initWriter) write(spec InitSpec) error {
	concKey := filepath.Join(w.dir, "concentrator.key")
	concPub, err := w.key(concKey)
	if err != nil {
		return err
	}
	var clients []ClientEntry
	keyFiles := map[string]string{}
	for _, c := range spec.Clients {
		keyFiles[c.Name] = filepath.Join(w.dir, "client-"+c.Name+".key")
		pub, err := w.key(keyFiles[c.Name])
		if err != nil {
			return err
		}
		clients = append(clients, ClientEntry{Name: c.Name, PublicKey: EncodePublicKey(pub), Prefixes: c.Prefixes})
	}
	_, port, _ := net.SplitHostPort(spec.Concentrator)
	concPath := filepath.Join(w.dir, "concentrator.yaml")
	err = w.yaml(concPath, concentratorTemplate, map[string]any{
		"Listen": "0.0.0.0:" + port, "KeyFile": concKey, "Clients": clients,
	})
	if err != nil {
		return err
	}
	if _, err := LoadConcentrator(concPath); err != nil {
		return err
	}
	for _, c := range spec.Clients {
		path := filepath.Join(w.dir, "client-"+c.Name+".yaml")
		err := w.yaml(path, clientTemplate, map[string]any{
			"Name": c.Name, "Concentrator": spec.Concentrator,
			"PublicKey": EncodePublicKey(concPub), "KeyFile": keyFiles[c.Name],
		})
		if err != nil {
			return err
		}
		if _, err := LoadClient(path); err != nil {
			return err
		}
	}
	return nil
}

func (w *initWriter) key(path string) (ed25519.PublicKey, error) {
	pub, err := GenerateKeyFile(path)
	if err != nil {
		return nil, err
	}
	w.written = append(w.written, path)
	return pub, nil
}

func (w *initWriter) yaml(path string, t *template.Template, data any) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w.written = append(w.written, path)
	err = t.Execute(f, data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// quote makes s a YAML double-quoted scalar: JSON strings are valid YAML.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var funcs = template.FuncMap{"q": quote}

var concentratorTemplate = template.Must(template.New("concentrator").Funcs(funcs).Parse(`# braid concentrator configuration, written by braid init.
# Run: braid concentrator --config THIS_FILE

# UDP address to listen on. Clients connect to it through the public address.
listen: {{.Listen}}

# This concentrator's private key. Keep it secret (mode 0600).
private_key_file: {{q .KeyFile}}

# Clients' inner addresses are leased from these prefixes.
pool:
  ipv4: 100.96.0.0/16
  ipv6: fd62:7261:6964::/64

# Masquerade clients' traffic leaving this host. Set interface to limit it
# to one outgoing interface.
nat:
  enabled: true
  # interface: eth0

# Clients allowed to connect, by public key. prefixes are LANs behind a
# client (a branch office) that the concentrator routes to it.
{{- if not .Clients}}
clients: []
{{- else}}
clients:
{{- range .Clients}}
  - name: {{q .Name}}
    public_key: {{q .PublicKey}}
{{- if .Prefixes}}
    prefixes:
{{- range .Prefixes}}
      - {{.}}
{{- end}}
{{- end}}
{{- end}}
{{- end}}

log_level: info
`))

var clientTemplate = template.Must(template.New("client").Funcs(funcs).Parse(`# braid client configuration for {{q .Name}}, written by braid init.
# Edit the uplinks to match this machine's interfaces, then run:
#   braid client --config THIS_FILE

# The concentrator's address and public key.
concentrator: {{q .Concentrator}}
concentrator_public_key: {{q .PublicKey}}

# This client's private key. Keep it secret (mode 0600).
private_key_file: {{q .KeyFile}}

# auto: each flow on an uplink picked from measurements (so it never does
#   worse than on the best uplink alone), more flows spread over them, and
#   small interactive packets (DNS, calls, TCP ACKs) sent on two.
# failover: all traffic on the best working uplink (lowest priority).
# aggregate: each packet on the uplink where it arrives first.
# redundant: every packet on "redundancy" uplinks (2..number of uplinks).
# flow: each flow on one uplink, flows spread by measured capacity.
mode: auto
# redundancy: 2

# Traffic classes: packets a class matches (the first that does) are
# scheduled by its mode. Match on protocol (tcp, udp, icmp or a number),
# ports (either end), src_ports, dst_ports ("443" or "10000-20000"),
# dscp (0..63 or EF, AF41, CS1...) and src, dst prefixes.
# classes:
#   - name: calls
#     mode: redundant               # copies: 2 (default: redundancy)
#     protocol: udp
#     dst_ports: [3478, "10000-20000"]
#   - name: voice
#     mode: redundant
#     dscp: [EF]

# One entry per network interface to send tunnel traffic over.
uplinks:
  - interface: eth0
    priority: 0
  # - interface: wwan0
  #   priority: 10
  #   metered: true
  #   budget: 10GiB                 # data plan per month (500MB, 10GiB, ...)
  #   budget_start_day: 1           # the plan's first day of the month, 1..28
  #   budget_action: failover-only  # then: failover-only, interactive-only or block
  #   budget_warn: 80%
  #   rate_cap: 20Mbit              # ceiling on the measured rate (500kbit, 1.5Gbit, ...)
  # Or one path per interface matching a pattern (or default-route: every
  # interface with a default route), added and removed as they come and go:
  # - match: "wlan*"
  #   name: wifi                    # paths wifi-wlan0, wifi-wlan1, ...
  #   priority: 5

# Destinations sent through the tunnel.
routes:
  - 0.0.0.0/0
  - ::/0

log_level: info
`))
