package engine

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/reaper"
)

// startup prepares the ledger before the first pass, in one transaction:
//
//   - Lease grace. Live sessions could not heartbeat while the daemon was
//     down, so each lease that had not yet lapsed when the daemon stopped
//     is extended by the downtime, and by no more: after a clean stop,
//     exactly the time since the stop; after a crash, the time since the
//     last alive stamp less the stamp interval (the crash happened at most
//     that long after the stamp). The last heartbeat is kept as it was. A
//     daemon restarted often therefore still lets dead sessions lapse.
//   - Resume. Closes that the previous process held (InFlight) are handed
//     back to the ledger: due at their next attempt, at once when none is
//     set. A crash is not an attempt: Attempts counts calls made.
//   - The alive stamp is renewed.
//
// While the ledger cannot be written it retries with backoff; it returns
// false if ctx ends first.
func (e *Engine) startup(ctx context.Context) bool {
	var graced, resumed int
	var down time.Duration
	for n := 1; ; n++ {
		now := e.now()
		err := e.update(ctx, func(tx reaper.Tx) error {
			graced, resumed = 0, 0
			stamp, err := tx.Alive()
			if err != nil {
				return err
			}
			down = e.downtime(stamp, now)
			if down > 0 {
				var extend []*reaper.Session
				err := tx.Sessions(func(s *reaper.Session) error {
					if end := s.LeaseEnd(); !s.Ended() && !end.IsZero() && end.After(stamp.At) {
						extend = append(extend, s)
					}
					return nil
				})
				if err != nil {
					return err
				}
				for _, s := range extend {
					s.LeaseGrace += reaper.Duration(down)
					if err := tx.PutSession(s); err != nil {
						return err
					}
				}
				graced = len(extend)
			}
			if resumed, err = releaseInFlight(tx); err != nil {
				return err
			}
			return tx.SetAlive(reaper.AliveStamp{At: now})
		})
		if err == nil {
			break
		}
		wait := ledgerBackoff(n)
		if isPowerOfTwo(n) {
			e.logger().Error("prepare the ledger at start; nothing is reaped until this succeeds", LogErr, err, LogRetryIn, wait)
		}
		if !e.sleepUntil(ctx, e.clock.Now().Add(wait)) {
			return false
		}
	}
	if graced > 0 {
		e.logger().Info("extended the leases of live sessions by the daemon's downtime", LogCount, graced, "downtime", down.Round(time.Millisecond))
	}
	if resumed > 0 {
		e.logger().Info("resuming closes interrupted by the last stop", LogCount, resumed)
	}
	return true
}

// downtime returns how long the daemon was certainly down, given its last
// alive stamp.
func (e *Engine) downtime(stamp reaper.AliveStamp, now time.Time) time.Duration {
	if stamp.At.IsZero() {
		return 0 // a new ledger, or one from before alive stamps
	}
	d := now.Sub(stamp.At)
	if !stamp.Clean {
		d -= e.aliveInterval()
	}
	return max(0, d)
}

// stampAlive records in the ledger, every AliveInterval, that the daemon
// runs; a failure is logged when it starts and when it ends.
func (e *Engine) stampAlive(t clockwork.Ticker) {
	defer e.background.Done()
	defer t.Stop()
	for {
		select {
		case <-e.workCtx.Done():
			return
		case <-t.Chan():
		}
		var err error
		e.safely("alive stamp", func() {
			err = e.Store.Update(e.workCtx, func(tx reaper.Tx) error {
				return tx.SetAlive(reaper.AliveStamp{At: e.now()})
			})
		})
		switch {
		case err != nil && e.workCtx.Err() == nil && !e.lastAliveErr.Swap(true):
			e.logger().Error("stamp the ledger as alive", LogErr, err)
		case err == nil && e.lastAliveErr.Swap(false):
			e.logger().Info("the ledger can be written again")
			e.Wake() // the loop may be waiting out its backoff
		}
	}
}
