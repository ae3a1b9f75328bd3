package engine_test

// Regression tests for the defects of issue "An engine you can trust". Each
// test failed on the engine before the split (reaper.Engine) and passes now.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// diskFullStore fails every Update, while armed, as a ledger on a full disk
// does.
type diskFullStore struct {
	reaper.Store
	full    atomic.Bool
	updates atomic.Int64
}

var errDiskFull = &reaper.Error{Code: reaper.EUNAVAILABLE, Err: syscall.ENOSPC,
	Message: "ledger /var/lib/reaperd/ledger.db cannot be written: no space left on device: free space on its filesystem"}

func (s *diskFullStore) Update(ctx context.Context, fn func(reaper.Tx) error) error {
	if s.full.Load() {
		s.updates.Add(1)
		return errDiskFull
	}
	return s.Store.Update(ctx, fn)
}

// Defect 1: a failing pass became a silent busy loop. Now it backs off
// (100 ms, doubling, on the engine's clock), logs the cause once per step,
// reports it as unhealthy, and recovers in place.
func TestFailingPassBacksOffAndRecovers(t *testing.T) {
	logs := &syncBuffer{}
	h := newHarness(t, func(e *engine.Engine) {
		e.Logger = slog.New(slog.NewTextHandler(logs, nil))
		e.AliveInterval = time.Hour // count the loop's writes only
	})
	store := &diskFullStore{Store: h.db}
	h.eng.Store = store
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	store.full.Store(true)
	h.clock.Advance(time.Minute)

	// Without time passing on the engine's clock, one failed pass and then
	// nothing: the loop waits on its backoff timer.
	eventually(t, 5*time.Second, func() bool { return store.updates.Load() >= 1 }, func() string { return "a pass to fail" })
	time.Sleep(200 * time.Millisecond)
	if n := store.updates.Load(); n > 2 {
		t.Fatalf("%d ledger writes attempted in 200ms with the clock stopped: the loop spins", n)
	}
	if err := h.eng.Health(); reaper.ErrorCode(err) != reaper.EUNAVAILABLE || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Health while the disk is full = %v, want unavailable naming the cause", err)
	}
	st, err := h.eng.Status(context.Background())
	if err != nil || !strings.Contains(st.LedgerError, "no space left") {
		t.Fatalf("Status().LedgerError = %q (%v), want the cause", st.LedgerError, err)
	}
	// Each backoff step is one more attempt and one more log line: 100ms,
	// 200ms, 400ms, 800ms.
	for step := 100 * time.Millisecond; step <= 800*time.Millisecond; step *= 2 {
		// The loop is asleep on its backoff timer, set to the step.
		wake := h.clock.Now().Add(step)
		eventually(t, 5*time.Second, func() bool { return engine.NextWake(h.eng).Equal(wake) },
			func() string {
				return fmt.Sprintf("the loop to sleep until %v; it sleeps until %v", wake, engine.NextWake(h.eng))
			})
		before := store.updates.Load()
		h.clock.Advance(step)
		eventually(t, 5*time.Second, func() bool { return store.updates.Load() > before }, func() string { return "the next attempt" })
	}
	time.Sleep(50 * time.Millisecond)
	if n := strings.Count(logs.String(), "engine pass failed"); n < 4 || n > 6 {
		t.Fatalf("%d \"engine pass failed\" log lines over 5 backoff steps, want one per step:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "no space left on device") {
		t.Fatalf("the log does not name the cause:\n%s", logs.String())
	}
	if len(h.prov.Closes()) != 0 {
		t.Fatal("a close was made without its transition being committed")
	}

	// The disk recovers: the same engine reaps at the next step.
	store.full.Store(false)
	h.clock.Advance(2 * time.Second)
	h.waitState("fake/a", reaper.StateClosed)
	eventually(t, 5*time.Second, func() bool { return h.eng.Health() == nil }, func() string { return "health to recover" })
	if !strings.Contains(logs.String(), "engine passes work again") {
		t.Fatalf("recovery was not logged:\n%s", logs.String())
	}
}

