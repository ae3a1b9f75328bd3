package reaper

import (
	"context"
	"time"
)

// Store is the durable ledger of entries, sessions and audit events. The
// ledger package implements it on bbolt; the engine is its only writer.
type Store interface {
	// View runs fn in a read-only transaction over a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error

	// Update runs fn in a read-write transaction and returns once the
	// transaction is durably committed (fsync'd). Concurrent updates may be
	// committed together in one transaction (group commit), so fn may be
	// called more than once and must have no effect outside tx except on the
	// caller's own result variables, which it sets afresh on each call. If
	// fn returns an error, none of its writes are committed and Update
	// returns that error. Updates that were committed with it are unaffected.
	Update(ctx context.Context, fn func(Tx) error) error
}

// Tx is one ledger transaction. Methods returning entries and sessions
// return copies the caller may modify and put back.
type Tx interface {
	// Entry returns the entry with the given key, or nil if there is none.
	Entry(key string) (*Entry, error)
	// PutEntry creates or replaces an entry and maintains every index that
	// depends on it (deadline, session membership, retention).
	PutEntry(e *Entry) error
	// Entries calls fn for each entry matching f, in key order, until fn
	// returns an error.
	Entries(f EntryFilter, fn func(*Entry) error) error

	// Session returns the session with the given id, or nil if there is none.
	Session(id string) (*Session, error)
	// PutSession creates or replaces a session and maintains its indexes.
	PutSession(s *Session) error
	// SessionEntries returns the keys of the entries registered under the
	// session, in key order.
	SessionEntries(id string) ([]string, error)
	// Sessions calls fn for each session, in id order.
	Sessions(fn func(*Session) error) error
	// ProcessSessions calls fn for each live session that has a pid.
	ProcessSessions(fn func(*Session) error) error

	// Due returns up to limit items whose deadline is at or before now, in
	// deadline order. The cost is proportional to the items returned, not to
	// the size of the ledger.
	Due(now time.Time, limit int) ([]DueItem, error)
	// NextDeadline returns the earliest deadline in the ledger, or the zero
	// time when there is none.
	NextDeadline() (time.Time, error)

	// Append adds an event to the audit log.
	Append(ev AuditEvent) error
	// Audit calls fn for each event at or after since, oldest first.
	Audit(since time.Time, fn func(AuditEvent) error) error

	// Prune deletes closed and released entries, settled sessions without
	// entries, and audit events, that became final before the given time;
	// at most limit items in all.
	Prune(before time.Time, limit int) (PruneStats, error)
}

// EntryFilter selects entries. Zero fields select everything.
type EntryFilter struct {
	Provider string
	Session  string
	States   []State
}

// Match reports whether e passes the filter.
func (f EntryFilter) Match(e *Entry) bool {
	if f.Provider != "" && e.Provider != f.Provider {
		return false
	}
	if f.Session != "" && e.Session != f.Session {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, s := range f.States {
		if e.State == s {
			return true
		}
	}
	return false
}

// DueKind says what a DueItem points to.
type DueKind byte

const (
	DueEntry   DueKind = 'e' // Key is an entry key
	DueSession DueKind = 's' // Key is a session id
)

// DueItem is one deadline that has passed.
type DueItem struct {
	At   time.Time
	Kind DueKind
	Key  string
}

// PruneStats counts what Prune deleted.
type PruneStats struct {
	Entries  int `json:"entries"`
	Sessions int `json:"sessions"`
	Events   int `json:"events"`
}
