package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/reaper"
)

// The audit log comes out as JSON lines, page by page: every event once,
// in order, whatever the page size, and a bad cursor or page size is a
// clear 400.
func TestAuditEventPages(t *testing.T) {
	srv, db := newServer(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const total = 25
	err := db.Update(context.Background(), func(tx reaper.Tx) error {
		for i := range total {
			// Several events share a time: the cursor must not skip them.
			if err := tx.Append(reaper.AuditEvent{Time: t0.Add(time.Duration(i/3) * time.Second), Kind: reaper.EventRegistered,
				Key: fmt.Sprintf("e2b/s%02d", i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := serveUnix(t, srv)
	c := api.NewClient(sock)
	for _, page := range []int{1, 4, 25, 1000} {
		var buf bytes.Buffer
		n, err := c.AuditEvents(context.Background(), "", page, &buf)
		if err != nil || n != total {
			t.Fatalf("page %d: %d events, %v; want %d", page, n, err, total)
		}
		sc := bufio.NewScanner(&buf)
		for i := 0; sc.Scan(); i++ {
			var ev reaper.AuditEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("line %d is not an event: %v", i, err)
			}
			if want := fmt.Sprintf("e2b/s%02d", i); ev.Key != want {
				t.Fatalf("page %d: line %d = %s, want %s", page, i, ev.Key, want)
			}
		}
	}
	var buf bytes.Buffer
	if n, err := c.AuditEvents(context.Background(), t0.Add(5*time.Second).Format(time.RFC3339), 7, &buf); err != nil || n != total-15 {
		t.Fatalf("since: %d events, %v; want %d", n, err, total-15)
	}
	for _, q := range []string{"after=zz", "after=00", "limit=100001", "limit=-1", "bogus=1"} {
		status, body := do(t, srv.Handler(), "GET", "/v1/audit/events?"+q, "")
		if code, _ := errCode(t, body); status != http.StatusBadRequest || code != reaper.EINVALID {
			t.Errorf("GET /v1/audit/events?%s = %d %s, want 400 invalid", q, status, body)
		}
	}
	status, _ := do(t, srv.Handler(), "GET", "/v1/audit/events?limit=5", "")
	if status != 200 {
		t.Fatalf("a page = %d", status)
	}
}
