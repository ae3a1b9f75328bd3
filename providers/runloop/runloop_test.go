package runloop_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/providers/runloop"
	"github.com/reaperd/reaperd/providers/runloop/runlooptest"
	"github.com/reaperd/reaperd/reaper"
)

const testKey = "rl_test_key_0123456789"

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// newProvider returns a provider for url with a short request timeout.
func newProvider(t *testing.T, url string, mod func(*runloop.Config)) *runloop.Provider {
	t.Helper()
	c := runloop.Config{APIKey: testKey, BaseURL: url, Timeout: 500 * time.Millisecond}
	if mod != nil {
		mod(&c)
	}
	p, err := runloop.New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func newFake(t *testing.T) *runlooptest.Server {
	t.Helper()
	srv := runlooptest.NewServer(testKey)
	t.Cleanup(srv.Close)
	return srv
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Options{
		Name:          runloop.Type,
		CredentialEnv: runloop.EnvAPIKey,
		RetryAfter:    true,
		Conflict:      true,
		Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) {
			srv := newFake(t)
			return newProvider(t, srv.URL, nil), srv
		},
	})
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    runloop.Config
		enabled bool
	}{
		{
			name: "empty",
			env:  nil,
			want: runloop.Config{BaseURL: runloop.DefaultBaseURL, Timeout: 30 * time.Second, ForceAfter: 3, PageSize: 100},
		},
		{
			name:    "key and url",
			env:     map[string]string{"RUNLOOP_API_KEY": " ak_123 \n", "RUNLOOP_BASE_URL": "https://api.runloop.pro"},
			want:    runloop.Config{APIKey: "ak_123", BaseURL: "https://api.runloop.pro", Timeout: 30 * time.Second, ForceAfter: 3, PageSize: 100},
			enabled: true,
		},
		{
			name:    "blank url means default",
			env:     map[string]string{"RUNLOOP_API_KEY": "ak_1", "RUNLOOP_BASE_URL": "  "},
			want:    runloop.Config{APIKey: "ak_1", BaseURL: runloop.DefaultBaseURL, Timeout: 30 * time.Second, ForceAfter: 3, PageSize: 100},
			enabled: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runloop.ConfigFromEnv(func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Errorf("ConfigFromEnv = %+v, want %+v", got, tt.want)
			}
			if got.Enabled() != tt.enabled {
				t.Errorf("Enabled() = %v, want %v", got.Enabled(), tt.enabled)
			}
		})
	}
}

func TestConfigStringHidesKey(t *testing.T) {
	c := runloop.Config{APIKey: testKey, BaseURL: "https://api.runloop.ai"}
	for _, s := range []string{c.String(), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, testKey) {
			t.Errorf("formatted config %q contains the API key", s)
		}
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     runloop.Config
		wantErr string // substring; empty means no error
	}{
		{name: "defaults", cfg: runloop.Config{APIKey: "k"}},
		{name: "http allowed", cfg: runloop.Config{APIKey: "k", BaseURL: "http://127.0.0.1:8080/"}},
		{name: "no key", cfg: runloop.Config{BaseURL: "https://api.runloop.ai"}, wantErr: "RUNLOOP_API_KEY is not set"},
		{name: "blank key", cfg: runloop.Config{APIKey: "  "}, wantErr: "RUNLOOP_API_KEY is not set"},
		{name: "key with space", cfg: runloop.Config{APIKey: "secret part"}, wantErr: "whitespace"},
		{name: "bad scheme", cfg: runloop.Config{APIKey: "k", BaseURL: "ftp://api.runloop.ai"}, wantErr: "scheme"},
		{name: "no scheme", cfg: runloop.Config{APIKey: "k", BaseURL: "api.runloop.ai"}, wantErr: "RUNLOOP_BASE_URL"},
		{name: "no host", cfg: runloop.Config{APIKey: "k", BaseURL: "https://"}, wantErr: "no host"},
		{name: "query", cfg: runloop.Config{APIKey: "k", BaseURL: "https://api.runloop.ai?x=1"}, wantErr: "query"},
		{name: "user info", cfg: runloop.Config{APIKey: "k", BaseURL: "https://u:pw@api.runloop.ai"}, wantErr: "user information"},
		{name: "negative timeout", cfg: runloop.Config{APIKey: "k", Timeout: -time.Second}, wantErr: "timeout"},
		{name: "page size too big", cfg: runloop.Config{APIKey: "k", PageSize: 5001}, wantErr: "page size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := runloop.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v; want a provider", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pw") || (tt.cfg.APIKey != "k" && tt.cfg.APIKey != "" && strings.Contains(err.Error(), tt.cfg.APIKey)) {
				t.Fatalf("New error %q leaks a secret", err)
			}
		})
	}
}

