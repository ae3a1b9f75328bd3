package e2b

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/reaper"
)

const testKey = "e2b_0123456789abcdef0123456789abcdef01234567"

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func newProvider(t *testing.T, apiURL, key string) *Provider {
	t.Helper()
	p, err := New(Config{APIKey: key, APIURL: apiURL, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func newFake(t *testing.T) (*Provider, *e2btest.Server) {
	t.Helper()
	srv := e2btest.NewServer(testKey)
	t.Cleanup(srv.Close)
	return newProvider(t, srv.URL, testKey), srv
}

func ctxT(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Options{
		Name:          Type,
		CredentialEnv: "E2B_API_KEY",
		RetryAfter:    true,
		// The kill handler has no 409 answer.
		Conflict: false,
		// E2B refuses "does-not-exist-0000" as malformed (400): more than
		// one "-".
		UnknownID: "doesnotexist0000",
		// The kill handler refuses ids that are not lowercase letters and
		// digits with 400.
		MalformedID: "Not_An_ID",
		// The API reports startedAt, which a resume resets, and no
		// creation time.
		StartedAtOnly: true,
		Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) {
			return newFake(t)
		},
	})
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantURL     string
		wantEnabled bool
	}{
		{"defaults", nil, "https://api.e2b.app", false},
		{"key", map[string]string{"E2B_API_KEY": "e2b_x"}, "https://api.e2b.app", true},
		{"domain", map[string]string{"E2B_API_KEY": "e2b_x", "E2B_DOMAIN": "e2b.example.com"}, "https://api.e2b.example.com", true},
		{"url wins", map[string]string{"E2B_API_URL": "http://127.0.0.1:3000", "E2B_DOMAIN": "e2b.example.com"}, "http://127.0.0.1:3000", false},
		{"blank key", map[string]string{"E2B_API_KEY": "  "}, "https://api.e2b.app", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ConfigFromEnv(func(k string) string { return tt.env[k] })
			if c.APIURL != tt.wantURL || c.Enabled() != tt.wantEnabled {
				t.Errorf("ConfigFromEnv = {URL %q, Enabled %v}, want {%q, %v}", c.APIURL, c.Enabled(), tt.wantURL, tt.wantEnabled)
			}
			if c.Timeout != 0 || c.HTTPClient != nil {
				t.Errorf("ConfigFromEnv set Timeout %v / HTTPClient %v; want zero values", c.Timeout, c.HTTPClient)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		c       Config
		wantErr string // "" means success
	}{
		{"ok", Config{APIKey: testKey, APIURL: "https://api.e2b.app"}, ""},
		{"ok with path", Config{APIKey: testKey, APIURL: "http://localhost:3000/e2b/"}, ""},
		{"no key", Config{APIURL: "https://api.e2b.app"}, "E2B_API_KEY is empty"},
		{"key with newline", Config{APIKey: testKey + "\n", APIURL: "https://api.e2b.app"}, "whitespace"},
		{"no url", Config{APIKey: testKey}, "E2B_API_URL is empty"},
		{"no scheme", Config{APIKey: testKey, APIURL: "api.e2b.app"}, "scheme"},
		{"ftp", Config{APIKey: testKey, APIURL: "ftp://api.e2b.app"}, "scheme"},
		{"no host", Config{APIKey: testKey, APIURL: "https://"}, "no host"},
		{"query", Config{APIKey: testKey, APIURL: "https://api.e2b.app?x=1"}, "query"},
		{"bad url", Config{APIKey: testKey, APIURL: "https://api.e2b.app:port"}, "is not a URL"},
		{"negative timeout", Config{APIKey: testKey, APIURL: "https://api.e2b.app", Timeout: -time.Second}, "negative timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.c)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("New = %v, want error containing %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), testKey):
				t.Fatalf("New error %q contains the API key", err)
			case err == nil && p.errs.Timeout != DefaultTimeout:
				t.Fatalf("timeout = %v, want %v", p.errs.Timeout, DefaultTimeout)
			}
		})
	}
}

