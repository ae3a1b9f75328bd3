package engine_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

func TestClosesExpiredAtItsDeadline(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(30 * time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(2 * time.Hour)})

	h.clock.Advance(30*time.Minute - time.Second)
	never(t, 50*time.Millisecond, func() bool { return len(h.prov.Closes()) > 0 }, "closed before the deadline")
	// The loop's own timer, on the fake clock, fires at the deadline: no
	// sweep, no Wake.
	h.clock.Advance(time.Second)
	a := h.waitState("fake/a", reaper.StateClosed)
	if a.CloseReason != reaper.ReasonExpired || !a.ClosedAt.Equal(t0.Add(30*time.Minute)) || a.Attempts != 1 || a.InFlight {
		t.Fatalf("entry a = %+v, want closed/expired at its deadline after 1 attempt", a)
	}
	if got := h.prov.Closes(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("provider closes = %v, want [a]", got)
	}
	if b := h.entry("fake/b"); b.State != reaper.StateActive {
		t.Fatalf("entry b state = %s, want active", b.State)
	}
	want := []reaper.EventKind{reaper.EventRegistered, reaper.EventCloseStarted, reaper.EventClosed}
	if got := kinds(h.audit(), "fake/a"); !slices.Equal(got, want) {
		t.Fatalf("audit for fake/a = %v, want %v", got, want)
	}
}

func TestNeverClosesProtected(t *testing.T) {
	h := newHarness(t)
	h.start()
	ttl := reaper.Duration(time.Minute)
	h.register(reaper.RegisterRequest{ID: "keep", TTL: ttl, Keep: true})
	h.register(reaper.RegisterRequest{ID: "att", TTL: ttl, Attached: true})
	h.register(reaper.RegisterRequest{ID: "sk", Session: "s1", Keep: true})
	h.register(reaper.RegisterRequest{ID: "sa", Session: "s1", Attached: true})
	h.register(reaper.RegisterRequest{ID: "sx", Session: "s1"})
	h.clock.Advance(time.Hour)
	h.sweep()
	if _, err := h.eng.EndSession(context.Background(), "s1"); err != nil {
		t.Fatal(err)
	}
	h.waitState("fake/sx", reaper.StateClosed)
	h.clock.Advance(24 * time.Hour)
	h.sweep()
	for _, id := range h.prov.Closes() {
		if id != "sx" {
			t.Fatalf("provider was asked to close protected sandbox %s", id)
		}
	}
	tests := []struct {
		key  string
		want reaper.State
	}{
		{"fake/keep", reaper.StateActive},
		{"fake/att", reaper.StateReleased},
		{"fake/sk", reaper.StateActive},
		{"fake/sa", reaper.StateReleased},
		{"fake/sx", reaper.StateClosed},
	}
	for _, tt := range tests {
		if got := h.entry(tt.key).State; got != tt.want {
			t.Errorf("%s state = %s, want %s", tt.key, got, tt.want)
		}
	}
}

// TestTagAfterDue sets keep on an entry that has become due but whose close
// has not started: the transition re-checks the tag and skips it.
func TestTagAfterDue(t *testing.T) {
	for _, tag := range []string{"keep", "attached"} {
		t.Run(tag, func(t *testing.T) {
			h := newHarness(t)
			h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
			h.clock.Advance(2 * time.Minute) // due now, but the engine is not running
			yes := true
			req := reaper.TagRequest{Keep: &yes}
			if tag == "attached" {
				req = reaper.TagRequest{Attached: &yes}
			}
			if _, err := h.eng.Tag(context.Background(), "fake/a", req); err != nil {
				t.Fatalf("Tag = %v", err)
			}
			h.start()
			h.sweep()
			if got := h.prov.Closes(); len(got) != 0 {
				t.Fatalf("closed %v after the entry was tagged %s", got, tag)
			}
			if st := h.entry("fake/a").State; st == reaper.StateClosing || st == reaper.StateClosed {
				t.Fatalf("state = %s, want not closing", st)
			}
		})
	}
}

