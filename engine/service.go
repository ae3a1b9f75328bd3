package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

func validateRegister(r *reaper.RegisterRequest) error {
	if err := reaper.ValidateID("sandbox id", r.ID); err != nil {
		return err
	}
	if r.Session != "" {
		if err := reaper.ValidateID("session", r.Session); err != nil {
			return err
		}
	} else {
		if r.Lease != 0 {
			return reaper.Errorf(reaper.EINVALID, "a lease needs a session: give --session (\"session\") with --lease")
		}
		if r.PID != 0 {
			return reaper.Errorf(reaper.EINVALID, "a pid needs a session: give --session (\"session\") with --pid")
		}
	}
	if r.TTL < 0 || r.Lease < 0 {
		return reaper.Errorf(reaper.EINVALID, "ttl and lease must not be negative")
	}
	if r.Lease != 0 && time.Duration(r.Lease) < time.Second {
		return reaper.Errorf(reaper.EINVALID, "lease %s is too short: use at least 1s", r.Lease)
	}
	if r.TTL != 0 && time.Duration(r.TTL) < time.Second {
		return reaper.Errorf(reaper.EINVALID, "ttl %s is too short: use at least 1s", r.TTL)
	}
	if r.PID < 0 {
		return reaper.Errorf(reaper.EINVALID, "pid %d is invalid", r.PID)
	}
	if err := r.Resources.Validate(); err != nil {
		return err
	}
	return reaper.ValidateLabels(r.Labels)
}

// Register records a sandbox. It returns the entry and whether it was
// created; registering again an active entry of the same session is a no-op
// that returns the existing entry (so clients may retry). Registering into
// another user's session is forbidden.
func (e *Engine) Register(ctx context.Context, r reaper.RegisterRequest) (*reaper.Entry, bool, error) {
	e.init()
	if err := e.providers.check(r.Provider); err != nil {
		return nil, false, err
	}
	if err := validateRegister(&r); err != nil {
		return nil, false, err
	}
	if r.Session == "" && r.TTL == 0 && !r.Keep && !r.Attached {
		if e.DefaultTTL <= 0 {
			return nil, false, reaper.Errorf(reaper.EINVALID, "%s/%s has neither a ttl nor a session, so nothing would ever close it: give --ttl (\"ttl\") or --session (\"session\")", r.Provider, r.ID)
		}
		r.TTL = reaper.Duration(e.DefaultTTL)
	}
	var pidStart uint64
	if r.PID > 0 {
		var err error
		if pidStart, err = e.processStart(r.PID); err != nil {
			return nil, false, err
		}
	}
	owner, token := reaper.CallerUID(ctx), reaper.CallerToken(ctx)
	var out *reaper.Entry
	var created bool
	var deadline time.Time // earliest time the new entry may become due
	err := e.update(ctx, func(tx reaper.Tx) error {
		out, created, deadline = nil, false, time.Time{}
		now := e.now()
		ent := &reaper.Entry{Provider: r.Provider, ID: r.ID, Session: r.Session, Labels: maps.Clone(r.Labels),
			Keep: r.Keep, Attached: r.Attached, RegisteredAt: now, State: reaper.StateActive, Owner: owner, OwnerToken: token,
			Resources: r.Resources}
		if r.TTL > 0 {
			ent.ExpiresAt = now.Add(time.Duration(r.TTL))
		}
		key := ent.Key()
		var s *reaper.Session
		if r.Session != "" {
			var err error
			if s, err = tx.Session(r.Session); err != nil {
				return err
			}
			if s != nil {
				if err := e.Access.Check(ctx, s.Ownership(), "session "+s.ID, "register into"); err != nil {
					return err
				}
			}
		}
		old, err := tx.Entry(key)
		if err != nil {
			return err
		}
		if old != nil {
			switch old.State {
			case reaper.StateActive:
				if old.Session == r.Session {
					out = old
					return nil
				}
				if old.Session == "" {
					return reaper.Errorf(reaper.ECONFLICT, "%s is already registered (without a session, at %s): release it before registering it again", key, fmtTime(old.RegisteredAt))
				}
				return reaper.Errorf(reaper.ECONFLICT, "%s is already registered to session %s (at %s): release it before registering it again", key, old.Session, fmtTime(old.RegisteredAt))
			case reaper.StateClosing:
				return reaper.Errorf(reaper.ECONFLICT, "%s is being closed (since %s, %s): it cannot be registered again until it is closed", key, fmtTime(old.ClosingSince), old.CloseReason)
			}
		}
		if r.Session != "" {
			write := true
			switch {
			case s == nil:
				s = &reaper.Session{ID: r.Session, Lease: r.Lease, StartedAt: now, LastHeartbeat: now,
					PID: r.PID, PIDStart: pidStart, Owner: owner, OwnerToken: token}
			case s.Ended():
				return sessionEndedError(s)
			default:
				if end := s.LeaseEnd(); !end.IsZero() && !now.Before(end) {
					return lapsedError(s)
				}
				same := (r.Lease == 0 || r.Lease == s.Lease) && (r.PID == 0 || r.PID == s.PID && pidStart == s.PIDStart)
				if same && s.LeaseGrace == 0 && now.Sub(s.LastHeartbeat) < heartbeatCoalesce(s.Lease) {
					// A heartbeat this recent is as good as now: spare
					// the session a rewrite per registration.
					write = false
					break
				}
				s.LastHeartbeat, s.LeaseGrace = now, 0
				if r.Lease > 0 {
					s.Lease = r.Lease
				}
				if r.PID > 0 {
					s.PID, s.PIDStart = r.PID, pidStart
				}
			}
			if write {
				if err := tx.PutSession(s); err != nil {
					return err
				}
			}
			deadline = s.Deadline()
		}
		deadline = earliest(deadline, reaper.DueAt(ent, s))
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		var detail []string
		if ent.Keep {
			detail = append(detail, "keep")
		}
		if ent.Attached {
			detail = append(detail, "attached")
		}
		if !ent.ExpiresAt.IsZero() {
			detail = append(detail, "expires "+fmtTime(ent.ExpiresAt))
		}
		if err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventRegistered, Key: key, Session: ent.Session, Actor: owner, ActorToken: token,
			Detail: strings.Join(detail, ", "), Labels: ent.Labels, Keep: ent.Keep, Attached: ent.Attached, Resources: ent.Resources}); err != nil {
			return err
		}
		out, created = ent, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if created {
		if m := e.Metrics; m != nil {
			m.Registrations.WithLabelValues(r.Provider).Inc()
		}
		e.wakeBy(deadline)
		// Verify, soon and batched, that reaperd's credentials see it.
		e.wantListing(r.Provider, e.clock.Now().Add(verifyDelay), verifyGap)
	}
	if r.PID > 0 {
		e.notifyPID()
	}
	return out, created, nil
}

