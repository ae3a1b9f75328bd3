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
