// Package kit holds what the provider packages share, so that each of them
// classifies an HTTP answer, reads a throttling delay, keeps its credentials
// out of messages and logs, validates its endpoint and refuses redirects in
// exactly one way. What differs between providers (wire types, pagination,
// the proof that a sandbox is gone, which status means what for which call)
// stays in each provider.
//
// # Basics
//
// A provider keeps one Errors value and builds every *reaper.ProviderError
// through it: Errors.Status for an HTTP error status, Errors.Transport for a
// request that got no complete answer. Both redact the provider's secrets
// from the message. A provider then adjusts the Kind where its API says more
// than the status (E2B's 400 for a malformed id is permanent).
//
// # Caveats
//
// A 404 is reaper.ErrNotFound only for a call about one sandbox (op
// "close"); the engine treats that as a claim to confirm, never as proof.
// A 404 to a listing means the endpoint is wrong and is transient.
package kit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// MaxRetryAfter is the longest delay a provider's throttling answer is taken
// to ask for; a longer one is MaxRetryAfter. The engine applies its own,
// shorter cap (engine max_backoff) on top.
const MaxRetryAfter = 24 * time.Hour

// MaxMessage is the length in bytes beyond which an error message taken from
// a response body is cut.
const MaxMessage = 300

// Op values of a reaper.ProviderError.
const (
	OpClose = "close"
	OpList  = "list"
	OpCheck = "check"
)

// RetryAfter returns the largest delay that h asks for, read from
// Retry-After-Ms (milliseconds, as Stainless-generated SDKs send and read
// it), Retry-After and any Retry-After-<name> (seconds or an HTTP date; the
// per-throttler form is @nestjs/throttler's). Zero when there is none or
// none parses; at most MaxRetryAfter.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	var best time.Duration
	for name, values := range h {
		n := strings.ToLower(name)
		for _, v := range values {
			var d time.Duration
			var ok bool
			switch {
			case n == "retry-after-ms":
				d, ok = parseMillis(v)
			case n == "retry-after" || strings.HasPrefix(n, "retry-after-"):
				d, ok = ParseRetryAfter(v, now)
			}
			if ok && d > best {
				best = d
			}
		}
	}
	return best
}

// ParseRetryAfter reads one retry-after value: delay-seconds (a fraction is
// kept to the millisecond, rounded up, as a server means "not before") or an
// HTTP date. ok is false for an empty, negative or malformed value. A date
// in the past is zero; any delay is at most MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(secs) || secs < 0 {
			return 0, false
		}
		if secs >= MaxRetryAfter.Seconds() {
			return MaxRetryAfter, true
		}
		return time.Duration(math.Ceil(secs*1000)) * time.Millisecond, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		// The date has whole seconds: round up so as not to come early.
		if r := d % time.Second; r != 0 {
			d += time.Second - r
		}
		return min(d, MaxRetryAfter), true
	}
	return 0, false
}