func TestNewBaseURLPath(t *testing.T) {
	var got []string
	var mu sync.Mutex
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer ts.Close()
	p := newProvider(t, ts.URL+"/proxy/", testKey)
	if err := p.Close(ctxT(t), "odd/id"); err != nil {
		t.Fatalf("Close = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"DELETE /proxy/sandboxes/odd%2Fid"}; !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
}

func TestEncodeMetadata(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"team": "a"}, "team=a"},
		{map[string]string{"team": "a", "app": "prod"}, "app=prod&team=a"},
		{map[string]string{"k&=": "v w"}, "k%2526%253D=v%2Bw"},
		{map[string]string{"plus": "a+b", "pct": "50%"}, "pct=50%2525&plus=a%252Bb"},
	}
	for _, tt := range tests {
		if got := EncodeMetadata(tt.labels); got != tt.want {
			t.Errorf("EncodeMetadata(%v) = %q, want %q", tt.labels, got, tt.want)
		}
	}
}

// TestMetadataFilterWire checks the exact query reaperd sends, with a
// function-field handler standing in for the API.
func TestMetadataFilterWire(t *testing.T) {
	var mu sync.Mutex
	var raw []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		raw = append(raw, r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]"))
	}))
	defer ts.Close()
	p := newProvider(t, ts.URL, testKey)
	if _, err := p.List(ctxT(t), reaper.ListFilter{Labels: map[string]string{"team": "a b", "x": "1&2"}}); err != nil {
		t.Fatalf("List = %v", err)
	}
	want := "limit=100&metadata=team%3Da%252Bb%26x%3D1%252526" + "2&state=running%2Cpaused"
	mu.Lock()
	defer mu.Unlock()
	if len(raw) != 1 || raw[0] != want {
		t.Fatalf("query = %q, want [%q]", raw, want)
	}
	q, _ := url.ParseQuery(raw[0])
	if _, ok := q["nextToken"]; ok {
		t.Errorf("first page sent nextToken")
	}
}

// TestMetadataFilterRoundTrip lists through the fake, which decodes the
// metadata parameter as the API does, with labels full of special characters.
func TestMetadataFilterRoundTrip(t *testing.T) {
	labels := []map[string]string{
		{"team": "a"},
		{"owner": "a&b=c"},
		{"path": "/tmp/x y+z%20"},
		{"ünï": "cödé", "two": "keys"},
		{"k=": "=v&"},
	}
	p, srv := newFake(t)
	ids := make([]string, len(labels))
	for i, l := range labels {
		ids[i] = srv.Create(l, created.Add(time.Duration(i)*time.Minute))
	}
	srv.Create(nil, created) // no metadata at all
	for i, l := range labels {
		got, err := p.List(ctxT(t), reaper.ListFilter{Labels: l})
		if err != nil {
			t.Fatalf("List(%v) = %v", l, err)
		}
		if len(got) != 1 || got[0].ID != ids[i] {
			t.Errorf("List(%v) = %v, want only %s", l, got, ids[i])
		}
	}
	// One key of a two-key sandbox still selects it.
	got, err := p.List(ctxT(t), reaper.ListFilter{Labels: map[string]string{"two": "keys"}})
	if err != nil || len(got) != 1 || got[0].ID != ids[3] {
		t.Errorf("List(two=keys) = %v, %v; want [%s]", got, err, ids[3])
	}
}

