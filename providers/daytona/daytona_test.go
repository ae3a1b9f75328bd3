package daytona

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/daytona/daytonatest"
	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/reaper"
)

const testKey = "dtn_test_0123456789abcdef"

// newTestProvider returns a provider for the fake at url with short timeouts
// and fast polling.
func newTestProvider(t *testing.T, c Config) *Provider {
	t.Helper()
	if c.APIKey == "" {
		c.APIKey = testKey
	}
	if c.Timeout == 0 {
		c.Timeout = 500 * time.Millisecond
	}
	if c.DeleteWait == 0 {
		c.DeleteWait = 2 * time.Second
	}
	p, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.pollMin, p.pollMax = 10*time.Millisecond, 50*time.Millisecond
	return p
}

func newFake(t *testing.T) *daytonatest.Server {
	t.Helper()
	srv := daytonatest.NewServer(testKey)
	t.Cleanup(srv.Close)
	return srv
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Options{
		Name:          Type,
		CredentialEnv: EnvAPIKey,
		RetryAfter:    true,
		Conflict:      true,
		Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) {
			srv := newFake(t)
			return newTestProvider(t, Config{APIURL: srv.URL}), srv
		},
	})
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Config
	}{
		{
			name: "defaults",
			env:  map[string]string{},
			want: Config{APIURL: DefaultAPIURL, Timeout: DefaultTimeout, DeleteWait: DefaultDeleteWait},
		},
		{
			name: "all set",
			env: map[string]string{
				"DAYTONA_API_KEY": " key ", "DAYTONA_API_URL": "http://localhost:3000/api",
				"DAYTONA_ORGANIZATION_ID": "org-1",
			},
			want: Config{APIKey: "key", APIURL: "http://localhost:3000/api", OrganizationID: "org-1",
				Timeout: DefaultTimeout, DeleteWait: DefaultDeleteWait},
		},
		{
			// The deprecated name, still read by Daytona's SDKs.
			name: "server url fallback",
			env:  map[string]string{"DAYTONA_SERVER_URL": " http://old.example/api "},
			want: Config{APIURL: "http://old.example/api", Timeout: DefaultTimeout, DeleteWait: DefaultDeleteWait},
		},
		{
			name: "api url wins over server url",
			env:  map[string]string{"DAYTONA_API_URL": "http://new.example/api", "DAYTONA_SERVER_URL": "http://old.example/api"},
			want: Config{APIURL: "http://new.example/api", Timeout: DefaultTimeout, DeleteWait: DefaultDeleteWait},
		},
		{
			name: "blank api url falls back",
			env:  map[string]string{"DAYTONA_API_URL": "  ", "DAYTONA_SERVER_URL": "http://old.example/api"},
			want: Config{APIURL: "http://old.example/api", Timeout: DefaultTimeout, DeleteWait: DefaultDeleteWait},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ConfigFromEnv(func(k string) string { return tt.env[k] })
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ConfigFromEnv = %+v, want %+v", got, tt.want)
			}
			if got.Enabled() != (tt.want.APIKey != "") {
				t.Fatalf("Enabled() = %v", got.Enabled())
			}
		})
	}
}

func TestConfigHidesKey(t *testing.T) {
	c := Config{APIKey: testKey, APIURL: DefaultAPIURL}
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%v", c), c.LogValue().String()} {
		if strings.Contains(s, testKey) {
			t.Fatalf("%q contains the API key", s)
		}
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		c       Config
		wantErr string // substring; "" for success
	}{
		{"ok", Config{APIKey: testKey}, ""},
		{"ok http", Config{APIKey: testKey, APIURL: "http://127.0.0.1:3000/api/"}, ""},
		{"no key", Config{APIURL: DefaultAPIURL}, "DAYTONA_API_KEY is not set"},
		{"blank key", Config{APIKey: "  "}, "DAYTONA_API_KEY is not set"},
		{"key with space", Config{APIKey: testKey + " x"}, "whitespace"},
		{"scheme", Config{APIKey: testKey, APIURL: "ftp://app.daytona.io/api"}, "http(s) URL"},
		{"no host", Config{APIKey: testKey, APIURL: "https:///api"}, "no host"},
		{"bare word", Config{APIKey: testKey, APIURL: "app.daytona.io"}, "http(s) URL"},
		{"query", Config{APIKey: testKey, APIURL: "https://app.daytona.io/api?x=1"}, "query"},
		{"userinfo", Config{APIKey: testKey, APIURL: "https://u:p@app.daytona.io/api"}, "user information"},
		{"negative timeout", Config{APIKey: testKey, Timeout: -time.Second}, "negative timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.c)
			if tt.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v; want a provider", p, err)
				}
				if p.Name() != "daytona" {
					t.Fatalf("Name() = %q", p.Name())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("New error %q contains the API key", err)
			}
		})
	}
}

