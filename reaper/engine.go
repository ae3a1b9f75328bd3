package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Log keys used by the engine.
const (
	LogKey      = "key"
	LogSession  = "session"
	LogProvider = "provider"
	LogReason   = "reason"
	LogAttempt  = "attempt"
	LogClass    = "class"
	LogErr      = "err"
	LogRetryIn  = "retry_in"
	LogCount    = "count"
	LogDuration = "duration"
)

// Defaults for zero-valued Engine fields.
const (
	DefaultConcurrency   = 4
	DefaultCloseTimeout  = time.Minute
	DefaultMinBackoff    = 5 * time.Second
	DefaultMaxBackoff    = 15 * time.Minute
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultProcessCheck  = time.Second
	DefaultShutdownGrace = 20 * time.Second
	DefaultPassLimit     = 10000
)

// Engine is the reaper: it serves registrations and tags, applies the
// policy to due entries, and calls providers to close them. Set its fields,
// then call Run; the service methods (Register, Heartbeat, ...) may be
// called at any time, before or during Run.
type Engine struct {
	// Store is the ledger. Required.
	Store Store
	// Providers are the enabled providers, by name.
	Providers map[string]Provider
	// Disabled names the providers reaperd knows but that are not enabled,
	// each with a one-line hint on how to enable it. Registering for one is
	// an EDISABLED error; any other name is EUNKNOWN.
	Disabled map[string]string
	// Limiters optionally limit the rate of close calls per provider. A
	// provider without one is not rate limited.
	Limiters map[string]*rate.Limiter

	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Logger receives the engine's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Metrics, when set, records the engine's metrics.
	Metrics *Metrics

	// Concurrency is the number of close calls in flight per provider.
	// Zero means DefaultConcurrency.
	Concurrency int
	// CloseTimeout bounds each provider close call. Zero means
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between close
	// attempts. Zero means DefaultMinBackoff and DefaultMaxBackoff. A
	// provider's retry delay overrides the backoff when it is longer.
	MinBackoff, MaxBackoff time.Duration
	// DefaultTTL applies to registrations that give neither a ttl nor a
	// session. Zero means such registrations are rejected, since nothing
	// would ever make them due.
	DefaultTTL time.Duration
	// Retention is how long closed and released entries, ended sessions
	// and audit events are kept before they are pruned. Zero means
	// DefaultRetention; negative disables pruning.
	Retention time.Duration
	// ProcessCheck is how often live sessions with a pid are checked.
	// Zero means DefaultProcessCheck.
	ProcessCheck time.Duration
	// ShutdownGrace is how long in-flight close calls may run after Run's
	// context ends before they are canceled (and stay closing, to be
	// resumed at the next start). Zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// PassLimit caps the due items one pass handles; the rest follow in
	// the next pass at once. Zero means DefaultPassLimit.
	PassLimit int
	// Discover, when true, makes full sweeps also list every enabled
	// provider's sandboxes and record the ones the ledger does not track.
	DiscoverOnSweep bool

	// ProcessAlive and ProcessStart check session processes. Nil means
	// the /proc implementations in this package.
	ProcessAlive func(pid int, start uint64) bool
	ProcessStart func(pid int) (uint64, error)
	// Jitter returns a random number in [0,1) for backoff jitter. Nil
	// means math/rand/v2.
	Jitter func() float64

	initOnce sync.Once
	wake     chan struct{}
	requests chan sweepRequest

	mu       sync.Mutex
	inflight map[string]struct{}
	sems     map[string]chan struct{}
	seen     map[string]struct{} // untracked sandboxes already recorded
	closeWG  sync.WaitGroup

	pmu       sync.RWMutex
	provs     providerSet
	triggered atomic.Bool
	running   atomic.Bool
	// scheduled is when the loop will next wake (unix ns of e.now()), or
	// 0 while it is not sleeping on a known deadline.
	scheduled   atomic.Int64
	passMu      sync.Mutex
	closeCtx    context.Context
	cancelClose context.CancelFunc
	lastProc    time.Time
}

type sweepRequest struct {
	ctx   context.Context
	reply chan sweepReply
}

type sweepReply struct {
	report *SweepReport
	jobs   []*closeJob
	err    error
}