func TestStateQuery(t *testing.T) {
	p, srv := newFake(t)
	running := srv.Create(map[string]string{"k": "v"}, created)
	paused := srv.Create(map[string]string{"k": "v"}, created.Add(time.Minute))
	if !srv.Pause(paused) {
		t.Fatal("fake: Pause failed")
	}
	got, err := p.List(ctxT(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	states := map[string]string{}
	for _, sb := range got {
		states[sb.ID] = sb.State
	}
	if want := map[string]string{running: "running", paused: "paused"}; !maps.Equal(states, want) {
		t.Errorf("states = %v, want %v", states, want)
	}
	for _, r := range srv.RequestLog() {
		if r.Path != "/v2/sandboxes" {
			continue
		}
		if s := r.Query["state"]; !slices.Equal(s, []string{"running,paused"}) {
			t.Errorf("state query = %q, want one value \"running,paused\" (form, explode=false)", s)
		}
		if l := r.Query.Get("limit"); l != "100" {
			t.Errorf("limit = %q, want 100", l)
		}
	}
}

func TestClosePaused(t *testing.T) {
	p, srv := newFake(t)
	id := srv.Create(map[string]string{"team": "a"}, created)
	srv.Pause(id)
	if !srv.Alive(id) {
		t.Fatal("paused sandbox must be alive at the fake")
	}
	if err := p.Close(ctxT(t), id); err != nil {
		t.Fatalf("Close(paused) = %v", err)
	}
	if srv.Alive(id) {
		t.Fatal("paused sandbox still allocated after Close")
	}
	if got, want := srv.Requests(), []string{"DELETE /sandboxes/" + id}; !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
	if log := srv.RequestLog(); log[0].Status != http.StatusNoContent {
		t.Fatalf("status = %d, want 204", log[0].Status)
	}
}

func TestPaginationTokenRoundTrip(t *testing.T) {
	p, srv := newFake(t)
	srv.SetPageSize(2)
	var want []string
	for i := range 5 {
		want = append(want, srv.Create(map[string]string{"n": string(rune('0' + i))}, created.Add(time.Duration(i%3)*time.Hour)))
	}
	got, err := p.List(ctxT(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	gotIDs := make([]string, 0, len(got))
	for _, sb := range got {
		gotIDs = append(gotIDs, sb.ID)
	}
	slices.Sort(gotIDs)
	slices.Sort(want)
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("List ids = %v, want %v", gotIDs, want)
	}
	log := srv.RequestLog()
	if len(log) != 4 {
		t.Fatalf("%d requests, want 3 pages and the first read again: %v", len(log), srv.Requests())
	}
	if _, sent := log[3].Query["nextToken"]; sent {
		t.Errorf("the re-read of the newest sandboxes sent a nextToken")
	}
	log = log[:3]
	for i, r := range log {
		tok, sent := r.Query["nextToken"]
		switch {
		case i == 0 && sent:
			t.Errorf("page 1 sent nextToken %q", tok)
		case i > 0 && (len(tok) != 1 || tok[0] != log[i-1].NextToken || tok[0] == ""):
			t.Errorf("page %d nextToken = %q, want the previous X-Next-Token %q", i+1, tok, log[i-1].NextToken)
		}
	}
	if log[2].NextToken != "" {
		t.Errorf("last page has X-Next-Token %q", log[2].NextToken)
	}
}

// TestListCatchesSandboxesResumedWhilePaging: a paused sandbox resumed
// between two pages gets a new startedAt, which puts it ahead of the
// cursor; List must still list it, or a listing would "prove" a live
// sandbox gone.
func TestListCatchesSandboxesResumedWhilePaging(t *testing.T) {
	srv := e2btest.NewServer(testKey)
	t.Cleanup(srv.Close)
	srv.SetPageSize(2)
	var ids []string
	for i := range 6 {
		ids = append(ids, srv.Create(nil, created.Add(time.Duration(i)*time.Minute)))
	}
	// The oldest, on the last page, is paused and resumed after page 1.
	oldest := ids[0]
	if !srv.Pause(oldest) {
		t.Fatal("fake: pause failed")
	}
	var lists atomic.Int32
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if r.Method == http.MethodGet && lists.Add(1) == 1 {
			srv.Resume(oldest, created.Add(time.Hour))
		}
		return resp, err
	})}
	p, err := New(Config{APIKey: testKey, APIURL: srv.URL, Timeout: time.Second, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.List(ctxT(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	var gotIDs []string
	for _, sb := range got {
		gotIDs = append(gotIDs, sb.ID)
	}
	slices.Sort(gotIDs)
	slices.Sort(ids)
	if !slices.Equal(gotIDs, ids) {
		t.Fatalf("List = %v, want all of %v (the resumed %s included)", gotIDs, ids, oldest)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestPaginationGuards uses a function-field handler: a server that repeats
// its token, and one that returns a sandbox twice across pages.
func TestPaginationGuards(t *testing.T) {
	t.Run("RepeatedToken", func(t *testing.T) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Next-Token", "c2FtZQ==")
			w.Write([]byte(`[]`))
		}))
		defer ts.Close()
		_, err := newProvider(t, ts.URL, testKey).List(ctxT(t), reaper.ListFilter{})
		if !errors.Is(err, reaper.ErrTransient) {
			t.Fatalf("List = %v, want ErrTransient", err)
		}
	})
	t.Run("Duplicate", func(t *testing.T) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("nextToken") == "" {
				w.Header().Set("X-Next-Token", "cDI=")
			}
			w.Write([]byte(`[{"sandboxID":"a","startedAt":"2026-03-04T05:06:07Z","state":"running"}]`))
		}))
		defer ts.Close()
		got, err := newProvider(t, ts.URL, testKey).List(ctxT(t), reaper.ListFilter{})
		if err != nil || len(got) != 1 || got[0].ID != "a" || !got[0].StartedAt.Equal(created) {
			t.Fatalf("List = %v, %v; want one sandbox a", got, err)
		}
	})
}

