package e2e

// Transfers for the bonding benchmark (bond_test.go): one or N parallel
// TCP flows, in either direction, plain, bound to one uplink's source
// address, or kernel MPTCP. Every flow is a runTransfer, so every byte is
// checked against the sender's sha256.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/braid-tunnel/braid/e2e/lab"
)

// direction of a transfer, seen from the client's side.
type direction int

const (
	upload   direction = iota // the dialing side (client, LAN host) sends
	download                  // the listening side (concentrator, server) sends
)

func (d direction) String() string {
	if d == upload {
		return "up"
	}
	return "down"
}

// sendLowWater bounds the unsent data in a sender's socket
// (TCP_NOTSENT_LOWAT), so that a transfer ends soon after its sender stops
// writing even on a slow, lossy link, without limiting the congestion
// window.
const sendLowWater = 256 << 10

// flowSpec says how to open a flow: the client side dials from dialNS
// (from local, if valid) a listener in listenNS on addr.
type flowSpec struct {
	dialNS, listenNS *lab.NS
	addr             netip.Addr
	local            netip.Addr
	mptcp            bool

	multipath atomic.Int32 // dialed connections that use MPTCP
}

// listen opens a listener on an ephemeral port, one per flow, so that
// parallel flows never accept each other's connections.
func (s *flowSpec) listen() (net.Listener, error) {
	var ln net.Listener
	err := s.listenNS.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(s.mptcp)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(s.addr, 0).String())
		return err
	})
	return ln, err
}

// dial connects to hostport from the client side.
func (s *flowSpec) dial(ctx context.Context, hostport string) (net.Conn, error) {
	var conn net.Conn
	err := s.dialNS.Do(func() error {
		var d net.Dialer
		if s.local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(s.local, 0))
		}
		d.SetMultipathTCP(s.mptcp)
		var err error
		conn, err = d.DialContext(ctx, "tcp", hostport)
		return err
	})
	if err != nil {
		return nil, err
	}
	if mp, _ := conn.(*net.TCPConn).MultipathTCP(); mp {
		s.multipath.Add(1)
	}
	return conn, nil
}

// transfer runs one flow in direction dir for dur.
func (s *flowSpec) transfer(ctx context.Context, dir direction, dur time.Duration) (TransferResult, error) {
	ln, err := s.listen()
	if err != nil {
		return TransferResult{}, err
	}
	defer ln.Close()
	hostport := ln.Addr().String()
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := s.dial(ctx, hostport)
		if err == nil && dir == upload {
			lowWater(c)
		}
		return c, err
	}
	if dir == upload {
		return runTransfer(ctx, ln, dial, 0, dur, nil)
	}
	// Download: runTransfer's sender "dials" by accepting, and its
	// receiver "accepts" by dialing.
	accept := func(ctx context.Context) (net.Conn, error) {
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
		c, err := ln.Accept()
		if err == nil {
			lowWater(c)
		}
		return c, err
	}
	dl := &dialListener{dial: dial, addr: ln.Addr()}
	dl.ctx, dl.cancel = context.WithCancel(ctx)
	defer dl.cancel()
	return runTransfer(ctx, dl, accept, 0, dur, nil)
}

// lowWater sets TCP_NOTSENT_LOWAT on c, best effort (MPTCP sockets of
// older kernels refuse it).
func lowWater(c net.Conn) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, sendLowWater)
	})
}

// dialListener is a net.Listener whose Accept dials: it turns runTransfer
// around for downloads. Close cancels a dial in progress.
type dialListener struct {
	dial   func(context.Context) (net.Conn, error)
	addr   net.Addr
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *dialListener) Accept() (net.Conn, error) { return l.dial(l.ctx) }
func (l *dialListener) Close() error              { l.cancel(); return nil }
func (l *dialListener) Addr() net.Addr            { return l.addr }

// handshakeRTT is the shortest of three TCP handshakes: the round trip.
func (s *flowSpec) handshakeRTT(ctx context.Context) (time.Duration, error) {
	ln, err := s.listen()
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	best := time.Duration(0)
	for range 3 {
		start := time.Now()
		c, err := s.dial(ctx, ln.Addr().String())
		if err != nil {
			return 0, err
		}
		if d := time.Since(start); best == 0 || d < best {
			best = d
		}
		c.Close()
	}
	return best, nil
}

// transferN runs n flows at once and sums them: Bytes is the total,
// Duration the longest flow's, Intact whether every flow was.
func (s *flowSpec) transferN(ctx context.Context, dir direction, n int, dur time.Duration) (TransferResult, error) {
	results := make([]TransferResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = s.transfer(ctx, dir, dur) })
	}
	wg.Wait()
	sum := TransferResult{Intact: true}
	for _, r := range results {
		sum.Bytes += r.Bytes
		sum.Duration = max(sum.Duration, r.Duration)
		sum.Intact = sum.Intact && r.Intact
		if r.LongestStall > sum.LongestStall {
			sum.LongestStall, sum.StallEnd = r.LongestStall, r.StallEnd
		}
	}
	return sum, errors.Join(errs...)
}

// uplinkBytes returns the bytes the client's uplinks 1 and 2 carried in
// direction dir so far (upload: sent, download: received).
func uplinkBytes(t *lab.Topology, dir direction) ([2]uint64, error) {
	var out [2]uint64
	for i, dev := range []string{t.Uplink1Dev, t.Uplink2Dev} {
		link, err := t.Client.Handle().LinkByName(dev)
		if err != nil {
			return out, err
		}
		st := link.Attrs().Statistics
		if st == nil {
			return out, fmt.Errorf("no statistics for %s", dev)
		}
		out[i] = st.TxBytes
		if dir == download {
			out[i] = st.RxBytes
		}
	}
	return out, nil
}

// setupMPTCP lets the client open a second subflow from uplink 2's
// address (the first leaves by the main table's default, uplink 1), and
// both ends accept two subflows.
func setupMPTCP(t *lab.Topology) error {
	limits := []string{"mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"}
	for _, c := range []struct {
		ns   *lab.NS
		args []string
	}{
		{t.Client, limits},
		{t.Conc, limits},
		{t.Client, []string{"mptcp", "endpoint", "add", t.ClientUplink2Addr.String(), "dev", t.Uplink2Dev, "subflow"}},
	} {
		if err := runIP(c.ns, c.args...); err != nil {
			return err
		}
	}
	return nil
}

// runIP runs `ip ARGS` in ns.
func runIP(ns *lab.NS, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Run(cmd); err != nil {
		return fmt.Errorf("ip %s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// mptcpMIB returns the MPTcpExt counters of ns (/proc/net/netstat).
func mptcpMIB(ns *lab.NS) (map[string]uint64, error) {
	var data []byte
	err := ns.Do(func() error {
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/netstat")
		return err
	})
	if err != nil {
		return nil, err
	}
	var names, values []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "MPTcpExt:" {
			continue
		}
		if names == nil {
			names = f[1:]
		} else {
			values = f[1:]
		}
	}
	out := make(map[string]uint64, len(names))
	for i, name := range names {
		if i < len(values) {
			out[name], _ = strconv.ParseUint(values[i], 10, 64)
		}
	}
	return out, nil
}

// readSysctl reads a sysctl (a path below /proc/sys) in ns.
func readSysctl(ns *lab.NS, key string) string {
	var data []byte
	ns.Do(func() error {
		var err error
		data, err = os.ReadFile("/proc/sys/" + key)
		return err
	})
	return strings.TrimSpace(string(data))
}
