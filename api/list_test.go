package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/reaper"
)

// TestListPages: GET /v1/sandboxes returns pages in key order, each with
// the cursor of the next; following them gives every entry once.
func TestListPages(t *testing.T) {
	srv, db := newServer(t)
	const n = 25
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		for i := range n {
			st := reaper.StateActive
			if i%5 == 0 {
				st = reaper.StateClosing
			}
			if err := tx.PutEntry(&reaper.Entry{Provider: "e2b", ID: fmt.Sprintf("sb%02d", i), State: st}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		want  int
	}{{"limit=10", n}, {"limit=10&state=closing", 5}, {"limit=3&state=closing&provider=e2b", 5}, {"limit=7&state=active,closing", n}} {
		var keys []string
		after, pages := "", 0
		for {
			q := "/v1/sandboxes?" + tc.query
			if after != "" {
				q += "&after=" + after
			}
			code, body := do(t, srv.Handler(), "GET", q, "")
			if code != 200 {
				t.Fatalf("GET %s = %d %s", q, code, body)
			}
			var page api.ListPage
			if err := json.Unmarshal([]byte(body), &page); err != nil {
				t.Fatal(err)
			}
			pages++
			for _, e := range page.Sandboxes {
				keys = append(keys, e.Key)
			}
			if page.Next == "" {
				break
			}
			after = page.Next
			if pages > n {
				t.Fatalf("%s: no last page", tc.query)
			}
		}
		if len(keys) != tc.want {
			t.Errorf("%s: %d entries over %d pages, want %d", tc.query, len(keys), pages, tc.want)
		}
		for i := 1; i < len(keys); i++ {
			if keys[i] <= keys[i-1] {
				t.Errorf("%s: %s after %s: not in key order, or twice", tc.query, keys[i], keys[i-1])
			}
		}
	}
	for _, tc := range []struct{ query, mentions string }{
		{"after=not-a-cursor!", "not a cursor this daemon gave out"},
		{"after=Zm9v", "not a cursor"}, // "foo": base64, but no key
		{"limit=10001", "at most 10000 entries"},
	} {
		code, body := do(t, srv.Handler(), "GET", "/v1/sandboxes?"+tc.query, "")
		if c, msg := errCode(t, body); code != 400 || c != reaper.EINVALID || !strings.Contains(msg, tc.mentions) {
			t.Errorf("?%s = %d %s %q, want 400 invalid mentioning %q", tc.query, code, c, msg, tc.mentions)
		}
	}
}