// script is a hand-written Daytona API for cases the fake does not produce
// on its own; nil fields answer 404 like an unknown route.
type script struct {
	del  func(w http.ResponseWriter, r *http.Request)
	get  func(w http.ResponseWriter, r *http.Request)
	list func(w http.ResponseWriter, r *http.Request)
}

// start serves s and returns a provider for it and the request log.
func (s script) start(t *testing.T, c Config) (*Provider, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var log []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		log = append(log, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			writeAPIError(w, r, 401, "UNAUTHORIZED", "Unauthorized", nil)
			return
		}
		var h func(http.ResponseWriter, *http.Request)
		switch {
		case r.URL.Path == "/api/sandbox" && r.Method == http.MethodGet:
			h = s.list
		case strings.HasPrefix(r.URL.Path, "/api/sandbox/") && r.Method == http.MethodGet:
			h = s.get
		case strings.HasPrefix(r.URL.Path, "/api/sandbox/") && r.Method == http.MethodDelete:
			h = s.del
		}
		if h == nil {
			writeAPIError(w, r, 404, "NOT_FOUND", "Cannot "+r.Method+" "+r.URL.Path, nil)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	c.APIURL = srv.URL + "/api"
	return newTestProvider(t, c), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(log)
	}
}

func writeAPIError(w http.ResponseWriter, r *http.Request, status int, code, msg string, header map[string]string) {
	for k, v := range header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"statusCode": status, "source": "DAYTONA_API", "code": code, "message": msg,
		"error": http.StatusText(status), "path": r.URL.RequestURI(),
		"timestamp": "2026-03-04T05:06:07.000Z", "method": r.Method,
	})
}

// sandboxBody writes a Sandbox with the properties the v0.190.0 client
// requires.
func sandboxBody(state, desired string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/api/sandbox/")
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": id, "organizationId": "org", "name": id, "user": "daytona", "env": map[string]string{},
			"labels": map[string]string{}, "public": false, "networkBlockAll": false, "target": "us",
			"cpu": 1, "gpu": 0, "memory": 1, "disk": 3, "toolboxProxyUrl": "https://proxy.example/toolbox",
			"state": state, "desiredState": desired, "createdAt": "2026-03-04T05:06:07.000Z",
		})
	}
}

func answer(status int, code, msg string, header map[string]string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) { writeAPIError(w, r, status, code, msg, header) }
}

var conflict409 = answer(409, "SANDBOX_STATE_CHANGE_IN_PROGRESS", "Sandbox state change in progress", nil)

// TestCloseConflictConfirmsWithGet covers the 409 "state change in
// progress" answer to DELETE: closed only when GET shows the sandbox
// destroyed. A 404 to that GET is a not-found like any other, not a close:
// the delete was never accepted.
func TestCloseConflictConfirmsWithGet(t *testing.T) {
	tests := []struct {
		name     string
		get      func(http.ResponseWriter, *http.Request)
		wantKind error // nil: Close returns nil
		wantIn   string
	}{
		{"get 404", answer(404, "NOT_FOUND", "Sandbox with ID or name sb-1 not found", nil), reaper.ErrNotFound, "Sandbox with ID or name sb-1 not found"},
		{"get destroyed", sandboxBody("destroyed", "destroyed"), nil, ""},
		{"get destroying", sandboxBody("destroying", "destroyed"), reaper.ErrAccepted, "sandbox is destroying"},
		{"get stopping", sandboxBody("stopping", "stopped"), reaper.ErrConflict, "sandbox is stopping"},
		{"get unknown state", sandboxBody("hibernating", "stopped"), reaper.ErrConflict, "sandbox is hibernating"},
		{"get throttled", answer(429, "RATE_LIMIT_EXCEEDED", "ThrottlerException: Too Many Requests",
			map[string]string{"Retry-After-authenticated": "4"}), reaper.ErrRateLimited, "RATE_LIMIT_EXCEEDED"},
		{"get 500", answer(500, "INTERNAL_SERVER_ERROR", "An unexpected error occurred.", nil), reaper.ErrTransient, "INTERNAL_SERVER_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, log := script{del: conflict409, get: tt.get}.start(t, Config{})
			err := p.Close(context.Background(), "sb-1")
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("Close = %v, want nil", err)
				}
			} else {
				if !errors.Is(err, tt.wantKind) {
					t.Fatalf("Close = %v, want %v", err, tt.wantKind)
				}
				if errors.Is(err, reaper.ErrConflict) && tt.wantKind != reaper.ErrConflict {
					t.Fatalf("Close = %v, classified as conflict too", err)
				}
				if errors.Is(err, reaper.ErrNotFound) && tt.wantKind != reaper.ErrNotFound {
					t.Fatalf("Close = %v, classified as not found too", err)
				}
				if !strings.Contains(err.Error(), tt.wantIn) {
					t.Fatalf("Close = %q, want it to mention %q", err, tt.wantIn)
				}
			}
			want := []string{"DELETE /api/sandbox/sb-1", "GET /api/sandbox/sb-1"}
			if got := log(); !slices.Equal(got, want) {
				t.Fatalf("requests = %v, want %v", got, want)
			}
		})
	}
}

