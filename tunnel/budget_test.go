package tunnel

import (
	"encoding/json"
	"github.com/braid-tunnel/braid/scheduler"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/config"
	"github.com/braid-tunnel/braid/tunnel/packet"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

func TestPeriodBounds(t *testing.T) {
	fixed := time.FixedZone("UTC+5:30", 5*3600+1800)
	d := func(loc *time.Location, y int, m time.Month, day, h, min int) time.Time {
		return time.Date(y, m, day, h, min, 0, 0, loc)
	}
	utc := time.UTC
	tests := []struct {
		name       string
		now        time.Time
		period     string
		day        int
		start, end time.Time
	}{
		{"monthly day 1, mid-month", d(utc, 2026, 11, 15, 12, 0), "monthly", 1, d(utc, 2026, 11, 1, 0, 0), d(utc, 2026, 12, 1, 0, 0)},
		{"monthly day 1, first instant", d(utc, 2026, 11, 1, 0, 0), "monthly", 1, d(utc, 2026, 11, 1, 0, 0), d(utc, 2026, 12, 1, 0, 0)},
		{"monthly day 1, last minute", d(utc, 2026, 11, 30, 23, 59), "monthly", 1, d(utc, 2026, 11, 1, 0, 0), d(utc, 2026, 12, 1, 0, 0)},
		{"monthly day 1, December into January", d(utc, 2026, 12, 31, 23, 59), "monthly", 1, d(utc, 2026, 12, 1, 0, 0), d(utc, 2027, 1, 1, 0, 0)},
		{"start day 15, before it", d(utc, 2026, 11, 14, 23, 59), "monthly", 15, d(utc, 2026, 10, 15, 0, 0), d(utc, 2026, 11, 15, 0, 0)},
		{"start day 15, on it", d(utc, 2026, 11, 15, 0, 0), "monthly", 15, d(utc, 2026, 11, 15, 0, 0), d(utc, 2026, 12, 15, 0, 0)},
		{"start day 28, January before it: from December", d(utc, 2027, 1, 10, 0, 0), "monthly", 28, d(utc, 2026, 12, 28, 0, 0), d(utc, 2027, 1, 28, 0, 0)},
		{"start day 28, February end (non-leap)", d(utc, 2027, 2, 28, 5, 0), "monthly", 28, d(utc, 2027, 2, 28, 0, 0), d(utc, 2027, 3, 28, 0, 0)},
		{"start day 28, March 1 after a short February", d(utc, 2027, 3, 1, 0, 0), "monthly", 28, d(utc, 2027, 2, 28, 0, 0), d(utc, 2027, 3, 28, 0, 0)},
		{"start day 28, leap February 29", d(utc, 2028, 2, 29, 12, 0), "monthly", 28, d(utc, 2028, 2, 28, 0, 0), d(utc, 2028, 3, 28, 0, 0)},
		{"start day 28, month of 31 days", d(utc, 2026, 8, 31, 12, 0), "monthly", 28, d(utc, 2026, 8, 28, 0, 0), d(utc, 2026, 9, 28, 0, 0)},
		{"fixed zone: midnight local, not UTC", d(fixed, 2026, 11, 1, 0, 10), "monthly", 1, d(fixed, 2026, 11, 1, 0, 0), d(fixed, 2026, 12, 1, 0, 0)},
		{"fixed zone: same instant is October in UTC", d(fixed, 2026, 11, 1, 0, 10).In(utc), "monthly", 1, d(utc, 2026, 10, 1, 0, 0), d(utc, 2026, 11, 1, 0, 0)},
		{"daily", d(utc, 2026, 11, 27, 13, 5), "daily", 0, d(utc, 2026, 11, 27, 0, 0), d(utc, 2026, 11, 28, 0, 0)},
		{"daily, month end", d(utc, 2026, 11, 30, 23, 59), "daily", 0, d(utc, 2026, 11, 30, 0, 0), d(utc, 2026, 12, 1, 0, 0)},
		{"daily, year end, fixed zone", d(fixed, 2026, 12, 31, 0, 0), "daily", 0, d(fixed, 2026, 12, 31, 0, 0), d(fixed, 2027, 1, 1, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, end := PeriodBounds(tt.now, tt.period, tt.day)
			if !start.Equal(tt.start) || !end.Equal(tt.end) {
				t.Errorf("PeriodBounds(%v) = [%v, %v), want [%v, %v)", tt.now, start, end, tt.start, tt.end)
			}
			if tt.now.Before(start) || !tt.now.Before(end) {
				t.Errorf("%v is not in [%v, %v)", tt.now, start, end)
			}
		})
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestMeterThresholds(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	m := newMeter("lte", Budget{Limit: 1000, Period: config.PeriodDaily, Action: config.ActionBlock, Warn: 0.8}, now, quietLog())
	m.add(500)
	if st := m.status(); st.State != "ok" || st.UsedBytes != 500 || st.WarnBytes != 800 {
		t.Errorf("after 500 bytes: %+v", st)
	}
	m.add(300)
	if st := m.status(); st.State != "warning" || !m.warned.Load() {
		t.Errorf("after 800 bytes: %+v", st)
	}
	m.add(200)
	if st := m.status(); st.State != "exhausted" || restriction(m.restrict.Load()) != restrictBlock {
		t.Errorf("after 1000 bytes: %+v", st)
	}
	if m.roll(now.Add(time.Hour)) {
		t.Error("rolled within the period")
	}
	if m.roll(now.Add(-48 * time.Hour)) {
		t.Error("rolled back when the clock was set back")
	}
	if !m.roll(now.Add(14 * time.Hour)) {
		t.Error("did not roll into the next day")
	}
	st := m.status()
	if st.State != "ok" || st.UsedBytes != 0 || m.warned.Load() || !st.PeriodStart.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("after the new period began: %+v", st)
	}
}

// newBudgetClient makes (but does not run) a client whose "lte" uplink
// has a monthly budget, its clock at now.
func newBudgetClient(t *testing.T, file string, now time.Time) *Client {
	t.Helper()
	dev := tuntest.NewChannelTUN().TUN()
	c, err := NewClient(ClientOptions{
		Device: dev,
		Uplinks: []Uplink{{Name: "wifi"}, {Name: "lte", Budget: &Budget{Limit: 1 << 20, Period: config.PeriodMonthly, StartDay: 5,
			Action: config.ActionFailoverOnly, Warn: 0.5}}},
		UsageFile: file, Clock: func() time.Time { return now }, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestUsagePersists: usage survives a restart within the period, is
// forgotten in the next one, and a corrupt file is moved aside.
func TestUsagePersists(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state", "usage.json")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.Local)
	c := newBudgetClient(t, file, now)
	c.meters["lte"].add(600 << 10) // past the warning
	c.saveUsage()

	c = newBudgetClient(t, file, now.Add(24*time.Hour))
	if st := c.Status().Budgets[0]; st.UsedBytes != 600<<10 || st.State != "warning" || !c.meters["lte"].warned.Load() {
		t.Errorf("after a restart: %+v", st)
	}
	c.meters["lte"].add(600 << 10)
	c.saveUsage()
	c = newBudgetClient(t, file, now.Add(48*time.Hour))
	if st := c.Status().Budgets[0]; st.State != "exhausted" || restriction(c.meters["lte"].restrict.Load()) != restrictFailover {
		t.Errorf("an exhausted budget after a restart: %+v", st)
	}

	// December 5th starts a new period.
	c = newBudgetClient(t, file, time.Date(2026, 12, 5, 0, 0, 1, 0, time.Local))
	if st := c.Status().Budgets[0]; st.UsedBytes != 0 || st.State != "ok" {
		t.Errorf("in the next period: %+v", st)
	}

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var f usageFile
	if err := json.Unmarshal(data, &f); err != nil || f.Uplinks["lte"].UsedBytes != 1200<<10 {
		t.Errorf("usage file: %s, %v", data, err)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}

	os.WriteFile(file, []byte(`{"uplinks": {"lte": {"used_bytes": "lots"`), 0o600)
	c = newBudgetClient(t, file, now)
	if st := c.Status().Budgets[0]; st.UsedBytes != 0 {
		t.Errorf("from a corrupt file: %+v", st)
	}
	if bad, err := os.ReadFile(file + ".corrupt"); err != nil || !strings.Contains(string(bad), "lots") {
		t.Errorf("the corrupt file was not kept aside: %v", err)
	}
	if _, err := loadUsage(file + ".corrupt"); err == nil || !strings.Contains(err.Error(), file+".corrupt") {
		t.Errorf("loadUsage error does not name the file: %v", err)
	}
}

func TestIsInteractive(t *testing.T) {
	const tcpACK = 0x10
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"small UDP", mkUDP(5000, 6000, 100), true},
		{"large UDP", mkUDP(5000, 6000, 1200), false},
		{"large DNS", mkUDP(40000, 53, 1200), true},
		{"pure ACK", mkTCP(40000, 443, tcpACK, 0), true},
		{"ACK with data", mkTCP(40000, 443, tcpACK, 100), false},
		{"SYN", mkTCP(40000, 443, tcpSYN, 0), false},
		{"FIN", mkTCP(40000, 443, tcpFIN|tcpACK, 0), true}, // the flow's end waits on it
		{"RST", mkTCP(40000, 443, 0x04|tcpACK, 0), false},
		{"DNS over TCP", mkTCP(40000, 53, tcpACK, 300), true},
	}
	for _, tt := range tests {
		info, err := packet.Parse(tt.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		si := schedInfo(tt.pkt, &info)
		if got := scheduler.IsInteractive(&si); got != tt.want {
			t.Errorf("%s: interactive = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// mkUDP and mkTCP build IPv4 packets (no checksums) with n payload bytes.
func mkUDP(src, dst uint16, n int) []byte {
	b := ipv4(17, 8+n)
	be16(b[20:], src)
	be16(b[22:], dst)
	be16(b[24:], uint16(8+n))
	return b
}

func mkTCP(src, dst uint16, flags byte, n int) []byte {
	b := ipv4(6, 20+n)
	be16(b[20:], src)
	be16(b[22:], dst)
	b[32] = 5 << 4
	b[33] = flags
	return b
}

func ipv4(proto byte, l4 int) []byte {
	b := make([]byte, 20+l4)
	b[0] = 0x45
	be16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	copy(b[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	return b
}

func be16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }
