//go:build !race

package e2e

// BenchmarkBonding is issue 4's benchmark ("How it is shown"): TCP goodput
// through braid in each scheduler mode, against each uplink alone and
// against kernel MPTCP over the same two uplinks, measured in the same run.
// It prints REPORT lines and asserts only that every transfer is intact.
//
//	go test -run '^$' -bench Bonding -benchtime 1x ./e2e      (as root)
//
// -bond-dur (or BRAID_BENCH_DUR) sets the length of each transfer;
// -bench Bonding/b runs one case.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/e2e/lab"
	"github.com/braid-tunnel/braid/scheduler"
)

// bondDefaultDur keeps the whole benchmark within about 10 minutes.
const bondDefaultDur = 5 * time.Second

var bondDurFlag = flag.Duration("bond-dur", 0, "length of each transfer of BenchmarkBonding (default 5s, or BRAID_BENCH_DUR)")

func bondDur() time.Duration {
	if *bondDurFlag > 0 {
		return *bondDurFlag
	}
	if d, err := time.ParseDuration(os.Getenv("BRAID_BENCH_DUR")); err == nil && d > 0 {
		return d
	}
	return bondDefaultDur
}

// bondModes are the scheduler modes measured, those that
// scheduler.ParseMode accepts at run time.
var bondModes = []string{"failover", "aggregate", "redundant", "flow", "auto"}

// bondCases are the lab cases. The lab's Delay is one-way, added
// in each direction: the round trip over an uplink is 2 x Delay.
// sumGoal: the issue asks aggregate and auto for 0.90 of the sum there.
var bondCases = []struct {
	name, label string
	sumGoal     bool
	links       lab.TopologyOptions
}{
	{"a", "50M/20ms+20M/60ms", true, lab.TopologyOptions{
		Rate1: 50e6, Delay1: 20 * time.Millisecond, Rate2: 20e6, Delay2: 60 * time.Millisecond}},
	{"b", "100M/10ms+10M/200ms,1%loss", false, lab.TopologyOptions{
		Rate1: 100e6, Delay1: 10 * time.Millisecond, Rate2: 10e6, Delay2: 200 * time.Millisecond, Loss2: 0.01}},
	{"c", "30M/30ms+30M/30ms", true, lab.TopologyOptions{
		Rate1: 30e6, Delay1: 30 * time.Millisecond, Rate2: 30e6, Delay2: 30 * time.Millisecond}},
}

// bondKey is one measurement of a case: a direction and a number of flows.
type bondKey struct {
	dir   direction
	flows int
}

var bondKeys = []bondKey{{upload, 1}, {upload, 8}, {download, 1}, {download, 8}}

// bondRow is one measured line.
type bondRow struct {
	mode  string
	res   TransferResult
	err   error
	split [2]uint64 // bytes over uplink 1 and 2 in the data's direction
	note  string
}

func BenchmarkBonding(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the bonding benchmark needs root (network namespaces)")
	}
	dur := bondDur()
	var modes []string
	for _, m := range bondModes {
		if _, err := scheduler.ParseMode(m); err != nil {
			fmt.Printf("REPORT bond: mode %s not run: %v\n", m, err)
			continue
		}
		modes = append(modes, m)
	}
	fmt.Printf("REPORT bond: each transfer %v of TCP, byte-checked (sha256); lab delay is one-way, added in each direction (RTT = 2 x delay); rates are per direction (tbf)\n", dur)
	fmt.Println("REPORT bond: uplink1/uplink2 = raw TCP from the client namespace to the concentrator's address, source bound to that uplink alone; mptcp = kernel MPTCP, same path, 2 subflows; modes = braid, LAN host <-> server through the tunnel")
	fmt.Println("REPORT bond: up = client side sends, down = far side sends; /sum = goodput / (uplink1 + uplink2), /best = goodput / max(uplink1, uplink2), same case, direction and flows; mptcp columns: MPTCP's own /sum and /best; split = bytes on uplink1:uplink2; goal = issue 4's goals for aggregate and auto (/sum >= 0.90 on cases a and c, >= mptcp, /best >= 0.95)")
	for _, c := range bondCases {
		b.Run(c.name, func(b *testing.B) {
			bondCase(b, c.name+":"+c.label, c.sumGoal, c.links, modes, dur)
		})
	}
}