// shutdownRequests returns the shutdown requests the fake received.
func shutdownRequests(srv *runlooptest.Server) []string {
	var out []string
	for _, r := range srv.Requests() {
		if strings.Contains(r, "/shutdown") {
			out = append(out, r)
		}
	}
	return out
}

func TestCloseForcesAfterConflicts(t *testing.T) {
	tests := []struct {
		name       string
		forceAfter int
		attempts   int // attempts made, 1..attempts
		wantForced int // first attempt sent with force=true; 0 means none
	}{
		{name: "default forces on the fourth attempt", forceAfter: 0, attempts: 4, wantForced: 4},
		{name: "force after one", forceAfter: 1, attempts: 2, wantForced: 2},
		{name: "force after five", forceAfter: 5, attempts: 6, wantForced: 6},
		{name: "never force", forceAfter: -1, attempts: 8, wantForced: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			p := newProvider(t, srv.URL, func(c *runloop.Config) { c.ForceAfter = tt.forceAfter })
			id := srv.Create(nil, created)
			srv.SetSnapshotInProgress(id, true)
			for n := 1; n <= tt.attempts; n++ {
				err := p.Close(reaper.WithCloseAttempt(testCtx(t), n), id)
				forced := tt.wantForced != 0 && n >= tt.wantForced
				if forced {
					if err != nil {
						t.Fatalf("attempt %d: Close = %v, want nil (forced)", n, err)
					}
					break
				}
				if !errors.Is(err, reaper.ErrConflict) {
					t.Fatalf("attempt %d: Close = %v, want ErrConflict", n, err)
				}
				if !srv.Alive(id) {
					t.Fatalf("attempt %d: devbox shut down without force", n)
				}
			}
			var want []string
			path := "POST /v1/devboxes/" + id + "/shutdown"
			for n := 1; n <= tt.attempts; n++ {
				if tt.wantForced != 0 && n >= tt.wantForced {
					want = append(want, path+"?force=true")
					break
				}
				want = append(want, path)
			}
			if got := shutdownRequests(srv); !slices.Equal(got, want) {
				t.Errorf("shutdown requests =\n%q\nwant\n%q", got, want)
			}
			d, _ := srv.Devbox(id)
			if wantAlive := tt.wantForced == 0; d.Alive() != wantAlive {
				t.Errorf("devbox alive = %v, want %v", d.Alive(), wantAlive)
			}
			if tt.wantForced != 0 && !d.ForcedShutdown {
				t.Errorf("devbox was not shut down by a forced shutdown")
			}
		})
	}
}

