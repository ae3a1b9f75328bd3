package engine

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// Adoption holds the adoption rules, which a reload replaces as a whole.
type Adoption struct {
	// Rules are tried in order; the first that matches a sandbox decides.
	Rules []reaper.AdoptRule
	// Grace is how young an untracked sandbox may be and still be left
	// alone, whatever the rules say. Zero means reaper.DefaultAdoptGrace.
	Grace time.Duration
}

func (a *Adoption) grace() time.Duration {
	if a == nil || a.Grace <= 0 {
		return reaper.DefaultAdoptGrace
	}
	return a.Grace
}

// SetAdoption replaces the adoption rules; the next discovery uses them.
// The rules must have passed reaper.AdoptRule.Validate.
func (e *Engine) SetAdoption(a Adoption) {
	a.Rules = append([]reaper.AdoptRule(nil), a.Rules...)
	e.adopt.Store(&a)
}

// adoption returns the current rules (never nil).
func (e *Engine) adoption() *Adoption {
	if a := e.adopt.Load(); a != nil {
		return a
	}
	return &Adoption{}
}

// assess fills in u's age, the rule that matches it and why that rule does
// not act on it yet, and reports whether it is to be adopted now.
func (a *Adoption) assess(u *reaper.Untracked, now time.Time) bool {
	sb := u.Sandbox
	var age time.Duration
	if !sb.CreatedAt.IsZero() {
		age, u.AgeFrom = now.Sub(sb.CreatedAt), "created"
	} else {
		age, u.AgeFrom = now.Sub(u.FirstSeen), "first-seen"
	}
	age = max(age, 0)
	u.Age = reaper.Duration(age)
	u.Managed = strings.EqualFold(sb.Labels[reaper.LabelManaged], "true")
	var rule *reaper.AdoptRule
	for i := range a.Rules {
		// Every selector but age first, so that a young sandbox is shown
		// with the rule that will take it.
		if a.Rules[i].Match(u.Provider, sb, math.MaxInt64, now) {
			rule = &a.Rules[i]
			break
		}
	}
	if rule == nil {
		return false
	}
	u.Rule, u.Action = rule.Name, rule.Action
	switch why := reaper.Unadoptable(sb); {
	case why != "":
		u.Note = why
		return false
	case age < a.grace():
		u.Note = fmt.Sprintf("younger than adopt_grace (%s): its registration may be on its way", a.grace())
		return false
	case age < rule.MinAge:
		u.Note = fmt.Sprintf("the rule applies from min_age %s", rule.MinAge)
		return false
	}
	return rule.Action == reaper.AdoptReap
}

// untracked records the provider's live sandboxes that no entry tracks,
// with when each was first seen (kept in the ledger, so that an age
// measured from it survives restarts), forgets those no longer listed, and
// adopts those a reap rule takes (when adoptNow). It returns them all.
func (e *Engine) untracked(ctx context.Context, provider string, sbs []reaper.Sandbox, now time.Time, adoptNow bool) ([]reaper.Untracked, error) {
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
			if err := tx.DeleteUntracked(provider, id); err != nil {
				return err
			}
			key := provider + "/" + id
			if ent, err := tx.Entry(key); err != nil {
				return err
			} else if ent == nil || ent.State.Final() {
				// Not listed any more, rather than tracked now: the
				// report stops counting its cost.
				if err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventUntrackedGone, Key: key,
					Detail: "the provider's listing no longer shows it"}); err != nil {
					return err
				}
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

// adopt makes an untracked sandbox an entry, due at once, owned by the
// daemon, and labelled with the rule that took it.
func adopt(tx reaper.Tx, provider string, u *reaper.Untracked, uid uint32, now time.Time, ad *Adoption) error {
	sb := u.Sandbox
	labels := map[string]string{}
	if reaper.ValidateLabels(sb.Labels) == nil && len(sb.Labels) < reaper.MaxLabels {
		maps.Copy(labels, sb.Labels) // nil when the sandbox has none
	}
	labels[reaper.LabelRule] = u.Rule
	ent := &reaper.Entry{Provider: provider, ID: sb.ID, Labels: labels, RegisteredAt: now, ExpiresAt: now,
		State: reaper.StateActive, Adopted: u.Rule, Seen: true, Owner: &uid,
		Stopped: reaper.RunStateOf(sb.State) == reaper.RunStateStopped}
	if sb.Resources != nil {
		r := *sb.Resources
		ent.Resources = &r
	}
	for _, r := range ad.Rules {
		if r.Name == u.Rule && r.SessionLabel != "" {
			if s := sb.Labels[r.SessionLabel]; reaper.ValidateID("session", s) == nil {
				ent.Session = s
			}
		}
	}
	if err := tx.PutEntry(ent); err != nil {
		return err
	}
	if err := tx.DeleteUntracked(provider, sb.ID); err != nil {
		return err
	}
	u.Adopted = true
	return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventAdopted, Key: ent.Key(), Session: ent.Session,
		Reason: reaper.ReasonAdopted, Detail: adoptDetail(u), Labels: ent.Labels, Resources: ent.Resources,
		RunState: reaper.RunStateOf(sb.State)})
}

