package daytonatest

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/providertest"
)

const key = "k-123"

func do(t *testing.T, method, url, auth string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", method, url, b, err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestWire(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	id := s.Create(map[string]string{"team": "a"}, time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	bearer := "Bearer " + key

	tests := []struct {
		name       string
		method     string
		path       string
		auth       string
		fail       providertest.Failure
		wantStatus int
		wantCode   string
		wantHeader string
	}{
		{"no auth", "GET", "/api/sandbox", "", providertest.Failure{}, 401, "UNAUTHORIZED", ""},
		{"wrong key", "GET", "/api/sandbox/" + id, "Bearer nope", providertest.Failure{}, 401, "UNAUTHORIZED", ""},
		{"unknown route", "POST", "/api/sandbox/" + id + "/stop", bearer, providertest.Failure{}, 404, "NOT_FOUND", ""},
		{"unknown sandbox", "GET", "/api/sandbox/nope", bearer, providertest.Failure{}, 404, "NOT_FOUND", ""},
		{"bad limit", "GET", "/api/sandbox?limit=500", bearer, providertest.Failure{}, 400, "BAD_REQUEST", ""},
		{"bad labels", "GET", "/api/sandbox?labels=team%3Da", bearer, providertest.Failure{}, 400, "BAD_REQUEST", ""},
		{"bad cursor", "GET", "/api/sandbox?cursor=%25%25", bearer, providertest.Failure{}, 400, "BAD_REQUEST", ""},
		{"throttled delete", "DELETE", "/api/sandbox/" + id, bearer,
			providertest.Failure{Kind: providertest.FailRateLimited, RetryAfter: 7 * time.Second}, 429, "RATE_LIMIT_EXCEEDED", "Retry-After-sandbox-lifecycle"},
		{"throttled list", "GET", "/api/sandbox", bearer,
			providertest.Failure{Kind: providertest.FailRateLimited, RetryAfter: 7 * time.Second}, 429, "RATE_LIMIT_EXCEEDED", "Retry-After-authenticated"},
		{"server error", "GET", "/api/sandbox", bearer, providertest.Failure{Kind: providertest.FailServerError}, 500, "INTERNAL_SERVER_ERROR", ""},
		{"conflict", "DELETE", "/api/sandbox/" + id, bearer, providertest.Failure{Kind: providertest.FailConflict}, 409, "SANDBOX_STATE_CHANGE_IN_PROGRESS", ""},
		{"spurious not found get", "GET", "/api/sandbox/" + id, bearer, providertest.Failure{Kind: providertest.FailSpuriousNotFound}, 404, "NOT_FOUND", ""},
		{"spurious not found delete", "DELETE", "/api/sandbox/" + id, bearer, providertest.Failure{Kind: providertest.FailSpuriousNotFound}, 404, "NOT_FOUND", ""},
		{"spurious not found still authenticates", "DELETE", "/api/sandbox/" + id, "Bearer nope", providertest.Failure{Kind: providertest.FailSpuriousNotFound}, 401, "UNAUTHORIZED", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Fail(tt.fail)
			defer s.Fail(providertest.Failure{})
			status, h, body := do(t, tt.method, s.URL[:len(s.URL)-len("/api")]+tt.path, tt.auth)
			if status != tt.wantStatus || body["code"] != tt.wantCode {
				t.Fatalf("got %d %v, want %d %s", status, body, tt.wantStatus, tt.wantCode)
			}
			for _, f := range []string{"statusCode", "source", "code", "message", "error", "path", "timestamp", "method"} {
				if _, ok := body[f]; !ok {
					t.Errorf("error body %v lacks %q", body, f)
				}
			}
			if body["source"] != "DAYTONA_API" || body["method"] != tt.method || !strings.HasPrefix(body["path"].(string), "/api/") {
				t.Errorf("error body %v", body)
			}
			if tt.wantHeader != "" && h.Get(tt.wantHeader) != "7" {
				t.Errorf("%s = %q, want 7 (headers %v)", tt.wantHeader, h.Get(tt.wantHeader), h)
			}
		})
	}
	if !s.Alive(id) {
		t.Fatalf("a failed request destroyed the sandbox")
	}
}

func TestStateMachine(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.SetDestroyDelay(time.Hour)
	id := s.Create(nil, time.Time{})
	s.SetState(id, StateArchived)
	base := s.URL + "/sandbox/" + id
	bearer := "Bearer " + key

	status, _, body := do(t, "DELETE", base, bearer)
	if status != 200 || body["state"] != StateArchived || body["desiredState"] != StateDestroyed {
		t.Fatalf("DELETE = %d %v, want 200 with state archived, desiredState destroyed", status, body)
	}
	if status, _, body = do(t, "GET", base, bearer); status != 200 || body["state"] != StateDestroying {
		t.Fatalf("GET while destroying = %d %v", status, body)
	}
	if status, _, body = do(t, "DELETE", base, bearer); status != 409 {
		t.Fatalf("second DELETE = %d %v, want 409", status, body)
	}
	if !s.Alive(id) {
		t.Fatalf("destroying sandbox not alive")
	}
	s.CompleteDestroy(id)
	if status, _, _ = do(t, "GET", base, bearer); status != 404 {
		t.Fatalf("GET after destroy = %d, want 404", status)
	}
	if s.Alive(id) {
		t.Fatalf("destroyed sandbox alive")
	}
	if got := s.Sandboxes(); len(got) != 1 || got[0].State != StateDestroyed || !strings.HasPrefix(got[0].Name, "DESTROYED_") {
		t.Fatalf("Sandboxes() = %+v", got)
	}
}

// TestSpuriousNotFound: under FailSpuriousNotFound a live sandbox is
// answered exactly as one the fake does not have, on GET and DELETE, while
// the list still shows it.
func TestSpuriousNotFound(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	id := s.Create(nil, time.Time{})
	bearer := "Bearer " + key
	s.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	for _, method := range []string{"GET", "DELETE"} {
		status, _, got := do(t, method, s.URL+"/sandbox/"+id, bearer)
		_, _, want := do(t, method, s.URL+"/sandbox/"+id[:8], bearer) // truly unknown
		want["message"] = strings.Replace(want["message"].(string), id[:8], id, 1)
		want["path"] = strings.Replace(want["path"].(string), id[:8], id, 1)
		delete(got, "timestamp")
		delete(want, "timestamp")
		if status != 404 || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s under a spurious not-found = %d %v, want 404 %v", method, status, got, want)
		}
	}
	status, _, list := do(t, "GET", s.URL+"/sandbox", bearer)
	items, _ := list["items"].([]any)
	if status != 200 || len(items) != 1 || items[0].(map[string]any)["id"] != id {
		t.Fatalf("list under a spurious not-found = %d %v, want the sandbox", status, list)
	}
	if !s.Alive(id) {
		t.Fatalf("sandbox gone after a spurious not-found")
	}
	s.Fail(providertest.Failure{})
	if status, _, _ := do(t, "GET", s.URL+"/sandbox/"+id, bearer); status != 200 {
		t.Fatalf("GET after clearing the failure = %d, want 200", status)
	}
}
