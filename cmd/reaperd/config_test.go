package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // "" for success
	}{
		{"empty", ``, ""},
		{"full", `
ledger = "/tmp/l.db"
socket = "/tmp/s.sock"
schedule = "*/5 * * * *"
retention = "7d"
default_ttl = "2h"
discover = false
log_level = "debug"
log_format = "json"
[engine]
concurrency = 8
close_timeout = "30s"
min_backoff = "1s"
max_backoff = "5m"
shutdown_grace = "10s"
process_check = "2s"
[providers.e2b]
api_url = "http://127.0.0.1:9"
rate = 5
[providers.modal]
token_id = "ak-x"
environment = "dev"
[providers.runloop]
force_after = 5
`, ""},
		{"retention zero keeps all", `retention = "0"`, ""},
		{"unknown key", "schedul = \"@every 1m\"\n", `unknown key "schedul" (line 1)`},
		{"unknown nested key", "[engine]\nconcurency = 3\n", `"engine.concurency" (line 2)`},
		{"bad duration", `retention = "5x"`, `invalid duration "5x"`},
		{"bad schedule", `schedule = "every minute"`, `schedule "every minute"`},
		{"schedule faster than a second", `schedule = "@every 500ms"`, "at most once a second"},
		{"schedule of a second", `schedule = "@every 1s"`, ""},
		{"bad log level", `log_level = "loud"`, "use debug, info, warn or error"},
		{"bad log format", `log_format = "xml"`, "use text or json"},
		{"negative concurrency", "[engine]\nconcurrency = -1\n", "engine.concurrency"},
		{"unknown provider", "[providers.azure]\napi_key = \"x\"\n", "[providers.azure]: unknown provider"},
		{"key and key file", "[providers.e2b]\napi_key = \"x\"\napi_key_file = \"/k\"\n", "not both"},
		{"modal api_key", "[providers.modal]\napi_key = \"x\"\n", "api_key is for daytona, e2b, runloop only; modal takes token_id, token_secret"},
		{"token on daytona", "[providers.daytona]\ntoken_id = \"x\"\n", "modal only"},
		{"force_after on e2b", "[providers.e2b]\nforce_after = 2\n", "runloop only"},
		{"syntax error", "ledger = \n", "reaperd.toml:1"},
		{"wrong type", "discover = \"yes\"\n", "reaperd.toml"},
		{"adopt rule and preset", "adopt_grace = \"5m\"\n[[adopt]]\nprovider = \"daytona\"\nlabels = { OpenHands_SID = \"*\" }\nname = \"openhands-*\"\nstates = [\"stopped\"]\nmin_age = \"2h\"\nmin_idle = \"30m\"\naction = \"reap\"\nsession_label = \"OpenHands_SID\"\n[[adopt]]\npreset = \"swe-rex\"\naction = \"reap\"\n", ""},
		{"adopt unknown key", "[[adopt]]\nprovider = \"daytona\"\nlabel = { a = \"b\" }\n", `"adopt.label"`},
		{"adopt no provider", "[[adopt]]\napp = \"x\"\n", "[[adopt]] #1: provider \"\""},
		{"adopt unknown preset", "[[adopt]]\npreset = \"autogen\"\n", "unknown preset: use one of openhands, swe-rex, deepagents"},
		{"adopt preset with selector", "[[adopt]]\npreset = \"openhands\"\napp = \"x\"\n", "a preset takes only action, min_age, min_idle and states"},
		{"adopt bad action", "[[adopt]]\nprovider = \"e2b\"\ntemplate = \"t\"\naction = \"kill\"\n", `[[adopt]] #1: action "kill"`},
		{"adopt reap everything", "[[adopt]]\nprovider = \"e2b\"\naction = \"reap\"\n", "would close every untracked e2b sandbox"},
		{"adopt preset twice", "[[adopt]]\npreset = \"swe-rex\"\n[[adopt]]\npreset = \"swe-rex\"\n", "[[adopt]] #2 (preset swe-rex): rule swe-rex/modal is given twice"},
		{"adopt bad glob", "[[adopt]]\nprovider = \"daytona\"\nname = \"[x\"\n", "[[adopt]] #1: name"},
		{"http loopback", "[http]\nlisten = \"127.0.0.1:9810\"\ntoken_file = \"/etc/reaperd/api.token\"\n", ""},
		{"http off loopback without TLS", "[http]\nlisten = \"0.0.0.0:9810\"\n", "is not a loopback address: set tls_cert_file and tls_key_file"},
		{"http all interfaces without TLS", "[http]\nlisten = \":9810\"\n", "is not a loopback address"},
		{"http off loopback with TLS", "[http]\nlisten = \"0.0.0.0:9810\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"\n", ""},
		{"http bad listen", "[http]\nlisten = \"9810\"\n", "use host:port"},
		{"http cert without key", "[http]\nlisten = \"127.0.0.1:9810\"\ntls_cert_file = \"/c\"\n", "both tls_cert_file and tls_key_file"},
		{"http token without listen", "[http]\ntoken_file = \"/t\"\n", "need listen"},
		{"negative adopt grace", "adopt_grace = \"-1m\"\n", `reaperd.toml:1:15: toml: invalid duration "-1m"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("reaperd.toml", []byte(tt.toml))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseConfig = %v, want success", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseConfig = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestBuildProviders(t *testing.T) {
	credDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(credDir, "RUNLOOP_API_KEY"), []byte("rl-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(credDir, "DAYTONA_API_KEY"), []byte("\n"), 0o600); err != nil { // empty fallback
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "e2b.key")
	if err := os.WriteFile(keyFile, []byte("e2b-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	no := false
	tests := []struct {
		name         string
		cfg          Config
		env          map[string]string
		wantEnabled  string
		wantDisabled string
		wantErr      string
	}{
		{"nothing", Config{}, nil, "", "daytona,e2b,modal,runloop", ""},
		{"env", Config{}, map[string]string{"E2B_API_KEY": "k", "MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"}, "e2b,modal", "daytona,runloop", ""},
		{"credentials directory", Config{}, map[string]string{"CREDENTIALS_DIRECTORY": credDir}, "runloop", "daytona,e2b,modal", ""},
		{"env beats credentials", Config{}, map[string]string{"CREDENTIALS_DIRECTORY": credDir, "DAYTONA_API_KEY": "d"}, "daytona,runloop", "e2b,modal", ""},
		{"config key file", Config{Providers: map[string]ProviderConfig{"e2b": {APIKeyFile: keyFile}}}, nil, "e2b", "daytona,modal,runloop", ""},
		{"enabled = false wins", Config{Providers: map[string]ProviderConfig{"e2b": {Enabled: &no}}}, map[string]string{"E2B_API_KEY": "k"}, "", "daytona,e2b,modal,runloop", ""},
		{"missing key file", Config{Providers: map[string]ProviderConfig{"e2b": {APIKeyFile: "/nonexistent/k"}}}, nil, "", "", "api_key_file"},
		{"bad endpoint", Config{Providers: map[string]ProviderConfig{"e2b": {APIURL: "ftp://x"}}}, map[string]string{"E2B_API_KEY": "k"}, "", "", "configure provider e2b"},
		{"half a modal token", Config{}, map[string]string{"MODAL_TOKEN_ID": "ak-1"}, "", "", "MODAL_TOKEN_SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := BuildProviders(&tt.cfg, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("BuildProviders = %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "e2b-from-file") || strings.Contains(err.Error(), "rl-key") {
					t.Fatalf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var en, dis []string
			for _, n := range providerNames {
				if _, ok := set.Enabled[n]; ok {
					en = append(en, n)
				}
				if _, ok := set.Disabled[n]; ok {
					dis = append(dis, n)
				}
			}
			if got := strings.Join(en, ","); got != tt.wantEnabled {
				t.Errorf("enabled = %q, want %q", got, tt.wantEnabled)
			}
			if got := strings.Join(dis, ","); got != tt.wantDisabled {
				t.Errorf("disabled = %q, want %q", got, tt.wantDisabled)
			}
		})
	}
}

type pathCase struct {
	name               string
	cfg                Config
	ledgerFlag, sockF  string
	env                map[string]string
	wantLedger, wantSk string
	wantErr            string
}

func TestResolvePaths(t *testing.T) {
	tests := []pathCase{
		{"systemd directories", Config{}, "", "", map[string]string{"STATE_DIRECTORY": "/var/lib/reaperd:/other", "RUNTIME_DIRECTORY": "/run/reaperd"},
			"/var/lib/reaperd/ledger.db", "/run/reaperd/reaperd.sock", ""},
		{"config beats systemd", Config{Ledger: "/data/l.db", Socket: "/tmp/r.sock"}, "", "", map[string]string{"STATE_DIRECTORY": "/var/lib/reaperd"},
			"/data/l.db", "/tmp/r.sock", ""},
		{"flags beat all", Config{Ledger: "/data/l.db", Socket: "/tmp/r.sock"}, "/f/l.db", "/f/r.sock", map[string]string{"REAPERD_SOCKET": "/e/r.sock"},
			"/f/l.db", "/f/r.sock", ""},
		{"REAPERD_SOCKET beats config", Config{Socket: "/tmp/r.sock"}, "/f/l.db", "", map[string]string{"REAPERD_SOCKET": "/e/r.sock"},
			"/f/l.db", "/e/r.sock", ""},
		{"socket path too long", Config{}, "/f/l.db", "/" + strings.Repeat("s", 120), nil, "", "", "choose a shorter --socket"},
	}
	local, _ := filepath.Abs("reaperd-data")
	if os.Geteuid() == 0 {
		tests = append(tests,
			// Root trying reaperd by hand does not write the system's ledger.
			pathCase{"root by hand", Config{}, "", "", nil, local + "/ledger.db", local + "/reaperd.sock", ""},
			pathCase{"root under systemd", Config{}, "", "", map[string]string{"INVOCATION_ID": "0123abcd"}, "/var/lib/reaperd/ledger.db", "/run/reaperd/reaperd.sock", ""})
	} else {
		tests = append(tests, pathCase{"a user", Config{}, "", "", map[string]string{"INVOCATION_ID": "0123abcd"}, local + "/ledger.db", local + "/reaperd.sock", ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s, err := resolvePaths(&tt.cfg, tt.ledgerFlag, tt.sockF, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolvePaths = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || l != tt.wantLedger || s != tt.wantSk {
				t.Fatalf("resolvePaths = %q, %q, %v; want %q, %q", l, s, err, tt.wantLedger, tt.wantSk)
			}
		})
	}
}

// TestReloadAndMetrics sends SIGHUP to a daemon after editing its config:
// a valid change is applied, an invalid one is rejected whole and the
// daemon keeps running. It also scrapes /metrics over the socket.
func TestReloadAndMetrics(t *testing.T) {
	_, fake := e2bDaemon(t) // a fake to point at
	dir := t.TempDir()
	cfg := filepath.Join(dir, "reaperd.toml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("schedule = \"@every 1h\"\n")
	d := startDaemon(t, "", []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL}, "--config", cfg)
	if out := d.mustCLI("status"); !strings.Contains(out, "@every 1h") || !strings.Contains(out, "enabled:   e2b") {
		t.Fatalf("status = %q", out)
	}
	status := func() string { return d.mustCLI("status") }

	write("schedule = \"@every 2h\"\n[providers.e2b]\nenabled = false\n")
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload to apply", func() bool {
		s := status()
		return strings.Contains(s, "@every 2h") && strings.Contains(s, "disabled:  e2b")
	})
	_, errOut, code := d.cli("register", "e2b/x", "--ttl", "1h")
	if code == 0 || !strings.Contains(errOut, "enabled = false") {
		t.Fatalf("register after disabling e2b: exit %d %q", code, errOut)
	}

	write("schedule = \"@every 3h\"\nbogus = 1\n")
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the rejected reload to be logged", func() bool {
		return strings.Contains(d.log.String(), "reload rejected")
	})
	if s := status(); !strings.Contains(s, "@every 2h") {
		t.Fatalf("a rejected reload changed the daemon: %q", s)
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	resp, err := hc.Get("http://reaperd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"reaperd_registrations_total", "reaperd_passes_total", "reaperd_provider_enabled", "reaperd_oldest_closing_seconds", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	fi, err := os.Stat(d.socket)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode = %v, %v; want 0660", fi.Mode().Perm(), err)
	}
}

// TestReloadAsSoonAsTheSocketExists: a SIGHUP that arrives once the daemon
// has its socket, before it has finished starting, is a reload like any
// other, not the default action of SIGHUP, which ends the process.
// (`systemctl reload` right after a start, or a config-management run.)
func TestReloadAsSoonAsTheSocketExists(t *testing.T) {
	dir := t.TempDir()
	d := &testDaemon{t: t, dir: dir, ledger: filepath.Join(dir, "ledger.db"), socket: filepath.Join(dir, "r.sock"),
		log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(os.Args[0], "serve", "--ledger", d.ledger, "--socket", d.socket)
	d.cmd.Env = daemonEnv()
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(d.socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no socket")
		}
		time.Sleep(100 * time.Microsecond)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload to be logged", func() bool {
		select {
		case <-d.done:
			t.Fatalf("the daemon ended on a SIGHUP at start: %v", d.err)
		default:
		}
		return strings.Contains(d.log.String(), "configuration reloaded")
	})
	if out := d.mustCLI("status"); !strings.Contains(out, "enabled") {
		t.Fatalf("status after the reload = %q", out)
	}
}