func TestCloseConflictHint(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	id := srv.Create(nil, created)
	srv.SetSnapshotInProgress(id, true)
	err := p.Close(reaper.WithCloseAttempt(testCtx(t), 2), id)
	if !errors.Is(err, reaper.ErrConflict) {
		t.Fatalf("Close = %v, want ErrConflict", err)
	}
	for _, want := range []string{"HTTP 409", "in-progress snapshots", "attempt 2 of 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestCloseSuspended(t *testing.T) {
	for _, status := range []string{runlooptest.StatusSuspended, runlooptest.StatusProvisioning, runlooptest.StatusResuming} {
		t.Run(status, func(t *testing.T) {
			srv := newFake(t)
			p := newProvider(t, srv.URL, nil)
			id := srv.CreateWithStatus(status, map[string]string{"team": "a"}, created)
			if !srv.Alive(id) {
				t.Fatalf("fake: %s devbox not alive", status)
			}
			got, err := p.List(testCtx(t), reaper.ListFilter{})
			if err != nil {
				t.Fatalf("List = %v", err)
			}
			if len(got) != 1 || got[0].ID != id || got[0].State != status {
				t.Fatalf("List = %+v, want the %s devbox %s", got, status, id)
			}
			if err := p.Close(testCtx(t), id); err != nil {
				t.Fatalf("Close(%s devbox) = %v", status, err)
			}
			d, _ := srv.Devbox(id)
			if d.Alive() || d.Status != runlooptest.StatusShutdown || d.ShutdownReason != "api_shutdown" {
				t.Fatalf("devbox after Close = %+v, want shut down through the API", d)
			}
		})
	}
}

func TestCloseAlreadyTerminal(t *testing.T) {
	tests := []struct {
		status     string
		answer     int // what the fake answers to the shutdown
		wantLookup bool
	}{
		{runlooptest.StatusShutdown, http.StatusBadRequest, true},
		{runlooptest.StatusFailure, http.StatusBadRequest, true},
		{runlooptest.StatusShutdown, http.StatusOK, false},
		{runlooptest.StatusFailure, http.StatusOK, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s answered %d", tt.status, tt.answer), func(t *testing.T) {
			srv := newFake(t)
			srv.SetTerminalShutdownStatus(tt.answer)
			p := newProvider(t, srv.URL, nil)
			id := srv.CreateWithStatus(tt.status, nil, created)
			if err := p.Close(testCtx(t), id); err != nil {
				t.Fatalf("Close(%s devbox) = %v, want nil", tt.status, err)
			}
			want := []string{"POST /v1/devboxes/" + id + "/shutdown"}
			if tt.wantLookup {
				want = append(want, "GET /v1/devboxes/"+id)
			}
			if got := srv.Requests(); !slices.Equal(got, want) {
				t.Errorf("requests = %q, want %q", got, want)
			}
		})
	}
}

// TestCloseUnknown: a 404 to the shutdown is ErrNotFound, carrying the
// status and Runloop's message, after that one request; the engine, not
// Close, confirms it with the listing.
func TestCloseUnknown(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	err := p.Close(testCtx(t), "dbx_unknown")
	var pe *reaper.ProviderError
	if !errors.As(err, &pe) || pe.Kind != reaper.ErrNotFound || pe.Op != "close" || pe.ID != "dbx_unknown" || pe.StatusCode != http.StatusNotFound {
		t.Fatalf("Close(unknown) = %#v, want ErrNotFound for close dbx_unknown with HTTP 404", err)
	}
	if !strings.Contains(err.Error(), "Devbox not found: dbx_unknown") {
		t.Errorf("Close(unknown) = %q, want Runloop's message", err)
	}
	want := []string{"POST /v1/devboxes/dbx_unknown/shutdown"}
	if got := srv.Requests(); !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q (no lookup after a not-found)", got, want)
	}
}

// TestCloseSpuriousNotFound: a live devbox the API answers 404 for (a key
// of another account) is ErrNotFound after the one shutdown request; it
// stays running and listed.
func TestCloseSpuriousNotFound(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	id := srv.Create(nil, created)
	srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	if err := p.Close(testCtx(t), id); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close = %v, want ErrNotFound", err)
	}
	if got, want := srv.Requests(), []string{"POST /v1/devboxes/" + id + "/shutdown"}; !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q", got, want)
	}
	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil || len(got) != 1 || got[0].ID != id {
		t.Fatalf("List = %v, %v; want [%s]", got, err, id)
	}
	if !srv.Alive(id) {
		t.Fatalf("devbox shut down by a spurious 404")
	}
}

