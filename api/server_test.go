package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

func newServer(t *testing.T) (*api.Server, *ledger.DB) {
	t.Helper()
	db := ledgertest.Open(t)
	eng := &engine.Engine{
		Store: db,
		Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{"e2b": ledgertest.NopProvider{Type: "e2b"}},
			Disabled: map[string]string{"daytona": "no credentials: set DAYTONA_API_KEY"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return &api.Server{Service: eng}, db
}

func do(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func errCode(t *testing.T, body string) (string, string) {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	return eb.Error.Code, eb.Error.Message
}

// ledgerEmpty reports whether nothing was written: no entry, no session,
// no audit event.
func ledgerEmpty(t *testing.T, db *ledger.DB) bool {
	t.Helper()
	n := 0
	_ = db.View(context.Background(), func(tx reaper.Tx) error {
		_ = tx.Entries(reaper.EntryFilter{}, func(*reaper.Entry) error { n++; return nil })
		_ = tx.Sessions(func(*reaper.Session) error { n++; return nil })
		_ = tx.Audit(time.Time{}, func(reaper.AuditEvent) error { n++; return nil })
		return nil
	})
	return n == 0
}

func TestRegisterMalformed(t *testing.T) {
	big := `{"provider":"e2b","id":"x","ttl":"1h","labels":{"k":"` + strings.Repeat("v", api.MaxBodyBytes) + `"}}`
	tests := []struct {
		name     string
		body     string
		status   int
		code     string
		mentions string
	}{
		{"empty body", ``, 400, "invalid", "empty"},
		{"not JSON", `provider=e2b`, 400, "invalid", "syntax error"},
		{"array", `[1]`, 400, "invalid", "JSON object"},
		{"unknown field", `{"provider":"e2b","id":"x","ttl":"1h","tll":"2h"}`, 400, "invalid", `unknown field "tll"`},
		{"trailing data", `{"provider":"e2b","id":"x","ttl":"1h"} {}`, 400, "invalid", "after the object"},
		{"bad duration", `{"provider":"e2b","id":"x","ttl":"5x"}`, 400, "invalid", `ttl: invalid duration "5x"`},
		{"bad lease", `{"provider":"e2b","id":"x","session":"s","lease":"soon"}`, 400, "invalid", `lease: invalid duration "soon"`},
		{"negative duration", `{"provider":"e2b","id":"x","ttl":"-5m"}`, 400, "invalid", "negative"},
		{"duration wrong type", `{"provider":"e2b","id":"x","ttl":true}`, 400, "invalid", "ttl: true is not a duration"},
		{"keep wrong type", `{"provider":"e2b","id":"x","ttl":"1h","keep":"yes"}`, 400, "invalid", `"keep"`},
		{"empty id", `{"provider":"e2b","id":"","ttl":"1h"}`, 400, "invalid", "sandbox id is empty"},
		{"id with slash", `{"provider":"e2b","id":"a/b","ttl":"1h"}`, 400, "invalid", "a/b"},
		{"id with space", `{"provider":"e2b","id":"a b","ttl":"1h"}`, 400, "invalid", "a b"},
		{"id too long", `{"provider":"e2b","id":"` + strings.Repeat("a", 300) + `","ttl":"1h"}`, 400, "invalid", "limit"},
		{"empty provider", `{"provider":"","id":"x","ttl":"1h"}`, 400, "invalid", "provider is empty"},
		{"unknown provider", `{"provider":"azure","id":"x","ttl":"1h"}`, 400, "unknown_provider", "daytona, e2b"},
		{"disabled provider", `{"provider":"daytona","id":"x","ttl":"1h"}`, 422, "provider_disabled", "DAYTONA_API_KEY"},
		{"no ttl and no session", `{"provider":"e2b","id":"x"}`, 400, "invalid", "neither a ttl nor a session"},
		{"lease without session", `{"provider":"e2b","id":"x","ttl":"1h","lease":"2m"}`, 400, "invalid", "needs a session"},
		{"lease too short", `{"provider":"e2b","id":"x","session":"s","lease":"10ms"}`, 400, "invalid", "too short"},
		{"session with space", `{"provider":"e2b","id":"x","session":"s 1"}`, 400, "invalid", "session"},
		{"bad label key", `{"provider":"e2b","id":"x","ttl":"1h","labels":{"a b":"c"}}`, 400, "invalid", "label key"},
		{"oversized body", big, 413, "too_large", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, db := newServer(t)
			status, body := do(t, srv, "POST", "/v1/sandboxes", tt.body)
			if status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", status, tt.status, body)
			}
			code, msg := errCode(t, body)
			if code != tt.code || !strings.Contains(msg, tt.mentions) {
				t.Fatalf("error = %s %q, want code %s mentioning %q", code, msg, tt.code, tt.mentions)
			}
			if !ledgerEmpty(t, db) {
				t.Fatal("a rejected request wrote to the ledger")
			}
		})
	}
}

func TestAPIRoutes(t *testing.T) {
	srv, _ := newServer(t)
	steps := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/v1/sandboxes", `{"provider":"e2b","id":"sbx-1","session":"s1","ttl":"30m","lease":"2m","labels":{"team":"x"}}`, 201, `"key": "e2b/sbx-1"`},
		{"POST", "/v1/sandboxes", `{"provider":"e2b","id":"sbx-1","session":"s1","ttl":"30m"}`, 200, `"state": "active"`},
		{"POST", "/v1/sandboxes", `{"provider":"e2b","id":"sbx-1","session":"s2","ttl":"30m"}`, 409, "already registered to session s1"},
		{"GET", "/v1/sandboxes/e2b/sbx-1", ``, 200, `"team": "x"`},
		{"GET", "/v1/sandboxes/e2b/nope", ``, 404, "not registered"},
		{"GET", "/v1/sandboxes?state=active", ``, 200, `"e2b/sbx-1"`},
		{"GET", "/v1/sandboxes?state=bogus", ``, 400, "state"},
		{"GET", "/v1/sandboxes?colour=red", ``, 400, "unknown query parameter"},
		{"PATCH", "/v1/sandboxes/e2b/sbx-1", `{"keep":true}`, 200, `"keep": true`},
		{"PATCH", "/v1/sandboxes/e2b/sbx-1", `{}`, 400, "nothing to change"},
		{"PATCH", "/v1/sandboxes/e2b/sbx-1", `{"kep":true}`, 400, `unknown field \"kep\"`},
		{"POST", "/v1/sessions/s1/heartbeat", ``, 200, `"id": "s1"`},
		{"POST", "/v1/sessions/nope/heartbeat", ``, 404, "not known"},
		{"POST", "/v1/sessions/s1/heartbeat", `{"lease":"xx"}`, 400, "invalid duration"},
		{"GET", "/v1/sessions/s1", ``, 200, `"lease": "2m0s"`},
		{"GET", "/v1/sessions", ``, 200, `"s1"`},
		{"POST", "/v1/sweep", `{"dry_run":true}`, 200, `"dry_run": true`},
		{"POST", "/v1/sweep", `{"dryrun":true}`, 400, "unknown field"},
		{"POST", "/v1/sessions/s1/end", ``, 200, `"action": "skip"`},
		{"POST", "/v1/sandboxes/e2b/sbx-1/release", ``, 200, `"state": "released"`},
		{"POST", "/v1/sandboxes/e2b/sbx-1/release", ``, 200, `"state": "released"`},
		{"PATCH", "/v1/sandboxes/e2b/sbx-1", `{"keep":false}`, 409, "released"},
		{"GET", "/v1/audit?since=1h", ``, 200, `"registered"`},
		{"GET", "/v1/audit?since=yesterday", ``, 400, "since"},
		{"DELETE", "/v1/sandboxes/e2b/sbx-1", ``, 405, "use GET or PATCH"},
		{"GET", "/v2/things", ``, 404, "no such endpoint"},
		{"GET", "/healthz", ``, 200, `"ok"`},
	}
	for _, s := range steps {
		status, body := do(t, srv, s.method, s.path, s.body)
		if status != s.status || !strings.Contains(body, s.contains) {
			t.Fatalf("%s %s %s = %d %s\nwant %d containing %q", s.method, s.path, s.body, status, body, s.status, s.contains)
		}
		if status >= 400 {
			if code, msg := errCode(t, body); code == "" || msg == "" {
				t.Fatalf("%s %s: error body without code or message: %s", s.method, s.path, body)
			}
		}
	}
}

