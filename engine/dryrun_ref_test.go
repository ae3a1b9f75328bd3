package engine

import (
	"context"
	"fmt"

	"github.com/reaperd/reaperd/reaper"
)

// dryRunScan is the dry run as it was before the indexes: the policy
// applied to every active and closing entry. Tests compare Sweep's dry run
// with it.
func (e *Engine) dryRunScan(ctx context.Context) (*reaper.SweepReport, error) {
	now := e.now()
	adoptions, listErrs := []reaper.SweepItem(nil), map[string]string(nil)
	var rep *reaper.SweepReport
	err := e.view(ctx, func(tx reaper.Tx) error {
		rep = &reaper.SweepReport{Time: now, DryRun: true, Items: append([]reaper.SweepItem(nil), adoptions...), DiscoveryErrors: listErrs}
		sessions := map[string]*reaper.Session{}
		return tx.Entries(reaper.EntryFilter{States: []reaper.State{reaper.StateActive, reaper.StateClosing}}, func(ent *reaper.Entry) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := ent.Key()
			if ent.State == reaper.StateClosing {
				if due := reaper.DueAt(ent, nil); !due.IsZero() && !now.Before(due) {
					rep.Items = append(rep.Items, reaper.SweepItem{Key: key, Session: ent.Session, Action: "retry", Reason: ent.CloseReason,
						Detail: fmt.Sprintf("%d attempts so far; last error: %s", ent.Attempts, ent.LastError)})
				}
				return nil
			}
			var s *reaper.Session
			if ent.Session != "" {
				var ok bool
				if s, ok = sessions[ent.Session]; !ok {
					var err error
					if s, err = tx.Session(ent.Session); err != nil {
						return err
					}
					sessions[ent.Session] = s
				}
			}
			d := reaper.Decide(ent, s, now)
			switch d.Action {
			case reaper.ActionClose:
				rep.Items = append(rep.Items, reaper.SweepItem{Key: key, Session: ent.Session, Action: "close", Reason: d.Reason,
					Detail: dueDetail(ent, s, d.Reason, now)})
			case reaper.ActionRelease:
				rep.Items = append(rep.Items, reaper.SweepItem{Key: key, Session: ent.Session, Action: "release", Reason: d.Reason,
					Detail: "attached: the sandbox is left running"})
			case reaper.ActionSkip:
				probe := ent.Clone()
				probe.Keep, probe.Attached = false, false
				if dd := reaper.Decide(probe, s, now); dd.Action == reaper.ActionClose {
					rep.Items = append(rep.Items, reaper.SweepItem{Key: key, Session: ent.Session, Action: "skip", Reason: d.Reason,
						Detail: "would be closed: " + string(dd.Reason)})
				} else {
					rep.Waiting++
				}
			default:
				rep.Waiting++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	return rep, nil
}
