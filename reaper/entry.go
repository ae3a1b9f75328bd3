package reaper

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"
)

// State is the lifecycle state of an entry.
//
//	active ──(due, not keep/attached)──▶ closing ──(provider confirmed or already gone)──▶ closed
//	   │                                    └──(error)──▶ stays closing, retried with backoff
//	   └──(session closed it itself / attached session ended)──▶ released
type State string

const (
	StateActive   State = "active"   // registered; the sandbox is assumed to be running
	StateClosing  State = "closing"  // the reaper decided to close it; the provider may not have confirmed yet
	StateClosed   State = "closed"   // the provider confirmed the delete or said the sandbox does not exist
	StateReleased State = "released" // no longer tracked: closed by its session, or an attached sandbox left alone
)

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case StateActive, StateClosing, StateClosed, StateReleased:
		return true
	}
	return false
}

// Final reports whether s is a terminal state (closed or released).
func (s State) Final() bool { return s == StateClosed || s == StateReleased }

// Reason says why the reaper acted, or did not act, on an entry.
type Reason string

const (
	ReasonExpired         Reason = "expired"          // expires_at passed
	ReasonOrphanedLease   Reason = "orphaned-lease"   // the session's lease lapsed without a heartbeat
	ReasonOrphanedProcess Reason = "orphaned-process" // the session's process exited
	ReasonSessionEnded    Reason = "session-ended"    // the session ended without releasing the entry
	ReasonKeep            Reason = "keep"             // tagged keep: never closed
	ReasonAttached        Reason = "attached"         // tagged attached: never closed
	ReasonReleased        Reason = "released"         // released by a client
	ReasonManual          Reason = "manual"           // an operator asked
	ReasonAdopted         Reason = "adopted"          // nobody registered it; an adoption rule reaps it
	ReasonGone            Reason = "gone"             // the provider no longer has it: its listings say so
)

