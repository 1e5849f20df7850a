package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/scheduler"
	"github.com/braid-tunnel/braid/transport"
	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.zx2c4.com/wireguard/tun"
)

// Redial backoff of a path whose connection failed: quick at first, so a
// restored uplink is used again soon, capped so a dead one costs little.
const (
	minRedial   = 100 * time.Millisecond
	maxRedial   = 2 * time.Second
	dialTimeout = 5 * time.Second
)

// Uplink is one path the client keeps to the concentrator or, with
// Match set, an entry that makes one path per matching interface (see
// uplinks.go).
type Uplink struct {
	Name      string
	Interface string // for link and address events; "" if none
	// Match, if set, makes this an entry for every interface it returns
	// true for that is up and has an address: each is a path of its own,
	// named PathName(interface), with this entry's priority, weight,
	// metering and budget (shared). Interface is then ignored.
	Match    func(transport.Interface) bool
	PathName func(ifname string) string
	Priority int
	Weight   float64
	Metered  bool
	Budget   *Budget // a data budget; nil for none
	// RateCap, if positive, is the most the path's estimated delivery
	// rate may be, in bytes/s (scheduler.Estimator.Cap): a ceiling for
	// a link slower than it looks, not a rate limit.
	RateCap float64
	// Resolve says how to reach the concentrator over the uplink's
	// interface iface now. It is called before every dial and on every
	// address event of the interface, since an uplink's address can
	// change.
	Resolve func(iface string) (transport.DialConfig, error)

	entry string // a matched path: the name of its Match entry (its budget)
}

// ClientOptions configure a Client.
type ClientOptions struct {
	Device  tun.Device // owned by the client from Run on
	Uplinks []Uplink
	Mode    scheduler.Mode
	// Copies is how many paths mode Redundant sends each packet on; 0
	// means scheduler.DefaultCopies. Classes say their own.
	Copies int
	// Classes are traffic classes, each scheduled by its own mode.
	Classes []scheduler.Class
	// MTU caps the inner MTU; 0 means what the paths carry.
	MTU int
	// Configure is called with the session's addresses and the inner MTU
	// when the client first joins a session and whenever they change, to
	// set them on the TUN and install routes. May be nil.
	Configure func(addrs []netip.Prefix, mtu int) error
	// LinkEvents, if set, tells of uplink interfaces losing or regaining
	// carrier, appearing and going, and of their addresses
	// (transport.WatchLinks), so a cut moves traffic at once, a returning
	// or new uplink is dialled at once and one whose address changed is
	// redialled from the new address at once.
	LinkEvents <-chan transport.LinkEvent
	// Interfaces lists the host's interfaces for the Match entries; nil
	// for transport.Interfaces (with default routes).
	Interfaces func() ([]transport.Interface, error)
	// UsageFile keeps the uplinks' budget usage across restarts (see
	// budget.go); "" keeps it in memory only.
	UsageFile string
	// Clock is the wall clock budget periods follow; nil for time.Now.
	Clock  func() time.Time
	Logger *slog.Logger
}

// Client is the client end of the tunnel: one TUN, one session, one link
// per uplink.
type Client struct {
	opts     ClientOptions
	log      *slog.Logger
	counters Counters
	writer   *tunWriter
	sess     *session
	instance uint64 // tells the concentrator that this process is new

	// runs are the uplinks' paths being kept, by path name; rematch wakes
	// the loop that matches interfaces to the Match entries.
	runsMu  sync.Mutex
	runs    map[string]*uplinkRun
	rematch chan struct{}
	// meters count the bytes of the uplinks with a budget, by name, and
	// in the order of the uplinks.
	meters     map[string]*meter
	meterOrder []*meter

	mu      sync.Mutex // guards welcome and mtu
	welcome *transport.Welcome
	mtu     int
	// gw is where ICMP errors come from, derived from the welcome; read
	// per packet by the TUN reader, so kept apart from mu.
	gw atomic.Pointer[gateways]
}

// NewClient checks opts and returns a client ready to Run.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Device == nil || len(opts.Uplinks) == 0 {
		return nil, errors.New("client needs a device and at least one uplink")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	sess, err := newSession(0, opts.Mode, opts.Copies, opts.Classes)
	if sess != nil {
		sess.announce = make(chan struct{}, 1)
		sess.single.Store(len(opts.Uplinks) == 1 && opts.Uplinks[0].Match == nil)
	}
	if err != nil {
		return nil, err
	}
	var b [8]byte
	rand.Read(b[:])
	if opts.Interfaces == nil {
		opts.Interfaces = func() ([]transport.Interface, error) { return transport.Interfaces(true) }
	}
	c := &Client{opts: opts, log: opts.Logger, sess: sess, instance: binary.BigEndian.Uint64(b[:]),
		runs: map[string]*uplinkRun{}, rematch: make(chan struct{}, 1)}
	c.writer = newTunWriter(opts.Device, &c.counters, c.log)
	if err := c.setupMeters(); err != nil {
		return nil, err
	}
	return c, nil
}

