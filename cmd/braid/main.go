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
	"runtime/pprof"
	"strings"
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
// profile of the whole run to FILE, for performance work on the daemons.
func run(ctx context.Context) error {
	if path := os.Getenv("BRAID_CPUPROFILE"); path != "" {
		path = strings.ReplaceAll(path, "%s", os.Args[1])
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