// TestCloseWrongBaseURL: a base URL that does not point at the API 404s
// everything. Close reports that as a not-found, never as closed, and the
// listing, the engine's confirmation, fails naming RUNLOOP_BASE_URL, so the
// devbox is never taken for gone.
func TestCloseWrongBaseURL(t *testing.T) {
	srv := newFake(t)
	id := srv.Create(nil, created)
	wrong := newProvider(t, srv.URL+"/api", nil)
	if err := wrong.Close(testCtx(t), id); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close with a wrong base URL = %v, want ErrNotFound (never nil)", err)
	}
	if _, err := wrong.List(testCtx(t), reaper.ListFilter{}); err == nil || errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), "RUNLOOP_BASE_URL") {
		t.Fatalf("List with a wrong base URL = %v, want an error naming RUNLOOP_BASE_URL", err)
	}
	if !srv.Alive(id) {
		t.Fatalf("devbox shut down through a wrong base URL")
	}
}

func TestListPagination(t *testing.T) {
	srv := newFake(t)
	srv.SetPageSize(2)
	p := newProvider(t, srv.URL, func(c *runloop.Config) { c.PageSize = 50 })

	var running []string
	for i := range 5 {
		running = append(running, srv.Create(map[string]string{"n": fmt.Sprint(i)}, created.Add(time.Duration(i)*time.Minute)))
	}
	suspended := srv.CreateWithStatus(runlooptest.StatusSuspended, nil, created.Add(time.Hour))
	srv.CreateWithStatus(runlooptest.StatusShutdown, nil, created)
	srv.CreateWithStatus(runlooptest.StatusFailure, nil, created)
	closed := srv.Create(nil, created)
	if err := p.Close(testCtx(t), closed); err != nil {
		t.Fatalf("Close = %v", err)
	}
	srv.ResetRequests()

	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	var gotIDs []string
	for _, s := range got {
		gotIDs = append(gotIDs, s.ID)
	}
	wantIDs := append(slices.Clone(running), suspended) // oldest first
	if !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("List ids = %q, want %q", gotIDs, wantIDs)
	}
	for i, s := range got[:5] {
		if want := created.Add(time.Duration(i) * time.Minute); !s.CreatedAt.Equal(want) || s.State != "running" || s.Labels["n"] != fmt.Sprint(i) {
			t.Errorf("sandbox %d = %+v, want created %v, running, n=%d", i, s, want, i)
		}
	}

	// Running devboxes come newest first, two a page, each page starting
	// after the last id of the one before.
	var runningReqs []string
	for _, r := range srv.Requests() {
		if strings.Contains(r, "status=running") {
			runningReqs = append(runningReqs, r)
		}
	}
	page := func(after string) string {
		q := "GET /v1/devboxes?include_total_count=false&limit=50"
		if after != "" {
			q += "&starting_after=" + after
		}
		return q + "&status=running"
	}
	wantReqs := []string{page(""), page(running[3]), page(running[1])}
	if !slices.Equal(runningReqs, wantReqs) {
		t.Errorf("running list requests =\n%q\nwant\n%q", runningReqs, wantReqs)
	}
	for _, r := range srv.Requests() {
		if strings.Contains(r, "status=shutdown") || strings.Contains(r, "status=failure") {
			t.Errorf("List asked for terminal devboxes: %s", r)
		}
	}
}

