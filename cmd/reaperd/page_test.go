package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	"github.com/reaperd/reaperd/report/reporttest"
)

// seedLedger writes the hand-checked fleet's audit log into a new ledger.
func seedLedger(t *testing.T, path string) {
	t.Helper()
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(context.Background(), reporttest.Append); err != nil {
		t.Fatal(err)
	}
}

// artifactDir is where tests leave files for a person to look at:
// $REAPERD_ARTIFACT_DIR, else a directory under the system's temp dir.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("REAPERD_ARTIFACT_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "reaperd-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chromiumPath finds Debian's chromium. Without it the browser test
// cannot run: on CI (.ci/run installs it) that is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, and CI must run the browser test: apt-get install chromium chromium-driver")
	}
	t.Skip("chromium is not installed (apt-get install chromium chromium-driver); .ci/run installs it and runs this test")
	return ""
}

// TestReportFormatsAndPageAgree starts a daemon on the hand-checked
// ledger and checks the table, the CSV, the JSON and the page, opened in
// headless Chromium, against the hand-computed figures and each other.
func TestReportFormatsAndPageAgree(t *testing.T) {
	browser := chromiumPath(t)
	dir := t.TempDir()
	seedLedger(t, filepath.Join(dir, "ledger.db"))
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "reaperd.toml")
	if err := os.WriteFile(cfg, []byte(reporttest.Config+"\n[http]\nlisten = \""+addr+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, nil, "--config", cfg, "--schedule", "@every 1h")
	since, until := reporttest.Since.Format(time.RFC3339), reporttest.Until.Format(time.RFC3339)
	win := []string{"audit", "report", "--since", since, "--until", until}

	// JSON: the hand-computed figures (see report/reporttest).
	var rep reaper.Report
	if err := json.Unmarshal([]byte(d.mustCLI(append(win, "-o", "json")...)), &rep); err != nil {
		t.Fatal(err)
	}
	groups := map[string]reaper.ReportGroup{}
	for _, g := range rep.Groups {
		groups[g.Key] = g
	}
	hand := []struct {
		name      string
		got, want float64
	}{
		{"total cost", rep.Total.Cost, 27.15}, {"total saved", rep.Total.Saved, 4.83},
		{"running hours", rep.Total.RunningHours, 358}, {"stopped hours", rep.Total.StoppedHours, 14.01},
		{"untracked cost", rep.Total.UntrackedCost, 2.94}, {"protected cost", rep.Total.ProtectedCost, 20.59},
		{"daytona cost", groups["daytona"].Cost, 22.22}, {"e2b cost", groups["e2b"].Cost, 0.57},
		{"modal cost", groups["modal"].Cost, 4.36}, {"runloop unpriced hours", groups["runloop"].UnpricedHours, 6},
		{"daytona saved", groups["daytona"].Saved, 2.52}, {"e2b saved", groups["e2b"].Saved, 2.31},
	}
	for _, h := range hand {
		if h.got != h.want {
			t.Errorf("JSON %s = %v, hand-computed %v", h.name, h.got, h.want)
		}
	}
	if rep.Unpriced["runloop"] == "" || rep.SavedRule["daytona"] == "" || rep.Horizon != reaper.Duration(reaper.DefaultHorizon) {
		t.Errorf("JSON lacks the unpriced note, the saved rule or the horizon: %v %v %v", rep.Unpriced, rep.SavedRule, rep.Horizon)
	}

	// CSV: one row per group and a total, the same figures.
	records, err := csv.NewReader(strings.NewReader(d.mustCLI(append(win, "-o", "csv")...))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range records[0] {
		col[h] = i
	}
	rows := map[string][]string{}
	for _, r := range records[1:] {
		rows[r[0]] = r
	}
	for key, g := range map[string]reaper.ReportGroup{"daytona": groups["daytona"], "e2b": groups["e2b"], "modal": groups["modal"], "total": rep.Total} {
		r := rows[key]
		if r == nil {
			t.Errorf("CSV has no row %s", key)
			continue
		}
		for name, want := range map[string]string{"cost_usd": fmt.Sprintf("%.2f", g.Cost), "saved_usd": fmt.Sprintf("%.2f", g.Saved),
			"running_hours": reaper.FormatHours(g.RunningHours), "untracked_cost_usd": fmt.Sprintf("%.2f", g.UntrackedCost),
			"closes_expired": fmt.Sprint(g.Closes[reaper.ReasonExpired])} {
			if got := r[col[name]]; got != want {
				t.Errorf("CSV %s %s = %q, JSON says %q", key, name, got, want)
			}
		}
	}

	// Table: the same figures, as a person reads them.
	table := d.mustCLI(win...)
	for _, want := range []string{"$27.15", "$22.22", "$4.36", "$0.57", "$4.83", "$2.94", "$20.59", "358.00", "daytona/d4", "e2b/u1",
		"runloop: hours only"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}

	// The page, in a real browser.
	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1366, 900),
		chromedp.UserDataDir(filepath.Join(dir, "chromium")))...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requests = append(requests, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	pageURL := "http://" + addr + "/?since=" + url.QueryEscape(since) + "&until=" + url.QueryEscape(until)
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL), chromedp.WaitVisible(chromedp.CSS(`[data-figure="total.cost"]`))); err != nil {
		t.Fatalf("open the page in chromium: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	figures, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
		`Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(e => [e.dataset.figure, e.textContent.trim()]))`))
	if err != nil {
		t.Fatalf("read the page's figures: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	pdf, err := chromedp.Run(ctx, chromedp.PrintToPDF())
	if err != nil {
		t.Fatalf("print to PDF: %v", err)
	}
	art := artifactDir(t)
	for name, b := range map[string][]byte{"report-page.png": shot, "report-page.pdf": pdf} {
		p := filepath.Join(art, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("saved %s (%d bytes)", p, len(b))
	}
	if len(shot) < 10_000 || len(pdf) < 5_000 || !strings.HasPrefix(string(pdf), "%PDF") {
		t.Errorf("screenshot %d bytes, PDF %d bytes: the page did not render", len(shot), len(pdf))
	}
	if !strings.Contains(title, "reaperd") {
		t.Errorf("page title %q", title)
	}
	want := map[string]string{
		"total.cost": reaper.FormatUSD(rep.Total.Cost), "total.saved": reaper.FormatUSD(rep.Total.Saved),
		"total.running_hours": reaper.FormatHours(rep.Total.RunningHours), "total.stopped_hours": reaper.FormatHours(rep.Total.StoppedHours),
		"total.reaped": fmt.Sprint(rep.Total.Reaped), "total.untracked_cost": reaper.FormatUSD(rep.Total.UntrackedCost),
		"total.protected_cost": reaper.FormatUSD(rep.Total.ProtectedCost), "total.stuck": fmt.Sprint(rep.Total.Stuck),
		"total.sandboxes": fmt.Sprint(rep.Total.Sandboxes), "total.unpriced_hours": reaper.FormatHours(rep.Total.UnpricedHours),
		"live.untracked": fmt.Sprint(rep.Live["e2b"].Untracked + rep.Live["daytona"].Untracked),
	}
	for _, g := range rep.Groups {
		want["group."+g.Key+".cost"] = reaper.FormatUSD(g.Cost)
		want["group."+g.Key+".saved"] = reaper.FormatUSD(g.Saved)
		want["group."+g.Key+".running_hours"] = reaper.FormatHours(g.RunningHours)
		want["group."+g.Key+".untracked_cost"] = reaper.FormatUSD(g.UntrackedCost)
	}
	for k, v := range want {
		if figures[k] != v {
			t.Errorf("page %s = %q, audit report -o json says %q", k, figures[k], v)
		}
	}
	if figures["total.cost"] != "$27.15" || figures["group.daytona.cost"] != "$22.22" {
		t.Errorf("page total %q, daytona %q; hand-computed $27.15 and $22.22", figures["total.cost"], figures["group.daytona.cost"])
	}
	mu.Lock()
	defer mu.Unlock()
	for _, u := range requests {
		if !strings.HasPrefix(u, "http://"+addr+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page fetched %s: it must fetch nothing from elsewhere", u)
		}
	}
	if len(requests) == 0 {
		t.Error("no request seen: the network listener did not work")
	}
}
