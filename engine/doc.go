// Package engine is reaperd's machinery: it runs the domain's policy
// (package reaper) over a ledger (reaper.Store), closes sandboxes through
// the providers, and serves clients (it implements reaper.Service).
//
// # Basics
//
// Set an Engine's fields and call Run once. One concern per file:
//
//	loop.go       the loop: one timer on the injected clock, set to the
//	              earliest deadline in the ledger; wake-ups; shutdown
//	pass.go       a pass: due items, their transitions in one transaction,
//	              claims handed to the close queues; probes and recovery of
//	              failing providers
//	queue.go      a provider's close queue: FIFO, de-duplicated, bounded
//	close.go      the workers: rate limit and Retry-After pause, the attempt
//	              committed before the call, the call, the outcome
//	startup.go    lease grace for the daemon's downtime, resumed closes,
//	              the alive stamp
//	procwatch.go  session processes (--pid): watched through pidfds
//	              (pidfd_linux.go) where the kernel has them, else polled
//	sweep.go      sweeps, dry runs, pruning and discovery off the loop
//	discovery.go  discovery page by page: what a page shows is recorded
//	              at once; what the listing does not show decides only
//	              once it has completed
//	observe.go    listings that confirm not-founds and accepted deletes
//	              and verify registrations
//	adopt.go      adoption rules, reconciliation of active entries
//	service.go    registrations, heartbeats, tags, releases, session ends
//	query.go      reads and status
//	quarantine.go undecodable records moved aside
//	providers.go  the provider set, replaced by reloads
//
// # Caveats
//
// Every transaction function may run more than once (see reaper.Store):
// logs, metrics and notifications happen after the commit.
//
// A close is claimed (InFlight in the ledger) while it sits in a queue; a
// claimed entry has no deadline, so nothing rewrites it while it waits.
// Start-up releases every claim left by a previous process.
//
// The clock is injected (Clock) and every timer of the engine runs on it,
// including close timeouts, so tests move time instead of sleeping.
package engine