// TestTagRacesTransition tags entries while the engine closes them: every
// entry whose keep tag committed before its close started is never closed.
func TestTagRacesTransition(t *testing.T) {
	h := newHarness(t)
	const n = 200
	for i := range n {
		h.register(reaper.RegisterRequest{ID: fmt.Sprintf("r%d", i), TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Advance(2 * time.Minute)
	var mu sync.Mutex
	tagged := map[string]bool{}
	var wg sync.WaitGroup
	yes := true
	for i := 1; i < n; i += 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("r%d", i)
			if _, err := h.eng.Tag(context.Background(), "fake/"+id, reaper.TagRequest{Keep: &yes}); err == nil {
				mu.Lock()
				tagged[id] = true
				mu.Unlock()
			} else if reaper.ErrorCode(err) != reaper.ECONFLICT {
				t.Errorf("Tag(%s) = %v", id, err)
			}
		}()
	}
	h.start()
	wg.Wait()
	h.sweep()
	for _, id := range h.prov.Closes() {
		mu.Lock()
		bad := tagged[id]
		mu.Unlock()
		if bad {
			t.Fatalf("sandbox %s was closed although its keep tag was committed first", id)
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantRetry time.Duration
	}{
		{"rate limited with retry-after", &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrRateLimited, RetryAfter: 42 * time.Second}, 42 * time.Second},
		{"conflict", &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrConflict}, 2500 * time.Millisecond},
		{"transient", &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrTransient}, 2500 * time.Millisecond},
		{"timeout", context.DeadlineExceeded, 2500 * time.Millisecond},
		{"unclassified", errors.New("boom"), 2500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var fail atomic.Bool
			fail.Store(true)
			h.prov.setClose(func(context.Context, string) error {
				if fail.Load() {
					return tt.err
				}
				return nil
			})
			h.start()
			h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
			h.clock.Advance(time.Minute)
			failedAt := h.clock.Now()
			var e *reaper.Entry
			eventually(t, 5*time.Second, func() bool {
				e = h.entry("fake/a")
				return e.State == reaper.StateClosing && !e.InFlight && e.Attempts == 1
			}, func() string { return fmt.Sprintf("a failed attempt to be recorded: %+v", e) })
			if e.LastError == "" || e.ErrorClass == "" {
				t.Fatalf("after failure entry = %+v, want an error and its class", e)
			}
			if got := e.NextAttemptAt.Sub(failedAt); got != tt.wantRetry {
				t.Fatalf("retry in %v, want %v", got, tt.wantRetry)
			}
			// Not retried before its time.
			h.clock.Advance(tt.wantRetry - time.Millisecond)
			never(t, 50*time.Millisecond, func() bool { return len(h.prov.Closes()) > 1 }, "retried before the backoff ended")
			fail.Store(false)
			h.clock.Advance(time.Millisecond)
			e = h.waitState("fake/a", reaper.StateClosed)
			if e.Attempts != 2 {
				t.Fatalf("entry = %+v, want closed after 2 attempts", e)
			}
			if got := h.prov.Attempts(); !slices.Equal(got, []int{1, 2}) {
				t.Fatalf("attempt numbers passed to the provider = %v, want [1 2]", got)
			}
		})
	}
}

func TestSessionLifecycle(t *testing.T) {
	h := newHarness(t)
	h.start()
	lease := reaper.Duration(2 * time.Minute)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s1", Lease: lease})
	h.register(reaper.RegisterRequest{ID: "b", Session: "s1"})
	h.register(reaper.RegisterRequest{ID: "c", Session: "s2", Lease: lease})

	h.clock.Advance(90 * time.Second)
	if _, err := h.eng.Heartbeat(context.Background(), "s1", 0); err != nil {
		t.Fatalf("Heartbeat = %v", err)
	}
	h.clock.Advance(90 * time.Second) // s2 lapsed (180s > 120s), s1 alive (90s)
	c := h.waitState("fake/c", reaper.StateClosed)
	if c.CloseReason != reaper.ReasonOrphanedLease {
		t.Fatalf("c closed for %s, want orphaned-lease", c.CloseReason)
	}
	for _, k := range []string{"fake/a", "fake/b"} {
		if st := h.entry(k).State; st != reaper.StateActive {
			t.Fatalf("%s = %s, want active (session alive)", k, st)
		}
	}
	if s2 := h.session("s2"); !s2.Ended() || s2.EndReason != reaper.ReasonOrphanedLease {
		t.Fatalf("s2 = %+v, want ended by lease lapse", s2)
	}
	if _, err := h.eng.Heartbeat(context.Background(), "s2", 0); reaper.ErrorCode(err) != reaper.ECONFLICT {
		t.Fatalf("Heartbeat on a lapsed session = %v, want conflict", err)
	}
	if _, _, err := h.eng.Register(context.Background(), reaper.RegisterRequest{Provider: "fake", ID: "d", Session: "s2"}); reaper.ErrorCode(err) != reaper.ECONFLICT {
		t.Fatalf("Register into an ended session = %v, want conflict", err)
	}

	if _, err := h.eng.Release(context.Background(), "fake/b"); err != nil {
		t.Fatal(err)
	}
	res, err := h.eng.EndSession(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0].Key != "fake/a" || res.Items[0].Action != "close" {
		t.Fatalf("EndSession items = %+v, want fake/a to close", res.Items)
	}
	if a := h.waitState("fake/a", reaper.StateClosed); a.CloseReason != reaper.ReasonSessionEnded {
		t.Fatalf("a closed for %s, want session-ended", a.CloseReason)
	}
	if got := h.entry("fake/b"); got.State != reaper.StateReleased {
		t.Fatalf("b = %s, want released", got.State)
	}
	if slices.Contains(h.prov.Closes(), "b") {
		t.Fatal("a released sandbox was closed")
	}
	if _, err := h.eng.EndSession(context.Background(), "s1"); err != nil {
		t.Fatalf("second EndSession = %v", err)
	}
}

