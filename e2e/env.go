// Package e2e runs braid end to end on real kernels: the namespace lab
// (package lab), the braid binary started as a concentrator and a client
// in their namespaces, and TCP traffic from a host on the client's LAN to a
// server behind the concentrator. The e2e tests and `braid demo` use it.
package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/e2e/lab"
	"github.com/braid-tunnel/braid/tunnel"
)

// ConcPort is the concentrator's UDP port in the lab.
const ConcPort = 4443

// Options choose the lab's links and braid's mode.
type Options struct {
	Links lab.TopologyOptions
	Mode  string // scheduler mode of the client; "" for failover
	// GracePeriod of the concentrator; 0 for the default.
	GracePeriod time.Duration
	// StrictRPFilter turns on strict reverse-path filtering in the
	// client's namespace, as on RHEL-like hosts.
	StrictRPFilter bool
	// ExtraClients more identities are listed in the concentrator's
	// config (named extra0, extra1, ...); their keys are in
	// Env.ExtraKeys, for tests that open many sessions.
	ExtraClients int
	// Metered2 marks uplink 2 metered.
	Metered2 bool
	// EqualPriority gives both uplinks priority 0 (bonding), instead of
	// uplink 2 the lower priority 1 (failover).
	EqualPriority bool
	// Uplinks, if set, replaces the client's uplinks list: YAML list
	// items, indented by two spaces.
	Uplinks string
	// UpPaths is how many paths Up waits for (default 2): fewer when an
	// uplink is cut from the start or Uplinks lists other ones.
	UpPaths int
}

// Env is a running lab with braid in it.
type Env struct {
	Topo *lab.Topology
	Dir  string // configs, keys, state, logs
	// ExtraKeys are the private keys of Options.ExtraClients.
	ExtraKeys []ed25519.PrivateKey
	bin       string
	opts      Options

	conc, client *daemon
	concSocket   string
	clientSocket string
}