// Seconds converts a delay in seconds, as an RPC retry policy states it, to
// a duration in whole milliseconds: zero for a negative or NaN value, at most
// MaxRetryAfter.
func Seconds(s float64) time.Duration {
	if math.IsNaN(s) || s <= 0 {
		return 0
	}
	if s >= MaxRetryAfter.Seconds() {
		return MaxRetryAfter
	}
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// Cap bounds a delay to [0, MaxRetryAfter].
func Cap(d time.Duration) time.Duration { return max(0, min(d, MaxRetryAfter)) }

func parseMillis(v string) (time.Duration, bool) {
	ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(ms) || ms < 0 {
		return 0, false
	}
	if ms >= float64(MaxRetryAfter/time.Millisecond) {
		return MaxRetryAfter, true
	}
	return time.Duration(math.Ceil(ms)) * time.Millisecond, true
}

// Redact replaces every non-empty secret in s with "[redacted]".
func Redact(s string, secrets ...string) string {
	for _, k := range secrets {
		if k != "" {
			s = strings.ReplaceAll(s, k, "[redacted]")
		}
	}
	return s
}

// Message renders an error response body as one short line: the JSON
// error's message ("message", "error", "detail" or "error_message", a string,
// a list of strings or a nested object), prefixed with a string "code" when
// there is one; else a short plain-text body; else the status text. An HTML
// page (a proxy's) is never echoed. At most MaxMessage bytes.
func Message(status int, body []byte) string {
	msg := jsonMessage(body, 0)
	if msg == "" {
		if t := strings.TrimSpace(string(body)); t != "" && !strings.HasPrefix(t, "<") && !strings.HasPrefix(t, "{") && len(t) <= 4*MaxMessage {
			msg = t
		}
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if msg == "" {
		msg = http.StatusText(status)
	}
	if msg == "" {
		msg = "HTTP " + strconv.Itoa(status)
	}
	if len(msg) > MaxMessage {
		cut := MaxMessage
		for cut > 0 && !utf8Start(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

func jsonMessage(body []byte, depth int) string {
	body = bytes.TrimSpace(body)
	if depth > 3 || len(body) == 0 || body[0] != '{' {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	msg := ""
	for _, k := range []string{"message", "error", "detail", "error_message"} {
		raw, ok := m[k]
		if !ok {
			continue
		}
		var s string
		var list []string
		switch {
		case json.Unmarshal(raw, &s) == nil:
			msg = s
		case json.Unmarshal(raw, &list) == nil:
			msg = strings.Join(list, ", ")
		default:
			msg = jsonMessage(raw, depth+1)
		}
		if msg != "" {
			break
		}
	}
	var code string
	if raw, ok := m["code"]; ok && json.Unmarshal(raw, &code) == nil && code != "" {
		if msg == "" {
			return code
		}
		return code + ": " + msg
	}
	return msg
}

// MatchLabels reports whether have holds every key of want with the same
// value. An empty want matches everything.
func MatchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ErrRedirect is returned (wrapped) when a provider's endpoint answered with
// a redirect, which reaperd never follows.
var ErrRedirect = errors.New("redirects are not followed")

// HTTPClient returns the client a provider sends its requests with: a copy
// of c (a new client bounded by timeout when c is nil) that never follows a
// redirect. Following one would turn a DELETE into a GET of wherever it
// points (a login page answering 200 reads as "deleted") and would send the
// credentials to another host; a 3xx answer is returned as is, and
// Errors.Status reports it as transient, naming the endpoint to check.
func HTTPClient(c *http.Client, timeout time.Duration) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		out.Timeout = timeout
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &out
}

// BaseURL validates an API endpoint: an absolute http or https URL with a
// host and no user information, query or fragment. It returns the URL
// without a trailing slash. name is the setting the value came from
// ("DAYTONA_API_URL"), for the message.
func BaseURL(name, raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", fmt.Errorf("%s is empty", name)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%s is not a URL: %q", name, raw)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", fmt.Errorf("%s must be an http(s) URL (scheme http or https), got %q", name, u.Redacted())
	}
	if u.Host == "" {
		return "", fmt.Errorf("%s has no host: %q", name, u.Redacted())
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%s must not carry user information, a query or a fragment: %q", name, u.Redacted())
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Errors builds the *reaper.ProviderError values of one provider.
type Errors struct {
	// Provider is the provider's type name.
	Provider string
	// Secrets are removed from every message. Empty strings are ignored.
	Secrets []string
	// CredentialHint is what a 401 or 403 asks the operator to check
	// ("check E2B_API_KEY"). Empty means no hint.
	CredentialHint string
	// URLHint is what a 404 to a listing or a redirect asks the operator to
	// check ("check E2B_API_URL"). Empty means no hint.
	URLHint string
	// Timeout is the per-request timeout, named when a request runs out of
	// it. Zero leaves it unnamed.
	Timeout time.Duration
	// Now is the clock for HTTP-date Retry-After values; nil means
	// time.Now.
	Now func() time.Time
}

// Status classifies an HTTP error status of the call verb ("delete
// sandbox") made for op (OpClose, OpList, OpCheck) on sandbox id (empty for
// a listing): 401 and 403 are reaper.ErrUnauthorized with CredentialHint;
// 404 is reaper.ErrNotFound for OpClose, and transient with URLHint
// otherwise; 409 is reaper.ErrConflict; 429 is reaper.ErrRateLimited with
// the delay h asks for; a 3xx is transient with URLHint; anything else (5xx,
// 408, an unexpected 4xx) is reaper.ErrTransient. body is the response body,
// already read (a bounded prefix is enough).
func (e *Errors) Status(op, id, verb string, status int, h http.Header, body []byte) *reaper.ProviderError {
	pe := &reaper.ProviderError{Provider: e.Provider, Op: op, ID: id, StatusCode: status, Kind: reaper.ErrTransient}
	msg := e.Redact(Message(status, body))
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		pe.Kind = reaper.ErrUnauthorized
		pe.Hint = e.CredentialHint
	case status == http.StatusNotFound && op == OpClose:
		pe.Kind = reaper.ErrNotFound
	case status == http.StatusNotFound:
		pe.Hint = e.URLHint
	case status == http.StatusConflict:
		pe.Kind = reaper.ErrConflict
	case status == http.StatusTooManyRequests:
		pe.Kind = reaper.ErrRateLimited
		now := time.Now
		if e.Now != nil {
			now = e.Now
		}
		pe.RetryAfter = RetryAfter(h, now())
	case status >= 300 && status < 400:
		pe.Hint = e.URLHint
		msg = fmt.Sprintf("%s to %q: %v", http.StatusText(status), e.Redact(h.Get("Location")), ErrRedirect)
		pe.Err = fmt.Errorf("%s: %w", verb, errors.New(msg))
		return pe
	}
	pe.Err = fmt.Errorf("%s: %s", verb, msg)
	return pe
}

// Transport classifies a call that got no complete answer. When the
// caller's context ended, the error wraps ctx.Err(); when the request ran out
// of its own timeout it wraps context.DeadlineExceeded and names Timeout.
// Either way it is reaper.ErrTransient.
func (e *Errors) Transport(ctx context.Context, op, id, verb string, err error) *reaper.ProviderError {
	pe := &reaper.ProviderError{Provider: e.Provider, Op: op, ID: id, Kind: reaper.ErrTransient}
	var ue *url.Error
	switch {
	case ctx.Err() != nil:
		pe.Err = fmt.Errorf("%s: %w", verb, ctx.Err())
	case err == nil:
		pe.Err = fmt.Errorf("%s: no response", verb)
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ue) && ue.Timeout()):
		if e.Timeout > 0 {
			pe.Err = fmt.Errorf("%s: no answer within %s: %w", verb, e.Timeout, context.DeadlineExceeded)
		} else {
			pe.Err = fmt.Errorf("%s: no answer in time: %w", verb, context.DeadlineExceeded)
		}
	case errors.As(err, &ue):
		// The provider error already names the call; the URL would only
		// repeat the endpoint.
		pe.Err = fmt.Errorf("%s: %w", verb, redactedError{ue.Err, e.Secrets})
	default:
		pe.Err = fmt.Errorf("%s: %w", verb, redactedError{err, e.Secrets})
	}
	return pe
}

// Redact removes the provider's secrets from s.
func (e *Errors) Redact(s string) string { return Redact(s, e.Secrets...) }

// RedactError returns err printing without the secrets; errors.Is and
// errors.As still see through it. Nil stays nil.
func RedactError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	return redactedError{err, secrets}
}

// redactedError prints err without the secrets and still unwraps to it.
type redactedError struct {
	err     error
	secrets []string
}

func (r redactedError) Error() string { return Redact(r.err.Error(), r.secrets...) }
func (r redactedError) Unwrap() error { return r.err }

// Field is one setting of a provider's configuration, for printing.
type Field struct {
	Key    string
	Value  any
	Secret bool // printed as "set" or "unset", never as its value
}

// Secret is a Field for a credential.
func Secret(key, value string) Field { return Field{Key: key, Value: value != "", Secret: true} }

// ConfigString renders a configuration as "TYPE(key=value, ...)", with
// secrets as set/unset. Each provider's Config.String, GoString and
// LogValue go through this and ConfigLogValue, so no format verb and no log
// handler prints a credential.
func ConfigString(typ string, fs ...Field) string {
	var b strings.Builder
	b.WriteString(typ)
	b.WriteByte('(')
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(f.Key)
		b.WriteByte('=')
		switch v := f.Value.(type) {
		case bool:
			if f.Secret {
				b.WriteString(map[bool]string{true: "set", false: "unset"}[v])
			} else {
				b.WriteString(strconv.FormatBool(v))
			}
		case string:
			b.WriteString(strconv.Quote(v))
		default:
			fmt.Fprint(&b, v)
		}
	}
	b.WriteByte(')')
	return b.String()
}

// ConfigLogValue is ConfigString for log/slog: a group of the fields, with
// secrets as "<key>_set" booleans.
func ConfigLogValue(fs ...Field) slog.Value {
	attrs := make([]slog.Attr, 0, len(fs))
	for _, f := range fs {
		if f.Secret {
			attrs = append(attrs, slog.Bool(f.Key+"_set", f.Value == true))
			continue
		}
		attrs = append(attrs, slog.Any(f.Key, f.Value))
	}
	return slog.GroupValue(attrs...)
}
