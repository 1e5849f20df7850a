package tunnel

// Uplinks come and go, and change address.
//
//	config entry ──▶ uplinkRun "isp1" (interface up1) ──▶ maintain: dial, run, redial
//	match "wl*"  ──▶ matchUplinks ──▶ uplinkRun "wifi-wlan0", "wifi-wlan1", ... (one per interface
//	                  ▲                that is up and has an address; stopped when it goes)
//	kernel events ──▶ watchLinks ──┘  and, per run on that interface: carrier down (out of use
//	                                   at once), up (dial now), deleted (close), address added or
//	                                   removed (re-resolve; a new source closes the path and
//	                                   dials a fresh one from the new address at once)
//
// A fresh path joins the same session: the concentrator keeps sessions by
// the client's key and replaces a path of the same uplink name. So an
// address change (DHCP renewal, a WiFi roam) costs one handshake on that
// uplink, while the other paths carry the traffic, and the inner address
// never changes. An uplink whose interface is missing or has no address
// waits for it: its dial fails, and the next event about its interface
// wakes it (a poll of maxRedial catches a missed event).

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/transport"
)

// rematchInterval is how often the Match entries are matched against the
// interfaces without an event: a safety net for events missed or not
// available (no netlink); events trigger matching at once.
const rematchInterval = 2 * time.Second

// uplinkRun is one uplink's path being kept: the uplink (for a Match
// entry, with the path's Name and Interface filled in), its carrier and
// the connection it has now.
type uplinkRun struct {
	Uplink
	meter       *meter
	carrierDown atomic.Bool
	wake        chan struct{} // cuts a redial backoff short
	stop        context.CancelFunc

	mu  sync.Mutex
	cur *link      // nil while dialling or waiting
	src netip.Addr // cur's source address
	// redialNow says cur was closed on purpose (its address changed), so
	// the next dial must not wait out a backoff.
	redialNow bool
}

func (r *uplinkRun) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// startRun starts keeping u's path, under its own context.
func (c *Client) startRun(ctx context.Context, wg *sync.WaitGroup, u Uplink, m *meter) *uplinkRun {
	rctx, cancel := context.WithCancel(ctx)
	r := &uplinkRun{Uplink: u, meter: m, wake: make(chan struct{}, 1), stop: cancel}
	c.runsMu.Lock()
	c.runs[u.Name] = r
	c.runsMu.Unlock()
	wg.Go(func() {
		defer cancel()
		c.maintain(rctx, r)
	})
	return r
}

// runsOn returns the runs over interface iface.
func (c *Client) runsOn(iface string) []*uplinkRun {
	c.runsMu.Lock()
	defer c.runsMu.Unlock()
	var out []*uplinkRun
	for _, r := range c.runs {
		if r.Interface != "" && r.Interface == iface {
			out = append(out, r)
		}
	}
	return out
}

// maintain keeps one uplink's path up, redialling with backoff.
func (c *Client) maintain(ctx context.Context, r *uplinkRun) {
	log := c.log.With("path", r.Name)
	backoff := minRedial
	lastErr := ""
	for ctx.Err() == nil {
		l, src, err := c.dial(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// An uplink waiting for its interface or an address fails
			// the same way every time: say so once.
			if msg := err.Error(); msg != lastErr {
				log.Warn("path dial failed; waiting for the uplink", "err", err, "retry_in", backoff)
				lastErr = msg
			} else {
				log.Debug("path dial failed", "err", err, "retry_in", backoff)
			}
			if !c.sleep(ctx, r, backoff) {
				return
			}
			backoff = min(2*backoff, maxRedial)
			continue
		}
		lastErr = ""
		log.Info("path up", "interface", r.Interface, "local", l.path.LocalAddr(), "remote", l.path.RemoteAddr(), "mtu", l.mtu.Load())
		r.mu.Lock()
		r.cur, r.src, r.redialNow = l, src, false
		r.mu.Unlock()
		c.sess.addLink(l)
		start := time.Now()
		err = l.run(ctx, c)
		c.sess.removeLink(l)
		r.mu.Lock()
		r.cur = nil
		now := r.redialNow
		r.redialNow = false
		r.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if now {
			backoff = minRedial
			continue
		}
		log.Warn("path down", "err", err)
		// A path that lived briefly (another process with our key, a
		// concentrator refusing us after the welcome) must not make us
		// redial in a tight loop.
		if time.Since(start) > maxRedial {
			backoff = minRedial
			continue
		}
		if !c.sleep(ctx, r, backoff) {
			return
		}
		backoff = min(2*backoff, maxRedial)
	}
}