// TestCloseNotFound: a 404 to the DELETE is reaper.ErrNotFound, carrying
// the status and Daytona's message, and Close looks no further: neither a
// GET nor anything else may turn it into a close.
func TestCloseNotFound(t *testing.T) {
	tests := []struct {
		name   string
		del    func(http.ResponseWriter, *http.Request)
		wantIn string
	}{
		{"unknown sandbox", answer(404, "NOT_FOUND", "Sandbox with ID or name sb-1 not found", nil), "NOT_FOUND: Sandbox with ID or name sb-1 not found"},
		// A wrong DAYTONA_API_URL path: NestJS answers an unknown route
		// 404 as well. Still a claim for the listing to confirm (which
		// fails the same way), never a close.
		{"unknown route", nil, "NOT_FOUND: Cannot DELETE /api/sandbox/sb-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, log := script{del: tt.del, get: sandboxBody("destroyed", "destroyed")}.start(t, Config{})
			err := p.Close(context.Background(), "sb-1")
			if !errors.Is(err, reaper.ErrNotFound) {
				t.Fatalf("Close = %v, want ErrNotFound", err)
			}
			var pe *reaper.ProviderError
			if !errors.As(err, &pe) || pe.Op != "close" || pe.ID != "sb-1" || pe.StatusCode != http.StatusNotFound || pe.Kind != reaper.ErrNotFound {
				t.Fatalf("Close = %#v, want a *reaper.ProviderError for close sb-1, HTTP 404, ErrNotFound", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Fatalf("Close = %q, want it to carry %q", err, tt.wantIn)
			}
			if got, want := log(), []string{"DELETE /api/sandbox/sb-1"}; !slices.Equal(got, want) {
				t.Fatalf("requests = %v, want %v (no lookup after a not-found)", got, want)
			}
		})
	}
}

// TestCloseSpuriousNotFoundAtFake: while the fake's access guard answers
// 404 for a live sandbox, Close reports ErrNotFound after the one DELETE,
// the sandbox lives on, and the list still shows it.
func TestCloseSpuriousNotFoundAtFake(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	id := srv.Create(nil, time.Time{})
	srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	err := p.Close(context.Background(), id)
	var pe *reaper.ProviderError
	if !errors.As(err, &pe) || pe.Kind != reaper.ErrNotFound || pe.StatusCode != http.StatusNotFound {
		t.Fatalf("Close = %v, want ErrNotFound with HTTP 404", err)
	}
	if got, want := srv.Requests(), []string{"DELETE /api/sandbox/" + id}; !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
	got, err := p.List(context.Background(), reaper.ListFilter{})
	if err != nil || !slices.Equal(sandboxIDs(got), []string{id}) {
		t.Fatalf("List = %v, %v; want [%s]", sandboxIDs(got), err, id)
	}
	if !srv.Alive(id) {
		t.Fatalf("sandbox gone after a spurious 404")
	}
}

// TestCloseConflictAtFake drives the same rule through the fake's state
// machine: a delete already under way, a pending stop, a failed destroy.
func TestCloseConflictAtFake(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	ctx := context.Background()
	srv.SetDestroyDelay(time.Hour)

	// Someone else's delete (or Daytona's auto-delete) is running: a
	// delete under way, for the listing to confirm.
	a := srv.Create(nil, time.Time{})
	srv.BeginDestroy(a)
	if err := p.Close(ctx, a); !errors.Is(err, reaper.ErrAccepted) || errors.Is(err, reaper.ErrConflict) || !strings.Contains(err.Error(), "destroying") {
		t.Fatalf("Close during a running destroy = %v, want ErrAccepted naming the destroying state", err)
	}
	if !srv.Alive(a) {
		t.Fatalf("sandbox %s gone although its destroy is still running", a)
	}
	srv.CompleteDestroy(a)
	// The destroy was someone else's: Daytona now answers the DELETE 404,
	// which the engine confirms with the listing.
	if err := p.Close(ctx, a); !errors.Is(err, reaper.ErrNotFound) || srv.Alive(a) {
		t.Fatalf("Close after the destroy finished = %v (alive %v), want ErrNotFound", err, srv.Alive(a))
	}

	// A pending stop refuses the delete until it settles.
	b := srv.Create(nil, time.Time{})
	srv.Transition(b, "stopping")
	if err := p.Close(ctx, b); !errors.Is(err, reaper.ErrConflict) || !strings.Contains(err.Error(), "stopping") {
		t.Fatalf("Close during a stop = %v, want ErrConflict naming the stopping state", err)
	}
	srv.SetState(b, daytonatest.StateStopped)
	srv.SetDestroyDelay(0)
	if err := p.Close(ctx, b); err != nil || srv.Alive(b) {
		t.Fatalf("Close of the stopped sandbox = %v (alive %v), want nil and gone", err, srv.Alive(b))
	}

	// A destroy that failed at the runner leaves the sandbox hidden (404):
	// ErrNotFound, and the list, the engine's second signal, omits it.
	c := srv.Create(nil, time.Time{})
	srv.BeginDestroy(c)
	srv.SetDestroyDelay(time.Hour)
	srv.FailDestroy(c)
	if err := p.Close(ctx, c); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close of an errored-deleted sandbox = %v, want ErrNotFound (Daytona answers 404)", err)
	}
	all, err := p.List(ctx, reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if slices.Contains(sandboxIDs(all), a) || slices.Contains(sandboxIDs(all), c) {
		t.Fatalf("List = %v, want neither %s (destroyed) nor %s (errored-deleted)", sandboxIDs(all), a, c)
	}
}

