package reaper

import (
	"context"
	"time"
)

// Service is what clients may ask of the daemon: the API serves it, the
// engine implements it. Every method that changes something checks the
// caller carried by ctx (see Access) and returns domain errors (*Error).
type Service interface {
	// Register records a sandbox. It returns the entry and whether it was
	// created; registering again an active entry of the same session is a
	// no-op that returns the existing entry, so that clients may retry.
	Register(ctx context.Context, r RegisterRequest) (*Entry, bool, error)
	// Heartbeat renews a session's lease, optionally changing it.
	Heartbeat(ctx context.Context, id string, lease Duration) (*Session, error)
	// EndSession ends a session: its active entries are closed (unless
	// keep); attached ones are released.
	EndSession(ctx context.Context, id string) (*EndResult, error)
	// Tag changes an entry's protection tags, labels or expiry.
	Tag(ctx context.Context, key string, r TagRequest) (*Entry, error)
	// Release stops tracking an entry without closing its sandbox.
	Release(ctx context.Context, key string) (*Entry, error)

	// Entry returns one entry.
	Entry(ctx context.Context, key string) (*Entry, error)
	// Entries returns the entries matching f, at most limit (zero: no
	// limit), in key order.
	Entries(ctx context.Context, f EntryFilter, limit int) ([]*Entry, error)
	// Session returns one session.
	Session(ctx context.Context, id string) (*Session, error)
	// Sessions returns the sessions, only live ones when liveOnly.
	Sessions(ctx context.Context, liveOnly bool) ([]*Session, error)
	// Audit returns audit events at or after since, oldest first, at most
	// limit (zero: no limit; the newest are kept).
	Audit(ctx context.Context, since time.Time, limit int) ([]AuditEvent, error)
	// AuditPage returns up to limit audit events after cursor (or, with
	// an empty cursor, at or after since), oldest first, and the cursor of
	// the next page, empty when there is none.
	AuditPage(ctx context.Context, since time.Time, cursor string, limit int) ([]AuditEvent, string, error)
	// AuditReport builds a cost report from the audit log over the query's
	// window.
	AuditReport(ctx context.Context, q ReportQuery) (*Report, error)

	// Sweep runs a full sweep now, or reports what one would do.
	Sweep(ctx context.Context, o SweepOptions) (*SweepReport, error)
	// Discover lists the live sandboxes no entry tracks.
	Discover(ctx context.Context) ([]Untracked, map[string]string)
	// Status reports the engine's state: queues, providers, quarantined
	// records, ledger health.
	Status(ctx context.Context) (*EngineStatus, error)
}

// RegisterRequest registers one sandbox.
type RegisterRequest struct {
	Provider string `json:"provider"`
	ID       string `json:"id"`
	// Session, when set, ties the entry to a session: the entry becomes due
	// when the session ends, its lease lapses or its process exits. The
	// session is created on first use and belongs to its first registrant.
	Session string `json:"session,omitempty"`
	// TTL makes the entry due this long after registration. Zero means no
	// expiry (the daemon's default_ttl applies when there is no session
	// either).
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
	// Resources is the sandbox's size, for cost reports; nil when not
	// given.
	Resources *Resources `json:"resources,omitempty"`
}

// TagRequest changes an entry's protection tags, labels or expiry. Nil
// and zero fields are left alone.
type TagRequest struct {
	Keep     *bool `json:"keep,omitempty"`
	Attached *bool `json:"attached,omitempty"`
	// Labels are merged into the entry's labels; an empty value deletes
	// the label.
	Labels map[string]string `json:"labels,omitempty"`
	// TTL, when set, makes the entry expire this long from now.
	TTL Duration `json:"ttl,omitempty"`
}

// EndResult is the outcome of ending a session.
type EndResult struct {
	Session *Session    `json:"session"`
	Items   []SweepItem `json:"items"`
}

// SweepOptions configures Sweep.
type SweepOptions struct {
	// DryRun reports what a sweep would do and changes nothing.
	DryRun bool
}

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
	// Untracked lists live sandboxes no entry tracks (with discovery): at
	// most 1,000 of them, those the sweep adopted first. UntrackedTotal
	// counts them all; `reaperd discover` (POST /v1/discover) lists every
	// one.
	Untracked      []Untracked `json:"untracked,omitempty"`
	UntrackedTotal int         `json:"untracked_total,omitempty"`
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
}