// sleep waits out a redial backoff, cut short when an event about the
// uplink's interface wakes it. It returns false once ctx is done.
func (c *Client) sleep(ctx context.Context, r *uplinkRun, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.wake:
	case <-ctx.Done():
		return false
	}
	return true
}

func (c *Client) dial(ctx context.Context, r *uplinkRun) (*link, netip.Addr, error) {
	cfg, err := r.Resolve(r.Interface)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	hello := transport.Hello{
		Version:  transport.ProtocolVersion,
		Uplink:   r.Name,
		Priority: r.Priority,
		Weight:   r.Weight,
		Metered:  r.Metered,
		Budgeted: r.meter != nil,
		Mode:     string(c.opts.Mode),
		Instance: c.instance,
		Direct:   true,
		Single:   c.sess.single.Load(),
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	p, w, err := transport.Dial(dctx, cfg, &hello)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	l := newLink(r.Name, hello, p, true, &c.counters, c.log)
	l.est.Cap = r.RateCap // not yet shared: no need for estMu
	l.carrierDown = &r.carrierDown
	l.meter = r.meter
	l.direct.Store(w.Direct)
	if err := c.join(w, int(l.mtu.Load())); err != nil {
		p.Close("configuration failed")
		return nil, netip.Addr{}, err
	}
	return l, cfg.Source, nil
}

// watchLinks applies link and address events to the uplinks on those
// interfaces, and has the Match entries matched again.
func (c *Client) watchLinks(ctx context.Context) {
	for {
		var ev transport.LinkEvent
		select {
		case ev = <-c.opts.LinkEvents:
		case <-ctx.Done():
			return
		}
		for _, r := range c.runsOn(ev.Interface) {
			c.applyEvent(r, ev)
		}
		select {
		case c.rematch <- struct{}{}:
		default:
		}
	}
}

func (c *Client) applyEvent(r *uplinkRun, ev transport.LinkEvent) {
	switch {
	case ev.DefaultRoute:
		// Only the Match entries care, and watchLinks has them matched again.
	case ev.IsAddr():
		c.log.Debug("uplink address changed", "path", r.Name, "interface", ev.Interface, "addr", ev.Addr, "removed", ev.Removed)
		c.checkSource(r)
	case ev.Deleted:
		c.log.Info("uplink interface gone", "path", r.Name, "interface", ev.Interface)
		r.carrierDown.Store(true)
		c.closeCurrent(r, nil, "interface deleted", false)
	default:
		r.carrierDown.Store(!ev.Up)
		c.log.Info("uplink interface changed", "path", r.Name, "interface", ev.Interface, "up", ev.Up)
		if !ev.Up {
			r.mu.Lock()
			if r.cur != nil {
				r.cur.interrupt() // the TUN reader may be waiting for room on it
			}
			r.mu.Unlock()
			c.sess.failover(&c.counters) // at once, not at the next look
			return
		}
		r.poke()
		c.checkSource(r)
	}
}

// checkSource re-resolves r's source address: when it is not the one r's
// path was dialled from (the old one is gone, or no longer the first),
// the path is closed and a fresh one dialled from the new address at
// once. An uplink without a path is woken to dial now.
func (c *Client) checkSource(r *uplinkRun) {
	r.mu.Lock()
	l, src := r.cur, r.src
	r.mu.Unlock()
	if l == nil {
		r.poke()
		return
	}
	cfg, err := r.Resolve(r.Interface)
	if err == nil && cfg.Source == src {
		return
	}
	if err != nil {
		c.log.Info("uplink lost its source address; closing its path until it has one", "path", r.Name, "interface", r.Interface,
			"old", src, "err", err)
		c.closeCurrent(r, l, "source address gone", false)
		return
	}
	c.log.Info("uplink source address changed; redialling from the new one", "path", r.Name, "interface", r.Interface,
		"old", src, "new", cfg.Source)
	c.closeCurrent(r, l, "source address changed", true)
}

// closeCurrent closes r's path (if only is set, only while that is
// still r's path), resending what it had in flight on the others at
// once; with redial set, the next dial is now.
func (c *Client) closeCurrent(r *uplinkRun, only *link, why string, redial bool) {
	r.mu.Lock()
	l := r.cur
	if l != nil && only != nil && l != only {
		l = nil // a fresh path already: leave it
	}
	if l != nil {
		r.redialNow = redial
	}
	r.mu.Unlock()
	if l == nil {
		return
	}
	l.closedHere.Store(true)
	l.dead.Store(true)
	c.sess.failover(&c.counters)
	l.path.Close(why)
}

// matchUplinks keeps one path per interface matched by a Match entry,
// matching again on every event and every rematchInterval.
func (c *Client) matchUplinks(ctx context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(rematchInterval)
	defer t.Stop()
	for {
		c.matchOnce(ctx, wg)
		select {
		case <-c.rematch:
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (c *Client) matchOnce(ctx context.Context, wg *sync.WaitGroup) {
	ifaces, err := c.opts.Interfaces()
	if err != nil {
		c.log.Warn("matching uplinks", "err", err)
		return
	}
	want := map[string]Uplink{}
	for _, u := range matchedUplinks(c.opts.Uplinks, ifaces, c.opts.Device.Name) {
		want[u.Name] = u
	}
	c.runsMu.Lock()
	var stop []*uplinkRun
	for name, r := range c.runs {
		if r.Match == nil {
			continue
		}
		if u, ok := want[name]; ok && u.Interface == r.Interface {
			delete(want, name)
			continue
		}
		stop = append(stop, r)
		delete(c.runs, name)
	}
	c.runsMu.Unlock()
	for _, r := range stop {
		c.log.Info("matched uplink gone", "path", r.Name, "interface", r.Interface)
		c.closeCurrent(r, nil, "interface gone", false)
		r.stop()
	}
	for _, u := range want {
		c.log.Info("uplink matched", "path", u.Name, "interface", u.Interface)
		c.startRun(ctx, wg, u, c.meters[u.entry])
	}
}

// matchedUplinks returns the paths the Match entries among uplinks make
// of ifaces: one per interface that is up, has an address and is not
// the TUN (named by tunName) or an interface a plain entry names, for the
// first entry that matches it, unless its path name is taken.
func matchedUplinks(uplinks []Uplink, ifaces []transport.Interface, tunName func() (string, error)) []Uplink {
	taken := map[string]bool{}
	named := map[string]bool{}
	for _, u := range uplinks {
		if u.Match == nil {
			taken[u.Name] = true
			named[u.Interface] = true
		}
	}
	if tunName != nil {
		if name, err := tunName(); err == nil {
			named[name] = true
		}
	}
	var out []Uplink
	for _, iface := range ifaces {
		if !iface.Up || len(iface.Addrs) == 0 || named[iface.Name] {
			continue
		}
		for _, u := range uplinks {
			if u.Match == nil || !u.Match(iface) {
				continue
			}
			name := iface.Name
			if u.PathName != nil {
				name = u.PathName(iface.Name)
			}
			if !taken[name] {
				taken[name] = true
				inst := u
				inst.Name, inst.Interface, inst.entry = name, iface.Name, u.Name
				out = append(out, inst)
			}
			break
		}
	}
	return out
}