// corrupt overwrites the stored record of key in bucket with bytes that do
// not decode.
func corrupt(t *testing.T, db *ledger.DB, bucket, key string) {
	t.Helper()
	err := db.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).Put([]byte(key), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Defect 1, second half: one undecodable record among the due items
// stopped every pass. Now it is quarantined and the rest are reaped.
func TestCorruptDueRecordIsQuarantined(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.register(reaper.RegisterRequest{ID: "good", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "bad", TTL: reaper.Duration(time.Minute)})
	corrupt(t, h.db, "entries", "fake/bad")
	h.clock.Advance(time.Minute)
	h.waitState("fake/good", reaper.StateClosed)
	if slices.Contains(h.prov.Closes(), "bad") {
		t.Fatal("the sandbox of an undecodable record was closed: its keep tag could not be read")
	}
	if _, err := h.eng.Entry(context.Background(), "fake/bad"); reaper.ErrorCode(err) != reaper.ENOTFOUND {
		t.Fatalf("Entry(fake/bad) = %v, want not found (quarantined)", err)
	}
	st, err := h.eng.Status(context.Background())
	if err != nil || st.Quarantined != 1 || !slices.Contains(st.QuarantinedKeys, "fake/bad") {
		t.Fatalf("Status quarantined = %d %v (%v), want fake/bad", st.Quarantined, st.QuarantinedKeys, err)
	}
	if got := kinds(h.audit(), "fake/bad"); !slices.Contains(got, reaper.EventQuarantined) {
		t.Fatalf("audit for fake/bad = %v, want a quarantined event", got)
	}
	// Listing works again too.
	if _, err := h.eng.Entries(context.Background(), reaper.EntryFilter{}, 0); err != nil {
		t.Fatalf("Entries after quarantine = %v", err)
	}
}

// A corrupt session record must not stop the daemon from starting.
func TestCorruptSessionAtStart(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s1", Lease: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(time.Minute)})
	corrupt(t, h.db, "sessions", "s1")
	h.clock.Advance(30 * time.Second)
	h.start()
	h.clock.Advance(30 * time.Second)
	h.waitState("fake/b", reaper.StateClosed)
	st, _ := h.eng.Status(context.Background())
	if st.Quarantined != 1 || !slices.Contains(st.QuarantinedKeys, "session s1") {
		t.Fatalf("quarantined = %v, want session s1", st.QuarantinedKeys)
	}
}

// Defect 2: removing keep from an entry whose session had ended left it
// active with no deadline: leaked forever.
func TestUnkeepAfterSessionEndCloses(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.register(reaper.RegisterRequest{ID: "k", Session: "s1", Keep: true})
	res, err := h.eng.EndSession(context.Background(), "s1")
	if err != nil || len(res.Items) != 1 || res.Items[0].Action != "skip" {
		t.Fatalf("EndSession = %+v, %v; want k skipped (keep)", res, err)
	}
	no := false
	if _, err := h.eng.Tag(context.Background(), "fake/k", reaper.TagRequest{Keep: &no}); err != nil {
		t.Fatalf("Tag keep=false = %v", err)
	}
	// No sweep, no clock move: the tag itself makes the entry due.
	if e := h.waitState("fake/k", reaper.StateClosed); e.CloseReason != reaper.ReasonSessionEnded {
		t.Fatalf("closed for %s, want session-ended", e.CloseReason)
	}
}

// Defect 2, second half: a tag must not leave an active entry that nothing
// could ever close.
func TestTagCannotLeaveAnUnclosableEntry(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "k", Keep: true})
	no := false
	_, err := h.eng.Tag(context.Background(), "fake/k", reaper.TagRequest{Keep: &no})
	if reaper.ErrorCode(err) != reaper.EINVALID || !strings.Contains(err.Error(), "--ttl") {
		t.Fatalf("Tag keep=false without ttl or session = %v, want invalid, asking for --ttl", err)
	}
	if e := h.entry("fake/k"); !e.Keep {
		t.Fatal("the refused tag was applied")
	}
	e, err := h.eng.Tag(context.Background(), "fake/k", reaper.TagRequest{Keep: &no, TTL: reaper.Duration(time.Hour)})
	if err != nil || e.Keep || !e.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Tag keep=false ttl=1h = %+v, %v", e, err)
	}
	// With a default_ttl, the default applies instead of a refusal.
	h2 := newHarness(t, func(e *engine.Engine) { e.DefaultTTL = 2 * time.Hour })
	h2.register(reaper.RegisterRequest{ID: "k", Keep: true})
	e, err = h2.eng.Tag(context.Background(), "fake/k", reaper.TagRequest{Keep: &no})
	if err != nil || !e.ExpiresAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("Tag keep=false with default_ttl = %+v, %v; want it to expire after default_ttl", e, err)
	}
}

