package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// startWorkers starts workers for every queue that has fewer than its
// provider's concurrency (queues appear when a provider is first enabled).
func (e *Engine) startWorkers() {
	for _, q := range e.providers.allQueues() {
		want := e.providers.concurrency(q.name)
		if want <= 0 {
			want = e.concurrency()
		}
		q.mu.Lock()
		n := want - q.workers
		q.workers += max(0, n)
		q.mu.Unlock()
		for range n {
			e.workers.Add(1)
			go e.worker(q)
		}
		q.mu.Lock()
		start := !q.observing
		q.observing = true
		q.mu.Unlock()
		if start {
			e.workers.Add(1)
			go e.observer(q)
		}
	}
}

func (e *Engine) worker(q *closeQueue) {
	defer e.workers.Done()
	for {
		j := q.take(e.workCtx)
		if j == nil {
			return
		}
		q.finish(j, e.safeRunJob(q, j))
		e.queueMetrics(q)
	}
}

// safeRunJob runs a job, recovering a panic (a bug) so that the worker
// survives it; the close is then handed back to the ledger, to be retried.
func (e *Engine) safeRunJob(q *closeQueue, j *job) (item reaper.SweepItem) {
	defer func() {
		if p := recover(); p != nil {
			e.panicked("close worker", p)
			e.unclaim(j.key)
			item = reaper.SweepItem{Key: j.key, Action: "close", Result: string(reaper.StateClosing),
				Error: "internal error (see the daemon's log); the close is retried"}
		}
	}()
	return e.runJob(q, j)
}

// unclaim hands a close back to the ledger: due at its next attempt.
func (e *Engine) unclaim(key string) {
	err := e.update(context.Background(), func(tx reaper.Tx) error {
		ent, err := tx.Entry(key)
		if err != nil || ent == nil || !ent.InFlight {
			return err
		}
		ent.InFlight = false
		return tx.PutEntry(ent)
	})
	if err != nil {
		e.logger().Error("hand a close back to the ledger; it resumes at the next start", LogKey, key, LogErr, err)
	}
	e.Wake()
}

// panicked logs and counts a recovered panic.
func (e *Engine) panicked(where string, p any) {
	if m := e.Metrics; m != nil {
		m.Panics.Inc()
	}
	e.logger().Error(where+" panicked; continuing", LogPanic, fmt.Sprint(p), LogStack, string(debug.Stack()))
}

// safely runs fn, recovering a panic (a bug) so that the goroutine that
// calls it survives.
func (e *Engine) safely(where string, fn func()) {
	defer func() {
		if p := recover(); p != nil {
			e.panicked(where, p)
		}
	}()
	fn()
}

// queueMetrics exports a queue's length and pause.
func (e *Engine) queueMetrics(q *closeQueue) {
	m := e.Metrics
	if m == nil {
		return
	}
	st := q.status()
	m.QueueLength.WithLabelValues(q.name).Set(float64(st.Queued + st.Running))
	if st.PausedUntil.After(e.clock.Now()) {
		m.ProviderPaused.WithLabelValues(q.name).Set(float64(st.PausedUntil.Unix()))
	} else {
		m.ProviderPaused.WithLabelValues(q.name).Set(0)
	}
}

// runJob makes one close: it waits for the provider's turn, commits the
// attempt, calls the provider and records the outcome.
func (e *Engine) runJob(q *closeQueue, j *job) reaper.SweepItem {
	item := reaper.SweepItem{Key: j.key, Action: "close", Result: string(reaper.StateClosing)}
	if !e.waitTurn(q) {
		item.Error = "not attempted: the daemon is stopping; the close resumes at the next start"
		return item
	}
	p, release := e.providers.acquire(q.name)
	defer release()
	if p == nil {
		e.parkDisabled(j.key)
		item.Error = disabledError(q.name, e.providers.enableHint(q.name))
		return item
	}
	att, err := e.beginAttempt(j.key)
	if err != nil {
		item.Error = err.Error()
		return item
	}
	if att == nil {
		item.Result = "ignored"
		item.Detail = "the entry changed before the call (released, or no longer closing)"
		return item
	}
	item.Session, item.Reason = att.Session, att.CloseReason

	ctx, cancel := withTimeout(reaper.WithCloseAttempt(e.callCtx, att.Attempts), e.clock, e.closeTimeout())
	if m := e.Metrics; m != nil {
		m.InFlight.Inc()
	}
	start := time.Now()
	callErr := safeClose(ctx, p, att.ID)
	took := time.Since(start)
	cancel()
	if m := e.Metrics; m != nil {
		m.InFlight.Dec()
	}

	recovered := q.observe(callErr, e.now(), e.minBackoff(), e.maxBackoff())
	item = e.finish(q, att, callErr, took)
	if callErr != nil {
		e.wakeBy(q.probeAt()) // the loop probes a failing provider
	}
	if callErr == nil && (recovered || j.probe) {
		go e.recoverProvider(q.name, "a close succeeded")
	}
	return item
}

