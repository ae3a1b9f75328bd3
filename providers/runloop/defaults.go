package runloop

import (
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Runloop ships no list prices: the figures found could not be confirmed
// from Runloop's own pages. Set [prices.runloop] in the config.

// Cleanup is what Runloop does with a devbox nobody shuts down: it shuts
// down when its keep-alive passes, an hour from its start by default; a
// suspended devbox keeps its disk, and bills for it, until shut down.
var Cleanup = reaper.Cleanup{
	Running:   reaper.Duration(time.Hour),
	FromStart: true,
	Stopped:   true,
	Rule:      "a running devbox shuts down at its keep-alive, 1 hour from its start by default; a suspended one bills for its disk until shut down",
}

// Default pace of reaperd's shutdowns. Runloop documents no rate limit on
// its API; it answers 429 when it throttles, and the queue pauses for its
// Retry-After. reaperd keeps to 60 shutdowns a second with 24 in flight,
// enough to close a burst of 500 in under ten seconds.
const (
	DefaultRate        = 60.0
	DefaultConcurrency = 24
)
