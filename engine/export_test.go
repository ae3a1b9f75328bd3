package engine

import "time"

// NextWake returns when e's loop will next wake by itself, or the zero
// time while it is not asleep on its timer.
func NextWake(e *Engine) time.Time {
	if ns := e.scheduled.Load(); ns != 0 {
		return time.Unix(0, ns).UTC()
	}
	return time.Time{}
}