// waitTurn waits for the provider's Retry-After pause and its rate limit.
// It returns false when the engine stops meanwhile: no call was made, so
// nothing counts as an attempt.
func (e *Engine) waitTurn(q *closeQueue) bool {
	for {
		now := e.clock.Now()
		if until := q.pause(); now.Before(until) {
			if !e.sleepUntil(e.workCtx, until) {
				return false
			}
			continue
		}
		lim := e.providers.limiter(q.name)
		if lim == nil {
			return e.workCtx.Err() == nil
		}
		r := lim.ReserveN(now, 1)
		if !r.OK() {
			return e.workCtx.Err() == nil
		}
		if d := r.DelayFrom(now); d > 0 && !e.sleepUntil(e.workCtx, now.Add(d)) {
			r.CancelAt(e.clock.Now())
			return false
		}
		// A pause may have begun while this worker waited for its token.
		if now := e.clock.Now(); !now.Before(q.pause()) {
			return e.workCtx.Err() == nil
		}
	}
}

func safeClose(ctx context.Context, p reaper.Provider, id string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &reaper.ProviderError{Provider: p.Name(), Op: "close", ID: id, Kind: reaper.ErrTransient,
				Err: fmt.Errorf("provider panicked: %v", r)}
		}
	}()
	return p.Close(ctx, id)
}

// beginAttempt commits the attempt before the call: it re-reads the entry,
// which must still be closing and held by this daemon (a release while the
// close was queued cancels it), and counts the attempt. It returns the
// entry as committed, or nil when the close is no longer wanted. While the
// ledger cannot be written it retries, until the engine stops.
func (e *Engine) beginAttempt(key string) (*reaper.Entry, error) {
	var att *reaper.Entry
	err := e.retryLedger(e.workCtx, "count a close attempt", func() error {
		return e.update(e.workCtx, func(tx reaper.Tx) error {
			att = nil
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent == nil || ent.State != reaper.StateClosing || !ent.InFlight {
				return nil
			}
			ent.Attempts++
			// A pending not-found (NotFoundAt) stays: listings skip the
			// entry while its call is out, and the outcome keeps or
			// clears it.
			ent.LastAttemptAt = e.now()
			if err := tx.PutEntry(ent); err != nil {
				return err
			}
			att = ent
			return nil
		})
	})
	return att, err
}

// retryLedger runs op until it succeeds, fails for a reason other than the
// ledger being unwritable, or ctx ends, backing off in between.
func (e *Engine) retryLedger(ctx context.Context, what string, op func() error) error {
	for n := 1; ; n++ {
		err := op()
		if err == nil || reaper.ErrorCode(err) != reaper.EUNAVAILABLE {
			return err
		}
		wait := ledgerBackoff(n)
		if isPowerOfTwo(n) {
			e.logger().Error(what+": the ledger cannot be written; retrying", LogErr, err, LogRetryIn, wait)
		}
		if !e.sleepUntil(ctx, e.clock.Now().Add(wait)) {
			return err
		}
	}
}

func isPowerOfTwo(n int) bool { return n > 0 && n&(n-1) == 0 }

// parkDisabled records that a queued close cannot be made because its
// provider was disabled meanwhile; it is retried when the provider is
// enabled again.
func (e *Engine) parkDisabled(key string) {
	err := e.update(context.Background(), func(tx reaper.Tx) error {
		ent, err := tx.Entry(key)
		if err != nil || ent == nil || ent.State != reaper.StateClosing {
			return err
		}
		e.markDisabled(ent, e.now())
		return tx.PutEntry(ent)
	})
	if err != nil {
		e.logger().Error("record that a provider is disabled", LogKey, key, LogErr, err)
	}
}

