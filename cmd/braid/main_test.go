package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braid-tunnel/braid/tunnel"
)

// braid runs the command line and returns its output and error.
func braid(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := rootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// initDir runs braid init into a fresh directory.
func initDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "etc")
	out, err := braid(t, "init", "--dir", dir, "--concentrator", "192.0.2.10:4443", "--client", "laptop", "--client", "branch=10.1.0.0/24")
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	for _, f := range []string{"concentrator.yaml", "client-laptop.yaml", "client-branch.yaml"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("init did not report writing %s:\n%s", f, out)
		}
	}
	return dir
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := initDir(t)
	if _, err := braid(t, "init", "--dir", dir, "--concentrator", "192.0.2.10:4443", "--client", "laptop"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second init: err = %v, want a refusal to overwrite", err)
	}
}

// TestClientConfigErrors checks that what a user gets wrong is named.
func TestClientConfigErrors(t *testing.T) {
	dir := initDir(t)
	cfg := filepath.Join(dir, "client-laptop.yaml")
	tests := []struct {
		name  string
		args  []string
		setup func(t *testing.T)
		want  string
	}{
		{"missing file", []string{"client", "--config", filepath.Join(dir, "nope.yaml")}, nil, "nope.yaml"},
		{"bad mode", []string{"client", "--config", cfg, "--mode", "fastest"}, nil, `"mode"`},
		{"bad concentrator", []string{"client", "--config", cfg, "--concentrator", "192.0.2.10:nope"}, nil, `"concentrator"`},
		// A missing interface is no error: the client waits for it.
		{"bad match", []string{"client", "--config", cfg}, func(t *testing.T) {
			data, _ := os.ReadFile(cfg)
			os.WriteFile(cfg, bytes.Replace(data, []byte("interface: eth0"), []byte(`match: "eth[0"`), 1), 0o644)
			t.Cleanup(func() { os.WriteFile(cfg, data, 0o644) })
		}, `"uplinks[0].match": "eth[0" is not a valid interface name pattern`},
		{"key readable by others", []string{"client", "--config", cfg}, func(t *testing.T) {
			os.Chmod(filepath.Join(dir, "client-laptop.key"), 0o644)
		}, "client-laptop.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			_, err := braid(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one naming %s", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "client.sock")
	st := tunnel.ClientStatus{Role: "client", Name: "laptop", Session: 0xabc, MTU: 1394, Mode: "failover",
		Paths:    []tunnel.PathStatus{{Name: "wifi", State: "up", TxPackets: 42}, {Name: "lte", State: "up", Budget: "interactive-only"}},
		Counters: tunnel.CounterSnapshot{"drop_spoofed": 3},
		Budgets: []tunnel.BudgetStatus{{Uplink: "lte", LimitBytes: 10 << 30, UsedBytes: 10<<30 + 5, Period: "monthly",
			PeriodStart: time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC), PeriodEnd: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC),
			Action: "interactive-only", State: "exhausted"}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- tunnel.ServeStatus(ctx, socket, func() any { return st }) }()
	var out string
	var err error
	for range 100 { // the socket appears when the server listens
		if out, err = braid(t, "status", "--socket", socket); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"client laptop", "wifi", "lte", "up (budget used: interactive-only)", "42", "drop_spoofed=3",
		"exhausted", "10GiB", "100.0", "2026-11-03 00:00:00", "2026-12-03 00:00:00", "interactive-only"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = braid(t, "status", "--json", "--socket", socket)
	var got tunnel.ClientStatus
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Paths[0].TxPackets != 42 ||
		len(got.Budgets) != 1 || got.Budgets[0].UsedBytes != 10<<30+5 || !got.Budgets[0].PeriodEnd.Equal(st.Budgets[0].PeriodEnd) {
		t.Errorf("status --json = %q, %v", out, err)
	}
}

// TestWriteProfile checks that a profile lands in its file, in pprof's
// gzipped format, and that %s in a profile path names the command.
func TestWriteProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mutex-%s.prof")
	old := os.Args
	defer func() { os.Args = old }()
	os.Args = []string{"braid", "concentrator"}
	path = profilePath(path)
	if filepath.Base(path) != "mutex-concentrator.prof" {
		t.Fatalf("profilePath gave %s", path)
	}
	writeProfile("mutex", path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
		t.Errorf("profile is not gzipped pprof data: % x", data[:min(len(data), 8)])
	}
}