func TestListLabelFilter(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	a := srv.Create(map[string]string{"team": "a", "env": "prod"}, created)
	b := srv.Create(map[string]string{"team": "a", "env": "dev"}, created.Add(time.Minute))
	c := srv.Create(map[string]string{"team": "b", "env": "prod"}, created.Add(2*time.Minute))
	d := srv.CreateWithStatus(runlooptest.StatusSuspended, map[string]string{"team": "a"}, created.Add(3*time.Minute))
	srv.CreateWithStatus(runlooptest.StatusShutdown, map[string]string{"team": "a", "env": "prod"}, created)
	none := srv.Create(nil, created.Add(4*time.Minute))

	tests := []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{name: "no filter", labels: nil, want: []string{a, b, c, d, none}},
		{name: "empty filter", labels: map[string]string{}, want: []string{a, b, c, d, none}},
		{name: "one label", labels: map[string]string{"team": "a"}, want: []string{a, b, d}},
		{name: "two labels", labels: map[string]string{"team": "a", "env": "prod"}, want: []string{a}},
		{name: "empty value does not match a missing key", labels: map[string]string{"env": ""}, want: nil},
		{name: "no match", labels: map[string]string{"team": "z"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.ResetRequests()
			got, err := p.List(testCtx(t), reaper.ListFilter{Labels: tt.labels})
			if err != nil {
				t.Fatalf("List = %v", err)
			}
			var ids []string
			for _, s := range got {
				ids = append(ids, s.ID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("List(%v) = %q, want %q", tt.labels, ids, tt.want)
			}
			for _, r := range srv.Requests() {
				if strings.Contains(r, "metadata") || strings.Contains(r, "team") {
					t.Errorf("request %q sends the label filter to the server", r)
				}
			}
		})
	}
}

func TestWrongKey(t *testing.T) {
	srv := newFake(t)
	id := srv.Create(nil, created)
	const wrongKey = "rl_wrong_key_secret_value"
	p := newProvider(t, srv.URL, func(c *runloop.Config) { c.APIKey = wrongKey })
	for name, err := range map[string]error{
		"Close": p.Close(testCtx(t), id),
		"List":  func() error { _, err := p.List(testCtx(t), reaper.ListFilter{}); return err }(),
	} {
		if !errors.Is(err, reaper.ErrUnauthorized) {
			t.Errorf("%s with a wrong key = %v, want ErrUnauthorized", name, err)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, wrongKey) || !strings.Contains(msg, "RUNLOOP_API_KEY") {
			t.Errorf("%s error %q must name RUNLOOP_API_KEY and not contain the key", name, msg)
		}
	}
	if !srv.Alive(id) {
		t.Fatalf("devbox shut down with a wrong key")
	}
}

// stub is an HTTP server whose answers are set per test.
type stub struct {
	shutdown func(w http.ResponseWriter, r *http.Request)
	get      func(w http.ResponseWriter, r *http.Request)
	list     func(w http.ResponseWriter, r *http.Request)
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var h func(http.ResponseWriter, *http.Request)
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/shutdown"):
		h = s.shutdown
	case r.Method == http.MethodGet && r.URL.Path == "/v1/devboxes":
		h = s.list
	case r.Method == http.MethodGet:
		h = s.get
	}
	if h == nil {
		http.Error(w, "unexpected request "+r.Method+" "+r.URL.Path, http.StatusTeapot)
		return
	}
	h(w, r)
}

func answer(code int, header map[string]string, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}
}

