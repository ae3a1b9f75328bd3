// Package reporttest holds a small fleet's audit log whose cost report was
// worked out by hand, for the tests of the report, the CLI and the page.
package reporttest

import (
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// The window: the seven days from Since to Until.
var (
	Since = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	Until = Since.Add(7 * 24 * time.Hour)
)

// Config is the configuration the figures assume, as the daemon reads it:
// round prices, none for Runloop, and E2B sandboxes given a 24 h timeout.
const Config = `
[prices.daytona]
source = "test prices"
running = { vcpu_hour = 0.05, memory_gib_hour = 0.01, disk_gib_hour = 0.001 }
stopped = { disk_gib_hour = 0.001 }

[prices.e2b]
running = { vcpu_hour = 0.05, memory_gib_hour = 0.02 }

[prices.modal]
running = { vcpu_hour = 0.10, memory_gib_hour = 0.01, gpu_hour = { A100 = 2.0 } }

[report.cleanup.e2b]
running = "24h"
from_start = true
`

// Pricing is Config as the engine holds it, with the cleanup rules reaperd
// ships for the others.
func Pricing(cleanup map[string]reaper.Cleanup) *reaper.Pricing {
	c := map[string]reaper.Cleanup{}
	for k, v := range cleanup {
		c[k] = v
	}
	c["e2b"] = reaper.Cleanup{Running: reaper.Duration(24 * time.Hour), FromStart: true}
	return &reaper.Pricing{
		Providers: map[string]reaper.PriceList{
			"daytona": {Running: reaper.Rate{VCPU: 0.05, MemoryGiB: 0.01, DiskGiB: 0.001}, Stopped: reaper.Rate{DiskGiB: 0.001}},
			"e2b":     {Running: reaper.Rate{VCPU: 0.05, MemoryGiB: 0.02}},
			"modal":   {Running: reaper.Rate{VCPU: 0.10, MemoryGiB: 0.01, GPU: map[string]float64{"A100": 2.0}}},
		},
		Cleanup: c,
	}
}

func at(d, h, m, s int) time.Time {
	return Since.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second)
}

func uid(n uint32) *uint32 { return &n }

func size(cpu, mem, disk float64) *reaper.Resources {
	return &reaper.Resources{VCPU: cpu, MemoryGiB: mem, DiskGiB: disk}
}

