package main

import (
	"fmt"

	"github.com/braid-tunnel/braid/config"
	"github.com/spf13/cobra"
)

func initCmd() *cobra.Command {
	var spec config.InitSpec
	var clients []string
	cmd := &cobra.Command{
		Use:   "init --dir DIR --concentrator HOST:PORT --client NAME[=PREFIX,...] ...",
		Short: "Write a concentrator config and one client config per client, with fresh keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range clients {
				c, err := config.ParseInitClient(s)
				if err != nil {
					return fmt.Errorf("--client %q: %w", s, err)
				}
				spec.Clients = append(spec.Clients, c)
			}
			files, err := config.WriteInit(spec)
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Fprintln(cmd.OutOrStdout(), "wrote", f)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&spec.Dir, "dir", "", "directory to write into (required)")
	cmd.Flags().StringVar(&spec.Concentrator, "concentrator", "", "the concentrator's public HOST:PORT (required)")
	cmd.Flags().StringArrayVar(&clients, "client", nil, "a client NAME, or NAME=PREFIX,... for a branch office routing its LAN (repeatable, at least one)")
	cmd.MarkFlagRequired("dir")
	cmd.MarkFlagRequired("concentrator")
	cmd.MarkFlagRequired("client")
	return cmd
}