func TestProcessExit(t *testing.T) {
	var alive atomic.Bool
	alive.Store(true)
	h := newHarness(t, func(e *engine.Engine) {
		e.ProcessAlive = func(pid int, start uint64) bool { return alive.Load() || pid != 4242 }
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", Session: "s1", PID: 4242, TTL: reaper.Duration(time.Hour)})
	h.clock.Advance(time.Second)
	h.sweep()
	if st := h.entry("fake/a").State; st != reaper.StateActive {
		t.Fatalf("state with the process alive = %s", st)
	}
	alive.Store(false)
	h.clock.Advance(time.Second)
	if a := h.waitState("fake/a", reaper.StateClosed); a.CloseReason != reaper.ReasonOrphanedProcess {
		t.Fatalf("after exit closed for %s, want orphaned-process", a.CloseReason)
	}
}

func TestDisabledProviderWaitsThenResumes(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.eng.SetProviders(engine.ProviderSet{Disabled: map[string]string{"fake": "set FAKE_KEY"}})
	h.clock.Advance(time.Hour)
	var e *reaper.Entry
	eventually(t, 5*time.Second, func() bool {
		e = h.entry("fake/a")
		return e.State == reaper.StateClosing && e.ErrorClass == "provider_disabled"
	}, func() string { return fmt.Sprintf("a closing with provider_disabled: %+v", e) })
	if e.Attempts != 0 || len(h.prov.Closes()) != 0 {
		t.Fatalf("entry = %+v, closes %v: a disabled provider was called", e, h.prov.Closes())
	}
	if !strings.Contains(e.LastError, "set FAKE_KEY") {
		t.Fatalf("last error %q does not say how to enable the provider", e.LastError)
	}
	// Enabled again by a reload: the close is made at once, not after
	// max_backoff.
	h.eng.SetProviders(engine.ProviderSet{Enabled: map[string]reaper.Provider{"fake": h.prov}})
	h.waitState("fake/a", reaper.StateClosed)
}

func TestPanickingProvider(t *testing.T) {
	h := newHarness(t)
	h.prov.setClose(func(context.Context, string) error { panic("provider bug") })
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	var e *reaper.Entry
	eventually(t, 5*time.Second, func() bool {
		e = h.entry("fake/a")
		return e.Attempts == 1 && !e.InFlight
	}, func() string { return fmt.Sprintf("the panic recorded as a failed attempt: %+v", e) })
	if e.State != reaper.StateClosing || !strings.Contains(e.LastError, "panicked") {
		t.Fatalf("entry = %+v, want closing with the panic as its error", e)
	}
	h.prov.setClose(nil)
	h.clock.Advance(time.Hour)
	h.waitState("fake/a", reaper.StateClosed)
}

// TestResumeAfterCrash copies the ledger while a close call is in flight
// (as a crash would leave it) and starts a second engine on the copy: it
// resumes the close at once, and the resumed call is the second attempt.
func TestResumeAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	started, release := make(chan struct{}), make(chan struct{})
	h := newHarnessOn(t, db, clockwork.NewFakeClockAt(t0))
	var once sync.Once
	h.prov.setClose(func(ctx context.Context, id string) error {
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-ctx.Done():
		}
		return ctx.Err()
	})
	h.start()
	defer close(release)
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	<-started

	crashed := filepath.Join(dir, "crashed.db")
	copyLedger(t, db, crashed)
	db2, err := ledger.Open(crashed, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db2.Close(); ledgertest.Check(t, crashed) })
	var e *reaper.Entry
	_ = db2.View(context.Background(), func(tx reaper.Tx) error { e, _ = tx.Entry("fake/a"); return nil })
	if e == nil || e.State != reaper.StateClosing || !e.InFlight || e.Attempts != 1 {
		t.Fatalf("crashed ledger entry = %+v, want closing, in flight, attempt 1 counted", e)
	}
	h2 := newHarnessOn(t, db2, clockwork.NewFakeClockAt(t0.Add(time.Minute+time.Second)))
	h2.start() // start-up hands the close back; the first pass makes it
	h2.waitState("fake/a", reaper.StateClosed)
	if got := h2.prov.Closes(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("resumed provider closes = %v, want [a]", got)
	}
	if got := h2.prov.Attempts(); !slices.Equal(got, []int{2}) {
		t.Fatalf("resumed close is attempt %v, want [2]", got)
	}
}

