package daytonatest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
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
		{"bad sort", "GET", "/api/sandbox?sort=updatedAt", bearer, providertest.Failure{}, 400, "BAD_REQUEST", ""},
		{"bad order", "GET", "/api/sandbox?order=up", bearer, providertest.Failure{}, 400, "BAD_REQUEST", ""},
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

// page lists one page and returns its ids and next cursor.
func page(t *testing.T, s *Server, query string) ([]string, string) {
	t.Helper()
	status, _, body := do(t, "GET", s.URL+"/sandbox?"+query, "Bearer "+key)
	if status != 200 {
		t.Fatalf("GET /sandbox?%s = %d %v", query, status, body)
	}
	var ids []string
	for _, it := range body["items"].([]any) {
		ids = append(ids, it.(map[string]any)["id"].(string))
	}
	next, _ := body["nextCursor"].(string)
	return ids, next
}

// listAll pages to the end, calling between after each page.
func listAll(t *testing.T, s *Server, query string, between func(page int)) []string {
	t.Helper()
	var all []string
	cursor := ""
	for n := 1; n < 100; n++ {
		q := query
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		ids, next := page(t, s, q)
		all = append(all, ids...)
		if between != nil {
			between(n)
		}
		if next == "" {
			return all
		}
		cursor = next
	}
	t.Fatalf("more than 100 pages")
	return nil
}

// TestListOrder: sort and order are honoured; the default is last activity,
// newest first.
func TestListOrder(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.SetPageSize(2)
	at := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	a := s.Create(nil, at)
	b := s.Create(nil, at.Add(time.Minute))
	c := s.Create(nil, at.Add(2*time.Minute))
	s.Touch(a, at.Add(time.Hour)) // a is the most recently active
	s.Rename(a, "zeta")
	s.Rename(b, "alpha")
	s.Rename(c, "mid")

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{a, c, b}},
		{"sort=lastActivityAt&order=desc", []string{a, c, b}},
		{"sort=lastActivityAt&order=asc", []string{b, c, a}},
		{"sort=createdAt&order=asc", []string{a, b, c}},
		{"sort=createdAt", []string{c, b, a}},
		{"sort=name&order=asc", []string{b, c, a}},
	}
	for _, tt := range tests {
		if got := listAll(t, s, tt.query, nil); !slices.Equal(got, tt.want) {
			t.Errorf("list %q = %v, want %v", tt.query, got, tt.want)
		}
	}
}

// TestListDefaultOrderSkipsActiveSandbox: the cursor is the last item's
// (lastActivityAt, id); a sandbox that gains activity after the first page
// jumps ahead of it and is missed. Sorted by createdAt it is not.
func TestListDefaultOrderSkipsActiveSandbox(t *testing.T) {
	for _, tt := range []struct {
		query  string
		missed bool
	}{
		{"", true},
		{"sort=createdAt&order=asc", false},
		{"sort=createdAt&order=desc", false},
	} {
		s := NewServer(key)
		s.SetPageSize(2)
		at := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
		var ids []string
		for i := range 4 {
			ids = append(ids, s.Create(nil, at.Add(time.Duration(i)*time.Minute)))
		}
		got := listAll(t, s, tt.query, func(n int) {
			if n == 1 {
				s.Touch(ids[0], at.Add(time.Hour))
			}
		})
		s.Close()
		if missed := !slices.Contains(got, ids[0]); missed != tt.missed || len(got) != 4-btoi(tt.missed) {
			t.Errorf("list %q with activity between pages = %v; missed the active sandbox: %v, want %v", tt.query, got, missed, tt.missed)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestCursorMilliseconds: the cursor carries times in milliseconds, the
// sandboxes microseconds. Ascending, a sandbox in the cursor's millisecond
// is listed again; descending, one is skipped, as in Daytona's Postgres
// search.
func TestCursorMilliseconds(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.SetPageSize(1)
	ms := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	a := s.Create(nil, ms.Add(100*time.Microsecond))
	b := s.Create(nil, ms.Add(200*time.Microsecond))
	c := s.Create(nil, ms.Add(time.Second))

	first, next := page(t, s, "sort=createdAt&order=asc")
	second, _ := page(t, s, "sort=createdAt&order=asc&cursor="+url.QueryEscape(next))
	if !slices.Equal(first, []string{a}) || !slices.Equal(second, []string{a}) {
		t.Errorf("ascending pages = %v, %v; want %s twice (repeated, not skipped)", first, second, a)
	}
	if got := listAll(t, s, "sort=createdAt&order=desc", nil); !slices.Equal(got, []string{c, b}) {
		t.Errorf("descending = %v, want [%s %s]: %s, in the cursor's millisecond, skipped", got, c, b, a)
	}
}
