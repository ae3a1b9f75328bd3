package engine

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/reaper"
)

// Defaults for zero-valued Engine fields.
const (
	DefaultConcurrency   = 4
	DefaultQueueLimit    = 10000
	DefaultCloseTimeout  = time.Minute
	DefaultListTimeout   = time.Minute
	DefaultMinBackoff    = 5 * time.Second
	DefaultMaxBackoff    = 15 * time.Minute
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultProcessCheck  = time.Second
	DefaultShutdownGrace = 20 * time.Second
	DefaultPassLimit     = 10000
	DefaultAliveInterval = time.Second
)

// Timing the engine does not expose as settings.
const (
	// maxIdle bounds how long the loop sleeps without looking at the
	// ledger, whatever the next deadline.
	maxIdle = time.Minute
	// parkDelay is how long a due close waits when its provider's queue is
	// full, before the loop looks at it again.
	parkDelay = 5 * time.Second
	// ledgerRetryMin and ledgerRetryMax bound the backoff of the loop and
	// the workers while the ledger cannot be written: a failed attempt
	// costs little, and a freed disk is used within seconds.
	ledgerRetryMin = 100 * time.Millisecond
	ledgerRetryMax = 10 * time.Second
	// failureLogEvery is how often a failure that persists at the longest
	// backoff is logged again.
	failureLogEvery = time.Minute
	// stuckWait is the least the loop waits when due items make no
	// progress (a bug), so that it never spins.
	stuckWait = time.Second
	// probeEvery is how often the loop probes a provider whose calls fail
	// for a provider-wide reason, with one of its backed-off closes.
	probeEvery = 15 * time.Second
	// pruneChunk is how many items one prune transaction deletes.
	pruneChunk = 1000
	// recoverChunk is how many backed-off closes one recovery transaction
	// makes due again.
	recoverChunk = 5000
)

// Engine is the reaper's machinery. It serves registrations and tags
// (reaper.Service), finds due entries through the ledger's deadline index,
// commits their transitions, and closes sandboxes through a bounded close
// queue per provider. Set its fields, then call Run once; the service
// methods may be called at any time, but sweeps need Run.
//
// Run starts these goroutines, each with one job:
//
//   - the loop: sleeps on one timer until the earliest deadline in the
//     ledger (or a wake-up), then runs a pass that moves due entries to
//     closing and hands them to their provider's queue;
//   - the close workers: Concurrency per provider, each taking a close
//     from its queue, waiting for the provider's rate limit and any
//     Retry-After pause, counting the attempt durably, calling the
//     provider and recording the outcome;
//   - the process watcher: ends the live sessions whose process exited,
//     told of each exit by a pidfd on Linux, else checking their pids
//     every ProcessCheck;
//   - the alive stamper: records in the ledger that the daemon runs, so
//     that the next start can tell how long it was down.
//
// Discovery and pruning run on the goroutine of the sweep that asks for
// them, never on the loop's, so that a provider whose listing hangs delays
// no deadline.
type Engine struct {
	// Store is the ledger. Required.
	Store reaper.Store
	// Providers are the providers at start; SetProviders replaces them.
	Providers ProviderSet

	// Clock is the source of time and timers. Nil means the real clock.
	Clock clockwork.Clock
	// Logger receives the engine's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Metrics, when set, records the engine's metrics.
	Metrics *Metrics
	// Access is the ownership rule for entries and sessions. The zero value
	// lets owners and root change their records; set Self to the daemon's
	// uid and AdminGroups for more.
	Access reaper.Access

	// Concurrency is the number of close workers per provider. Zero means
	// DefaultConcurrency.
	Concurrency int
	// QueueLimit caps the closes queued per provider; due closes beyond it
	// wait in the ledger. Zero means DefaultQueueLimit.
	QueueLimit int
	// CloseTimeout bounds each provider close call. Zero means
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// ListTimeout bounds each provider's listing during discovery. Zero
	// means DefaultListTimeout.
	ListTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between close
	// attempts of one entry. MaxBackoff also caps the delays providers ask
	// for (Retry-After). Zero means DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// DefaultTTL applies to registrations that give neither a ttl nor a
	// session, and to entries that a tag leaves with neither. Zero means
	// such registrations and tags are refused, since nothing would ever
	// make the entry due.
	DefaultTTL time.Duration
	// Retention is how long closed and released entries, ended sessions
	// and audit events are kept before sweeps prune them. Zero means
	// DefaultRetention; negative disables pruning.
	Retention time.Duration
	// ProcessCheck is how often live sessions with a pid are checked
	// where no pidfd watches them (pidfds unavailable, or more sessions
	// than the open-file limit allows). Zero means DefaultProcessCheck.
	ProcessCheck time.Duration
	// ShutdownGrace is how long close calls in flight may run after Run's
	// context ends before they are canceled (they stay closing, and resume
	// at the next start). Zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// PassLimit caps the due items one pass handles; the rest follow in
	// the next pass at once. Zero means DefaultPassLimit.
	PassLimit int
	// AliveInterval is how often the daemon stamps the ledger as alive.
	// The lease grace after a crash is the downtime less this interval.
	// Zero means DefaultAliveInterval.
	AliveInterval time.Duration
	// DiscoverOnSweep makes full sweeps also list every enabled provider's
	// sandboxes and record the ones the ledger does not track.
	DiscoverOnSweep bool

	// ProcessAlive and ProcessStart check session processes. Nil means
	// the /proc implementations in this package. A ProcessAlive set here
	// is asked every ProcessCheck: no pidfd is used.
	ProcessAlive func(pid int, start uint64) bool
	ProcessStart func(pid int) (uint64, error)
	// Jitter returns a random number in [0,1) for backoff jitter. Nil
	// means math/rand/v2.
	Jitter func() float64

	// maxPidfds caps the pidfds the process watcher holds (tests); zero
	// means a share of the open-file limit, negative turns pidfds off.
	maxPidfds int

	initOnce sync.Once
	clock    clockwork.Clock

	state    atomic.Int32 // stateNew, stateRunning, stateStopped
	started  chan struct{}
	loopDone chan struct{} // closed when the loop stops serving passes
	stopped  chan struct{}
	wake     chan struct{}
	requests chan *sweepRequest
	pidWatch chan struct{}
	// scheduled is when the loop will next wake (unix ns of the clock), or
	// 0 while it is not sleeping on a known deadline.
	scheduled atomic.Int64

	// workCtx ends when the engine stops taking work; callCtx ends when
	// the calls still in flight are canceled, after ShutdownGrace.
	workCtx, callCtx     context.Context
	stopWork, stopCalls  context.CancelFunc
	workers, background  sync.WaitGroup
	providers            providerRegistry
	maintenance          sync.Mutex // one prune and discovery at a time
	triggered            atomic.Bool
	mu                   sync.Mutex // guards lastPassErr
	adopt                atomic.Pointer[Adoption]
	pricing              atomic.Pointer[reaper.Pricing]
	lastPassErr          error
	lastPassLog          time.Time
	lastAliveErr         atomic.Bool
	quarantinedSinceOpen atomic.Int64
}