func (e *Engine) markDisabled(ent *reaper.Entry, now time.Time) {
	ent.InFlight = false
	ent.LastError = disabledError(ent.Provider, e.providers.enableHint(ent.Provider))
	ent.ErrorClass = "provider_disabled"
	ent.NextAttemptAt = now.Add(e.maxBackoff())
}

// finish records the outcome of a close call: closed when the provider
// confirmed (callErr nil), otherwise still closing with its next attempt.
// The outcome is retried while the ledger cannot be written, until the
// calls in flight are canceled at shutdown; an outcome that cannot be
// recorded leaves the entry closing and InFlight, which the next start
// resumes.
func (e *Engine) finish(q *closeQueue, att *reaper.Entry, callErr error, took time.Duration) reaper.SweepItem {
	key := att.Key()
	log := e.logger().With(LogKey, key, LogAttempt, att.Attempts)
	class := reaper.ErrorClass(callErr)
	shuttingDown := errors.Is(callErr, context.Canceled) && e.callCtx.Err() != nil
	if m := e.Metrics; m != nil {
		result := "ok"
		if callErr != nil {
			result = class
		}
		m.CloseAttempts.WithLabelValues(att.Provider, result).Inc()
		m.CloseDuration.WithLabelValues(att.Provider).Observe(took.Seconds())
	}
	item := reaper.SweepItem{Key: key, Session: att.Session, Reason: att.CloseReason, Action: "close"}
	var retryIn time.Duration
	var retryAt time.Time
	var stale, notFound, accepted, stuck bool
	err := e.retryLedger(e.callCtx, "record a close outcome", func() error {
		return e.update(context.Background(), func(tx reaper.Tx) error {
			stale, retryAt, notFound, accepted, stuck = false, time.Time{}, false, false, false
			now := e.now()
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent == nil || ent.State != reaper.StateClosing || !ent.InFlight || ent.Attempts != att.Attempts {
				stale = true // released or otherwise moved on meanwhile
				return nil
			}
			ent.InFlight = false
			if errors.Is(callErr, reaper.ErrNotFound) {
				// A claim, not proof: the listing decides (observe.go).
				// Meanwhile the close waits out its backoff, and is
				// retried if no listing decides first.
				// A repeated not-found keeps the first one's time, so
				// that listings taken since it still count.
				retryIn = max(Backoff(ent.Attempts, e.minBackoff(), e.maxBackoff(), callErr, e.jitter()), min(confirmWait, e.maxBackoff()))
				if ent.NotFoundAt.IsZero() {
					ent.NotFoundAt = now
				}
				ent.NextAttemptAt = now.Add(retryIn)
				ent.LastError, ent.ErrorClass = callErr.Error()+"; confirming with the provider's listing", class
				retryAt, notFound = ent.NextAttemptAt, true
				if err := tx.PutEntry(ent); err != nil {
					return err
				}
				return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventCloseFailed, Key: key, Session: ent.Session,
					Reason: ent.CloseReason, ErrorClass: class, Error: callErr.Error(),
					Detail: fmt.Sprintf("attempt %d answered not found; confirming with the provider's listing", ent.Attempts)})
			}
			// Any other answer ends a pending not-found: a conflict says
			// the sandbox exists, and the others say nothing either way.
			ent.NotFoundAt = time.Time{}
			if errors.Is(callErr, reaper.ErrAccepted) {
				// The provider destroys the sandbox in its own time: the
				// listing confirms it, and the close waits out a longer
				// backoff rather than hold a worker while the provider
				// works. The first acceptance's time is kept, so that
				// listings taken since it still count.
				retryIn = max(Backoff(ent.Attempts, e.minBackoff(), e.maxBackoff(), callErr, e.jitter()), min(acceptedWait, e.maxBackoff()))
				if ent.AcceptedAt.IsZero() {
					ent.AcceptedAt = now
				}
				ent.NextAttemptAt = now.Add(retryIn)
				ent.LastError, ent.ErrorClass = callErr.Error()+"; confirming with the provider's listing", class
				retryAt, accepted = ent.NextAttemptAt, true
				if err := tx.PutEntry(ent); err != nil {
					return err
				}
				return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventCloseAccepted, Key: key, Session: ent.Session,
					Reason: ent.CloseReason, ErrorClass: class,
					Detail: fmt.Sprintf("attempt %d: the provider accepted the delete and destroys the sandbox; confirming with its listing", ent.Attempts)})
			}
			if callErr == nil {
				ent.State, ent.ClosedAt, ent.NextAttemptAt, ent.AcceptedAt = reaper.StateClosed, now, time.Time{}, time.Time{}
				ent.LastError, ent.ErrorClass = "", ""
				if err := tx.PutEntry(ent); err != nil {
					return err
				}
				return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventClosed, Key: key, Session: ent.Session,
					Reason: ent.CloseReason, Detail: fmt.Sprintf("attempt %d", ent.Attempts)})
			}
			if errors.Is(callErr, reaper.ErrInvalid) {
				// Permanent: no retry can change it. The entry is
				// shown stuck, for an operator.
				ent.Stuck, ent.NextAttemptAt = true, time.Time{}
				ent.LastError, ent.ErrorClass = callErr.Error(), class
				stuck = true
				if err := tx.PutEntry(ent); err != nil {
					return err
				}
				return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventCloseFailed, Key: key, Session: ent.Session,
					Reason: ent.CloseReason, ErrorClass: class, Error: callErr.Error(), Stuck: true,
					Detail: fmt.Sprintf("attempt %d refused for good: no more attempts; release the entry once the sandbox is dealt with", ent.Attempts)})
			}
			retryIn = Backoff(ent.Attempts, e.minBackoff(), e.maxBackoff(), callErr, e.jitter())
			if errors.Is(callErr, reaper.ErrUnauthorized) {
				// Only an operator fixes credentials: the close waits
				// for the provider, whose probe (each minute) retries
				// every parked close once it answers.
				retryIn = e.maxBackoff()
			}
			if until := q.pause(); until.After(now.Add(retryIn)) {
				retryIn = until.Sub(now)
			}
			if shuttingDown {
				retryIn = 0 // interrupted by the stop: resume at the next start
			}
			ent.LastError, ent.ErrorClass = callErr.Error(), class
			ent.NextAttemptAt = now.Add(retryIn)
			retryAt = ent.NextAttemptAt
			if err := tx.PutEntry(ent); err != nil {
				return err
			}
			return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventCloseFailed, Key: key, Session: ent.Session,
				Reason: ent.CloseReason, ErrorClass: class, Error: callErr.Error(),
				Detail: fmt.Sprintf("attempt %d; retry in %s", ent.Attempts, retryIn)})
		})
	})
	switch {
	case err != nil:
		log.Error("could not record the close outcome; the entry stays closing and resumes at the next start",
			LogErr, err, "close_err", callErr)
		item.Result, item.Error = string(reaper.StateClosing), err.Error()
	case stale:
		log.Info("close outcome ignored: the entry changed meanwhile", LogErr, callErr)
		item.Result = "ignored"
	case stuck:
		log.Error("the provider refused the close for good; no more attempts: release the entry once the sandbox is dealt with",
			LogClass, class, LogErr, callErr)
		item.Result, item.Error = string(reaper.StateClosing), callErr.Error()
	case notFound:
		log.Info("the provider answered not found; confirming with its listing", LogRetryIn, retryIn)
		item.Result, item.Error = string(reaper.StateClosing), callErr.Error()
		e.wantListing(att.Provider, e.clock.Now().Add(confirmDelay), confirmDelay)
		e.wakeBy(retryAt)
	case accepted:
		log.Info("the provider accepted the delete; confirming with its listing", LogDuration, took, LogRetryIn, retryIn)
		item.Result, item.Error = string(reaper.StateClosing), callErr.Error()
		e.wantListing(att.Provider, e.clock.Now().Add(acceptedDelay), acceptedDelay)
		e.wakeBy(retryAt)
	case callErr == nil:
		log.Info("sandbox closed", LogReason, att.CloseReason, LogDuration, took)
		if m := e.Metrics; m != nil {
			m.Closed.WithLabelValues(att.Provider, string(att.CloseReason)).Inc()
		}
		item.Result = string(reaper.StateClosed)
	default:
		lvl := slog.LevelWarn
		if class == "unauthorized" {
			lvl = slog.LevelError
		}
		log.Log(context.Background(), lvl, "close failed; will retry", LogClass, class, LogErr, callErr, LogRetryIn, retryIn)
		item.Result, item.Error = string(reaper.StateClosing), callErr.Error()
		e.wakeBy(retryAt)
	}
	return item
}
