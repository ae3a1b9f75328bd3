package api_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reaperd/reaperd/api"
)

const (
	ciToken    = "ci-0123456789abcdef0123"
	batchToken = "batch-0123456789abcdef01"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name, file, err string
		n               int
	}{
		{"named and bare", "# comment\nci:" + ciToken + "\n\n" + batchToken + "\n", "", 2},
		{"short", "ci:short\n", "line 1: token \"ci\" is shorter than 16 bytes", 0},
		{"duplicate name", "ci:" + ciToken + "\nci:" + batchToken + "\n", "line 2: token name \"ci\" is given twice", 0},
		{"bad name", "c i:" + ciToken + "\n", "line 1: the token's name", 0},
		{"space in token", "ci:" + ciToken + " x\n", "holds a space", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := api.ParseTokens(strings.NewReader(tt.file))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("ParseTokens = %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("ParseTokens = %v, want an error containing %q", err, tt.err)
			case err != nil && (strings.Contains(err.Error(), ciToken) || strings.Contains(err.Error(), batchToken)):
				t.Fatalf("the error shows a token: %v", err)
			case err == nil && ts.Len() != tt.n:
				t.Fatalf("%d tokens, want %d", ts.Len(), tt.n)
			}
		})
	}
	ts, _ := api.ParseTokens(strings.NewReader("ci:" + ciToken + "\n" + batchToken + "\n"))
	for tok, want := range map[string]string{ciToken: "ci", batchToken: "token-2", "nope-0123456789abcdef": ""} {
		if got, ok := ts.Lookup(tok); got != want || ok != (want != "") {
			t.Errorf("Lookup = %q, %v; want %q", got, ok, want)
		}
	}
}

func TestLoadTokensRefusesAWorldReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("ci:"+ciToken+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := api.LoadTokens(path); err == nil || !strings.Contains(err.Error(), "readable by everyone") {
		t.Fatalf("LoadTokens(0644) = %v, want a refusal", err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if ts, err := api.LoadTokens(path); err != nil || ts.Len() != 1 {
		t.Fatalf("LoadTokens(0640) = %v, %v", ts, err)
	}
}

// On the TCP listener /metrics and /healthz are open; the API needs a
// token, and acts as it: what a token registers belongs to it, and another
// token may not change it.
func TestTCPHandler(t *testing.T) {
	srv, _ := newServer(t)
	srv.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("metrics")) })
	var store api.TokenStore
	ts, _ := api.ParseTokens(strings.NewReader("ci:" + ciToken + "\nbatch:" + batchToken + "\n"))
	store.Set(ts)
	h := srv.TCPHandler(store.Get)
	req := func(method, path, token, body string) (int, string, http.Header) {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code, rec.Body.String(), rec.Header()
	}
	if code, _, _ := req("GET", "/metrics", "", ""); code != 200 {
		t.Errorf("/metrics without a token = %d, want 200", code)
	}
	if code, _, _ := req("GET", "/healthz", "", ""); code != 200 {
		t.Errorf("/healthz without a token = %d, want 200", code)
	}
	code, body, hdr := req("GET", "/v1/sandboxes", "", "")
	if c, msg := errCode(t, body); code != 401 || c != "unauthorized" || !strings.Contains(msg, "Bearer") || hdr.Get("WWW-Authenticate") == "" {
		t.Errorf("/v1 without a token = %d %s %q, want 401 naming the header", code, body, hdr.Get("WWW-Authenticate"))
	}
	if code, body, _ := req("GET", "/v1/sandboxes", "wrong-0123456789abcdef", ""); code != 401 || strings.Contains(body, "wrong-") {
		t.Errorf("/v1 with a wrong token = %d %s, want 401 that does not echo it", code, body)
	}
	if code, body, _ := req("POST", "/v1/sandboxes", ciToken, `{"provider":"e2b","id":"x1","ttl":"1h"}`); code != 201 || !strings.Contains(body, `"owner_token": "ci"`) {
		t.Fatalf("register with the ci token = %d %s, want 201 owned by token ci", code, body)
	}
	if code, body, _ := req("PATCH", "/v1/sandboxes/e2b/x1", batchToken, `{"keep":true}`); code != 403 || !strings.Contains(body, `API token \"ci\"`) {
		t.Errorf("tag by another token = %d %s, want 403 naming the owner", code, body)
	}
	if code, body, _ := req("PATCH", "/v1/sandboxes/e2b/x1", ciToken, `{"keep":true}`); code != 200 {
		t.Errorf("tag by the owning token = %d %s, want 200", code, body)
	}
	// Without a token file the listener serves only the open routes.
	var none api.TokenStore
	h = srv.TCPHandler(none.Get)
	if code, body, _ := req("GET", "/v1/sandboxes", ciToken, ""); code != 401 || !strings.Contains(body, "token_file") {
		t.Errorf("/v1 with no token file = %d %s, want 401 naming token_file", code, body)
	}
}
