//go:build !race

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
)

// TestReportGoodput measures, in one run, TCP goodput through braid
// against raw TCP over the same links. It asserts only that the transfers
// are intact; the figures are for the report (grep REPORT). Built without
// the race detector only, since the detector would make the traffic
// generator the bottleneck.
func TestReportGoodput(t *testing.T) {
	requireRoot(t)
	const dur = 6 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("unshaped", func(t *testing.T) {
		// A client with one uplink, as in BenchmarkDataPath.
		e := build(t, Options{Links: lab.TopologyOptions{Direct: true}, UpPaths: 1, Uplinks: "  - name: isp1\n    interface: up1\n"})
		raw := mustTransfer(t)(e.TransferRaw(ctx, 0, dur))
		up(t, ctx, e)
		if err := e.WaitMTU(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := e.CutUplink(2, LinkDown); err != nil { // one path only
			t.Fatal(err)
		}
		idleClient, idleConc, err := e.RSS()
		if err != nil {
			t.Fatal(err)
		}
		var loadClient, loadConc int64
		tun := mustTransfer(t)(e.Transfer(ctx, 0, dur, func(n int64) {
			if loadClient == 0 && n > 100<<20 {
				loadClient, loadConc, _ = e.RSS()
			}
		}))
		t.Logf("REPORT resident memory: client %d KiB idle, %d KiB under load; concentrator (one client) %d KiB idle, %d KiB under load",
			idleClient>>10, loadClient>>10, idleConc>>10, loadConc>>10)
		t.Logf("REPORT unshaped veth, one path: raw TCP %.0f Mbit/s, braid %.0f Mbit/s, ratio %.2f",
			raw.Goodput()/1e6, tun.Goodput()/1e6, tun.Goodput()/raw.Goodput())
	})
	for _, mode := range []string{"failover", "aggregate"} {
		t.Run("shaped-"+mode, func(t *testing.T) {
			e := build(t, Options{Links: shaped, Mode: mode})
			best := mustTransfer(t)(e.TransferRaw(ctx, 0, dur)) // uplink 1 is the faster one
			up(t, ctx, e)
			tun := mustTransfer(t)(e.Transfer(ctx, 0, dur, nil))
			t.Logf("REPORT shaped 50M/20ms + 20M/60ms, mode %s: best single uplink (raw TCP) %.1f Mbit/s, braid %.1f Mbit/s, ratio %.2f",
				mode, best.Goodput()/1e6, tun.Goodput()/1e6, tun.Goodput()/best.Goodput())
		})
	}
}

// mustTransfer returns a checker of a transfer's results.
func mustTransfer(t *testing.T) func(TransferResult, error) TransferResult {
	return func(r TransferResult, err error) TransferResult {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if !r.Intact {
			t.Fatalf("data damaged: %s", r)
		}
		return r
	}
}

// TestReportLatencyUnderLoad measures what a bulk upload does to the round
// trip of a call sharing the uplink (bufferbloat): echo datagrams every
// 20 ms, idle and during a TCP upload, through braid and outside the
// tunnel over the 50 Mbit/s uplink, whose bottleneck queue (tbf) holds
// 50 ms. Three cases: auto (the default) with both uplinks, where the
// scheduler may spill the upload onto the 20 Mbit/s one; auto with that
// one down, the upload's only path (braid's CoDel keeps its queue short);
// and failover, whose upload spills onto the second uplink once the first
// is full.
func TestReportLatencyUnderLoad(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, c := range []struct {
		name, mode string
		oneUplink  bool
	}{
		{"auto", "auto", false},
		{"auto-one-uplink", "auto", true},
		{"failover", "failover", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := build(t, Options{Links: shaped, Mode: c.mode})
			raw := underLoad(t, e.StartEchoRaw, func(d time.Duration) (TransferResult, error) { return e.TransferRaw(ctx, 0, d) })
			up(t, ctx, e)
			uplinks := "both uplinks"
			if c.oneUplink {
				if err := e.CutUplink(2, LinkDown); err != nil {
					t.Fatal(err)
				}
				uplinks = "uplink 2 down"
			}
			tun := underLoad(t, e.StartEcho, func(d time.Duration) (TransferResult, error) { return e.Transfer(ctx, 0, d, nil) })
			cs, err := e.ClientStatus()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("REPORT latency under load, shaped 50M/20ms + 20M/60ms, mode %s, %s, echo every 20 ms: outside the tunnel over uplink 1 %s; through braid %s; braid dropped %d packets to keep its queues short (CoDel)",
				c.mode, uplinks, raw, tun, cs.Counters["drop_aqm"])
		})
	}
}

// loadedLatency is what echo traffic saw idle and during a transfer.
type loadedLatency struct {
	idle50, load50, load99 time.Duration
	unanswered             int
	goodput                float64
}

func (l loadedLatency) String() string {
	return fmt.Sprintf("idle p50 %v, loaded p50 %v p99 %v (%d unanswered, upload %.1f Mbit/s)",
		l.idle50.Round(100*time.Microsecond), l.load50.Round(100*time.Microsecond), l.load99.Round(100*time.Microsecond), l.unanswered, l.goodput/1e6)
}

// underLoad runs echo traffic for a second, then during a transfer of 8
// s, and returns the round trips of the idle second and of the transfer's
// middle 5 s (its first seconds are TCP's slow start).
func underLoad(t *testing.T, start func(time.Duration) (*Echo, error), transfer func(time.Duration) (TransferResult, error)) loadedLatency {
	t.Helper()
	echo, err := start(20 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	t0 := time.Now()
	time.Sleep(time.Second) // the idle sample: a duration, not a synchronisation
	t1 := time.Now()
	res := mustTransfer(t)(transfer(8 * time.Second))
	t2 := time.Now()
	idle, _ := echo.RTTs(t0, t1)
	loaded, lost := echo.RTTs(t1.Add(2*time.Second), t2.Add(-time.Second)) // the last second's replies may still be on their way
	if len(idle) == 0 || len(loaded) == 0 {
		t.Fatalf("echo answered %d times idle and %d under load", len(idle), len(loaded))
	}
	return loadedLatency{percentile(idle, 50), percentile(loaded, 50), percentile(loaded, 99), lost, res.Goodput()}
}
