package reaper_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	bolt "go.etcd.io/bbolt"
)

// fakeProvider is a function-field fake of reaper.Provider.
type fakeProvider struct {
	name    string
	CloseFn func(ctx context.Context, id string) error
	ListFn  func(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error)

	mu       sync.Mutex
	closes   []string
	attempts []int
}

func (p *fakeProvider) Name() string { return p.name }

func (p *fakeProvider) Close(ctx context.Context, id string) error {
	p.mu.Lock()
	p.closes = append(p.closes, id)
	p.attempts = append(p.attempts, reaper.CloseAttempt(ctx))
	p.mu.Unlock()
	if p.CloseFn != nil {
		return p.CloseFn(ctx, id)
	}
	return nil
}

func (p *fakeProvider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	if p.ListFn != nil {
		return p.ListFn(ctx, f)
	}
	return nil, nil
}

func (p *fakeProvider) Closes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.closes...)
}

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type harness struct {
	t     *testing.T
	eng   *reaper.Engine
	db    *ledger.DB
	clock *clock
	prov  *fakeProvider
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHarness builds an engine on a temp ledger with one fake provider
// ("fake"), an injected clock and no jitter. The engine's loop is not
// running, so that only the test's sweeps act; start runs it.
func newHarness(t *testing.T, opts ...func(*reaper.Engine)) *harness {
	t.Helper()
	db := ledgertest.Open(t)
	return newHarnessOn(t, db, opts...)
}

func newHarnessOn(t *testing.T, db *ledger.DB, opts ...func(*reaper.Engine)) *harness {
	t.Helper()
	h := &harness{t: t, db: db, clock: newClock(), prov: &fakeProvider{name: "fake"}}
	h.eng = &reaper.Engine{
		Store:        db,
		Providers:    map[string]reaper.Provider{"fake": h.prov},
		Disabled:     map[string]string{"other": "set OTHER_KEY"},
		Now:          h.clock.Now,
		Logger:       quietLogger(),
		Jitter:       func() float64 { return 0 },
		ProcessAlive: func(int, uint64) bool { return true },
		ProcessStart: func(int) (uint64, error) { return 1, nil },
		CloseTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(h.eng)
	}
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.eng.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("engine Run: %v", err)
		}
	})
}

func (h *harness) register(r reaper.RegisterRequest) *reaper.Entry {
	h.t.Helper()
	if r.Provider == "" {
		r.Provider = "fake"
	}
	e, _, err := h.eng.Register(context.Background(), r)
	if err != nil {
		h.t.Fatalf("Register(%+v) = %v", r, err)
	}
	return e
}

func (h *harness) sweep() *reaper.SweepReport {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := h.eng.Sweep(ctx, reaper.SweepOptions{})
	if err != nil {
		h.t.Fatalf("Sweep = %v", err)
	}
	return rep
}

func (h *harness) entry(key string) *reaper.Entry {
	h.t.Helper()
	e, err := h.eng.Entry(context.Background(), key)
	if err != nil {
		h.t.Fatalf("Entry(%s) = %v", key, err)
	}
	return e
}

func (h *harness) audit() []reaper.AuditEvent {
	h.t.Helper()
	evs, err := h.eng.Audit(context.Background(), time.Time{}, 0)
	if err != nil {
		h.t.Fatalf("Audit = %v", err)
	}
	return evs
}

func kinds(evs []reaper.AuditEvent, key string) []reaper.EventKind {
	var out []reaper.EventKind
	for _, ev := range evs {
		if ev.Key == key {
			out = append(out, ev.Kind)
		}
	}
	return out
}