// TestCloseWaitsForDestroy: an accepted delete is confirmed only once GET
// stops seeing the sandbox.
func TestCloseWaitsForDestroy(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	srv.SetDestroyDelay(150 * time.Millisecond)
	id := srv.Create(map[string]string{"team": "a"}, time.Time{})

	start := time.Now()
	if err := p.Close(context.Background(), id); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("Close returned after %v, before the destroy finished", el)
	}
	if srv.Alive(id) {
		t.Fatalf("sandbox still alive after Close returned nil")
	}
	reqs := srv.Requests()
	if len(reqs) < 3 || reqs[0] != "DELETE /api/sandbox/"+id || reqs[len(reqs)-1] != "GET /api/sandbox/"+id {
		t.Fatalf("requests = %v, want DELETE then several GETs", reqs)
	}
	last := srv.Log()[len(reqs)-1]
	if last.Status != http.StatusNotFound {
		t.Fatalf("last GET answered %d, want 404", last.Status)
	}
}

// TestCloseDeleteWaitExpires: still destroying after DeleteWait is an
// accepted delete (ErrAccepted), never closed: the engine's listing
// confirms it; a retry answers the same while the destroy runs, and a
// not-found once it is done.
func TestCloseDeleteWaitExpires(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL, DeleteWait: 60 * time.Millisecond})
	srv.SetDestroyDelay(time.Hour)
	id := srv.Create(nil, time.Time{})
	ctx := context.Background()

	err := p.Close(ctx, id)
	if !errors.Is(err, reaper.ErrAccepted) || !strings.Contains(err.Error(), "still destroying") {
		t.Fatalf("Close = %v, want ErrAccepted (delete accepted, still destroying)", err)
	}
	if !srv.Alive(id) {
		t.Fatalf("fake destroyed the sandbox early")
	}
	// Retry while the destroy runs: DELETE 409, GET destroying.
	if err := p.Close(ctx, id); !errors.Is(err, reaper.ErrAccepted) {
		t.Fatalf("second Close = %v, want ErrAccepted", err)
	}
	log := srv.Log()
	if got := log[len(log)-2]; got.Method != "DELETE" || got.Status != http.StatusConflict {
		t.Fatalf("second DELETE answered %+v, want 409", got)
	}
	srv.CompleteDestroy(id)
	// Once destroyed, the retried DELETE is answered 404: a not-found for
	// the engine to confirm with the listing, which no longer shows it.
	if err := p.Close(ctx, id); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close after the destroy finished = %v, want ErrNotFound", err)
	}
	if all, err := p.List(ctx, reaper.ListFilter{}); err != nil || slices.Contains(sandboxIDs(all), id) {
		t.Fatalf("List = %v, %v; want it without %s", sandboxIDs(all), err, id)
	}

	// The default (zero) and a negative DeleteWait check once and do not
	// wait: no close slot is held while Daytona destroys the sandbox.
	for _, wait := range []time.Duration{-1, DefaultDeleteWait} {
		q, err := New(Config{APIKey: testKey, APIURL: srv.URL, DeleteWait: wait})
		if err != nil {
			t.Fatal(err)
		}
		other := srv.Create(nil, time.Time{})
		start := time.Now()
		if err := q.Close(ctx, other); !errors.Is(err, reaper.ErrAccepted) {
			t.Fatalf("Close with DeleteWait %v = %v, want ErrAccepted", wait, err)
		}
		if el := time.Since(start); el > 500*time.Millisecond {
			t.Fatalf("Close with DeleteWait %v took %v", wait, el)
		}
	}
}

