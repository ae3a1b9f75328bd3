package reaper

import (
	"context"
	"time"
)

// Provider closes and lists sandboxes at one sandbox runtime (Daytona, E2B,
// Modal, Runloop, ...). Implementations live in providers/; each is shaped
// alike: a New(Config) constructor, a type constant naming the provider, and
// a compile-time assertion that it satisfies this interface.
//
// Providers report failures; the engine decides what they mean. Every error
// returned by Close or List should therefore wrap one of the classification
// sentinels (ErrNotFound, ErrInvalid, ErrUnauthorized, ErrRateLimited,
// ErrConflict, ErrTransient, and from Close ErrAccepted), normally through a *ProviderError. An error that wraps none of them is
// treated as transient: the close is retried and the entry is never recorded
// as closed.
type Provider interface {
	// Name returns the provider's type name, the PROVIDER half of an entry
	// key: "daytona", "e2b", "modal", "runloop".
	Name() string

	// Close destroys the sandbox with the given provider-side id, releasing
	// everything it holds at the provider (a stopped, paused or suspended
	// sandbox included). It returns nil only when the provider has accepted
	// the delete and, where the delete is asynchronous, shown by its own
	// means that the sandbox is gone (Daytona: destroying, then destroyed);
	// or when the provider reports the sandbox in a final state (shut down,
	// terminated). Where the provider accepted an asynchronous delete that
	// is still under way, Close returns an error wrapping ErrAccepted rather
	// than wait: the engine confirms it with List. Close must be idempotent.
	//
	// When the provider answers that the sandbox does not exist (HTTP 404,
	// gRPC NOT_FOUND), Close returns an error wrapping ErrNotFound and makes
	// no further lookup. A not-found alone is not proof of gone: a provider
	// answers it for a sandbox that exists when its access check fails, and
	// to a key of another organisation. The engine confirms it with the
	// provider's listing (List) before recording the sandbox closed.
	//
	// A timeout, a 5xx, a "state change in progress" conflict or a rate limit
	// must surface as an error (never nil), classified with the sentinels
	// above; a rate limit should carry the provider's retry delay. Close
	// honours ctx cancellation and never blocks past ctx's deadline. The
	// engine passes the attempt number in ctx; see CloseAttempt.
	Close(ctx context.Context, id string) error

	// List returns the live sandboxes visible to the configured credentials,
	// following the provider's pagination to the end. Sandboxes that are
	// stopped, paused or suspended but still allocated count as live. When
	// f.Labels is non-empty, only sandboxes carrying every one of those
	// labels are returned (filtered server-side where the provider can).
	// The listing is the engine's second signal of "gone": it must come
	// from the provider's list or search endpoint, never from per-sandbox
	// lookups, which answer not-found as Close does.
	List(ctx context.Context, f ListFilter) ([]Sandbox, error)
}

// PageLister is implemented by providers that can hand out their listing
// page by page, as their API pages it, so that a caller never holds every
// live sandbox at once (a fleet of 100,000 sandboxes is 1,000 pages of
// Daytona's or E2B's). The engine uses it, where a provider implements it,
// for discovery and for the listings that confirm not-founds; List remains
// the whole listing at once.
//
// ListPages lists what List lists (the same sandboxes, filtered by f the
// same way, each reported once per listing, and with the same guarantees
// that the listing is complete), and calls fn with each page, in the
// provider's order, never with an empty page. A page belongs to fn, which
// may keep it. An error from fn stops the listing: ListPages makes no
// further request and returns that error as it is. Any other error
// (classified as for List) means the listing is incomplete: the pages
// already handed to fn show sandboxes that are live, but nothing may be
// concluded from a sandbox's absence from them. Only a nil return says that
// the listing went through to its last page, and only then is a sandbox
// missing from every page absent from the listing (the engine's second
// signal of "gone"). ListPages honours ctx and does not call fn after it
// has returned.
type PageLister interface {
	ListPages(ctx context.Context, f ListFilter, fn func(page []Sandbox) error) error
}

// CollectPages returns every page of a listing in one slice: a List made
// of ListPages. On an error it returns nil and the error, as List does.
func CollectPages(ctx context.Context, p PageLister, f ListFilter) ([]Sandbox, error) {
	var out []Sandbox
	err := p.ListPages(ctx, f, func(page []Sandbox) error {
		out = append(out, page...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Checker is implemented by providers that can check their credentials
// with one cheap authenticated call (the first page of their listing,
// limited to one item, or the provider's own "who am I"). The daemon calls
// it at start and at each reload. Check returns nil when the provider
// accepted the credentials, and an error wrapping ErrUnauthorized (naming
// the variable to fix) when it refused them; other errors are classified
// as for Close.
type Checker interface {
	Check(ctx context.Context) error
}

// ListFilter narrows Provider.List.
type ListFilter struct {
	// Labels, when non-empty, selects sandboxes carrying all of these
	// key/value labels (Daytona labels, E2B metadata, Modal tags, Runloop
	// metadata). Nil or empty selects every sandbox.
	Labels map[string]string
}

// Sandbox is one live sandbox as the provider reports it.
type Sandbox struct {
	// ID is the provider-side id, the ID half of an entry key.
	ID string `json:"id"`
	// CreatedAt is when the provider created the sandbox. Zero when the
	// provider does not say, or says something else (E2B: see StartedAt).
	CreatedAt time.Time `json:"created_at,omitzero"`
	// StartedAt is when the sandbox last started or resumed, where the
	// provider reports that instead of its creation (E2B). It is not an
	// age.
	StartedAt time.Time `json:"started_at,omitzero"`
	// LastActivityAt is when the provider last saw activity in the
	// sandbox (Daytona). Zero when the provider does not say.
	LastActivityAt time.Time `json:"last_activity_at,omitzero"`
	// State is the provider's own name for the sandbox state ("started",
	// "paused", "suspended", ...), passed through unchanged.
	State string `json:"state,omitempty"`
	// Labels are the sandbox's labels, metadata or tags.
	Labels map[string]string `json:"labels,omitempty"`
	// Name is the sandbox's name, where the provider has names.
	Name string `json:"name,omitempty"`
	// App is the app the sandbox belongs to (Modal).
	App string `json:"app,omitempty"`
	// Template is the template or snapshot it was created from, where the
	// provider reports one (E2B template, Daytona snapshot, Runloop
	// blueprint).
	Template string `json:"template,omitempty"`
	// Resources is the sandbox's size, where the provider reports it
	// (Daytona, E2B, Modal, Runloop); nil otherwise. Zero fields are unknown.
	Resources *Resources `json:"resources,omitempty"`
}

type attemptKey struct{}

// WithCloseAttempt returns a context carrying the 1-based number of the close
// attempt about to be made for an entry. The engine sets it before every
// Provider.Close call.
func WithCloseAttempt(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, attemptKey{}, n)
}

// CloseAttempt returns the 1-based close attempt number carried by ctx, or 1
// when ctx carries none. Providers use it to escalate, for example by forcing
// a shutdown after several "snapshot in progress" conflicts.
func CloseAttempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(int); ok && n > 0 {
		return n
	}
	return 1
}
