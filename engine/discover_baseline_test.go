package engine

// The discovery as it was before it went page by page, kept as the
// baseline of BenchmarkDiscover100k: each provider's whole listing is held
// as one slice, indexed in maps of every sandbox, and applied in one
// transaction per step, after the listing. Not used by the engine.

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// DiscoverWholeSlice runs a sweep's discovery as it was before it went
// page by page, and returns how many untracked sandboxes it reported.
func DiscoverWholeSlice(e *Engine, ctx context.Context) (int, map[string]string) {
	e.init()
	found, errs := e.legacyDiscover(ctx, e.now(), true)
	return len(found), errs
}

// DiscoverForSweep runs a sweep's discovery, page by page, and returns how
// many untracked sandboxes its report lists and how many it found.
func DiscoverForSweep(e *Engine, ctx context.Context) (listed, total int, errs map[string]string) {
	e.init()
	found, total, errs := e.discover(ctx, e.now(), true, sweepUntracked)
	return len(found), total, errs
}

// legacyListing is one provider's listing, taken for a discovery.
type legacyListing struct {
	name    string
	sbs     []reaper.Sandbox
	err     error
	started time.Time
}

// legacyListAll lists every enabled provider at once, each bounded by
// ListTimeout. A stop ends the listings too: their calls hold the
// providers that a stop shuts down.
func (e *Engine) legacyListAll(ctx context.Context) []legacyListing {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopListing := context.AfterFunc(e.workCtx, cancel)
	defer stopListing()
	names := e.providers.enabledNames()
	results := make([]legacyListing, len(names))
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
			results[i].sbs, results[i].err = legacySafeList(lctx, p, name)
		}()
	}
	wg.Wait()
	return results
}

// legacyDiscover lists every enabled provider and reconciles the ledger with
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
func (e *Engine) legacyDiscover(ctx context.Context, now time.Time, adoptNow bool) ([]reaper.Untracked, map[string]string) {
	var out []reaper.Untracked
	errs := map[string]string{}
	adopted := 0
	for _, r := range e.legacyListAll(ctx) {
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
		if err := e.legacyObserve(ctx, r.name, r.sbs, r.started); err != nil {
			e.logger().Error("apply a discovery listing", LogProvider, r.name, LogErr, err)
		}
		if err := e.legacyReconcile(ctx, r.name, r.sbs, r.started); err != nil {
			e.logger().Error("reconcile the ledger with a listing", LogProvider, r.name, LogErr, err)
		}
		found, err := e.legacyUntracked(ctx, r.name, r.sbs, now, adoptNow)
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

func legacySafeList(ctx context.Context, p reaper.Provider, name string) (sbs []reaper.Sandbox, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &reaper.ProviderError{Provider: name, Op: "list", Kind: reaper.ErrTransient, Err: fmt.Errorf("provider panicked: %v", r)}
		}
	}()
	return p.List(ctx, reaper.ListFilter{})
}