// setupMeters makes a meter for each uplink with a budget and restores
// this period's usage from the usage file. A file that does not parse is
// moved aside with a warning (see budget.go).
func (c *Client) setupMeters() error {
	c.meters = map[string]*meter{}
	now := c.opts.Clock()
	for _, u := range c.opts.Uplinks {
		if u.Budget != nil {
			m := newMeter(u.Name, *u.Budget, now, c.log)
			c.meters[u.Name] = m
			c.meterOrder = append(c.meterOrder, m)
		}
	}
	if len(c.meters) == 0 || c.opts.UsageFile == "" {
		return nil
	}
	recs, err := loadUsage(c.opts.UsageFile)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typ) {
		bad := c.opts.UsageFile + ".corrupt"
		c.log.Warn("usage file unreadable: budgets count from zero", "err", err, "moved_to", bad)
		os.Rename(c.opts.UsageFile, bad)
		return nil
	}
	if err != nil {
		return err
	}
	for name, rec := range recs {
		if m := c.meters[name]; m != nil {
			m.restore(rec)
		}
	}
	return nil
}

// keepBudgets starts new budget periods and saves usage until ctx is done.
func (c *Client) keepBudgets(ctx context.Context) {
	lastSave := time.Now()
	every(ctx, periodCheckInterval, func() {
		now := c.opts.Clock()
		rolled := false
		for _, m := range c.meterOrder {
			rolled = m.roll(now) || rolled
		}
		if rolled || time.Since(lastSave) >= usageSaveInterval {
			c.saveUsage()
			lastSave = time.Now()
		}
	})
}

func (c *Client) saveUsage() {
	if len(c.meterOrder) == 0 || c.opts.UsageFile == "" {
		return
	}
	if err := saveUsage(c.opts.UsageFile, c.meterOrder); err != nil {
		c.log.Warn("saving budget usage", "err", err)
	}
}

// Run carries traffic until ctx is done, then closes the device.
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { c.writer.run(ctx) })
	for _, u := range c.opts.Uplinks {
		if u.Match == nil {
			c.startRun(ctx, &wg, u, c.meters[u.Name])
		}
	}
	if slices.ContainsFunc(c.opts.Uplinks, func(u Uplink) bool { return u.Match != nil }) {
		wg.Go(func() { c.matchUplinks(ctx, &wg) })
	}
	if c.opts.MTU == 0 {
		wg.Go(func() { c.followMTU(ctx) })
	}
	wg.Go(func() {
		watch(ctx, probeInterval, func() int64 {
			next := c.sess.failover(&c.counters)
			c.sess.updateHold(c.writer)
			return next
		})
	})
	wg.Go(func() { c.sess.announcePaths(ctx, &c.counters) })
	if c.opts.LinkEvents != nil {
		wg.Go(func() { c.watchLinks(ctx) })
	}
	if len(c.meterOrder) > 0 {
		wg.Go(func() { c.keepBudgets(ctx) })
	}
	wg.Go(func() { c.watchClock(ctx) })
	err := readUntilDone(ctx, c.opts.Device, &c.counters, c.outbound)
	cancel()
	c.opts.Device.Close()
	wg.Wait()
	c.saveUsage() // every link has counted its last bytes
	return err
}

// Sleep and resume. When a laptop sleeps, the process stops and, on
// Linux, the monotonic clock stands still while the wall clock runs on;
// when a process is stopped (SIGSTOP, a debugger, a starved VM), both run
// on. Either way, on resume every path may be dead at the concentrator,
// whose clock did not stop: its QUIC connections idle out after
// transport.IdleTimeout. quic-go notices a stop on its own (its idle
// timer follows the monotonic clock), but not a sleep. watchClock looks
// at both clocks every clockCheckInterval; when more time has passed than
// it should (a jump of more than clockJump), it re-validates the paths at
// once: a path away for longer than the idle timeout is closed and
// redialled now, instead of after another idle timeout; any other is
// probed now, instead of at its next probe (2 s on an idle metered one).
const (
	clockCheckInterval = time.Second
	clockJump          = 2 * time.Second
)

// clockJumped says whether a check interval in which the monotonic clock
// advanced monoGap and the wall clock wallGap tells of a sleep or a stop,
// and for how long the process was away.
func clockJumped(monoGap, wallGap time.Duration) (away time.Duration, jumped bool) {
	away = max(monoGap, wallGap) - clockCheckInterval
	if monoGap > clockCheckInterval+clockJump || wallGap-monoGap > clockJump {
		return away, true
	}
	return 0, false
}

// watchClock re-validates the paths after a sleep or a stop.
func (c *Client) watchClock(ctx context.Context) {
	lastMono, lastWall := monotime(), c.opts.Clock().Round(0) // Round(0): the wall clock only
	every(ctx, clockCheckInterval, func() {
		mono, wall := monotime(), c.opts.Clock().Round(0)
		away, jumped := clockJumped(time.Duration(mono-lastMono), wall.Sub(lastWall))
		lastMono, lastWall = mono, wall
		if !jumped {
			return
		}
		expired := away >= transport.IdleTimeout
		c.log.Info("clock jumped: the host slept or the process was stopped; re-validating paths", "away", away.Round(time.Millisecond), "redial", expired)
		for _, l := range *c.sess.links.Load() {
			if expired {
				l.path.Close("away longer than the idle timeout")
			} else {
				l.queueProbe(transport.KindProbe, 0)
			}
		}
	})
}