func equalKinds(a, b []reaper.EventKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEngineClosesExpired(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(30 * time.Minute)})
	h.register(reaper.RegisterRequest{ID: "b", TTL: reaper.Duration(2 * time.Hour)})

	if rep := h.sweep(); len(rep.Items) != 0 {
		t.Fatalf("sweep before expiry acted: %+v", rep.Items)
	}
	h.clock.Add(30 * time.Minute)
	rep := h.sweep()
	if len(rep.Items) != 1 || rep.Items[0].Key != "fake/a" || rep.Items[0].Result != "closed" || rep.Items[0].Reason != reaper.ReasonExpired {
		t.Fatalf("sweep at expiry = %+v, want fake/a closed (expired)", rep.Items)
	}
	if got := h.prov.Closes(); len(got) != 1 || got[0] != "a" {
		t.Fatalf("provider closes = %v, want [a]", got)
	}
	a := h.entry("fake/a")
	if a.State != reaper.StateClosed || a.CloseReason != reaper.ReasonExpired || !a.ClosedAt.Equal(h.clock.Now()) || a.Attempts != 1 {
		t.Fatalf("entry a = %+v, want closed/expired at now after 1 attempt", a)
	}
	if b := h.entry("fake/b"); b.State != reaper.StateActive {
		t.Fatalf("entry b state = %s, want active", b.State)
	}
	want := []reaper.EventKind{reaper.EventRegistered, reaper.EventCloseStarted, reaper.EventClosed}
	if got := kinds(h.audit(), "fake/a"); !equalKinds(got, want) {
		t.Fatalf("audit for fake/a = %v, want %v", got, want)
	}
}

