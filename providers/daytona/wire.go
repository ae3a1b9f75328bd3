package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	apiclient "github.com/daytonaio/daytona/libs/api-client-go"

	"github.com/reaperd/reaperd/reaper"
)

// classify turns a failed call into a *reaper.ProviderError. verb names the
// HTTP call ("delete sandbox"); resp may be nil (transport error).
func (p *Provider) classify(ctx context.Context, op, id, verb string, resp *http.Response, err error) error {
	pe := &reaper.ProviderError{Provider: Type, Op: op, ID: id}
	if cerr := ctx.Err(); cerr != nil {
		// The caller gave up: say so, wrapping context.Canceled or
		// DeadlineExceeded, whatever the transport reported.
		pe.Kind = reaper.ErrTransient
		pe.Err = fmt.Errorf("%s: %w", verb, cerr)
		return pe
	}
	if resp == nil {
		pe.Kind = reaper.ErrTransient
		if err == nil {
			err = errors.New("no response")
		}
		pe.Err = fmt.Errorf("%s: %w", verb, err)
		return pe
	}
	pe.StatusCode = resp.StatusCode
	pe.Err = fmt.Errorf("%s: %s", verb, p.redact(apiMessage(resp.StatusCode, bodyOf(resp, err))))
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		pe.Kind = reaper.ErrUnauthorized
		pe.Hint = "check " + EnvAPIKey
	case code == http.StatusForbidden:
		pe.Kind = reaper.ErrUnauthorized
		pe.Hint = "check " + EnvAPIKey + " (the key needs the sandbox read and delete permissions)"
		if p.org != "" {
			pe.Hint += " and " + EnvOrganizationID
		}
	case code == http.StatusNotFound:
		pe.Kind = reaper.ErrNotFound
	case code == http.StatusConflict:
		pe.Kind = reaper.ErrConflict
	case code == http.StatusTooManyRequests:
		pe.Kind = reaper.ErrRateLimited
		pe.RetryAfter = retryAfter(resp.Header, p.now())
	default:
		// 5xx, 408 and anything unexpected (a 400 such as "Cannot delete
		// sandbox which has active fork children") are retried.
		pe.Kind = reaper.ErrTransient
	}
	return pe
}

// redact removes the API key from text that came off the wire, in case a
// server or proxy ever echoes the request back.
func (p *Provider) redact(s string) string {
	if p.key == "" {
		return s
	}
	return strings.ReplaceAll(s, p.key, "[redacted]")
}

// bodyOf returns the response body the generated client already read: it
// keeps it in its error and puts a re-readable copy back on the response.
func bodyOf(resp *http.Response, err error) []byte {
	var gerr *apiclient.GenericOpenAPIError
	if errors.As(err, &gerr) && len(gerr.Body()) > 0 {
		return gerr.Body()
	}
	if resp == nil || resp.Body == nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// apiError is the body Daytona's exception filter writes for every error:
// statusCode, source ("DAYTONA_API"), code (e.g. "SANDBOX_STATE_CHANGE_IN_PROGRESS"),
// message, and the legacy error, path, timestamp and method fields.
type apiError struct {
	StatusCode int             `json:"statusCode"`
	Source     string          `json:"source"`
	Code       string          `json:"code"`
	Message    json.RawMessage `json:"message"`
	Error      string          `json:"error"`
}

// apiMessage renders an error body as "CODE: message", falling back to the
// HTTP status text when the body is not Daytona's JSON.
func apiMessage(status int, body []byte) string {
	var e apiError
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		var s string
		var list []string
		switch {
		case json.Unmarshal(e.Message, &s) == nil:
			msg = s
		case json.Unmarshal(e.Message, &list) == nil:
			msg = strings.Join(list, ", ")
		}
		if msg == "" {
			msg = e.Error
		}
		if e.Code != "" {
			if msg == "" {
				msg = e.Code
			} else {
				msg = e.Code + ": " + msg
			}
		}
	}
	if msg == "" {
		msg = http.StatusText(status)
		if msg == "" {
			msg = "HTTP " + strconv.Itoa(status)
		}
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg
}

// retryAfter returns the largest delay in the Retry-After header and in the
// per-throttler Retry-After-<name> headers that @nestjs/throttler sets
// (Daytona names its throttlers "authenticated", "sandbox-lifecycle",
// "sandbox-create" and "anonymous"; only a throttler named "default" would
// use the bare Retry-After). Values are seconds or an HTTP date. Zero when
// there is none.
func retryAfter(h http.Header, now time.Time) time.Duration {
	var best time.Duration
	for name, values := range h {
		n := strings.ToLower(name)
		if n != "retry-after" && !strings.HasPrefix(n, "retry-after-") {
			continue
		}
		for _, v := range values {
			if d, ok := parseRetryAfter(v, now); ok && d > best {
				best = d
			}
		}
	}
	return best
}

// maxRetryAfter caps absurd delays.
const maxRetryAfter = 24 * time.Hour

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(secs) || secs < 0 {
			return 0, false
		}
		if secs >= maxRetryAfter.Seconds() {
			return maxRetryAfter, true
		}
		return time.Duration(math.Ceil(secs)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return min(d, maxRetryAfter), true
	}
	return 0, false
}

