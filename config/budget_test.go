package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"0", 0, true},
		{"1234", 1234, true},
		{"500MB", 500e6, true},
		{"500 MB", 500e6, true},
		{"10GiB", 10 << 30, true},
		{"10gib", 10 << 30, true},
		{"1.5KiB", 1536, true},
		{"2TB", 2e12, true},
		{"1k", 1000, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"10XB", 0, false},
		{"-1GB", 0, false},
		{"1.2.3MB", 0, false},
		{"1e30TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	if s := Size(10 << 30).String(); s != "10GiB" {
		t.Errorf("String() = %q, want 10GiB", s)
	}
}

const budgetClient = minimalClient + `  - interface: wwan0
    name: lte
    metered: true
    budget: 10GiB
`

func TestBudgetDefaults(t *testing.T) {
	c, err := LoadClient(writeConfig(t, budgetClient))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Uplinks[2]
	if u.Budget != 10<<30 || u.BudgetPeriod != PeriodMonthly || u.BudgetStartDay != 1 || u.BudgetAction != ActionFailoverOnly || u.BudgetWarn != 0 {
		t.Errorf("got %+v", u)
	}
	if c.Uplinks[0].BudgetPeriod != "" || c.Uplinks[0].BudgetAction != "" {
		t.Errorf("an uplink without a budget got budget defaults: %+v", c.Uplinks[0])
	}
	c, err = LoadClient(writeConfig(t, budgetClient+"    budget_period: daily\n    budget_action: block\n    budget_warn: 80%\n"))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Uplinks[2]; u.BudgetPeriod != PeriodDaily || u.BudgetStartDay != 0 || u.BudgetAction != ActionBlock || u.BudgetWarn != 80 {
		t.Errorf("got %+v", u)
	}
	c, err = LoadClient(writeConfig(t, budgetClient+"    budget_start_day: 28\n    budget_warn: 90\n    budget_action: interactive-only\n"))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Uplinks[2]; u.BudgetStartDay != 28 || u.BudgetWarn != 90 || u.BudgetAction != ActionInteractiveOnly {
		t.Errorf("got %+v", u)
	}
}

// TestBudgetErrors: every bad budget setting is an error naming its key
// and the file.
func TestBudgetErrors(t *testing.T) {
	tests := []struct{ name, add, want string }{
		{"bad unit", "    budget: 10XB\n", `key "uplinks[2].budget": "10XB" is not a valid size (e.g. 500MB, 10GiB)`},
		{"negative", "    budget: -5GB\n", `key "uplinks[2].budget": "-5GB" is not a valid size`},
		{"words", "    budget: lots\n", `key "uplinks[2].budget": "lots" is not a valid size`},
		{"day 0", "    budget: 1GB\n    budget_start_day: -1\n", `key "uplinks[2].budget_start_day": -1 is not a day from 1 to 28`},
		{"day 29", "    budget: 1GB\n    budget_start_day: 29\n", `key "uplinks[2].budget_start_day": 29 is not a day from 1 to 28`},
		{"day not a number", "    budget: 1GB\n    budget_start_day: first\n", `key "uplinks[2].budget_start_day": "first" is not a valid integer`},
		{"daily with day", "    budget: 1GB\n    budget_period: daily\n    budget_start_day: 3\n", `key "uplinks[2].budget_start_day": only a monthly budget has a start day`},
		{"bad period", "    budget: 1GB\n    budget_period: weekly\n", `key "uplinks[2].budget_period": "weekly" is not one of monthly, daily`},
		{"bad action", "    budget: 1GB\n    budget_action: throttle\n", `key "uplinks[2].budget_action": "throttle" is not one of failover-only, interactive-only, block`},
		{"bad warn", "    budget: 1GB\n    budget_warn: most\n", `key "uplinks[2].budget_warn": "most" is not a valid percentage (e.g. 80%)`},
		{"warn over 100", "    budget: 1GB\n    budget_warn: 120%\n", `key "uplinks[2].budget_warn": 120% is not from 0% to 100%`},
		{"keys without budget", "    budget_action: block\n", `key "uplinks[2].budget": budget_period, budget_start_day, budget_action and budget_warn need a budget`},
		{"misspelt key", "    budget: 1GB\n    budget_day: 3\n", `unknown key "uplinks[2].budget_day"`},
	}
	base := minimalClient + "  - interface: wwan0\n    name: lte\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, base+tt.add)
			_, err := LoadClient(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config "+path+": ") || !strings.Contains(msg, tt.want) {
				t.Errorf("got  %s\nwant config %s: ...%s...", msg, path, tt.want)
			}
		})
	}
}

func TestBudgetUsageFile(t *testing.T) {
	c := validClient()
	c.Uplinks[1].Budget = 1 << 30
	c.Uplinks[1].fillBudget()
	checkErr(t, c.Validate(), `key "usage_file" is empty`)
	c.UsageFile = "/var/lib/braid/usage.json"
	checkErr(t, c.Validate(), "")
}