// Events is the audit log, oldest first. The comments give each
// sandbox's part of the hand-worked figures (see the report's tests).
func Events() []reaper.AuditEvent {
	evs := []reaper.AuditEvent{
		// e2b/e0 lived and ended before the window: it counts nowhere.
		{Time: at(-3, 0, 0, 0), Kind: reaper.EventRegistered, Key: "e2b/e0", Session: "s-old", Actor: uid(1000), Resources: size(2, 1, 0)},
		{Time: at(-1, 0, 0, 0), Kind: reaper.EventCloseStarted, Key: "e2b/e0", Reason: reaper.ReasonExpired, DueAt: at(-1, 0, 0, 0)},
		{Time: at(-1, 0, 0, 1), Kind: reaper.EventClosed, Key: "e2b/e0", Reason: reaper.ReasonExpired},

		// daytona/d4: attached, from a day before the window to its end,
		// running: 1 vCPU, 1 GiB, no disk = $0.06/h.
		{Time: at(-1, 0, 0, 0), Kind: reaper.EventRegistered, Key: "daytona/d4", Session: "s-e", Actor: uid(1000), Attached: true, Resources: size(1, 1, 0)},

		// daytona/d1: 2 vCPU, 4 GiB, 10 GiB: $0.15/h running, $0.01/h
		// stopped. Runs 10 h in the window, stops, expires at D0+20h and is
		// closed 30 s later.
		{Time: at(0, -2, 0, 0), Kind: reaper.EventRegistered, Key: "daytona/d1", Session: "s-a", Actor: uid(1000),
			Labels: map[string]string{"team": "ml"}, Resources: size(2, 4, 10)},
		{Time: at(0, 10, 0, 0), Kind: reaper.EventStateChanged, Key: "daytona/d1", RunState: reaper.RunStateStopped},
		{Time: at(0, 20, 0, 0), Kind: reaper.EventCloseStarted, Key: "daytona/d1", Session: "s-a", Reason: reaper.ReasonExpired, DueAt: at(0, 20, 0, 0)},
		{Time: at(0, 20, 0, 30), Kind: reaper.EventClosed, Key: "daytona/d1", Session: "s-a", Reason: reaper.ReasonExpired},

		// daytona/d2: keep, 1 vCPU, 1 GiB, 3 GiB = $0.063/h, from D0+1d on.
		{Time: at(1, 0, 0, 0), Kind: reaper.EventRegistered, Key: "daytona/d2", Session: "s-b", Actor: uid(1000), Keep: true, Resources: size(1, 1, 3)},

		// e2b/e1: 2 vCPU, 0.5 GiB = $0.11/h, registered by the token "ci";
		// its lease lapsed at D0+2d+2h59m59s and it was closed 2 s later.
		{Time: at(2, 0, 0, 0), Kind: reaper.EventRegistered, Key: "e2b/e1", Session: "s-c", ActorToken: "ci",
			Labels: map[string]string{"team": "web"}, Resources: size(2, 0.5, 0)},
		{Time: at(2, 3, 0, 0), Kind: reaper.EventCloseStarted, Key: "e2b/e1", Session: "s-c", Reason: reaper.ReasonOrphanedLease, DueAt: at(2, 2, 59, 59)},
		{Time: at(2, 3, 0, 1), Kind: reaper.EventClosed, Key: "e2b/e1", Session: "s-c", Reason: reaper.ReasonOrphanedLease},

		// e2b/e2: 4 vCPU, 2 GiB = $0.24/h; paused (free) after an hour;
		// released by its session 4 h later.
		{Time: at(3, 0, 0, 0), Kind: reaper.EventRegistered, Key: "e2b/e2", Session: "s-c", ActorToken: "ci", Resources: size(4, 2, 0)},
		{Time: at(3, 1, 0, 0), Kind: reaper.EventStateChanged, Key: "e2b/e2", RunState: reaper.RunStateStopped},
		{Time: at(3, 5, 0, 0), Kind: reaper.EventReleased, Key: "e2b/e2", Session: "s-c", Reason: reaper.ReasonReleased},

		// modal/m1: 1 vCPU, 8 GiB and an A100 = $2.18/h; its session
		// ended at D0+4d+2h and it was closed 5 s later.
		{Time: at(4, 0, 0, 0), Kind: reaper.EventRegistered, Key: "modal/m1", Session: "s-d", Actor: uid(1001),
			Labels: map[string]string{"team": "ml"}, Resources: &reaper.Resources{VCPU: 1, MemoryGiB: 8, GPU: "A100", GPUCount: 1}},
		{Time: at(4, 2, 0, 0), Kind: reaper.EventSessionEnded, Session: "s-d", Reason: reaper.ReasonSessionEnded},
		{Time: at(4, 2, 0, 0), Kind: reaper.EventCloseStarted, Key: "modal/m1", Session: "s-d", Reason: reaper.ReasonSessionEnded, DueAt: at(4, 2, 0, 0)},
		{Time: at(4, 2, 0, 5), Kind: reaper.EventClosed, Key: "modal/m1", Session: "s-d", Reason: reaper.ReasonSessionEnded},

		// daytona/a1: found untracked and stopped (1 vCPU, 2 GiB, 5 GiB:
		// $0.005/h) at D0+5d, adopted 12 h later and closed in 10 s.
		{Time: at(5, 0, 0, 0), Kind: reaper.EventDiscovered, Key: "daytona/a1", RunState: reaper.RunStateStopped, Resources: size(1, 2, 5)},
		{Time: at(5, 12, 0, 0), Kind: reaper.EventAdopted, Key: "daytona/a1", Reason: reaper.ReasonAdopted, RunState: reaper.RunStateStopped,
			Labels: map[string]string{"reaperd.rule": "openhands"}, Resources: size(1, 2, 5)},
		{Time: at(5, 12, 0, 0), Kind: reaper.EventCloseStarted, Key: "daytona/a1", Reason: reaper.ReasonAdopted, DueAt: at(5, 12, 0, 0)},
		{Time: at(5, 12, 0, 10), Kind: reaper.EventClosed, Key: "daytona/a1", Reason: reaper.ReasonAdopted},

		// runloop/r1: no prices; deleted by someone else after 6 h.
		{Time: at(5, 0, 0, 0), Kind: reaper.EventRegistered, Key: "runloop/r1", Session: "s-d", Actor: uid(1001), Resources: size(2, 4, 16)},
		{Time: at(5, 6, 0, 0), Kind: reaper.EventClosed, Key: "runloop/r1", Session: "s-d", Reason: reaper.ReasonGone},

		// daytona/d3: 1 vCPU, 1 GiB, 1 GiB = $0.061/h; expired at
		// D0+6d+1h, refused for good, still there at the window's end.
		{Time: at(6, 0, 0, 0), Kind: reaper.EventRegistered, Key: "daytona/d3", Session: "s-a", Actor: uid(1000), Resources: size(1, 1, 1)},
		{Time: at(6, 1, 0, 0), Kind: reaper.EventCloseStarted, Key: "daytona/d3", Session: "s-a", Reason: reaper.ReasonExpired, DueAt: at(6, 1, 0, 0)},
		{Time: at(6, 1, 0, 1), Kind: reaper.EventCloseFailed, Key: "daytona/d3", Session: "s-a", Reason: reaper.ReasonExpired,
			ErrorClass: "invalid", Error: "invalid sandbox id", Stuck: true},

		// e2b/u1: nobody registered it; 2 vCPU, 1 GiB = $0.12/h, running
		// from D0+6d to the window's end.
		{Time: at(6, 0, 0, 0), Kind: reaper.EventDiscovered, Key: "e2b/u1", RunState: reaper.RunStateRunning, Resources: size(2, 1, 0)},

		// After the window: changes nothing in it.
		{Time: at(7, 0, 0, 0), Kind: reaper.EventClosed, Key: "daytona/d2", Reason: reaper.ReasonManual},
	}
	return evs
}

// Append writes the audit log into a ledger transaction.
func Append(tx reaper.Tx) error {
	for _, ev := range Events() {
		if err := tx.Append(ev); err != nil {
			return err
		}
	}
	return nil
}
