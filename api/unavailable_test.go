package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

// fullStore answers every write as a ledger on a full disk does.
type fullStore struct{ reaper.Store }

func (fullStore) Update(context.Context, func(reaper.Tx) error) error {
	return &reaper.Error{Code: reaper.EUNAVAILABLE, Err: syscall.ENOSPC,
		Message: "ledger /var/lib/reaperd/ledger.db cannot be written: no space left on device: free space on its filesystem; reaperd keeps retrying and recovers on its own"}
}

// A full or failing disk is a 503 that names the cause, not a 500
// "internal"; /healthz says the same.
func TestFullDiskIs503(t *testing.T) {
	eng := &engine.Engine{
		Store:     fullStore{ledgertest.Open(t)},
		Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{"e2b": ledgertest.NopProvider{Type: "e2b"}}},
		Logger:    quietLogger(),
	}
	srv := &api.Server{Service: eng, Ready: func() error {
		return &reaper.Error{Code: reaper.EUNAVAILABLE, Message: "ledger cannot be written: no space left on device"}
	}}
	status, body := do(t, srv, "POST", "/v1/sandboxes", `{"provider":"e2b","id":"x","ttl":"1h"}`)
	code, msg := errCode(t, body)
	if status != 503 || code != reaper.EUNAVAILABLE || !strings.Contains(msg, "no space left on device") {
		t.Fatalf("register on a full disk = %d %s %q, want 503 unavailable naming the cause", status, code, msg)
	}
	status, body = do(t, srv, "GET", "/healthz", "")
	if _, msg := errCode(t, body); status != 503 || !strings.Contains(msg, "no space left on device") {
		t.Fatalf("/healthz on a full disk = %d %s, want 503 naming the cause", status, body)
	}
}

func TestDotIDsAre400(t *testing.T) {
	srv, db := newServer(t)
	for _, body := range []string{
		`{"provider":"e2b","id":".","ttl":"1h"}`,
		`{"provider":"e2b","id":"..","ttl":"1h"}`,
		`{"provider":"e2b","id":"x","session":".."}`,
		`{"provider":"e2b","id":"a/b","ttl":"1h"}`,
		`{"provider":"e2b","id":"a\u0000b","ttl":"1h"}`,
		`{"provider":"e2b","id":"a\nb","ttl":"1h"}`,
	} {
		status, resp := do(t, srv, "POST", "/v1/sandboxes", body)
		if code, msg := errCode(t, resp); status != 400 || code != reaper.EINVALID || msg == "" {
			t.Errorf("register %s = %d %s", body, status, resp)
		}
	}
	if !ledgerEmpty(t, db) {
		t.Fatal("a refused id was written")
	}
}

func TestStatusIncludesTheEngine(t *testing.T) {
	srv, _ := newServer(t)
	srv.Status = func() api.Status { return api.Status{Version: "test"} }
	status, body := do(t, srv, "GET", "/v1/status", "")
	var st api.Status
	if err := json.Unmarshal([]byte(body), &st); status != 200 || err != nil {
		t.Fatalf("status = %d %s (%v)", status, body, err)
	}
	if st.Engine == nil || !st.Engine.Providers["e2b"].Enabled || st.Engine.Providers["daytona"].Hint == "" {
		t.Fatalf("status engine = %+v, want e2b enabled and daytona's hint", st.Engine)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