// Untracked is a live sandbox at a provider that no entry tracks.
type Untracked struct {
	Provider string  `json:"provider"`
	Sandbox  Sandbox `json:"sandbox"`
	// FirstSeen is when a listing first showed the sandbox untracked.
	FirstSeen time.Time `json:"first_seen"`
	// Age is how old the sandbox is: since its creation where the
	// provider reports it, else since FirstSeen (AgeFrom says which).
	Age     Duration `json:"age"`
	AgeFrom string   `json:"age_from"` // "created" or "first-seen"
	// Rule is the adoption rule that matches the sandbox, and Action what
	// it does (report or reap). Empty when no rule matches.
	Rule   string      `json:"rule,omitempty"`
	Action AdoptAction `json:"action,omitempty"`
	// Adopted is set when this sweep adopted the sandbox as an entry,
	// which the engine then closes.
	Adopted bool `json:"adopted,omitempty"`
	// Managed is set when the sandbox is labelled LabelManaged=true: an
	// agent registers it with a reaperd, perhaps on another host.
	Managed bool `json:"managed,omitempty"`
	// Note says why no rule acts on the sandbox (too young, protected by
	// a label), when one would otherwise.
	Note string `json:"note,omitempty"`
}

// EngineStatus is the engine's state, for `reaperd status` and /v1/status.
type EngineStatus struct {
	// Providers holds one line per known provider, enabled or not.
	Providers map[string]ProviderStatus `json:"providers"`
	// NextDeadline is the earliest deadline in the ledger; zero when none.
	NextDeadline time.Time `json:"next_deadline,omitzero"`
	// Upcoming are the next deadlines, earliest first (at most ten).
	Upcoming []Deadline `json:"upcoming,omitempty"`
	// LedgerError is why the last ledger write failed, while writes fail;
	// empty when the ledger is healthy.
	LedgerError string `json:"ledger_error,omitempty"`
	// Quarantined counts the ledger records moved aside because they could
	// not be decoded; QuarantinedKeys names the most recent ones.
	Quarantined     int      `json:"quarantined"`
	QuarantinedKeys []string `json:"quarantined_keys,omitempty"`
}

// ProviderStatus is one provider's line in EngineStatus.
type ProviderStatus struct {
	Enabled bool `json:"enabled"`
	// Hint says how to enable a disabled provider.
	Hint string `json:"hint,omitempty"`
	// Queued and Running count the closes waiting in the provider's close
	// queue and the calls outstanding.
	Queued  int `json:"queued"`
	Running int `json:"running"`
	// PausedUntil is set while the provider asked reaperd to wait
	// (Retry-After).
	PausedUntil time.Time `json:"paused_until,omitzero"`
	// LastError is the last failed call's error while the provider keeps
	// failing; empty once a call succeeds.
	LastError string `json:"last_error,omitempty"`
	// Confirming counts closes answered not-found, or accepted by a
	// provider that deletes asynchronously, that wait for the provider's
	// listing to confirm them.
	Confirming int `json:"confirming"`
	// Unverified counts live entries that the provider's listing does not
	// show to reaperd's credentials.
	Unverified int `json:"unverified"`
	// Stuck counts closes the provider refused for good (no more attempts
	// are made); OldestClosing is when the longest-closing entry of the
	// provider moved to closing (zero when none is closing).
	Stuck         int       `json:"stuck"`
	OldestClosing time.Time `json:"oldest_closing,omitzero"`
	// Credentials is the result of the last credential check: "ok",
	// "refused" (the provider is disabled until a reload or a later check
	// passes) or "degraded" (the check failed otherwise); empty before the
	// first check. LastOK is the last call the provider answered well.
	Credentials string    `json:"credentials,omitempty"`
	LastOK      time.Time `json:"last_ok,omitzero"`
}

// Deadline is one deadline in the ledger: when an entry or a session next
// needs the engine.
type Deadline struct {
	At time.Time `json:"at"`
	// Kind is "entry" or "session"; Key the entry's key or the session id.
	Kind string `json:"kind"`
	Key  string `json:"key"`
}
