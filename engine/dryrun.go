package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// dryRun reports what a sweep would do now, on a read-only snapshot,
// changing nothing: the adoptions first, then, in key order, every entry
// the policy would close, release or retry, and every keep or attached
// entry it would have closed without its tag. Its cost is that of the due
// entries and the keep entries, not of the ledger: it reads the deadline
// index up to now (which holds every active and closing entry that can be
// due, and every session whose lease ended) and the keep index.
func (e *Engine) dryRun(ctx context.Context) (*reaper.SweepReport, error) {
	now := e.now()
	// Adoptions first: they come from the providers' listings, and the
	// sandboxes would be closed right after.
	adoptions, listErrs := e.adoptionPlan(ctx, now)
	var rep *reaper.SweepReport
	err := e.view(ctx, func(tx reaper.Tx) error {
		rep = &reaper.SweepReport{Time: now, DryRun: true, DiscoveryErrors: listErrs}
		p := dryPlan{tx: tx, now: now, sessions: map[string]*reaper.Session{}, done: map[string]bool{}}
		due, err := tx.Due(now, 0)
		if err != nil {
			return err
		}
		for _, it := range due {
			if err := ctx.Err(); err != nil {
				return err
			}
			keys := []string{it.Key}
			if it.Kind == reaper.DueSession {
				if keys, err = tx.SessionEntries(it.Key); err != nil {
					return err
				}
			}
			for _, key := range keys {
				ent, err := tx.Entry(key)
				if err != nil {
					return err
				}
				if ent != nil {
					if err := p.entry(ent); err != nil {
						return err
					}
				}
			}
		}
		if err := tx.Kept(p.entry); err != nil {
			return err
		}
		active := 0
		err = tx.Counts(func(_ string, st reaper.State, n int) error {
			if st == reaper.StateActive {
				active += n
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(p.items, func(a, b reaper.SweepItem) int { return strings.Compare(a.Key, b.Key) })
		rep.Items = append(append([]reaper.SweepItem(nil), adoptions...), p.items...)
		rep.Waiting = max(active-p.active, 0)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	return rep, nil
}

// dryPlan applies the policy to the entries a dry run reaches, each once.
type dryPlan struct {
	tx       reaper.Tx
	now      time.Time
	sessions map[string]*reaper.Session
	done     map[string]bool
	items    []reaper.SweepItem
	active   int // active entries among items
}

func (p *dryPlan) session(id string) (*reaper.Session, error) {
	if id == "" {
		return nil, nil
	}
	if s, ok := p.sessions[id]; ok {
		return s, nil
	}
	s, err := p.tx.Session(id)
	if err != nil {
		return nil, err
	}
	p.sessions[id] = s
	return s, nil
}

func (p *dryPlan) add(ent *reaper.Entry, action string, reason reaper.Reason, detail string) {
	p.items = append(p.items, reaper.SweepItem{Key: ent.Key(), Session: ent.Session, Action: action, Reason: reason, Detail: detail})
	if ent.State == reaper.StateActive {
		p.active++
	}
}

func (p *dryPlan) entry(ent *reaper.Entry) error {
	key := ent.Key()
	if p.done[key] {
		return nil
	}
	p.done[key] = true
	now := p.now
	switch ent.State {
	case reaper.StateClosing:
		if due := reaper.DueAt(ent, nil); !due.IsZero() && !now.Before(due) {
			p.add(ent, "retry", ent.CloseReason, fmt.Sprintf("%d attempts so far; last error: %s", ent.Attempts, ent.LastError))
		}
		return nil
	case reaper.StateActive:
	default:
		return nil
	}
	s, err := p.session(ent.Session)
	if err != nil {
		return err
	}
	d := reaper.Decide(ent, s, now)
	switch d.Action {
	case reaper.ActionClose:
		p.add(ent, "close", d.Reason, dueDetail(ent, s, d.Reason, now))
	case reaper.ActionRelease:
		p.add(ent, "release", d.Reason, "attached: the sandbox is left running")
	case reaper.ActionSkip:
		probe := ent.Clone()
		probe.Keep, probe.Attached = false, false
		if dd := reaper.Decide(probe, s, now); dd.Action == reaper.ActionClose {
			p.add(ent, "skip", d.Reason, "would be closed: "+string(dd.Reason))
		}
	}
	return nil
}