func (e *Engine) init() {
	e.initOnce.Do(func() {
		e.wake = make(chan struct{}, 1)
		e.requests = make(chan sweepRequest)
		e.inflight = map[string]struct{}{}
		e.sems = map[string]chan struct{}{}
		e.seen = map[string]struct{}{}
		e.closeCtx, e.cancelClose = context.WithCancel(context.Background())
		e.provs = providerSet{enabled: e.Providers, disabled: e.Disabled, limiters: e.Limiters}
	})
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Engine) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

func (e *Engine) concurrency() int {
	if e.Concurrency > 0 {
		return e.Concurrency
	}
	return DefaultConcurrency
}

func (e *Engine) closeTimeout() time.Duration {
	if e.CloseTimeout > 0 {
		return e.CloseTimeout
	}
	return DefaultCloseTimeout
}

func (e *Engine) retention() time.Duration {
	if e.Retention != 0 {
		return e.Retention
	}
	return DefaultRetention
}

func (e *Engine) processCheck() time.Duration {
	if e.ProcessCheck > 0 {
		return e.ProcessCheck
	}
	return DefaultProcessCheck
}

func (e *Engine) passLimit() int {
	if e.PassLimit > 0 {
		return e.PassLimit
	}
	return DefaultPassLimit
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

// attemptLease is how long an in-flight close keeps its entry out of the
// due set; a crash leaves the entry to be resumed after it at the latest.
func (e *Engine) attemptLease() time.Duration { return e.closeTimeout() + 5*time.Second }

// Wake makes a running engine re-examine the ledger at once. Service
// methods call it whenever a deadline may have moved earlier; tests call it
// after advancing an injected clock.
func (e *Engine) Wake() {
	e.init()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// wakeBy wakes the loop unless it is already due to wake at or before t.
// Callers commit the change that makes t a deadline before calling it.
func (e *Engine) wakeBy(t time.Time) {
	if t.IsZero() {
		return
	}
	if s := e.scheduled.Load(); s != 0 && t.UnixNano() >= s {
		return
	}
	e.Wake()
}

// Run resumes interrupted closes, then serves deadlines and full sweeps
// until ctx ends. Passes never overlap: they all run on Run's goroutine.
// Full sweeps are requested by Sweep (a cron schedule calls it). On return,
// in-flight close calls have finished or been canceled, and their outcome
// is in the ledger.
func (e *Engine) Run(ctx context.Context) error {
	e.init()
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("run engine: already running")
	}
	defer func() { e.running.Store(false); e.scheduled.Store(0) }()
	if err := e.resume(ctx); err != nil {
		return fmt.Errorf("resume interrupted closes: %w", err)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			e.shutdown()
			return nil
		case <-timer.C:
			e.safePass(ctx, false, nil)
		case <-e.wake:
			e.safePass(ctx, false, nil)
		case req := <-e.requests:
			e.safePass(ctx, true, &req)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		// Unknown while the next deadline is read, so that a deadline
		// committed meanwhile always wakes the loop (see wakeBy).
		e.scheduled.Store(0)
		wait := e.nextWait(ctx)
		e.scheduled.Store(e.now().Add(wait).UnixNano())
		timer.Reset(wait)
	}
}

// nextWait returns how long to sleep until the next deadline or process
// check, at most one minute.
func (e *Engine) nextWait(ctx context.Context) time.Duration {
	now := e.now()
	next := now.Add(time.Minute)
	var deadline time.Time
	var hasProcs bool
	err := e.Store.View(ctx, func(tx Tx) error {
		var err error
		if deadline, err = tx.NextDeadline(); err != nil {
			return err
		}
		return tx.ProcessSessions(func(*Session) error { hasProcs = true; return errStop })
	})
	if err != nil && !errors.Is(err, errStop) {
		if ctx.Err() == nil {
			e.logger().Error("read next deadline", LogErr, err)
		}
		return time.Second
	}
	if !deadline.IsZero() && deadline.Before(next) {
		next = deadline
	}
	if m := e.Metrics; m != nil {
		if deadline.IsZero() {
			m.NextDeadline.Set(0)
		} else {
			m.NextDeadline.Set(float64(deadline.Unix()))
		}
	}
	if hasProcs {
		if p := e.lastProc.Add(e.processCheck()); p.Before(next) {
			next = p
		}
	}
	wait := next.Sub(now)
	if wait < 0 {
		wait = 0
	}
	return wait
}

var errStop = errors.New("stop")

func (e *Engine) shutdown() {
	done := make(chan struct{})
	go func() { e.closeWG.Wait(); close(done) }()
	grace := e.ShutdownGrace
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	select {
	case <-done:
	case <-time.After(grace):
		e.logger().Warn("canceling in-flight closes; they stay closing and resume at the next start", LogCount, e.inflightCount())
		e.cancelClose()
		<-done
	}
}

func (e *Engine) inflightCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.inflight)
}