// Start builds the lab, writes configs and starts the concentrator and the
// client, then waits until both of the client's paths are up.
func Start(ctx context.Context, bin string, opts Options) (*Env, error) {
	e, err := Build(bin, opts)
	if err != nil {
		return nil, err
	}
	if err := e.Up(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Build builds the lab and writes braid's configs, starting nothing.
func Build(bin string, opts Options) (*Env, error) {
	dir, err := os.MkdirTemp("", "braid-e2e-")
	if err != nil {
		return nil, err
	}
	topo, err := lab.NewTopology(labPrefix(), opts.Links)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e := &Env{Topo: topo, Dir: dir, bin: bin, opts: opts,
		concSocket: filepath.Join(dir, "concentrator.sock"), clientSocket: filepath.Join(dir, "client.sock")}
	if err := e.writeConfigs(); err != nil {
		e.Close()
		return nil, err
	}
	if opts.StrictRPFilter {
		for _, conf := range []string{"all", "default", topo.Uplink1Dev, topo.Uplink2Dev, topo.LANDev} {
			if err := topo.Client.Sysctl("net/ipv4/conf/"+conf+"/rp_filter", "1"); err != nil {
				e.Close()
				return nil, err
			}
		}
	}
	return e, nil
}

// Up starts the concentrator and the client and waits for both paths.
func (e *Env) Up(ctx context.Context) error {
	if err := e.StartConcentrator(); err != nil {
		return err
	}
	if err := e.StartClient(); err != nil {
		return err
	}
	n := 2
	if e.opts.UpPaths > 0 {
		n = e.opts.UpPaths
	}
	return e.WaitPaths(ctx, n, 20*time.Second)
}

// StartClient starts the client, without waiting for its paths.
func (e *Env) StartClient() error {
	var err error
	e.client, err = e.start(e.Topo.Client, "client", "client.yaml")
	return err
}

// labPrefix starts the namespace names; the lab adds a random id.
func labPrefix() string { return "bd" }

func (e *Env) writeConfigs() error {
	concPub, err := config.GenerateKeyFile(filepath.Join(e.Dir, "concentrator.key"))
	if err != nil {
		return err
	}
	clientPub, err := config.GenerateKeyFile(filepath.Join(e.Dir, "client.key"))
	if err != nil {
		return err
	}
	otherPub, err := config.GenerateKeyFile(filepath.Join(e.Dir, "other.key"))
	if err != nil {
		return err
	}
	mode := e.opts.Mode
	if mode == "" {
		mode = "failover"
	}
	grace := ""
	if e.opts.GracePeriod > 0 {
		grace = fmt.Sprintf("grace_period: %s\n", e.opts.GracePeriod)
	}
	extra, err := e.extraClients()
	if err != nil {
		return err
	}
	t := e.Topo
	conc := fmt.Sprintf(`listen: "%s"
private_key_file: %s
state_file: %s
control: %s
%spool:
  ipv4: 100.96.0.0/16
  ipv6: "fd62:7261:6964::/64"
nat:
  enabled: true
tun:
  name: braid0
clients:
  - name: branch
    public_key: %s
    prefixes: [%s, "%s"]
  - name: other
    public_key: %s
%s`, netip.AddrPortFrom(t.ConcAddr, ConcPort), filepath.Join(e.Dir, "concentrator.key"), filepath.Join(e.Dir, "leases.json"),
		e.concSocket, grace, config.EncodePublicKey(clientPub), t.LANPrefix, t.LANPrefix6, config.EncodePublicKey(otherPub), extra)
	client := fmt.Sprintf(`concentrator: "%s"
concentrator_public_key: %s
private_key_file: %s
control: %s
mode: %s
tun:
  name: braid0
uplinks:
%s`, netip.AddrPortFrom(t.ConcAddr, ConcPort), config.EncodePublicKey(concPub), filepath.Join(e.Dir, "client.key"),
		e.clientSocket, mode, e.uplinks())
	if err := os.WriteFile(filepath.Join(e.Dir, "concentrator.yaml"), []byte(conc), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(e.Dir, "client.yaml"), []byte(client), 0o600)
}

// uplinks is the client's uplinks list: Options.Uplinks, or the two
// ISPs, isp1 preferred.
func (e *Env) uplinks() string {
	if e.opts.Uplinks != "" {
		return e.opts.Uplinks
	}
	prio2 := 1
	if e.opts.EqualPriority {
		prio2 = 0
	}
	return fmt.Sprintf(`  - name: isp1
    interface: %s
    priority: 0
  - name: isp2
    interface: %s
    priority: %d
    metered: %v
`, e.Topo.Uplink1Dev, e.Topo.Uplink2Dev, prio2, e.opts.Metered2)
}

// extraClients makes the keys of Options.ExtraClients and returns their
// entries for the concentrator's clients list.
func (e *Env) extraClients() (string, error) {
	var b strings.Builder
	for i := range e.opts.ExtraClients {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		e.ExtraKeys = append(e.ExtraKeys, priv)
		fmt.Fprintf(&b, "  - name: extra%d\n    public_key: %s\n", i, config.EncodePublicKey(pub))
	}
	return b.String(), nil
}

// ConcentratorPublicKey reads the concentrator's public key.
func (e *Env) ConcentratorPublicKey() (ed25519.PublicKey, error) {
	key, err := config.LoadPrivateKey(filepath.Join(e.Dir, "concentrator.key"))
	if err != nil {
		return nil, err
	}
	return key.Public().(ed25519.PublicKey), nil
}

// PIDs returns the process ids of the client and the concentrator (0 for
// one that is not running).
func (e *Env) PIDs() (client, concentrator int) {
	return e.client.pid(), e.conc.pid()
}

// daemon is a braid process and the channel closed when it has exited.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs `braid ROLE --config FILE` in ns, logging to DIR/ROLE.log.
func (e *Env) start(ns *lab.NS, role, file string) (*daemon, error) {
	logf, err := os.OpenFile(filepath.Join(e.Dir, role+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(e.bin, role, "--config", filepath.Join(e.Dir, file))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ns.Start(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	return d, nil
}

// StartConcentrator starts the concentrator (again).
func (e *Env) StartConcentrator() error {
	var err error
	e.conc, err = e.start(e.Topo.Conc, "concentrator", "concentrator.yaml")
	return err
}

// StopConcentrator stops the concentrator and waits until it is gone.
func (e *Env) StopConcentrator() {
	e.conc.stop()
	e.conc = nil
}

// stop ends a daemon: SIGTERM, then SIGKILL after a grace of 5 s.
func (d *daemon) stop() {
	if d == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// Close stops the daemons and removes the lab and the directory.
func (e *Env) Close() error {
	e.client.stop()
	e.conc.stop()
	err := e.Topo.Lab.Close()
	os.RemoveAll(e.Dir)
	return err
}

// Logs returns the daemons' logs, for a failing test.
func (e *Env) Logs() string {
	var b strings.Builder
	for _, role := range []string{"concentrator", "client"} {
		data, _ := os.ReadFile(filepath.Join(e.Dir, role+".log"))
		fmt.Fprintf(&b, "--- %s log ---\n%s", role, data)
	}
	return b.String()
}

// ClientStatus reads the client's status.
func (e *Env) ClientStatus() (tunnel.ClientStatus, error) {
	var st tunnel.ClientStatus
	raw, err := tunnel.ReadStatus(e.clientSocket)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(raw, &st)
}

// ConcentratorStatus reads the concentrator's status.
func (e *Env) ConcentratorStatus() (tunnel.ConcentratorStatus, error) {
	var st tunnel.ConcentratorStatus
	raw, err := tunnel.ReadStatus(e.concSocket)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(raw, &st)
}

// WaitPaths waits until n of the client's paths are up.
func (e *Env) WaitPaths(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := e.ClientStatus()
		if err == nil {
			up := 0
			for _, p := range st.Paths {
				if p.State == "up" {
					up++
				}
			}
			if up >= n {
				return nil
			}
			last = fmt.Errorf("%d of %d paths up", up, n)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("waiting for %d paths: %w", n, last)
}

// WaitMTU waits until the client's inner MTU matches what its paths carry
// (path MTU discovery raises it after the handshake).
func (e *Env) WaitMTU(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := e.ClientStatus()
		if err == nil && len(st.Paths) > 0 {
			settled := true
			for _, p := range st.Paths {
				settled = settled && p.State == "up" && p.MTU == st.MTU
			}
			if settled {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("inner MTU did not settle within %v", timeout)
}

// RSS returns the resident memory of the client and the concentrator, in
// bytes, from /proc.
func (e *Env) RSS() (client, concentrator int64, err error) {
	client, err = e.client.rss()
	if err != nil {
		return 0, 0, err
	}
	concentrator, err = e.conc.rss()
	return client, concentrator, err
}

func (d *daemon) pid() int {
	if d == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

func (d *daemon) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", d.cmd.Process.Pid)
}

// ClientPID is the client process's id.
func (e *Env) ClientPID() int { return e.client.cmd.Process.Pid }

// SignalClient sends sig to the client process (SIGSTOP, SIGCONT).
func (e *Env) SignalClient(sig syscall.Signal) error {
	return e.client.cmd.Process.Signal(sig)
}

// ClientFDs counts the client process's open file descriptors.
func (e *Env) ClientFDs() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.ClientPID()))
	return len(ents), err
}

// Cut is how an uplink fails.
type Cut int

const (
	LinkDown  Cut = iota // the client's interface goes down
	Blackhole            // the provider silently drops everything
)

// CutUplink takes uplink i (1 or 2) out: LinkDown drops the carrier of
// the client's interface (the ISP's end goes down), Blackhole makes the
// ISP silently drop everything.
func (e *Env) CutUplink(i int, how Cut) error {
	if how == LinkDown {
		return e.Topo.SetUplinkUp(i, false)
	}
	return e.Topo.ISP(i).Blackhole(lab.ISPClientDev, true)
}

// RestoreUplink undoes CutUplink.
func (e *Env) RestoreUplink(i int, how Cut) error {
	if how == LinkDown {
		return e.Topo.SetUplinkUp(i, true)
	}
	return e.Topo.ISP(i).Blackhole(lab.ISPClientDev, false)
}

// ErrNotRoot is returned where the lab needs root.
var ErrNotRoot = errors.New("the namespace lab needs root")

// TransferRaw is Transfer outside the tunnel, from the client host to the
// concentrator host over uplink 1 (the core does not route the server's
// prefix: only the tunnel reaches it). It crosses the same links as the
// tunnel's path but the last one.
func (e *Env) TransferRaw(ctx context.Context, limit int64, dur time.Duration) (TransferResult, error) {
	return transferBetween(ctx, e.Topo.Client, e.Topo.Conc, e.Topo.ConcAddr, limit, dur, nil)
}