// heartbeatCoalesce is how recent a session's last heartbeat must be for a
// registration not to rewrite it: a tenth of the lease, at most a second.
// A session registering many sandboxes at once then costs one session
// write, and its lease is at most that much shorter than exact.
func heartbeatCoalesce(lease reaper.Duration) time.Duration {
	return min(time.Duration(lease)/10, time.Second)
}

func sessionEndedError(s *reaper.Session) error {
	return reaper.Errorf(reaper.ECONFLICT, "session %s ended at %s (%s): its sandboxes are closed or being closed; start a new session id", s.ID, fmtTime(s.EndedAt), s.EndReason)
}

func lapsedError(s *reaper.Session) error {
	return reaper.Errorf(reaper.ECONFLICT, "session %s lease lapsed at %s (no heartbeat since %s): its sandboxes are being closed; start a new session id", s.ID, fmtTime(s.LeaseEnd()), fmtTime(s.LastHeartbeat))
}

// earliest returns the earlier of two times, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

// Heartbeat extends a session's lease. A session whose lease has already
// lapsed cannot be revived: its sandboxes are being closed.
func (e *Engine) Heartbeat(ctx context.Context, id string, lease reaper.Duration) (*reaper.Session, error) {
	e.init()
	if err := reaper.ValidateID("session", id); err != nil {
		return nil, err
	}
	if lease < 0 || (lease != 0 && time.Duration(lease) < time.Second) {
		return nil, reaper.Errorf(reaper.EINVALID, "lease %s is invalid: use at least 1s", lease)
	}
	var out *reaper.Session
	var lapsed bool
	err := e.update(ctx, func(tx reaper.Tx) error {
		out, lapsed = nil, false
		now := e.now()
		s, err := tx.Session(id)
		if err != nil {
			return err
		}
		if s == nil {
			return reaper.Errorf(reaper.ENOTFOUND, "session %s is not known: register a sandbox with --session %s first", id, id)
		}
		if err := e.Access.Check(ctx, s.Ownership(), "session "+id, "heartbeat"); err != nil {
			return err
		}
		if s.Ended() {
			return sessionEndedError(s)
		}
		if end := s.LeaseEnd(); !end.IsZero() && !now.Before(end) {
			// Too late: leave the lapse to the engine, which ends the
			// session and closes its sandboxes.
			out, lapsed = s, true
			return nil
		}
		s.LastHeartbeat, s.LeaseGrace = now, 0
		if lease > 0 {
			s.Lease = lease
		}
		out = s
		return tx.PutSession(s)
	})
	if err != nil {
		return nil, err
	}
	if lapsed {
		e.Wake()
		return nil, lapsedError(out)
	}
	return out, nil
}

