package engine

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/reaper"
)

// ErrRan is returned by Run when the engine has run before: an Engine
// runs once; make a new one to run again.
var ErrRan = errors.New("run engine: this engine has already run; create a new one")

// Run prepares the ledger (start-up), then serves deadlines and sweeps
// until ctx ends. On return the close calls that were in flight have
// finished or been canceled (after ShutdownGrace), their outcome is in the
// ledger, no entry is left marked InFlight, and replaced providers are shut
// down.
//
// While the ledger cannot be written (a full disk), Run keeps retrying with
// backoff and recovers in place when it can write again.
func (e *Engine) Run(ctx context.Context) error {
	e.init()
	if !e.state.CompareAndSwap(stateNew, stateRunning) {
		return ErrRan
	}
	defer func() {
		e.state.Store(stateStopped)
		e.scheduled.Store(0)
		close(e.stopped)
	}()
	defer closeOnce(e.loopDone)
	if !e.startup(ctx) {
		e.stopWork()
		e.stopCalls()
		return nil
	}
	e.updateProviderMetrics()
	e.startWorkers()
	// One listing per provider soon after the start: it verifies what was
	// registered while no daemon ran and decides pending not-founds.
	for _, name := range e.providers.enabledNames() {
		e.wantListing(name, e.clock.Now().Add(verifyDelay), 0)
	}
	// The timers exist before Started returns, so that a clock moved right
	// after it is seen by every goroutine.
	procTimer, aliveTicker := e.clock.NewTimer(0), e.clock.NewTicker(e.aliveInterval())
	e.background.Add(4)
	go e.watchProcesses(procTimer)
	go e.stampAlive(aliveTicker)
	go e.recheckLoop()
	go func() {
		defer e.background.Done()
		e.checkCredentials(e.providers.enabledNames())
	}()
	loopTimer := e.clock.NewTimer(0)
	close(e.started)
	e.loop(ctx, loopTimer)
	closeOnce(e.loopDone) // sweeps asked for from now on are refused at once
	e.shutdown()
	return nil
}

// Started returns a channel that is closed once Run has prepared the
// ledger and serves deadlines. (While the ledger cannot be written at
// start, that waits.)
func (e *Engine) Started() <-chan struct{} {
	e.init()
	return e.started
}

// Stopped returns a channel that is closed when Run returns.
func (e *Engine) Stopped() <-chan struct{} {
	e.init()
	return e.stopped
}

// Wake makes a running engine look at the ledger at once. Service methods
// call it whenever a deadline may have moved earlier.
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

type sweepRequest struct {
	reply chan sweepReply
}

type sweepReply struct {
	res *passResult
	err error
}

// loop sleeps until the earliest deadline, a wake-up or a sweep request,
// and runs a pass. All passes run on this goroutine, so they never
// overlap. A pass that fails (the ledger cannot be written, say) is retried
// after a backoff that doubles up to 30 s, and its cause is logged once
// per step: never a busy loop.
func (e *Engine) loop(ctx context.Context, timer clockwork.Timer) {
	defer timer.Stop()
	failures, idle := 0, 0
	first := true
	for {
		var req *sweepRequest
		select {
		case <-ctx.Done():
			return
		case <-timer.Chan():
		case <-e.wake:
		case req = <-e.requests:
		}
		// Unknown while the pass reads the next deadline, so that a
		// deadline committed meanwhile always wakes the loop (wakeBy).
		e.scheduled.Store(0)
		// The first pass after a start probes every provider: this process
		// knows nothing yet of their health, and closes may wait out a
		// backoff from before the stop.
		res, err := e.safePass(ctx, req != nil || first, req != nil)
		first = first && err != nil
		if req != nil {
			req.reply <- sweepReply{res: res, err: err}
		}
		now := e.clock.Now()
		var wait time.Duration
		if err != nil {
			failures++
			wait = ledgerBackoff(failures)
			e.passFailed(err, failures, wait)
		} else {
			if failures > 0 {
				e.logger().Info("engine passes work again", "failed_passes", failures)
				e.setPassErr(nil)
			}
			failures = 0
			wait, idle = e.nextWait(res, now, idle)
		}
		resetAt(e.clock, timer, now.Add(wait))
		e.scheduled.Store(now.Add(wait).UnixNano())
	}
}

