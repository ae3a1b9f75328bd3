package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
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
// The listing, started at listed, must be complete; listedNow says whether
// it showed a sandbox. (What it showed of listed ones, their run state and
// size, was recorded page by page.) The active entries are read, and the
// gone ones closed, settleChunk at a time, each chunk in its own
// transaction.
func (e *Engine) reconcile(ctx context.Context, provider string, listedNow func(id string) bool, listed time.Time) error {
	absent := func(ent *reaper.Entry) bool {
		return ent.State == reaper.StateActive && ent.Seen && !listedNow(ent.ID) && listed.After(ent.RegisteredAt)
	}
	var candidates []string
	after := ""
	for {
		var keys []string
		n, last := 0, ""
		err := e.view(ctx, func(tx reaper.Tx) error {
			keys, n, last = nil, 0, ""
			err := tx.Entries(reaper.EntryFilter{Provider: provider, States: []reaper.State{reaper.StateActive}, After: after}, func(ent *reaper.Entry) error {
				if n == settleChunk {
					return errChunkFull
				}
				n, last = n+1, ent.Key()
				if absent(ent) {
					keys = append(keys, ent.Key())
				}
				return nil
			})
			if errors.Is(err, errChunkFull) {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("read the active entries of %s: %w", provider, err)
		}
		for _, key := range keys {
			if e.absentBefore(provider, key, listed) {
				candidates = append(candidates, key)
			} // else the first listing without it
		}
		if n < settleChunk {
			break
		}
		after = last
	}
	var gone []string
	var err error
	for chunk := range slices.Chunk(candidates, settleChunk) {
		var closed []string
		err = e.update(ctx, func(tx reaper.Tx) error {
			closed = nil
			now := e.now()
			for _, key := range chunk {
				ent, err := tx.Entry(key)
				if err != nil {
					return err
				}
				if ent == nil || !absent(ent) {
					continue
				}
				if err := closeGone(tx, ent, now); err != nil {
					return err
				}
				closed = append(closed, key)
			}
			return nil
		})
		if err != nil {
			err = fmt.Errorf("close entries of %s whose sandboxes are gone: %w", provider, err)
			break
		}
		gone = append(gone, closed...)
	}
	if len(gone) > 0 {
		e.logger().Info("entries closed: their sandboxes are gone from the provider", LogProvider, provider, LogCount, len(gone), "keys", sample(gone))
		if m := e.Metrics; m != nil {
			m.Closed.WithLabelValues(provider, string(reaper.ReasonGone)).Add(float64(len(gone)))
		}
	}
	return err
}

// errChunkFull ends a read of entries settleChunk at a time.
var errChunkFull = errors.New("chunk full")

// adoptionPlan lists the providers, for a dry run, and returns the
// sandboxes a reap rule would adopt now, without recording anything. Each
// provider is listed page by page, as a discovery does; a provider whose
// listing fails is named with its error, after what its pages read so far
// would adopt (a sweep adopts what those pages show).
func (e *Engine) adoptionPlan(ctx context.Context, now time.Time) ([]reaper.SweepItem, map[string]string) {
	ad := e.adoption()
	reaps := false
	for _, r := range ad.Rules {
		reaps = reaps || r.Action == reaper.AdoptReap
	}
	if !reaps {
		return nil, nil
	}
	type plan struct {
		items []reaper.SweepItem
		err   error
	}
	names := e.providers.enabledNames()
	plans := make([]plan, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		plans[i].err = errors.New("dry run panicked")
		wg.Go(func() {
			e.safely("dry run of "+name, func() {
				items, err := e.planAdoptions(ctx, name, now, ad)
				plans[i] = plan{items, err}
			})
		})
	}
	wg.Wait()
	var items []reaper.SweepItem
	errs := map[string]string{}
	for i, p := range plans {
		items = append(items, p.items...)
		if p.err != nil {
			errs[names[i]] = p.err.Error()
		}
	}
	if len(errs) == 0 {
		errs = nil
	}
	return items, errs
}

// planAdoptions is adoptionPlan for one provider.
func (e *Engine) planAdoptions(ctx context.Context, provider string, now time.Time, ad *Adoption) ([]reaper.SweepItem, error) {
	var firstSeen map[string]time.Time
	err := e.view(ctx, func(tx reaper.Tx) error {
		firstSeen = map[string]time.Time{}
		return tx.Untracked(provider, func(id string, t time.Time) error {
			firstSeen[id] = t
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var items []reaper.SweepItem
	err = e.listProvider(ctx, provider, func(page []reaper.Sandbox) error {
		var found []reaper.SweepItem
		err := e.view(ctx, func(tx reaper.Tx) error {
			found = nil
			for _, sb := range page {
				if sb.ID == "" || (!sb.CreatedAt.IsZero() && sb.CreatedAt.After(now)) {
					continue
				}
				key := provider + "/" + sb.ID
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
				u := reaper.Untracked{Provider: provider, Sandbox: sb, FirstSeen: fs}
				if ad.assess(&u, now) && reaper.ValidateID("sandbox id", sb.ID) == nil {
					found = append(found, reaper.SweepItem{Key: key, Action: "adopt", Reason: reaper.ReasonAdopted, Detail: adoptDetail(&u)})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		items = append(items, found...)
		return nil
	})
	if errors.Is(err, errNoProvider) {
		err = fmt.Errorf("provider %s was disabled", provider)
	}
	return items, err
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

// closeGone records an active entry closed with reason gone: the
// provider's listings no longer show its sandbox, which an earlier one
// showed.
func closeGone(tx reaper.Tx, ent *reaper.Entry, now time.Time) error {
	ent.State, ent.CloseReason, ent.ClosedAt = reaper.StateClosed, reaper.ReasonGone, now
	if err := tx.PutEntry(ent); err != nil {
		return err
	}
	return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventClosed, Key: ent.Key(), Session: ent.Session,
		Reason: reaper.ReasonGone, Detail: "the provider's listings no longer show the sandbox, which an earlier one showed: someone else deleted it"})
}
