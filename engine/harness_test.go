package engine_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

// fakeProvider is a function-field fake of reaper.Provider.
type fakeProvider struct {
	name    string
	CloseFn func(ctx context.Context, id string) error
	ListFn  func(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error)
	CheckFn func(ctx context.Context) error

	mu       sync.Mutex
	closes   []string
	attempts []int
	shutdown int
}

func (p *fakeProvider) Name() string { return p.name }

func (p *fakeProvider) Close(ctx context.Context, id string) error {
	p.mu.Lock()
	p.closes = append(p.closes, id)
	p.attempts = append(p.attempts, reaper.CloseAttempt(ctx))
	fn := p.CloseFn
	p.mu.Unlock()
	if fn != nil {
		return fn(ctx, id)
	}
	return nil
}

func (p *fakeProvider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	p.mu.Lock()
	fn := p.ListFn
	p.mu.Unlock()
	if fn != nil {
		return fn(ctx, f)
	}
	return nil, nil
}

func (p *fakeProvider) Check(ctx context.Context) error {
	p.mu.Lock()
	fn := p.CheckFn
	p.mu.Unlock()
	if fn != nil {
		return fn(ctx)
	}
	return nil
}

func (p *fakeProvider) setCheck(fn func(ctx context.Context) error) {
	p.mu.Lock()
	p.CheckFn = fn
	p.mu.Unlock()
}

func (p *fakeProvider) Shutdown() {
	p.mu.Lock()
	p.shutdown++
	p.mu.Unlock()
}

func (p *fakeProvider) setClose(fn func(ctx context.Context, id string) error) {
	p.mu.Lock()
	p.CloseFn = fn
	p.mu.Unlock()
}

func (p *fakeProvider) Closes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.closes...)
}

func (p *fakeProvider) Attempts() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.attempts...)
}

func (p *fakeProvider) Shutdowns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shutdown
}

var t0 = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

type harness struct {
	t     *testing.T
	eng   *engine.Engine
	db    *ledger.DB
	clock *clockwork.FakeClock
	prov  *fakeProvider
	done  chan error
	stop  context.CancelFunc
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHarness builds an engine on a temp ledger with one fake provider
// ("fake"), a fake clock and no jitter. Call start to run it.
func newHarness(t *testing.T, opts ...func(*engine.Engine)) *harness {
	t.Helper()
	return newHarnessOn(t, ledgertest.Open(t), clockwork.NewFakeClockAt(t0), opts...)
}

func newHarnessOn(t *testing.T, db *ledger.DB, clock *clockwork.FakeClock, opts ...func(*engine.Engine)) *harness {
	t.Helper()
	h := &harness{t: t, db: db, clock: clock, prov: &fakeProvider{name: "fake"}}
	h.eng = &engine.Engine{
		Store: db,
		Providers: engine.ProviderSet{
			Enabled:  map[string]reaper.Provider{"fake": h.prov},
			Disabled: map[string]string{"other": "set OTHER_KEY"},
		},
		Clock:        clock,
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

// start runs the engine until the test ends, and waits until its
// start-up is done.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.eng.Run(ctx) }()
	select {
	case <-h.eng.Started():
	case err := <-h.done:
		h.t.Fatalf("Run returned at start: %v", err)
	case <-time.After(5 * time.Second):
		h.t.Fatal("engine did not start")
	}
	h.t.Cleanup(h.shutdown)
}

// shutdown stops the engine, moving the fake clock on so that a close that
// hangs is canceled after the shutdown grace.
func (h *harness) shutdown() {
	if h.done == nil {
		return
	}
	h.stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-h.done:
			h.done = nil
			if err != nil {
				h.t.Errorf("engine Run: %v", err)
			}
			return
		case <-deadline:
			h.t.Fatal("engine did not stop")
		case <-time.After(10 * time.Millisecond):
			h.clock.Advance(time.Second)
		}
	}
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

func (h *harness) session(id string) *reaper.Session {
	h.t.Helper()
	s, err := h.eng.Session(context.Background(), id)
	if err != nil {
		h.t.Fatalf("Session(%s) = %v", id, err)
	}
	return s
}

func (h *harness) audit() []reaper.AuditEvent {
	h.t.Helper()
	evs, err := h.eng.Audit(context.Background(), time.Time{}, 0)
	if err != nil {
		h.t.Fatalf("Audit = %v", err)
	}
	return evs
}

// state polls until key reaches want (the engine works on its own
// goroutines; the fake clock has already been moved).
func (h *harness) waitState(key string, want reaper.State) *reaper.Entry {
	h.t.Helper()
	var e *reaper.Entry
	eventually(h.t, 5*time.Second, func() bool {
		e = h.entry(key)
		return e.State == want
	}, func() string { return "entry " + key + " to be " + string(want) + "; it is " + string(e.State) })
	return e
}

// advanceUntil moves the fake clock on by step, again and again, until cond
// holds: for waits whose length the engine picks (its backoffs).
func (h *harness) advanceUntil(step time.Duration, cond func() bool, what string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		h.clock.Advance(step)
		time.Sleep(2 * time.Millisecond)
	}
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

// eventually polls cond in real time until it holds. It waits for the
// engine's goroutines, never for a schedule: time in these tests moves only
// with the fake clock.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// never checks, for a short real-time window, that cond stays false.
func never(t testing.TB, window time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func caller(uid uint32, groups ...uint32) context.Context {
	return reaper.WithCaller(context.Background(), reaper.Caller{UID: uid, GID: uid, Groups: groups})
}

// view runs fn in a read-only ledger transaction.
func (h *harness) view(fn func(reaper.Tx) error) {
	h.t.Helper()
	if err := h.db.View(context.Background(), fn); err != nil {
		h.t.Fatalf("View = %v", err)
	}
}
