//go:build integration

package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// TestIntegration runs against the real E2B API when E2B_API_KEY is set
// (go test -tags integration ./providers/e2b). It creates one short-lived
// sandbox from the "base" template, pauses it, finds it by its metadata
// (with its template), closes it (twice: the second close may answer nil or
// ErrNotFound), and checks that it is gone. Check accepts the key and
// refuses a wrong one (ErrUnauthorized). Closing an id E2B does not know is
// ErrNotFound; closing a malformed one is ErrInvalid (HTTP 400).
func TestIntegration(t *testing.T) {
	cfg := ConfigFromEnv(os.Getenv)
	if !cfg.Enabled() {
		t.Skip("E2B_API_KEY not set")
	}
	cfg.Timeout = 30 * time.Second
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	run := fmt.Sprintf("it-%d", time.Now().UnixNano())
	labels := map[string]string{"reaperd-integration": run, "odd key&=": "odd value+%"}

	if err := p.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	bad := cfg
	bad.APIKey = "e2b_reaperdintegrationnotakey0000000000000"
	if q, err := New(bad); err != nil {
		t.Fatalf("New(wrong key): %v", err)
	} else if err := q.Check(ctx); !errors.Is(err, reaper.ErrUnauthorized) {
		t.Fatalf("Check with a wrong key = %v, want ErrUnauthorized", err)
	}

	if err := p.Close(ctx, "reaperdnotasandbox000"); !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close(unknown) = %v, want ErrNotFound", err)
	}
	var pe *reaper.ProviderError
	if err := p.Close(ctx, "not-a-sandbox-id"); !errors.Is(err, reaper.ErrInvalid) || !errors.As(err, &pe) || pe.StatusCode != http.StatusBadRequest {
		t.Fatalf("Close(malformed) = %v, want ErrInvalid with HTTP 400", err)
	}

	id := createSandbox(ctx, t, cfg, labels)
	t.Cleanup(func() { _ = p.Close(context.Background(), id) })
	post(ctx, t, cfg, "/sandboxes/"+id+"/pause", nil, http.StatusNoContent, nil)

	got, err := p.List(ctx, reaper.ListFilter{Labels: labels})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 1 || got[0].ID != id || got[0].State != "paused" || got[0].CreatedAt.IsZero() || got[0].Template == "" {
		t.Fatalf("List(labels) = %+v, want the paused sandbox %s with its template", got, id)
	}
	t.Logf("template of a sandbox created from \"base\": %q", got[0].Template)

	if err := p.Close(ctx, id); err != nil {
		t.Fatalf("Close(%s) = %v", id, err)
	}
	if err := p.Close(ctx, id); err != nil && !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("second Close(%s) = %v, want nil or ErrNotFound", id, err)
	}
	got, err = p.List(ctx, reaper.ListFilter{Labels: labels})
	if err != nil {
		t.Fatalf("List after Close: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("List after Close = %+v, want none", got)
	}
}

func createSandbox(ctx context.Context, t *testing.T, cfg Config, labels map[string]string) string {
	t.Helper()
	var out struct {
		SandboxID string `json:"sandboxID"`
	}
	body := map[string]any{"templateID": "base", "timeout": 120, "metadata": labels}
	post(ctx, t, cfg, "/sandboxes", body, http.StatusCreated, &out)
	if out.SandboxID == "" {
		t.Fatal("create sandbox: no sandboxID in the answer")
	}
	return out.SandboxID
}

func post(ctx context.Context, t *testing.T, cfg Config, path string, body any, want int, out any) {
	t.Helper()
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.APIURL+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s: HTTP %d, want %d", path, resp.StatusCode, want)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("POST %s: decode: %v", path, err)
		}
	}
}
