package engine

import (
	"errors"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Backoff is the delay before the next close attempt after failed attempt
// n (1-based): min·2^(n-1), with equal jitter (j in [0,1) picks within
// [d/2, d)). An unauthorized error waits at least one minute, since an
// operator must act. A retry delay carried by err (Retry-After) is honoured
// when longer, plus up to 10% jitter. The result never exceeds max, whatever
// the provider asked for: a provider that answers "retry in a year" is
// asked again after max.
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
	if errors.Is(err, reaper.ErrUnauthorized) && d < time.Minute {
		d = time.Minute
	}
	if ra, ok := reaper.RetryAfter(err); ok && ra >= d {
		d = ra + time.Duration(j*float64(ra)/10)
	}
	if d > max {
		d = max
	}
	return d
}
