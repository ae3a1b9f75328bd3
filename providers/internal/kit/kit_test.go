package kit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

var now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"none", http.Header{}, 0},
		{"seconds", http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{"fraction", http.Header{"Retry-After": {"1.5"}}, 1500 * time.Millisecond},
		{"fraction rounds up to the ms", http.Header{"Retry-After": {"0.0001"}}, time.Millisecond},
		{"milliseconds", http.Header{"Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond},
		{"largest wins", http.Header{"Retry-After": {"3"}, "Retry-After-Ms": {"9000"}, "Retry-After-Sandbox-Lifecycle": {"5"}}, 9 * time.Second},
		{"per throttler", http.Header{"Retry-After-Authenticated": {"42"}}, 42 * time.Second},
		{"http date", http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second},
		{"date in the past", http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0},
		{"huge is capped", http.Header{"Retry-After": {"1000000"}}, MaxRetryAfter},
		{"huge ms is capped", http.Header{"Retry-After-Ms": {"1e15"}}, MaxRetryAfter},
		{"far date is capped", http.Header{"Retry-After": {now.Add(1000 * time.Hour).Format(http.TimeFormat)}}, MaxRetryAfter},
		{"negative ignored", http.Header{"Retry-After": {"-5"}}, 0},
		{"NaN ignored", http.Header{"Retry-After": {"NaN"}}, 0},
		{"garbage ignored", http.Header{"Retry-After": {"soon"}}, 0},
		{"unrelated header", http.Header{"Retry-Afterwards": {"5"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryAfter(tt.header, now); got != tt.want {
				t.Errorf("RetryAfter(%v) = %v, want %v", tt.header, got, tt.want)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	long := "a" + strings.Repeat("é", 400) // byte 300 falls inside a rune
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"daytona", 409, `{"statusCode":409,"code":"SANDBOX_STATE_CHANGE_IN_PROGRESS","message":"State change in progress","error":"Conflict"}`, "SANDBOX_STATE_CHANGE_IN_PROGRESS: State change in progress"},
		{"message list", 400, `{"message":["id must be a string","labels must be an object"]}`, "id must be a string, labels must be an object"},
		{"e2b numeric code", 404, `{"code":404,"message":"sandbox \"x\" not found"}`, `sandbox "x" not found`},
		{"nested error", 500, `{"error":{"message":"boom  \n happened"}}`, "boom happened"},
		{"detail", 422, `{"detail":"bad"}`, "bad"},
		{"plain text", 502, "upstream timed out", "upstream timed out"},
		{"html is not echoed", 502, "<html><body>Bad Gateway</body></html>", "Bad Gateway"},
		{"empty", 503, "", "Service Unavailable"},
		{"unknown status", 599, "", "HTTP 599"},
		{"json without a message", 500, `{"x":1}`, "Internal Server Error"},
		{"cut on a rune", 500, `{"message":"` + long + `"}`, long[:MaxMessage-1] + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Message(tt.status, []byte(tt.body)); got != tt.want {
				t.Errorf("Message(%d, %q) = %q, want %q", tt.status, tt.body, got, tt.want)
			}
		})
	}
}

func TestStatusClassification(t *testing.T) {
	e := &Errors{Provider: "p", Secrets: []string{"KEY123"}, CredentialHint: "check P_KEY", URLHint: "check P_URL", Now: func() time.Time { return now }}
	tests := []struct {
		op       string
		status   int
		header   http.Header
		wantKind error
		wantHint string
	}{
		{OpClose, 401, nil, reaper.ErrUnauthorized, "check P_KEY"},
		{OpList, 403, nil, reaper.ErrUnauthorized, "check P_KEY"},
		{OpClose, 404, nil, reaper.ErrNotFound, ""},
		{OpList, 404, nil, reaper.ErrTransient, "check P_URL"},
		{OpCheck, 404, nil, reaper.ErrTransient, "check P_URL"},
		{OpClose, 409, nil, reaper.ErrConflict, ""},
		{OpClose, 429, http.Header{"Retry-After": {"3"}}, reaper.ErrRateLimited, ""},
		{OpClose, 302, http.Header{"Location": {"https://login.example/?k=KEY123"}}, reaper.ErrTransient, "check P_URL"},
		{OpClose, 500, nil, reaper.ErrTransient, ""},
		{OpClose, 400, nil, reaper.ErrTransient, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d", tt.op, tt.status), func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			pe := e.Status(tt.op, "sb1", "call", tt.status, h, []byte(`{"message":"echo KEY123"}`))
			if !errors.Is(pe, tt.wantKind) {
				t.Errorf("kind = %v, want %v", pe.Kind, tt.wantKind)
			}
			if pe.Hint != tt.wantHint {
				t.Errorf("hint = %q, want %q", pe.Hint, tt.wantHint)
			}
			if pe.StatusCode != tt.status || pe.Provider != "p" || pe.Op != tt.op || pe.ID != "sb1" {
				t.Errorf("error fields = %+v", pe)
			}
			if strings.Contains(pe.Error(), "KEY123") {
				t.Errorf("message leaks the secret: %s", pe.Error())
			}
			if tt.status == 429 && pe.RetryAfter != 3*time.Second {
				t.Errorf("RetryAfter = %v, want 3s", pe.RetryAfter)
			}
			if tt.status == 302 && !strings.Contains(pe.Error(), ErrRedirect.Error()) {
				t.Errorf("redirect error = %s, want it to say %q", pe.Error(), ErrRedirect)
			}
		})
	}
}

func TestTransport(t *testing.T) {
	e := &Errors{Provider: "p", Secrets: []string{"KEY123"}, Timeout: 5 * time.Second}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		is   error
		says string
	}{
		{"caller gave up", canceled, errors.New("conn reset"), context.Canceled, "context canceled"},
		{"own timeout", context.Background(), &urlError{timeout: true}, context.DeadlineExceeded, "no answer within 5s"},
		{"refused", context.Background(), errors.New("dial tcp: connection refused (key KEY123)"), nil, "connection refused (key [redacted])"},
		{"nil", context.Background(), nil, nil, "no response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pe := e.Transport(tt.ctx, OpClose, "sb1", "delete sandbox", tt.err)
			if !errors.Is(pe, reaper.ErrTransient) {
				t.Errorf("kind = %v, want transient", pe.Kind)
			}
			if tt.is != nil && !errors.Is(pe, tt.is) {
				t.Errorf("%v is not %v", pe, tt.is)
			}
			if !strings.Contains(pe.Error(), tt.says) || strings.Contains(pe.Error(), "KEY123") {
				t.Errorf("error = %q, want it to contain %q and no secret", pe.Error(), tt.says)
			}
		})
	}
}