// bondCase measures one case: baselines in one lab, then each mode in a
// fresh lab with a fresh braid.
func bondCase(b *testing.B, label string, sumGoal bool, links lab.TopologyOptions, modes []string, dur time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rows := make(map[bondKey][]bondRow)

	e, err := Build(braidBin, Options{Links: links})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close() // on b.Fatal; Close is idempotent
	t := e.Topo
	fmt.Printf("REPORT bond %s: congestion control %s, mptcp enabled %s\n", label,
		readSysctl(t.Client, "net/ipv4/tcp_congestion_control"), readSysctl(t.Client, "net/mptcp/enabled"))
	mptcpErr := setupMPTCP(t)
	if mptcpErr != nil {
		b.Error(mptcpErr)
	}
	baselines := []struct {
		mode string
		spec func() *flowSpec
	}{
		{"uplink1", func() *flowSpec {
			return &flowSpec{dialNS: t.Client, listenNS: t.Conc, addr: t.ConcAddr, local: t.ClientUplink1Addr}
		}},
		{"uplink2", func() *flowSpec {
			return &flowSpec{dialNS: t.Client, listenNS: t.Conc, addr: t.ConcAddr, local: t.ClientUplink2Addr}
		}},
		{"mptcp", func() *flowSpec {
			return &flowSpec{dialNS: t.Client, listenNS: t.Conc, addr: t.ConcAddr, mptcp: true}
		}},
	}
	var rtts []string
	for _, bl := range baselines[:2] {
		rtt, err := bl.spec().handshakeRTT(ctx)
		if err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, fmt.Sprintf("%s %v", bl.mode, rtt.Round(time.Millisecond)))
	}
	fmt.Printf("REPORT bond %s: TCP handshake (RTT) %s\n", label, strings.Join(rtts, ", "))
	for _, k := range bondKeys {
		for _, bl := range baselines {
			if bl.mode == "mptcp" && mptcpErr != nil {
				rows[k] = append(rows[k], bondRow{mode: bl.mode, err: mptcpErr})
				continue
			}
			rows[k] = append(rows[k], bondMeasure(ctx, b, t, bl.mode, bl.spec(), k, dur))
		}
	}
	e.Close()

	for _, mode := range modes {
		// A bond's uplinks are equals; failover keeps its tiers.
		e, err := Start(ctx, braidBin, Options{Links: links, Mode: mode, EqualPriority: mode != "failover"})
		if err != nil {
			b.Errorf("mode %s: %v", mode, err)
			for _, k := range bondKeys {
				rows[k] = append(rows[k], bondRow{mode: mode, err: err})
			}
			continue
		}
		e.WaitMTU(ctx, 10*time.Second) // a path MTU still rising only costs a little goodput
		t := e.Topo
		for _, k := range bondKeys {
			spec := &flowSpec{dialNS: t.LANHost, listenNS: t.Server, addr: t.ServerAddr}
			rows[k] = append(rows[k], bondMeasure(ctx, b, t, mode, spec, k, dur))
		}
		if b.Failed() && os.Getenv("BRAID_E2E_LOGS") == "1" {
			fmt.Println(e.Logs())
		}
		e.Close()
	}
	for _, k := range bondKeys {
		bondPrint(label, sumGoal, k, rows[k])
	}
}

