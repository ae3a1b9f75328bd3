package engine_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

// stock is a provider's fleet with full sandbox records.
type stock struct {
	mu  sync.Mutex
	sbs map[string]reaper.Sandbox
}

func newStock(sbs ...reaper.Sandbox) *stock {
	s := &stock{sbs: map[string]reaper.Sandbox{}}
	for _, sb := range sbs {
		s.sbs[sb.ID] = sb
	}
	return s
}

func (s *stock) list(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []reaper.Sandbox
	for _, sb := range s.sbs {
		out = append(out, sb)
	}
	return out, nil
}

func (s *stock) remove(id string) {
	s.mu.Lock()
	delete(s.sbs, id)
	s.mu.Unlock()
}

func (s *stock) close(_ context.Context, id string) error {
	s.remove(id)
	return nil
}

var openhandsRule = reaper.AdoptRule{Name: "oh", Provider: "fake", Labels: map[string]string{"OpenHands_SID": "*"},
	States: []string{"stopped"}, MinAge: time.Hour, Action: reaper.AdoptReap, SessionLabel: "OpenHands_SID"}

func withAdoption(rules ...reaper.AdoptRule) func(*engine.Engine) {
	return func(e *engine.Engine) {
		e.DiscoverOnSweep = true
		e.SetAdoption(engine.Adoption{Rules: rules})
	}
}

func untrackedByID(us []reaper.Untracked) map[string]reaper.Untracked {
	out := map[string]reaper.Untracked{}
	for _, u := range us {
		out[u.Sandbox.ID] = u
	}
	return out
}

// An old, stopped, matching sandbox is adopted and closed; a young one, a
// running one, an unmatched one, a registered keep one and ones labelled
// reaperd.keep or reaperd.managed are left alone.
func TestAdoptionReapsOnlyWhatTheRuleSelects(t *testing.T) {
	m := engine.NewMetrics(prometheus.NewRegistry())
	oh := map[string]string{"OpenHands_SID": "sess-1"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{"OpenHands_SID": "sess-2"}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	st := newStock(
		reaper.Sandbox{ID: "old", State: "stopped", Labels: oh, CreatedAt: t0.Add(-3 * time.Hour), Resources: &reaper.Resources{VCPU: 2, DiskGiB: 10}},
		reaper.Sandbox{ID: "young", State: "stopped", Labels: oh, CreatedAt: t0.Add(-5 * time.Minute)},
		reaper.Sandbox{ID: "between", State: "stopped", Labels: oh, CreatedAt: t0.Add(-30 * time.Minute)},
		reaper.Sandbox{ID: "running", State: "started", Labels: oh, CreatedAt: t0.Add(-3 * time.Hour)},
		reaper.Sandbox{ID: "unmatched", State: "stopped", Labels: map[string]string{"team": "x"}, CreatedAt: t0.Add(-3 * time.Hour)},
		reaper.Sandbox{ID: "kept", State: "stopped", Labels: with(map[string]string{reaper.LabelKeep: "true"}), CreatedAt: t0.Add(-3 * time.Hour)},
		reaper.Sandbox{ID: "managed", State: "stopped", Labels: with(map[string]string{reaper.LabelManaged: "true"}), CreatedAt: t0.Add(-3 * time.Hour)},
		reaper.Sandbox{ID: "registered", State: "stopped", Labels: oh, CreatedAt: t0.Add(-3 * time.Hour)},
	)
	h := newHarness(t, withAdoption(openhandsRule), func(e *engine.Engine) { e.Metrics = m })
	h.prov.ListFn, h.prov.CloseFn = st.list, st.close
	h.start()
	h.register(reaper.RegisterRequest{ID: "registered", Keep: true})

	rep := h.sweep()
	us := untrackedByID(rep.Untracked)
	if !us["old"].Adopted || us["old"].Rule != "oh" || us["old"].AgeFrom != "created" {
		t.Fatalf("old = %+v, want adopted by oh, aged from its creation", us["old"])
	}
	for id, note := range map[string]string{"young": "adopt_grace", "between": "min_age", "kept": "reaperd.keep", "managed": "reaperd.managed"} {
		if u := us[id]; u.Adopted || u.Rule != "oh" || !strings.Contains(u.Note, note) {
			t.Errorf("%s = %+v, want matched by oh, not adopted, with a note on %s", id, u, note)
		}
	}
	if !us["managed"].Managed {
		t.Errorf("managed = %+v, want Managed", us["managed"])
	}
	for _, id := range []string{"running", "unmatched"} {
		if u := us[id]; u.Adopted || u.Rule != "" {
			t.Errorf("%s = %+v, want no rule", id, u)
		}
	}
	if _, ok := us["registered"]; ok {
		t.Errorf("a registered sandbox is listed untracked")
	}
	e := h.waitState("fake/old", reaper.StateClosed)
	if e.CloseReason != reaper.ReasonAdopted || e.Adopted != "oh" || e.Session != "sess-1" || e.Labels[reaper.LabelRule] != "oh" {
		t.Fatalf("adopted entry = %+v, want closed (adopted) by rule oh, session from its label", e)
	}
	if e.Resources == nil || *e.Resources != (reaper.Resources{VCPU: 2, DiskGiB: 10}) {
		t.Fatalf("adopted entry resources = %+v, want the size the provider reported", e.Resources)
	}
	if e.Owner == nil || *e.Owner != uint32(os.Getuid()) {
		t.Fatalf("adopted entry owner = %v, want the daemon's uid", e.Owner)
	}
	if got := h.prov.Closes(); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("closes = %v, want only the old stopped matching sandbox", got)
	}
	if got := kinds(h.audit(), "fake/old"); !slices.Contains(got, reaper.EventDiscovered) || !slices.Contains(got, reaper.EventAdopted) || !slices.Contains(got, reaper.EventClosed) {
		t.Fatalf("audit of fake/old = %v, want discovered, adopted, closed", got)
	}
	if got := testutil.ToFloat64(m.Adopted.WithLabelValues("fake", "oh")); got != 1 {
		t.Errorf("adopted metric = %v, want 1", got)
	}
	// The next sweep adopts nothing more, and lists the rest again.
	h.sweep()
	if got := h.prov.Closes(); len(got) != 1 {
		t.Fatalf("closes after another sweep = %v", got)
	}
}

