package engine

import (
	"context"
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
		rep.Untracked, rep.UntrackedTotal, rep.DiscoveryErrors = e.discover(ctx, now, true, sweepUntracked)
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
// the ledger does not track, every one, each with the adoption rule it
// matches, recording each newly seen one in the audit log. It reconciles as
// a sweep does, but adopts nothing: reap rules act in sweeps.
func (e *Engine) Discover(ctx context.Context) ([]reaper.Untracked, map[string]string) {
	e.init()
	found, _, errs := e.discover(ctx, e.now(), false, 0)
	return found, errs
}

// providerNames returns the names of every known provider, sorted.
func (e *Engine) providerNames() []string {
	names := e.providers.enabledNames()
	names = append(names, slices.Collect(maps.Keys(e.providers.disabledHints()))...)
	slices.Sort(names)
	return names
}