func TestStatusCodeTable(t *testing.T) {
	tests := []struct {
		code string
		want int
	}{
		{reaper.EINVALID, 400}, {reaper.EUNKNOWN, 400}, {reaper.EUNAUTHORIZED, 401}, {reaper.EFORBIDDEN, 403},
		{reaper.ENOTFOUND, 404}, {reaper.ECONFLICT, 409}, {reaper.ETOOLARGE, 413}, {reaper.EDISABLED, 422},
		{reaper.EINTERNAL, 500}, {reaper.EUNAVAILABLE, 503}, {"something-new", 500},
	}
	for _, tt := range tests {
		if got := api.StatusCode(tt.code); got != tt.want {
			t.Errorf("StatusCode(%q) = %d, want %d", tt.code, got, tt.want)
		}
	}
}

// TestPeerCredentials serves over a real Unix socket: the caller's uid is
// recorded as the entry's owner and the audit actor, and the client maps
// API errors back to codes.
func TestPeerCredentials(t *testing.T) {
	srv, _ := newServer(t)
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ConnContext: api.ConnContext}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	c := api.NewClient(sock)
	ent, err := c.Register(context.Background(), reaper.RegisterRequest{Provider: "e2b", ID: "x", TTL: reaper.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if ent.Owner == nil || *ent.Owner != uint32(os.Getuid()) {
		t.Fatalf("owner = %v, want uid %d", ent.Owner, os.Getuid())
	}
	evs, err := c.Audit(context.Background(), "", 0)
	if err != nil || len(evs) != 1 || evs[0].Actor == nil || *evs[0].Actor != uint32(os.Getuid()) {
		t.Fatalf("audit = %+v, %v; want one event with our uid as actor", evs, err)
	}
	_, err = c.Entry(context.Background(), "e2b/missing")
	if reaper.ErrorCode(err) != reaper.ENOTFOUND {
		t.Fatalf("client error = %v (code %s), want not_found", err, reaper.ErrorCode(err))
	}
}

func TestClientNotRunning(t *testing.T) {
	c := api.NewClient(filepath.Join(t.TempDir(), "missing.sock"))
	_, err := c.Status(context.Background())
	var nr *api.NotRunningError
	if !errorsAs(err, &nr) || !strings.Contains(err.Error(), "reaperd is not running") {
		t.Fatalf("Status against no daemon = %v, want NotRunningError", err)
	}
}

func errorsAs(err error, target **api.NotRunningError) bool {
	e, ok := err.(*api.NotRunningError)
	if ok {
		*target = e
	}
	return ok
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false},
		{"24h", now.Add(-24 * time.Hour), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"2026-05-01T00:00:00Z", time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), false},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := api.ParseSince(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
