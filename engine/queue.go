package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// job is one close handed to a provider's queue. The entry it names is
// marked InFlight in the ledger for as long as the job exists, so that no
// pass selects it again.
type job struct {
	key      string // PROVIDER/ID
	provider string
	id       string // provider-side id
	// probe marks a close made early to find out whether a failing
	// provider answers again; its success makes the rest due at once.
	probe bool
	// waiters receive the outcome (sweeps wait for the closes they start).
	waiters []chan reaper.SweepItem
}

// closeQueue is one provider's close queue: first in, first out,
// de-duplicated by key, bounded by limit (queued plus running), drained by
// a fixed number of workers. It also holds what the engine knows of the
// provider's health: a pause it asked for, and whether its calls fail.
type closeQueue struct {
	name  string
	limit int
	ready chan struct{} // a token while jobs may be waiting

	mu      sync.Mutex
	pending []*job
	jobs    map[string]*job // queued or running, by key
	running int
	workers int
	// pausedUntil is when the provider's Retry-After ends.
	pausedUntil time.Time
	// failing is set after a call fails for a provider-wide reason, until
	// one succeeds; lastErr is that failure.
	failing bool
	lastErr string
	// probeWanted is set by a provider-wide failure and cleared by a
	// probe that finds nothing to probe; nextProbe is when the loop probes.
	probeWanted bool
	nextProbe   time.Time
	// unauthorized is set when the last failure refused the credentials:
	// only an operator fixes that, so probes come less often.
	unauthorized bool

	// listAt is when the provider's observer takes its next listing (zero:
	// none wanted); lastList is when it took the last one.
	listAt, lastList time.Time
	// absent holds, for sandboxes answered not found, the start of the
	// first listing that left them out (see Engine.absentBefore);
	// absentSwept is the start of the listing that last forgot the stale
	// ones.
	absent      map[string]time.Time
	absentSwept time.Time
	listSignal  chan struct{}
	observing   bool

	// credentials is the outcome of the last credential check (credOK,
	// credRefused, credDegraded; empty before one), credErr its error;
	// lastOK is the last call the provider answered well.
	credentials, credErr string
	lastOK               time.Time
}

func newCloseQueue(name string, limit int) *closeQueue {
	return &closeQueue{name: name, limit: limit, ready: make(chan struct{}, 1), jobs: map[string]*job{},
		listSignal: make(chan struct{}, 1)}
}

// free returns how many more jobs the queue takes.
func (q *closeQueue) free() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return max(0, q.limit-len(q.jobs))
}

// idle reports whether the queue has nothing queued or running.
func (q *closeQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs) == 0
}

// holds reports whether the key is queued or running here.
func (q *closeQueue) holds(key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.jobs[key]
	return ok
}

// push adds a job. A job for a key already queued or running is merged
// into it (its waiters get that job's outcome).
func (q *closeQueue) push(j *job) {
	q.mu.Lock()
	if cur, ok := q.jobs[j.key]; ok {
		cur.waiters = append(cur.waiters, j.waiters...)
		cur.probe = cur.probe || j.probe
		q.mu.Unlock()
		return
	}
	q.jobs[j.key] = j
	q.pending = append(q.pending, j)
	q.mu.Unlock()
	q.signal()
}

func (q *closeQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take returns the next job, waiting for one until ctx ends (then nil).
func (q *closeQueue) take(ctx context.Context) *job {
	for {
		q.mu.Lock()
		if len(q.pending) > 0 {
			j := q.pending[0]
			q.pending[0] = nil
			q.pending = q.pending[1:]
			q.running++
			more := len(q.pending) > 0
			q.mu.Unlock()
			if more {
				q.signal() // let another worker take the next one
			}
			return j
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil
		}
	}
}

// finish removes a taken job and hands its outcome to its waiters.
func (q *closeQueue) finish(j *job, item reaper.SweepItem) {
	q.mu.Lock()
	delete(q.jobs, j.key)
	q.running--
	waiters := j.waiters
	j.waiters = nil
	q.mu.Unlock()
	for _, w := range waiters {
		w <- item // buffered: one outcome per waiter
	}
}

// drop removes every job that no worker took, for a shutdown, and answers
// their waiters. Their entries stay InFlight in the ledger until the engine
// clears the flags.
func (q *closeQueue) drop(item func(*job) reaper.SweepItem) {
	q.mu.Lock()
	pending := q.pending
	q.pending = nil
	for _, j := range pending {
		delete(q.jobs, j.key)
	}
	q.mu.Unlock()
	for _, j := range pending {
		for _, w := range j.waiters {
			w <- item(j)
		}
	}
}

// pause returns the end of the provider's current pause (zero: none).
func (q *closeQueue) pause() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pausedUntil
}

// observe records the outcome of a call for the provider's health: a rate
// limit pauses the whole provider (capped at maxPause); a provider-wide
// failure marks it failing; a success clears that. It reports whether the
// provider recovered: it was failing and this call succeeded.
func (q *closeQueue) observe(err error, now time.Time, minPause, maxPause time.Duration) (recovered bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err == nil {
		recovered = q.failing
		q.failing, q.lastErr, q.lastOK = false, "", now
		return recovered
	}
	if providerWide(reaper.ErrorClass(err)) {
		q.unauthorized = errors.Is(err, reaper.ErrUnauthorized)
		if !q.probeWanted {
			q.nextProbe = now.Add(q.probeInterval())
		}
		q.failing, q.lastErr, q.probeWanted = true, err.Error(), true
	}
	if errors.Is(err, reaper.ErrRateLimited) {
		d, ok := reaper.RetryAfter(err)
		if !ok {
			d = minPause
		}
		if until := now.Add(min(d, maxPause)); until.After(q.pausedUntil) {
			q.pausedUntil = until
		}
	}
	return false
}

// probeInterval is how often a failing provider is probed: probeEvery, or
// every minute while its credentials are refused (only an operator fixes
// that). Callers hold q.mu.
func (q *closeQueue) probeInterval() time.Duration {
	if q.unauthorized {
		return max(probeEvery, time.Minute)
	}
	return probeEvery
}

// probeAt returns when the loop should next probe the provider (zero: no
// probe is wanted).
func (q *closeQueue) probeAt() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.probeWanted {
		return time.Time{}
	}
	return q.nextProbe
}

// probed records a probe at now; found says whether there was a close to
// probe with (without one, none is wanted until the next failure).
func (q *closeQueue) probed(now time.Time, found bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextProbe = now.Add(q.probeInterval())
	if !found {
		q.probeWanted = false
	}
}

// postponeProbe moves a wanted probe to at.
func (q *closeQueue) postponeProbe(at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextProbe = at
}

func (q *closeQueue) status() reaper.ProviderStatus {
	q.mu.Lock()
	defer q.mu.Unlock()
	return reaper.ProviderStatus{Queued: len(q.pending), Running: q.running, PausedUntil: q.pausedUntil, LastError: q.lastErr}
}

// providerWide reports whether an error class says something about the
// provider as a whole (it is down, slow, throttling, or refuses the
// credentials) rather than about one sandbox.
func providerWide(class string) bool {
	switch class {
	case "transient", "timeout", "rate_limited", "unauthorized", "provider_disabled":
		return true
	}
	return false
}