// EndSession ends a session: its entries that are still active are closed
// (unless keep), attached ones are released. Ending an ended session
// returns it, acting again on any entry that is still due.
func (e *Engine) EndSession(ctx context.Context, id string) (*reaper.EndResult, error) {
	e.init()
	if err := reaper.ValidateID("session", id); err != nil {
		return nil, err
	}
	actor, actorToken := reaper.CallerUID(ctx), reaper.CallerToken(ctx)
	var res *reaper.EndResult
	var released int
	err := e.update(ctx, func(tx reaper.Tx) error {
		res, released = nil, 0
		now := e.now()
		s, err := tx.Session(id)
		if err != nil {
			return err
		}
		if s == nil {
			return reaper.Errorf(reaper.ENOTFOUND, "session %s is not known", id)
		}
		if err := e.Access.Check(ctx, s.Ownership(), "session "+id, "end"); err != nil {
			return err
		}
		res = &reaper.EndResult{Session: s}
		if !s.Ended() {
			s.EndedAt, s.EndReason = now, reaper.ReasonSessionEnded
			if err := tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventSessionEnded, Session: id, Actor: actor, ActorToken: actorToken,
				Reason: reaper.ReasonSessionEnded}); err != nil {
				return err
			}
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		ents, err := activeEntries(tx, id)
		if err != nil {
			return err
		}
		for _, ent := range ents {
			t, err := transition(tx, ent, s, now)
			if err != nil {
				return err
			}
			if t.close {
				// Due at once: the loop claims it as soon as this commits.
				if err := tx.PutEntry(ent); err != nil {
					return err
				}
				t.item.Result = string(reaper.StateClosing)
			}
			if t.released {
				released++
			}
			switch {
			case t.item.Action != "":
				res.Items = append(res.Items, t.item)
			case ent.Keep:
				res.Items = append(res.Items, reaper.SweepItem{Key: ent.Key(), Session: id, Action: "skip", Reason: reaper.ReasonKeep})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if m := e.Metrics; m != nil {
		m.Released.Add(float64(released))
	}
	e.Wake()
	return res, nil
}

// modifiable returns the entry with the given key if the caller may
// change it: ENOTFOUND when there is none, EFORBIDDEN when it is another
// user's. verb names the change in the message.
func (e *Engine) modifiable(ctx context.Context, tx reaper.Tx, key, verb string) (*reaper.Entry, error) {
	ent, err := tx.Entry(key)
	if err != nil {
		return nil, err
	}
	if ent == nil {
		return nil, reaper.Errorf(reaper.ENOTFOUND, "%s is not registered", key)
	}
	if err := e.Access.Check(ctx, ent.Ownership(), key, verb); err != nil {
		return nil, err
	}
	return ent, nil
}

// Tag changes an entry's keep and attached tags, labels and expiry. Only
// active entries can be tagged: once closing, the provider has been asked
// to delete the sandbox. A tag that would leave an entry that nothing could
// ever close (no keep or attached tag, no ttl, no session) takes the
// daemon's default_ttl, or is refused without one.
func (e *Engine) Tag(ctx context.Context, key string, r reaper.TagRequest) (*reaper.Entry, error) {
	e.init()
	if _, _, err := reaper.ParseKey(key); err != nil {
		return nil, err
	}
	if r.Keep == nil && r.Attached == nil && r.Labels == nil && r.TTL == 0 {
		return nil, reaper.Errorf(reaper.EINVALID, "nothing to change: give --keep, --attached, --ttl or --label")
	}
	if r.TTL < 0 {
		return nil, reaper.Errorf(reaper.EINVALID, "ttl must not be negative")
	}
	merged := map[string]string{}
	for k, v := range r.Labels {
		if v != "" {
			merged[k] = v
		}
	}
	if err := reaper.ValidateLabels(merged); err != nil {
		return nil, err
	}
	actor, actorToken := reaper.CallerUID(ctx), reaper.CallerToken(ctx)
	var out *reaper.Entry
	var due time.Time
	err := e.update(ctx, func(tx reaper.Tx) error {
		out, due = nil, time.Time{}
		now := e.now()
		ent, err := e.modifiable(ctx, tx, key, "change")
		if err != nil {
			return err
		}
		switch ent.State {
		case reaper.StateClosing:
			return reaper.Errorf(reaper.ECONFLICT, "%s is already closing (since %s, %s): the provider has been asked to delete it", key, fmtTime(ent.ClosingSince), ent.CloseReason)
		case reaper.StateClosed, reaper.StateReleased:
			return reaper.Errorf(reaper.ECONFLICT, "%s is %s (at %s): register it again to track it", key, ent.State, fmtTime(ent.ClosedAt))
		}
		var changes []string
		if r.Keep != nil && *r.Keep != ent.Keep {
			ent.Keep = *r.Keep
			changes = append(changes, fmt.Sprintf("keep=%t", ent.Keep))
		}
		if r.Attached != nil && *r.Attached != ent.Attached {
			ent.Attached = *r.Attached
			changes = append(changes, fmt.Sprintf("attached=%t", ent.Attached))
		}
		if r.TTL > 0 {
			ent.ExpiresAt = now.Add(time.Duration(r.TTL))
			changes = append(changes, "expires "+fmtTime(ent.ExpiresAt))
		}
		if !ent.Keep && !ent.Attached && ent.ExpiresAt.IsZero() && ent.Session == "" {
			if e.DefaultTTL <= 0 {
				return reaper.Errorf(reaper.EINVALID, "%s has neither a ttl nor a session, so without keep or attached nothing would ever close it: give --ttl (\"ttl\") with the change", key)
			}
			ent.ExpiresAt = now.Add(e.DefaultTTL)
			changes = append(changes, "expires "+fmtTime(ent.ExpiresAt)+" (default_ttl)")
		}
		if r.Labels != nil {
			labels := maps.Clone(ent.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
				v := r.Labels[k]
				if v == "" {
					if _, ok := labels[k]; ok {
						delete(labels, k)
						changes = append(changes, "-"+k)
					}
				} else if labels[k] != v {
					labels[k] = v
					changes = append(changes, k+"="+v)
				}
			}
			if err := reaper.ValidateLabels(labels); err != nil {
				return err
			}
			if len(labels) == 0 {
				labels = nil
			}
			ent.Labels = labels
		}
		out = ent
		if len(changes) == 0 {
			return nil
		}
		s, err := sessionOf(tx, ent)
		if err != nil {
			return err
		}
		due = reaper.DueAt(ent, s)
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventTagged, Key: key, Session: ent.Session, Actor: actor, ActorToken: actorToken,
			Detail: strings.Join(changes, " "), Labels: ent.Labels, Keep: ent.Keep, Attached: ent.Attached})
	})
	if err != nil {
		return nil, err
	}
	e.wakeBy(due)
	return out, nil
}

// Release stops tracking an entry: its session closed the sandbox itself,
// or wants it left alone. Releasing a released or closed entry returns it
// unchanged. A close queued but not yet sent is not sent.
func (e *Engine) Release(ctx context.Context, key string) (*reaper.Entry, error) {
	e.init()
	if _, _, err := reaper.ParseKey(key); err != nil {
		return nil, err
	}
	actor, actorToken := reaper.CallerUID(ctx), reaper.CallerToken(ctx)
	var out *reaper.Entry
	var released bool
	err := e.update(ctx, func(tx reaper.Tx) error {
		out, released = nil, false
		now := e.now()
		ent, err := e.modifiable(ctx, tx, key, "release")
		if err != nil {
			return err
		}
		if ent.State.Final() {
			out = ent
			return nil
		}
		prev := ent.State
		ent.State, ent.ClosedAt, ent.InFlight = reaper.StateReleased, now, false
		ent.CloseReason = reaper.ReasonReleased
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		out, released = ent, true
		detail := ""
		if prev == reaper.StateClosing {
			detail = "released while closing"
		}
		return tx.Append(reaper.AuditEvent{Time: now, Kind: reaper.EventReleased, Key: key, Session: ent.Session, Actor: actor, ActorToken: actorToken,
			Reason: reaper.ReasonReleased, Detail: detail})
	})
	if err != nil {
		return nil, err
	}
	if m := e.Metrics; m != nil && released {
		m.Released.Inc()
	}
	return out, nil
}
