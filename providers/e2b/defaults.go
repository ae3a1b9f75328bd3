package e2b

import (
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// ListPrices are E2B's published list prices, per hour: $0.0504 per vCPU
// and $0.0162 per GiB of memory while a sandbox runs; disk is included,
// and paused sandboxes are not billed.
var ListPrices = reaper.PriceList{
	Running: reaper.Rate{VCPU: 0.0504, MemoryGiB: 0.0162},
	Source:  "E2B list prices (e2b.dev/docs/faq/calculate-sandbox-price, as read 2026-11: paused sandboxes are not billed): estimates",
	Default: true,
}

// Cleanup is what E2B does with a sandbox nobody kills: it is killed when
// its timeout passes, 300 s after it starts by the SDKs' default; a paused
// one is kept, unbilled.
var Cleanup = reaper.Cleanup{
	Running:   reaper.Duration(300 * time.Second),
	FromStart: true,
	Rule:      "a running sandbox ends at its timeout, 5 minutes from its start by default; a paused one costs nothing",
}

// Default pace of reaperd's kills. E2B allows 20,000 sandbox lifecycle and
// management requests per 30 seconds (e2b.dev/docs/sandbox/rate-limits),
// about 666 a second, shared by creates, kills and listings: the agents
// that create sandboxes need most of it. reaperd keeps to 100 kills a
// second, 15% of it, with 32 in flight; a 429 pauses the queue for its
// Retry-After.
const (
	DefaultRate        = 100.0
	DefaultConcurrency = 32
)
