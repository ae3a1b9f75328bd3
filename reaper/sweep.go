package reaper

import (
	"context"
	"fmt"
	"time"
)

// SweepReport says what a sweep did, or with DryRun what it would do.
type SweepReport struct {
	Time   time.Time `json:"time"`
	DryRun bool      `json:"dry_run"`
	// Items lists the entries acted on: closed (or attempted), retried,
	// released, or skipped although due because they are protected.
	Items []SweepItem `json:"items"`
	// Waiting counts active entries not yet due (dry runs only).
	Waiting int `json:"waiting"`
	// Pruned counts what retention removed.
	Pruned PruneStats `json:"pruned"`
	// Untracked lists live sandboxes no entry tracks (with discovery).
	Untracked []Untracked `json:"untracked,omitempty"`
	// DiscoveryErrors holds, per provider, why it could not be listed.
	DiscoveryErrors map[string]string `json:"discovery_errors,omitempty"`
}

// SweepItem is one entry in a SweepReport.
type SweepItem struct {
	Key     string `json:"key"`
	Session string `json:"session,omitempty"`
	// Action is "close", "retry", "release" or "skip".
	Action string `json:"action"`
	Reason Reason `json:"reason,omitempty"`
	// Result is the entry's state after the sweep: "closed", "closing"
	// (the close failed or is still running; it will be retried),
	// "released"; empty for skips and dry runs.
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
	Detail string `json:"detail,omitempty"`

	retryAt time.Time // when a failed close is retried; wakes the loop
}

// Untracked is a live sandbox at a provider that no entry tracks.
type Untracked struct {
	Provider string  `json:"provider"`
	Sandbox  Sandbox `json:"sandbox"`
}

// SweepOptions configures Sweep.
type SweepOptions struct {
	// DryRun reports what a sweep would do and changes nothing.
	DryRun bool
}

// Sweep runs a full sweep: every due entry, retries of closing entries,
// pruning, and discovery when enabled. It waits for the close calls it
// started (each bounded by CloseTimeout) or for ctx, and reports their
// outcome. On a running engine the sweep runs on Run's goroutine; without
// Run it runs on the caller's.
func (e *Engine) Sweep(ctx context.Context, o SweepOptions) (*SweepReport, error) {
	e.init()
	if o.DryRun {
		return e.dryRun(ctx)
	}
	var reply sweepReply
	if e.running.Load() {
		req := sweepRequest{ctx: ctx, reply: make(chan sweepReply, 1)}
		select {
		case e.requests <- req:
		case <-ctx.Done():
			return nil, Errorf(EUNAVAILABLE, "sweep not started: %v", ctx.Err())
		}
		select {
		case reply = <-req.reply:
		case <-ctx.Done():
			return nil, Errorf(EUNAVAILABLE, "sweep interrupted: %v", ctx.Err())
		}
	} else {
		// No loop: run the pass here, still one at a time.
		reply = e.safePass(ctx, true, nil)
	}
	if reply.err != nil {
		return nil, reply.err
	}
	byKey := make(map[string]int, len(reply.report.Items))
	for i, it := range reply.report.Items {
		byKey[it.Key] = i
	}
	for _, j := range reply.jobs {
		select {
		case res := <-j.done:
			if i, ok := byKey[res.Key]; ok {
				reply.report.Items[i].Result, reply.report.Items[i].Error = res.Result, res.Error
			}
		case <-ctx.Done():
			return reply.report, nil
		}
	}
	return reply.report, nil
}

// TriggerSweep asks a running engine for a full sweep without waiting for
// it. A cron schedule calls it. It returns false, and does nothing, while a
// sweep it triggered is still queued or running, so sweeps never pile up.
// (The flag is released by a deferred call, so a panic cannot leak it.)
func (e *Engine) TriggerSweep() bool {
	e.init()
	if !e.triggered.CompareAndSwap(false, true) {
		return false
	}
	go func() {
		defer e.triggered.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), e.closeTimeout()+time.Minute)
		defer cancel()
		if _, err := e.Sweep(ctx, SweepOptions{}); err != nil {
			e.logger().Error("scheduled sweep", LogErr, err)
		}
	}()
	return true
}

// dryRun applies the policy to every active and closing entry on a read-
// only snapshot.
func (e *Engine) dryRun(ctx context.Context) (*SweepReport, error) {
	now := e.now()
	rep := &SweepReport{Time: now, DryRun: true}
	err := e.Store.View(ctx, func(tx Tx) error {
		sessions := map[string]*Session{}
		return tx.Entries(EntryFilter{States: []State{StateActive, StateClosing}}, func(ent *Entry) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := ent.Key()
			if ent.State == StateClosing {
				if !now.Before(ent.NextAttemptAt) && !ent.InFlight {
					rep.Items = append(rep.Items, SweepItem{Key: key, Session: ent.Session, Action: "retry", Reason: ent.CloseReason,
						Detail: fmt.Sprintf("%d attempts so far; last error: %s", ent.Attempts, ent.LastError)})
				}
				return nil
			}
			var s *Session
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
			d := Decide(ent, s, now)
			switch d.Action {
			case ActionClose:
				rep.Items = append(rep.Items, SweepItem{Key: key, Session: ent.Session, Action: "close", Reason: d.Reason,
					Detail: dueDetail(ent, s, d.Reason, now)})
			case ActionRelease:
				rep.Items = append(rep.Items, SweepItem{Key: key, Session: ent.Session, Action: "release", Reason: d.Reason,
					Detail: "attached: the sandbox is left running"})
			case ActionSkip:
				probe := ent.Clone()
				probe.Keep, probe.Attached = false, false
				if dd := Decide(probe, s, now); dd.Action == ActionClose {
					rep.Items = append(rep.Items, SweepItem{Key: key, Session: ent.Session, Action: "skip", Reason: d.Reason,
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

func dueDetail(ent *Entry, s *Session, r Reason, now time.Time) string {
	switch r {
	case ReasonExpired:
		return fmt.Sprintf("expired %s ago", now.Sub(ent.ExpiresAt).Round(time.Second))
	case ReasonOrphanedLease:
		if s != nil {
			return fmt.Sprintf("session %s: no heartbeat for %s (lease %s)", s.ID, now.Sub(s.LastHeartbeat).Round(time.Second), s.Lease)
		}
	case ReasonOrphanedProcess:
		if s != nil {
			return fmt.Sprintf("session %s: process %d exited", s.ID, s.PID)
		}
	case ReasonSessionEnded:
		if s == nil {
			return fmt.Sprintf("session %s is gone", ent.Session)
		}
		return fmt.Sprintf("session %s ended without releasing it", s.ID)
	}
	return ""
}
