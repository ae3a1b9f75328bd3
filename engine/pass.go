package engine

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// passResult is what one pass did.
type passResult struct {
	items []reaper.SweepItem
	jobs  []*job
	// waits are the channels on which a sweep's claimed jobs answer: the
	// sweep reads them, never the jobs, which the workers change.
	waits []chan reaper.SweepItem
	// next is the earliest deadline left in the ledger after the pass.
	next time.Time
	// more is set when the pass stopped at PassLimit: more may be due.
	more bool
	// stuck names an entry whose deadline stayed due although the policy
	// says to wait: an inconsistency the loop must not spin on.
	stuck string

	lapsed   []*reaper.Session
	released int
	started  int
}

// pass selects the due items, commits their transitions in one transaction
// (re-reading each entry, so keep and attached are checked at that instant)
// and hands the closes it claimed to their providers' queues. A pass first
// probes: for each idle provider due for a probe (every probeEvery while its
// calls fail; every provider in a full pass), it makes the backed-off close
// that is next in line due now. With sweep set, the claimed jobs carry a
// channel for their outcome.
func (e *Engine) pass(ctx context.Context, full, sweep bool) (*passResult, error) {
	start := time.Now()
	now := e.now()
	if m := e.Metrics; m != nil {
		kind := "deadline"
		if full {
			kind = "full"
		}
		m.Passes.WithLabelValues(kind).Inc()
		defer func() { m.PassDuration.Observe(time.Since(start).Seconds()) }()
	}
	probes, err := e.probe(ctx, now, full)
	if err != nil {
		return nil, fmt.Errorf("probe failing providers: %w", err)
	}

	// Most wake-ups find nothing due: look on a read transaction first, so
	// that they cost no write and no fsync.
	var anyDue bool
	var next time.Time
	err = e.view(ctx, func(tx reaper.Tx) error {
		due, err := tx.Due(now, 1)
		if err != nil {
			return err
		}
		anyDue = len(due) > 0
		next, err = tx.NextDeadline()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read due entries: %w", err)
	}
	if !anyDue {
		return &passResult{next: next}, nil
	}

	free := map[string]int{}
	for _, q := range e.providers.allQueues() {
		free[q.name] = q.free()
	}
	var res *passResult
	err = e.update(ctx, func(tx reaper.Tx) error {
		res = &passResult{}
		c := &passCtx{e: e, tx: tx, now: now, res: res, caps: maps.Clone(free), probes: probes, sweep: sweep,
			seen: map[string]bool{}}
		due, err := tx.Due(now, e.passLimit())
		if err != nil {
			return err
		}
		res.more = len(due) >= e.passLimit()
		for _, it := range due {
			// Each record is re-indexed at its current deadline below, so
			// a stale key can never keep the loop busy.
			if err := tx.DropDue(it); err != nil {
				return err
			}
			switch it.Kind {
			case reaper.DueSession:
				err = c.session(it.Key)
			case reaper.DueEntry:
				err = c.entry(it.Key)
			}
			if err != nil {
				return err
			}
		}
		res.next, err = tx.NextDeadline()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("commit due transitions: %w", err)
	}
	for _, j := range res.jobs {
		if q := e.providers.queue(j.provider); q != nil {
			q.push(j)
		}
	}
	for _, q := range e.providers.allQueues() {
		e.queueMetrics(q)
	}
	e.report(res)
	return res, nil
}

// report logs and counts what a committed pass did.
func (e *Engine) report(res *passResult) {
	for _, s := range res.lapsed {
		e.logger().Warn("session lease lapsed", LogSession, s.ID, "last_heartbeat", s.LastHeartbeat)
	}
	if m := e.Metrics; m != nil {
		m.LeaseLapses.Add(float64(len(res.lapsed)))
		m.Released.Add(float64(res.released))
	}
	if res.started > 0 {
		e.logger().Debug("closes started", LogCount, res.started)
	}
}

// passCtx is the state of one run of a pass's update function.
type passCtx struct {
	e      *Engine
	tx     reaper.Tx
	now    time.Time
	res    *passResult
	caps   map[string]int // queue room left, by provider
	probes map[string]bool
	sweep  bool
	seen   map[string]bool
}

func (c *passCtx) entry(key string) error {
	if c.seen[key] {
		return nil
	}
	c.seen[key] = true
	ent, err := c.tx.Entry(key)
	if err != nil || ent == nil {
		return err
	}
	s, err := sessionOf(c.tx, ent)
	if err != nil {
		return err
	}
	return c.apply(ent, s)
}

// session handles a session whose lease end is due: the lapse ends it, and
// the policy is applied at once to each of its active entries.
func (c *passCtx) session(id string) error {
	s, err := c.tx.Session(id)
	if err != nil || s == nil {
		return err
	}
	end := s.LeaseEnd()
	if s.Ended() || end.IsZero() || c.now.Before(end) {
		return c.tx.PutSession(s) // a stale key: re-index at the current deadline
	}
	s.EndedAt, s.EndReason = c.now, reaper.ReasonOrphanedLease
	if err := c.tx.Append(reaper.AuditEvent{Time: c.now, Kind: reaper.EventSessionEnded, Session: id,
		Reason: reaper.ReasonOrphanedLease, Detail: "no heartbeat since " + fmtTime(s.LastHeartbeat)}); err != nil {
		return err
	}
	if err := c.tx.PutSession(s); err != nil {
		return err
	}
	c.res.lapsed = append(c.res.lapsed, s.Clone())
	ents, err := activeEntries(c.tx, id)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if c.seen[ent.Key()] {
			continue
		}
		c.seen[ent.Key()] = true
		if err := c.apply(ent, s); err != nil {
			return err
		}
	}
	return nil
}

// apply acts on one entry whose deadline is due.
func (c *passCtx) apply(ent *reaper.Entry, s *reaper.Session) error {
	key := ent.Key()
	switch ent.State {
	case reaper.StateClosing:
		if ent.InFlight {
			if q := c.e.providers.queue(ent.Provider); q != nil && q.holds(key) {
				return c.tx.PutEntry(ent) // held by this daemon's queue
			}
			ent.InFlight = false // a flag no queue backs: take the close over
		}
		return c.claim(ent, reaper.SweepItem{Key: key, Session: ent.Session, Action: "retry", Reason: ent.CloseReason,
			Detail: fmt.Sprintf("%d attempts so far", ent.Attempts)})
	case reaper.StateActive:
		t, err := transition(c.tx, ent, s, c.now)
		if err != nil {
			return err
		}
		switch {
		case t.close:
			c.res.started++
			return c.claim(ent, t.item)
		case t.released:
			c.res.released++
		case t.stuck:
			c.res.stuck = key
		}
		if t.item.Action != "" {
			c.res.items = append(c.res.items, t.item)
		}
	}
	return nil
}

// claim hands a closing entry to its provider's queue: it is marked InFlight
// in this transaction and queued once the transaction commits. A close
// whose provider is disabled, or whose queue is full, waits in the ledger.
func (c *passCtx) claim(ent *reaper.Entry, item reaper.SweepItem) error {
	name := ent.Provider
	item.Result = string(reaper.StateClosing)
	switch {
	case !c.e.providers.isEnabled(name):
		c.e.markDisabled(ent, c.now)
		item.Error = ent.LastError
	case c.caps[name] <= 0:
		ent.NextAttemptAt = c.now.Add(parkDelay)
		item.Detail = fmt.Sprintf("the %s close queue is full; looked at again in %s", name, parkDelay)
	default:
		c.caps[name]--
		ent.InFlight = true
		j := &job{key: ent.Key(), provider: name, id: ent.ID, probe: c.probes[ent.Key()]}
		if c.sweep {
			w := make(chan reaper.SweepItem, 1)
			j.waiters = []chan reaper.SweepItem{w}
			c.res.waits = append(c.res.waits, w)
		}
		c.res.jobs = append(c.res.jobs, j)
	}
	c.res.items = append(c.res.items, item)
	return c.tx.PutEntry(ent)
}

// transitionResult is what applying the policy to an active entry did.
type transitionResult struct {
	item     reaper.SweepItem // empty when there is nothing to report
	close    bool             // moved to closing; the caller puts and claims it
	released bool
	stuck    bool // the policy waits although the entry is indexed as due
}

// transition applies the policy to an active entry inside tx and records
// the result. It puts the entry, except when it moves it to closing: then
// the caller does, claiming it or not.
func transition(tx reaper.Tx, ent *reaper.Entry, s *reaper.Session, now time.Time) (transitionResult, error) {
	key := ent.Key()
	item := reaper.SweepItem{Key: key, Session: ent.Session}
	d := reaper.Decide(ent, s, now)
	switch d.Action {
	case reaper.ActionClose:
		due := reaper.DueAt(ent, s)
		ent.State, ent.CloseReason, ent.ClosingSince = reaper.StateClosing, d.Reason, now
		ent.NextAttemptAt, ent.InFlight = time.Time{}, false
		item.Action, item.Reason, item.Detail = "close", d.Reason, dueDetail(ent, s, d.Reason, now)
		err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventCloseStarted, Key: key, Session: ent.Session, Reason: d.Reason, DueAt: due})
		return transitionResult{item: item, close: true}, err
	case reaper.ActionRelease:
		ent.State, ent.CloseReason, ent.ClosedAt = reaper.StateReleased, d.Reason, now
		if err := tx.PutEntry(ent); err != nil {
			return transitionResult{}, err
		}
		item.Action, item.Reason, item.Result = "release", d.Reason, string(reaper.StateReleased)
		item.Detail = "attached: the sandbox is left running"
		err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventReleased, Key: key, Session: ent.Session, Reason: d.Reason,
			Detail: "attached sandbox left running"})
		return transitionResult{item: item, released: true}, err
	case reaper.ActionSkip:
		if err := tx.PutEntry(ent); err != nil {
			return transitionResult{}, err
		}
		// Only worth a record when the entry would otherwise be due.
		probe := ent.Clone()
		probe.Keep, probe.Attached = false, false
		if dd := reaper.Decide(probe, s, now); dd.Action != reaper.ActionClose {
			return transitionResult{}, nil
		} else {
			item.Action, item.Reason, item.Detail = "skip", d.Reason, "would be closed: "+string(dd.Reason)
		}
		err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventSkipped, Key: key, Session: ent.Session, Reason: d.Reason,
			Detail: item.Detail})
		return transitionResult{item: item}, err
	}
	if err := tx.PutEntry(ent); err != nil {
		return transitionResult{}, err
	}
	due := reaper.DueAt(ent, s)
	return transitionResult{stuck: d.Action == reaper.ActionWait && !due.IsZero() && !now.Before(due)}, nil
}