// Entry is one sandbox the ledger knows, keyed PROVIDER/ID.
type Entry struct {
	Provider string            `json:"provider"`
	ID       string            `json:"id"`
	Session  string            `json:"session,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`

	// Keep entries are never closed by the reaper, whatever their deadline.
	Keep bool `json:"keep"`
	// Attached entries belong to a sandbox the session did not create: they
	// are never closed, and become released when their session ends.
	Attached bool `json:"attached"`

	RegisteredAt time.Time `json:"registered_at"`
	// ExpiresAt is the deadline after which the entry is due. Zero means
	// none: the entry is due only when its session ends or lapses.
	ExpiresAt time.Time `json:"expires_at,omitzero"`

	State       State  `json:"state"`
	CloseReason Reason `json:"close_reason,omitempty"`
	// Attempts counts the Provider.Close calls made for this entry. An
	// attempt is counted, durably, just before the call is sent: time spent
	// waiting in a queue, or a restart, is not an attempt.
	Attempts int `json:"attempts,omitempty"`
	// LastAttemptAt is when the last close call was sent.
	LastAttemptAt time.Time `json:"last_attempt_at,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	ErrorClass    string    `json:"error_class,omitempty"`
	// NextAttemptAt is when a closing entry may be tried again. Zero means
	// at once.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// InFlight is set while a running daemon holds the entry in its close
	// queue or has its close call outstanding. Such an entry is not due: the
	// daemon owns it. A daemon clears every InFlight flag when it starts, so
	// that a close interrupted by a crash is resumed.
	InFlight bool `json:"in_flight,omitempty"`
	// ClosingSince is when the entry moved to closing.
	ClosingSince time.Time `json:"closing_since,omitzero"`
	// Stuck is set when the provider refused the close for a reason no
	// retry can change (ErrInvalid: an id it cannot parse): no more
	// attempts are made. An operator releases the entry, or registers the
	// right id.
	Stuck bool `json:"stuck,omitempty"`
	// NotFoundAt is set when the provider answered not-found to the last
	// close: a claim the engine confirms with the provider's listing. Zero
	// otherwise.
	NotFoundAt time.Time `json:"not_found_at,omitzero"`
	// AcceptedAt is set when the provider accepted the delete but destroys
	// the sandbox asynchronously (ErrAccepted): the engine confirms it with
	// the provider's listing. Zero otherwise.
	AcceptedAt time.Time `json:"accepted_at,omitzero"`
	// Seen is set once the provider's listing has shown the sandbox to
	// reaperd's credentials. Only a sandbox once seen can be proven gone by
	// its absence from a later listing.
	Seen bool `json:"seen"`
	// Unverified is set while listings taken after the registration do not
	// show the sandbox: reaperd's credentials may not reach it (a key of
	// another organisation). A not-found for it is never taken as gone.
	Unverified bool `json:"unverified,omitempty"`
	// Stopped is set while the provider's listing shows the sandbox
	// stopped, paused, suspended or archived (RunStateOf): it then bills
	// for its disk alone. A registration assumes a running sandbox.
	Stopped bool `json:"stopped,omitempty"`
	// ClosedAt is when the entry became closed or released.
	ClosedAt time.Time `json:"closed_at,omitzero"`
	// Resources is the sandbox's size, when known.
	Resources *Resources `json:"resources,omitempty"`
	// Adopted is the name of the adoption rule that made the entry, for a
	// sandbox nobody registered. Empty for a registered one.
	Adopted string `json:"adopted,omitempty"`
	// Owner is the uid that registered the entry, from the socket's peer
	// credentials; nil when unknown (then anyone may change it).
	Owner *uint32 `json:"owner,omitempty"`
	// OwnerToken is the name of the API token that registered the entry
	// over the TCP listener; empty otherwise.
	OwnerToken string `json:"owner_token,omitempty"`
}

// Resources is a sandbox's size, as its registration or its provider
// reports it. Zero fields are unknown.
type Resources struct {
	VCPU      float64 `json:"vcpu,omitempty"`
	MemoryGiB float64 `json:"memory_gib,omitempty"`
	DiskGiB   float64 `json:"disk_gib,omitempty"`
	// GPU is the GPU type ("A100", "H100"), GPUCount how many.
	GPU      string `json:"gpu,omitempty"`
	GPUCount int    `json:"gpu_count,omitempty"`
}

// Validate checks that every figure is within what a sandbox can be.
func (r *Resources) Validate() error {
	if r == nil {
		return nil
	}
	check := func(name string, v, most float64) error {
		if v < 0 || v > most || v != v {
			return Errorf(EINVALID, "resources: %s %v: use a number from 0 to %v", name, v, most)
		}
		return nil
	}
	for _, c := range []struct {
		name    string
		v, most float64
	}{{"vcpu", r.VCPU, 1024}, {"memory_gib", r.MemoryGiB, 65536}, {"disk_gib", r.DiskGiB, 1 << 20}, {"gpu_count", float64(r.GPUCount), 64}} {
		if err := check(c.name, c.v, c.most); err != nil {
			return err
		}
	}
	if r.GPU != "" {
		if err := ValidateID("resources: gpu type", r.GPU); err != nil || len(r.GPU) > 64 {
			return Errorf(EINVALID, "resources: gpu %q: use a type name such as \"A100\"", r.GPU)
		}
	}
	if r.GPUCount > 0 && r.GPU == "" {
		return Errorf(EINVALID, "resources: gpu_count %d needs a gpu type", r.GPUCount)
	}
	return nil
}

// Ownership returns who registered the entry.
func (e *Entry) Ownership() Ownership { return Ownership{UID: e.Owner, Token: e.OwnerToken} }

// Key returns the entry's ledger key, PROVIDER/ID.
func (e *Entry) Key() string { return e.Provider + "/" + e.ID }

// Clone returns a deep copy of e.
func (e *Entry) Clone() *Entry {
	c := *e
	c.Labels = maps.Clone(e.Labels)
	if e.Resources != nil {
		r := *e.Resources
		c.Resources = &r
	}
	if e.Owner != nil {
		o := *e.Owner
		c.Owner = &o
	}
	return &c
}

// Session is one agent run.
type Session struct {
	ID string `json:"id"`
	// Lease is how long the session may go without a heartbeat before it
	// counts as dead. Zero means no lease: the session ends only when told,
	// or when its process exits.
	Lease         Duration  `json:"lease,omitempty"`
	StartedAt     time.Time `json:"started_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// LeaseGrace extends the lease by the time the daemon was down since
	// the last heartbeat, during which the session could not renew it. A
	// heartbeat resets it to zero; LastHeartbeat is never rewritten for it.
	LeaseGrace Duration `json:"lease_grace,omitempty"`
	// PID is the session's process on this host, zero when not given;
	// PIDStart is that process's start time (clock ticks since boot, from
	// /proc/PID/stat) so that a reused pid is not mistaken for the session.
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pid_start,omitempty"`
	// EndedAt is when the session ended (told, lease lapsed, process
	// exited); zero while it lives.
	EndedAt   time.Time `json:"ended_at,omitzero"`
	EndReason Reason    `json:"end_reason,omitempty"`
	// Owner is the uid that created the session, by its first
	// registration; nil when unknown (then anyone may use it).
	Owner *uint32 `json:"owner,omitempty"`
	// OwnerToken is the name of the API token that created the session
	// over the TCP listener; empty otherwise.
	OwnerToken string `json:"owner_token,omitempty"`
}

