//go:build integration

package daytona

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	apiclient "github.com/daytonaio/daytona/libs/api-client-go"

	"github.com/reaperd/reaperd/reaper"
)

// TestIntegration runs against the real Daytona account named by
// DAYTONA_API_KEY (and DAYTONA_API_URL, or the deprecated DAYTONA_SERVER_URL,
// and DAYTONA_ORGANIZATION_ID). It checks the key (Check, and a wrong key is
// ErrUnauthorized), lists (oldest first, with names) and closes an id that
// does not exist (ErrNotFound). With
// DAYTONA_REAPERD_IT_CREATE=1 it also creates one small sandbox (auto-delete
// after 30 minutes, as a safety net), closes it through the provider, and
// closes it again (nil or ErrNotFound).
//
//	DAYTONA_API_KEY=... go test -tags integration -run TestIntegration ./providers/daytona/
func TestIntegration(t *testing.T) {
	c := ConfigFromEnv(os.Getenv)
	if !c.Enabled() {
		t.Skip("DAYTONA_API_KEY not set")
	}
	p, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if err := p.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	bad := c
	bad.APIKey = "dtn_reaperd_integration_not_a_key"
	if q, err := New(bad); err != nil {
		t.Fatalf("New(wrong key): %v", err)
	} else if err := q.Check(ctx); !errors.Is(err, reaper.ErrUnauthorized) {
		t.Fatalf("Check with a wrong key = %v, want ErrUnauthorized", err)
	}

	all, err := p.List(ctx, reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for i, sb := range all {
		if sb.ID == "" || sb.State == "destroyed" || sb.Name == "" {
			t.Errorf("List returned %+v", sb)
		}
		if i > 0 && sb.CreatedAt.Before(all[i-1].CreatedAt) {
			t.Errorf("List is not oldest first: %s (%v) after %s (%v)", sb.ID, sb.CreatedAt, all[i-1].ID, all[i-1].CreatedAt)
		}
	}
	t.Logf("%d live sandboxes", len(all))

	none, err := p.List(ctx, reaper.ListFilter{Labels: map[string]string{"reaperd-it": "no-such-value-" + time.Now().Format("150405.000")}})
	if err != nil || len(none) != 0 {
		t.Fatalf("List(unmatched label) = %v, %v; want none", none, err)
	}

	if err := p.Close(ctx, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close(unknown id) = %v, want ErrNotFound", err)
	}

	if os.Getenv("DAYTONA_REAPERD_IT_CREATE") != "1" {
		t.Log("DAYTONA_REAPERD_IT_CREATE!=1: not creating a sandbox")
		return
	}
	run := time.Now().UTC().Format("20060102T150405")
	labels := map[string]string{"reaperd-it": run}
	autoDelete := int32(30)
	body := apiclient.CreateSandbox{Labels: &labels, AutoDeleteInterval: &autoDelete}
	rctx, rcancel := p.requestContext(ctx)
	req := p.api.SandboxAPI.CreateSandbox(rctx).CreateSandbox(body)
	if p.org != "" {
		req = req.XDaytonaOrganizationID(p.org)
	}
	sb, _, err := req.Execute()
	rcancel()
	if err != nil || sb == nil {
		t.Fatalf("create sandbox: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background(), sb.Id) })

	found, err := p.List(ctx, reaper.ListFilter{Labels: labels})
	if err != nil {
		t.Fatalf("List(run label): %v", err)
	}
	t.Logf("List(run label) = %+v (the list is eventually consistent)", found)
	for _, f := range found {
		if f.ID == sb.Id && f.Name != sb.Name {
			t.Errorf("List(run label) name = %q, want %q", f.Name, sb.Name)
		}
	}

	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		err := p.Close(ctx, sb.Id)
		if err == nil {
			break
		}
		if attempt > 1 && errors.Is(err, reaper.ErrNotFound) {
			// The destroy of an earlier attempt finished between two
			// attempts; the listing must agree, as the engine requires.
			left, lerr := p.List(ctx, reaper.ListFilter{Labels: labels})
			if lerr != nil {
				t.Fatalf("List(run label) after a not-found: %v", lerr)
			}
			for _, l := range left {
				if l.ID == sb.Id {
					t.Fatalf("Close(%s) = %v, but the listing still shows it as %s", sb.Id, err, l.State)
				}
			}
			break
		}
		// An accepted delete (destroying) is confirmed by retrying: the
		// DELETE is answered ErrAccepted again while the destroy runs.
		retryable := errors.Is(err, reaper.ErrAccepted) || errors.Is(err, reaper.ErrConflict) || errors.Is(err, reaper.ErrRateLimited)
		if !retryable || time.Now().After(deadline) {
			t.Fatalf("Close(%s) attempt %d = %v", sb.Id, attempt, err)
		}
		t.Logf("Close(%s) attempt %d = %v; retrying", sb.Id, attempt, err)
		time.Sleep(5 * time.Second)
	}
	state, err := p.lookup(ctx, sb.Id)
	if !errors.Is(err, reaper.ErrNotFound) && (err != nil || state != "destroyed") {
		t.Fatalf("after Close, lookup = %q, %v; want 404 or destroyed", state, err)
	}
	if err := p.Close(ctx, sb.Id); err != nil && !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("second Close(%s) = %v, want nil or ErrNotFound", sb.Id, err)
	}
}