// TestCloseNotFoundAtFake: an unknown or already killed sandbox is
// ErrNotFound after the one DELETE, and so is a live sandbox the API
// answers 404 for (another team's key, FailSpuriousNotFound), which stays
// alive and listed.
func TestCloseNotFoundAtFake(t *testing.T) {
	p, srv := newFake(t)
	id := srv.Create(nil, created)
	if err := p.Close(ctxT(t), id); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	err := p.Close(ctxT(t), id)
	var pe *reaper.ProviderError
	if !errors.As(err, &pe) || pe.Kind != reaper.ErrNotFound || pe.Op != "close" || pe.ID != id || pe.StatusCode != http.StatusNotFound {
		t.Fatalf("second Close = %#v, want ErrNotFound for close %s with HTTP 404", err, id)
	}
	if want := `Sandbox "` + id + `" doesn't exist or you don't have access to it`; !strings.Contains(err.Error(), want) {
		t.Fatalf("second Close = %q, want E2B's message %q", err, want)
	}

	live := srv.Create(nil, created)
	srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	if err := p.Close(ctxT(t), live); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close under a spurious 404 = %v, want ErrNotFound", err)
	}
	got, err := p.List(ctxT(t), reaper.ListFilter{})
	if err != nil || len(got) != 1 || got[0].ID != live {
		t.Fatalf("List under a spurious 404 = %v, %v; want [%s]", got, err, live)
	}
	if !srv.Alive(live) {
		t.Fatal("sandbox gone after a spurious 404")
	}
	want := []string{"DELETE /sandboxes/" + id, "DELETE /sandboxes/" + id, "DELETE /sandboxes/" + live, "GET /v2/sandboxes"}
	if got := srv.Requests(); !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v (no lookup after a not-found)", got, want)
	}
}

// TestWrongBasePath points the provider at a path the API does not serve:
// the 404s there are not the API's and must not count as closed, nor as a
// not-found.
func TestWrongBasePath(t *testing.T) {
	srv := e2btest.NewServer(testKey)
	defer srv.Close()
	id := srv.Create(nil, created)
	p := newProvider(t, srv.URL+"/v1", testKey)
	if err := p.Close(ctxT(t), id); !errors.Is(err, reaper.ErrTransient) || !strings.Contains(err.Error(), "E2B_API_URL") {
		t.Fatalf("Close via a wrong base path = %v, want ErrTransient naming E2B_API_URL", err)
	}
	if !srv.Alive(id) {
		t.Fatal("sandbox gone")
	}
}