func TestCloseClassification(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		stub       stub
		wantKind   error // nil means Close returns nil
		wantRetry  time.Duration
		retrySlack time.Duration // an HTTP date has whole seconds
		wantText   string
	}{
		{name: "200", stub: stub{shutdown: answer(200, nil, `{"id":"dbx_1","status":"shutdown"}`)}},
		{name: "401", stub: stub{shutdown: answer(401, nil, `{"message":"bad key"}`)}, wantKind: reaper.ErrUnauthorized, wantText: "bad key"},
		{name: "403", stub: stub{shutdown: answer(403, nil, ``)}, wantKind: reaper.ErrUnauthorized, wantText: "Forbidden"},
		{name: "429 seconds", stub: stub{shutdown: answer(429, map[string]string{"Retry-After": "12"}, `{}`)}, wantKind: reaper.ErrRateLimited, wantRetry: 12 * time.Second},
		{name: "429 ms and s", stub: stub{shutdown: answer(429, map[string]string{"Retry-After-Ms": "1500", "Retry-After": "9"}, `{}`)}, wantKind: reaper.ErrRateLimited, wantRetry: 9 * time.Second}, // the longest delay asked for wins
		{name: "429 ms", stub: stub{shutdown: answer(429, map[string]string{"Retry-After-Ms": "1500"}, `{}`)}, wantKind: reaper.ErrRateLimited, wantRetry: 1500 * time.Millisecond},
		{name: "429 date", stub: stub{shutdown: answer(429, map[string]string{"Retry-After": future}, `{}`)}, wantKind: reaper.ErrRateLimited, wantRetry: 89 * time.Second, retrySlack: 2 * time.Second},
		{name: "429 none", stub: stub{shutdown: answer(429, nil, `{}`)}, wantKind: reaper.ErrRateLimited},
		{name: "409", stub: stub{shutdown: answer(409, nil, `{"error":{"message":"snapshot running"}}`)}, wantKind: reaper.ErrConflict, wantText: "snapshot running"},
		{name: "500", stub: stub{shutdown: answer(500, nil, `<html>oops</html>`)}, wantKind: reaper.ErrTransient, wantText: "Internal Server Error"},
		{name: "503", stub: stub{shutdown: answer(503, nil, `upstream down`)}, wantKind: reaper.ErrTransient, wantText: "upstream down"},
		{name: "418 unexpected", stub: stub{shutdown: answer(418, nil, `{"detail":"teapot"}`)}, wantKind: reaper.ErrTransient, wantText: "teapot"},
		{
			name: "400 for a running devbox",
			stub: stub{
				shutdown: answer(400, nil, `{"message":"cannot shut down"}`),
				get:      answer(200, nil, `{"id":"dbx_1","status":"running"}`),
			},
			wantKind: reaper.ErrTransient, wantText: "devbox is running",
		},
		{
			name: "400 for a queued devbox",
			stub: stub{
				shutdown: answer(400, nil, `{"message":"cannot shut down"}`),
				get:      answer(200, nil, `{"id":"dbx_1","status":"queued"}`),
			},
			wantKind: reaper.ErrConflict, wantText: "devbox is queued",
		},
		{
			name: "400 for a shut down devbox",
			stub: stub{
				shutdown: answer(400, nil, `{"message":"Devbox dbx_1 is already in terminal state shutdown"}`),
				get:      answer(200, nil, `{"id":"dbx_1","status":"shutdown"}`),
			},
		},
		{
			name: "400 for a suspending devbox",
			stub: stub{
				shutdown: answer(400, nil, `{"message":"cannot shut down"}`),
				get:      answer(200, nil, `{"id":"dbx_1","status":"suspending"}`),
			},
			wantKind: reaper.ErrConflict, wantText: "devbox is suspending",
		},
		// A 404 is a not-found whatever the other endpoints would say: the
		// list and the lookup fail here, and must not be consulted.
		{
			name: "404",
			stub: stub{
				shutdown: answer(404, nil, `{"message":"Devbox not found: dbx_1"}`),
				get:      answer(500, nil, `{"message":"must not be asked"}`),
				list:     answer(429, map[string]string{"Retry-After": "3"}, `{}`),
			},
			wantKind: reaper.ErrNotFound, wantText: "shut down devbox: Devbox not found: dbx_1",
		},
		{
			name: "404 without a body",
			stub: stub{
				shutdown: answer(404, nil, ``),
				list:     answer(500, nil, `{}`),
			},
			wantKind: reaper.ErrNotFound, wantText: "Not Found",
		},
		{
			name: "400 then devbox not found",
			stub: stub{
				shutdown: answer(400, nil, `{"message":"cannot shut down"}`),
				get:      answer(404, nil, `{"message":"Devbox not found: dbx_1"}`),
				list:     answer(500, nil, `{"message":"must not be asked"}`),
			},
			wantKind: reaper.ErrNotFound, wantText: "get devbox: Devbox not found: dbx_1",
		},
		{name: "key echoed", stub: stub{shutdown: answer(401, nil, `{"message":"bad key `+testKey+`"}`)}, wantKind: reaper.ErrUnauthorized, wantText: "[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(&tt.stub)
			defer ts.Close()
			p := newProvider(t, ts.URL, nil)
			err := p.Close(testCtx(t), "dbx_1")
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("Close = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("Close = %v, want %v", err, tt.wantKind)
			}
			if errors.Is(err, reaper.ErrNotFound) != (tt.wantKind == reaper.ErrNotFound) {
				t.Fatalf("Close = %v: not-found classification wrong", err)
			}
			var pe *reaper.ProviderError
			if tt.wantKind == reaper.ErrNotFound && (!errors.As(err, &pe) || pe.StatusCode != http.StatusNotFound || pe.Op != "close" || pe.ID != "dbx_1") {
				t.Fatalf("Close = %#v, want close dbx_1 with HTTP 404", err)
			}
			if d, _ := reaper.RetryAfter(err); d < tt.wantRetry || d > tt.wantRetry+tt.retrySlack {
				t.Errorf("RetryAfter = %v, want %v (+%v)", d, tt.wantRetry, tt.retrySlack)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestListBadPages(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{name: "not json", body: `<html>`, want: "decode devbox list"},
		{name: "cursor stuck", body: `{"devboxes":[{"id":"dbx_1","status":"running"}],"has_more":true}`, want: "did not advance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(&stub{list: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("starting_after") == "" || tt.name == "cursor stuck" {
					fmt.Fprint(w, tt.body)
					return
				}
				fmt.Fprint(w, `{"devboxes":[{"id":"dbx_1","status":"running"}],"has_more":true}`)
			}})
			defer ts.Close()
			p := newProvider(t, ts.URL, nil)
			_, err := p.List(testCtx(t), reaper.ListFilter{})
			if !errors.Is(err, reaper.ErrTransient) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("List = %v, want a transient error containing %q", err, tt.want)
			}
		})
	}
}

