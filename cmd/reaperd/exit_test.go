package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/providers/providertest"
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
		{"ttl under a second", []string{"register", "e2b/y", "--ttl", "500ms"}, exitUsage},
		{"ttl in days and hours", []string{"register", "e2b/" + id, "--ttl", "1d12h"}, exitOK},
		{"negative limit", []string{"list", "--limit", "-1"}, exitUsage},
		{"negative audit limit", []string{"audit", "--limit", "-1"}, exitUsage},
		{"events with a format", []string{"audit", "--events", "-o", "json"}, exitUsage},
		{"negative cpu", []string{"register", "e2b/z", "--ttl", "1h", "--cpu", "-1"}, exitUsage},
		{"bad gpu count", []string{"register", "e2b/z", "--ttl", "1h", "--gpu", "A100:x"}, exitUsage},
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

// TestClientTimeout: --timeout bounds a call to a daemon that does not
// answer.
func TestClientTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	start := time.Now()
	_, errOut, code := runCLI(sock, "list", "--timeout", "300ms")
	if code != exitError || !strings.Contains(errOut, "did not answer within 300ms") {
		t.Fatalf("list --timeout 300ms against a mute daemon: exit %d %q", code, errOut)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %v", el)
	}
	if _, _, code := runCLI(sock, "list", "--timeout", "-1s"); code != exitUsage {
		t.Fatalf("negative --timeout: exit %d, want 2", code)
	}
}

// TestDiscoveryFailuresAreReported: when every provider fails to list,
// discover and sweep say so and fail, rather than report nothing
// untracked.
func TestDiscoveryFailuresAreReported(t *testing.T) {
	d, fake := e2bDaemon(t, "--schedule", "@every 1h")
	fake.Fail(providertest.Failure{Kind: providertest.FailServerError})
	for _, args := range [][]string{{"discover"}, {"sweep"}} {
		out, errOut, code := d.cli(args...)
		if code != exitError || strings.Contains(out, "no untracked") || !strings.Contains(errOut, "discovery failed for e2b") {
			t.Errorf("reaperd %v with e2b failing: exit %d, stdout %q, stderr %q; want 1 and the failure", args, code, out, errOut)
		}
	}
}

// TestAuditEventsCLI: audit --events writes every event as a JSON line,
// the same events audit -o json returns.
func TestAuditEventsCLI(t *testing.T) {
	d, fake := e2bDaemon(t)
	for range 3 {
		d.mustCLI("register", "e2b/"+fake.Create(nil, time.Now()), "--ttl", "1h")
	}
	var all []json.RawMessage
	if err := json.Unmarshal([]byte(d.mustCLI("audit", "--since", "", "-o", "json")), &all); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(d.mustCLI("audit", "--since", "", "--events")), "\n")
	if len(lines) != len(all) || len(all) < 3 {
		t.Fatalf("--events wrote %d lines, audit -o json has %d events", len(lines), len(all))
	}
	for i, l := range lines {
		var ev reaper.AuditEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Kind == "" {
			t.Fatalf("line %d %q is not an event: %v", i, l, err)
		}
	}
}

// TestRegisterResources: the size given at registration is kept on the
// entry, for cost reports.
func TestRegisterResources(t *testing.T) {
	d, fake := e2bDaemon(t)
	id := fake.Create(nil, time.Now())
	d.mustCLI("register", "e2b/"+id, "--ttl", "1h", "--cpu", "2", "--memory", "4.5", "--disk", "10", "--gpu", "A100:2")
	e := listJSON(t, d)["e2b/"+id]
	want := reaper.Resources{VCPU: 2, MemoryGiB: 4.5, DiskGiB: 10, GPU: "A100", GPUCount: 2}
	if e.Entry == nil || e.Resources == nil || *e.Resources != want {
		t.Fatalf("resources = %+v, want %+v", e.Resources, want)
	}
}