// resume prepares the ledger after a start: closing entries whose close
// call was in flight when the previous process stopped are made due at
// once, and live sessions get a full lease from now, since no client could
// heartbeat while the daemon was down.
func (e *Engine) resume(ctx context.Context) error {
	now := e.now()
	if err := e.graceLeases(ctx, now); err != nil {
		return err
	}
	horizon := now.Add(e.attemptLease() + 10*time.Minute)
	var keys []string
	err := e.Store.View(ctx, func(tx Tx) error {
		items, err := tx.Due(horizon, 0)
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Kind != DueEntry {
				continue
			}
			ent, err := tx.Entry(it.Key)
			if err != nil {
				return err
			}
			if ent != nil && ent.State == StateClosing && ent.InFlight {
				keys = append(keys, it.Key)
			}
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return err
	}
	err = e.Store.Update(ctx, func(tx Tx) error {
		for _, k := range keys {
			ent, err := tx.Entry(k)
			if err != nil {
				return err
			}
			if ent == nil || ent.State != StateClosing || !ent.InFlight {
				continue
			}
			ent.InFlight = false
			ent.NextAttemptAt = now
			if err := tx.PutEntry(ent); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		e.logger().Info("resuming closes interrupted by the last stop", LogCount, len(keys))
	}
	return err
}

// safePass runs one pass, recovering and logging a panic so that the loop
// survives it.
func (e *Engine) safePass(ctx context.Context, full bool, req *sweepRequest) (reply sweepReply) {
	e.passMu.Lock()
	defer e.passMu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			if m := e.Metrics; m != nil {
				m.Panics.Inc()
			}
			e.logger().Error("engine pass panicked; continuing", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			reply = sweepReply{err: Errorf(EINTERNAL, "sweep failed: internal error (see the daemon's log)")}
		}
		if req != nil {
			req.reply <- reply
		}
	}()
	rctx := ctx
	if req != nil {
		rctx = req.ctx
	}
	reply.report, reply.jobs, reply.err = e.pass(rctx, full)
	return reply
}

// closeJob is one provider close call.
type closeJob struct {
	entry *Entry // as committed when the attempt started
	done  chan SweepItem
}

// pass selects due items, commits their transitions and dispatches close
// calls. A full pass also prunes and, if enabled, discovers.
func (e *Engine) pass(ctx context.Context, full bool) (*SweepReport, []*closeJob, error) {
	start := time.Now()
	now := e.now()
	kind := "deadline"
	if full {
		kind = "full"
	}
	if m := e.Metrics; m != nil {
		m.Passes.WithLabelValues(kind).Inc()
		defer func() { m.PassDuration.Observe(time.Since(start).Seconds()) }()
	}
	report := &SweepReport{Time: now}

	if full || !now.Before(e.lastProc.Add(e.processCheck())) {
		if err := e.checkProcesses(ctx, now); err != nil {
			e.logger().Error("check session processes", LogErr, err)
		}
		e.lastProc = now
	}

	// Most wake-ups find nothing due: check on a read transaction first,
	// so they cost no write and no fsync.
	var anyDue bool
	if err := e.Store.View(ctx, func(tx Tx) error {
		due, err := tx.Due(now, 1)
		anyDue = len(due) > 0
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("read due entries: %w", err)
	}
	var jobs []*Entry
	var items []SweepItem
	transition := func(tx Tx) error {
		jobs, items = jobs[:0], items[:0]
		due, err := tx.Due(now, e.passLimit())
		if err != nil {
			return err
		}
		seen := make(map[string]bool, len(due))
		visit := func(ent *Entry, s *Session) error {
			if seen[ent.Key()] {
				return nil
			}
			seen[ent.Key()] = true
			item, job, err := e.apply(tx, ent, s, now)
			if err != nil {
				return err
			}
			if item.Action != "" {
				items = append(items, item)
			}
			if job != nil {
				jobs = append(jobs, job)
			}
			return nil
		}
		for _, it := range due {
			switch it.Kind {
			case DueSession:
				if err := e.settleSession(tx, it.Key, now, visit); err != nil {
					return err
				}
			case DueEntry:
				ent, err := tx.Entry(it.Key)
				if err != nil {
					return err
				}
				if ent == nil {
					continue
				}
				s, err := sessionOf(tx, ent)
				if err != nil {
					return err
				}
				if err := visit(ent, s); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var err error
	if anyDue {
		err = e.Store.Update(ctx, transition)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("commit due transitions: %w", err)
	}
	report.Items = items
	closeJobs := e.dispatch(jobs)

	if full {
		if r := e.retention(); r > 0 {
			st, err := e.Prune(ctx, now.Add(-r))
			if err != nil {
				e.logger().Error("prune ledger", LogErr, err)
			}
			report.Pruned = st
		}
		if e.DiscoverOnSweep {
			report.Untracked, report.DiscoveryErrors = e.discover(ctx, now)
		}
	}
	return report, closeJobs, nil
}

func sessionOf(tx Tx, ent *Entry) (*Session, error) {
	if ent.Session == "" {
		return nil, nil
	}
	return tx.Session(ent.Session)
}

// settleSession handles a session whose deadline passed: a lapsed lease
// ends it; an ended session has the policy applied to each of its entries
// and is then settled.
func (e *Engine) settleSession(tx Tx, id string, now time.Time, visit func(*Entry, *Session) error) error {
	s, err := tx.Session(id)
	if err != nil || s == nil {
		return err
	}
	if !s.Ended() {
		end := s.LeaseEnd()
		if end.IsZero() || now.Before(end) {
			return tx.PutSession(s) // stale index key: re-index
		}
		s.EndedAt, s.EndReason = now, ReasonOrphanedLease
		if err := tx.Append(AuditEvent{Time: now, Kind: EventSessionEnded, Session: id, Reason: ReasonOrphanedLease,
			Detail: "no heartbeat since " + s.LastHeartbeat.Format(time.RFC3339)}); err != nil {
			return err
		}
		if m := e.Metrics; m != nil {
			m.LeaseLapses.Inc()
		}
		e.logger().Warn("session lease lapsed", LogSession, id, "last_heartbeat", s.LastHeartbeat)
	}
	ents, err := activeEntries(tx, id)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if err := visit(ent, s); err != nil {
			return err
		}
	}
	s.Settled = true
	return tx.PutSession(s)
}

// activeEntries returns the session's entries that are still active.
func activeEntries(tx Tx, session string) ([]*Entry, error) {
	keys, err := tx.SessionEntries(session)
	if err != nil {
		return nil, err
	}
	var out []*Entry
	for _, k := range keys {
		ent, err := tx.Entry(k)
		if err != nil {
			return nil, err
		}
		if ent != nil && ent.State == StateActive {
			out = append(out, ent)
		}
	}
	return out, nil
}

// apply runs the policy on one entry inside tx and records the result. It
// returns a report item (empty when nothing happened) and, when a close call
// is to be made, the entry as committed for the attempt.
func (e *Engine) apply(tx Tx, ent *Entry, s *Session, now time.Time) (SweepItem, *Entry, error) {
	key := ent.Key()
	item := SweepItem{Key: key, Session: ent.Session}
	switch ent.State {
	case StateClosing:
		if e.isInflight(key) {
			// Still queued or running (a long queue behind the
			// per-provider limit can outlast the attempt lease): extend
			// the lease, so that the entry is not due again meanwhile.
			ent.NextAttemptAt = now.Add(e.attemptLease())
			return SweepItem{}, nil, tx.PutEntry(ent)
		}
		item.Action, item.Reason = "retry", ent.CloseReason
		job, err := e.startAttempt(tx, ent, now)
		return item, job, err
	case StateActive:
	default:
		return SweepItem{}, nil, nil
	}
	d := Decide(ent, s, now)
	switch d.Action {
	case ActionClose:
		ent.State, ent.CloseReason, ent.ClosingSince = StateClosing, d.Reason, now
		ent.NextAttemptAt = time.Time{}
		if err := tx.Append(AuditEvent{Time: now, Kind: EventCloseStarted, Key: key, Session: ent.Session, Reason: d.Reason}); err != nil {
			return item, nil, err
		}
		item.Action, item.Reason = "close", d.Reason
		job, err := e.startAttempt(tx, ent, now)
		return item, job, err
	case ActionRelease:
		ent.State, ent.CloseReason, ent.ClosedAt = StateReleased, d.Reason, now
		if err := tx.PutEntry(ent); err != nil {
			return item, nil, err
		}
		if m := e.Metrics; m != nil {
			m.Released.Inc()
		}
		item.Action, item.Reason, item.Result = "release", d.Reason, string(StateReleased)
		return item, nil, tx.Append(AuditEvent{Time: now, Kind: EventReleased, Key: key, Session: ent.Session, Reason: d.Reason,
			Detail: "attached sandbox left running"})
	case ActionSkip:
		// Only worth a record when the entry would otherwise be due.
		probe := ent.Clone()
		probe.Keep, probe.Attached = false, false
		if dd := Decide(probe, s, now); dd.Action != ActionClose {
			return SweepItem{}, nil, nil
		} else {
			item.Action, item.Reason, item.Detail = "skip", d.Reason, "would be closed: "+string(dd.Reason)
		}
		return item, nil, tx.Append(AuditEvent{Time: now, Kind: EventSkipped, Key: key, Session: ent.Session, Reason: d.Reason,
			Detail: item.Detail})
	}
	return SweepItem{}, nil, nil
}

// startAttempt marks a closing entry as having a close call in flight, or,
// when its provider is not enabled, records why it cannot be closed.
func (e *Engine) startAttempt(tx Tx, ent *Entry, now time.Time) (*Entry, error) {
	if p, _ := e.provider(ent.Provider); p == nil {
		ent.InFlight = false
		ent.LastError = fmt.Sprintf("provider %s is not enabled on this daemon; %s", ent.Provider, e.enableHint(ent.Provider))
		ent.ErrorClass = "provider_disabled"
		ent.NextAttemptAt = now.Add(e.maxBackoff())
		return nil, tx.PutEntry(ent)
	}
	ent.Attempts++
	ent.InFlight = true
	ent.NextAttemptAt = now.Add(e.attemptLease())
	if err := tx.PutEntry(ent); err != nil {
		return nil, err
	}
	return ent.Clone(), nil
}

func (e *Engine) enableHint(provider string) string {
	e.pmu.RLock()
	h, ok := e.provs.disabled[provider]
	e.pmu.RUnlock()
	if ok && h != "" {
		return h
	}
	return "configure its credentials and restart reaperd"
}

func (e *Engine) isInflight(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.inflight[key]
	return ok
}

// dispatch starts the close calls for committed attempts.
func (e *Engine) dispatch(entries []*Entry) []*closeJob {
	jobs := make([]*closeJob, 0, len(entries))
	for _, ent := range entries {
		key := ent.Key()
		e.mu.Lock()
		if _, dup := e.inflight[key]; dup {
			e.mu.Unlock()
			continue
		}
		e.inflight[key] = struct{}{}
		sem := e.sems[ent.Provider]
		if sem == nil {
			sem = make(chan struct{}, e.concurrency())
			e.sems[ent.Provider] = sem
		}
		e.mu.Unlock()
		job := &closeJob{entry: ent, done: make(chan SweepItem, 1)}
		jobs = append(jobs, job)
		if m := e.Metrics; m != nil {
			m.InFlight.Inc()
		}
		e.closeWG.Add(1)
		go func() {
			defer e.closeWG.Done()
			item := e.runClose(job, sem)
			e.mu.Lock()
			delete(e.inflight, key)
			e.mu.Unlock()
			if m := e.Metrics; m != nil {
				m.InFlight.Dec()
			}
			job.done <- item
			e.wakeBy(item.retryAt)
		}()
	}
	return jobs
}

// runClose makes one provider close call and records its outcome.
func (e *Engine) runClose(job *closeJob, sem chan struct{}) SweepItem {
	ent := job.entry
	p, limiter := e.provider(ent.Provider)
	ctx := e.closeCtx
	if p == nil {
		return e.finish(ent, &ProviderError{Provider: ent.Provider, Op: "close", ID: ent.ID, Kind: ErrTransient,
			Err: errors.New("provider was disabled by a reload")}, 0)
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return e.finish(ent, ctx.Err(), 0)
	}
	defer func() { <-sem }()
	if limiter != nil {
		if err := limiter.Wait(ctx); err != nil {
			return e.finish(ent, err, 0)
		}
	}
	cctx, cancel := context.WithTimeout(WithCloseAttempt(ctx, ent.Attempts), e.closeTimeout())
	defer cancel()
	start := time.Now()
	err := safeClose(cctx, p, ent.ID)
	return e.finish(ent, err, time.Since(start))
}

func safeClose(ctx context.Context, p Provider, id string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &ProviderError{Provider: p.Name(), Op: "close", ID: id, Kind: ErrTransient,
				Err: fmt.Errorf("provider panicked: %v", r)}
		}
	}()
	return p.Close(ctx, id)
}

// finish records the outcome of a close attempt: closed when the provider
// confirmed (err == nil), otherwise still closing with a retry time.
func (e *Engine) finish(att *Entry, callErr error, took time.Duration) SweepItem {
	key := att.Key()
	log := e.logger().With(LogKey, key, LogAttempt, att.Attempts)
	class := ErrorClass(callErr)
	if m := e.Metrics; m != nil {
		result := "ok"
		if callErr != nil {
			result = class
			if class == "" {
				result = "transient"
			}
		}
		m.CloseAttempts.WithLabelValues(att.Provider, result).Inc()
		if took > 0 {
			m.CloseDuration.WithLabelValues(att.Provider).Observe(took.Seconds())
		}
	}
	item := SweepItem{Key: key, Session: att.Session, Reason: att.CloseReason, Action: "close"}
	var retryIn time.Duration
	var retryAt time.Time
	var stale bool
	// The outcome must be recorded even while shutting down.
	err := e.Store.Update(context.Background(), func(tx Tx) error {
		stale = false
		now := e.now()
		ent, err := tx.Entry(key)
		if err != nil {
			return err
		}
		if ent == nil || ent.State != StateClosing || !ent.InFlight || ent.Attempts != att.Attempts {
			stale = true // released or otherwise moved on meanwhile
			return nil
		}
		ent.InFlight = false
		if callErr == nil {
			ent.State, ent.ClosedAt, ent.NextAttemptAt = StateClosed, now, time.Time{}
			ent.LastError, ent.ErrorClass = "", ""
			if err := tx.PutEntry(ent); err != nil {
				return err
			}
			return tx.Append(AuditEvent{Time: now, Kind: EventClosed, Key: key, Session: ent.Session, Reason: ent.CloseReason,
				Detail: fmt.Sprintf("attempt %d", ent.Attempts)})
		}
		retryIn = e.backoff(ent.Attempts, callErr)
		if errors.Is(callErr, context.Canceled) && e.closeCtx.Err() != nil {
			retryIn = 0 // interrupted by shutdown: resume at the next start
		}
		ent.LastError, ent.ErrorClass = callErr.Error(), class
		ent.NextAttemptAt = now.Add(retryIn)
		retryAt = ent.NextAttemptAt
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		return tx.Append(AuditEvent{Time: now, Kind: EventCloseFailed, Key: key, Session: ent.Session, Reason: ent.CloseReason,
			ErrorClass: class, Error: callErr.Error(), Detail: fmt.Sprintf("attempt %d; retry in %s", ent.Attempts, retryIn)})
	})
	item.retryAt = retryAt
	switch {
	case err != nil:
		log.Error("record close outcome; the entry stays closing and is retried", LogErr, err, "close_err", callErr)
		item.Result, item.Error = string(StateClosing), err.Error()
		item.retryAt = e.now()
	case stale:
		log.Info("close outcome ignored: the entry changed meanwhile", LogErr, callErr)
		item.Result = "ignored"
	case callErr == nil:
		log.Info("sandbox closed", LogReason, att.CloseReason, LogDuration, took)
		if m := e.Metrics; m != nil {
			m.Closed.WithLabelValues(att.Provider, string(att.CloseReason)).Inc()
		}
		item.Result = string(StateClosed)
	default:
		lvl := slog.LevelWarn
		if class == "unauthorized" {
			lvl = slog.LevelError
		}
		log.Log(context.Background(), lvl, "close failed; will retry", LogClass, class, LogErr, callErr, LogRetryIn, retryIn)
		item.Result, item.Error = string(StateClosing), callErr.Error()
	}
	return item
}

func (e *Engine) minBackoff() time.Duration {
	if e.MinBackoff > 0 {
		return e.MinBackoff
	}
	return DefaultMinBackoff
}

func (e *Engine) maxBackoff() time.Duration {
	if e.MaxBackoff > 0 {
		return e.MaxBackoff
	}
	return DefaultMaxBackoff
}

// backoff returns the delay before the next close attempt after a failed
// attempt n (1-based): exponential from MinBackoff, capped at MaxBackoff,
// with equal jitter (half fixed, half random). A provider's retry delay is
// honoured when it is longer; unauthorized errors wait at least a minute.
func (e *Engine) backoff(n int, err error) time.Duration {
	return Backoff(n, e.minBackoff(), e.maxBackoff(), err, e.jitter())
}

func (e *Engine) jitter() float64 {
	if e.Jitter != nil {
		return e.Jitter()
	}
	return rand.Float64()
}

// Backoff is the retry delay after failed attempt n (1-based): min·2^(n-1)
// capped at max, with equal jitter (j in [0,1) picks within [d/2, d)). A
// retry delay carried by err is honoured when longer: the result is then
// that delay plus up to 10% jitter. An unauthorized error waits at least one
// minute, since an operator must act.
func Backoff(n int, min, max time.Duration, err error, j float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	d = d/2 + time.Duration(j*float64(d/2))
	if errors.Is(err, ErrUnauthorized) && d < time.Minute {
		d = time.Minute
	}
	if ra, ok := RetryAfter(err); ok && ra >= d {
		d = ra + time.Duration(j*float64(ra)/10)
	}
	return d
}

// checkProcesses ends live sessions whose process has exited.
func (e *Engine) checkProcesses(ctx context.Context, now time.Time) error {
	var dead []*Session
	err := e.Store.View(ctx, func(tx Tx) error {
		return tx.ProcessSessions(func(s *Session) error {
			if !e.processAlive(s.PID, s.PIDStart) {
				dead = append(dead, s)
			}
			return nil
		})
	})
	if err != nil || len(dead) == 0 {
		return err
	}
	return e.Store.Update(ctx, func(tx Tx) error {
		for _, d := range dead {
			s, err := tx.Session(d.ID)
			if err != nil {
				return err
			}
			if s == nil || s.Ended() || s.PID != d.PID || s.PIDStart != d.PIDStart {
				continue
			}
			s.EndedAt, s.EndReason = now, ReasonOrphanedProcess
			if err := tx.PutSession(s); err != nil {
				return err
			}
			if err := tx.Append(AuditEvent{Time: now, Kind: EventSessionEnded, Session: s.ID, Reason: ReasonOrphanedProcess,
				Detail: fmt.Sprintf("process %d exited", s.PID)}); err != nil {
				return err
			}
		}
		if m := e.Metrics; m != nil {
			m.ProcessExits.Add(float64(len(dead)))
		}
		return nil
	})
}

// Prune deletes entries, sessions and audit events that became final
// before the given time.
func (e *Engine) Prune(ctx context.Context, before time.Time) (PruneStats, error) {
	var total PruneStats
	for {
		var st PruneStats
		err := e.Store.Update(ctx, func(tx Tx) error {
			var err error
			st, err = tx.Prune(before, 5000)
			return err
		})
		if err != nil {
			return total, err
		}
		total.Entries += st.Entries
		total.Sessions += st.Sessions
		total.Events += st.Events
		if st.Entries+st.Sessions+st.Events < 5000 {
			break
		}
	}
	if n := total.Entries + total.Sessions + total.Events; n > 0 {
		if m := e.Metrics; m != nil {
			m.Pruned.Add(float64(n))
		}
		e.logger().Info("pruned ledger", "entries", total.Entries, "sessions", total.Sessions, "events", total.Events)
	}
	return total, nil
}

// discover lists every enabled provider's sandboxes and records those the
// ledger does not track. Sandboxes created after the sweep started are
// left for the next sweep, since their registration may be on its way.
func (e *Engine) discover(ctx context.Context, now time.Time) ([]Untracked, map[string]string) {
	e.pmu.RLock()
	provs := maps.Clone(e.provs.enabled)
	e.pmu.RUnlock()
	names := slices.Sorted(maps.Keys(provs))
	var out []Untracked
	errs := map[string]string{}
	for _, name := range names {
		lctx, cancel := context.WithTimeout(ctx, e.closeTimeout())
		sbs, err := provs[name].List(lctx, ListFilter{})
		cancel()
		if err != nil {
			errs[name] = err.Error()
			e.logger().Warn("discovery: list sandboxes", LogProvider, name, LogErr, err)
			continue
		}
		var found []Untracked
		err = e.Store.View(ctx, func(tx Tx) error {
			found = found[:0]
			for _, sb := range sbs {
				if !sb.CreatedAt.IsZero() && sb.CreatedAt.After(now) {
					continue
				}
				key := name + "/" + sb.ID
				ent, err := tx.Entry(key)
				if err != nil {
					return err
				}
				if ent == nil || ent.State == StateClosed {
					found = append(found, Untracked{Provider: name, Sandbox: sb})
				}
			}
			return nil
		})
		if err != nil {
			errs[name] = err.Error()
			continue
		}
		if m := e.Metrics; m != nil {
			m.Untracked.WithLabelValues(name).Set(float64(len(found)))
		}
		out = append(out, found...)
	}
	e.recordDiscovered(ctx, out, now)
	if len(errs) == 0 {
		errs = nil
	}
	return out, errs
}

func (e *Engine) recordDiscovered(ctx context.Context, found []Untracked, now time.Time) {
	var fresh []Untracked
	e.mu.Lock()
	for _, u := range found {
		k := u.Provider + "/" + u.Sandbox.ID
		if _, ok := e.seen[k]; !ok {
			e.seen[k] = struct{}{}
			fresh = append(fresh, u)
		}
	}
	e.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	err := e.Store.Update(ctx, func(tx Tx) error {
		for _, u := range fresh {
			detail := "state " + u.Sandbox.State
			if !u.Sandbox.CreatedAt.IsZero() {
				detail += ", created " + u.Sandbox.CreatedAt.UTC().Format(time.RFC3339)
			}
			if err := tx.Append(AuditEvent{Time: now, Kind: EventDiscovered, Key: u.Provider + "/" + u.Sandbox.ID, Detail: detail}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.logger().Error("record discovered sandboxes", LogErr, err)
	}
	e.logger().Warn("found sandboxes nobody registered", LogCount, len(fresh))
}

type providerSet struct {
	enabled  map[string]Provider
	disabled map[string]string
	limiters map[string]*rate.Limiter
}

// provider returns the enabled provider with the given name and its rate
// limiter, or nil.
func (e *Engine) provider(name string) (Provider, *rate.Limiter) {
	e.init()
	e.pmu.RLock()
	defer e.pmu.RUnlock()
	return e.provs.enabled[name], e.provs.limiters[name]
}

// SetProviders replaces the enabled and disabled providers and their rate
// limiters, for a configuration reload. Close calls already in flight
// finish with the provider they started with.
func (e *Engine) SetProviders(enabled map[string]Provider, disabled map[string]string, limiters map[string]*rate.Limiter) {
	e.init()
	e.pmu.Lock()
	defer e.pmu.Unlock()
	e.provs = providerSet{enabled: enabled, disabled: disabled, limiters: limiters}
	if m := e.Metrics; m != nil {
		m.ProviderActive.Reset()
		for name := range enabled {
			m.ProviderActive.WithLabelValues(name).Set(1)
		}
		for name := range disabled {
			m.ProviderActive.WithLabelValues(name).Set(0)
		}
	}
}

// EnabledProviders returns the names of the enabled providers, sorted.
func (e *Engine) EnabledProviders() []string {
	e.init()
	e.pmu.RLock()
	defer e.pmu.RUnlock()
	return slices.Sorted(maps.Keys(e.provs.enabled))
}

// graceLeases restarts the lease of every live session whose last
// heartbeat predates this start, so that the daemon's own downtime never
// counts against a session. A session that truly died is still caught, one
// lease later (or at once by its pid, when it has one).
func (e *Engine) graceLeases(ctx context.Context, now time.Time) error {
	n := 0
	err := e.Store.Update(ctx, func(tx Tx) error {
		n = 0
		var stale []*Session
		if err := tx.Sessions(func(s *Session) error {
			if !s.Ended() && s.Lease > 0 && s.LastHeartbeat.Before(now) {
				stale = append(stale, s)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, s := range stale {
			s.LastHeartbeat = now
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		n = len(stale)
		return nil
	})
	if err == nil && n > 0 {
		e.logger().Info("restarted the leases of live sessions: the daemon's downtime does not count against them", LogCount, n)
	}
	return err
}
