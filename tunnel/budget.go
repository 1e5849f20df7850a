package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-tunnel/braid/config"
)

// Data budgets of metered uplinks.
//
// What is counted: every byte of every IP packet of the uplink's path, in
// both directions, as a carrier bills it: QUIC's own count of the UDP
// payloads it sent and received (braid's datagrams with their header, the
// control stream, acknowledgements, retransmissions, the handshake), plus
// the IP and UDP headers of each of those packets (28 bytes over IPv4, 48
// over IPv6). The link's sender samples QUIC's counters every
// probeInterval (its ticks) and adds the difference to the uplink's meter, so the hot
// path pays nothing and a budget is overrun by at most one tick's traffic.
// Dials that fail before the handshake ends are not counted.
//
// The meter belongs to the uplink, not to one connection: a path that
// reconnects keeps counting into it. Usage is kept in a JSON file
// (ClientOptions.UsageFile), written every usageSaveInterval and when
// the client stops, with fsync and rename as the lease file is. A period
// starts at midnight local time (the process's time zone), on the start
// day of the month for a monthly budget; when a new period starts, usage
// is zero again. A usage file that does not parse is moved aside to
// FILE.corrupt with a warning and counting starts from zero: a tunnel
// that refused to start over its bookkeeping would be worse than one that
// may overspend once.
//
// Once the budget is used up, the uplink's path is restricted as its
// action says (see restriction); the client tells the concentrator in its
// reports, so the concentrator restricts the path's downlink the same way.

const (
	// usageSaveInterval is how often usage is written to the file: often
	// enough that a crash loses little, rarely enough to spare the disk.
	usageSaveInterval = 10 * time.Second
	// periodCheckInterval is how often the meters look at the wall clock
	// for the start of a new period.
	periodCheckInterval = time.Second
)

// Budget limits the bytes an uplink carries per period.
type Budget struct {
	Limit    uint64  // bytes per period, > 0
	Period   string  // config.PeriodMonthly or config.PeriodDaily
	StartDay int     // monthly: day of the month the period starts, 1..28
	Action   string  // config.ActionFailoverOnly, ActionInteractiveOnly or ActionBlock
	Warn     float64 // share of Limit (0..1] at which to warn once a period; 0 for never
}

// PeriodBounds returns the budget period that contains now, in now's
// location: [start, end). A monthly period starts at midnight on
// startDay (1..28, which every month has); a daily one at midnight.
func PeriodBounds(now time.Time, period string, startDay int) (start, end time.Time) {
	y, m, d := now.Date()
	loc := now.Location()
	if period == config.PeriodDaily {
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		return start, time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	}
	if d < startDay {
		m-- // time.Date normalises month 0 to December of the year before
	}
	start = time.Date(y, m, startDay, 0, 0, 0, 0, loc)
	return start, time.Date(y, m+1, startDay, 0, 0, 0, 0, loc)
}

// restriction is what an exhausted budget does to a path.
type restriction int32

const (
	restrictNone        restriction = iota
	restrictFailover                // the path counts as metered
	restrictInteractive             // the path carries interactive packets only
	restrictBlock                   // the path carries no data
)

var restrictionNames = map[restriction]string{
	restrictFailover:    config.ActionFailoverOnly,
	restrictInteractive: config.ActionInteractiveOnly,
	restrictBlock:       config.ActionBlock,
}

func (r restriction) String() string { return restrictionNames[r] }

func parseRestriction(s string) restriction {
	for r, name := range restrictionNames {
		if name == s {
			return r
		}
	}
	return restrictNone
}

// meter counts one uplink's bytes against its budget.
type meter struct {
	uplink string
	budget Budget
	log    *slog.Logger

	used     atomic.Uint64
	restrict atomic.Int32 // a restriction while the budget is used up
	warned   atomic.Bool  // the warning of this period was logged

	mu         sync.Mutex // guards the period
	start, end time.Time
}

func newMeter(uplink string, b Budget, now time.Time, log *slog.Logger) *meter {
	m := &meter{uplink: uplink, budget: b, log: log.With("path", uplink)}
	m.start, m.end = PeriodBounds(now, b.Period, b.StartDay)
	return m
}