func adoptDetail(u *reaper.Untracked) string {
	return fmt.Sprintf("rule %s: state %s, %s old (from %s), first seen %s",
		u.Rule, orNone(u.Sandbox.State), time.Duration(u.Age).Round(time.Second), u.AgeFrom, fmtTime(u.FirstSeen))
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// reconcile closes, with reason gone, the provider's active entries whose
// sandbox is no longer there: seen in an earlier listing, and left out of
// two listings that started after its registration. Their sandboxes were
// deleted by someone else; reports then stop counting them as running.
func (e *Engine) reconcile(ctx context.Context, provider string, sbs []reaper.Sandbox, listed time.Time) error {
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
			ent.State, ent.CloseReason, ent.ClosedAt = reaper.StateClosed, reaper.ReasonGone, now
			if err := tx.PutEntry(ent); err != nil {
				return err
			}
			if err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventClosed, Key: ent.Key(), Session: ent.Session,
				Reason: reaper.ReasonGone, Detail: "the provider's listings no longer show the sandbox, which an earlier one showed: someone else deleted it"}); err != nil {
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

// adoptionPlan lists the providers, for a dry run, and returns the
// sandboxes a reap rule would adopt now, without recording anything.
func (e *Engine) adoptionPlan(ctx context.Context, now time.Time) ([]reaper.SweepItem, map[string]string) {
	ad := e.adoption()
	reaps := false
	for _, r := range ad.Rules {
		reaps = reaps || r.Action == reaper.AdoptReap
	}
	if !reaps {
		return nil, nil
	}
	var items []reaper.SweepItem
	errs := map[string]string{}
	for _, r := range e.listAll(ctx) {
		if r.err != nil {
			errs[r.name] = r.err.Error()
			continue
		}
		err := e.view(ctx, func(tx reaper.Tx) error {
			firstSeen := map[string]time.Time{}
			if err := tx.Untracked(r.name, func(id string, t time.Time) error {
				firstSeen[id] = t
				return nil
			}); err != nil {
				return err
			}
			for _, sb := range r.sbs {
				if sb.ID == "" || (!sb.CreatedAt.IsZero() && sb.CreatedAt.After(now)) {
					continue
				}
				key := r.name + "/" + sb.ID
				ent, err := tx.Entry(key)
				if err != nil {
					return err
				}
				if ent != nil {
					continue
				}
				fs, ok := firstSeen[sb.ID]
				if !ok {
					fs = now
				}
				u := reaper.Untracked{Provider: r.name, Sandbox: sb, FirstSeen: fs}
				if ad.assess(&u, now) && reaper.ValidateID("sandbox id", sb.ID) == nil {
					items = append(items, reaper.SweepItem{Key: key, Action: "adopt", Reason: reaper.ReasonAdopted, Detail: adoptDetail(&u)})
				}
			}
			return nil
		})
		if err != nil {
			errs[r.name] = err.Error()
		}
	}
	if len(errs) == 0 {
		errs = nil
	}
	return items, errs
}

// billingChanged reports whether the listing shows the entry's sandbox in
// another run state, or of another size, than the ledger has.
func billingChanged(ent *reaper.Entry, sb *reaper.Sandbox) bool {
	if st := reaper.RunStateOf(sb.State); st != "" && (st == reaper.RunStateStopped) != ent.Stopped {
		return true
	}
	r := mergeResources(ent.Resources, sb.Resources)
	return r != nil && (ent.Resources == nil || *r != *ent.Resources)
}

// mergeResources returns the registered size with each figure the provider
// reports in its place.
func mergeResources(reg, listed *reaper.Resources) *reaper.Resources {
	if listed == nil || listed.Validate() != nil {
		return reg
	}
	var r reaper.Resources
	if reg != nil {
		r = *reg
	}
	if listed.VCPU > 0 {
		r.VCPU = listed.VCPU
	}
	if listed.MemoryGiB > 0 {
		r.MemoryGiB = listed.MemoryGiB
	}
	if listed.DiskGiB > 0 {
		r.DiskGiB = listed.DiskGiB
	}
	if listed.GPUCount > 0 {
		r.GPU, r.GPUCount = listed.GPU, listed.GPUCount
	}
	return &r
}

// recordBilling records in the ledger, and in the audit log for reports,
// a change of an entry's run state or size that a listing shows.
func recordBilling(tx reaper.Tx, ent *reaper.Entry, sb *reaper.Sandbox, now time.Time) error {
	var evs []reaper.AuditEvent
	if st := reaper.RunStateOf(sb.State); st != "" && (st == reaper.RunStateStopped) != ent.Stopped {
		ent.Stopped = st == reaper.RunStateStopped
		evs = append(evs, reaper.AuditEvent{Time: now, Kind: reaper.EventStateChanged, Key: ent.Key(), Session: ent.Session,
			RunState: st, Detail: "the provider's listing shows it " + sb.State})
	}
	if r := mergeResources(ent.Resources, sb.Resources); r != nil && (ent.Resources == nil || *r != *ent.Resources) {
		ent.Resources = r
		evs = append(evs, reaper.AuditEvent{Time: now, Kind: reaper.EventResized, Key: ent.Key(), Session: ent.Session,
			Resources: r, Detail: "size as the provider's listing reports it"})
	}
	if len(evs) == 0 {
		return nil
	}
	if err := tx.PutEntry(ent); err != nil {
		return err
	}
	for _, ev := range evs {
		if err := tx.Append(ev); err != nil {
			return err
		}
	}
	return nil
}
