package e2e

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first quick-start command, `braid demo`, as a
// user would (shortened: 8 s of streaming, the cut from 2 s to 5 s), and
// checks what it promises: the cut and the restore happen, the busy
// uplink shows down while it is cut and carries traffic again after, the
// data arrives intact in the same session, and the lab is gone after.
func TestDemo(t *testing.T) {
	requireRoot(t)
	before := labNamespaces(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, braidBin, "demo", "--duration", "8s", "--cut-at", "2s", "--restore-at", "5s")
	out, err := cmd.CombinedOutput()
	t.Logf("braid demo:\n%s", out)
	if err != nil {
		t.Fatalf("braid demo: %v", err)
	}
	text := string(out)
	for _, want := range []string{"isp1 cut", "isp1 restored", "data intact: yes, session kept: yes"} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	// The per-second lines: isp1 down at some second between the cut and
	// the restore, and carrying traffic in one after the restore.
	line := regexp.MustCompile(`(?m)^\s*(\d+)s .*isp1 (\S+)\s+([0-9.]+)`)
	var down, back bool
	for _, m := range line.FindAllStringSubmatch(text, -1) {
		sec, _ := strconv.Atoi(m[1])
		mbps, _ := strconv.ParseFloat(m[3], 64)
		switch {
		case m[2] == "down" && sec >= 3 && sec <= 5:
			down = true
		case m[2] == "up" && mbps > 0 && sec >= 7:
			back = true
		}
	}
	if !down {
		t.Error("isp1 never showed down while it was cut")
	}
	if !back {
		t.Error("isp1 carried nothing after it was restored")
	}
	if left := slices.DeleteFunc(labNamespaces(t), func(n string) bool { return slices.Contains(before, n) }); len(left) > 0 {
		t.Errorf("the demo left namespaces behind: %v", left)
	}
}

// labNamespaces lists the named network namespaces (those under
// /var/run/netns) that e2e labs make.
func labNamespaces(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/var/run/netns")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), labPrefix()) {
			names = append(names, e.Name())
		}
	}
	return names
}