// A report rule lists and counts, and never adopts.
func TestReportRuleOnlyReports(t *testing.T) {
	m := engine.NewMetrics(prometheus.NewRegistry())
	rule := openhandsRule
	rule.Action = reaper.AdoptReport
	st := newStock(reaper.Sandbox{ID: "old", State: "stopped", Labels: map[string]string{"OpenHands_SID": "s"}, CreatedAt: t0.Add(-3 * time.Hour)})
	h := newHarness(t, withAdoption(rule), func(e *engine.Engine) { e.Metrics = m })
	h.prov.ListFn, h.prov.CloseFn = st.list, st.close
	h.start()
	for range 2 {
		rep := h.sweep()
		if u := untrackedByID(rep.Untracked)["old"]; u.Rule != "oh" || u.Action != reaper.AdoptReport || u.Adopted {
			t.Fatalf("old = %+v, want matched by oh for report only", u)
		}
	}
	if e, err := h.eng.Entry(context.Background(), "fake/old"); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("a report rule made an entry: %+v, %v", e, err)
	}
	if got := testutil.ToFloat64(m.AdoptionMatches.WithLabelValues("fake", "oh", "report")); got != 1 {
		t.Errorf("matches metric = %v, want 1", got)
	}
	if len(h.prov.Closes()) != 0 {
		t.Fatalf("closes = %v, want none", h.prov.Closes())
	}
}

// Where the provider reports no creation time (E2B's startedAt resets on
// resume), age counts from the first listing that showed the sandbox,
// recorded in the ledger.
func TestAgeFromFirstSeen(t *testing.T) {
	rule := openhandsRule
	rule.States = nil
	rule.Labels = map[string]string{"agent": "x"}
	st := newStock(reaper.Sandbox{ID: "e2b-like", State: "running", Labels: map[string]string{"agent": "x"}, StartedAt: t0.Add(-100 * time.Hour)})
	h := newHarness(t, withAdoption(rule))
	h.prov.ListFn, h.prov.CloseFn = st.list, st.close
	h.start()
	u := untrackedByID(h.sweep().Untracked)["e2b-like"]
	if u.Adopted || u.AgeFrom != "first-seen" || !u.FirstSeen.Equal(t0) {
		t.Fatalf("first sweep: %+v, want not adopted, aged from first seen at %v", u, t0)
	}
	h.clock.Advance(30 * time.Minute)
	if u := untrackedByID(h.sweep().Untracked)["e2b-like"]; u.Adopted || !u.FirstSeen.Equal(t0) || time.Duration(u.Age) != 30*time.Minute {
		t.Fatalf("after 30 min: %+v, want 30m old and not adopted", u)
	}
	h.clock.Advance(31 * time.Minute)
	if u := untrackedByID(h.sweep().Untracked)["e2b-like"]; !u.Adopted {
		t.Fatalf("after 61 min: %+v, want adopted", u)
	}
	h.waitState("fake/e2b-like", reaper.StateClosed)
}

