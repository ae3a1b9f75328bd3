package reaper

import "time"

// Action is what the policy decides to do with an entry.
type Action int

const (
	// ActionNone: the entry is not active (closing, closed or released);
	// the policy has nothing to decide.
	ActionNone Action = iota
	// ActionWait: not due yet; look again at Decision.At (zero: never on its
	// own account).
	ActionWait
	// ActionClose: due; close it for Decision.Reason.
	ActionClose
	// ActionSkip: due or not, it is protected (keep or attached) and must
	// not be closed.
	ActionSkip
	// ActionRelease: an attached entry whose session is over; stop tracking
	// it and leave the sandbox alone.
	ActionRelease
)

func (a Action) String() string {
	switch a {
	case ActionWait:
		return "wait"
	case ActionClose:
		return "close"
	case ActionSkip:
		return "skip"
	case ActionRelease:
		return "release"
	}
	return "none"
}

// Decision is the policy's verdict on one entry at one instant.
type Decision struct {
	Action Action
	Reason Reason
	// At is, for ActionWait and ActionSkip, the next instant at which the
	// decision may change on its own; zero when no deadline applies.
	At time.Time
}

// Decide is the reaping policy: a pure function of the entry, its session
// (nil when the entry names none, or names one the ledger does not have)
// and the current time.
//
//   - An entry that is not active: ActionNone.
//   - keep: ActionSkip, always.
//   - attached: ActionRelease once its session has ended or lapsed, or its
//     expiry passed; ActionSkip until then.
//   - expires_at passed: ActionClose (expired).
//   - its session ended: ActionClose (session-ended, or orphaned-process
//     when the session's process exited, orphaned-lease when its lease was
//     recorded as lapsed).
//   - its session's lease lapsed: ActionClose (orphaned-lease).
//   - otherwise ActionWait until the earlier of expires_at and the lease end.
//
// An entry whose session id is set but whose session is missing counts as
// orphaned by an ended session. See DueAt for when the decision changes.
func Decide(e *Entry, s *Session, now time.Time) Decision {
	if e.State != StateActive {
		return Decision{Action: ActionNone}
	}
	if e.Keep {
		return Decision{Action: ActionSkip, Reason: ReasonKeep}
	}
	expired := !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
	sessionReason, sessionAt := sessionState(e, s, now)

	if e.Attached {
		switch {
		case sessionReason != "":
			return Decision{Action: ActionRelease, Reason: sessionReason}
		case expired:
			return Decision{Action: ActionRelease, Reason: ReasonExpired}
		}
		return Decision{Action: ActionSkip, Reason: ReasonAttached, At: earliest(e.ExpiresAt, sessionAt)}
	}
	if (expired || sessionReason != "") && e.Adopted != "" {
		return Decision{Action: ActionClose, Reason: ReasonAdopted}
	}
	if expired {
		return Decision{Action: ActionClose, Reason: ReasonExpired}
	}
	if sessionReason != "" {
		return Decision{Action: ActionClose, Reason: sessionReason}
	}
	return Decision{Action: ActionWait, At: earliest(e.ExpiresAt, sessionAt)}
}

// sessionState returns why the entry's session no longer vouches for it
// ("" while it does) and, while it does, when its lease lapses.
func sessionState(e *Entry, s *Session, now time.Time) (Reason, time.Time) {
	if e.Session == "" {
		return "", time.Time{}
	}
	if s == nil {
		return ReasonSessionEnded, time.Time{}
	}
	if s.Ended() {
		switch s.EndReason {
		case ReasonOrphanedLease, ReasonOrphanedProcess:
			return s.EndReason, time.Time{}
		}
		return ReasonSessionEnded, time.Time{}
	}
	end := s.LeaseEnd()
	if !end.IsZero() && !now.Before(end) {
		return ReasonOrphanedLease, time.Time{}
	}
	return "", end
}

// DueAt returns the instant at which an entry next needs the engine on its
// own account, given its session (nil when the entry names none, or names
// one the ledger does not have), or the zero time when nothing will make it
// due by itself. It is the single definition of due-ness that the ledger's
// deadline index stores, so every change to an entry or to its session's
// end must re-index the entry at DueAt.
//
//   - active, keep: never.
//   - active otherwise: the earliest of its expiry and the instant its
//     session stopped vouching for it (the session ended, or is missing).
//   - closing and not held by a running daemon (InFlight false): its next
//     attempt (at once when none is set).
//   - closing and InFlight (held by a daemon) or Stuck (refused for good),
//     closed, released: never.
//
// A session's lease end is not folded in: it is the session's own deadline
// (Session.Deadline), so that a heartbeat rewrites one record, not one per
// entry. When a lease lapses the engine ends the session, and from then on
// DueAt carries the end to every entry.
//
// For an active entry, Decide closes or releases it at now exactly when
// DueAt(e, s) is set and not after now, or its session's lease has ended
// by now.
func DueAt(e *Entry, s *Session) time.Time {
	switch e.State {
	case StateActive:
		if e.Keep {
			return time.Time{}
		}
		at := e.ExpiresAt
		if e.Session != "" {
			switch {
			case s == nil:
				at = earliest(at, registeredOrEpoch(e))
			case s.Ended():
				at = earliest(at, s.EndedAt)
			}
		}
		return at
	case StateClosing:
		if e.InFlight || e.Stuck {
			return time.Time{}
		}
		switch {
		case !e.NextAttemptAt.IsZero():
			return e.NextAttemptAt
		case !e.ClosingSince.IsZero():
			return e.ClosingSince
		}
		return registeredOrEpoch(e)
	}
	return time.Time{}
}

func registeredOrEpoch(e *Entry) time.Time {
	if e.RegisteredAt.IsZero() {
		return time.Unix(1, 0).UTC()
	}
	return e.RegisteredAt
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