func sessionOf(tx reaper.Tx, ent *reaper.Entry) (*reaper.Session, error) {
	if ent.Session == "" {
		return nil, nil
	}
	return tx.Session(ent.Session)
}

// activeEntries returns the session's entries that are still active.
func activeEntries(tx reaper.Tx, session string) ([]*reaper.Entry, error) {
	keys, err := tx.SessionEntries(session)
	if err != nil {
		return nil, err
	}
	var out []*reaper.Entry
	for _, k := range keys {
		ent, err := tx.Entry(k)
		if err != nil {
			return nil, err
		}
		if ent != nil && ent.State == reaper.StateActive {
			out = append(out, ent)
		}
	}
	return out, nil
}

// probe makes, for each idle provider that is not paused and is due for a
// probe (all of them when full), the backed-off close that is next in line
// due now, when it waits because of a provider-wide failure. Its outcome
// tells whether the provider answers again; a success makes the rest due at
// once. It returns the keys probed.
func (e *Engine) probe(ctx context.Context, now time.Time, full bool) (map[string]bool, error) {
	var names []string
	queues := map[string]*closeQueue{}
	for _, q := range e.providers.allQueues() {
		if !e.providers.isEnabled(q.name) {
			continue
		}
		at := q.probeAt()
		if !full && (at.IsZero() || now.Before(at)) {
			continue
		}
		if until := q.pause(); now.Before(until) {
			if !at.IsZero() {
				q.postponeProbe(until) // probe when the pause ends
			}
			continue
		}
		if !q.idle() {
			if !at.IsZero() {
				q.postponeProbe(now.Add(time.Second)) // its own calls may tell first
			}
			continue
		}
		names = append(names, q.name)
		queues[q.name] = q
	}
	if len(names) == 0 {
		return nil, nil
	}
	cands := map[string]string{} // provider → key
	err := e.view(ctx, func(tx reaper.Tx) error {
		clear(cands)
		for _, name := range names {
			var best *reaper.Entry
			err := tx.Closing(name, func(ent *reaper.Entry) error {
				if waitsOnProvider(ent, now) && (best == nil || ent.NextAttemptAt.Before(best.NextAttemptAt)) {
					best = ent
				}
				return nil
			})
			if err != nil {
				return err
			}
			if best != nil {
				cands[name] = best.Key()
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for name, q := range queues {
		_, found := cands[name]
		q.probed(now, found)
	}
	if len(cands) == 0 {
		return nil, nil
	}
	probes := map[string]bool{}
	err = e.update(ctx, func(tx reaper.Tx) error {
		clear(probes)
		for _, key := range cands {
			ent, err := tx.Entry(key)
			if err != nil {
				return err
			}
			if ent == nil || !waitsOnProvider(ent, now) {
				continue
			}
			ent.NextAttemptAt = now
			if err := tx.PutEntry(ent); err != nil {
				return err
			}
			probes[key] = true
		}
		return nil
	})
	return probes, err
}

// waitsOnProvider reports whether a closing entry is waiting out a backoff
// caused by a provider-wide failure, which a sign of the provider's health
// may cut short.
func waitsOnProvider(ent *reaper.Entry, now time.Time) bool {
	return ent.State == reaper.StateClosing && !ent.InFlight && ent.NextAttemptAt.After(now) && providerWide(ent.ErrorClass)
}

// recoverProvider makes every close of the provider that waits out a
// backoff caused by a provider-wide failure due at once: the provider has
// just shown that it answers again (or was enabled).
func (e *Engine) recoverProvider(name, why string) {
	e.safely("provider recovery", func() { e.recoverProviderOnce(name, why) })
}

func (e *Engine) recoverProviderOnce(name, why string) {
	total := 0
	for {
		now := e.now()
		var keys []string
		err := e.view(context.Background(), func(tx reaper.Tx) error {
			keys = keys[:0]
			return tx.Closing(name, func(ent *reaper.Entry) error {
				if waitsOnProvider(ent, now) && len(keys) < recoverChunk {
					keys = append(keys, ent.Key())
				}
				return nil
			})
		})
		if err != nil || len(keys) == 0 {
			break
		}
		n := 0
		err = e.update(context.Background(), func(tx reaper.Tx) error {
			n = 0
			for _, key := range keys {
				ent, err := tx.Entry(key)
				if err != nil {
					return err
				}
				if ent == nil || !waitsOnProvider(ent, now) {
					continue
				}
				ent.NextAttemptAt = now
				if err := tx.PutEntry(ent); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			e.logger().Error("retry the closes of a provider that answers again", LogProvider, name, LogErr, err)
			break
		}
		total += n
		if len(keys) < recoverChunk || n == 0 {
			break
		}
	}
	if total > 0 {
		e.logger().Info("provider answers again: retrying its backed-off closes now", LogProvider, name, LogCount, total, "why", why)
		if m := e.Metrics; m != nil {
			m.Recoveries.WithLabelValues(name).Inc()
		}
		e.Wake()
	}
}

func dueDetail(ent *reaper.Entry, s *reaper.Session, r reaper.Reason, now time.Time) string {
	switch r {
	case reaper.ReasonExpired:
		return fmt.Sprintf("expired %s ago", now.Sub(ent.ExpiresAt).Round(time.Second))
	case reaper.ReasonOrphanedLease:
		if s != nil {
			return fmt.Sprintf("session %s: no heartbeat for %s (lease %s)", s.ID, now.Sub(s.LastHeartbeat).Round(time.Second), s.Lease)
		}
	case reaper.ReasonOrphanedProcess:
		if s != nil {
			return fmt.Sprintf("session %s: process %d exited", s.ID, s.PID)
		}
	case reaper.ReasonSessionEnded:
		if s == nil {
			return fmt.Sprintf("session %s is gone", ent.Session)
		}
		return fmt.Sprintf("session %s ended without releasing it", s.ID)
	}
	return ""
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