// Defect 3: sessions had no owner; any local user could end another's
// session (closing its sandboxes), register into it, or heartbeat it.
func TestSessionOwnership(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.Access = reaper.Access{Self: 999, AdminGroups: []uint32{4000}} })
	if _, _, err := h.eng.Register(caller(1001), reaper.RegisterRequest{Provider: "fake", ID: "a", Session: "s1", Lease: reaper.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if s := h.session("s1"); s.Owner == nil || *s.Owner != 1001 {
		t.Fatalf("session owner = %v, want 1001", s.Owner)
	}
	refused := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"heartbeat", func(ctx context.Context) error { _, err := h.eng.Heartbeat(ctx, "s1", 0); return err }},
		{"register into", func(ctx context.Context) error {
			_, _, err := h.eng.Register(ctx, reaper.RegisterRequest{Provider: "fake", ID: "b", Session: "s1"})
			return err
		}},
		{"end", func(ctx context.Context) error { _, err := h.eng.EndSession(ctx, "s1"); return err }},
	}
	for _, tt := range refused {
		err := tt.do(caller(1002))
		if reaper.ErrorCode(err) != reaper.EFORBIDDEN || !strings.Contains(err.Error(), "uid 1001") {
			t.Errorf("%s by another uid = %v, want forbidden naming uid 1001", tt.name, err)
		}
	}
	if s := h.session("s1"); s.Ended() {
		t.Fatal("another uid ended the session")
	}
	if _, err := h.eng.Entry(context.Background(), "fake/b"); reaper.ErrorCode(err) != reaper.ENOTFOUND {
		t.Fatalf("another uid registered into the session: %v", err)
	}
	for _, ctx := range []context.Context{caller(1001), caller(0), caller(999), caller(1003, 4000)} {
		if _, err := h.eng.Heartbeat(ctx, "s1", 0); err != nil {
			c, _ := reaper.CallerFrom(ctx)
			t.Errorf("heartbeat by uid %d (groups %v) = %v, want allowed", c.UID, c.Groups, err)
		}
	}
	if _, err := h.eng.EndSession(caller(1001), "s1"); err != nil {
		t.Fatalf("EndSession by the owner = %v", err)
	}
}

// Defect 4: every start rewrote each live session's last heartbeat, so a
// daemon restarted more often than a lease never lapsed anyone. Now a
// lease is extended by the downtime only, and the last heartbeat is kept.
func TestRestartsLetDeadSessionsLapse(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "clean-stops"
		if crash {
			name = "crashes"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			clock := clockwork.NewFakeClockAt(t0)
			path := filepath.Join(dir, "ledger-0.db")
			db := openLedger(t, path)
			first := newHarnessOn(t, db, clock)
			first.register(reaper.RegisterRequest{ID: "a", Session: "s1", Lease: reaper.Duration(time.Minute)})
			const up, down = 10 * time.Second, 5 * time.Second
			var last *harness
			for round := range 12 {
				h := newHarnessOn(t, db, clock)
				h.start()
				last = h
				if h.entry("fake/a").State != reaper.StateActive {
					break
				}
				for range up / time.Second {
					clock.Advance(time.Second)
					waitAliveStamp(t, db, clock.Now())
				}
				if crash {
					// The file as a SIGKILL now would leave it.
					next := filepath.Join(dir, fmt.Sprintf("ledger-%d.db", round+1))
					copyLedger(t, db, next)
					h.shutdown()
					db = openLedger(t, next)
				} else {
					h.shutdown()
				}
				clock.Advance(down)
			}
			// Alive 10s of every 15s, the session's 1m lease is used up
			// after 6 rounds of uptime: well within 12 rounds.
			e := last.entry("fake/a")
			if e.State == reaper.StateActive {
				t.Fatalf("after 12 restarts and %v without a heartbeat (lease 1m), the entry is still active", clock.Since(t0))
			}
			s := last.session("s1")
			if !s.Ended() || s.EndReason != reaper.ReasonOrphanedLease {
				t.Fatalf("session = %+v, want lapsed", s)
			}
			if !s.LastHeartbeat.Equal(t0) {
				t.Fatalf("last heartbeat = %v, want the real one, %v", s.LastHeartbeat, t0)
			}
			// Granted no more than the downtime: it lapsed after at least
			// a minute of uptime, and not before.
			if up := s.EndedAt.Sub(t0) - time.Duration(s.LeaseGrace); up < time.Minute {
				t.Fatalf("lapsed after %v of uptime (grace %v), want at least the 1m lease", up, time.Duration(s.LeaseGrace))
			}
		})
	}
}