// legacyObserve applies a listing of the provider, started at listed, to the
// ledger: it decides the not-founds reported before the listing started,
// and verifies the entries the listing shows or should show.
func (e *Engine) legacyObserve(ctx context.Context, provider string, sbs []reaper.Sandbox, listed time.Time) error {
	live := make(map[string]bool, len(sbs))
	for _, sb := range sbs {
		live[sb.ID] = true
	}
	var ob observation
	err := e.update(ctx, func(tx reaper.Tx) error {
		ob = observation{}
		now := e.now()
		var keys []string
		seen := map[string]bool{}
		collect := func(ent *reaper.Entry) error {
			if !seen[ent.Key()] {
				seen[ent.Key()] = true
				keys = append(keys, ent.Key())
			}
			return nil
		}
		if err := tx.Unseen(provider, collect); err != nil {
			return err
		}
		if err := tx.Closing(provider, func(ent *reaper.Entry) error {
			if !ent.NotFoundAt.IsZero() || !ent.AcceptedAt.IsZero() {
				return collect(ent)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, key := range keys {
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent == nil || ent.State.Final() {
				continue
			}
			if err := e.observeEntry(tx, provider, ent, live[ent.ID], listed, now, &ob); err != nil {
				return err
			}
			if ent.Unverified && !ent.Seen && !ent.State.Final() {
				ob.unverifiedNow++
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply a listing of %s: %w", provider, err)
	}
	e.reportObservation(provider, &ob)
	return nil
}

// legacyUntracked records the provider's live sandboxes that no entry tracks,
// with when each was first seen (kept in the ledger, so that an age
// measured from it survives restarts), forgets those no longer listed, and
// adopts those a reap rule takes (when adoptNow). It returns them all.
func (e *Engine) legacyUntracked(ctx context.Context, provider string, sbs []reaper.Sandbox, now time.Time, adoptNow bool) ([]reaper.Untracked, error) {
	ad := e.adoption()
	uid := uint32(os.Getuid())
	var found []reaper.Untracked
	var fresh, adopted []string
	matches := map[[2]string]int{}
	err := e.update(ctx, func(tx reaper.Tx) error {
		found, fresh, adopted = nil, nil, nil
		clear(matches)
		firstSeen := map[string]time.Time{}
		if err := tx.Untracked(provider, func(id string, t time.Time) error {
			firstSeen[id] = t
			return nil
		}); err != nil {
			return err
		}
		keepRecord := map[string]bool{}
		for _, sb := range sbs {
			if sb.ID == "" || (!sb.CreatedAt.IsZero() && sb.CreatedAt.After(now)) {
				continue
			}
			key := provider + "/" + sb.ID
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent != nil && ent.State != reaper.StateClosed {
				continue // tracked (released ones included: their session let them go)
			}
			fs, ok := firstSeen[sb.ID]
			if !ok {
				fs = now
				if err := tx.PutUntracked(provider, sb.ID, now); err != nil {
					return err
				}
				detail := "state " + orNone(sb.State)
				if !sb.CreatedAt.IsZero() {
					detail += ", created " + fmtTime(sb.CreatedAt)
				}
				ev := reaper.AuditEvent{Time: now, Kind: reaper.EventDiscovered, Key: key, Detail: detail,
					Resources: sb.Resources, RunState: reaper.RunStateOf(sb.State)}
				if reaper.ValidateLabels(sb.Labels) == nil {
					ev.Labels = sb.Labels
				}
				if err := tx.Append(ev); err != nil {
					return err
				}
				fresh = append(fresh, key)
			}
			u := reaper.Untracked{Provider: provider, Sandbox: sb, FirstSeen: fs}
			reap := ad.assess(&u, now)
			if u.Rule != "" {
				matches[[2]string{u.Rule, string(u.Action)}]++
			}
			switch {
			case ent != nil:
				u.Note = "its entry is closed, yet the provider lists it: check it by hand"
			case reap && reaper.ValidateID("sandbox id", sb.ID) != nil:
				u.Note = "its id is not one reaperd can track"
			case reap && !adoptNow:
				u.Note = "to be adopted and closed by the next sweep"
			case reap:
				if err := adopt(tx, provider, &u, uid, now, ad); err != nil {
					return err
				}
				adopted = append(adopted, key)
			}
			if !u.Adopted {
				keepRecord[sb.ID] = true
			}
			found = append(found, u)
		}
		for id := range firstSeen {
			if keepRecord[id] {
				continue
			}
			if err := forgetUntracked(tx, provider, id, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record untracked sandboxes of %s: %w", provider, err)
	}
	log := e.logger().With(LogProvider, provider)
	if len(fresh) > 0 {
		log.Warn("found sandboxes nobody registered", LogCount, len(fresh), "keys", sample(fresh))
	}
	if len(adopted) > 0 {
		log.Warn("adopted untracked sandboxes: they are closed like expired entries", LogCount, len(adopted), "keys", sample(adopted))
	}
	if m := e.Metrics; m != nil {
		n := 0
		for _, u := range found {
			if !u.Adopted {
				n++
			}
		}
		m.Untracked.WithLabelValues(provider).Set(float64(n))
		m.AdoptionMatches.DeletePartialMatch(map[string]string{"provider": provider})
		for k, n := range matches {
			m.AdoptionMatches.WithLabelValues(provider, k[0], k[1]).Set(float64(n))
		}
		for _, u := range found {
			if u.Adopted {
				m.Adopted.WithLabelValues(provider, u.Rule).Inc()
			}
		}
	}
	return found, nil
}

// legacyReconcile closes, with reason gone, the provider's active entries whose
// sandbox is no longer there: seen in an earlier listing, and left out of
// two listings that started after its registration. Their sandboxes were
// deleted by someone else; reports then stop counting them as running.
func (e *Engine) legacyReconcile(ctx context.Context, provider string, sbs []reaper.Sandbox, listed time.Time) error {
	live := make(map[string]*reaper.Sandbox, len(sbs))
	for i := range sbs {
		live[sbs[i].ID] = &sbs[i]
	}
	var present, gone []string
	err := e.update(ctx, func(tx reaper.Tx) error {
		present, gone = present[:0], gone[:0]
		var absent, changed []*reaper.Entry
		err := tx.Entries(reaper.EntryFilter{Provider: provider, States: []reaper.State{reaper.StateActive}}, func(ent *reaper.Entry) error {
			switch sb := live[ent.ID]; {
			case sb != nil:
				present = append(present, ent.Key())
				if billingChanged(ent, sb) {
					changed = append(changed, ent)
				}
			case ent.Seen && listed.After(ent.RegisteredAt):
				absent = append(absent, ent)
			}
			return nil
		})
		if err != nil {
			return err
		}
		now := e.now()
		for _, ent := range changed {
			if err := recordBilling(tx, ent, live[ent.ID], now); err != nil {
				return err
			}
		}
		for _, ent := range absent {
			if !e.absentBefore(provider, ent.Key(), listed) {
				continue // the first listing without it
			}
			if err := closeGone(tx, ent, now); err != nil {
				return err
			}
			gone = append(gone, ent.Key())
		}
		return nil
	})
	if err != nil {
		return err
	}
	if q := e.providers.queue(provider); q != nil && len(present) > 0 {
		q.mu.Lock()
		for _, k := range present {
			delete(q.absent, k)
		}
		q.mu.Unlock()
	}
	if len(gone) > 0 {
		e.logger().Info("entries closed: their sandboxes are gone from the provider", LogProvider, provider, LogCount, len(gone), "keys", sample(gone))
		if m := e.Metrics; m != nil {
			m.Closed.WithLabelValues(provider, string(reaper.ReasonGone)).Add(float64(len(gone)))
		}
	}
	return nil
}
