package engine

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"
)

// withTimeout is context.WithTimeout on the engine's clock: on the real
// clock it is exactly context.WithTimeout; on a fake clock the context ends
// with context.DeadlineExceeded once the clock has moved d on. (clockwork's
// own WithTimeout returns a context whose Err blocks until it is done,
// which breaks code that checks ctx.Err() first.)
func withTimeout(parent context.Context, clock clockwork.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	if _, fake := clock.(*clockwork.FakeClock); !fake {
		return context.WithTimeout(parent, d)
	}
	ctx, cancel := context.WithCancelCause(parent)
	t := clock.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return timeoutCtx{ctx}, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// timeoutCtx reports a cancellation caused by its timer as
// context.DeadlineExceeded, as a context from context.WithTimeout does.
type timeoutCtx struct{ context.Context }

func (c timeoutCtx) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// resetAt sets t to fire at the instant at on clock. A timer takes a
// duration, so on a fake clock an Advance between reading the time and the
// Reset would make it fire later than at; the reset is repeated until the
// clock did not move across it. (On the real clock, one Reset: the gap is
// microseconds.)
func resetAt(clock clockwork.Clock, t clockwork.Timer, at time.Time) {
	stopTimer(t)
	if _, fake := clock.(*clockwork.FakeClock); !fake {
		t.Reset(at.Sub(clock.Now()))
		return
	}
	for {
		now := clock.Now()
		t.Reset(at.Sub(now))
		if clock.Now().Equal(now) {
			return
		}
	}
}

// stopTimer stops t and drains a value it may already have sent.
func stopTimer(t clockwork.Timer) {
	if !t.Stop() {
		select {
		case <-t.Chan():
		default:
		}
	}
}
