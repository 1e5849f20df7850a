package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
)

// DemoOptions shape the demo.
type DemoOptions struct {
	Duration  time.Duration // of the whole TCP stream
	CutAt     time.Duration // when the busy uplink is cut
	RestoreAt time.Duration // when it comes back
	How       Cut
}

// DefaultDemo streams for 20 s, cutting uplink 1 from 6 s to 12 s.
var DefaultDemo = DemoOptions{Duration: 20 * time.Second, CutAt: 6 * time.Second, RestoreAt: 12 * time.Second, How: LinkDown}

// Demo builds the lab (two uplinks: 50 Mbit/s 20 ms and 20 Mbit/s 60 ms),
// runs braid in it, streams TCP from the LAN host to the server, cuts the
// busy uplink and restores it, printing a live per-path view and a summary.
// bin is the braid binary. It cleans up everything it made.
func Demo(ctx context.Context, w io.Writer, bin string, opts DemoOptions) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: run braid demo as root", ErrNotRoot)
	}
	links := lab.TopologyOptions{Rate1: 50e6, Delay1: 20 * time.Millisecond, Rate2: 20e6, Delay2: 60 * time.Millisecond}
	fmt.Fprintln(w, "building the lab: client ── isp1 (50 Mbit/s, 20 ms) / isp2 (20 Mbit/s, 60 ms) ── core ── concentrator ── server")
	env, err := Start(ctx, bin, Options{Links: links})
	if err != nil {
		return err
	}
	defer env.Close()
	before, err := env.ClientStatus()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "client joined session %x with inner addresses %v; both paths up\n\n", before.Session, before.Addresses)

	var received atomic.Int64
	done := make(chan struct{})
	var res TransferResult
	var terr error
	go func() {
		defer close(done)
		res, terr = env.Transfer(ctx, 0, opts.Duration, func(n int64) { received.Store(n) })
	}()
	werr := watch(ctx, w, env, opts, &received, done)
	<-done
	if terr != nil {
		fmt.Fprint(os.Stderr, env.Logs())
		return terr
	}
	after, _ := env.ClientStatus()
	kept := after.Session == before.Session && fmt.Sprint(after.Addresses) == fmt.Sprint(before.Addresses)
	fmt.Fprintf(w, "\nsummary: %s\n", res)
	fmt.Fprintf(w, "  goodput %.1f Mbit/s, longest stall %v, data intact: %s, session kept: %s\n",
		res.Goodput()/1e6, res.LongestStall.Round(time.Millisecond), yesNo(res.Intact), yesNo(kept))
	if werr != nil {
		return werr
	}
	if !res.Intact || !kept {
		return fmt.Errorf("demo failed: intact %v, session kept %v", res.Intact, kept)
	}
	return nil
}

// watch prints a line per second, and cuts and restores uplink 1 on time.
// It returns the first error of a cut or restore (the demo went on
// without it, so its summary does not show what it claims to).
func watch(ctx context.Context, w io.Writer, env *Env, opts DemoOptions, received *atomic.Int64, done <-chan struct{}) error {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	cut := time.After(opts.CutAt)
	restore := time.After(opts.RestoreAt)
	fmt.Fprintln(w, "TIME  GOODPUT       PATHS (state, Mbit/s sent this second), EVENT")
	var lastBytes int64
	lastTx := map[string]uint64{}
	event := ""
	var failed error
	for {
		select {
		case <-done:
			return failed
		case <-ctx.Done():
			return failed
		case <-cut:
			event = "isp1 cut"
			if err := env.CutUplink(1, opts.How); err != nil {
				event = "cut failed: " + err.Error()
				failed = cmp.Or(failed, fmt.Errorf("cutting uplink 1: %w", err))
			}
		case <-restore:
			event = "isp1 restored"
			if err := env.RestoreUplink(1, opts.How); err != nil {
				event = "restore failed: " + err.Error()
				failed = cmp.Or(failed, fmt.Errorf("restoring uplink 1: %w", err))
			}
		case <-tick.C:
			n := received.Load()
			st, _ := env.ClientStatus()
			var paths []string
			for _, p := range st.Paths {
				paths = append(paths, fmt.Sprintf("%s %-8s %5.1f", p.Name, p.State, float64(p.TxBytes-lastTx[p.Name])*8/1e6))
				lastTx[p.Name] = p.TxBytes
			}
			fmt.Fprintf(w, "%4.0fs %5.1f Mbit/s  %s  %s\n", time.Since(start).Seconds(), float64(n-lastBytes)*8/1e6, strings.Join(paths, " | "), event)
			lastBytes, event = n, ""
		}
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