// TestEngineDeadlineWake checks that the engine closes an entry at its
// deadline without a sweep: the timer path.
func TestEngineDeadlineWake(t *testing.T) {
	closed := make(chan string, 1)
	h := newHarness(t)
	h.start()
	h.prov.CloseFn = func(_ context.Context, id string) error { closed <- id; return nil }
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	h.eng.Wake()
	select {
	case id := <-closed:
		if id != "a" {
			t.Fatalf("closed %s, want a", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("engine did not close the expired entry after Wake")
	}
}

func TestEngineNeverClosesProtected(t *testing.T) {
	h := newHarness(t)
	ttl := reaper.Duration(time.Minute)
	h.register(reaper.RegisterRequest{ID: "keep", TTL: ttl, Keep: true})
	h.register(reaper.RegisterRequest{ID: "att", TTL: ttl, Attached: true})
	h.register(reaper.RegisterRequest{ID: "sk", Session: "s1", Keep: true})
	h.register(reaper.RegisterRequest{ID: "sa", Session: "s1", Attached: true})
	h.register(reaper.RegisterRequest{ID: "sx", Session: "s1"})
	h.clock.Add(time.Hour)
	h.sweep()
	if _, err := h.eng.EndSession(context.Background(), "s1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/sx").State == reaper.StateClosed })
	h.sweep()
	h.clock.Add(24 * time.Hour)
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

// TestEngineTagAfterDue sets keep on an entry that has become due but whose
// close has not started: the transition re-checks the tag and skips it.
func TestEngineTagAfterDue(t *testing.T) {
	for _, tag := range []string{"keep", "attached"} {
		t.Run(tag, func(t *testing.T) {
			h := newHarness(t)
			h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
			h.clock.Add(2 * time.Minute) // due now, but no pass has run
			yes := true
			req := reaper.TagRequest{Keep: &yes}
			if tag == "attached" {
				req = reaper.TagRequest{Attached: &yes}
			}
			if _, err := h.eng.Tag(context.Background(), "fake/a", req); err != nil {
				t.Fatalf("Tag = %v", err)
			}
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

// TestEngineTagRacesTransition runs tags and passes concurrently: every
// entry tagged keep before its close started is never closed.
func TestEngineTagRacesTransition(t *testing.T) {
	h := newHarness(t)
	const n = 200
	for i := range n {
		h.register(reaper.RegisterRequest{ID: "r" + itoa(i), TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Add(2 * time.Minute)
	tagged := make(map[string]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	yes := true
	for i := range n {
		if i%2 == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "fake/r" + itoa(i)
			if _, err := h.eng.Tag(context.Background(), key, reaper.TagRequest{Keep: &yes}); err == nil {
				mu.Lock()
				tagged["r"+itoa(i)] = true
				mu.Unlock()
			} else if reaper.ErrorCode(err) != reaper.ECONFLICT {
				t.Errorf("Tag(%s) = %v", key, err)
			}
		}()
	}
	swept := make(chan struct{})
	go func() { defer close(swept); h.sweep() }()
	wg.Wait()
	<-swept
	h.sweep()
	for _, id := range h.prov.Closes() {
		if tagged[id] {
			t.Fatalf("sandbox %s was closed although its keep tag was committed first", id)
		}
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}

func TestEngineRetryBackoff(t *testing.T) {
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
		{"unauthorized", &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrUnauthorized}, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			fail := true
			var mu sync.Mutex
			h.prov.CloseFn = func(context.Context, string) error {
				mu.Lock()
				defer mu.Unlock()
				if fail {
					return tt.err
				}
				return nil
			}
			h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
			h.clock.Add(time.Minute)
			failedAt := h.clock.Now()
			rep := h.sweep()
			if len(rep.Items) != 1 || rep.Items[0].Result != "closing" {
				t.Fatalf("sweep = %+v, want one item still closing", rep.Items)
			}
			e := h.entry("fake/a")
			if e.State != reaper.StateClosing || e.InFlight || e.Attempts != 1 || e.LastError == "" {
				t.Fatalf("after failure entry = %+v, want closing, not in flight, 1 attempt, an error", e)
			}
			if got := e.NextAttemptAt.Sub(failedAt); got != tt.wantRetry {
				t.Fatalf("retry in %v, want %v", got, tt.wantRetry)
			}
			// Not retried before its time.
			h.clock.Add(tt.wantRetry - time.Millisecond)
			h.sweep()
			if n := len(h.prov.Closes()); n != 1 {
				t.Fatalf("retried early: %d close calls", n)
			}
			mu.Lock()
			fail = false
			mu.Unlock()
			h.clock.Add(time.Millisecond)
			rep = h.sweep()
			if len(rep.Items) != 1 || rep.Items[0].Action != "retry" || rep.Items[0].Result != "closed" {
				t.Fatalf("retry sweep = %+v, want a retry that closed", rep.Items)
			}
			e = h.entry("fake/a")
			if e.State != reaper.StateClosed || e.Attempts != 2 {
				t.Fatalf("entry = %+v, want closed after 2 attempts", e)
			}
			if h.prov.attempts[1] != 2 {
				t.Fatalf("second close carried attempt %d, want 2", h.prov.attempts[1])
			}
		})
	}
}

func TestEngineSessionLifecycle(t *testing.T) {
	h := newHarness(t)
	lease := reaper.Duration(2 * time.Minute)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s1", Lease: lease})
	h.register(reaper.RegisterRequest{ID: "b", Session: "s1"})
	h.register(reaper.RegisterRequest{ID: "c", Session: "s2", Lease: lease})

	h.clock.Add(90 * time.Second)
	if _, err := h.eng.Heartbeat(context.Background(), "s1", 0); err != nil {
		t.Fatalf("Heartbeat = %v", err)
	}
	h.clock.Add(90 * time.Second) // s2 lapsed (180s > 120s), s1 alive (90s)
	h.sweep()
	if got := h.entry("fake/c"); got.State != reaper.StateClosed || got.CloseReason != reaper.ReasonOrphanedLease {
		t.Fatalf("c = %s/%s, want closed/orphaned-lease", got.State, got.CloseReason)
	}
	for _, k := range []string{"fake/a", "fake/b"} {
		if st := h.entry(k).State; st != reaper.StateActive {
			t.Fatalf("%s = %s, want active (session alive)", k, st)
		}
	}
	s2, _ := h.eng.Session(context.Background(), "s2")
	if !s2.Ended() || s2.EndReason != reaper.ReasonOrphanedLease {
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
	// EndSession starts the close itself.
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed })
	if got := h.entry("fake/a"); got.CloseReason != reaper.ReasonSessionEnded {
		t.Fatalf("a = %s/%s, want closed/session-ended", got.State, got.CloseReason)
	}
	if got := h.entry("fake/b"); got.State != reaper.StateReleased {
		t.Fatalf("b = %s, want released", got.State)
	}
	for _, id := range h.prov.Closes() {
		if id == "b" {
			t.Fatal("a released sandbox was closed")
		}
	}
	// Ending again is a no-op.
	if _, err := h.eng.EndSession(context.Background(), "s1"); err != nil {
		t.Fatalf("second EndSession = %v", err)
	}
}

func TestEngineProcessExit(t *testing.T) {
	var mu sync.Mutex
	alive := true
	h := newHarness(t, func(e *reaper.Engine) {
		e.ProcessAlive = func(pid int, start uint64) bool {
			mu.Lock()
			defer mu.Unlock()
			return alive || pid != 4242
		}
	})
	h.register(reaper.RegisterRequest{ID: "a", Session: "s1", PID: 4242})
	h.sweep()
	if st := h.entry("fake/a").State; st != reaper.StateActive {
		t.Fatalf("state with the process alive = %s", st)
	}
	mu.Lock()
	alive = false
	mu.Unlock()
	h.sweep()
	if got := h.entry("fake/a"); got.State != reaper.StateClosed || got.CloseReason != reaper.ReasonOrphanedProcess {
		t.Fatalf("after exit = %s/%s, want closed/orphaned-process", got.State, got.CloseReason)
	}
}

func TestEngineDisabledProviderNeverClosed(t *testing.T) {
	h := newHarness(t)
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.eng.SetProviders(map[string]reaper.Provider{}, map[string]string{"fake": "set FAKE_KEY"}, nil)
	h.clock.Add(time.Hour)
	h.sweep()
	e := h.entry("fake/a")
	if e.State != reaper.StateClosing || e.ErrorClass != "provider_disabled" || e.Attempts != 0 {
		t.Fatalf("entry = %+v, want closing with provider_disabled and no attempt", e)
	}
	if len(h.prov.Closes()) != 0 {
		t.Fatal("a disabled provider was called")
	}
}

func TestEnginePanickingProvider(t *testing.T) {
	h := newHarness(t)
	h.prov.CloseFn = func(context.Context, string) error { panic("provider bug") }
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	rep := h.sweep()
	if len(rep.Items) != 1 || rep.Items[0].Result != "closing" {
		t.Fatalf("sweep = %+v, want the panic recorded as a failed attempt", rep.Items)
	}
	// The engine is still alive.
	h.prov.CloseFn = nil
	h.clock.Add(time.Hour)
	if rep := h.sweep(); len(rep.Items) != 1 || rep.Items[0].Result != "closed" {
		t.Fatalf("sweep after panic = %+v", rep.Items)
	}
}

// TestEngineResumeAfterCrash copies the ledger while a close call is in
// flight (as a crash would leave it) and starts a second engine on the
// copy: it resumes the close at once.
func TestEngineResumeAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	db, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	started, release := make(chan struct{}), make(chan struct{})
	h := newHarnessOn(t, db)
	h.start()
	h.prov.CloseFn = func(ctx context.Context, id string) error {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return ctx.Err()
	}
	defer close(release)
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Add(time.Minute)
	h.eng.Wake()
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
	if e == nil || e.State != reaper.StateClosing || !e.InFlight {
		t.Fatalf("crashed ledger entry = %+v, want closing and in flight", e)
	}
	h2 := newHarnessOn(t, db2)
	h2.clock.Add(time.Minute + time.Second) // a second after the crash, well within the attempt lease
	h2.start()                              // Run resumes the interrupted close at once
	deadline := time.Now().Add(5 * time.Second)
	for h2.entry("fake/a").State != reaper.StateClosed {
		if time.Now().After(deadline) {
			t.Fatalf("resumed entry = %+v, want closed", h2.entry("fake/a"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := h2.prov.Closes(); len(got) != 1 || got[0] != "a" {
		t.Fatalf("resumed provider closes = %v, want [a]", got)
	}
	if h2.prov.attempts[0] != 2 {
		t.Fatalf("resumed close is attempt %d, want 2", h2.prov.attempts[0])
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
