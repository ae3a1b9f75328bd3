package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/reaper"
)

const e2bKey = "e2b_test_key_0123456789"

func e2bDaemon(t *testing.T, args ...string) (*testDaemon, *e2btest.Server) {
	t.Helper()
	fake := e2btest.NewServer(e2bKey)
	t.Cleanup(fake.Close)
	d := startDaemon(t, "", []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL}, args...)
	return d, fake
}

func listJSON(t *testing.T, d *testDaemon, args ...string) map[string]api.EntryView {
	t.Helper()
	out := d.mustCLI(append([]string{"list", "-o", "json", "--all"}, args...)...)
	var ents []api.EntryView
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	m := map[string]api.EntryView{}
	for _, e := range ents {
		m[e.Key] = e
	}
	return m
}

// TestCLIWalkthrough drives every client subcommand against a real daemon
// process with an E2B fake behind it.
func TestCLIWalkthrough(t *testing.T) {
	d, fake := e2bDaemon(t)
	created := time.Now().Add(-time.Hour)
	sbx1 := fake.Create(map[string]string{"team": "x"}, created)
	sbx2 := fake.Create(nil, created)
	kept := fake.Create(nil, created)
	stray := fake.Create(nil, created) // never registered

	// version and status
	if out := d.mustCLI("version"); !strings.HasPrefix(out, "reaperd ") {
		t.Fatalf("version = %q", out)
	}
	if out := d.mustCLI("status"); !strings.Contains(out, "enabled:   e2b") || !strings.Contains(out, d.ledger) {
		t.Fatalf("status = %q, want e2b enabled and the ledger path", out)
	}

	// register, idempotently
	out := d.mustCLI("register", "e2b/"+sbx1, "--session", "s1", "--ttl", "30m", "--lease", "2m", "--label", "team=x")
	if !strings.Contains(out, "registered e2b/"+sbx1) || !strings.Contains(out, "session s1") {
		t.Fatalf("register = %q", out)
	}
	d.mustCLI("register", "e2b/"+sbx1, "--session", "s1", "--ttl", "30m")
	// status names the next deadlines: s1's lease (2m), then sbx1's expiry (30m).
	if out := d.mustCLI("status"); !strings.Contains(out, "(session s1)") || !strings.Contains(out, "(entry e2b/"+sbx1+")") {
		t.Fatalf("status = %q, want the next deadlines named", out)
	}
	d.mustCLI("register", "e2b/"+sbx2, "--session", "s1", "--ttl", "1s")
	d.mustCLI("register", "e2b/"+kept, "--ttl", "1s", "--keep")
	d.mustCLI("register", "e2b/attached-one", "--session", "s1", "--attached", "-o", "json")

	// heartbeat and tag
	if out := d.mustCLI("heartbeat", "--session", "s1"); !strings.Contains(out, "renewed until") {
		t.Fatalf("heartbeat = %q", out)
	}
	if out := d.mustCLI("tag", "e2b/"+sbx1, "--keep"); !strings.Contains(out, "keep=true") {
		t.Fatalf("tag = %q", out)
	}
	d.mustCLI("tag", "e2b/"+sbx1, "--keep=false", "--label", "stage=2")

	// the short-ttl entry is closed by its deadline, within seconds
	eventually(t, 10*time.Second, "the expired sandbox to be closed", func() bool { return !fake.Alive(sbx2) })
	eventually(t, 5*time.Second, "the entry to be recorded closed", func() bool {
		return listJSON(t, d)["e2b/"+sbx2].State == reaper.StateClosed
	})
	if !fake.Alive(kept) {
		t.Fatal("the keep sandbox was closed")
	}

	// list in every format
	out = d.mustCLI("list")
	if !strings.Contains(out, "SANDBOX") || !strings.Contains(out, "e2b/"+sbx1) || strings.Contains(out, "e2b/"+sbx2) {
		t.Fatalf("list (table, active+closing) = %q", out)
	}
	out = d.mustCLI("list", "--all", "-o", "csv")
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 5 || rows[0][0] != "SANDBOX" {
		t.Fatalf("list -o csv = %q (%v)", out, err)
	}
	ents := listJSON(t, d)
	if e := ents["e2b/"+sbx1]; e.Keep || e.Labels["stage"] != "2" || e.Labels["team"] != "x" {
		t.Fatalf("entry after tags = %+v", e)
	}

	// sweep --dry-run changes nothing
	out = d.mustCLI("sweep", "--dry-run")
	if !strings.Contains(out, "nothing is due") && !strings.Contains(out, "dry run") {
		t.Fatalf("sweep --dry-run = %q", out)
	}
	out = d.mustCLI("sweep", "-o", "json")
	var rep reaper.SweepReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("sweep -o json: %v", err)
	}
	var sawStray bool
	for _, u := range rep.Untracked {
		sawStray = sawStray || u.Sandbox.ID == stray
	}
	if !sawStray {
		t.Fatalf("sweep discovery = %+v, want the unregistered sandbox %s", rep.Untracked, stray)
	}

	// discover
	if out := d.mustCLI("discover"); !strings.Contains(out, "e2b/"+stray) {
		t.Fatalf("discover = %q, want e2b/%s", out, stray)
	}

	// release and end-session
	if out := d.mustCLI("release", "e2b/"+sbx1); !strings.Contains(out, "released e2b/"+sbx1) {
		t.Fatalf("release = %q", out)
	}
	out = d.mustCLI("end-session", "--session", "s1")
	if !strings.Contains(out, "session s1 ended") || !strings.Contains(out, "released e2b/attached-one") {
		t.Fatalf("end-session = %q", out)
	}
	if !fake.Alive(sbx1) {
		t.Fatal("a released sandbox was closed")
	}

	// audit in every format
	out = d.mustCLI("audit", "--since", "1h")
	for _, want := range []string{"registered", "tagged", "close-started", "closed", "released", "session-ended", "discovered-untracked"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit lacks %q:\n%s", want, out)
		}
	}
	out = d.mustCLI("audit", "-o", "csv", "--since", "")
	if rows, err := csv.NewReader(strings.NewReader(out)).ReadAll(); err != nil || len(rows) < 10 || rows[0][1] != "EVENT" {
		t.Fatalf("audit -o csv = %q (%v)", out, err)
	}
	var evs []reaper.AuditEvent
	if err := json.Unmarshal([]byte(d.mustCLI("audit", "-o", "json")), &evs); err != nil || len(evs) < 10 {
		t.Fatalf("audit -o json: %d events, %v", len(evs), err)
	}
}