func (m *meter) warnBytes() uint64 { return uint64(m.budget.Warn * float64(m.budget.Limit)) }

// add counts n bytes and applies the budget's thresholds.
func (m *meter) add(n uint64) {
	if n == 0 {
		return
	}
	m.check(m.used.Add(n))
}

func (m *meter) check(used uint64) {
	if w := m.warnBytes(); w > 0 && used >= w && used < m.budget.Limit && !m.warned.Swap(true) {
		m.log.Warn("data budget nearly used", "used", used, "budget", m.budget.Limit, "warn_at", w)
	}
	if used >= m.budget.Limit && m.restrict.Load() == int32(restrictNone) {
		r := parseRestriction(m.budget.Action)
		m.restrict.Store(int32(r))
		m.warned.Store(true)
		m.log.Warn("data budget used up", "used", used, "budget", m.budget.Limit, "action", r)
	}
}

// roll starts a new period if now is past the current one, and reports
// whether it did. A wall clock set back never starts a period: that would
// forget what was used.
func (m *meter) roll(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Before(m.end) {
		return false
	}
	m.start, m.end = PeriodBounds(now, m.budget.Period, m.budget.StartDay)
	old := m.used.Swap(0)
	m.restrict.Store(int32(restrictNone))
	m.warned.Store(false)
	m.log.Info("new data budget period", "start", m.start, "end", m.end, "used_last_period", old)
	return true
}

func (m *meter) period() (start, end time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.start, m.end
}

// BudgetStatus is one uplink's budget as `braid status` shows it.
type BudgetStatus struct {
	Uplink      string    `json:"uplink"`
	LimitBytes  uint64    `json:"limit_bytes"`
	UsedBytes   uint64    `json:"used_bytes"`
	Period      string    `json:"period"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	Action      string    `json:"action"`
	WarnBytes   uint64    `json:"warn_bytes,omitempty"`
	State       string    `json:"state"` // ok, warning (past the warning share) or exhausted
}

func (m *meter) status() BudgetStatus {
	st := BudgetStatus{Uplink: m.uplink, LimitBytes: m.budget.Limit, UsedBytes: m.used.Load(), Period: m.budget.Period,
		Action: m.budget.Action, WarnBytes: m.warnBytes(), State: "ok"}
	st.PeriodStart, st.PeriodEnd = m.period()
	switch {
	case restriction(m.restrict.Load()) != restrictNone:
		st.State = "exhausted"
	case st.WarnBytes > 0 && st.UsedBytes >= st.WarnBytes:
		st.State = "warning"
	}
	return st
}

// usageRecord is one uplink's usage in the usage file.
type usageRecord struct {
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	UsedBytes   uint64    `json:"used_bytes"`
	Warned      bool      `json:"warned,omitempty"`
}

type usageFile struct {
	Uplinks map[string]usageRecord `json:"uplinks"`
}

// loadUsage reads the usage file at path; a missing file is an empty one.
func loadUsage(path string) (map[string]usageRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("usage file %s: %w", path, err)
	}
	var f usageFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("usage file %s: %w", path, err)
	}
	return f.Uplinks, nil
}

// restore takes the usage of a record of the current period.
func (m *meter) restore(rec usageRecord) {
	start, _ := m.period()
	if !rec.PeriodStart.Equal(start) {
		return // an earlier period (or the budget's start day changed)
	}
	m.warned.Store(rec.Warned)
	m.used.Store(rec.UsedBytes)
	m.check(rec.UsedBytes)
}

func (m *meter) record() usageRecord {
	start, end := m.period()
	return usageRecord{PeriodStart: start, PeriodEnd: end, UsedBytes: m.used.Load(), Warned: m.warned.Load()}
}

// saveUsage writes the meters' usage to path.
func saveUsage(path string, meters []*meter) error {
	f := usageFile{Uplinks: map[string]usageRecord{}}
	for _, m := range meters {
		f.Uplinks[m.uplink] = m.record()
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, data); err != nil {
		return fmt.Errorf("usage file %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic writes, syncs and renames, so a crash leaves the old
// file or the new one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