// copyLedger copies the committed state of a live ledger, as a crash at
// this instant would leave the file.
func copyLedger(t *testing.T, db *ledger.DB, path string) {
	t.Helper()
	if err := db.Bolt().View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
		t.Fatalf("copy ledger: %v", err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "exp", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "kept", TTL: reaper.Duration(time.Minute), Keep: true})
	h.register(reaper.RegisterRequest{ID: "later", TTL: reaper.Duration(time.Hour)})
	h.register(reaper.RegisterRequest{ID: "orph", Session: "s1", Lease: reaper.Duration(time.Minute)})
	h.clock.Advance(2 * time.Minute)
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
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dry run items = %v, want %v", got, want)
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

func TestEntryOwnership(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.Access = reaper.Access{Self: 999, AdminGroups: []uint32{4000}} })
	if _, _, err := h.eng.Register(caller(1001), reaper.RegisterRequest{Provider: "fake", ID: "a", TTL: reaper.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	yes := true
	if _, err := h.eng.Tag(caller(1002), "fake/a", reaper.TagRequest{Keep: &yes}); reaper.ErrorCode(err) != reaper.EFORBIDDEN || !strings.Contains(err.Error(), "uid 1001") {
		t.Fatalf("Tag by another uid = %v, want forbidden naming uid 1001", err)
	}
	if _, err := h.eng.Release(caller(1002), "fake/a"); reaper.ErrorCode(err) != reaper.EFORBIDDEN {
		t.Fatalf("Release by another uid = %v, want forbidden", err)
	}
	if _, err := h.eng.Tag(caller(1001), "fake/a", reaper.TagRequest{Keep: &yes}); err != nil {
		t.Fatalf("Tag by the owner = %v", err)
	}
	if _, err := h.eng.Tag(caller(999), "fake/a", reaper.TagRequest{Labels: map[string]string{"by": "daemon"}}); err != nil {
		t.Fatalf("Tag by the daemon's own uid = %v", err)
	}
	if _, err := h.eng.Tag(caller(1003, 4000), "fake/a", reaper.TagRequest{Labels: map[string]string{"by": "admin"}}); err != nil {
		t.Fatalf("Tag by a member of the admin group = %v", err)
	}
	if _, err := h.eng.Release(caller(0), "fake/a"); err != nil {
		t.Fatalf("Release by root = %v", err)
	}
}

func TestTagClosingRefused(t *testing.T) {
	h := newHarness(t)
	h.prov.setClose(func(context.Context, string) error {
		return &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrConflict}
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/a").Attempts == 1 && !h.entry("fake/a").InFlight },
		func() string { return "one failed attempt" })
	yes := true
	_, err := h.eng.Tag(context.Background(), "fake/a", reaper.TagRequest{Keep: &yes})
	if reaper.ErrorCode(err) != reaper.ECONFLICT || !strings.Contains(err.Error(), "already closing") {
		t.Fatalf("Tag on a closing entry = %v, want a conflict", err)
	}
	// Releasing a closing entry is allowed: the session says it is gone.
	if e, err := h.eng.Release(context.Background(), "fake/a"); err != nil || e.State != reaper.StateReleased {
		t.Fatalf("Release on a closing entry = %+v, %v", e, err)
	}
	h.clock.Advance(time.Hour)
	h.sweep()
	if n := len(h.prov.Closes()); n != 1 {
		t.Fatalf("a released entry was retried: %d closes", n)
	}
}

func TestPrunesAfterRetention(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.Retention = 48 * time.Hour })
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(100 * time.Hour)})
	h.clock.Advance(time.Minute)
	h.waitState("fake/a", reaper.StateClosed)
	h.clock.Advance(47 * time.Hour)
	if rep := h.sweep(); rep.Pruned.Entries != 0 {
		t.Fatalf("pruned %+v before the retention passed", rep.Pruned)
	}
	h.clock.Advance(2 * time.Hour)
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

