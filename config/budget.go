package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Budget periods and actions, the values of an uplink's budget_period
// and budget_action keys.
const (
	PeriodMonthly = "monthly"
	PeriodDaily   = "daily"

	// ActionFailoverOnly: an exhausted uplink carries traffic only while
	// no other path is up, as a metered one does.
	ActionFailoverOnly = "failover-only"
	// ActionInteractiveOnly: an exhausted uplink carries only interactive
	// packets (DNS, small UDP, pure TCP ACKs).
	ActionInteractiveOnly = "interactive-only"
	// ActionBlock: an exhausted uplink carries no data at all.
	ActionBlock = "block"
)

var (
	periods = []string{PeriodMonthly, PeriodDaily}
	actions = []string{ActionFailoverOnly, ActionInteractiveOnly, ActionBlock}
)

// MaxStartDay is the latest day of the month a monthly budget period may
// start on: every month has it, so a period is always a calendar month.
const MaxStartDay = 28

// Size is a number of bytes, written in a config file as a plain number
// or with a unit: 500MB, 10GiB, 1.5 TB. Units of 1000 (kB, MB, GB, TB)
// and of 1024 (KiB, MiB, GiB, TiB) are understood, case-insensitively.
type Size uint64

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize parses a size such as "10GiB".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || num == "" {
		return 0, fmt.Errorf("%q is not a size (e.g. 500MB, 10GiB)", s)
	}
	v := n * mult
	if v >= math.MaxUint64 || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return Size(math.Round(v)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// String formats s in the largest binary unit that keeps it readable.
func (s Size) String() string {
	f := float64(s)
	for _, u := range []struct {
		name string
		n    float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if f >= u.n {
			return fmt.Sprintf("%.4g%s", f/u.n, u.name)
		}
	}
	return strconv.FormatUint(uint64(s), 10) + "B"
}

// Percent is a share from 0 to 100, written as 80% or 80.
type Percent float64

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Percent) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(b)), "%"))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%q is not a percentage (e.g. 80%%)", string(b))
	}
	*p = Percent(v)
	return nil
}

// hasBudgetKeys reports whether any budget key but budget itself is set.
func (u *Uplink) hasBudgetKeys() bool {
	return u.BudgetPeriod != "" || u.BudgetStartDay != 0 || u.BudgetAction != "" || u.BudgetWarn != 0
}

// fillBudget sets the defaults of an uplink with a budget.
func (u *Uplink) fillBudget() {
	if u.Budget == 0 {
		return
	}
	if u.BudgetPeriod == "" {
		u.BudgetPeriod = PeriodMonthly
	}
	if u.BudgetStartDay == 0 && u.BudgetPeriod == PeriodMonthly {
		u.BudgetStartDay = 1
	}
	if u.BudgetAction == "" {
		u.BudgetAction = ActionFailoverOnly
	}
}

func (u *Uplink) checkBudget(key string) error {
	if u.Budget == 0 {
		if u.hasBudgetKeys() {
			return fmt.Errorf("key %q: budget_period, budget_start_day, budget_action and budget_warn need a budget", key+".budget")
		}
		return nil
	}
	if err := checkOneOf(key+".budget_period", u.BudgetPeriod, periods); err != nil {
		return err
	}
	switch {
	case u.BudgetPeriod == PeriodMonthly && (u.BudgetStartDay < 1 || u.BudgetStartDay > MaxStartDay):
		return fmt.Errorf("key %q: %d is not a day from 1 to %d", key+".budget_start_day", u.BudgetStartDay, MaxStartDay)
	case u.BudgetPeriod == PeriodDaily && u.BudgetStartDay != 0:
		return fmt.Errorf("key %q: only a monthly budget has a start day", key+".budget_start_day")
	}
	if err := checkOneOf(key+".budget_action", u.BudgetAction, actions); err != nil {
		return err
	}
	if !(u.BudgetWarn >= 0 && u.BudgetWarn <= 100) {
		return fmt.Errorf("key %q: %v%% is not from 0%% to 100%%", key+".budget_warn", float64(u.BudgetWarn))
	}
	return nil
}