func openLedger(t *testing.T, path string) *ledger.DB {
	t.Helper()
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// waitAliveStamp waits for the engine's alive stamp to reach at.
func waitAliveStamp(t *testing.T, db *ledger.DB, at time.Time) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool {
		var a reaper.AliveStamp
		_ = db.View(context.Background(), func(tx reaper.Tx) error { a, _ = tx.Alive(); return nil })
		return !a.At.Before(at)
	}, func() string { return "the alive stamp" })
}

// Defect 5: discovery and pruning ran on the deadline path, so a provider
// whose listing hung delayed every deadline.
func TestHangingDiscoveryDoesNotDelayDeadlines(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) {
		e.DiscoverOnSweep = true
		e.ListTimeout = time.Hour
	})
	listing := make(chan struct{})
	var once sync.Once
	h.prov.ListFn = func(ctx context.Context, _ reaper.ListFilter) ([]reaper.Sandbox, error) {
		once.Do(func() { close(listing) })
		<-ctx.Done()
		return nil, ctx.Err()
	}
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	if !h.eng.TriggerSweep() {
		t.Fatal("TriggerSweep refused")
	}
	<-listing
	h.clock.Advance(time.Minute)
	h.waitState("fake/a", reaper.StateClosed) // while the listing still hangs
}

