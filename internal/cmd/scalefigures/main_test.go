package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunMeasuresEveryFigure runs the program at 300 entries against a
// daemon built here, and checks that every figure is there and sane.
func TestRunMeasuresEveryFigure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a reaperd daemon; not with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "reaperd")
	// Without -race even under -race: what is tested here is this
	// program, and CI has built the daemon that way already (.ci/run), so
	// the build only links.
	args := []string{"build", "-o", bin, "github.com/reaperd/reaperd/cmd/reaperd"}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	const n = 300
	err := run(ctx, []string{"-sizes", "300", "-reaperd", bin, "-dir", dir, "-json", "-idle", "100ms",
		"-drop-caches=false", "-settle", "1m"}, &stdout, &stderr)
	t.Logf("progress:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var doc document
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("decode the JSON output: %v\n%s", err, stdout.String())
	}
	if len(doc.Runs) != 1 || doc.Runs[0].Entries != n {
		t.Fatalf("runs = %+v, want one of %d entries", doc.Runs, n)
	}
	if len(doc.Figures) != len(figures) || doc.Machine["reaperd"] == "" || doc.Clients != 64 {
		t.Errorf("document: %d figures described, machine %v, %d clients", len(doc.Figures), doc.Machine, doc.Clients)
	}
	r := doc.Runs[0]
	fig := func(key string) float64 {
		t.Helper()
		v, ok := r.Figures[key]
		if !ok {
			t.Errorf("figure %s is missing", key)
		}
		return v
	}
	// Zero is a fair answer for these: the daemon's peak may not grow
	// for 300 entries; the file may stay cached where fadvise is a no-op
	// (tmpfs); a tmpfs writes nothing to storage.
	mayBeZero := map[string]bool{"list_daemon_hwm_mib": true, "resident_cold_pct": true}
	if doc.Machine["filesystem"] == "tmpfs" {
		mayBeZero["written_per_reg_bytes"], mayBeZero["written_mib"] = true, true
	}
	for _, f := range figures {
		v := fig(f.Key)
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0) || v < 0:
			t.Errorf("%s (%s) = %v", f.Key, f.Name, v)
		case v == 0 && !mayBeZero[f.Key]:
			t.Errorf("%s (%s) = 0, want more", f.Key, f.Name)
		}
	}
	if len(r.Figures) != len(figures) {
		t.Errorf("%d figures, want %d: %v", len(r.Figures), len(figures), r.Figures)
	}

	// Figures that must agree with each other or with the run.
	if got := fig("baseline_ops"); got != n {
		t.Errorf("baseline_ops = %v, want %d", got, n)
	}
	if got := fig("unverified"); got != n {
		t.Errorf("unverified = %v, want %d: the fake lists none of the sandboxes", got, n)
	}
	if a, b := fig("reg_per_s"), fig("reg_per_s_tail"); math.Abs(a-b) > 0.01*a {
		t.Errorf("below 10k entries the tail is the whole build: reg_per_s %v, reg_per_s_tail %v", a, b)
	}
	if p50, p99, top := fig("reg_p50_ms"), fig("reg_p99_ms"), fig("reg_max_ms"); p50 > p99 || p99 > top {
		t.Errorf("latencies p50 %v, p99 %v, max %v are out of order", p50, p99, top)
	}
	if got := fig("ledger_bytes_per_entry") * n; math.Abs(got-fig("ledger_mib")*(1<<20)) > 1 {
		t.Errorf("ledger_bytes_per_entry × N = %v, ledger_mib = %v", got, fig("ledger_mib"))
	}
	for _, key := range []string{"resident_warm_pct", "resident_cold_pct"} {
		if v := fig(key); v > 100 {
			t.Errorf("%s = %v%%", key, v)
		}
	}
	if fig("resident_warm_pct") < 90 {
		t.Errorf("resident_warm_pct = %v: the ledger was read just before", fig("resident_warm_pct"))
	}
	if fig("answer_warm_ms") > 60_000 || fig("ready_cold_ms") > 60_000 {
		t.Errorf("start-ups of a 300-entry ledger took %v ms warm, %v ms cold", fig("ready_warm_ms"), fig("ready_cold_ms"))
	}
	if !strings.Contains(r.Notes["cold start"], "posix_fadvise") || !strings.Contains(r.Notes["baseline"], "300 puts") {
		t.Errorf("notes = %v", r.Notes)
	}

	// The tables print every figure of the run.
	var tables bytes.Buffer
	if err := writeRun(&tables, r); err != nil {
		t.Fatal(err)
	}
	if err := writeSummary(&tables, doc.Runs); err != nil {
		t.Fatal(err)
	}
	for _, f := range figures {
		if c := strings.Count(tables.String(), f.Name+" "); c < 2 {
			t.Errorf("%q appears %d times in the tables, want 2:\n%s", f.Name, c, tables.String())
		}
	}
	if strings.Contains(tables.String(), " - ") {
		t.Errorf("a figure is printed as missing:\n%s", tables.String())
	}
}
