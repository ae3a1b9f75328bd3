package reaper

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Provider error classes. A provider wraps exactly one of these in every
// error it returns from Close or List, so that the engine, not the provider,
// decides whether to retry, back off or give up. None of them alone ever
// leads to an entry being recorded as closed: a not-found does only once
// the provider's listing confirms it.
var (
	// ErrNotFound is returned when the provider says the sandbox does not
	// exist. From Provider.Close it is a claim to be confirmed, not proof:
	// the engine records the sandbox closed only once the provider's listing
	// agrees.
	ErrNotFound = errors.New("sandbox not found")

	// ErrRateLimited is returned when the provider throttled the request
	// (HTTP 429, gRPC RESOURCE_EXHAUSTED). The error usually carries the
	// delay the provider asked for; see RetryAfter.
	ErrRateLimited = errors.New("rate limited")

	// ErrConflict is returned when the provider refused the request because
	// the sandbox is changing state (HTTP 409: a delete or snapshot already
	// in progress). The close is retried later; it is not yet closed.
	ErrConflict = errors.New("state change in progress")

	// ErrUnauthorized is returned when the provider rejected the credentials
	// (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED). Retried with a
	// long backoff, since an operator must act.
	ErrUnauthorized = errors.New("unauthorized")

	// ErrTransient is returned for failures that may pass on their own: 5xx
	// responses, timeouts, refused or reset connections.
	ErrTransient = errors.New("transient provider error")

	// ErrInvalid is returned when the provider refused the request as
	// malformed, for a reason that no retry can change: an id it cannot
	// parse (HTTP 400). The engine stops retrying the close and shows the
	// entry stuck with the error, for an operator.
	ErrInvalid = errors.New("refused as invalid")

	// ErrAccepted is returned by Provider.Close when the provider accepted
	// the delete but destroys the sandbox asynchronously and has not yet
	// shown it gone (Daytona: destroying). The engine confirms the delete
	// with the provider's listing, as it does a not-found, without holding
	// a close slot while the provider works; it is never proof of gone on
	// its own.
	ErrAccepted = errors.New("delete accepted, not yet done")
)

// ErrCorrupt is returned when a ledger record cannot be decoded. The engine
// quarantines such a record (moves it aside and reports it) instead of
// letting it stop the rest of the ledger from being reaped.
var ErrCorrupt = errors.New("corrupt ledger record")

// CorruptError describes one ledger record that cannot be decoded. It
// matches ErrCorrupt with errors.Is.
type CorruptError struct {
	Kind DueKind // DueEntry or DueSession
	Key  string  // entry key or session id
	Err  error   // the decoding error
}

func (e *CorruptError) Error() string {
	what := "entry"
	if e.Kind == DueSession {
		what = "session"
	}
	return fmt.Sprintf("decode %s %s: %v", what, e.Key, e.Err)
}

// Unwrap returns ErrCorrupt and the decoding error.
func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// ProviderError describes one failed provider call. Providers build it with
// the class sentinel in Kind; errors.Is matches both Kind and Err.
type ProviderError struct {
	Provider   string        // provider type name, e.g. "daytona"
	Op         string        // "close" or "list"
	ID         string        // sandbox id, empty for list
	Kind       error         // one of ErrRateLimited, ErrConflict, ErrUnauthorized, ErrTransient, ErrNotFound
	StatusCode int           // HTTP status (or 0)
	RetryAfter time.Duration // delay asked for by the provider; zero when none
	Hint       string        // what an operator should check, e.g. "check DAYTONA_API_KEY"
	Err        error         // underlying error, may be nil
}

func (e *ProviderError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(" ")
	b.WriteString(e.Provider)
	if e.ID != "" {
		b.WriteString("/")
		b.WriteString(e.ID)
	}
	b.WriteString(": ")
	if e.Kind != nil {
		b.WriteString(e.Kind.Error())
	} else {
		b.WriteString("error")
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter)
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap returns the class sentinel and the underlying error.
func (e *ProviderError) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// RetryAfter returns the retry delay carried by err (from a *ProviderError
// anywhere in its chain) and whether there was one.
func RetryAfter(err error) (time.Duration, bool) {
	var pe *ProviderError
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return pe.RetryAfter, true
	}
	return 0, false
}

// ErrorClass returns a short stable name for the class of a provider error,
// used in the ledger's audit log and in metrics labels: "rate_limited",
// "conflict", "unauthorized", "not_found", "invalid", "accepted", "timeout",
// "canceled" or "transient" (the default for anything unclassified).
func ErrorClass(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrAccepted):
		return "accepted"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "transient"
	}
}

// Error codes: stable, machine-readable, returned in API error bodies. Each
// maps to one HTTP status in the API layer.
const (
	EINVALID      = "invalid"           // the request is malformed
	ENOTFOUND     = "not_found"         // no such entry or session
	ECONFLICT     = "conflict"          // the request contradicts the entry's state
	EFORBIDDEN    = "forbidden"         // the caller may not change this entry
	EUNKNOWN      = "unknown_provider"  // the provider name is not one reaperd knows
	EDISABLED     = "provider_disabled" // the provider is known but has no credentials
	ETOOLARGE     = "too_large"         // the request body is too large
	EUNAVAILABLE  = "unavailable"       // the daemon is shutting down, or the ledger cannot be written (disk full, I/O error)
	EINTERNAL     = "internal"          // a bug or an I/O failure
	EUNAUTHORIZED = "unauthorized"      // reserved for callers the daemon cannot identify
)

// Error is a domain error: a stable code and a message a person can act on.
type Error struct {
	Code    string
	Message string
	// Err is the underlying cause, if any; it is not shown to clients
	// beyond what Message says.
	Err error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the *Error in err's chain, or EINTERNAL when
// there is none. It returns "" for a nil error.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the *Error in err's chain, or a generic
// message for other errors, whose text may hold internal detail.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error; see the daemon's log"
}