type urlError struct{ timeout bool }

func (u *urlError) Error() string   { return "url error" }
func (u *urlError) Timeout() bool   { return u.timeout }
func (u *urlError) Temporary() bool { return false }
func (u *urlError) Is(target error) bool {
	return u.timeout && target == context.DeadlineExceeded
}

func TestHTTPClientDoesNotFollowRedirects(t *testing.T) {
	var followed bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed = true }))
	defer target.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	defer srv.Close()
	base := &http.Client{Timeout: time.Second}
	c := HTTPClient(base, 0)
	req, _ := http.NewRequest(http.MethodDelete, srv.URL, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || followed {
		t.Errorf("status %d, followed %v; want 302 returned as is", resp.StatusCode, followed)
	}
	if base.CheckRedirect != nil {
		t.Error("HTTPClient changed the caller's client")
	}
	if c.Timeout != time.Second {
		t.Errorf("timeout = %v, want the caller's 1s", c.Timeout)
	}
	if HTTPClient(nil, 3*time.Second).Timeout != 3*time.Second {
		t.Error("new client lacks the timeout")
	}
}

func TestBaseURL(t *testing.T) {
	tests := []struct {
		raw, want, err string
	}{
		{"https://api.example.com/", "https://api.example.com", ""},
		{"http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api", ""},
		{"", "", "X_URL is empty"},
		{"ftp://x", "", "must be an http(s) URL"},
		{"https://", "", "has no host"},
		{"https://user:pw@host", "", "user information"},
		{"https://host/?q=1", "", "query"},
		{"://bad", "", "is not a URL"},
	}
	for _, tt := range tests {
		got, err := BaseURL("X_URL", tt.raw)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("BaseURL(%q) = %q, %v; want %q, error containing %q", tt.raw, got, err, tt.want, tt.err)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("BaseURL(%q) error shows the password: %v", tt.raw, err)
		}
	}
}

func TestConfigNeverPrintsSecrets(t *testing.T) {
	fs := []Field{{Key: "url", Value: "https://x"}, Secret("api_key", "s3cr3t"), Secret("token", ""), {Key: "timeout", Value: 30 * time.Second}}
	got := ConfigString("p", fs...)
	if want := `p(url="https://x", api_key=set, token=unset, timeout=30s)`; got != want {
		t.Errorf("ConfigString = %s, want %s", got, want)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "p", ConfigLogValue(fs...))
	if strings.Contains(buf.String(), "s3cr3t") || !strings.Contains(buf.String(), `"api_key_set":true`) || !strings.Contains(buf.String(), `"token_set":false`) {
		t.Errorf("log = %s", buf.String())
	}
}

func TestMatchLabels(t *testing.T) {
	have := map[string]string{"a": "1", "b": "2"}
	tests := []struct {
		want map[string]string
		ok   bool
	}{
		{nil, true},
		{map[string]string{"a": "1"}, true},
		{map[string]string{"a": "1", "b": "2"}, true},
		{map[string]string{"a": "2"}, false},
		{map[string]string{"c": ""}, false},
	}
	for _, tt := range tests {
		if got := MatchLabels(have, tt.want); got != tt.ok {
			t.Errorf("MatchLabels(%v, %v) = %v, want %v", have, tt.want, got, tt.ok)
		}
	}
}
