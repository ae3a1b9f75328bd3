//go:build integration

package runloop_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/runloop"
	"github.com/reaperd/reaperd/reaper"
)

// TestIntegration runs against the real Runloop account named by
// RUNLOOP_API_KEY (and RUNLOOP_BASE_URL). It checks the key (Check, and a
// wrong key is ErrUnauthorized), closes an id the account does not have
// (ErrNotFound), creates one small devbox with a five-minute lifetime,
// named and tagged reaperd-integration, lists it (with its name, possibly
// still queued), and closes it twice (the second close may answer nil or
// ErrNotFound). It costs a few seconds of devbox time.
func TestIntegration(t *testing.T) {
	cfg := runloop.ConfigFromEnv(os.Getenv)
	if !cfg.Enabled() {
		t.Skip("RUNLOOP_API_KEY is not set")
	}
	p, err := runloop.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if err := p.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	bad := cfg
	bad.APIKey = "rl_reaperd_integration_not_a_key"
	if q, err := runloop.New(bad); err != nil {
		t.Fatalf("New(wrong key): %v", err)
	} else if err := q.Check(ctx); !errors.Is(err, reaper.ErrUnauthorized) {
		t.Fatalf("Check with a wrong key = %v, want ErrUnauthorized", err)
	}

	if _, err := p.List(ctx, reaper.ListFilter{}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if err := p.Close(ctx, "dbx_reaperdnotadevbox00000"); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close(unknown) = %v, want ErrNotFound", err)
	}

	run := fmt.Sprint(time.Now().UnixNano())
	id := createDevbox(ctx, t, cfg, map[string]string{"reaperd-integration": run})
	t.Cleanup(func() {
		// Best effort, should the test fail before its own Close.
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = p.Close(reaper.WithCloseAttempt(c, 99), id)
	})

	got, err := p.List(ctx, reaper.ListFilter{Labels: map[string]string{"reaperd-integration": run}})
	if err != nil {
		t.Fatalf("List(label): %v", err)
	}
	if len(got) != 1 || got[0].ID != id || got[0].CreatedAt.IsZero() || got[0].Name != "reaperd-integration" {
		t.Fatalf("List(label) = %+v, want only %s with a creation time and its name", got, id)
	}
	t.Logf("new devbox listed as %s", got[0].State)

	// A devbox still provisioning may refuse the shutdown as a state change
	// in progress; the engine would retry, and so does this test.
	for {
		err := p.Close(ctx, id)
		if err == nil {
			break
		}
		if !errors.Is(err, reaper.ErrConflict) || ctx.Err() != nil {
			t.Fatalf("Close: %v", err)
		}
		t.Logf("Close: %v; retrying", err)
		time.Sleep(3 * time.Second)
	}
	// Runloop keeps the shut down devbox as a record: its shutdown is
	// answered 200 or 400 (then GET shows it terminal), both nil; a
	// not-found is allowed by the contract too.
	if err := p.Close(ctx, id); err != nil && !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close of a shut down devbox = %v, want nil or ErrNotFound", err)
	}
	got, err = p.List(ctx, reaper.ListFilter{Labels: map[string]string{"reaperd-integration": run}})
	if err != nil {
		t.Fatalf("List after Close: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("List after Close = %+v, want nothing", got)
	}
}

// createDevbox creates a small devbox through the API (the provider itself
// never creates anything).
func createDevbox(ctx context.Context, t *testing.T, cfg runloop.Config, metadata map[string]string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"name":     "reaperd-integration",
		"metadata": metadata,
		"launch_parameters": map[string]any{
			"keep_alive_time_seconds": 300,
			"resource_size_request":   "X_SMALL",
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cfg.BaseURL, "/")+"/v1/devboxes", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("create devbox: %v", err)
	}
	defer resp.Body.Close()
	var v struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil || v.ID == "" {
		t.Fatalf("create devbox: HTTP %d", resp.StatusCode)
	}
	return v.ID
}