func TestWrongKeyAtFake(t *testing.T) {
	srv := e2btest.NewServer(testKey)
	defer srv.Close()
	id := srv.Create(nil, created)
	const wrong = "e2b_wrongwrongwrongwrongwrongwrongwrongwron"
	p := newProvider(t, srv.URL, wrong)
	err := p.Close(ctxT(t), id)
	if !errors.Is(err, reaper.ErrUnauthorized) {
		t.Fatalf("Close with a wrong key = %v, want ErrUnauthorized", err)
	}
	for _, s := range []string{"E2B_API_KEY", "HTTP 401", "Invalid API key"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error %q contains the API key", err)
	}
	if !srv.Alive(id) {
		t.Error("sandbox destroyed with a wrong key")
	}
}

// TestClassify answers each call with a canned response from a
// function-field handler and checks how the provider classifies it.
func TestClassify(t *testing.T) {
	type answer struct {
		status int
		header map[string]string
		body   string
	}
	httpDate := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		op        string // "close" or "list"
		ans       answer
		want      error // nil: the call succeeds
		retry     time.Duration
		retryNear bool // retry is approximate (HTTP date)
		msg       string
	}{
		{"close 204", "close", answer{204, nil, ""}, nil, 0, false, ""},
		{"close 200", "close", answer{200, nil, "{}"}, nil, 0, false, ""},
		{"close 404", "close", answer{404, nil, `{"code":404,"message":"Sandbox not found"}`}, reaper.ErrNotFound, 0, false, "delete sandbox: Sandbox not found"},
		{"close 404 no access", "close", answer{404, nil, `{"code":404,"message":"Sandbox \"i123\" doesn't exist or you don't have access to it"}`}, reaper.ErrNotFound, 0, false, "doesn't exist or you don't have access to it"},
		{"close 404 text", "close", answer{404, map[string]string{"Content-Type": "text/plain"}, "404 page not found"}, reaper.ErrTransient, 0, false, "check E2B_API_URL"},
		{"close 404 empty", "close", answer{404, nil, ""}, reaper.ErrTransient, 0, false, "check E2B_API_URL"},
		{"close 401", "close", answer{401, nil, `{"code":401,"message":"Invalid API key"}`}, reaper.ErrUnauthorized, 0, false, "check E2B_API_KEY"},
		{"close 403", "close", answer{403, nil, `{"code":403,"message":"team blocked"}`}, reaper.ErrUnauthorized, 0, false, "team blocked"},
		// E2B's kill handler never answers 409; should anything between
		// answer it, it is retried as transient, not taken for E2B's word.
		{"close 409", "close", answer{409, nil, `{"code":409,"message":"in transition"}`}, reaper.ErrTransient, 0, false, "in transition"},
		{"close 429 seconds", "close", answer{429, map[string]string{"Retry-After": "3"}, `{"code":429,"message":"slow down"}`}, reaper.ErrRateLimited, 3 * time.Second, false, "slow down"},
		{"close 429 date", "close", answer{429, map[string]string{"Retry-After": httpDate}, ``}, reaper.ErrRateLimited, 90 * time.Second, true, ""},
		{"close 429 none", "close", answer{429, nil, `{"code":429,"message":"x"}`}, reaper.ErrRateLimited, 0, false, ""},
		{"close 500", "close", answer{500, nil, `{"code":500,"message":"Error killing sandbox: boom"}`}, reaper.ErrTransient, 0, false, "boom"},
		{"close 502 html", "close", answer{502, map[string]string{"Content-Type": "text/html"}, `<html>bad gateway</html>`}, reaper.ErrTransient, 0, false, "Bad Gateway"},
		{"close 302", "close", answer{302, map[string]string{"Location": "https://elsewhere.example/steal"}, ``}, reaper.ErrTransient, 0, false, "HTTP 302"},
		{"close 400", "close", answer{400, nil, `{"code":400,"message":"Invalid sandbox ID"}`}, reaper.ErrInvalid, 0, false, "delete sandbox: Invalid sandbox ID"},
		{"close 400 not the API's", "close", answer{400, map[string]string{"Content-Type": "text/html"}, `<html>400 Bad Request</html>`}, reaper.ErrTransient, 0, false, "Bad Request"},
		{"list malformed json", "list", answer{200, nil, `[{"sandboxID":`}, reaper.ErrTransient, 0, false, "decode sandbox list"},
		{"list object not array", "list", answer{200, nil, `{"code":200}`}, reaper.ErrTransient, 0, false, "decode sandbox list"},
		{"list bad time", "list", answer{200, nil, `[{"sandboxID":"a","startedAt":"yesterday"}]`}, reaper.ErrTransient, 0, false, "decode sandbox list"},
		{"list 400", "list", answer{400, nil, `{"code":400,"message":"Error parsing metadata"}`}, reaper.ErrTransient, 0, false, "Error parsing metadata"},
		{"list 401", "list", answer{401, nil, `{"code":401,"message":"authorization header is missing"}`}, reaper.ErrUnauthorized, 0, false, "E2B_API_KEY"},
		{"list 503 empty", "list", answer{503, nil, ``}, reaper.ErrTransient, 0, false, "Service Unavailable"},
		{"list 200 empty array", "list", answer{200, nil, `[]`}, nil, 0, false, ""},
		{"list 200 null", "list", answer{200, nil, `null`}, nil, 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu     sync.Mutex
				gotKey string
			)
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				gotKey = r.Header.Get("X-API-Key")
				mu.Unlock()
				for k, v := range tt.ans.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.ans.status)
				w.Write([]byte(tt.ans.body))
			}))
			defer ts.Close()
			p := newProvider(t, ts.URL, testKey)
			var err error
			if tt.op == "close" {
				err = p.Close(ctxT(t), "i123")
			} else {
				_, err = p.List(ctxT(t), reaper.ListFilter{})
			}
			mu.Lock()
			k := gotKey
			mu.Unlock()
			if k != testKey {
				t.Errorf("X-API-Key = %q, want the configured key", gotKey)
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want != reaper.ErrNotFound && errors.Is(err, reaper.ErrNotFound) {
				t.Fatalf("err = %v, classified as not found too", err)
			}
			if got := reaper.ErrorClass(err); got != reaper.ErrorClass(tt.want) {
				t.Fatalf("ErrorClass(%v) = %q, want %q", err, got, reaper.ErrorClass(tt.want))
			}
			var pe *reaper.ProviderError
			if !errors.As(err, &pe) || pe.Provider != Type || pe.Op != tt.op || pe.StatusCode != tt.ans.status {
				t.Fatalf("err = %#v, want a *reaper.ProviderError for %s %s with status %d", err, Type, tt.op, tt.ans.status)
			}
			d, _ := reaper.RetryAfter(err)
			if tt.retryNear {
				if d < tt.retry-5*time.Second || d > tt.retry+time.Second {
					t.Errorf("RetryAfter = %v, want about %v", d, tt.retry)
				}
			} else if d != tt.retry {
				t.Errorf("RetryAfter = %v, want %v", d, tt.retry)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err %q does not contain %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("err %q contains the API key", err)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	u := ts.URL
	ts.Close()
	p := newProvider(t, u, testKey)
	err := p.Close(ctxT(t), "i123")
	if !errors.Is(err, reaper.ErrTransient) {
		t.Fatalf("Close against a closed port = %v, want ErrTransient", err)
	}
	if _, err := p.List(ctxT(t), reaper.ListFilter{}); !errors.Is(err, reaper.ErrTransient) {
		t.Fatalf("List against a closed port = %v, want ErrTransient", err)
	}
}

func TestTimeoutIsClassifiedTimeout(t *testing.T) {
	p, srv := newFake(t)
	srv.Fail(providertest.Failure{Kind: providertest.FailHang})
	_, err := p.List(context.Background(), reaper.ListFilter{})
	if !errors.Is(err, reaper.ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("List against a hung API = %v, want ErrTransient wrapping DeadlineExceeded", err)
	}
	if got := reaper.ErrorClass(err); got != "timeout" {
		t.Fatalf("ErrorClass = %q, want timeout", got)
	}
}

// TestCloseMalformedID: the API refuses a malformed id with 400 before it
// looks anything up; Close reports it as reaper.ErrInvalid with the API's
// message, after that one request. An id with the "-clientID" suffix old
// SDKs append is well-formed.
func TestCloseMalformedID(t *testing.T) {
	p, srv := newFake(t)
	live := srv.Create(nil, created)
	for _, id := range []string{"does-not-exist-0000", "UPPER", "a_b", "a.b", live + "-client-x", "-x"} {
		err := p.Close(ctxT(t), id)
		var pe *reaper.ProviderError
		if !errors.As(err, &pe) || pe.Kind != reaper.ErrInvalid || pe.StatusCode != http.StatusBadRequest || pe.ID != id ||
			errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), e2btest.MessageInvalidID) {
			t.Errorf("Close(%q) = %#v, want ErrInvalid (HTTP 400) with the API's message", id, err)
		}
	}
	if err := p.Close(ctxT(t), ""); !errors.Is(err, reaper.ErrInvalid) {
		t.Errorf("Close(\"\") = %v, want ErrInvalid", err)
	}
	if !srv.Alive(live) {
		t.Fatal("a refused id killed a sandbox")
	}
	if err := p.Close(ctxT(t), live+"-6532622b"); err != nil || srv.Alive(live) {
		t.Fatalf("Close(id-clientID) = %v (alive %v), want nil and gone", err, srv.Alive(live))
	}
	if err := p.Close(ctxT(t), "unknownsandbox0"); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close(well-formed unknown id) = %v, want ErrNotFound", err)
	}
}