func TestDiscover(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.DiscoverOnSweep = true })
	h.prov.ListFn = func(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
		return []reaper.Sandbox{
			{ID: "tracked", CreatedAt: t0.Add(-time.Hour)},
			{ID: "stray", CreatedAt: t0.Add(-time.Hour), State: "running"},
			{ID: "brand-new", CreatedAt: t0.Add(time.Second)}, // created after the sweep began
		}, nil
	}
	h.start()
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

// TestPassPanicRecovered checks that a panic inside a sweep is recovered
// and reported, and that the engine keeps working.
func TestPassPanicRecovered(t *testing.T) {
	h := newHarness(t)
	ps := &panicStore{Store: h.db}
	h.eng.Store = ps
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	ps.armed.Store(true)
	h.clock.Advance(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.eng.Sweep(ctx, reaper.SweepOptions{}); reaper.ErrorCode(err) != reaper.EINTERNAL {
		t.Fatalf("Sweep with a panicking store = %v, want an internal error", err)
	}
	ps.armed.Store(false)
	h.advanceUntil(time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed },
		"the entry to be closed once the store works again")
}

// TestTriggerSweepNeverPilesUp checks the guard that replaces cron's
// SkipIfStillRunning: while a triggered sweep is still running (here, its
// discovery hangs), more triggers are refused rather than queued.
func TestTriggerSweepNeverPilesUp(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.DiscoverOnSweep = true })
	block := make(chan struct{})
	var lists atomic.Int32
	h.prov.ListFn = func(ctx context.Context, _ reaper.ListFilter) ([]reaper.Sandbox, error) {
		lists.Add(1)
		select {
		case <-block:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	h.start()
	if !h.eng.TriggerSweep() {
		t.Fatal("first TriggerSweep refused")
	}
	eventually(t, 5*time.Second, func() bool { return lists.Load() == 1 }, func() string { return "the sweep's listing to start" })
	if h.eng.TriggerSweep() {
		t.Fatal("TriggerSweep accepted while the previous sweep was still running")
	}
	close(block)
	eventually(t, 5*time.Second, func() bool { return h.eng.TriggerSweep() }, func() string { return "TriggerSweep accepted again" })
}

// A provider that fails for a provider-wide reason is probed by the loop
// every 15s with one of its backed-off closes; when the probe succeeds, the
// rest are retried at once rather than after their own backoff.
func TestFailingProviderIsProbedAndRecovers(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.MinBackoff = 10 * time.Minute })
	var down atomic.Bool
	down.Store(true)
	h.prov.setClose(func(context.Context, string) error {
		if down.Load() {
			return &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrTransient, StatusCode: 503}
		}
		return nil
	})
	h.start()
	for _, id := range []string{"a", "b", "c"} {
		h.register(reaper.RegisterRequest{ID: id, TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool {
		for _, k := range []string{"fake/a", "fake/b", "fake/c"} {
			if e := h.entry(k); e.Attempts != 1 || e.InFlight {
				return false
			}
		}
		return true
	}, func() string { return "three failed attempts" })
	if st, _ := h.eng.Status(context.Background()); !strings.Contains(st.Providers["fake"].LastError, "503") {
		t.Fatalf("status last error = %q, want the failure", st.Providers["fake"].LastError)
	}
	down.Store(false)
	// Once the queue is idle, one probe interval later the loop probes.
	eventually(t, 5*time.Second, func() bool {
		st, _ := h.eng.Status(context.Background())
		return st.Providers["fake"].Queued == 0 && st.Providers["fake"].Running == 0
	}, func() string { return "the close queue to be idle" })
	h.clock.Advance(15 * time.Second) // each close's own backoff is 5m
	// The probe succeeded: the other two are retried without waiting.
	for _, k := range []string{"fake/a", "fake/b", "fake/c"} {
		if e := h.waitState(k, reaper.StateClosed); e.Attempts != 2 {
			t.Errorf("%s closed after %d attempts, want 2", k, e.Attempts)
		}
	}
	if st, _ := h.eng.Status(context.Background()); st.Providers["fake"].LastError != "" {
		t.Fatalf("status last error = %q after recovery, want none", st.Providers["fake"].LastError)
	}
}

// After a restart the engine knows nothing of a provider's health: its
// first pass probes, so closes that backed off before the stop are not left
// waiting when the provider answers.
func TestFirstPassAfterStartProbes(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.MinBackoff = 10 * time.Minute })
	h.prov.setClose(func(context.Context, string) error {
		return &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrTransient}
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool {
		return h.entry("fake/a").Attempts == 1 && !h.entry("fake/a").InFlight && h.entry("fake/b").Attempts == 1 && !h.entry("fake/b").InFlight
	}, func() string { return "both closes to fail once" })
	h.shutdown() // may move the clock, to cancel a hung close
	restarted := h.clock.Now()
	h2 := newHarnessOn(t, h.db, h.clock) // the provider answers again
	h2.start()
	h2.waitState("fake/a", reaper.StateClosed)
	h2.waitState("fake/b", reaper.StateClosed)
	if h2.clock.Since(restarted) > 0 {
		t.Fatal("the clock moved: the closes waited for something")
	}
}