func TestCloseStoppedAndArchived(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	for _, state := range []string{daytonatest.StateStopped, daytonatest.StateArchived, daytonatest.StatePaused, daytonatest.StateError} {
		id := srv.Create(nil, time.Time{})
		srv.SetState(id, state)
		if !srv.Alive(id) {
			t.Fatalf("%s sandbox not alive at the fake", state)
		}
		if err := p.Close(context.Background(), id); err != nil || srv.Alive(id) {
			t.Fatalf("Close(%s sandbox) = %v (alive %v), want nil and gone", state, err, srv.Alive(id))
		}
	}
}

// TestRateLimitedOverTheWire checks that the delay survives the generated
// client, header canonicalisation included, for Close and List.
func TestRateLimitedOverTheWire(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"Retry-After", map[string]string{"Retry-After": "6"}, 6 * time.Second},
		{"Retry-After-<throttler>", map[string]string{"Retry-After-sandbox-lifecycle": "11"}, 11 * time.Second},
		{"both", map[string]string{"Retry-After": "2", "Retry-After-authenticated": "8"}, 8 * time.Second},
		{"none", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			throttled := answer(429, "RATE_LIMIT_EXCEEDED", "ThrottlerException: Too Many Requests", tt.header)
			p, _ := script{del: throttled, list: throttled}.start(t, Config{})
			err := p.Close(context.Background(), "sb-1")
			if !errors.Is(err, reaper.ErrRateLimited) {
				t.Fatalf("Close = %v, want ErrRateLimited", err)
			}
			if d, _ := reaper.RetryAfter(err); d != tt.want {
				t.Fatalf("Close RetryAfter = %v, want %v", d, tt.want)
			}
			_, err = p.List(context.Background(), reaper.ListFilter{})
			if d, _ := reaper.RetryAfter(err); !errors.Is(err, reaper.ErrRateLimited) || d != tt.want {
				t.Fatalf("List = %v (retry after %v), want ErrRateLimited after %v", err, d, tt.want)
			}
		})
	}
}

func TestLabelsParam(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{}, ""},
		{map[string]string{"team": "a"}, `{"team":"a"}`},
		{map[string]string{"b": "2", "a": "1"}, `{"a":"1","b":"2"}`},
		{map[string]string{"q": `x&y=<z> "é"`}, `{"q":"x&y=<z> \"é\""}`},
	}
	for _, tt := range tests {
		got, err := labelsParam(tt.labels)
		if err != nil || got != tt.want {
			t.Errorf("labelsParam(%v) = %q, %v; want %q", tt.labels, got, err, tt.want)
		}
	}
}

// TestListLabelsFilterEncoding checks the query the fake receives: the
// labels filter as one JSON object, sent on every page.
func TestListLabelsFilterEncoding(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	srv.SetPageSize(1)
	odd := map[string]string{"team": "a", "note": "x&y=z é"}
	want1 := srv.Create(odd, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	want2 := srv.Create(map[string]string{"team": "a", "note": "x&y=z é", "extra": "1"}, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))
	srv.Create(map[string]string{"team": "a"}, time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC))
	srv.Create(map[string]string{"team": "b", "note": "x&y=z é"}, time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC))

	got, err := p.List(context.Background(), reaper.ListFilter{Labels: odd})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if ids := sandboxIDs(got); !slices.Equal(ids, sortedStrings(want1, want2)) {
		t.Fatalf("List(labels) = %v, want %v", ids, sortedStrings(want1, want2))
	}
	log := srv.Log()
	if len(log) != 2 {
		t.Fatalf("requests = %v, want two pages", srv.Requests())
	}
	for i, r := range log {
		if r.Method != "GET" || r.Path != "/api/sandbox" {
			t.Fatalf("request %d = %s %s, want GET /api/sandbox", i, r.Method, r.Path)
		}
		var sent map[string]string
		if err := json.Unmarshal([]byte(r.Query.Get("labels")), &sent); err != nil || !reflect.DeepEqual(sent, odd) {
			t.Fatalf("page %d labels = %q (%v), want JSON of %v", i, r.Query.Get("labels"), err, odd)
		}
		if r.Query.Get("limit") != "100" || r.Query.Get("includeErroredDeleted") != "false" ||
			r.Query.Get("sort") != "createdAt" || r.Query.Get("order") != "asc" {
			t.Fatalf("page %d query = %v, want limit=100 includeErroredDeleted=false sort=createdAt order=asc", i, r.Query)
		}
		if (i == 0) != (r.Query.Get("cursor") == "") {
			t.Fatalf("page %d cursor = %q", i, r.Query.Get("cursor"))
		}
	}

	// No filter: no labels parameter at all.
	if _, err := p.List(context.Background(), reaper.ListFilter{}); err != nil {
		t.Fatalf("List() = %v", err)
	}
	log = srv.Log()
	if q := log[len(log)-1].Query; q.Has("labels") {
		t.Fatalf("unfiltered List sent labels=%q", q.Get("labels"))
	}
}