// TestFakeHasNoConflict: FailConflict changes nothing at the fake, as E2B
// has no 409 answer to a kill.
func TestFakeHasNoConflict(t *testing.T) {
	p, srv := newFake(t)
	id := srv.Create(nil, created)
	srv.Fail(providertest.Failure{Kind: providertest.FailConflict})
	if err := p.Close(ctxT(t), id); err != nil || srv.Alive(id) {
		t.Fatalf("Close under FailConflict = %v (alive %v), want nil and gone", err, srv.Alive(id))
	}
	for _, r := range srv.RequestLog() {
		if r.Status == http.StatusConflict {
			t.Fatalf("the fake answered 409 to %s %s", r.Method, r.Path)
		}
	}
}

// TestListToTheEnd: List follows next tokens past any page count, and
// refuses a server that hands out a token it handed out before.
func TestListToTheEnd(t *testing.T) {
	t.Run("ManyPages", func(t *testing.T) {
		// One sandbox a page, more pages than the former cap of 1000.
		const n = 1200
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i := 0
			if tok := r.URL.Query().Get("nextToken"); tok != "" {
				fmt.Sscanf(tok, "p%d", &i)
			}
			if i+1 < n {
				w.Header().Set("X-Next-Token", fmt.Sprintf("p%d", i+1))
			}
			fmt.Fprintf(w, `[{"sandboxID":"s%d","startedAt":"2026-03-04T05:06:07Z","state":"running"}]`, i)
		}))
		defer ts.Close()
		got, err := newProvider(t, ts.URL, testKey).List(ctxT(t), reaper.ListFilter{})
		if err != nil || len(got) != n || got[n-1].ID != fmt.Sprintf("s%d", n-1) {
			t.Fatalf("List = %d sandboxes, %v; want %d", len(got), err, n)
		}
	})
	t.Run("ManyPagesAtFake", func(t *testing.T) {
		p, srv := newFake(t)
		srv.SetPageSize(1)
		var want []string
		for i := range 5 {
			want = append(want, srv.Create(nil, created.Add(time.Duration(i)*time.Second)))
		}
		got, err := p.List(ctxT(t), reaper.ListFilter{})
		if err != nil || len(got) != len(want) {
			t.Fatalf("List = %v, %v; want %d sandboxes", got, err, len(want))
		}
	})
	t.Run("Loop", func(t *testing.T) {
		// Tokens a, b, a, ...: a loop of two pages.
		var mu sync.Mutex
		pages := 0
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			pages++
			mu.Unlock()
			next := "YQ=="
			if r.URL.Query().Get("nextToken") == "YQ==" {
				next = "Yg=="
			}
			w.Header().Set("X-Next-Token", next)
			w.Write([]byte(`[]`))
		}))
		defer ts.Close()
		_, err := newProvider(t, ts.URL, testKey).List(ctxT(t), reaper.ListFilter{})
		if !errors.Is(err, reaper.ErrTransient) || !strings.Contains(err.Error(), "repeated a next token") {
			t.Fatalf("List = %v, want ErrTransient naming the repeated token", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if pages != 3 {
			t.Fatalf("List asked for %d pages, want 3", pages)
		}
	})
}