// Defect 6: an attempt was counted when a close was queued, and again after
// each restart, whether or not a call was made.
func TestAttemptsCountCallsOnly(t *testing.T) {
	dir := t.TempDir()
	clock := clockwork.NewFakeClockAt(t0)
	db := openLedger(t, filepath.Join(dir, "ledger-0.db"))
	hang := make(chan struct{})
	var hangOnce sync.Once
	defer hangOnce.Do(func() { close(hang) })
	// One worker; the close of a hangs, so b waits in the queue behind it.
	build := func(db *ledger.DB) *harness {
		h := newHarnessOn(t, db, clock, func(e *engine.Engine) { e.Concurrency = 1 })
		h.prov.setClose(func(ctx context.Context, id string) error {
			if id == "a" {
				select {
				case <-hang:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
		return h
	}
	h := build(db)
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(time.Minute)})
	clock.Advance(time.Minute)
	queued := func(h *harness) func() bool {
		return func() bool { return len(h.prov.Closes()) == 1 && h.entry("fake/b").InFlight }
	}
	eventually(t, 5*time.Second, queued(h), func() string { return "a to hang and b to be queued" })
	// Queued is not attempted, and a queued close has no deadline to be
	// rewritten while it waits: the loop sleeps.
	if b := h.entry("fake/b"); b.Attempts != 0 {
		t.Fatalf("b queued behind a has %d attempts, want 0", b.Attempts)
	}
	if st, _ := h.eng.Status(context.Background()); !st.NextDeadline.IsZero() {
		t.Fatalf("next deadline = %v while every close is queued or running, want none", st.NextDeadline)
	}
	// Three crashes while b waits in the queue.
	calls := 1
	for i := range 3 {
		next := filepath.Join(dir, fmt.Sprintf("ledger-%d.db", i+1))
		copyLedger(t, db, next)
		h.shutdown()
		db = openLedger(t, next)
		h = build(db)
		h.start()
		eventually(t, 5*time.Second, queued(h), func() string { return "a to hang again and b to be queued" })
		calls++
		if a, b := h.entry("fake/a"), h.entry("fake/b"); b.Attempts != 0 || a.Attempts != calls {
			t.Fatalf("after crash %d: a has %d attempts (%d calls made), b has %d (none made)", i+1, a.Attempts, calls, b.Attempts)
		}
	}
	hangOnce.Do(func() { close(hang) })
	b := h.waitState("fake/b", reaper.StateClosed)
	if b.Attempts != 1 {
		t.Fatalf("b closed after %d attempts, want 1: one call was made", b.Attempts)
	}
	if a := h.waitState("fake/a", reaper.StateClosed); a.Attempts != calls {
		t.Fatalf("a closed after %d attempts, want %d", a.Attempts, calls)
	}
}

// Defect 7: a Retry-After paused only the sandbox that got it, and was
// honoured whatever its size.
func TestRetryAfterPausesTheProviderAndIsCapped(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) {
		e.MaxBackoff = 10 * time.Minute
		e.Concurrency = 1
	})
	h.prov.setClose(func(_ context.Context, id string) error {
		if id == "a" {
			return &reaper.ProviderError{Provider: "fake", Op: "close", ID: id, Kind: reaper.ErrRateLimited, RetryAfter: 1e9 * time.Second}
		}
		return nil
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	failedAt := h.clock.Now()
	var a *reaper.Entry
	eventually(t, 5*time.Second, func() bool { a = h.entry("fake/a"); return a.Attempts == 1 && !a.InFlight },
		func() string { return "a's 429 to be recorded" })
	if got := a.NextAttemptAt.Sub(failedAt); got != 10*time.Minute {
		t.Fatalf("a retried in %v after a 1e9s Retry-After, want the 10m cap", got)
	}
	st, _ := h.eng.Status(context.Background())
	if p := st.Providers["fake"].PausedUntil; !p.Equal(failedAt.Add(10 * time.Minute)) {
		t.Fatalf("provider paused until %v, want %v (capped)", p, failedAt.Add(10*time.Minute))
	}
	never(t, 100*time.Millisecond, func() bool { return slices.Contains(h.prov.Closes(), "b") },
		"b was called while its provider asked to wait")
	h.clock.Advance(10 * time.Minute)
	h.waitState("fake/b", reaper.StateClosed)
}

// Defect 8 (engine side): the Store contract says an update function may run
// more than once; metrics and logs inside them double-counted. rerunStore
// runs every function once on a transaction it throws away, then for real.
type rerunStore struct{ reaper.Store }

var errThrowAway = errors.New("throw this transaction away")

func (s rerunStore) Update(ctx context.Context, fn func(reaper.Tx) error) error {
	err := s.Store.Update(ctx, func(tx reaper.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errThrowAway
	})
	if err != nil && !errors.Is(err, errThrowAway) {
		return err
	}
	return s.Store.Update(ctx, fn)
}

func TestRerunUpdatesCountOnce(t *testing.T) {
	var alive atomic.Bool
	alive.Store(true)
	logs := &syncBuffer{}
	m := engine.NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(e *engine.Engine) {
		e.Metrics = m
		e.Logger = slog.New(slog.NewTextHandler(logs, nil))
		e.ProcessAlive = func(pid int, _ uint64) bool { return alive.Load() }
	})
	h.eng.Store = rerunStore{h.db}
	h.start()
	h.register(reaper.RegisterRequest{ID: "lapse", Session: "s1", Lease: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "att", Session: "s1", Attached: true})
	h.register(reaper.RegisterRequest{ID: "proc", Session: "p1", PID: 42})
	h.clock.Advance(time.Minute)
	h.waitState("fake/lapse", reaper.StateClosed)
	alive.Store(false)
	h.clock.Advance(time.Second)
	h.waitState("fake/proc", reaper.StateClosed)
	type check struct {
		name      string
		got, want float64
	}
	checks := func() []check {
		return []check{
			{"registrations", testutil.ToFloat64(m.Registrations), 3},
			{"lease lapses", testutil.ToFloat64(m.LeaseLapses), 1},
			{"released", testutil.ToFloat64(m.Released), 1},
			{"process exits", testutil.ToFloat64(m.ProcessExits), 1},
			{"closed", testutil.ToFloat64(m.Closed.WithLabelValues("fake", "orphaned-lease")) + testutil.ToFloat64(m.Closed.WithLabelValues("fake", "orphaned-process")), 2},
			{"lapse log lines", float64(strings.Count(logs.String(), "session lease lapsed")), 1},
		}
	}
	// Metrics follow the commits they count: wait for them, then check
	// that none went past its count.
	eventually(t, 5*time.Second, func() bool {
		for _, c := range checks() {
			if c.got < c.want {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("the metrics to reach their counts: %+v", checks()) })
	time.Sleep(20 * time.Millisecond)
	for _, c := range checks() {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// Defect 10: unbounded growth and lifecycle edges.
func TestUntrackedMemoryFollowsTheFleet(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.DiscoverOnSweep = true })
	var round atomic.Int32
	h.prov.ListFn = func(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
		r := round.Add(1)
		var sbs []reaper.Sandbox
		for i := range 50 {
			sbs = append(sbs, reaper.Sandbox{ID: fmt.Sprintf("r%d-%d", r, i), CreatedAt: t0.Add(-time.Hour)})
		}
		return sbs, nil
	}
	h.start()
	for range 5 {
		h.sweep()
	}
	n := 0
	h.view(func(tx reaper.Tx) error {
		return tx.Untracked("fake", func(string, time.Time) error { n++; return nil })
	})
	if n != 50 {
		t.Fatalf("after 5 discoveries of 50 different sandboxes the ledger records %d untracked, want 50 (the last listing)", n)
	}
}

func TestReloadShutsDownReplacedProviders(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.prov.setClose(func(ctx context.Context, _ string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool { return len(h.prov.Closes()) == 1 }, func() string { return "the close to start" })

	// Reloading with the same instance keeps it.
	h.eng.SetProviders(engine.ProviderSet{Enabled: map[string]reaper.Provider{"fake": h.prov}})
	next := &fakeProvider{name: "fake"}
	h.eng.SetProviders(engine.ProviderSet{Enabled: map[string]reaper.Provider{"fake": next}})
	never(t, 50*time.Millisecond, func() bool { return h.prov.Shutdowns() > 0 }, "a provider was shut down during its close call")
	close(release)
	h.waitState("fake/a", reaper.StateClosed)
	eventually(t, 5*time.Second, func() bool { return h.prov.Shutdowns() == 1 }, func() string { return "the replaced provider to be shut down" })
	h.shutdown()
	if next.Shutdowns() != 1 {
		t.Fatalf("the current provider was shut down %d times at stop, want 1", next.Shutdowns())
	}
}

func TestSweepWhileStoppingReturnsAtOnce(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.ShutdownGrace = time.Hour })
	h.prov.setClose(func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() })
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool { return len(h.prov.Closes()) == 1 }, func() string { return "the close to hang" })
	h.stop() // Run now waits out the shutdown grace (an hour) for the hung close
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := h.eng.Sweep(ctx, reaper.SweepOptions{})
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Sweep while the engine stops took %v (err %v), want an answer at once", el, err)
	}
	if reaper.ErrorCode(err) != reaper.EUNAVAILABLE {
		t.Fatalf("Sweep while the engine stops = %v, want unavailable", err)
	}
	select {
	case <-h.eng.Stopped():
		t.Fatal("Run returned before the shutdown grace passed")
	default:
	}
	h.shutdown() // moves the clock past the grace
}