// Ownership returns who created the session.
func (s *Session) Ownership() Ownership { return Ownership{UID: s.Owner, Token: s.OwnerToken} }

// Ended reports whether the session has ended.
func (s *Session) Ended() bool { return !s.EndedAt.IsZero() }

// LeaseEnd returns when the lease lapses without another heartbeat, or the
// zero time when the session has no lease.
func (s *Session) LeaseEnd() time.Time {
	if s.Lease <= 0 {
		return time.Time{}
	}
	return s.LastHeartbeat.Add(time.Duration(s.Lease) + time.Duration(s.LeaseGrace))
}

// Deadline returns when the session itself next needs the engine: its lease
// end while it lives with a lease, never otherwise. (Once a session has
// ended, its entries carry the deadline; see DueAt.)
func (s *Session) Deadline() time.Time {
	if s.Ended() {
		return time.Time{}
	}
	return s.LeaseEnd()
}

// Clone returns a copy of s.
func (s *Session) Clone() *Session {
	c := *s
	if s.Owner != nil {
		o := *s.Owner
		c.Owner = &o
	}
	return &c
}

// EventKind names an audit event.
type EventKind string

const (
	EventRegistered   EventKind = "registered"
	EventTagged       EventKind = "tagged"
	EventCloseStarted EventKind = "close-started"
	EventClosed       EventKind = "closed"
	EventCloseFailed  EventKind = "close-failed"
	// EventCloseAccepted records a delete the provider accepted and
	// performs asynchronously; the listing confirms it.
	EventCloseAccepted EventKind = "close-accepted"
	EventReleased      EventKind = "released"
	EventAdopted       EventKind = "adopted"
	EventDiscovered    EventKind = "discovered-untracked"
	EventSkipped       EventKind = "skipped"
	EventSessionEnded  EventKind = "session-ended"
	// EventContradicted records a provider that answered not-found to a
	// close while its listing still showed the sandbox.
	EventContradicted EventKind = "not-found-contradicted"
	// EventQuarantined records a ledger record that could not be decoded
	// and was moved aside; the sandbox it named is left alone.
	EventQuarantined EventKind = "quarantined"
	// EventStateChanged records a tracked sandbox that the provider's
	// listing shows stopped after running, or running after stopped
	// (RunState): the two bill differently.
	EventStateChanged EventKind = "state-changed"
	// EventResized records a tracked sandbox whose size the provider's
	// listing reports, where the ledger had none or another (Resources).
	EventResized EventKind = "resized"
	// EventUntrackedGone records an untracked sandbox that the provider's
	// listings no longer show.
	EventUntrackedGone EventKind = "untracked-gone"
)

