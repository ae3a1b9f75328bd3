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
	// transaction is durably committed (fsync'd).
	//
	// Concurrent updates may be committed together in one transaction
	// (group commit), so fn may be called more than once. It must have no
	// effect outside tx (no logs, no metrics, no channel sends) except on the
	// caller's own result variables, which it sets afresh on each call; the
	// caller acts on them once Update has returned nil.
	//
	// If fn returns an error, none of its writes are committed and Update
	// returns that error; updates committed with it are unaffected. An fn
	// that refuses (returns an error) before it writes anything costs the
	// rest of its batch nothing, so domain checks belong before the first
	// write.
	//
	// An error that prevents the commit itself (a full disk, an I/O error)
	// is returned as an *Error with code EUNAVAILABLE that names the cause.
	Update(ctx context.Context, fn func(Tx) error) error
}

// Tx is one ledger transaction. Methods returning entries and sessions
// return copies the caller may modify and put back. A record that cannot be
// decoded is reported as a *CorruptError (matching ErrCorrupt).
type Tx interface {
	// Entry returns the entry with the given key, or nil if there is none.
	Entry(key string) (*Entry, error)
	// PutEntry creates or replaces an entry and maintains every index that
	// depends on it: its deadline at DueAt(entry, its session), session
	// membership, the closing and in-flight sets, retention.
	PutEntry(e *Entry) error
	// Entries calls fn for each entry matching f, in key order, until fn
	// returns an error.
	Entries(f EntryFilter, fn func(*Entry) error) error

	// Session returns the session with the given id, or nil if there is none.
	Session(id string) (*Session, error)
	// PutSession creates or replaces a session and maintains its indexes.
	// When the session ends, every one of its entries is re-indexed at its
	// new DueAt in the same transaction.
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
	// DropDue deletes one deadline key, for an item whose record is gone or
	// has been quarantined.
	DropDue(it DueItem) error

	// InFlight calls fn with the key of every entry marked InFlight, in key
	// order.
	InFlight(fn func(key string) error) error
	// Closing calls fn for each closing entry of the provider (all providers
	// when provider is empty), in key order. The cost is proportional to
	// the closing entries visited.
	Closing(provider string, fn func(*Entry) error) error
	// Kept calls fn for each active entry tagged keep, in key order. The
	// cost is proportional to the keep entries, not to the ledger: a dry
	// run reports the ones a sweep would have closed without the tag.
	Kept(fn func(*Entry) error) error

	// Unseen calls fn for each entry of the provider (all providers when
	// provider is empty) that is active or closing and has not been seen in
	// a listing yet (Seen false), in key order. The cost is proportional to
	// the entries visited.
	Unseen(provider string, fn func(*Entry) error) error
	// Pending is Unseen without the unverified entries: those waiting for
	// their first judgment by a listing. The cost is proportional to them,
	// however many entries are unverified.
	Pending(provider string, fn func(*Entry) error) error
	// SetVerification records what a listing showed of an entry (as read
	// in this transaction), without rewriting it: seen, or not seen and
	// unverified. It is a no-op for an entry that is final or already seen.
	SetVerification(e *Entry, seen, unverified bool) error

	// Counts calls fn with the number of entries of each provider in each
	// state (pairs with none are left out). The cost does not depend on
	// the number of entries.
	Counts(fn func(provider string, st State, n int) error) error
	// Unverified calls fn with the number of each provider's unverified
	// entries (active or closing, Unverified set; providers with none are
	// left out). The cost does not depend on the number of entries.
	Unverified(fn func(provider string, n int) error) error

	// Untracked calls fn for each live sandbox of the provider that no entry
	// tracks, as recorded by PutUntracked, with the time reaperd first saw
	// it, in id order.
	Untracked(provider string, fn func(id string, firstSeen time.Time) error) error
	// PutUntracked records that the provider's sandbox id is live and
	// untracked, first seen at firstSeen.
	PutUntracked(provider, id string, firstSeen time.Time) error
	// DeleteUntracked forgets an untracked sandbox (gone, or now tracked).
	DeleteUntracked(provider, id string) error

	// Quarantine moves the record of the given kind and key aside, with the
	// reason it could not be used, and deletes the indexes that name it. It
	// is a no-op when there is no such record.
	Quarantine(kind DueKind, key, reason string, at time.Time) error
	// Quarantined calls fn for each quarantined record, oldest first.
	Quarantined(fn func(QuarantinedRecord) error) error

	// Alive returns the daemon's last liveness stamp (zero when none).
	Alive() (AliveStamp, error)
	// SetAlive records the daemon's liveness stamp.
	SetAlive(a AliveStamp) error

	// Append adds an event to the audit log.
	Append(ev AuditEvent) error
	// Audit calls fn for each event at or after since, oldest first.
	Audit(since time.Time, fn func(AuditEvent) error) error
	// AuditAfter calls fn for each event after the one cursor names (from
	// an earlier call), or, with an empty cursor, at or after since, oldest
	// first, with each event's own cursor. A malformed cursor is an
	// EINVALID error.
	AuditAfter(cursor string, since time.Time, fn func(cursor string, ev AuditEvent) error) error
	// AuditScan calls fn for each event at or after since, oldest first,
	// for a reader of the whole log: the events come without Detail and
	// Error, which it does not need and which cost most to decode.
	AuditScan(since time.Time, fn func(AuditEvent) error) error

	// Prune deletes, at most limit items in all: closed and released
	// entries that became final before the given time; ended sessions left
	// with no entries that ended before it; live sessions with neither a
	// lease nor a pid that have had no entries and no heartbeat since
	// before it; and audit events older than it.
	Prune(before time.Time, limit int) (PruneStats, error)
}

// EntryFilter selects entries. Zero fields select everything.
type EntryFilter struct {
	Provider string
	Session  string
	States   []State
	// After, when set, keeps the entries whose key sorts after it: the
	// last key of the previous page.
	After string
}

// Match reports whether e passes the filter.
func (f EntryFilter) Match(e *Entry) bool {
	if f.Provider != "" && e.Provider != f.Provider {
		return false
	}
	if f.Session != "" && e.Session != f.Session {
		return false
	}
	if f.After != "" && e.Key() <= f.After {
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

// String returns "entry" or "session".
func (k DueKind) String() string {
	switch k {
	case DueEntry:
		return "entry"
	case DueSession:
		return "session"
	}
	return "unknown"
}

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

// Total returns the number of items deleted.
func (s PruneStats) Total() int { return s.Entries + s.Sessions + s.Events }

// QuarantinedRecord is a ledger record that could not be decoded, kept
// aside for an operator.
type QuarantinedRecord struct {
	Kind   DueKind   `json:"kind"`
	Key    string    `json:"key"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	Raw    []byte    `json:"raw"`
}

// AliveStamp is the daemon's record that it was running at At. Clean is
// set by a graceful stop: the daemon was running until exactly At. After a
// crash the daemon stopped somewhere in the interval after At.
type AliveStamp struct {
	At    time.Time `json:"at"`
	Clean bool      `json:"clean,omitempty"`
}
