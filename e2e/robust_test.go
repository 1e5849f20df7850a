package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// Robustness of issue 5: a flapping uplink leaks nothing, and a client
// stopped as a sleeping laptop is resumes at once.

// flapDuration is how long TestFlappingUplink flaps uplink 1 (1 s down,
// 1 s up). The issue asks for 60 s; CI runs 20 s. Run the full minute
// with -flap=60s or BRAID_E2E_FLAP=60s.
const flapDuration = 20 * time.Second

var (
	flapFlag      = flag.Duration("flap", 0, "how long TestFlappingUplink flaps (default 20s; the issue asks 60s)")
	longSleepFlag = flag.Bool("sleep-long", false, "TestSleepResume also stops the client for 3 minutes (or BRAID_E2E_SLEEP_LONG=1)")
)

func flapFor() time.Duration {
	if *flapFlag > 0 {
		return *flapFlag
	}
	if d, err := time.ParseDuration(os.Getenv("BRAID_E2E_FLAP")); err == nil && d > 0 {
		return d
	}
	return flapDuration
}

// resources are what a leak would grow.
type resources struct {
	goroutines, fds int
	rss             int64
	heap            uint64 // live heap at the last GC
}

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, RSS %d KiB, live heap %d KiB", r.goroutines, r.fds, r.rss>>10, r.heap>>10)
}

func clientResources(e *Env) (resources, error) {
	st, err := e.ClientStatus()
	if err != nil {
		return resources{}, err
	}
	fds, err := e.ClientFDs()
	if err != nil {
		return resources{}, err
	}
	rss, _, err := e.RSS()
	return resources{goroutines: st.Goroutines, fds: fds, rss: rss, heap: st.HeapLive}, err
}

// Slack allowed after flapping: a goroutine or two of quic-go or the
// runtime may still be winding down when the counts are read, and the
// status connection itself holds a descriptor while it is served.
const (
	goroutineSlack = 3
	fdSlack        = 2
	// rssSlack bounds the growth of resident memory across the flapping.
	// It is a coarse guard; the leak checks proper are the goroutine and
	// fd counts. Go returns freed pages to the OS lazily, so the RSS after
	// the test reflects the heap's peak under the transfer (GOGC lets the
	// heap reach twice what is live: queued packets, quic-go's buffers of
	// the old and new connections of each redial), not what is live: in
	// 60 s runs RSS grew by 2 to 15 MiB while the live heap after the
	// next idle GC was below the baseline's (BRAID_E2E_IDLE_GC=1 shows
	// it). 32 MiB leaves room for that and for a noisy machine, and still
	// catches a leak of the transfer's data (tens of MiB a minute) or of
	// a connection's buffers at every flap.
	rssSlack = 32 << 20
)

