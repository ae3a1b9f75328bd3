package reaper_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

func TestEngineDryRunChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "exp", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "kept", TTL: reaper.Duration(time.Minute), Keep: true})
	h.register(reaper.RegisterRequest{ID: "later", TTL: reaper.Duration(time.Hour)})
	h.register(reaper.RegisterRequest{ID: "orph", Session: "s1", Lease: reaper.Duration(time.Minute)})
	h.clock.Add(2 * time.Minute)
	before := len(h.audit())
	rep, err := h.eng.Sweep(context.Background(), reaper.SweepOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range rep.Items {
		got[it.Key] = it.Action + "/" + string(it.Reason)
	}
	want := map[string]string{"fake/exp": "close/expired", "fake/kept": "skip/keep", "fake/orph": "close/orphaned-lease"}
	if len(got) != len(want) {
		t.Fatalf("dry run items = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("dry run %s = %q, want %q", k, got[k], v)
		}
	}
	if rep.Waiting != 1 || !rep.DryRun {
		t.Errorf("dry run waiting = %d (dry_run %v), want 1", rep.Waiting, rep.DryRun)
	}
	if len(h.prov.Closes()) != 0 || len(h.audit()) != before {
		t.Fatal("a dry run closed something or wrote to the audit log")
	}
	for _, k := range []string{"fake/exp", "fake/orph"} {
		if st := h.entry(k).State; st != reaper.StateActive {
			t.Fatalf("%s = %s after a dry run", k, st)
		}
	}
}

func TestEngineOwnership(t *testing.T) {
	h := newHarness(t)
	owner := reaper.WithCaller(context.Background(), reaper.Caller{UID: 1001})
	other := reaper.WithCaller(context.Background(), reaper.Caller{UID: 1002})
	root := reaper.WithCaller(context.Background(), reaper.Caller{UID: 0})
	if _, _, err := h.eng.Register(owner, reaper.RegisterRequest{Provider: "fake", ID: "a", TTL: reaper.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	yes := true
	if _, err := h.eng.Tag(other, "fake/a", reaper.TagRequest{Keep: &yes}); reaper.ErrorCode(err) != reaper.EFORBIDDEN {
		t.Fatalf("Tag by another uid = %v, want forbidden", err)
	}
	if _, err := h.eng.Release(other, "fake/a"); reaper.ErrorCode(err) != reaper.EFORBIDDEN {
		t.Fatalf("Release by another uid = %v, want forbidden", err)
	}
	if _, err := h.eng.Tag(owner, "fake/a", reaper.TagRequest{Keep: &yes}); err != nil {
		t.Fatalf("Tag by the owner = %v", err)
	}
	if _, err := h.eng.Release(root, "fake/a"); err != nil {
		t.Fatalf("Release by root = %v", err)
	}
}

func TestEngineTagClosingRefused(t *testing.T) {
	h := newHarness(t)
	h.prov.CloseFn = func(context.Context, string) error {
		return &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrTransient}
	}
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	h.sweep()
	yes := true
	_, err := h.eng.Tag(context.Background(), "fake/a", reaper.TagRequest{Keep: &yes})
	if reaper.ErrorCode(err) != reaper.ECONFLICT || !strings.Contains(err.Error(), "already closing") {
		t.Fatalf("Tag on a closing entry = %v, want a conflict", err)
	}
	// Releasing a closing entry is allowed: the session says it is gone.
	if e, err := h.eng.Release(context.Background(), "fake/a"); err != nil || e.State != reaper.StateReleased {
		t.Fatalf("Release on a closing entry = %+v, %v", e, err)
	}
	h.clock.Add(time.Hour)
	h.sweep()
	if n := len(h.prov.Closes()); n != 1 {
		t.Fatalf("a released entry was retried: %d closes", n)
	}
}

func TestEnginePrunesAfterRetention(t *testing.T) {
	h := newHarness(t, func(e *reaper.Engine) { e.Retention = 48 * time.Hour })
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(100 * time.Hour)})
	h.clock.Add(time.Minute)
	h.sweep()
	h.clock.Add(47 * time.Hour)
	if rep := h.sweep(); rep.Pruned.Entries != 0 {
		t.Fatalf("pruned %+v before the retention passed", rep.Pruned)
	}
	h.clock.Add(2 * time.Hour)
	rep := h.sweep()
	if rep.Pruned.Entries != 1 || rep.Pruned.Events < 3 {
		t.Fatalf("pruned %+v, want entry a and its 3 events", rep.Pruned)
	}
	if _, err := h.eng.Entry(context.Background(), "fake/a"); reaper.ErrorCode(err) != reaper.ENOTFOUND {
		t.Fatalf("pruned entry lookup = %v", err)
	}
	if st := h.entry("fake/b").State; st != reaper.StateActive {
		t.Fatalf("b = %s", st)
	}
}