// A dry run shows the adoptions first, and records nothing.
func TestDryRunShowsAdoptionsFirst(t *testing.T) {
	st := newStock(reaper.Sandbox{ID: "old", State: "stopped", Labels: map[string]string{"OpenHands_SID": "s"}, CreatedAt: t0.Add(-3 * time.Hour)})
	h := newHarness(t, withAdoption(openhandsRule))
	h.prov.ListFn, h.prov.CloseFn = st.list, st.close
	h.start()
	h.register(reaper.RegisterRequest{ID: "due", TTL: reaper.Duration(time.Minute)})
	h.prov.setClose(func(context.Context, string) error { return nil })
	rep, err := h.eng.Sweep(context.Background(), reaper.SweepOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) == 0 || rep.Items[0].Action != "adopt" || rep.Items[0].Key != "fake/old" || rep.Items[0].Reason != reaper.ReasonAdopted {
		t.Fatalf("dry run = %+v, want the adoption of fake/old first", rep.Items)
	}
	if e, err := h.eng.Entry(context.Background(), "fake/old"); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("a dry run adopted: %+v, %v", e, err)
	}
	n := 0
	h.view(func(tx reaper.Tx) error {
		return tx.Untracked("fake", func(string, time.Time) error { n++; return nil })
	})
	if n != 0 {
		t.Fatalf("a dry run recorded %d untracked sandboxes", n)
	}
}

// An active entry whose sandbox the provider no longer has is closed with
// reason gone once two listings leave it out, without a close call.
func TestReconciliationClosesGoneEntries(t *testing.T) {
	st := newStock(reaper.Sandbox{ID: "a", State: "started", CreatedAt: t0.Add(-time.Hour)},
		reaper.Sandbox{ID: "k", State: "started", CreatedAt: t0.Add(-time.Hour)})
	h := newHarness(t, withAdoption())
	h.prov.ListFn = st.list
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(10 * time.Hour)})
	h.register(reaper.RegisterRequest{ID: "k", Keep: true})
	h.clock.Advance(time.Second)
	h.sweep() // shows both: seen
	if !h.entry("fake/a").Seen || !h.entry("fake/k").Seen {
		t.Fatal("entries not seen after a listing showed them")
	}
	st.remove("a")
	st.remove("k")
	h.clock.Advance(time.Minute)
	h.sweep()
	if e := h.entry("fake/a"); e.State != reaper.StateActive {
		t.Fatalf("after one listing without it: %s, want still active", e.State)
	}
	h.clock.Advance(time.Minute)
	h.sweep()
	for _, key := range []string{"fake/a", "fake/k"} {
		if e := h.entry(key); e.State != reaper.StateClosed || e.CloseReason != reaper.ReasonGone {
			t.Fatalf("%s after two listings without it: %s (%s), want closed (gone)", key, e.State, e.CloseReason)
		}
	}
	if len(h.prov.Closes()) != 0 {
		t.Fatalf("closes = %v, want none: the sandboxes were gone", h.prov.Closes())
	}
}

// A sandbox listed once, then missing once, then listed again is never
// taken for gone: the absences must be consecutive.
func TestReconciliationNeedsConsecutiveAbsences(t *testing.T) {
	st := newStock(reaper.Sandbox{ID: "a", State: "started", CreatedAt: t0.Add(-time.Hour)})
	h := newHarness(t, withAdoption())
	h.prov.ListFn = st.list
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(10 * time.Hour)})
	h.clock.Advance(time.Second)
	h.sweep()
	sb := st.sbs["a"]
	for range 3 {
		st.remove("a")
		h.clock.Advance(time.Minute)
		h.sweep()
		st.mu.Lock()
		st.sbs["a"] = sb
		st.mu.Unlock()
		h.clock.Advance(time.Minute)
		h.sweep()
	}
	if e := h.entry("fake/a"); e.State != reaper.StateActive {
		t.Fatalf("entry = %s (%s), want active: it was never missing twice in a row", e.State, e.CloseReason)
	}
}

// A sandbox without labels (a Modal one selected by its app) is adopted
// with the rule's label alone.
func TestAdoptsSandboxWithoutLabels(t *testing.T) {
	rule := reaper.AdoptRule{Name: "app", Provider: "fake", App: "swe-rex", MinAge: time.Hour, Action: reaper.AdoptReap}
	st := newStock(reaper.Sandbox{ID: "m", App: "swe-rex", CreatedAt: t0.Add(-2 * time.Hour)})
	h := newHarness(t, withAdoption(rule))
	h.prov.ListFn, h.prov.CloseFn = st.list, st.close
	h.start()
	if u := untrackedByID(h.sweep().Untracked)["m"]; !u.Adopted {
		t.Fatalf("m = %+v, want adopted", u)
	}
	if e := h.waitState("fake/m", reaper.StateClosed); len(e.Labels) != 1 || e.Labels[reaper.LabelRule] != "app" {
		t.Fatalf("labels = %v, want the rule's alone", e.Labels)
	}
}
