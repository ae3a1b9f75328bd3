package engine

import (
	"context"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// NextWake returns when e's loop will next wake by itself, or the zero
// time while it is not asleep on its timer.
func NextWake(e *Engine) time.Time {
	if ns := e.scheduled.Load(); ns != 0 {
		return time.Unix(0, ns).UTC()
	}
	return time.Time{}
}

// DryRunScan is the dry run as a scan of every entry, for comparison.
func (e *Engine) DryRunScan(ctx context.Context) (*reaper.SweepReport, error) {
	return e.dryRunScan(ctx)
}
