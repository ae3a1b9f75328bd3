package daytona

import (
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// ListPrices are Daytona's published list prices, per hour: $0.0504 per
// vCPU, $0.0162 per GiB of memory and $0.000108 per GiB of disk while a
// sandbox runs; a stopped sandbox pays for its disk alone. The free
// allowance (the first 5 GiB of storage) and GPU prices are not included.
var ListPrices = reaper.PriceList{
	Running: reaper.Rate{VCPU: 0.0504, MemoryGiB: 0.0162, DiskGiB: 0.000108},
	Stopped: reaper.Rate{DiskGiB: 0.000108},
	Source: "Daytona list prices (www.daytona.io/pricing, as read 2026-10; docs: stopped sandboxes incur only disk costs): " +
		"estimates, without the free 5 GiB of storage",
	Default: true,
}

// Cleanup is what Daytona does with a sandbox nobody deletes: it stops
// after 15 idle minutes (autoStopInterval's default) and is never deleted
// (autoDeleteInterval's default, -1), so its disk bills on.
var Cleanup = reaper.Cleanup{
	Running:     reaper.Duration(15 * time.Minute),
	ThenStopped: true,
	Stopped:     true,
	Rule:        "a running sandbox runs 15 idle minutes (auto-stop's default), then bills for its disk; a stopped one bills for its disk; never deleted by default",
}

// Default pace of reaperd's deletes. Daytona counts sandbox lifecycle
// calls (start, stop, delete, archive) per organisation: 10,000 a minute
// on its lowest tier (daytona.io/docs/en/limits), about 166 a second, and
// listings on a separate counter. reaperd keeps to 120 deletes a second,
// under three quarters of it, with 32 in flight; a 429 pauses the queue for
// the Retry-After-sandbox-lifecycle Daytona sends.
const (
	DefaultRate        = 120.0
	DefaultConcurrency = 32
)
