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

	modalsdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/reaperd/reaperd/reaper"
)

// TestIntegration runs against the Modal account of MODAL_TOKEN_ID and
// MODAL_TOKEN_SECRET: it creates one small sandbox (alpine, sleep, a
// 10-minute Modal timeout as a backstop), finds it with List by a unique
// tag, closes it twice (the second close may answer nil or ErrNotFound),
// checks it is no longer listed, and closes an unknown id (ErrNotFound).
//
//	MODAL_TOKEN_ID=ak-... MODAL_TOKEN_SECRET=as-... go test -tags integration -run Integration ./providers/modal/
func TestIntegration(t *testing.T) {
	cfg := ConfigFromEnv(os.Getenv)
	if cfg.TokenID == "" || cfg.TokenSecret == "" {
		t.Skip("set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET to run against Modal")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Shutdown()

	sdk, err := modalsdk.NewClientWithOptions(&modalsdk.ClientParams{
		TokenID: cfg.TokenID, TokenSecret: cfg.TokenSecret, Environment: cfg.Environment,
	})
	if err != nil {
		t.Fatalf("modal client: %v", err)
	}
	defer sdk.Close()

	app, err := sdk.Apps.FromName(ctx, "reaperd-integration", &modalsdk.AppFromNameParams{CreateIfMissing: true})
	if err != nil {
		t.Fatalf("app: %v", err)
	}
	image := sdk.Images.FromRegistry("alpine:3.21", nil)
	sb, err := sdk.Sandboxes.Create(ctx, app, image, &modalsdk.SandboxCreateParams{
		Command: []string{"sleep", "600"},
		Timeout: 10 * time.Minute,
	})
	if err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	createdAt := time.Now()
	defer func() { _ = sb.Terminate(context.Background()) }() // backstop
	run := strings.ToLower(rand.Text())
	if err := sb.SetTags(ctx, map[string]string{"reaperd-test": run}); err != nil {
		t.Fatalf("tag sandbox: %v", err)
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
	t.Logf("listed %s state=%q created=%v", got[0].ID, got[0].State, got[0].CreatedAt)

	if err := p.Close(ctx, sb.SandboxID); err != nil {
		t.Fatalf("Close #1: %v", err)
	}
	// Modal answers the terminate of a finished sandbox with its existing
	// result (nil); a not-found is allowed too.
	if err := p.Close(ctx, sb.SandboxID); err != nil && !errors.Is(err, reaper.ErrNotFound) {
		t.Fatalf("Close #2 = %v, want nil or ErrNotFound", err)
	}
	if code, err := sb.Poll(ctx); err != nil || code == nil {
		t.Errorf("Poll after Close = %v, %v; want an exit code", code, err)
	}
	got, err = p.List(ctx, filter)
	if err != nil {
		t.Fatalf("List after Close: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("List after Close = %+v, want none", got)
	}
	if err := p.Close(ctx, "sb-doesnotexist0000000000"); !errors.Is(err, reaper.ErrNotFound) {
		t.Errorf("Close(unknown) = %v, want ErrNotFound", err)
	}
}