func TestSecondRunIsRefused(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.eng.Run(ctx); !errors.Is(err, engine.ErrRan) {
		t.Fatalf("second Run = %v, want ErrRan", err)
	}
	start := time.Now()
	_, err := h.eng.Sweep(ctx, reaper.SweepOptions{})
	if reaper.ErrorCode(err) != reaper.EUNAVAILABLE || time.Since(start) > time.Second {
		t.Fatalf("Sweep after Run returned = %v after %v, want unavailable at once", err, time.Since(start))
	}
}

// Defect 11: the first --pid session was not watched until the engine next
// woke, up to a minute later.
func TestFirstPIDSessionIsWatchedAtOnce(t *testing.T) {
	var alive atomic.Bool
	alive.Store(true)
	h := newHarness(t, func(e *engine.Engine) {
		e.ProcessAlive = func(pid int, _ uint64) bool { return alive.Load() }
	})
	h.start()
	h.clock.Advance(10 * time.Second) // an idle daemon: nothing to watch
	h.register(reaper.RegisterRequest{ID: "a", Session: "agent", PID: 4242})
	alive.Store(false)
	h.clock.Advance(time.Second) // one process check later
	if e := h.waitState("fake/a", reaper.StateClosed); e.CloseReason != reaper.ReasonOrphanedProcess {
		t.Fatalf("closed for %s, want orphaned-process", e.CloseReason)
	}
}

// Defect 12: ids "." and ".." were accepted, and then could not be
// released or tagged.
func TestDotIDsAreRejected(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{".", ".."} {
		_, _, err := h.eng.Register(context.Background(), reaper.RegisterRequest{Provider: "fake", ID: id, TTL: reaper.Duration(time.Hour)})
		if reaper.ErrorCode(err) != reaper.EINVALID {
			t.Errorf("Register id %q = %v, want invalid", id, err)
		}
		_, _, err = h.eng.Register(context.Background(), reaper.RegisterRequest{Provider: "fake", ID: "x", Session: id})
		if reaper.ErrorCode(err) != reaper.EINVALID {
			t.Errorf("Register session %q = %v, want invalid", id, err)
		}
	}
}
