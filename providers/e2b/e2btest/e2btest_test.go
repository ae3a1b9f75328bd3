package e2btest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
)

func TestServerAnswers(t *testing.T) {
	const key = "e2b_test"
	s := NewServer(key)
	defer s.Close()
	id := s.Create(map[string]string{"team": "a"}, time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	tests := []struct {
		name, method, path, key string
		status                  int
		message                 string
	}{
		{"missing key", "GET", "/v2/sandboxes", "", 401, MessageMissingKey},
		{"wrong key", "GET", "/v2/sandboxes", "e2b_other", 401, MessageInvalidKey},
		{"exploded state", "GET", "/v2/sandboxes?state=running&state=paused", key, 400, ""},
		{"bad state", "GET", "/v2/sandboxes?state=stopped", key, 400, ""},
		{"empty metadata", "GET", "/v2/sandboxes?metadata=", key, 400, "Error parsing metadata"},
		{"pair without value", "GET", "/v2/sandboxes?metadata=team", key, 400, "Error parsing metadata"},
		{"limit 0", "GET", "/v2/sandboxes?limit=0", key, 400, ""},
		{"limit 101", "GET", "/v2/sandboxes?limit=101", key, 400, ""},
		{"bad token", "GET", "/v2/sandboxes?nextToken=%21%21", key, 400, "Invalid next token"},
		{"list", "GET", "/v2/sandboxes?state=running,paused&metadata=team%3Da", key, 200, ""},
		{"get", "GET", "/sandboxes/" + id, key, 200, ""},
		{"get unknown", "GET", "/sandboxes/nope-6532622b", key, 404, `Sandbox "nope-6532622b" doesn't exist or you don't have access to it`},
		{"get malformed", "GET", "/sandboxes/does-not-exist-0000", key, 400, MessageInvalidID},
		{"kill malformed", "DELETE", "/sandboxes/does-not-exist-0000", key, 400, MessageInvalidID},
		{"kill upper case", "DELETE", "/sandboxes/" + strings.ToUpper(id), key, 400, MessageInvalidID},
		{"kill empty first part", "DELETE", "/sandboxes/-" + id, key, 400, MessageInvalidID},
		{"kill malformed needs a key", "DELETE", "/sandboxes/does-not-exist-0000", "e2b_other", 401, MessageInvalidKey},
		{"kill with client id", "DELETE", "/sandboxes/" + id + "-6532622b", key, 204, ""},
		{"kill again", "DELETE", "/sandboxes/" + id + "-6532622b", key, 404, `Sandbox "` + id + `" doesn't exist or you don't have access to it`},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, s.URL+tt.path, nil)
		if tt.key != "" {
			req.Header.Set("X-API-Key", tt.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, resp.StatusCode, tt.status, body)
			continue
		}
		if resp.StatusCode >= 400 {
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Code != tt.status || (tt.message != "" && e.Message != tt.message) {
				t.Errorf("%s: body %s, want {code %d, message %q}", tt.name, body, tt.status, tt.message)
			}
		}
	}
	if s.Alive(id) {
		t.Error("sandbox alive after DELETE with a client-id suffix")
	}
}

// TestSpuriousNotFound: under FailSpuriousNotFound a live sandbox is
// answered on GET and DELETE exactly as an unknown one, after
// authentication, and stays alive and listed.
func TestSpuriousNotFound(t *testing.T) {
	const key = "e2b_test"
	s := NewServer(key)
	defer s.Close()
	id := s.Create(nil, time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	do := func(method, path, k string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.URL+path, nil)
		req.Header.Set("X-API-Key", k)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	const unknown = "iunknown000000000000"
	_, wantGet := do("GET", "/sandboxes/"+unknown, key)
	_, wantKill := do("DELETE", "/sandboxes/"+unknown, key)

	s.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	if code, body := do("GET", "/sandboxes/"+id, key); code != 404 || body != strings.ReplaceAll(wantGet, unknown, id) {
		t.Errorf("GET = %d %s, want 404 %s", code, body, strings.ReplaceAll(wantGet, unknown, id))
	}
	if code, body := do("DELETE", "/sandboxes/"+id, key); code != 404 || body != strings.ReplaceAll(wantKill, unknown, id) {
		t.Errorf("DELETE = %d %s, want 404 %s", code, body, strings.ReplaceAll(wantKill, unknown, id))
	}
	if code, _ := do("DELETE", "/sandboxes/"+id+"-a-b", key); code != 400 {
		t.Errorf("DELETE of a malformed id = %d, want 400 whatever the failure injected", code)
	}
	if code, _ := do("DELETE", "/sandboxes/"+id, "e2b_other"); code != 401 {
		t.Errorf("DELETE with a wrong key = %d, want 401", code)
	}
	if code, body := do("GET", "/v2/sandboxes", key); code != 200 || !strings.Contains(body, id) {
		t.Errorf("list = %d %s, want the sandbox", code, body)
	}
	if !s.Alive(id) {
		t.Fatal("sandbox gone after a spurious not-found")
	}
	s.Fail(providertest.Failure{})
	if code, _ := do("DELETE", "/sandboxes/"+id, key); code != 204 || s.Alive(id) {
		t.Errorf("DELETE after clearing = %d (alive %v), want 204 and gone", code, s.Alive(id))
	}
}