// AuditEvent is one append-only record of a transition.
type AuditEvent struct {
	Time    time.Time `json:"time"`
	Kind    EventKind `json:"kind"`
	Key     string    `json:"key,omitempty"`
	Session string    `json:"session,omitempty"`
	// Actor is the uid of the client that caused the event; nil when the
	// engine acted on its own, or a token did (ActorToken).
	Actor *uint32 `json:"actor,omitempty"`
	// ActorToken is the name of the API token that caused the event.
	ActorToken string `json:"actor_token,omitempty"`
	Reason     Reason `json:"reason,omitempty"`
	ErrorClass string `json:"error_class,omitempty"`
	Error      string `json:"error,omitempty"`
	Detail     string `json:"detail,omitempty"`

	// The fields below carry what a cost report needs, so that a report
	// is a function of the events alone.

	// Labels are the sandbox's labels after the event: on registered,
	// adopted, discovered-untracked and tagged events.
	Labels map[string]string `json:"labels,omitempty"`
	// Keep and Attached are the entry's protection after the event: on
	// registered, adopted and tagged events.
	Keep     bool `json:"keep,omitempty"`
	Attached bool `json:"attached,omitempty"`
	// Resources is the sandbox's size: on registered, adopted,
	// discovered-untracked and resized events, when known.
	Resources *Resources `json:"resources,omitempty"`
	// RunState is whether the sandbox runs or stands stopped: on
	// state-changed events, and on adopted and discovered-untracked ones
	// (where the provider's listing says).
	RunState RunState `json:"run_state,omitempty"`
	// DueAt is when the entry fell due: on close-started events.
	DueAt time.Time `json:"due_at,omitzero"`
	// Stuck marks a close-failed event after which no more attempts are
	// made.
	Stuck bool `json:"stuck,omitempty"`
}

// RunState is how a sandbox bills: running (CPU, memory and disk) or
// stopped (paused, suspended, archived: disk, if anything).
type RunState string

const (
	RunStateRunning RunState = "running"
	RunStateStopped RunState = "stopped"
)

// RunStateOf classifies a provider's own state name. Names that say the
// sandbox is paused, stopped, suspended or archived, or on the way there,
// are stopped; every other known name is running. An empty name gives ""
// (unknown).
func RunStateOf(providerState string) RunState {
	switch strings.ToLower(providerState) {
	case "":
		return ""
	case "stopped", "stopping", "paused", "pausing", "suspended", "suspending",
		"archived", "archiving", "shutdown", "terminated", "destroyed", "destroying", "failure":
		return RunStateStopped
	}
	return RunStateRunning
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("30m", "1h30m"). It also reads a JSON number as whole seconds.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds. Its
// errors are *DurationError.
func (d *Duration) UnmarshalJSON(b []byte) error {
	fail := func(err error) error { return &DurationError{Input: string(b), Err: err} }
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fail(err)
		}
		v, err := ParseDuration(s)
		if err != nil {
			return fail(err)
		}
		*d = Duration(v)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fail(fmt.Errorf("%s is not a duration: use a string such as \"30m\" or a number of seconds", b))
	}
	if f < 0 || f > float64(maxDuration/time.Second) {
		return fail(fmt.Errorf("%s seconds is out of range", b))
	}
	*d = Duration(time.Duration(f * float64(time.Second)))
	return nil
}

// DurationError is returned when a JSON value is not a valid Duration.
// Input is the raw JSON value, so that a caller can find the field.
type DurationError struct {
	Input string
	Err   error
}

func (e *DurationError) Error() string { return e.Err.Error() }
func (e *DurationError) Unwrap() error { return e.Err }

const maxDuration = 100 * 365 * 24 * time.Hour

// ParseDuration parses a Go duration string ("90s", "30m", "1h30m") and
// also accepts a day suffix ("7d"). Negative durations are rejected.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration: use a value such as \"30m\"")
	}
	bad := fmt.Errorf("invalid duration %q: use a value such as \"30m\", \"2h\", \"7d\" or \"1d12h\"", s)
	var d time.Duration
	rest := s
	// Days lead, alone or before the units Go knows: "7d", "1.5d", "1d12h".
	if i := strings.IndexByte(s, 'd'); i > 0 {
		days, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || math.IsNaN(days) || math.IsInf(days, 0) || days < 0 || days > 36600 {
			return 0, bad
		}
		d, rest = time.Duration(days*float64(24*time.Hour)), s[i+1:]
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || (rest != s && strings.HasPrefix(rest, "-")) {
			return 0, bad
		}
		d += r
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	if d > maxDuration {
		return 0, fmt.Errorf("invalid duration %q: longer than 100 years", s)
	}
	return d, nil
}
