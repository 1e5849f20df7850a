// Command braid is a multihomed tunnel gateway: a client spreads a host's
// or a LAN's traffic over one QUIC path per uplink to a concentrator with
// a stable address, so sessions survive the loss of an uplink.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "braid:", err)
		os.Exit(1)
	}
}

// run executes the command line. BRAID_CPUPROFILE=FILE writes a CPU
// profile of the whole run to FILE, for performance work on the daemons;
// BRAID_MEMPROFILE=FILE writes a heap profile to FILE, and the goroutines
// to FILE.goroutines, on every SIGUSR1; BRAID_MUTEXPROFILE=FILE writes a
// profile of lock contention to FILE at exit. In all, %s stands for the
// command (client, concentrator).
func run(ctx context.Context) error {
	if path := os.Getenv("BRAID_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 4096 // fine enough for the few kilobytes of a session
		defer memProfileOnSignal(profilePath(path))()
	}
	if path := os.Getenv("BRAID_MUTEXPROFILE"); path != "" {
		runtime.SetMutexProfileFraction(mutexProfileFraction)
		defer writeProfile("mutex", profilePath(path))
	}
	if path := os.Getenv("BRAID_CPUPROFILE"); path != "" {
		path = profilePath(path)
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return rootCmd().ExecuteContext(ctx)
}

// mutexProfileFraction samples one in that many contention events: enough
// to see which locks the packet path waits on, cheap enough to leave the
// throughput as it is.
const mutexProfileFraction = 10

// writeProfile writes the named runtime profile to path.
func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "braid:", name, "profile:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "braid:", name, "profile:", err)
	}
}

// profilePath puts the command in place of %s in path.
func profilePath(path string) string {
	cmd := "braid"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	return strings.ReplaceAll(path, "%s", cmd)
}

// memProfileOnSignal writes the heap and goroutine profiles to path and
// path.goroutines on every SIGUSR1, until stop is called.
func memProfileOnSignal(path string) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	write := func() {
		runtime.GC() // the heap profile shows the state as of the last GC
		for name, file := range map[string]string{"heap": path, "goroutine": path + ".goroutines"} {
			f, err := os.Create(file)
			if err != nil {
				fmt.Fprintln(os.Stderr, "braid: memory profile:", err)
				continue
			}
			// debug=1: text, which pprof reads too, with runtime.MemStats at the end.
			if err := pprof.Lookup(name).WriteTo(f, 1); err != nil {
				fmt.Fprintln(os.Stderr, "braid: memory profile:", err)
			}
			f.Close()
		}
	}
	wg.Go(func() {
		for {
			select {
			case <-sig:
				write()
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(sig)
		close(done)
		wg.Wait()
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "braid",
		Short:         "Multihomed tunnel gateway: one QUIC path per uplink, sessions that survive a cut",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(initCmd(), concentratorCmd(), clientCmd(), statusCmd(), demoCmd())
	return root
}

// newLogger returns a text logger at level ("debug", "info", "warn", "error").
func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