// bondMeasure runs one transfer and reads which uplinks carried it.
func bondMeasure(ctx context.Context, b *testing.B, t *lab.Topology, mode string, s *flowSpec, k bondKey, dur time.Duration) bondRow {
	row := bondRow{mode: mode}
	before, err1 := uplinkBytes(t, k.dir)
	over0 := impairOverflow(t)
	var mib0 map[string]uint64
	if s.mptcp {
		mib0, _ = mptcpMIB(t.Conc)
	}
	row.res, row.err = s.transferN(ctx, k.dir, k.flows, dur)
	after, err2 := uplinkBytes(t, k.dir)
	if err1 == nil && err2 == nil {
		row.split = [2]uint64{after[0] - before[0], after[1] - before[1]}
	}
	if row.err != nil {
		b.Errorf("%s %v %d flows: %v", mode, k.dir, k.flows, row.err)
	} else if !row.res.Intact {
		b.Errorf("%s %v %d flows: data damaged: %s", mode, k.dir, k.flows, row.res)
	}
	if s.mptcp {
		mib1, _ := mptcpMIB(t.Conc)
		mp, joins := int(s.multipath.Load()), int(mib1["MPJoinAckRx"]-mib0["MPJoinAckRx"])
		row.note = fmt.Sprintf("MPTCP sockets %d/%d, second subflows %d/%d", mp, k.flows, joins, k.flows)
		switch total := row.split[0] + row.split[1]; {
		case mp < k.flows:
			row.note += ", FELL BACK to plain TCP"
		case joins < k.flows:
			row.note += ", FELL BACK to one subflow"
		case total > 0 && row.split[1]*50 < total:
			row.note += ", the second subflow carried <2%"
		}
	}
	if over := impairOverflow(t) - over0; over > 0 {
		row.note = strings.TrimPrefix(row.note+fmt.Sprintf(", %d packets overflowed the impairers' queues", over), ", ")
	}
	time.Sleep(500 * time.Millisecond) // let the links' queues drain
	return row
}

// impairOverflow counts the packets both impairers dropped for a full
// queue (not for Loss): a delay the queue bounds cannot hold.
func impairOverflow(t *lab.Topology) uint64 {
	var n uint64
	for _, imp := range []*lab.Impairer{t.Imp1, t.Imp2} {
		if imp != nil {
			n += imp.Stats().Overflow
		}
	}
	return n
}

// bondGoalModes are the modes the issue sets goals for.
var bondGoalModes = map[string]bool{"aggregate": true, "auto": true}

// bondGoal checks issue 4's goals for aggregate and auto: at least 0.90
// of the sum where the case asks it, at least MPTCP's goodput, and at
// least 0.95 of the best single uplink.
func bondGoal(g, sum, best, mptcp float64, sumGoal bool) string {
	var missed []string
	if sumGoal && g < 0.90*sum {
		missed = append(missed, "/sum<0.90")
	}
	if mptcp > 0 && g < mptcp {
		missed = append(missed, "<mptcp")
	}
	if g < 0.95*best {
		missed = append(missed, "/best<0.95")
	}
	if missed == nil {
		return "goal met"
	}
	return "goal missed: " + strings.Join(missed, " ")
}

// bondPrint prints one key's rows: baselines first, then the modes.
func bondPrint(label string, sumGoal bool, k bondKey, rows []bondRow) {
	var up1, up2, mp float64
	for _, r := range rows {
		if r.err != nil {
			continue
		}
		switch r.mode {
		case "uplink1":
			up1 = r.res.Goodput()
		case "uplink2":
			up2 = r.res.Goodput()
		case "mptcp":
			mp = r.res.Goodput()
		}
	}
	sum, best := up1+up2, max(up1, up2)
	ratio := func(x, y float64) string {
		if x == 0 || y == 0 {
			return "   -"
		}
		return fmt.Sprintf("%4.2f", x/y)
	}
	for _, r := range rows {
		head := fmt.Sprintf("REPORT bond %-29s %-4v %d flow(s) %-9s", label, k.dir, k.flows, r.mode)
		if r.err != nil {
			fmt.Printf("%s ERROR %v\n", head, r.err)
			continue
		}
		g := r.res.Goodput()
		split := "-"
		if t := r.split[0] + r.split[1]; t > 0 {
			split = fmt.Sprintf("%2.0f:%2.0f", 100*float64(r.split[0])/float64(t), 100*float64(r.split[1])/float64(t))
		}
		line := fmt.Sprintf("%s %6.1f Mbit/s  /sum %s  /best %s  mptcp /sum %s /best %s  split %s",
			head, g/1e6, ratio(g, sum), ratio(g, best), ratio(mp, sum), ratio(mp, best), split)
		if !r.res.Intact {
			line += "  DATA DAMAGED"
		}
		if r.note != "" {
			line += "  (" + r.note + ")"
		}
		if bondGoalModes[r.mode] && sum > 0 {
			line += "  " + bondGoal(g, sum, best, mp, sumGoal)
		}
		fmt.Println(strings.TrimRight(line, " "))
	}
}
