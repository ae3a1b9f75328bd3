package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/reaper"
)

// watchProcesses ends the live sessions whose process exited; the loop then
// closes their sandboxes at once. Where the kernel has pidfds (Linux 5.3
// and later, pidfd_linux.go) it holds one per session process and is told
// of each exit as it happens: nothing runs while no process exits. Where it
// has none, or when ProcessAlive is injected, it checks every session's pid
// every ProcessCheck instead (pollProcesses). The mode is logged once.
func (e *Engine) watchProcesses(t clockwork.Timer) {
	defer e.background.Done()
	defer t.Stop()
	w, why := e.openPidfdWatcher()
	if w != nil {
		e.logger().Info("watching session processes with pidfds: an exit is seen at once", LogMaxFDs, w.limit)
		err := errWatcherPanicked
		e.safely("process watcher", func() { err = w.run() })
		if err == nil || e.workCtx.Err() != nil {
			return
		}
		e.logger().Error("pidfd process watcher failed; checking session processes by polling from now on",
			LogErr, err, LogInterval, e.processCheck())
	} else {
		e.logger().Info("checking session processes by polling", LogInterval, e.processCheck(), LogReason, why)
	}
	e.pollProcesses(t)
}

// errWatcherPanicked stands for the outcome of a pidfd watcher that
// panicked (the panic itself is logged).
var errWatcherPanicked = errors.New("watch session processes: internal error")

// pollProcesses checks the pid of every live session that has one, every
// ProcessCheck, and ends the sessions whose process exited. With no such
// session it sleeps until a registration names a pid (notifyPID), so the
// first crashed agent is caught as fast as any other.
func (e *Engine) pollProcesses(t clockwork.Timer) {
	failures := 0
	for {
		select {
		case <-e.workCtx.Done():
			return
		case <-t.Chan():
		case <-e.pidWatch:
		}
		checked := e.clock.Now()
		var live int
		var err error
		e.safely("process watcher", func() { live, err = e.checkProcesses(e.workCtx) })
		wait := e.processCheck()
		switch {
		case err != nil && e.workCtx.Err() != nil:
			return
		case err != nil:
			failures++
			wait = max(wait, ledgerBackoff(failures))
			if isPowerOfTwo(failures) {
				e.logger().Error("check session processes", LogErr, err, LogRetryIn, wait)
			}
		case live == 0:
			failures = 0
			wait = maxIdle // notifyPID wakes the watcher sooner
		default:
			failures = 0
		}
		resetAt(e.clock, t, checked.Add(wait))
	}
}

// notifyPID tells the process watcher that a session with a pid exists, or
// has a new pid.
func (e *Engine) notifyPID() {
	select {
	case e.pidWatch <- struct{}{}:
	default:
	}
}

// checkProcesses ends live sessions whose process has exited. It returns
// the number of sessions with a live process.
func (e *Engine) checkProcesses(ctx context.Context) (int, error) {
	var dead []*reaper.Session
	live := 0
	err := e.view(ctx, func(tx reaper.Tx) error {
		dead, live = dead[:0], 0
		return tx.ProcessSessions(func(s *reaper.Session) error {
			if e.processAlive(s.PID, s.PIDStart) {
				live++
			} else {
				dead = append(dead, s)
			}
			return nil
		})
	})
	if err != nil || len(dead) == 0 {
		return live, err
	}
	return live, e.endExited(ctx, dead)
}

// endExited ends the sessions of dead, whose processes exited, with reason
// orphaned-process, and wakes the loop to close their sandboxes. A session
// that ended meanwhile, or whose pid changed since it was read, is left as
// it is.
func (e *Engine) endExited(ctx context.Context, dead []*reaper.Session) error {
	var ended []*reaper.Session
	err := e.update(ctx, func(tx reaper.Tx) error {
		ended = ended[:0]
		now := e.now()
		for _, d := range dead {
			s, err := tx.Session(d.ID)
			if err != nil {
				return err
			}
			if s == nil || s.Ended() || s.PID != d.PID || s.PIDStart != d.PIDStart {
				continue
			}
			s.EndedAt, s.EndReason = now, reaper.ReasonOrphanedProcess
			if err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventSessionEnded, Session: s.ID,
				Reason: reaper.ReasonOrphanedProcess, Detail: fmt.Sprintf("process %d exited", s.PID)}); err != nil {
				return err
			}
			if err := tx.PutSession(s); err != nil { // makes its entries due now
				return err
			}
			ended = append(ended, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, s := range ended {
		e.logger().Warn("session process exited", LogSession, s.ID, LogPID, s.PID)
	}
	if m := e.Metrics; m != nil {
		m.ProcessExits.Add(float64(len(ended)))
	}
	if len(ended) > 0 {
		e.Wake()
	}
	return nil
}
