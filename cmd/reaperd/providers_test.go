package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/providers/e2b"
	"github.com/reaperd/reaperd/providers/modal"
	"github.com/reaperd/reaperd/providers/runloop"
	"github.com/reaperd/reaperd/reaper"
)

const testSecret = "sk-TESTSECRET-0123456789"

// credentialEnv holds the variables that enable each provider.
var credentialEnv = map[string]map[string]string{
	daytona.Type: {"DAYTONA_API_KEY": testSecret},
	e2b.Type:     {"E2B_API_KEY": testSecret},
	modal.Type:   {"MODAL_TOKEN_ID": "ak-" + testSecret, "MODAL_TOKEN_SECRET": "as-" + testSecret},
	runloop.Type: {"RUNLOOP_API_KEY": testSecret},
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestProviderKinds: every kind is built from its own variables only, and
// is disabled, with a hint naming them, without.
func TestProviderKinds(t *testing.T) {
	if len(providerKinds) != len(credentialEnv) {
		t.Fatalf("%d provider kinds, %d in this test", len(providerKinds), len(credentialEnv))
	}
	for _, kind := range providerKinds {
		t.Run(kind.name, func(t *testing.T) {
			set, err := BuildProviders(&Config{}, envOf(credentialEnv[kind.name]))
			if err != nil {
				t.Fatal(err)
			}
			p := set.Enabled[kind.name]
			if p == nil || p.Name() != kind.name {
				t.Fatalf("enabled[%s] = %v, want a %s provider", kind.name, p, kind.name)
			}
			if s, ok := p.(interface{ Shutdown() }); ok {
				s.Shutdown()
			}
			if len(set.Enabled) != 1 {
				t.Errorf("enabled = %v, want %s alone", set.Enabled, kind.name)
			}
			for name, why := range set.Disabled {
				if k, _ := providerKindOf(name); !strings.Contains(why, k.credentials) {
					t.Errorf("disabled[%s] = %q, want the hint %q", name, why, k.credentials)
				}
			}
		})
	}
}

// TestProviderConfigsNeverPrintSecrets formats each provider's
// configuration every way a log line or an error might.
func TestProviderConfigsNeverPrintSecrets(t *testing.T) {
	configs := map[string]any{
		daytona.Type: daytona.ConfigFromEnv(envOf(credentialEnv[daytona.Type])),
		e2b.Type:     e2b.ConfigFromEnv(envOf(credentialEnv[e2b.Type])),
		modal.Type:   modal.ConfigFromEnv(envOf(credentialEnv[modal.Type])),
		runloop.Type: runloop.ConfigFromEnv(envOf(credentialEnv[runloop.Type])),
	}
	for name, cfg := range configs {
		var buf bytes.Buffer
		fmt.Fprintf(&buf, "%v|%+v|%#v|%s|", cfg, cfg, cfg, cfg)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
		if strings.Contains(buf.String(), "TESTSECRET") {
			t.Errorf("%s: a formatted config shows the secret: %s", name, buf.String())
		}
		if !strings.Contains(buf.String(), "set") {
			t.Errorf("%s: a formatted config does not say whether the credential is set: %s", name, buf.String())
		}
	}
}

// TestHTTPProvidersDoNotFollowRedirects: an endpoint that redirects (a
// captive portal, a login page, a moved API) must not make a close look
// done, nor take the credentials elsewhere.
func TestHTTPProvidersDoNotFollowRedirects(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{}`)
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	urlVar := map[string]string{daytona.Type: "DAYTONA_API_URL", e2b.Type: "E2B_API_URL", runloop.Type: "RUNLOOP_BASE_URL"}
	for name, v := range urlVar {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{v: redirector.URL}
			for k, val := range credentialEnv[name] {
				env[k] = val
			}
			set, err := BuildProviders(&Config{}, envOf(env))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = set.Enabled[name].Close(ctx, "sb1")
			if err == nil || !errors.Is(err, reaper.ErrTransient) {
				t.Errorf("Close through a redirect = %v, want a transient error", err)
			}
			if err != nil && (!strings.Contains(err.Error(), "redirect") || strings.Contains(err.Error(), "TESTSECRET")) {
				t.Errorf("Close error = %q, want it to name the redirect and not the secret", err)
			}
			if _, lerr := set.Enabled[name].List(ctx, reaper.ListFilter{}); lerr == nil {
				t.Errorf("List through a redirect succeeded")
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the redirect target got %d requests", n)
			}
		})
	}
}