// TestFlappingUplink flaps uplink 1 (1 s down, 1 s up) for flapFor()
// under a TCP transfer and ping-like UDP traffic: the session is kept
// (same id, same inner addresses), the transfer arrives intact, and the
// client's goroutines, file descriptors and memory return to where they
// started.
func TestFlappingUplink(t *testing.T) {
	e := start(t, Options{Links: shaped})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := e.WaitMTU(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Warm up: pools and quic-go's buffers at their working size.
	if _, err := e.Transfer(ctx, 0, 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	before, err := e.ClientStatus()
	if err != nil {
		t.Fatal(err)
	}
	base, err := settle(ctx, e, resources{goroutines: 1 << 30, fds: 1 << 30}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before flapping: %s", base)

	echo, err := e.StartEcho(20 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	dur := flapFor()
	var steps []step
	for at := time.Second; at < dur; at += 2 * time.Second {
		steps = append(steps,
			step{at, func() error { return e.CutUplink(1, LinkDown) }},
			step{at + time.Second, func() error { return e.RestoreUplink(1, LinkDown) }})
	}
	wait := schedule(t, steps)
	res, err := e.Transfer(ctx, 0, dur+time.Second, nil)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Intact {
		t.Fatalf("data damaged: %s", res)
	}
	if err := e.WaitPaths(ctx, 2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	sent, replies := echo.Counts()
	echo.Close()
	after := sessionKept(t, e, before)
	if fmt.Sprint(after.Addresses) != fmt.Sprint(before.Addresses) {
		t.Errorf("inner addresses changed from %v to %v", before.Addresses, after.Addresses)
	}
	if replies == 0 {
		t.Error("no echo replies while flapping")
	}

	limit := resources{goroutines: base.goroutines + goroutineSlack, fds: base.fds + fdSlack}
	end, err := settle(ctx, e, limit, 30*time.Second)
	if err != nil {
		t.Errorf("after flapping: %v (before: %s)", err, base)
	}
	if end.rss > base.rss+rssSlack {
		t.Errorf("RSS grew from %d KiB to %d KiB, more than %d KiB", base.rss>>10, end.rss>>10, rssSlack>>10)
	}
	if os.Getenv("BRAID_E2E_IDLE_GC") == "1" {
		// The live heap is that of the last GC, which ran under load; an
		// idle process is collected by the runtime every 2 minutes.
		st, _ := e.ClientStatus()
		for deadline := time.Now().Add(150 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			if now, err := e.ClientStatus(); err == nil && now.GCCycles > st.GCCycles {
				idle, _ := clientResources(e)
				t.Logf("REPORT after flapping and the next (idle) GC: %s", idle)
				break
			}
		}
	}
	t.Logf("REPORT flapping uplink 1 (1 s down, 1 s up) for %v under TCP and 50/s UDP echo: session kept %v, "+
		"transfer %s, echo %d of %d answered; client before: %s; after: %s",
		dur, after.Session == before.Session, res, replies, sent, base, end)
}

// settle polls the client's resources until its goroutines and fds have
// stayed within limit for a second (ten readings), or until timeout. It
// returns the lowest counts of those readings, with the last RSS, so a
// baseline is not taken at a passing peak.
func settle(ctx context.Context, e *Env, limit resources, timeout time.Duration) (resources, error) {
	deadline := time.Now().Add(timeout)
	var low, last resources
	var err error
	within := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if last, err = clientResources(e); err != nil {
			within = 0
		} else if last.goroutines <= limit.goroutines && last.fds <= limit.fds {
			if within == 0 {
				low = last
			}
			low.goroutines, low.fds = min(low.goroutines, last.goroutines), min(low.fds, last.fds)
			low.rss, low.heap = last.rss, last.heap
			if within++; within == 10 {
				return low, nil
			}
		} else {
			within = 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil {
		err = fmt.Errorf("client still at %s, want at most %d goroutines and %d fds", last, limit.goroutines, limit.fds)
	}
	return last, err
}

// TestSleepResume stops the client (SIGSTOP) for 15 s, as a laptop that
// sleeps, then continues it: ping-like traffic through the tunnel flows
// again within a few seconds, in the same session with the same inner
// address. With -sleep-long (or BRAID_E2E_SLEEP_LONG=1) it also stops it
// for 3 minutes. The concentrator's grace period is longer than that, so
// the session is kept in both.
func TestSleepResume(t *testing.T) {
	e := start(t, Options{GracePeriod: 10 * time.Minute})
	stopped := false
	t.Cleanup(func() {
		if stopped {
			e.SignalClient(syscall.SIGCONT) // so that Close can end it
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	echo, err := e.StartEcho(20 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	echo.MarkFresh()
	if echo.WaitFresh(ctx, 10*time.Second).IsZero() {
		t.Fatal("no echo through the tunnel before sleeping")
	}
	before, err := e.ClientStatus()
	if err != nil {
		t.Fatal(err)
	}
	pauses := []time.Duration{15 * time.Second}
	if *longSleepFlag || os.Getenv("BRAID_E2E_SLEEP_LONG") == "1" {
		pauses = append(pauses, 3*time.Minute)
	}
	for _, pause := range pauses {
		if err := e.SignalClient(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped = true
		time.Sleep(pause)
		echo.MarkFresh()
		resumed := time.Now()
		if err := e.SignalClient(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		stopped = false
		back := echo.WaitFresh(ctx, 60*time.Second)
		if back.IsZero() {
			t.Fatalf("after a %v stop, no traffic within 60 s", pause)
		}
		secs := back.Sub(resumed).Seconds()
		after, err := e.ClientStatus()
		if err != nil {
			t.Fatal(err)
		}
		if after.Session != before.Session {
			t.Errorf("after a %v stop the session changed from %x to %x", pause, before.Session, after.Session)
		}
		if fmt.Sprint(after.Addresses) != fmt.Sprint(before.Addresses) {
			t.Errorf("after a %v stop the inner addresses changed from %v to %v", pause, before.Addresses, after.Addresses)
		}
		// "Within a few seconds", with room for a loaded CI machine.
		if secs > 5 {
			t.Errorf("after a %v stop, traffic flowed again only after %.2f s", pause, secs)
		}
		if os.Getenv("BRAID_E2E_LOGS") == "1" {
			t.Log(e.Logs())
		}
		t.Logf("REPORT client stopped (SIGSTOP) for %v: traffic flowed again %.2f s after SIGCONT; session kept %v, same inner address %v",
			pause, secs, after.Session == before.Session, fmt.Sprint(after.Addresses) == fmt.Sprint(before.Addresses))
	}
}
