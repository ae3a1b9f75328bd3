package modal

import (
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// ListPrices are Modal's published list prices for sandboxes, per hour:
// $0.00003942 per physical core-second (one core is two vCPUs), so
// $0.070956 per vCPU, and $0.00000667 per GiB-second of memory, $0.024012
// per GiB. Modal bills the greater of the request and the use, and
// multiplies prices for sandboxes pinned to a region; neither is modelled.
var ListPrices = reaper.PriceList{
	Running: reaper.Rate{VCPU: 0.070956, MemoryGiB: 0.024012},
	Source: "Modal list prices for Sandboxes (modal.com/pricing, as read 2026-10): estimates, " +
		"without region multipliers or GPU prices",
	Default: true,
}

// Cleanup is what Modal does with a sandbox nobody terminates: it ends at
// its timeout, 5 minutes from its start by default.
var Cleanup = reaper.Cleanup{
	Running:   reaper.Duration(5 * time.Minute),
	FromStart: true,
	Rule:      "a sandbox ends at its timeout, 5 minutes from its start by default",
}

// Default pace of reaperd's terminations. Modal documents no rate limit on
// its sandbox API; it answers RESOURCE_EXHAUSTED, with a retry hint, when
// it throttles, which pauses the queue. reaperd keeps to 60 terminations a
// second with 24 in flight, enough to close a burst of 500 in under ten
// seconds.
const (
	DefaultRate        = 60.0
	DefaultConcurrency = 24
)
