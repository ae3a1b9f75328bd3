package e2btest

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
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
		{"get unknown", "GET", "/sandboxes/nope", key, 404, ""},
		{"kill with client id", "DELETE", "/sandboxes/" + id + "-6532622b", key, 204, ""},
		{"kill again", "DELETE", "/sandboxes/" + id, key, 404, "Sandbox not found"},
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