// mtuCheckInterval is how often the inner MTU is matched to the paths.
const mtuCheckInterval = time.Second

// followMTU keeps the TUN's MTU at what the live paths carry: path MTU
// discovery raises a path's datagram size after the handshake, and a
// full-size inner packet that exactly fills a datagram also lets the
// paths batch their sends.
func (c *Client) followMTU(ctx context.Context) {
	every(ctx, mtuCheckInterval, func() {
		m := c.sess.minMTU()
		if m < minInnerMTU {
			return
		}
		c.mu.Lock()
		if c.welcome != nil && m != c.mtu && c.opts.Configure != nil {
			if err := c.opts.Configure(c.welcome.Addresses, m); err != nil {
				c.log.Warn("setting the inner MTU", "mtu", m, "err", err)
			} else {
				c.log.Info("inner MTU follows the paths", "old", c.mtu, "new", m)
				c.mtu = m
			}
		}
		c.mu.Unlock()
	})
}

// minInnerMTU is the smallest inner MTU braid sets: IPv6's minimum.
const minInnerMTU = 1280

// join records the session a path joined, configuring the TUN on the
// first welcome and whenever the addresses change. A failed configuration
// is retried by the next path that joins.
func (c *Client) join(w *transport.Welcome, pathMTU int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.welcome
	if old != nil && old.Session != w.Session {
		c.log.Info("concentrator started a new session", "old", old.Session, "new", w.Session)
		c.sess.resetRx(c.writer)
	}
	if old != nil && slices.Equal(old.Addresses, w.Addresses) {
		c.welcome = w
		return nil
	}
	mtu := pathMTU
	if c.opts.MTU > 0 {
		mtu = min(mtu, c.opts.MTU)
	}
	c.log.Info("session joined", "session", w.Session, "name", w.Name, "addresses", w.Addresses, "mtu", mtu)
	if c.opts.Configure != nil {
		if err := c.opts.Configure(w.Addresses, mtu); err != nil {
			return err
		}
	}
	c.welcome, c.mtu = w, mtu
	var gw gateways
	for _, a := range w.Addresses {
		if a.Addr().Is4() {
			gw.v4 = gatewayFor(a)
		} else {
			gw.v6 = gatewayFor(a)
		}
	}
	c.gw.Store(&gw)
	return nil
}

// outbound sends a packet read from the TUN through the session.
func (c *Client) outbound(p packetRef, info *packet.Info) {
	forward(c.sess, p, info, nil, c.writer, c.gw.Load(), &c.counters)
}

// deliver writes a data packet from the concentrator to the TUN.
func (c *Client) deliver(ctx context.Context, l *link, seq uint64, pkt []byte) {
	c.sess.deliver(ctx, l, seq, pkt, nil, c.writer, &c.counters)
}

// ClientStatus is what `braid status` shows of a client.
type ClientStatus struct {
	Role      string          `json:"role"`
	Session   uint64          `json:"session"`
	Name      string          `json:"name"`
	Addresses []netip.Prefix  `json:"addresses"`
	MTU       int             `json:"mtu"`
	Mode      string          `json:"mode"`
	Paths     []PathStatus    `json:"paths"`
	Reorder   ReorderStatus   `json:"reorder"`
	Budgets   []BudgetStatus  `json:"budgets,omitempty"`
	Counters  CounterSnapshot `json:"counters"`
	// Goroutines is the process's goroutine count and HeapLive the heap
	// that the last garbage collection found live, for leak checks.
	// GCCycles counts garbage collections, so a reader can tell whether
	// HeapLive was measured after some event.
	Goroutines int    `json:"goroutines"`
	HeapLive   uint64 `json:"heap_live_bytes"`
	GCCycles   uint64 `json:"gc_cycles"`
}

// gcStats reads the live heap after the last GC and the number of GCs
// from runtime/metrics.
func gcStats() (live, cycles uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		live = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		cycles = s[1].Value.Uint64()
	}
	return live, cycles
}

// Status returns the client's state.
func (c *Client) Status() ClientStatus {
	st := ClientStatus{Role: "client", Mode: string(c.opts.Mode), Paths: c.sess.pathStatus(), Reorder: c.sess.reorderStatus(), Counters: c.counters.Snapshot(),
		Goroutines: runtime.NumGoroutine()}
	st.HeapLive, st.GCCycles = gcStats()
	addKernelDropped(st.Counters, c.opts.Device)
	for _, p := range st.Paths {
		st.Counters["drop_direct_queue"] += p.DirectDropped
	}
	for _, m := range c.meterOrder {
		st.Budgets = append(st.Budgets, m.status())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.welcome != nil {
		st.Session, st.Name, st.Addresses = c.welcome.Session, c.welcome.Name, c.welcome.Addresses
	}
	st.MTU = c.mtu
	return st
}
