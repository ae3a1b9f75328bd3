package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

func unavailable(format string, args ...any) error {
	return reaper.Errorf(reaper.EUNAVAILABLE, format, args...)
}

// Sweep runs a full sweep: every due entry, a probe of each failing
// provider, pruning, and discovery when enabled. The pass runs on the
// loop's goroutine; pruning and discovery run on the caller's, each
// provider's listing bounded by ListTimeout, so that they never delay a
// deadline. Sweep waits for the closes it started (each bounded by
// CloseTimeout) or for ctx, and reports their outcome. It needs a running
// engine.
func (e *Engine) Sweep(ctx context.Context, o reaper.SweepOptions) (*reaper.SweepReport, error) {
	e.init()
	if o.DryRun {
		return e.dryRun(ctx)
	}
	if e.state.Load() != stateRunning {
		return nil, unavailable("the engine is not running: sweeps need `reaperd serve`")
	}
	req := &sweepRequest{reply: make(chan sweepReply, 1)}
	select {
	case e.requests <- req:
	case <-e.loopDone:
		return nil, unavailable("the engine is stopping: no sweep now")
	case <-ctx.Done():
		return nil, unavailable("sweep not started: %v", ctx.Err())
	}
	var reply sweepReply
	select {
	case reply = <-req.reply:
	case <-e.loopDone:
		select {
		case reply = <-req.reply: // answered just before the loop stopped
		default:
			return nil, unavailable("the engine stopped during the sweep")
		}
	case <-ctx.Done():
		return nil, unavailable("sweep interrupted: %v", ctx.Err())
	}
	if reply.err != nil {
		return nil, reply.err
	}
	if m := e.Metrics; m != nil {
		m.LastSweep.Set(float64(e.clock.Now().UnixNano()) / 1e9)
	}
	rep := &reaper.SweepReport{Time: e.now(), Items: reply.res.items}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.safely("sweep maintenance", func() { e.maintain(ctx, rep) })
	}()
	byKey := make(map[string]int, len(rep.Items))
	for i, it := range rep.Items {
		byKey[it.Key] = i
	}
	for _, w := range reply.res.waits {
		select {
		case res := <-w:
			if i, ok := byKey[res.Key]; ok {
				rep.Items[i].Result, rep.Items[i].Error = res.Result, res.Error
			}
		case <-ctx.Done():
		}
	}
	wg.Wait()
	return rep, nil
}

// maintain prunes the ledger and, when enabled, discovers untracked
// sandboxes, one sweep at a time, filling rep.
func (e *Engine) maintain(ctx context.Context, rep *reaper.SweepReport) {
	e.maintenance.Lock()
	defer e.maintenance.Unlock()
	now := e.now()
	if r := e.retention(); r > 0 {
		st, err := e.Prune(ctx, now.Add(-r))
		if err != nil {
			e.logger().Error("prune ledger", LogErr, err)
		}
		rep.Pruned = st
	}
	if e.DiscoverOnSweep {
		rep.Untracked, rep.DiscoveryErrors = e.discover(ctx, now, true)
	}
}

// TriggerSweep asks a running engine for a full sweep without waiting for
// it. A cron schedule calls it. It returns false, and does nothing, while a
// sweep it triggered is still running, so that sweeps never pile up. (The
// flag is released by a deferred call, so a panic cannot leak it.)
func (e *Engine) TriggerSweep() bool {
	e.init()
	if !e.triggered.CompareAndSwap(false, true) {
		return false
	}
	go func() {
		defer e.triggered.Store(false)
		ctx, cancel := withTimeout(context.Background(), e.clock, e.closeTimeout()+e.listTimeout()+time.Minute)
		defer cancel()
		if _, err := e.Sweep(ctx, reaper.SweepOptions{}); err != nil && e.state.Load() == stateRunning {
			e.logger().Error("scheduled sweep", LogErr, err)
		}
	}()
	return true
}

// Prune deletes entries, sessions and audit events that became final
// before the given time, in transactions of bounded size.
func (e *Engine) Prune(ctx context.Context, before time.Time) (reaper.PruneStats, error) {
	e.init()
	var total reaper.PruneStats
	for {
		var st reaper.PruneStats
		err := e.update(ctx, func(tx reaper.Tx) error {
			var err error
			st, err = tx.Prune(before, pruneChunk)
			return err
		})
		if err != nil {
			return total, err
		}
		total.Entries += st.Entries
		total.Sessions += st.Sessions
		total.Events += st.Events
		if st.Total() < pruneChunk {
			break
		}
	}
	if n := total.Total(); n > 0 {
		if m := e.Metrics; m != nil {
			m.Pruned.Add(float64(n))
		}
		e.logger().Info("pruned ledger", "entries", total.Entries, "sessions", total.Sessions, "events", total.Events)
	}
	return total, nil
}