func TestListIgnoresServerSideStatusFilterFailure(t *testing.T) {
	// A server that ignored the status filter would return every devbox for
	// every status: List still returns each live devbox once.
	ts := httptest.NewServer(&stub{list: answer(200, nil, `{"devboxes":[
		{"id":"dbx_2","status":"running","create_time_ms":2000,"metadata":{}},
		{"id":"dbx_1","status":"shutdown","create_time_ms":1000,"metadata":{}},
		{"id":"dbx_0","status":"suspended","create_time_ms":500}
	],"has_more":false}`)})
	defer ts.Close()
	p := newProvider(t, ts.URL, nil)
	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	want := []reaper.Sandbox{
		{ID: "dbx_0", CreatedAt: time.UnixMilli(500).UTC(), State: "suspended"},
		{ID: "dbx_2", CreatedAt: time.UnixMilli(2000).UTC(), State: "running"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
}

// TestListQueued: devboxes waiting for infrastructure (queued, or scheduled,
// its deprecated name) are live and listed, in lifecycle order of the status
// requests.
func TestListQueued(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	queued := srv.CreateWithStatus(runlooptest.StatusQueued, map[string]string{"team": "a"}, created)
	scheduled := srv.CreateWithStatus(runlooptest.StatusScheduled, map[string]string{"team": "a"}, created.Add(time.Minute))
	running := srv.Create(map[string]string{"team": "a"}, created.Add(2*time.Minute))

	got, err := p.List(testCtx(t), reaper.ListFilter{Labels: map[string]string{"team": "a"}})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	var ids, states []string
	for _, s := range got {
		ids = append(ids, s.ID)
		states = append(states, s.State)
	}
	if !slices.Equal(ids, []string{queued, scheduled, running}) || !slices.Equal(states, []string{"queued", "scheduled", "running"}) {
		t.Fatalf("List = %q %q, want %q in states queued, scheduled, running", ids, states, []string{queued, scheduled, running})
	}
	var order []string
	for _, r := range srv.Requests() {
		_, q, _ := strings.Cut(r, "status=")
		order = append(order, q)
	}
	want := []string{"scheduled", "queued", "provisioning", "initializing", "running", "suspending", "suspended", "resuming"}
	if !slices.Equal(order, want) {
		t.Fatalf("status requests = %q, want %q", order, want)
	}
	if err := p.Close(testCtx(t), queued); err != nil || srv.Alive(queued) {
		t.Fatalf("Close(queued) = %v (alive %v), want nil and shut down", err, srv.Alive(queued))
	}
}

// TestListNameAndTemplate: Name is the devbox's name, Template its
// blueprint, else the snapshot it was created from.
func TestListNameAndTemplate(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	a := srv.CreateDevbox(runlooptest.DevboxSpec{Name: "agent-a", BlueprintID: "bpt_abc", SnapshotID: "snp_ignored", CreatedAt: created})
	b := srv.CreateDevbox(runlooptest.DevboxSpec{SnapshotID: "snp_123", CreatedAt: created.Add(time.Minute)})
	c := srv.CreateDevbox(runlooptest.DevboxSpec{Status: runlooptest.StatusSuspended, Name: "bare", CreatedAt: created.Add(2 * time.Minute)})
	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	want := []reaper.Sandbox{
		{ID: a, Name: "agent-a", Template: "bpt_abc", State: "running", CreatedAt: created},
		{ID: b, Template: "snp_123", State: "running", CreatedAt: created.Add(time.Minute)},
		{ID: c, Name: "bare", State: "suspended", CreatedAt: created.Add(2 * time.Minute)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
}

func TestCloseEmptyID(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, srv.URL, nil)
	if err := p.Close(testCtx(t), ""); !errors.Is(err, reaper.ErrInvalid) || errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close(\"\") = %v, want ErrInvalid", err)
	}
	if got := srv.Requests(); len(got) != 0 {
		t.Fatalf("requests = %q, want none", got)
	}
}

func TestCheck(t *testing.T) {
	srv := newFake(t)
	srv.Create(nil, created)
	srv.Create(nil, created)
	p := newProvider(t, srv.URL, nil)
	if err := p.Check(testCtx(t)); err != nil {
		t.Fatalf("Check = %v, want nil", err)
	}
	if got, want := srv.Requests(), []string{"GET /v1/devboxes?include_total_count=false&limit=1"}; !slices.Equal(got, want) {
		t.Fatalf("Check sent %q, want %q", got, want)
	}

	const wrongKey = "rl_wrong_key_secret_value"
	err := newProvider(t, srv.URL, func(c *runloop.Config) { c.APIKey = wrongKey }).Check(testCtx(t))
	var pe *reaper.ProviderError
	if !errors.Is(err, reaper.ErrUnauthorized) || !errors.As(err, &pe) || pe.Op != "check" || !strings.Contains(err.Error(), "RUNLOOP_API_KEY") || strings.Contains(err.Error(), wrongKey) {
		t.Fatalf("Check with a wrong key = %v, want ErrUnauthorized for op check naming RUNLOOP_API_KEY, without the key", err)
	}

	err = newProvider(t, srv.URL+"/api", nil).Check(testCtx(t))
	if !errors.Is(err, reaper.ErrTransient) || errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), "RUNLOOP_BASE_URL") {
		t.Fatalf("Check against a wrong base URL = %v, want ErrTransient naming RUNLOOP_BASE_URL", err)
	}

	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Check(c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a canceled context = %v, want context.Canceled", err)
	}
}