const (
	stateNew int32 = iota
	stateRunning
	stateStopped
)

func (e *Engine) init() {
	e.initOnce.Do(func() {
		e.clock = e.Clock
		if e.clock == nil {
			e.clock = clockwork.NewRealClock()
		}
		e.started = make(chan struct{})
		e.loopDone = make(chan struct{})
		e.stopped = make(chan struct{})
		e.wake = make(chan struct{}, 1)
		e.requests = make(chan *sweepRequest)
		e.pidWatch = make(chan struct{}, 1)
		e.workCtx, e.stopWork = context.WithCancel(context.Background())
		e.callCtx, e.stopCalls = context.WithCancel(context.Background())
		e.providers.init(e)
		e.providers.set(e.Providers)
	})
}

func (e *Engine) now() time.Time { return e.clock.Now().UTC() }

func (e *Engine) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (e *Engine) concurrency() int            { return orDefault(e.Concurrency, DefaultConcurrency) }
func (e *Engine) queueLimit() int             { return orDefault(e.QueueLimit, DefaultQueueLimit) }
func (e *Engine) closeTimeout() time.Duration { return orDefault(e.CloseTimeout, DefaultCloseTimeout) }
func (e *Engine) listTimeout() time.Duration  { return orDefault(e.ListTimeout, DefaultListTimeout) }
func (e *Engine) minBackoff() time.Duration   { return orDefault(e.MinBackoff, DefaultMinBackoff) }
func (e *Engine) maxBackoff() time.Duration   { return orDefault(e.MaxBackoff, DefaultMaxBackoff) }
func (e *Engine) processCheck() time.Duration { return orDefault(e.ProcessCheck, DefaultProcessCheck) }
func (e *Engine) shutdownGrace() time.Duration {
	return orDefault(e.ShutdownGrace, DefaultShutdownGrace)
}
func (e *Engine) passLimit() int { return orDefault(e.PassLimit, DefaultPassLimit) }
func (e *Engine) aliveInterval() time.Duration {
	return orDefault(e.AliveInterval, DefaultAliveInterval)
}
func (e *Engine) retention() time.Duration {
	if e.Retention != 0 {
		return e.Retention
	}
	return DefaultRetention
}

func (e *Engine) processAlive(pid int, start uint64) bool {
	if e.ProcessAlive != nil {
		return e.ProcessAlive(pid, start)
	}
	return ProcessAlive(pid, start)
}

func (e *Engine) processStart(pid int) (uint64, error) {
	if e.ProcessStart != nil {
		return e.ProcessStart(pid)
	}
	return ProcessStart(pid)
}

func (e *Engine) jitter() float64 {
	if e.Jitter != nil {
		return e.Jitter()
	}
	return rand.Float64()
}

// sleepUntil waits until the instant at on the engine's clock, or until
// ctx ends; it reports whether the whole wait passed.
func (e *Engine) sleepUntil(ctx context.Context, at time.Time) bool {
	if !at.After(e.clock.Now()) {
		return ctx.Err() == nil
	}
	t := e.clock.NewTimer(time.Hour)
	defer t.Stop()
	resetAt(e.clock, t, at)
	select {
	case <-t.Chan():
		return true
	case <-ctx.Done():
		return false
	}
}

// ledgerBackoff is the wait after n consecutive failures to use the ledger:
// from ledgerRetryMin, doubling, capped at ledgerRetryMax.
func ledgerBackoff(n int) time.Duration {
	d := ledgerRetryMin
	for i := 1; i < n && d < ledgerRetryMax; i++ {
		d *= 2
	}
	return min(d, ledgerRetryMax)
}

var _ reaper.Service = (*Engine)(nil)
