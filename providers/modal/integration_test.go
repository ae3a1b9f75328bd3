//go:build integration

package modal

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/reaperd/reaperd/providers/modal/modaltest"
	"github.com/reaperd/reaperd/reaper"
)

// TestIntegration runs against the Modal account of MODAL_TOKEN_ID and
// MODAL_TOKEN_SECRET (in MODAL_ENVIRONMENT, or the token's default
// environment). For each backend, V1 (Sandboxes.Create with
// MODAL_SANDBOX_V2=0) and V2 (Sandboxes.Create with the SDK's default since
// v0.11.0), it creates one small named sandbox (alpine, sleep, a 10-minute
// Modal timeout as a backstop) with a unique tag, finds it with List by
// that tag (name, app, labels, creation time), closes it twice (the second
// close may answer nil or ErrNotFound), checks that it has finished and is
// no longer listed. It also checks the credentials (Check) and closes
// unknown V1 and V2 ids (ErrNotFound).
//
//	MODAL_TOKEN_ID=ak-... MODAL_TOKEN_SECRET=as-... go test -tags integration -run Integration ./providers/modal/
func TestIntegration(t *testing.T) {
	cfg := ConfigFromEnv(os.Getenv)
	if cfg.TokenID == "" || cfg.TokenSecret == "" {
		t.Skip("set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET to run against Modal")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Shutdown()
	if err := p.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}

	const appName = "reaperd-integration"
	for _, backend := range []struct {
		name string
		v2   string // MODAL_SANDBOX_V2 while the SDK client is built
	}{{"v1", "0"}, {"v2", "1"}} {
		t.Run(backend.name, func(t *testing.T) {
			t.Setenv("MODAL_SANDBOX_V2", backend.v2) // read by NewClientWithOptions
			sdk, err := modalsdk.NewClientWithOptions(&modalsdk.ClientParams{
				TokenID: cfg.TokenID, TokenSecret: cfg.TokenSecret, Environment: cfg.Environment,
			})
			if err != nil {
				t.Fatalf("modal client: %v", err)
			}
			defer sdk.Close()

			app, err := sdk.Apps.FromName(ctx, appName, &modalsdk.AppFromNameParams{CreateIfMissing: true})
			if err != nil {
				t.Fatalf("app: %v", err)
			}
			image := sdk.Images.FromRegistry("alpine:3.21", nil)
			run := strings.ToLower(rand.Text())
			name := "reaperd-" + run[:12]
			sb, err := sdk.Sandboxes.Create(ctx, app, image, &modalsdk.SandboxCreateParams{
				Command: []string{"sleep", "600"},
				Timeout: 10 * time.Minute,
				Name:    name,
				Tags:    map[string]string{"reaperd-test": run},
			})
			if err != nil {
				t.Fatalf("create sandbox: %v", err)
			}
			createdAt := time.Now()
			defer func() { _, _ = sb.Terminate(context.Background(), nil) }() // backstop
			if v1 := modaltest.IsV1ID(sb.SandboxID); v1 != (backend.v2 == "0") {
				t.Fatalf("sandbox id %s: V1 shape %v on backend %s", sb.SandboxID, v1, backend.name)
			}

			filter := reaper.ListFilter{Labels: map[string]string{"reaperd-test": run}}
			got, err := p.List(ctx, filter)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(got) != 1 || got[0].ID != sb.SandboxID {
				t.Fatalf("List(tag) = %+v, want only %s", got, sb.SandboxID)
			}
			if d := got[0].CreatedAt.Sub(createdAt); d < -2*time.Minute || d > 2*time.Minute {
				t.Errorf("CreatedAt = %v, want about %v", got[0].CreatedAt, createdAt)
			}
			if got[0].Labels["reaperd-test"] != run {
				t.Errorf("Labels = %v, want reaperd-test=%s", got[0].Labels, run)
			}
			if got[0].Name != name || got[0].App != appName {
				t.Errorf("Name, App = %q, %q; want %q, %q", got[0].Name, got[0].App, name, appName)
			}
			t.Logf("listed %s name=%q app=%q state=%q created=%v", got[0].ID, got[0].Name, got[0].App, got[0].State, got[0].CreatedAt)

			if err := p.Close(ctx, sb.SandboxID); err != nil {
				t.Fatalf("Close #1: %v", err)
			}
			// Modal answers the terminate of a finished sandbox with its
			// existing result (nil); a not-found is allowed too.
			if err := p.Close(ctx, sb.SandboxID); err != nil && !errors.Is(err, reaper.ErrNotFound) {
				t.Fatalf("Close #2 = %v, want nil or ErrNotFound", err)
			}
			if code, err := sb.Poll(ctx, nil); err != nil || code == nil {
				t.Errorf("Poll after Close = %v, %v; want an exit code", code, err)
			}
			got, err = p.List(ctx, filter)
			if err != nil {
				t.Fatalf("List after Close: %v", err)
			}
			if len(got) != 0 {
				t.Errorf("List after Close = %+v, want none", got)
			}
		})
	}

	for _, id := range []string{"sb-doesnotexist0000000000", "sb-01ARZ3NDEKTSV4RRFFQ69G5FAV"} {
		if err := p.Close(ctx, id); !errors.Is(err, reaper.ErrNotFound) {
			t.Errorf("Close(unknown %s) = %v, want ErrNotFound", id, err)
		}
	}
}
