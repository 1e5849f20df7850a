//go:build !race

package e2e

import (
	"context"
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
