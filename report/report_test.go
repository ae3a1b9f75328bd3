package report_test

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/providers/modal"
	"github.com/reaperd/reaperd/reaper"
	"github.com/reaperd/reaperd/report"
	"github.com/reaperd/reaperd/report/reporttest"
)

func pricing() *reaper.Pricing {
	return reporttest.Pricing(map[string]reaper.Cleanup{"daytona": daytona.Cleanup, "modal": modal.Cleanup})
}

func build(t *testing.T, q reaper.ReportQuery) *reaper.Report {
	t.Helper()
	if err := q.Validate(); err != nil {
		t.Fatal(err)
	}
	b := report.New(q, pricing())
	for _, ev := range reporttest.Events() {
		if b.Done(ev.Time) {
			break
		}
		b.Add(&ev)
	}
	return b.Report()
}

func groupsByKey(r *reaper.Report) map[string]reaper.ReportGroup {
	m := map[string]reaper.ReportGroup{}
	for _, g := range r.Groups {
		m[g.Key] = g
	}
	return m
}

// TestHandCheckedFleet compares the report of the seeded fleet with the
// figures worked out by hand in reporttest's comments.
func TestHandCheckedFleet(t *testing.T) {
	r := build(t, reaper.ReportQuery{Since: reporttest.Since, Until: reporttest.Until, GroupBy: reaper.GroupByProvider})
	pct := func(n int, p50, p90, p99, most float64) reaper.Percentiles {
		return reaper.Percentiles{Count: n, P50: p50, P90: p90, P99: p99, Max: most}
	}
	want := map[string]reaper.ReportGroup{
		// d4 168 h × 0.06 = 10.08; d1 10 h × 0.15 = 1.50 and 10 h 30 s ×
		// 0.01 = 0.100083; d2 144 h × 0.063 = 9.072; a1 10 s × 0.005;
		// d3 24 h × 0.061 = 1.464: 22.216097. Saved: d1 stopped, 168 h ×
		// 0.01 = 1.68; a1 168 h × 0.005 = 0.84. Protected: d4 192 h ×
		// 0.06 = 11.52, d2 9.072. Untracked: a1's 12 h × 0.005.
		"daytona": {Key: "daytona", Sandboxes: 5, RunningHours: 346, StoppedHours: 10.01, Cost: 22.22,
			Closes: map[reaper.Reason]int{reaper.ReasonExpired: 1, reaper.ReasonAdopted: 1}, Reaped: 2, Saved: 2.52, Stuck: 1,
			TimeToReap: pct(2, 10, 30, 30, 30), ProtectedRunning: 2, ProtectedCost: 20.59,
			Untracked: 1, UntrackedHours: 12, UntrackedCost: 0.06},
		// e1 3 h 1 s × 0.11 = 0.330031; e2 1 h × 0.24, then 4 h paused
		// for nothing. Saved: e1's timeout, 24 h from its start, was
		// 20 h 59 m 59 s away: × 0.11 = 2.309969. u1 24 h × 0.12.
		"e2b": {Key: "e2b", Sandboxes: 2, RunningHours: 4, StoppedHours: 4, Cost: 0.57,
			Closes: map[reaper.Reason]int{reaper.ReasonOrphanedLease: 1, reaper.ReasonReleased: 1}, Reaped: 1, Saved: 2.31,
			TimeToReap: pct(1, 2, 2, 2, 2), Untracked: 1, UntrackedHours: 24, UntrackedCost: 2.88},
		// m1 2 h 5 s × 2.18 = 4.363028; its 5 minute timeout had passed:
		// nothing saved.
		"modal": {Key: "modal", Sandboxes: 1, RunningHours: 2, Cost: 4.36,
			Closes: map[reaper.Reason]int{reaper.ReasonSessionEnded: 1}, Reaped: 1, TimeToReap: pct(1, 5, 5, 5, 5)},
		"runloop": {Key: "runloop", Sandboxes: 1, RunningHours: 6, UnpricedHours: 6,
			Closes: map[reaper.Reason]int{reaper.ReasonGone: 1}},
	}
	got := groupsByKey(r)
	for k, w := range want {
		if g := got[k]; !reflect.DeepEqual(g, w) {
			t.Errorf("group %s:\n got %+v\nwant %+v", k, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d groups, want %d", len(got), len(want))
	}
	if keys := strings.Join([]string{r.Groups[0].Key, r.Groups[1].Key, r.Groups[2].Key, r.Groups[3].Key}, " "); keys != "daytona modal e2b runloop" {
		t.Errorf("group order %s, want by cost with untracked cost: daytona modal e2b runloop", keys)
	}
	wantTotal := reaper.ReportGroup{Key: "total", Sandboxes: 9, RunningHours: 358, StoppedHours: 14.01, Cost: 27.15, UnpricedHours: 6,
		Closes: map[reaper.Reason]int{reaper.ReasonExpired: 1, reaper.ReasonAdopted: 1, reaper.ReasonOrphanedLease: 1,
			reaper.ReasonReleased: 1, reaper.ReasonSessionEnded: 1, reaper.ReasonGone: 1},
		Reaped: 4, Saved: 4.83, Stuck: 1, TimeToReap: pct(4, 5, 30, 30, 30), ProtectedRunning: 2, ProtectedCost: 20.59,
		Untracked: 2, UntrackedHours: 36, UntrackedCost: 2.94}
	if !reflect.DeepEqual(r.Total, wantTotal) {
		t.Errorf("total:\n got %+v\nwant %+v", r.Total, wantTotal)
	}
	wantProtected := []reaper.ReportSandbox{
		{Key: "daytona/d4", Session: "s-e", Attached: true, RunState: reaper.RunStateRunning, Since: reporttest.Since.Add(-24 * time.Hour),
			Age: reaper.Duration(192 * time.Hour), Cost: 11.52, Priced: true},
		{Key: "daytona/d2", Session: "s-b", Keep: true, RunState: reaper.RunStateRunning, Since: reporttest.Since.Add(24 * time.Hour),
			Age: reaper.Duration(144 * time.Hour), Cost: 9.07, Priced: true},
	}
	if !reflect.DeepEqual(r.Protected, wantProtected) {
		t.Errorf("protected:\n got %+v\nwant %+v", r.Protected, wantProtected)
	}
	wantUntracked := []reaper.ReportSandbox{{Key: "e2b/u1", RunState: reaper.RunStateRunning, Since: reporttest.Since.Add(6 * 24 * time.Hour),
		Age: reaper.Duration(24 * time.Hour), Cost: 2.88, Priced: true}}
	if !reflect.DeepEqual(r.Untracked, wantUntracked) {
		t.Errorf("untracked:\n got %+v\nwant %+v", r.Untracked, wantUntracked)
	}
	wantLive := map[string]reaper.LiveCounts{"daytona": {Running: 2, Closing: 1}, "e2b": {Untracked: 1}}
	if !reflect.DeepEqual(r.Live, wantLive) {
		t.Errorf("live = %+v, want %+v", r.Live, wantLive)
	}
	if _, ok := r.Unpriced["runloop"]; !ok || len(r.Unpriced) != 1 {
		t.Errorf("unpriced = %v, want runloop alone", r.Unpriced)
	}
	// Top sessions: s-e 10.08, s-b 9.072, s-d 4.363 (and runloop's
	// unpriced 6 h), s-a 1.600083 + 1.464, s-c 0.330031 + 0.24.
	wantSessions := []reaper.Ranked{{Key: "s-e", Hours: 168, Cost: 10.08}, {Key: "s-b", Hours: 144, Cost: 9.07},
		{Key: "s-d", Hours: 8, Cost: 4.36}, {Key: "s-a", Hours: 44.01, Cost: 3.06}, {Key: "s-c", Hours: 8, Cost: 0.57}}
	if !reflect.DeepEqual(r.TopSessions, wantSessions) {
		t.Errorf("top sessions:\n got %+v\nwant %+v", r.TopSessions, wantSessions)
	}
	wantLabels := []reaper.Ranked{{Key: "team=ml", Hours: 22.01, Cost: 5.96}, {Key: "team=web", Hours: 3, Cost: 0.33},
		{Key: "reaperd.rule=openhands", Hours: 0, Cost: 0}}
	if !reflect.DeepEqual(r.TopLabels, wantLabels) {
		t.Errorf("top labels:\n got %+v\nwant %+v", r.TopLabels, wantLabels)
	}
	var hist []int
	for _, b := range r.TimeToReap {
		hist = append(hist, b.Count)
	}
	// 2 s and 5 s are ≤5s, 10 s and 30 s ≤30s.
	if fmt.Sprint(hist) != "[0 2 2 0 0 0 0 0 0 0]" {
		t.Errorf("time-to-reap histogram %v", hist)
	}
	// The first day: d4 24 h × 0.06, d1 10 h × 0.15 + 10 h 30 s × 0.01.
	if d := r.Daily[0]; d != (reaper.DailyFigures{Day: "2026-11-23", Provider: "daytona", RunningHours: 34, StoppedHours: 10.01, Cost: 3.04}) {
		t.Errorf("first day = %+v", d)
	}
}

// TestWindowsAddUp: hours, costs and closes of two adjacent windows sum
// to those of the window that spans both, whatever the grouping.
func TestWindowsAddUp(t *testing.T) {
	mid := reporttest.Since.Add(3*24*time.Hour + 90*time.Minute) // in e2b/e2's running hour
	for _, g := range []reaper.GroupBy{reaper.GroupByProvider, reaper.GroupBySession, reaper.GroupByOwner, reaper.GroupByDay, "label:team"} {
		whole := build(t, reaper.ReportQuery{Since: reporttest.Since, Until: reporttest.Until, GroupBy: g})
		a := build(t, reaper.ReportQuery{Since: reporttest.Since, Until: mid, GroupBy: g})
		b := build(t, reaper.ReportQuery{Since: mid, Until: reporttest.Until, GroupBy: g})
		sum := map[string][4]float64{}
		closes := map[string]int{}
		for _, r := range []*reaper.Report{a, b} {
			for _, gr := range r.Groups {
				s := sum[gr.Key]
				s[0] += gr.RunningHours
				s[1] += gr.StoppedHours
				s[2] += gr.Cost
				s[3] += gr.UntrackedCost
				sum[gr.Key] = s
				for _, n := range gr.Closes {
					closes[gr.Key] += n
				}
			}
		}
		for _, gr := range whole.Groups {
			s := sum[gr.Key]
			n := 0
			for _, c := range gr.Closes {
				n += c
			}
			// Each part rounds to the cent, so a sum may be off by a cent
			// per part.
			if math.Abs(s[0]-gr.RunningHours) > 0.021 || math.Abs(s[1]-gr.StoppedHours) > 0.021 ||
				math.Abs(s[2]-gr.Cost) > 0.021 || math.Abs(s[3]-gr.UntrackedCost) > 0.021 || closes[gr.Key] != n {
				t.Errorf("group by %s, %s: parts sum to %v and %d closes, whole has %.2f %.2f %.2f %.2f and %d closes",
					g, gr.Key, s, closes[gr.Key], gr.RunningHours, gr.StoppedHours, gr.Cost, gr.UntrackedCost, n)
			}
		}
	}
}

// TestGroupByReason puts each sandbox's hours under how it ended.
func TestGroupByReason(t *testing.T) {
	r := build(t, reaper.ReportQuery{Since: reporttest.Since, Until: reporttest.Until, GroupBy: reaper.GroupByReason})
	got := map[string]float64{}
	for _, g := range r.Groups {
		got[g.Key] = g.Cost
	}
	// expired: d1 1.600083; closing: d3 1.464 (stuck); running: d4 10.08
	// and d2 9.072; orphaned-lease e1, released e2, session-ended m1,
	// adopted a1, gone r1 (unpriced).
	want := map[string]float64{"expired": 1.60, "closing": 1.46, "running": 19.15, "orphaned-lease": 0.33, "released": 0.24,
		"session-ended": 4.36, "adopted": 0, "gone": 0, report.KeyUntracked: 0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cost by reason = %v, want %v", got, want)
	}
}

func TestProviderFilter(t *testing.T) {
	r := build(t, reaper.ReportQuery{Since: reporttest.Since, Until: reporttest.Until, Provider: "e2b"})
	if len(r.Groups) != 1 || r.Groups[0].Key != "e2b" || r.Total.Cost != 0.57 || r.Total.UntrackedCost != 2.88 {
		t.Errorf("e2b only: groups %+v, total %+v", r.Groups, r.Total)
	}
}

func TestQueryValidation(t *testing.T) {
	for _, tc := range []struct {
		q    reaper.ReportQuery
		want string
	}{
		{reaper.ReportQuery{Since: reporttest.Until, Until: reporttest.Since}, "is not after since"},
		{reaper.ReportQuery{Until: reporttest.Until}, "give both since and until"},
		{reaper.ReportQuery{Since: reporttest.Since, Until: reporttest.Until, GroupBy: "colour"}, "use provider, session, owner, reason, day or label:KEY"},
		{reaper.ReportQuery{Since: reporttest.Since, Until: reporttest.Until, GroupBy: "label:"}, "is not a label key"},
	} {
		err := tc.q.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error saying %q", tc.q, err, tc.want)
		}
	}
}
