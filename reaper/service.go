package reaper

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// RegisterRequest registers one sandbox.
type RegisterRequest struct {
	Provider string `json:"provider"`
	ID       string `json:"id"`
	// Session, when set, ties the entry to a session: the entry becomes due
	// when the session ends, its lease lapses or its process exits. The
	// session is created on first use.
	Session string `json:"session,omitempty"`
	// TTL makes the entry due this long after registration. Zero means no
	// expiry (Engine.DefaultTTL applies when there is no session either).
	TTL Duration `json:"ttl,omitempty"`
	// Lease sets the session's lease: how long it may go without a
	// heartbeat. Needs Session. Registering also counts as a heartbeat.
	Lease Duration `json:"lease,omitempty"`
	// PID, with Session, names the session's process on the daemon's host:
	// when it exits, the session ends.
	PID      int               `json:"pid,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Keep     bool              `json:"keep,omitempty"`
	Attached bool              `json:"attached,omitempty"`
}

// TagRequest changes an entry's protection tags or labels. Nil fields are
// left alone.
type TagRequest struct {
	Keep     *bool `json:"keep,omitempty"`
	Attached *bool `json:"attached,omitempty"`
	// Labels are merged into the entry's labels; an empty value deletes
	// the label.
	Labels map[string]string `json:"labels,omitempty"`
}

// EndResult is the outcome of ending a session.
type EndResult struct {
	Session *Session    `json:"session"`
	Items   []SweepItem `json:"items"`
}

// checkProvider returns EUNKNOWN or EDISABLED unless the provider is
// enabled.
func (e *Engine) checkProvider(name string) error {
	if err := ValidateProviderName(name); err != nil {
		return err
	}
	e.pmu.RLock()
	_, enabled := e.provs.enabled[name]
	hint, disabled := e.provs.disabled[name]
	known := slices.Collect(maps.Keys(e.provs.enabled))
	known = append(known, slices.Collect(maps.Keys(e.provs.disabled))...)
	e.pmu.RUnlock()
	if enabled {
		return nil
	}
	if disabled {
		return Errorf(EDISABLED, "provider %s is not enabled on this daemon: %s", name, hint)
	}
	sort.Strings(known)
	if len(known) == 0 {
		return Errorf(EUNKNOWN, "unknown provider %q: this daemon has no providers", name)
	}
	return Errorf(EUNKNOWN, "unknown provider %q: reaperd knows %s", name, strings.Join(known, ", "))
}

func (r *RegisterRequest) validate() error {
	if err := ValidateID("sandbox id", r.ID); err != nil {
		return err
	}
	if r.Session != "" {
		if err := ValidateID("session", r.Session); err != nil {
			return err
		}
	} else {
		if r.Lease != 0 {
			return Errorf(EINVALID, "a lease needs a session: give --session (\"session\") with --lease")
		}
		if r.PID != 0 {
			return Errorf(EINVALID, "a pid needs a session: give --session (\"session\") with --pid")
		}
	}
	if r.TTL < 0 || r.Lease < 0 {
		return Errorf(EINVALID, "ttl and lease must not be negative")
	}
	if r.Lease != 0 && time.Duration(r.Lease) < time.Second {
		return Errorf(EINVALID, "lease %s is too short: use at least 1s", r.Lease)
	}
	if r.PID < 0 {
		return Errorf(EINVALID, "pid %d is invalid", r.PID)
	}
	return ValidateLabels(r.Labels)
}

// Register records a sandbox. It returns the entry and whether it was
// created; registering again an active entry of the same session is a no-op
// that returns the existing entry (so clients may retry).
func (e *Engine) Register(ctx context.Context, r RegisterRequest) (*Entry, bool, error) {
	e.init()
	if err := e.checkProvider(r.Provider); err != nil {
		return nil, false, err
	}
	if err := r.validate(); err != nil {
		return nil, false, err
	}
	if r.Session == "" && r.TTL == 0 && !r.Keep && !r.Attached {
		if e.DefaultTTL <= 0 {
			return nil, false, Errorf(EINVALID, "%s/%s has neither a ttl nor a session, so nothing would ever close it: give --ttl (\"ttl\") or --session (\"session\")", r.Provider, r.ID)
		}
		r.TTL = Duration(e.DefaultTTL)
	}
	var pidStart uint64
	if r.PID > 0 {
		var err error
		if pidStart, err = e.processStart(r.PID); err != nil {
			return nil, false, err
		}
	}
	owner := callerUID(ctx)
	var out *Entry
	var created bool
	var deadline time.Time // earliest time the new entry may become due
	err := e.Store.Update(ctx, func(tx Tx) error {
		out, created, deadline = nil, false, time.Time{}
		now := e.now()
		ent := &Entry{Provider: r.Provider, ID: r.ID, Session: r.Session, Labels: maps.Clone(r.Labels),
			Keep: r.Keep, Attached: r.Attached, RegisteredAt: now, State: StateActive, Owner: owner}
		if r.TTL > 0 {
			ent.ExpiresAt = now.Add(time.Duration(r.TTL))
		}
		key := ent.Key()
		old, err := tx.Entry(key)
		if err != nil {
			return err
		}
		if old != nil {
			switch old.State {
			case StateActive:
				if old.Session == r.Session {
					out = old
					return nil
				}
				if old.Session == "" {
					return Errorf(ECONFLICT, "%s is already registered (without a session, at %s): release it before registering it again", key, fmtTime(old.RegisteredAt))
				}
				return Errorf(ECONFLICT, "%s is already registered to session %s (at %s): release it before registering it again", key, old.Session, fmtTime(old.RegisteredAt))
			case StateClosing:
				return Errorf(ECONFLICT, "%s is being closed (since %s, %s): it cannot be registered again until it is closed", key, fmtTime(old.ClosingSince), old.CloseReason)
			}
		}
		if r.Session != "" {
			s, err := tx.Session(r.Session)
			if err != nil {
				return err
			}
			write := true
			switch {
			case s == nil:
				s = &Session{ID: r.Session, Lease: r.Lease, StartedAt: now, LastHeartbeat: now,
					PID: r.PID, PIDStart: pidStart, Owner: owner}
			case s.Ended():
				return sessionEndedError(s)
			default:
				if end := s.LeaseEnd(); !end.IsZero() && !now.Before(end) {
					return lapsedError(s)
				}
				same := (r.Lease == 0 || r.Lease == s.Lease) && (r.PID == 0 || r.PID == s.PID && pidStart == s.PIDStart)
				if same && now.Sub(s.LastHeartbeat) < heartbeatCoalesce(s.Lease) {
					// A heartbeat this recent is as good as now: spare
					// the session a rewrite per registration.
					write = false
					break
				}
				s.LastHeartbeat = now
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
			deadline = s.LeaseEnd()
		}
		deadline = earliest(deadline, ent.Deadline())
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
		if err := tx.Append(AuditEvent{Time: now, Kind: EventRegistered, Key: key, Session: ent.Session, Actor: owner,
			Detail: strings.Join(detail, ", ")}); err != nil {
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
			m.Registrations.Inc()
		}
		e.wakeBy(deadline)
	}
	return out, created, nil
}

// heartbeatCoalesce is how recent a session's last heartbeat must be for a
// registration not to rewrite it: a tenth of the lease, at most a second.
// A session registering many sandboxes at once then costs one session
// write, and its lease is at most that much shorter than exact.
func heartbeatCoalesce(lease Duration) time.Duration {
	return min(time.Duration(lease)/10, time.Second)
}

func sessionEndedError(s *Session) error {
	return Errorf(ECONFLICT, "session %s ended at %s (%s): its sandboxes are closed or being closed; start a new session id", s.ID, fmtTime(s.EndedAt), s.EndReason)
}

func lapsedError(s *Session) error {
	return Errorf(ECONFLICT, "session %s lease lapsed at %s (no heartbeat since %s): its sandboxes are being closed; start a new session id", s.ID, fmtTime(s.LeaseEnd()), fmtTime(s.LastHeartbeat))
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Heartbeat extends a session's lease. A session whose lease has already
// lapsed cannot be revived: its sandboxes are being closed.
func (e *Engine) Heartbeat(ctx context.Context, id string, lease Duration) (*Session, error) {
	e.init()
	if err := ValidateID("session", id); err != nil {
		return nil, err
	}
	if lease < 0 || (lease != 0 && time.Duration(lease) < time.Second) {
		return nil, Errorf(EINVALID, "lease %s is invalid: use at least 1s", lease)
	}
	var out *Session
	var lapsed bool
	err := e.Store.Update(ctx, func(tx Tx) error {
		out, lapsed = nil, false
		now := e.now()
		s, err := tx.Session(id)
		if err != nil {
			return err
		}
		if s == nil {
			return Errorf(ENOTFOUND, "session %s is not known: register a sandbox with --session %s first", id, id)
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
		s.LastHeartbeat = now
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
// returns it unchanged.
func (e *Engine) EndSession(ctx context.Context, id string) (*EndResult, error) {
	e.init()
	if err := ValidateID("session", id); err != nil {
		return nil, err
	}
	actor := callerUID(ctx)
	var res *EndResult
	var jobs []*Entry
	err := e.Store.Update(ctx, func(tx Tx) error {
		res, jobs = nil, nil
		now := e.now()
		s, err := tx.Session(id)
		if err != nil {
			return err
		}
		if s == nil {
			return Errorf(ENOTFOUND, "session %s is not known", id)
		}
		res = &EndResult{Session: s}
		if s.Ended() && s.Settled {
			return nil
		}
		if !s.Ended() {
			s.EndedAt, s.EndReason = now, ReasonSessionEnded
			if err := tx.Append(AuditEvent{Time: now, Kind: EventSessionEnded, Session: id, Actor: actor, Reason: ReasonSessionEnded}); err != nil {
				return err
			}
		}
		ents, err := activeEntries(tx, id)
		if err != nil {
			return err
		}
		for _, ent := range ents {
			item, job, err := e.apply(tx, ent, s, now)
			if err != nil {
				return err
			}
			if item.Action != "" {
				if item.Action == "close" {
					item.Result = string(StateClosing)
				}
				res.Items = append(res.Items, item)
			} else if ent.Keep {
				res.Items = append(res.Items, SweepItem{Key: ent.Key(), Session: id, Action: "skip", Reason: ReasonKeep})
			}
			if job != nil {
				jobs = append(jobs, job)
			}
		}
		s.Settled = true
		return tx.PutSession(s)
	})
	if err != nil {
		return nil, err
	}
	e.dispatch(jobs)
	return res, nil
}

// canModify reports whether the caller may change an entry: its owner,
// root, or the daemon's own user, or any caller when identities are
// unknown.
func canModify(ctx context.Context, ent *Entry, self uint32) bool {
	c, ok := CallerFrom(ctx)
	if !ok || ent.Owner == nil {
		return true
	}
	return c.UID == 0 || c.UID == self || c.UID == *ent.Owner
}

// modifiable returns the entry with the given key if the caller may
// change it: ENOTFOUND when there is none, EFORBIDDEN when it is another
// user's. verb names the change in the message.
func modifiable(ctx context.Context, tx Tx, key, verb string) (*Entry, error) {
	ent, err := tx.Entry(key)
	if err != nil {
		return nil, err
	}
	if ent == nil {
		return nil, Errorf(ENOTFOUND, "%s is not registered", key)
	}
	if !canModify(ctx, ent, selfUID) {
		return nil, Errorf(EFORBIDDEN, "%s was registered by uid %d: only that user or root may %s it", key, *ent.Owner, verb)
	}
	return ent, nil
}

// Tag changes an entry's keep and attached tags and labels. Only active
// entries can be tagged: once closing, the provider has been asked to
// delete the sandbox.
func (e *Engine) Tag(ctx context.Context, key string, r TagRequest) (*Entry, error) {
	e.init()
	if _, _, err := ParseKey(key); err != nil {
		return nil, err
	}
	if r.Keep == nil && r.Attached == nil && r.Labels == nil {
		return nil, Errorf(EINVALID, "nothing to change: give --keep, --attached or --label")
	}
	merged := map[string]string{}
	for k, v := range r.Labels {
		if v != "" {
			merged[k] = v
		}
	}
	if err := ValidateLabels(merged); err != nil {
		return nil, err
	}
	actor := callerUID(ctx)
	var out *Entry
	err := e.Store.Update(ctx, func(tx Tx) error {
		out = nil
		now := e.now()
		ent, err := modifiable(ctx, tx, key, "change")
		if err != nil {
			return err
		}
		switch ent.State {
		case StateClosing:
			return Errorf(ECONFLICT, "%s is already closing (since %s, %s): the provider has been asked to delete it", key, fmtTime(ent.ClosingSince), ent.CloseReason)
		case StateClosed, StateReleased:
			return Errorf(ECONFLICT, "%s is %s (at %s): register it again to track it", key, ent.State, fmtTime(ent.ClosedAt))
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
			if err := ValidateLabels(labels); err != nil {
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
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		return tx.Append(AuditEvent{Time: now, Kind: EventTagged, Key: key, Session: ent.Session, Actor: actor,
			Detail: strings.Join(changes, " ")})
	})
	if err != nil {
		return nil, err
	}
	e.Wake()
	return out, nil
}

// Release stops tracking an entry: its session closed the sandbox itself,
// or wants it left alone. Releasing a released or closed entry returns it
// unchanged.
func (e *Engine) Release(ctx context.Context, key string) (*Entry, error) {
	e.init()
	if _, _, err := ParseKey(key); err != nil {
		return nil, err
	}
	actor := callerUID(ctx)
	var out *Entry
	err := e.Store.Update(ctx, func(tx Tx) error {
		out = nil
		now := e.now()
		ent, err := modifiable(ctx, tx, key, "release")
		if err != nil {
			return err
		}
		if ent.State.Final() {
			out = ent
			return nil
		}
		prev := ent.State
		ent.State, ent.ClosedAt, ent.InFlight = StateReleased, now, false
		ent.CloseReason = ReasonReleased
		if err := tx.PutEntry(ent); err != nil {
			return err
		}
		out = ent
		detail := ""
		if prev == StateClosing {
			detail = "released while closing"
		}
		return tx.Append(AuditEvent{Time: now, Kind: EventReleased, Key: key, Session: ent.Session, Actor: actor,
			Reason: ReasonReleased, Detail: detail})
	})
	if err != nil {
		return nil, err
	}
	if m := e.Metrics; m != nil {
		m.Released.Inc()
	}
	return out, nil
}

// Entry returns one entry.
func (e *Engine) Entry(ctx context.Context, key string) (*Entry, error) {
	if _, _, err := ParseKey(key); err != nil {
		return nil, err
	}
	var out *Entry
	err := e.Store.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Entry(key)
		return err
	})
	if err == nil && out == nil {
		return nil, Errorf(ENOTFOUND, "%s is not registered", key)
	}
	return out, err
}

// Entries returns the entries matching f, at most limit of them (zero: no
// limit), in key order.
func (e *Engine) Entries(ctx context.Context, f EntryFilter, limit int) ([]*Entry, error) {
	if f.Provider != "" {
		if err := ValidateProviderName(f.Provider); err != nil {
			return nil, err
		}
	}
	if f.Session != "" {
		if err := ValidateID("session", f.Session); err != nil {
			return nil, err
		}
	}
	for _, s := range f.States {
		if !s.Valid() {
			return nil, Errorf(EINVALID, "state %q is invalid: use active, closing, closed or released", s)
		}
	}
	out := []*Entry{}
	err := e.Store.View(ctx, func(tx Tx) error {
		return tx.Entries(f, func(ent *Entry) error {
			out = append(out, ent)
			if limit > 0 && len(out) >= limit {
				return errStop
			}
			return nil
		})
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return out, err
}

// Session returns one session.
func (e *Engine) Session(ctx context.Context, id string) (*Session, error) {
	if err := ValidateID("session", id); err != nil {
		return nil, err
	}
	var out *Session
	err := e.Store.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Session(id)
		return err
	})
	if err == nil && out == nil {
		return nil, Errorf(ENOTFOUND, "session %s is not known", id)
	}
	return out, err
}

// Sessions returns the sessions in id order; only live ones when liveOnly
// is set.
func (e *Engine) Sessions(ctx context.Context, liveOnly bool) ([]*Session, error) {
	out := []*Session{}
	err := e.Store.View(ctx, func(tx Tx) error {
		return tx.Sessions(func(s *Session) error {
			if !liveOnly || !s.Ended() {
				out = append(out, s)
			}
			return nil
		})
	})
	return out, err
}

// Audit returns audit events at or after since, oldest first, at most
// limit (zero: no limit; the newest are kept).
func (e *Engine) Audit(ctx context.Context, since time.Time, limit int) ([]AuditEvent, error) {
	out := []AuditEvent{}
	err := e.Store.View(ctx, func(tx Tx) error {
		return tx.Audit(since, func(ev AuditEvent) error {
			out = append(out, ev)
			if limit > 0 && len(out) > 2*limit {
				out = append(out[:0], out[len(out)-limit:]...)
			}
			return nil
		})
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}

// Discover lists every enabled provider's live sandboxes and returns those
// the ledger does not track, recording each new one in the audit log.
func (e *Engine) Discover(ctx context.Context) ([]Untracked, map[string]string) {
	e.init()
	return e.discover(ctx, e.now())
}
