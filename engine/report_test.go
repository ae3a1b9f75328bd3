package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

// TestReportFollowsTheProvidersListings runs a sandbox's life through the
// engine: registered with a size, stopped and resized as listings show,
// expired and closed; and a stray sandbox found, then gone. The report
// prices each stretch at its state and size, from the audit log alone.
func TestReportFollowsTheProvidersListings(t *testing.T) {
	st := newStock(reaper.Sandbox{ID: "a", State: "started", CreatedAt: t0.Add(-time.Minute)},
		reaper.Sandbox{ID: "stray", State: "started", CreatedAt: t0.Add(-time.Hour), Resources: &reaper.Resources{VCPU: 1}})
	h := newHarness(t, withAdoption(), func(e *engine.Engine) {
		e.SetPricing(&reaper.Pricing{Providers: map[string]reaper.PriceList{"fake": {
			Running: reaper.Rate{VCPU: 1, DiskGiB: 0.01}, Stopped: reaper.Rate{DiskGiB: 0.01}}}})
	})
	h.prov.ListFn = st.list
	h.prov.CloseFn = st.close
	h.start()
	start := h.clock.Now()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(3 * time.Hour), Resources: &reaper.Resources{VCPU: 2}})

	// An hour running at 2 vCPU: $2. The listing then shows it stopped,
	// with a 100 GiB disk the registration did not give: $1 an hour.
	h.clock.Advance(time.Hour)
	st.mu.Lock()
	st.sbs["a"] = reaper.Sandbox{ID: "a", State: "stopped", CreatedAt: t0.Add(-time.Minute), Resources: &reaper.Resources{DiskGiB: 100}}
	st.mu.Unlock()
	h.sweep()
	e := h.entry("fake/a")
	if !e.Stopped || e.Resources == nil || *e.Resources != (reaper.Resources{VCPU: 2, DiskGiB: 100}) {
		t.Fatalf("after a listing showed it stopped with 100 GiB: stopped %v, resources %+v", e.Stopped, e.Resources)
	}
	// A second listing that shows the same changes nothing more.
	h.clock.Advance(time.Minute)
	h.sweep()
	h.clock.Advance(time.Hour - time.Minute)
	st.remove("stray") // first seen by the sweep at 1 h, missing from the one at 2 h
	h.sweep()
	h.clock.Advance(time.Minute)
	h.sweep()
	// Due at 3 h; closed at once.
	h.advanceUntil(time.Minute, func() bool { return h.entry("fake/a").State == reaper.StateClosed }, "the expired entry to close")
	closedAt := h.entry("fake/a").ClosedAt

	var changes, resizes, gone int
	for _, ev := range h.audit() {
		switch ev.Kind {
		case reaper.EventStateChanged:
			changes++
		case reaper.EventResized:
			resizes++
		case reaper.EventUntrackedGone:
			gone++
		}
	}
	if changes != 1 || resizes != 1 || gone != 1 {
		t.Errorf("audit: %d state changes, %d resizes, %d untracked-gone; want one of each", changes, resizes, gone)
	}

	rep, err := h.eng.AuditReport(context.Background(), reaper.ReportQuery{Since: start, Until: closedAt.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	g := rep.Total
	stopped := closedAt.Sub(start.Add(time.Hour)).Hours()
	want := 2 + stopped*1 // 2 vCPU × $1 for 1 h, then 100 GiB × $0.01
	if g.RunningHours != 1 || g.Cost != round2(want) || g.Closes[reaper.ReasonExpired] != 1 || g.Reaped != 1 {
		t.Errorf("report total %+v; want 1 running hour, cost %.2f, one expired close", g, want)
	}
	if g.StoppedHours != round2(stopped) {
		t.Errorf("stopped hours %v, want %.2f", g.StoppedHours, stopped)
	}
	if g.Untracked != 1 || g.UntrackedHours != 1 || g.UntrackedCost != 1 {
		t.Errorf("untracked %d for %v h, $%v; want 1 for 1 h at $1 (first seen by the sweep at 1 h, gone at 2 h)", g.Untracked, g.UntrackedHours, g.UntrackedCost)
	}
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// TestStatusListsUpcomingDeadlines: the page's "next deadlines".
func TestStatusListsUpcomingDeadlines(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.register(reaper.RegisterRequest{ID: "later", TTL: reaper.Duration(2 * time.Hour)})
	h.register(reaper.RegisterRequest{ID: "sooner", TTL: reaper.Duration(time.Hour)})
	st, err := h.eng.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	want := []reaper.Deadline{{At: now.Add(time.Hour), Kind: "entry", Key: "fake/sooner"}, {At: now.Add(2 * time.Hour), Kind: "entry", Key: "fake/later"}}
	if len(st.Upcoming) != 2 || st.Upcoming[0].Key != want[0].Key || !st.Upcoming[0].At.Equal(want[0].At) ||
		st.Upcoming[1].Key != want[1].Key || !st.Upcoming[1].At.Equal(want[1].At) {
		t.Errorf("upcoming = %+v, want %+v", st.Upcoming, want)
	}
}
