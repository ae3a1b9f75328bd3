package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/reaper"
)

// TestExitCodes: every class of error exits as the README says, whichever
// side caught it.
func TestExitCodes(t *testing.T) {
	d, fake := e2bDaemon(t)
	id := fake.Create(nil, time.Now())
	d.mustCLI("register", "e2b/"+id, "--ttl", "1h")
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"list", "--bogus"}, exitUsage},
		{"missing argument", []string{"release"}, exitUsage},
		{"bad duration, caught by the CLI", []string{"register", "e2b/y", "--ttl", "5x"}, exitUsage},
		{"unknown provider, caught by the daemon", []string{"register", "azure/y", "--ttl", "1h"}, exitUsage},
		{"invalid id, caught by the daemon", []string{"register", "e2b/a b", "--ttl", "1h"}, exitUsage},
		{"no such entry", []string{"release", "e2b/nope"}, exitError},
		{"conflict", []string{"register", "e2b/" + id, "--session", "other"}, exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, errOut, code := d.cli(tt.args...); code != tt.want {
				t.Errorf("reaperd %v: exit %d (%s), want %d", tt.args, code, errOut, tt.want)
			}
		})
	}
	if _, _, code := runCLI(filepath.Join(t.TempDir(), "none.sock"), "list"); code != exitNoDaemon {
		t.Errorf("no daemon: exit %d, want %d", code, exitNoDaemon)
	}
	// A socket this user may not open: a daemon is there and refused.
	denied := &api.NotRunningError{Socket: "/run/reaperd/reaperd.sock", Err: fmt.Errorf("dial: %w", os.ErrPermission)}
	if got := exitCode(denied); got != exitError {
		t.Errorf("permission denied: exit %d, want %d", got, exitError)
	}
	if got := exitCode(&api.NotRunningError{Err: syscall.ECONNREFUSED}); got != exitNoDaemon {
		t.Errorf("connection refused: exit %d, want %d", got, exitNoDaemon)
	}
	if got := exitCode(reaper.Errorf(reaper.EFORBIDDEN, "x")); got != exitError {
		t.Errorf("forbidden: exit %d, want %d", got, exitError)
	}
}

// TestServeConfigErrorsExit2: a configuration that cannot work (a missing
// api_key_file) exits 2, which systemd's RestartPreventExitStatus=2 does
// not restart.
func TestServeConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "reaperd.toml")
	if err := os.WriteFile(cfg, []byte("[providers.e2b]\napi_key_file = \""+filepath.Join(dir, "missing")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCLI(filepath.Join(dir, "s.sock"), "serve", "--config", cfg, "--ledger", filepath.Join(dir, "l.db"))
	if code != exitUsage {
		t.Fatalf("serve with a missing api_key_file: exit %d (%s), want 2", code, errOut)
	}
}