// A close refused for its credentials is not retried on its own schedule:
// it waits for its provider, which is probed once a minute; when the
// credentials work again, the probe's success retries every parked close.
func TestUnauthorizedClosesWaitForTheProvider(t *testing.T) {
	h := newHarness(t)
	var refused atomic.Bool
	refused.Store(true)
	h.prov.setClose(func(context.Context, string) error {
		if refused.Load() {
			return &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrUnauthorized, StatusCode: 401, Hint: "check FAKE_KEY"}
		}
		return nil
	})
	h.start()
	for _, id := range []string{"a", "b", "c"} {
		h.register(reaper.RegisterRequest{ID: id, TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Advance(time.Minute)
	failedAt := h.clock.Now()
	eventually(t, 5*time.Second, func() bool {
		for _, k := range []string{"fake/a", "fake/b", "fake/c"} {
			if e := h.entry(k); e.InFlight || e.Attempts != 1 {
				return false
			}
		}
		return true
	}, func() string { return "three refused closes" })
	if e := h.entry("fake/a"); e.NextAttemptAt.Sub(failedAt) != engine.DefaultMaxBackoff {
		t.Fatalf("a refused close retries in %v, want it parked for max_backoff (%v)", e.NextAttemptAt.Sub(failedAt), engine.DefaultMaxBackoff)
	}
	// Five minutes of refusals: one probe a minute, not a retry per close.
	for range 5 {
		eventually(t, 5*time.Second, func() bool {
			st, _ := h.eng.Status(context.Background())
			return st.Providers["fake"].Running == 0 && st.Providers["fake"].Queued == 0
		}, func() string { return "the queue to be idle" })
		before := len(h.prov.Closes())
		h.clock.Advance(time.Minute)
		// Give the minute's probe time to be sent, however loaded the
		// machine: up to a second of real time, without failing here.
		for deadline := time.Now().Add(time.Second); len(h.prov.Closes()) == before && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := len(h.prov.Closes()) - 3; n < 3 || n > 6 {
		t.Fatalf("%d calls in 5 minutes of refused credentials, want about one probe a minute", n)
	}
	refused.Store(false)
	h.advanceUntil(10*time.Second, func() bool {
		for _, k := range []string{"fake/a", "fake/b", "fake/c"} {
			if h.entry(k).State != reaper.StateClosed {
				return false
			}
		}
		return true
	}, "every parked close to be made once the credentials work")
}

// A close the provider refuses for good (an id it cannot parse) is not
// retried: the entry is stuck, shown so, until an operator releases it.
func TestInvalidCloseIsStuck(t *testing.T) {
	h := newHarness(t)
	h.prov.setClose(func(_ context.Context, id string) error {
		return &reaper.ProviderError{Provider: "fake", Op: "close", ID: id, Kind: reaper.ErrInvalid, StatusCode: 400, Err: fmt.Errorf("invalid sandbox id")}
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "not-an-id", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	var e *reaper.Entry
	eventually(t, 5*time.Second, func() bool { e = h.entry("fake/not-an-id"); return e.Stuck },
		func() string { return fmt.Sprintf("the entry to be stuck: %+v", e) })
	if e.State != reaper.StateClosing || e.ErrorClass != "invalid" || !e.NextAttemptAt.IsZero() {
		t.Fatalf("stuck entry = %+v, want closing, class invalid, no next attempt", e)
	}
	for range 3 {
		h.clock.Advance(time.Hour)
		h.sweep()
	}
	if n := len(h.prov.Closes()); n != 1 {
		t.Fatalf("%d close calls, want 1: a permanent refusal is not retried", n)
	}
	st, _ := h.eng.Status(context.Background())
	if st.Providers["fake"].Stuck != 1 {
		t.Fatalf("status = %+v, want 1 stuck close", st.Providers["fake"])
	}
	if e, err := h.eng.Release(context.Background(), "fake/not-an-id"); err != nil || e.State != reaper.StateReleased {
		t.Fatalf("Release of a stuck entry = %+v, %v", e, err)
	}
}

// Credentials are checked at start (and at each reload): refused, the
// provider is disabled, saying why, until a later check passes; then its
// waiting closes are made.
func TestRefusedCredentialsDisableTheProvider(t *testing.T) {
	h := newHarness(t)
	var refused atomic.Bool
	refused.Store(true)
	h.prov.setCheck(func(context.Context) error {
		if refused.Load() {
			return &reaper.ProviderError{Provider: "fake", Op: "check", Kind: reaper.ErrUnauthorized, StatusCode: 401, Hint: "check FAKE_API_KEY"}
		}
		return nil
	})
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.start()
	var st *reaper.EngineStatus
	eventually(t, 5*time.Second, func() bool {
		st, _ = h.eng.Status(context.Background())
		return st.Providers["fake"].Credentials == "refused"
	}, func() string { return fmt.Sprintf("the refusal to show in status: %+v", st.Providers["fake"]) })
	if p := st.Providers["fake"]; p.Enabled || !strings.Contains(p.Hint, "FAKE_API_KEY") {
		t.Fatalf("status = %+v, want disabled with a hint naming FAKE_API_KEY", p)
	}
	_, _, err := h.eng.Register(context.Background(), reaper.RegisterRequest{Provider: "fake", ID: "b", TTL: reaper.Duration(time.Hour)})
	if reaper.ErrorCode(err) != reaper.EDISABLED || !strings.Contains(err.Error(), "refused reaperd's credentials") {
		t.Fatalf("Register while refused = %v, want provider_disabled saying why", err)
	}
	h.clock.Advance(time.Minute) // a falls due, and waits
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/a").ErrorClass == "provider_disabled" },
		func() string { return "the close to wait for the provider" })
	if len(h.prov.Closes()) != 0 {
		t.Fatal("a provider whose credentials were refused was called")
	}
	refused.Store(false)
	h.advanceUntil(10*time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed },
		"the close once a later check passes")
	if st, _ := h.eng.Status(context.Background()); !st.Providers["fake"].Enabled || st.Providers["fake"].Credentials != "ok" {
		t.Fatalf("status after the check passed = %+v", st.Providers["fake"])
	}
}

// A check that fails otherwise (5xx, timeout) marks the provider degraded;
// it stays enabled.
func TestDegradedCredentialCheck(t *testing.T) {
	h := newHarness(t)
	h.prov.setCheck(func(context.Context) error {
		return &reaper.ProviderError{Provider: "fake", Op: "check", Kind: reaper.ErrTransient, StatusCode: 503}
	})
	h.start()
	var st *reaper.EngineStatus
	eventually(t, 5*time.Second, func() bool {
		st, _ = h.eng.Status(context.Background())
		return st.Providers["fake"].Credentials == "degraded"
	}, func() string { return fmt.Sprintf("degraded in status: %+v", st.Providers["fake"]) })
	if p := st.Providers["fake"]; !p.Enabled || !strings.Contains(p.LastError, "503") {
		t.Fatalf("status = %+v, want enabled, with the check's error", p)
	}
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Hour)})
}