func TestEngineDiscover(t *testing.T) {
	var now time.Time
	h := newHarness(t, func(e *reaper.Engine) { e.DiscoverOnSweep = true })
	now = h.clock.Now()
	h.prov.ListFn = func(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
		return []reaper.Sandbox{
			{ID: "tracked", CreatedAt: now.Add(-time.Hour)},
			{ID: "stray", CreatedAt: now.Add(-time.Hour), State: "running"},
			{ID: "brand-new", CreatedAt: now.Add(time.Second)}, // created after the sweep began
		}, nil
	}
	h.register(reaper.RegisterRequest{ID: "tracked", TTL: reaper.Duration(time.Hour)})
	rep := h.sweep()
	if len(rep.Untracked) != 1 || rep.Untracked[0].Sandbox.ID != "stray" {
		t.Fatalf("untracked = %+v, want only stray", rep.Untracked)
	}
	h.sweep() // recorded once, not at every sweep
	n := 0
	for _, ev := range h.audit() {
		if ev.Kind == reaper.EventDiscovered {
			n++
			if ev.Key != "fake/stray" {
				t.Errorf("discovered event for %s", ev.Key)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d discovered-untracked events, want 1", n)
	}
	if len(h.prov.Closes()) != 0 {
		t.Fatal("discovery closed a sandbox")
	}
}

// panicStore panics in Update while armed, as a bug in a pass would.
type panicStore struct {
	reaper.Store
	armed atomic.Bool
}

func (s *panicStore) Update(ctx context.Context, fn func(reaper.Tx) error) error {
	if s.armed.Load() {
		panic("store bug")
	}
	return s.Store.Update(ctx, fn)
}

// TestEnginePassPanicRecovered checks that a panic inside a sweep is
// recovered and reported, and that the engine keeps working.
func TestEnginePassPanicRecovered(t *testing.T) {
	h := newHarness(t)
	ps := &panicStore{Store: h.db}
	h.eng.Store = ps
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	ps.armed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.eng.Sweep(ctx, reaper.SweepOptions{}); reaper.ErrorCode(err) != reaper.EINTERNAL {
		t.Fatalf("Sweep with a panicking store = %v, want an internal error", err)
	}
	ps.armed.Store(false)
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed })
}

// TestTriggerSweepNeverPilesUp checks the guard that replaces cron's
// SkipIfStillRunning: while a triggered sweep waits for its closes, more
// triggers are refused rather than queued.
func TestTriggerSweepNeverPilesUp(t *testing.T) {
	h := newHarness(t)
	block := make(chan struct{})
	h.prov.CloseFn = func(ctx context.Context, _ string) error {
		select {
		case <-block:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	if !h.eng.TriggerSweep() {
		t.Fatal("first TriggerSweep refused")
	}
	eventually(t, 5*time.Second, func() bool { return len(h.prov.Closes()) == 1 })
	if h.eng.TriggerSweep() {
		t.Fatal("TriggerSweep accepted while the previous sweep was still waiting for its close")
	}
	close(block)
	eventually(t, 5*time.Second, func() bool { return h.eng.TriggerSweep() })
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEngineDowntimeDoesNotLapseLeases restarts the engine after a gap
// longer than a session's lease: the session gets a full lease from the
// restart instead of having its sandboxes closed at once.
func TestEngineDowntimeDoesNotLapseLeases(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s1", Lease: reaper.Duration(2 * time.Minute)})
	h.clock.Add(10 * time.Minute) // the daemon was down
	h.start()                     // Run's resume grants the grace
	eventually(t, 5*time.Second, func() bool {
		s, err := h.eng.Session(context.Background(), "s1")
		return err == nil && s.LastHeartbeat.Equal(h.clock.Now())
	})
	h.sweep()
	if st := h.entry("fake/a").State; st != reaper.StateActive {
		t.Fatalf("after restart = %s, want active (grace)", st)
	}
	h.clock.Add(2 * time.Minute) // no heartbeat during the grace lease
	h.eng.Wake()
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed })
	if e := h.entry("fake/a"); e.CloseReason != reaper.ReasonOrphanedLease {
		t.Fatalf("closed for %s, want orphaned-lease", e.CloseReason)
	}
}

// TestEngineInflightLeaseExtended checks that a close still in flight when
// its attempt lease runs out (queued behind slow closes) is neither called
// twice nor left due, which would make the engine spin.
func TestEngineInflightLeaseExtended(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.prov.CloseFn = func(ctx context.Context, _ string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	first := make(chan struct{})
	go func() { defer close(first); h.sweep() }()
	eventually(t, 5*time.Second, func() bool { return len(h.prov.Closes()) == 1 })

	h.clock.Add(time.Hour) // far past the attempt lease, still in flight
	h.sweep()
	e := h.entry("fake/a")
	if !e.NextAttemptAt.After(h.clock.Now()) || !e.InFlight {
		t.Fatalf("entry = %+v, want in flight with its lease extended past now", e)
	}
	if n := len(h.prov.Closes()); n != 1 {
		t.Fatalf("%d close calls, want 1", n)
	}
	close(release)
	<-first
	if st := h.entry("fake/a").State; st != reaper.StateClosed {
		t.Fatalf("state = %s, want closed", st)
	}
}