func TestListStates(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	want := map[string]string{}
	for _, state := range []string{daytonatest.StateStarted, daytonatest.StateStopped, daytonatest.StateArchived, daytonatest.StatePaused, daytonatest.StateError} {
		id := srv.Create(map[string]string{"state": state}, at)
		srv.SetState(id, state)
		want[id] = state
	}
	srv.SetDestroyDelay(time.Hour)
	destroying := srv.Create(nil, at)
	srv.BeginDestroy(destroying)
	want[destroying] = daytonatest.StateDestroying

	srv.SetDestroyDelay(0)
	destroyed := srv.Create(nil, at)
	srv.BeginDestroy(destroyed)
	erroredDeleted := srv.Create(nil, at)
	srv.FailDestroy(erroredDeleted)

	got, err := p.List(context.Background(), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	gotStates := map[string]string{}
	for _, sb := range got {
		gotStates[sb.ID] = sb.State
		if !sb.CreatedAt.Equal(at) {
			t.Errorf("sandbox %s CreatedAt = %v, want %v", sb.ID, sb.CreatedAt, at)
		}
	}
	if !reflect.DeepEqual(gotStates, want) {
		t.Fatalf("List states = %v, want %v (destroyed and errored-deleted left out)", gotStates, want)
	}
}

// TestListLenientDecode: a page the generated models reject (a required
// property missing, a state unknown to v0.190.0) is still read.
func TestListLenientDecode(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []reaper.Sandbox
	}{
		{
			name: "unknown state",
			body: `{"items":[{"id":"a","organizationId":"o","name":"agent-a","snapshot":"snap-1","target":"us","user":"daytona","public":false,"cpu":1,"gpu":0,"memory":1,"disk":3,"labels":{"k":"v"},"toolboxProxyUrl":"u","state":"hibernating","createdAt":"2026-03-04T05:06:07.000Z"}],"nextCursor":null}`,
			want: []reaper.Sandbox{{ID: "a", Name: "agent-a", Template: "snap-1", State: "hibernating", Labels: map[string]string{"k": "v"}, CreatedAt: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
				Resources: &reaper.Resources{VCPU: 1, MemoryGiB: 1, DiskGiB: 3}}},
		},
		{
			name: "missing required property",
			body: `{"items":[{"id":"b","name":"agent-b","snapshot":"snap-2","state":"stopped","labels":{},"createdAt":"2026-03-04T05:06:07.5Z"}],"nextCursor":null}`,
			want: []reaper.Sandbox{{ID: "b", Name: "agent-b", Template: "snap-2", State: "stopped", Labels: map[string]string{}, CreatedAt: time.Date(2026, 3, 4, 5, 6, 7, 5e8, time.UTC)}},
		},
		{
			name: "no snapshot",
			body: `{"items":[{"id":"c","organizationId":"o","name":"c","snapshot":null,"target":"us","user":"daytona","public":false,"cpu":1,"gpu":0,"memory":1,"disk":3,"labels":{},"toolboxProxyUrl":"u","state":"started","createdAt":"2026-03-04T05:06:07.000Z"}],"nextCursor":null}`,
			want: []reaper.Sandbox{{ID: "c", Name: "c", State: "started", Labels: map[string]string{}, CreatedAt: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
				Resources: &reaper.Resources{VCPU: 1, MemoryGiB: 1, DiskGiB: 3}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := script{list: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, tt.body)
			}}.start(t, Config{})
			got, err := p.List(context.Background(), reaper.ListFilter{})
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("List = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestListBadPages(t *testing.T) {
	tests := []struct {
		name string
		list func(http.ResponseWriter, *http.Request)
	}{
		{"repeated cursor", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"items":[],"nextCursor":"same"}`)
		}},
		{"not json", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `<html>maintenance</html>`)
		}},
		{"bad request", answer(400, "BAD_REQUEST", "Invalid labels JSON format", nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := script{list: tt.list}.start(t, Config{})
			if _, err := p.List(context.Background(), reaper.ListFilter{}); !errors.Is(err, reaper.ErrTransient) {
				t.Fatalf("List = %v, want ErrTransient", err)
			}
		})
	}
}

func TestWrongKeyIsUnauthorized(t *testing.T) {
	srv := newFake(t)
	const wrong = "dtn_wrong_key_fedcba9876543210"
	p := newTestProvider(t, Config{APIURL: srv.URL, APIKey: wrong})
	id := srv.Create(nil, time.Time{})
	err := p.Close(context.Background(), id)
	if !errors.Is(err, reaper.ErrUnauthorized) {
		t.Fatalf("Close with a wrong key = %v, want ErrUnauthorized", err)
	}
	var pe *reaper.ProviderError
	if !errors.As(err, &pe) || pe.StatusCode != 401 || !strings.Contains(pe.Hint, "DAYTONA_API_KEY") {
		t.Fatalf("error = %#v, want HTTP 401 with a DAYTONA_API_KEY hint", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), testKey) {
		t.Fatalf("error %q leaks a key", err)
	}
	if !strings.Contains(err.Error(), "UNAUTHORIZED: Unauthorized") {
		t.Fatalf("error %q does not carry Daytona's code and message", err)
	}
	if !srv.Alive(id) {
		t.Fatalf("sandbox destroyed with a wrong key")
	}
}

func TestForbiddenIsUnauthorized(t *testing.T) {
	p, _ := script{del: answer(403, "FORBIDDEN", "Forbidden resource", nil)}.start(t, Config{})
	err := p.Close(context.Background(), "sb-1")
	if !errors.Is(err, reaper.ErrUnauthorized) || !strings.Contains(err.Error(), "check DAYTONA_API_KEY") {
		t.Fatalf("Close on 403 = %v, want ErrUnauthorized naming DAYTONA_API_KEY", err)
	}
}

func TestOrganizationHeader(t *testing.T) {
	srv := newFake(t)
	id := srv.Create(nil, time.Time{})
	for _, org := range []string{"", "org-123"} {
		p := newTestProvider(t, Config{APIURL: srv.URL, OrganizationID: org})
		if _, err := p.List(context.Background(), reaper.ListFilter{}); err != nil {
			t.Fatalf("List = %v", err)
		}
		log := srv.Log()
		if got := log[len(log)-1].OrganizationID; got != org {
			t.Fatalf("X-Daytona-Organization-ID = %q, want %q", got, org)
		}
	}
	p := newTestProvider(t, Config{APIURL: srv.URL, OrganizationID: "org-123"})
	if err := p.Close(context.Background(), id); err != nil {
		t.Fatalf("Close = %v", err)
	}
	for _, r := range srv.Log()[2:] {
		if r.OrganizationID != "org-123" {
			t.Fatalf("%s %s sent organization %q", r.Method, r.Path, r.OrganizationID)
		}
	}
}

// TestCloseRejectsBadID: an id no request can name is refused without a
// request, as reaper.ErrInvalid: no retry can change it.
func TestCloseRejectsBadID(t *testing.T) {
	p, log := script{}.start(t, Config{})
	for _, id := range []string{"", " ", "a/b", "a?b"} {
		if err := p.Close(context.Background(), id); !errors.Is(err, reaper.ErrInvalid) || errors.Is(err, reaper.ErrNotFound) {
			t.Fatalf("Close(%q) = %v, want ErrInvalid", id, err)
		}
	}
	if got := log(); len(got) != 0 {
		t.Fatalf("requests = %v, want none", got)
	}
}

// TestCanceledWhileWaiting: canceling during the destroy wait returns at
// once, wrapping context.Canceled, and is not a close.
func TestCanceledWhileWaiting(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL, DeleteWait: 10 * time.Second})
	srv.SetDestroyDelay(time.Hour)
	id := srv.Create(nil, time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := p.Close(ctx, id)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v after cancel", el)
	}
}

func sandboxIDs(sbs []reaper.Sandbox) []string {
	out := make([]string, 0, len(sbs))
	for _, s := range sbs {
		out = append(out, s.ID)
	}
	slices.Sort(out)
	return out
}

func sortedStrings(s ...string) []string {
	slices.Sort(s)
	return s
}

// hookTransport calls after once each list response has been read, before
// the provider sees it: a point between two pages of a List.
type hookTransport struct {
	next  http.RoundTripper
	after func(page int)

	mu    sync.Mutex
	pages int
}

func (h *hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && r.URL.Path == "/api/sandbox" {
		h.mu.Lock()
		h.pages++
		n := h.pages
		h.mu.Unlock()
		h.after(n)
	}
	return resp, err
}

// TestListOrderSurvivesActivity: in Daytona's default order (last activity,
// newest first) a sandbox that sees activity while the list is paged jumps
// ahead of the cursor and is missed; List asks for creation time, which
// does not change, and finds every sandbox.
func TestListOrderSurvivesActivity(t *testing.T) {
	srv := newFake(t)
	srv.SetPageSize(2)
	at := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	var all []string
	for i := range 5 {
		all = append(all, srv.Create(nil, at.Add(time.Duration(i)*time.Minute)))
	}
	oldest := all[0] // last in the default order
	activity := at.Add(time.Hour)
	touch := func(page int) {
		if page == 1 {
			activity = activity.Add(time.Minute)
			srv.Touch(oldest, activity)
		}
	}

	// The default order, paged with the generated client as any caller
	// that sends no sort would.
	raw := newTestProvider(t, Config{APIURL: srv.URL})
	ctx := context.Background()
	var seen []string
	cursor := ""
	for page := 1; ; page++ {
		rctx, cancel := raw.requestContext(ctx)
		req := raw.api.SandboxAPI.ListSandboxes(rctx).Limit(100)
		if cursor != "" {
			req = req.Cursor(cursor)
		}
		res, _, err := req.Execute()
		cancel()
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		for _, it := range res.Items {
			seen = append(seen, it.Id)
		}
		touch(page)
		if cursor = res.GetNextCursor(); cursor == "" {
			break
		}
	}
	if slices.Contains(seen, oldest) || len(seen) != len(all)-1 {
		t.Fatalf("default order listed %v; want every sandbox but %s, which gained activity after the first page", seen, oldest)
	}

	// The provider's order, with the same activity between its pages.
	hook := &hookTransport{next: http.DefaultTransport, after: touch}
	p := newTestProvider(t, Config{APIURL: srv.URL, HTTPClient: &http.Client{Transport: hook, Timeout: time.Second}})
	got, err := p.List(ctx, reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if hook.pages != 3 {
		t.Fatalf("List read %d pages, want 3", hook.pages)
	}
	if ids := sandboxIDs(got); !slices.Equal(ids, sortedStrings(slices.Clone(all)...)) {
		t.Fatalf("List = %v, want all of %v", ids, all)
	}
	for i, sb := range got {
		if sb.ID != all[i] {
			t.Fatalf("List order = %v, want oldest first %v", sandboxIDs(got), all)
		}
	}
}

// TestListNameAndTemplate: Name is the sandbox's name, Template its
// snapshot, empty when Daytona reports none, LastActivityAt its last
// activity (min_idle in adoption rules).
func TestListNameAndTemplate(t *testing.T) {
	srv := newFake(t)
	p := newTestProvider(t, Config{APIURL: srv.URL})
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	named := srv.Create(map[string]string{"n": "1"}, at)
	srv.Rename(named, "agent-7")
	srv.SetSnapshot(named, "python-3.12")
	unnamed := srv.Create(map[string]string{"n": "2"}, at.Add(time.Minute))
	fromImage := srv.Create(map[string]string{"n": "3"}, at.Add(2*time.Minute))
	srv.SetSnapshot(fromImage, "")
	srv.Touch(named, at.Add(time.Hour))

	got, err := p.List(context.Background(), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	size := &reaper.Resources{VCPU: 1, MemoryGiB: 1, DiskGiB: 3} // every sandbox of the fake
	want := []reaper.Sandbox{
		{ID: named, Name: "agent-7", Template: "python-3.12", State: "started", Labels: map[string]string{"n": "1"}, CreatedAt: at, LastActivityAt: at.Add(time.Hour), Resources: size},
		{ID: unnamed, Name: unnamed, Template: daytonatest.DefaultSnapshot, State: "started", Labels: map[string]string{"n": "2"}, CreatedAt: at.Add(time.Minute), LastActivityAt: at.Add(time.Minute), Resources: size},
		{ID: fromImage, Name: fromImage, State: "started", Labels: map[string]string{"n": "3"}, CreatedAt: at.Add(2 * time.Minute), LastActivityAt: at.Add(2 * time.Minute), Resources: size},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("List =\n%+v\nwant\n%+v", got, want)
	}
}

func TestCheck(t *testing.T) {
	srv := newFake(t)
	srv.Create(nil, time.Time{})
	srv.Create(nil, time.Time{})
	p := newTestProvider(t, Config{APIURL: srv.URL, OrganizationID: "org-9"})
	if err := p.Check(context.Background()); err != nil {
		t.Fatalf("Check = %v, want nil", err)
	}
	log := srv.Log()
	if len(log) != 1 || log[0].Method != "GET" || log[0].Path != "/api/sandbox" || log[0].Query.Get("limit") != "1" || log[0].OrganizationID != "org-9" {
		t.Fatalf("Check sent %+v, want one GET /api/sandbox?limit=1 with the organization", log)
	}

	wrong := newTestProvider(t, Config{APIURL: srv.URL, APIKey: "dtn_wrong_key_fedcba9876543210"})
	err := wrong.Check(context.Background())
	if !errors.Is(err, reaper.ErrUnauthorized) || !strings.Contains(err.Error(), "DAYTONA_API_KEY") || strings.Contains(err.Error(), "dtn_wrong") {
		t.Fatalf("Check with a wrong key = %v, want ErrUnauthorized naming DAYTONA_API_KEY, without the key", err)
	}
	var pe *reaper.ProviderError
	if !errors.As(err, &pe) || pe.Op != "check" || pe.StatusCode != 401 {
		t.Fatalf("Check error = %#v, want op check, HTTP 401", err)
	}

	// A URL that is not the API: its 404 is no sandbox's, and names the
	// variable to fix.
	elsewhere := newTestProvider(t, Config{APIURL: srv.URL + "/v2"})
	err = elsewhere.Check(context.Background())
	if !errors.Is(err, reaper.ErrTransient) || errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), "DAYTONA_API_URL") {
		t.Fatalf("Check against a wrong path = %v, want ErrTransient naming DAYTONA_API_URL", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Check(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a canceled context = %v, want context.Canceled", err)
	}
}