func TestCLIErrors(t *testing.T) {
	d, _ := e2bDaemon(t)
	d.mustCLI("register", "e2b/exists", "--session", "s1")
	tests := []struct {
		args     []string
		code     int
		mentions string
	}{
		{[]string{"register", "e2b/x", "--ttl", "5x"}, exitUsage, `invalid duration "5x"`},
		{[]string{"register", "e2b/x"}, exitUsage, "neither a ttl nor a session"},
		{[]string{"register", "nosuch/x", "--ttl", "1h"}, exitUsage, `unknown provider "nosuch"`},
		{[]string{"register", "daytona/x", "--ttl", "1h"}, exitError, "DAYTONA_API_KEY"},
		{[]string{"register", "e2b/a b", "--ttl", "1h"}, exitUsage, "invalid"},
		{[]string{"register", "e2b", "--ttl", "1h"}, exitUsage, "PROVIDER/ID"},
		{[]string{"register", "e2b/", "--ttl", "1h"}, exitUsage, "empty"},
		{[]string{"register", "e2b/x", "--label", "novalue"}, exitUsage, "key=value"},
		{[]string{"register", "e2b/exists", "--session", "s2"}, exitError, "already registered to session s1"},
		{[]string{"register"}, exitUsage, "needs a sandbox"},
		{[]string{"register", "e2b/x", "--bogus"}, exitUsage, "unknown flag"},
		{[]string{"release", "e2b/missing"}, exitError, "not registered"},
		{[]string{"tag", "e2b/missing", "--keep"}, exitError, "not registered"},
		{[]string{"tag", "e2b/exists"}, exitUsage, "needs --keep"},
		{[]string{"heartbeat"}, exitUsage, "needs --session"},
		{[]string{"heartbeat", "--session", "nope"}, exitError, "not known"},
		{[]string{"end-session", "--session", "nope"}, exitError, "not known"},
		{[]string{"list", "-o", "yaml"}, exitUsage, "use table, json, csv"},
		{[]string{"list", "--state", "gone"}, exitUsage, "--state"},
		{[]string{"audit", "--since", "yesterday"}, exitUsage, "since"},
		{[]string{"nosuchcommand"}, exitUsage, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, code := d.cli(tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", code, tt.code, out, errOut)
			}
			lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "reaperd: ") || !strings.Contains(lines[0], tt.mentions) {
				t.Fatalf("stderr = %q, want one line mentioning %q", errOut, tt.mentions)
			}
		})
	}
}

func TestCLIDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, errOut, code := runCLI(sock, "list")
	if code != exitNoDaemon || !strings.Contains(errOut, "reaperd is not running") || !strings.Contains(errOut, sock) {
		t.Fatalf("list with no daemon: exit %d, %q", code, errOut)
	}
	// A stale socket file: nothing listening.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	d := startDaemon(t, "", nil, "--socket", stale)
	d.stop(syscall.SIGKILL) // leaves the socket file behind
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("expected a stale socket: %v", err)
	}
	_, errOut, code = runCLI(stale, "status")
	if code != exitNoDaemon || !strings.Contains(errOut, "nothing is listening") {
		t.Fatalf("status on a stale socket: exit %d, %q", code, errOut)
	}
	// A new daemon replaces the stale socket.
	d2 := startDaemon(t, "", nil, "--socket", stale)
	if _, _, code := runCLI(stale, "status"); code != 0 {
		t.Fatalf("status after restart on a stale socket: exit %d", code)
	}
	d2.stop(syscall.SIGTERM)
}

// TestSecondDaemonFailsFast starts a second daemon on the same ledger: it
// must exit at once with a message naming the file, not hang.
func TestSecondDaemonFailsFast(t *testing.T) {
	d := startDaemon(t, "", nil)
	start := time.Now()
	out, err := exec2(t, d.env, "serve", "--ledger", d.ledger, "--socket", filepath.Join(t.TempDir(), "other.sock"))
	if err == nil {
		t.Fatalf("second daemon on %s exited 0:\n%s", d.ledger, out)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("second daemon took %v to give up", el)
	}
	if !strings.Contains(out, d.ledger) || !strings.Contains(out, "locked by another process") {
		t.Fatalf("second daemon said %q; want the ledger path and the lock", out)
	}
	// The same socket is refused too, even with another ledger.
	out, err = exec2(t, d.env, "serve", "--ledger", filepath.Join(t.TempDir(), "l.db"), "--socket", d.socket)
	if err == nil || !strings.Contains(out, "another reaperd is serving") {
		t.Fatalf("second daemon on the same socket: %v %q", err, out)
	}
}

// TestGracefulStopAndCrashResume hangs the provider during a close, then
// (1) SIGKILLs the daemon mid-close and (2) restarts it: the entry, left
// closing, is resumed and closed; and a SIGTERM during a hung close exits
// within the grace period with the entry still closing.
func TestGracefulStopAndCrashResume(t *testing.T) {
	fake := e2btest.NewServer(e2bKey)
	t.Cleanup(fake.Close)
	env := []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL}
	cfg := filepath.Join(t.TempDir(), "reaperd.toml")
	if err := os.WriteFile(cfg, []byte("discover = false\n[engine]\nshutdown_grace = \"1s\"\nclose_timeout = \"20s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", env, "--config", cfg)
	id := fake.Create(nil, time.Now())
	fake.Fail(providertest.Failure{Kind: providertest.FailHang})
	d.mustCLI("register", "e2b/"+id, "--ttl", "1s")
	// In flight is not enough: the close may still wait in its queue. The
	// first attempt is committed just before the call is sent.
	eventually(t, 10*time.Second, "the first close attempt to be in flight", func() bool {
		e := listJSON(t, d)["e2b/"+id]
		return e.State == reaper.StateClosing && e.InFlight && e.Attempts == 1
	})

	// (1) crash mid-close
	if code := d.stop(syscall.SIGKILL); code != -1 {
		t.Fatalf("SIGKILL exit code %d", code)
	}
	if !fake.Alive(id) {
		t.Fatal("sandbox gone although the close hung")
	}
	// (2) restart with the provider still hung, then SIGTERM: the daemon
	// stops within its grace, leaving the entry closing.
	d.start("--config", cfg)
	eventually(t, 10*time.Second, "the resumed close to be in flight", func() bool {
		e := listJSON(t, d)["e2b/"+id]
		return e.State == reaper.StateClosing && e.InFlight && e.Attempts == 2
	})
	start := time.Now()
	if code := d.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM exit code %d\n%s", code, d.log.String())
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("graceful stop took %v with a 1s grace", el)
	}
	// (3) the provider recovers: the next start closes it.
	fake.Fail(providertest.Failure{})
	d.start("--config", cfg)
	eventually(t, 10*time.Second, "the resumed close to finish", func() bool { return !fake.Alive(id) })
	eventually(t, 5*time.Second, "the entry to be closed", func() bool {
		e := listJSON(t, d)["e2b/"+id]
		return e.State == reaper.StateClosed
	})
	if e := listJSON(t, d)["e2b/"+id]; e.Attempts != 3 {
		t.Fatalf("attempts = %d, want 3 (crash, graceful stop, success)", e.Attempts)
	}
}

// exec2 runs the reaperd test binary to completion and returns its
// combined output.
func exec2(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	var buf syncBuffer
	cmd := execCommand(args...)
	cmd.Env = daemonEnv(env...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}