// Discover lists every enabled provider's live sandboxes and returns those
// the ledger does not track, each with the adoption rule it matches,
// recording each newly seen one in the audit log. It reconciles as a sweep
// does, but adopts nothing: reap rules act in sweeps.
func (e *Engine) Discover(ctx context.Context) ([]reaper.Untracked, map[string]string) {
	e.init()
	return e.discover(ctx, e.now(), false)
}

// listing is one provider's listing, taken for a discovery.
type listing struct {
	name    string
	sbs     []reaper.Sandbox
	err     error
	started time.Time
}

// listAll lists every enabled provider at once, each bounded by
// ListTimeout. A stop ends the listings too: their calls hold the
// providers that a stop shuts down.
func (e *Engine) listAll(ctx context.Context) []listing {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopListing := context.AfterFunc(e.workCtx, cancel)
	defer stopListing()
	names := e.providers.enabledNames()
	results := make([]listing, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].name = name
			p, release := e.providers.acquire(name)
			defer release()
			if p == nil {
				results[i].err = fmt.Errorf("provider %s was disabled", name)
				return
			}
			lctx, cancel := withTimeout(ctx, e.clock, e.listTimeout())
			defer cancel()
			results[i].started = e.clock.Now()
			results[i].sbs, results[i].err = safeList(lctx, p, name)
		}()
	}
	wg.Wait()
	return results
}

// discover lists every enabled provider and reconciles the ledger with
// what they hold, both ways:
//
//   - the listing decides not-founds and verifies registrations (observe),
//     and an active entry whose sandbox two listings no longer show, after
//     one did, is closed with reason gone (reconcile);
//   - a live sandbox no entry tracks is untracked: recorded with the time
//     it was first seen (audit discovered-untracked the first time),
//     matched against the adoption rules, and, when adoptNow, adopted if a
//     reap rule matches and it is old enough (adopt.go).
//
// Sandboxes created after the sweep started are left for the next one,
// since their registration may be on its way.
func (e *Engine) discover(ctx context.Context, now time.Time, adoptNow bool) ([]reaper.Untracked, map[string]string) {
	var out []reaper.Untracked
	errs := map[string]string{}
	adopted := 0
	for _, r := range e.listAll(ctx) {
		if r.err != nil {
			errs[r.name] = r.err.Error()
			e.logger().Warn("discovery: list sandboxes", LogProvider, r.name, LogErr, r.err)
			if m := e.Metrics; m != nil {
				m.ListErrors.WithLabelValues(r.name, "discovery").Inc()
			}
			continue
		}
		if m := e.Metrics; m != nil {
			m.LastListing.WithLabelValues(r.name).Set(float64(e.clock.Now().UnixNano()) / 1e9)
		}
		if err := e.observe(ctx, r.name, r.sbs, r.started); err != nil {
			e.logger().Error("apply a discovery listing", LogProvider, r.name, LogErr, err)
		}
		if err := e.reconcile(ctx, r.name, r.sbs, r.started); err != nil {
			e.logger().Error("reconcile the ledger with a listing", LogProvider, r.name, LogErr, err)
		}
		found, err := e.untracked(ctx, r.name, r.sbs, now, adoptNow)
		if err != nil {
			errs[r.name] = err.Error()
			continue
		}
		for _, u := range found {
			if u.Adopted {
				adopted++
			}
		}
		out = append(out, found...)
	}
	if adopted > 0 {
		e.Wake()
	}
	if len(errs) == 0 {
		errs = nil
	}
	return out, errs
}

func safeList(ctx context.Context, p reaper.Provider, name string) (sbs []reaper.Sandbox, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &reaper.ProviderError{Provider: name, Op: "list", Kind: reaper.ErrTransient, Err: fmt.Errorf("provider panicked: %v", r)}
		}
	}()
	return p.List(ctx, reaper.ListFilter{})
}

// providerNames returns the names of every known provider, sorted.
func (e *Engine) providerNames() []string {
	names := e.providers.enabledNames()
	names = append(names, slices.Collect(maps.Keys(e.providers.disabledHints()))...)
	slices.Sort(names)
	return names
}
