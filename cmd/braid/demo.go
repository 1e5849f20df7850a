package main

import (
	"os"

	"github.com/braid-tunnel/braid/e2e"
	"github.com/spf13/cobra"
)

func demoCmd() *cobra.Command {
	opts := e2e.DefaultDemo
	var blackhole bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a namespace lab, run braid in it, cut an uplink under a TCP stream, and show what happens (root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			if blackhole {
				opts.How = e2e.Blackhole
			}
			return e2e.Demo(cmd.Context(), cmd.OutOrStdout(), bin, opts)
		},
	}
	cmd.Flags().DurationVar(&opts.Duration, "duration", opts.Duration, "how long to stream")
	cmd.Flags().DurationVar(&opts.CutAt, "cut-at", opts.CutAt, "when to cut the busy uplink")
	cmd.Flags().DurationVar(&opts.RestoreAt, "restore-at", opts.RestoreAt, "when to restore it")
	cmd.Flags().BoolVar(&blackhole, "blackhole", false, "cut by silently dropping everything instead of taking the link down")
	return cmd
}