// labelsParam encodes a label filter the way the API's "labels" query
// parameter expects: a JSON object, keys sorted. Empty for no filter.
func labelsParam(labels map[string]string) (string, error) {
	if len(labels) == 0 {
		return "", nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(labels); err != nil {
		return "", fmt.Errorf("encode labels filter: %w", err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// rawSandbox holds the fields reaperd needs, read leniently from a body the
// generated models could not decode (a missing required property, a state
// this client version does not know).
type rawSandbox struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Snapshot  string            `json:"snapshot"`
	State     string            `json:"state"`
	Labels    map[string]string `json:"labels"`
	CreatedAt string            `json:"createdAt"`
}

func rawState(body []byte) string {
	var s rawSandbox
	if json.Unmarshal(body, &s) != nil {
		return ""
	}
	return s.State
}

// decodeList turns one page of GET /sandbox into sandboxes and the next
// cursor ("" on the last page). Name is the sandbox's name (Daytona names
// every sandbox; an unnamed one is named after its id) and Template its
// snapshot, when the API reports one (a sandbox built from an image or a
// Dockerfile may have none).
func decodeList(res *apiclient.ListSandboxesResponse, resp *http.Response, err error) ([]reaper.Sandbox, string, error) {
	if err == nil && res != nil {
		var raw map[string]string // id -> state, read only if needed
		out := make([]reaper.Sandbox, 0, len(res.Items))
		for _, it := range res.Items {
			sb := reaper.Sandbox{ID: it.Id, Name: it.Name, Template: it.GetSnapshot(),
				Labels: it.Labels, CreatedAt: parseTime(it.CreatedAt)}
			if it.State != nil && *it.State != apiclient.SANDBOXSTATE_UNKNOWN_DEFAULT_OPEN_API {
				sb.State = string(*it.State)
			} else if it.State != nil {
				if raw == nil {
					raw = rawStates(bodyOf(resp, nil))
				}
				sb.State = raw[it.Id]
			}
			out = append(out, sb)
		}
		return out, res.GetNextCursor(), nil
	}
	body := bodyOf(resp, err)
	var page struct {
		Items      *[]rawSandbox `json:"items"`
		NextCursor *string       `json:"nextCursor"`
	}
	if len(body) == 0 || json.Unmarshal(body, &page) != nil || page.Items == nil {
		if err == nil {
			err = errors.New("empty response")
		}
		return nil, "", err
	}
	out := make([]reaper.Sandbox, 0, len(*page.Items))
	for _, it := range *page.Items {
		var at *string
		if it.CreatedAt != "" {
			at = &it.CreatedAt
		}
		out = append(out, reaper.Sandbox{ID: it.ID, Name: it.Name, Template: it.Snapshot, State: it.State,
			Labels: it.Labels, CreatedAt: parseTime(at)})
	}
	next := ""
	if page.NextCursor != nil {
		next = *page.NextCursor
	}
	return out, next, nil
}

func rawStates(body []byte) map[string]string {
	var page struct {
		Items []rawSandbox `json:"items"`
	}
	out := map[string]string{}
	if json.Unmarshal(body, &page) == nil {
		for _, it := range page.Items {
			out[it.ID] = it.State
		}
	}
	return out
}

// parseTime parses the API's ISO 8601 timestamps
// ("2026-03-04T05:06:07.000Z"); zero when absent or malformed.
func parseTime(s *string) time.Time {
	if s == nil || *s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}
