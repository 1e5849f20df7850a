package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/tunnel"
	"github.com/spf13/cobra"
)

// Default control sockets, tried in this order when --socket is not given.
var defaultSockets = []string{"/run/braid/client.sock", "/run/braid/concentrator.sock"}

func statusCmd() *cobra.Command {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json] [--socket PATH]",
		Short: "Show the running daemon's session and paths",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := readStatus(socket)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := cmd.OutOrStdout().Write(raw)
				return err
			}
			return printStatus(cmd.OutOrStdout(), raw)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "control socket of the daemon (default: "+strings.Join(defaultSockets, " or ")+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func readStatus(socket string) ([]byte, error) {
	if socket != "" {
		return tunnel.ReadStatus(socket)
	}
	var firstErr error
	for _, s := range defaultSockets {
		raw, err := tunnel.ReadStatus(s)
		if err == nil {
			return raw, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func printStatus(w io.Writer, raw []byte) error {
	var role struct{ Role string }
	if err := json.Unmarshal(raw, &role); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch role.Role {
	case "client":
		var st tunnel.ClientStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		fmt.Fprintf(tw, "client %s  session %x  addresses %v  mtu %d  mode %s\n", st.Name, st.Session, st.Addresses, st.MTU, st.Mode)
		printPaths(tw, st.Paths)
		printBudgets(tw, st.Budgets)
		printCounters(tw, st.Counters)
	case "concentrator":
		var st tunnel.ConcentratorStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		fmt.Fprintf(tw, "concentrator listening on %s\n", st.Listen)
		for _, c := range st.Clients {
			fmt.Fprintf(tw, "\nclient %s  %s  session %x  addresses %v  prefixes %v\n", c.Name, c.State, c.Session, c.Addresses, c.Prefixes)
			printPaths(tw, c.Paths)
		}
		printCounters(tw, st.Counters)
	default:
		_, err := os.Stdout.Write(raw)
		return err
	}
	return nil
}

func printPaths(w io.Writer, paths []tunnel.PathStatus) {
	if len(paths) == 0 {
		fmt.Fprintln(w, "  no paths")
		return
	}
	fmt.Fprintln(w, "  PATH\tSTATE\tRTT\tMTU\tTX PKTS\tTX BYTES\tRX PKTS\tRX BYTES\tDIRECT TX/RX\tLOST\tLOCAL\tREMOTE")
	for _, p := range paths {
		state := p.State
		if p.Budget != "" {
			state += " (budget used: " + p.Budget + ")"
		}
		fmt.Fprintf(w, "  %s\t%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d/%d\t%d\t%s\t%s\n", p.Name, state, p.RTT.Round(100*time.Microsecond),
			p.MTU, p.TxPackets, p.TxBytes, p.RxPackets, p.RxBytes, p.DirectTx, p.DirectRx, p.QUICLost, p.Local, p.Remote)
	}
}

func printBudgets(w io.Writer, budgets []tunnel.BudgetStatus) {
	if len(budgets) == 0 {
		return
	}
	fmt.Fprintln(w, "\n  BUDGET\tSTATE\tUSED\tOF\tUSED %\tPERIOD\tSTART\tEND\tWHEN USED UP")
	for _, b := range budgets {
		pct := 0.0
		if b.LimitBytes > 0 {
			pct = 100 * float64(b.UsedBytes) / float64(b.LimitBytes)
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\n", b.Uplink, b.State, config.Size(b.UsedBytes), config.Size(b.LimitBytes),
			pct, b.Period, b.PeriodStart.Format(time.DateTime), b.PeriodEnd.Format(time.DateTime), b.Action)
	}
}

func printCounters(w io.Writer, c tunnel.CounterSnapshot) {
	var parts []string
	for _, k := range []string{"tun_rx_packets", "tun_tx_packets", "drop_no_path", "drop_queue_full", "drop_aqm", "drop_too_big", "drop_duplicate", "drop_spoofed", "drop_malformed", "drop_bad_dgram", "drop_no_route", "icmp_sent", "mss_clamped"} {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	fmt.Fprintf(w, "\ncounters: %s\n", strings.Join(parts, " "))
}