// nextWait returns how long to sleep after a pass: until the next deadline,
// at most maxIdle; at once when the pass stopped at its limit. idle counts
// consecutive passes that did nothing and left a deadline due: a bug the
// loop must survive without spinning.
func (e *Engine) nextWait(res *passResult, now time.Time, idle int) (time.Duration, int) {
	if m := e.Metrics; m != nil {
		if res.next.IsZero() {
			m.NextDeadline.Set(0)
		} else {
			m.NextDeadline.Set(float64(res.next.Unix()))
		}
	}
	progress := len(res.items)+len(res.jobs)+len(res.lapsed) > 0
	switch {
	case res.more && progress:
		return 0, 0
	}
	wait := maxIdle
	if !res.next.IsZero() {
		wait = min(res.next.Sub(now), maxIdle)
	}
	for _, q := range e.providers.allQueues() {
		if at := q.probeAt(); !at.IsZero() {
			wait = min(wait, max(at.Sub(now), time.Millisecond))
		}
	}
	if wait > 0 {
		return wait, 0
	}
	if res.stuck != "" || !progress {
		idle++
		if idle >= 3 {
			if idle == 3 {
				e.logger().Error("due deadlines make no progress; this is a bug, please report it: waiting instead of spinning",
					LogKey, res.stuck)
			}
			return stuckWait, idle
		}
		return 0, idle
	}
	return 0, 0
}

func (e *Engine) passFailed(err error, n int, wait time.Duration) {
	e.setPassErr(err)
	if m := e.Metrics; m != nil {
		m.PassErrors.Inc()
	}
	// The backoff doubles at each failure until it reaches its cap: log
	// at each step, then once per failureLogEvery.
	now := e.clock.Now()
	e.mu.Lock()
	log := n == 1 || wait < ledgerRetryMax || now.Sub(e.lastPassLog) >= failureLogEvery
	if log {
		e.lastPassLog = now
	}
	e.mu.Unlock()
	if log {
		e.logger().Error("engine pass failed; nothing is reaped until it succeeds", LogErr, err, LogRetryIn, wait,
			"failed_passes", n)
	}
}

func (e *Engine) setPassErr(err error) {
	e.mu.Lock()
	e.lastPassErr = err
	e.mu.Unlock()
}

// safePass runs one pass, recovering a panic so that the loop survives it.
func (e *Engine) safePass(ctx context.Context, full, sweep bool) (res *passResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			e.panicked("engine pass", p)
			res, err = nil, reaper.Errorf(reaper.EINTERNAL, "sweep failed: internal error (see the daemon's log)")
		}
	}()
	return e.pass(ctx, full, sweep)
}

// shutdown stops the workers, letting calls in flight finish within
// ShutdownGrace before canceling them, then clears the InFlight flags of
// the closes that never started and stamps the ledger with a clean stop.
func (e *Engine) shutdown() {
	e.stopWork()
	for _, q := range e.providers.allQueues() {
		q.drop(func(j *job) reaper.SweepItem {
			return reaper.SweepItem{Key: j.key, Action: "close", Result: string(reaper.StateClosing),
				Error: "not attempted: the daemon is stopping; the close resumes at the next start"}
		})
	}
	done := make(chan struct{})
	go func() { e.workers.Wait(); close(done) }()
	t := e.clock.NewTimer(time.Hour)
	resetAt(e.clock, t, e.clock.Now().Add(e.shutdownGrace()))
	select {
	case <-done:
	case <-t.Chan():
		n := 0
		for _, q := range e.providers.allQueues() {
			n += q.status().Running
		}
		e.logger().Warn("canceling in-flight closes; they stay closing and resume at the next start", LogCount, n)
		e.stopCalls()
		<-done
	}
	t.Stop()
	e.stopCalls()
	e.background.Wait()
	cleared := 0
	err := e.update(context.Background(), func(tx reaper.Tx) error {
		cleared = 0
		n, err := releaseInFlight(tx)
		if err != nil {
			return err
		}
		cleared = n
		return tx.SetAlive(reaper.AliveStamp{At: e.now(), Clean: true})
	})
	if err != nil {
		e.logger().Error("record the stop in the ledger; the next start treats it as a crash", LogErr, err)
	} else if cleared > 0 {
		e.logger().Info("closes not started before the stop resume at the next start", LogCount, cleared)
	}
	for _, p := range e.providers.current() {
		e.retire(p)
	}
	e.background.Wait()
}

// releaseInFlight clears the InFlight flag of every entry that has it: no
// queue of this process holds them any more. The entries become due at
// their next attempt (at once when none is set).
func releaseInFlight(tx reaper.Tx) (int, error) {
	var keys []string
	if err := tx.InFlight(func(k string) error { keys = append(keys, k); return nil }); err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		ent, err := tx.Entry(k)
		if err != nil {
			return 0, err
		}
		if ent == nil || !ent.InFlight {
			continue
		}
		ent.InFlight = false
		if err := tx.PutEntry(ent); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}