// TestListTemplateAndStart: Template is the template's alias when E2B
// reports one, else its id; StartedAt is the last start, which a resume
// moves.
func TestListTemplateAndStart(t *testing.T) {
	p, srv := newFake(t)
	plain := srv.Create(map[string]string{"n": "1"}, created)
	aliased := srv.Create(map[string]string{"n": "2"}, created.Add(time.Minute))
	srv.SetTemplate(aliased, "tpl0123456789abcdef", "code-interpreter-v1")
	resumed := srv.Create(map[string]string{"n": "3"}, created.Add(2*time.Minute))
	srv.Pause(resumed)
	restart := created.Add(3 * time.Hour)
	srv.Resume(resumed, restart)

	got, err := p.List(ctxT(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	byID := map[string]reaper.Sandbox{}
	for _, sb := range got {
		byID[sb.ID] = sb
	}
	want := map[string]reaper.Sandbox{
		plain:   {ID: plain, StartedAt: created, State: "running", Labels: map[string]string{"n": "1"}, Template: e2btest.DefaultTemplateID},
		aliased: {ID: aliased, StartedAt: created.Add(time.Minute), State: "running", Labels: map[string]string{"n": "2"}, Template: "code-interpreter-v1"},
		resumed: {ID: resumed, StartedAt: restart, State: "running", Labels: map[string]string{"n": "3"}, Template: e2btest.DefaultTemplateID},
	}
	if len(byID) != len(want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
	for id, w := range want {
		g := byID[id]
		if g.ID != w.ID || !g.StartedAt.Equal(w.StartedAt) || !g.CreatedAt.IsZero() || g.Resources == nil || *g.Resources != (reaper.Resources{VCPU: 2, MemoryGiB: 0.5, DiskGiB: 0.5}) || g.State != w.State || !maps.Equal(g.Labels, w.Labels) || g.Template != w.Template || g.Name != "" {
			t.Errorf("List[%s] = %+v, want %+v", id, g, w)
		}
	}
}

func TestCheck(t *testing.T) {
	p, srv := newFake(t)
	srv.Create(nil, created)
	srv.Create(nil, created)
	if err := p.Check(ctxT(t)); err != nil {
		t.Fatalf("Check = %v, want nil", err)
	}
	log := srv.RequestLog()
	if len(log) != 1 || log[0].Method != "GET" || log[0].Path != "/v2/sandboxes" || log[0].Query.Get("limit") != "1" || log[0].Query.Get("state") != "running" {
		t.Fatalf("Check sent %+v, want one GET /v2/sandboxes?limit=1&state=running", log)
	}

	const wrong = "e2b_wrongwrongwrongwrongwrongwrongwrongwron"
	err := newProvider(t, srv.URL, wrong).Check(ctxT(t))
	var pe *reaper.ProviderError
	if !errors.Is(err, reaper.ErrUnauthorized) || !errors.As(err, &pe) || pe.Op != "check" || !strings.Contains(err.Error(), "E2B_API_KEY") || strings.Contains(err.Error(), wrong) {
		t.Fatalf("Check with a wrong key = %v, want ErrUnauthorized for op check naming E2B_API_KEY, without the key", err)
	}

	err = newProvider(t, srv.URL+"/v1", testKey).Check(ctxT(t))
	if !errors.Is(err, reaper.ErrTransient) || errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), "E2B_API_URL") {
		t.Fatalf("Check against a wrong path = %v, want ErrTransient naming E2B_API_URL", err)
	}

	srv.Fail(providertest.Failure{Kind: providertest.FailHang})
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Check(c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a canceled context = %v, want context.Canceled", err)
	}
}
