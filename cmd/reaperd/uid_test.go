package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/reaper"
)

// Users of TestSessionOwnershipAcrossUsers. None needs to exist in
// /etc/passwd: processes run under these ids directly.
const (
	uidOwner      = 1001 // creates session s1 and registers its sandbox
	uidOther      = 1002 // another user: refused everything on s1
	uidAdmin      = 1003 // a member of the admin group (with adminGID)
	uidDaemonUser = 1005 // runs the second daemon
	adminGID      = 4242
)

// sharedTempDir creates a directory under /tmp that every user may
// traverse (mode 0755), owned by uid:gid, and removes it at the end of the
// test. t.TempDir is no use here: its parents are private to root.
func sharedTempDir(t *testing.T, uid, gid int) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "reaperd-uid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sharedTestBinary copies the test binary where every user may run it.
func sharedTestBinary(t *testing.T) string {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatalf("open the test binary: %v", err)
	}
	defer src.Close()
	bin := filepath.Join(sharedTempDir(t, 0, 0), "reaperd.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatalf("copy the test binary: %v", err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return bin
}

// user is the identity a client process runs as.
type osUser struct {
	uid    uint32
	groups []uint32 // supplementary groups
}

func (u osUser) String() string { return fmt.Sprintf("uid %d (groups %v)", u.uid, u.groups) }

// runAs runs `reaperd ARGS` as a real process under u's identity against
// the daemon on socket.
func runAs(t *testing.T, bin, socket string, u osUser, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runBinaryAs(t, bin, u, daemonEnv("REAPERD_SOCKET="+socket), args...)
}

func runBinaryAs(t *testing.T, bin string, u osUser, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	// Under -race, a process sleeps 1s at exit (GORACE atexit_sleep_ms)
	// for other goroutines to report: a client has none left by then.
	gorace := "atexit_sleep_ms=0"
	for _, kv := range env {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "GOCOVERDIR": // coverage data would go where this user may not write
		case "GORACE":
			gorace = v + " " + gorace
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GORACE="+gorace)
	cmd.Dir = filepath.Dir(bin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: u.uid, Gid: u.uid, Groups: u.groups},
		Pdeathsig:  syscall.SIGKILL,
	}
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run reaperd %s as %v: %v", strings.Join(args, " "), u, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// uidHelperEnv asks TestUIDHelperRequest, in a process of its own, to send
// one raw request ("METHOD PATH") to the daemon on REAPERD_SOCKET and print
// the status and body.
const uidHelperEnv = "REAPERD_UID_HELPER_REQUEST"

// TestUIDHelperRequest is not a test: TestSessionOwnershipAcrossUsers runs
// the test binary under other uids with it, to see the status codes that
// the CLI turns into exit codes.
func TestUIDHelperRequest(t *testing.T) {
	req := os.Getenv(uidHelperEnv)
	if req == "" {
		t.Skip("helper process of TestSessionOwnershipAcrossUsers")
	}
	method, path, _ := strings.Cut(req, " ")
	socket := os.Getenv("REAPERD_SOCKET")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	r, err := http.NewRequest(method, "http://reaperd"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("STATUS %d\n%s\n", resp.StatusCode, bytes.TrimSpace(body))
}

// rawAs sends one request to the daemon from a process running as u, and
// returns the status code and the decoded error body.
func rawAs(t *testing.T, bin, socket string, u osUser, method, path string) (int, api.ErrorBody) {
	t.Helper()
	var env []string
	for _, kv := range daemonEnv("REAPERD_SOCKET="+socket, uidHelperEnv+"="+method+" "+path) {
		if kv != "REAPERD_TEST_EXEC=1" {
			env = append(env, kv)
		}
	}
	out, errOut, code := runBinaryAs(t, bin, u, env, "-test.run=^TestUIDHelperRequest$", "-test.count=1")
	var status int
	var eb api.ErrorBody
	if code != 0 {
		t.Fatalf("%s %s as %v: helper exit %d: %s%s", method, path, u, code, out, errOut)
	}
	first, rest, _ := strings.Cut(out, "\n")
	if _, err := fmt.Sscanf(first, "STATUS %d", &status); err != nil {
		t.Fatalf("%s %s as %v: helper said %q", method, path, u, out)
	}
	// The helper's body is followed by the testing package's "PASS".
	body, _, _ := strings.Cut(rest, "\nPASS")
	if status >= 400 {
		if err := json.Unmarshal([]byte(body), &eb); err != nil {
			t.Fatalf("%s %s as %v: %d with a body that is not an error: %q", method, path, u, status, body)
		}
	}
	return status, eb
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "reaperd.toml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ownershipCase is one CLI process of TestSessionOwnershipAcrossUsers: a
// user, a command, and the exit code and stderr it must give.
type ownershipCase struct {
	name string
	as   *osUser // nil: root, in-process
	args []string
	code int
	// stdout (on success) or stderr (on failure) must hold all of these.
	mentions []string
}

func runOwnershipCases(t *testing.T, bin, socket string, cases []ownershipCase) {
	t.Helper()
	for _, tc := range cases {
		var out, errOut string
		var code int
		who := "root (in-process)"
		if tc.as == nil {
			out, errOut, code = runCLI(socket, tc.args...)
		} else {
			who = tc.as.String()
			out, errOut, code = runAs(t, bin, socket, *tc.as, tc.args...)
		}
		if code != tc.code {
			t.Errorf("%s: reaperd %s as %s: exit %d, want %d\nstdout: %s\nstderr: %s",
				tc.name, strings.Join(tc.args, " "), who, code, tc.code, out, errOut)
			continue
		}
		text := out
		if code != 0 {
			text = errOut
			if lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "reaperd: ") {
				t.Errorf("%s: stderr %q is not one \"reaperd: \" line", tc.name, errOut)
			}
		}
		for _, m := range tc.mentions {
			if !strings.Contains(text, m) {
				t.Errorf("%s: reaperd %s as %s: output %q does not mention %q", tc.name, strings.Join(tc.args, " "), who, text, m)
			}
		}
	}
}

// TestSessionOwnershipAcrossUsers runs real CLI processes under several uids
// against a daemon running as root: a session and its entries belong to the
// uid that created them; another user's heartbeat, registration into the
// session, end-session, tag and release are refused naming the owner; the
// owner, root and members of the admin group are allowed. A second daemon,
// running as an ordinary user, checks that its own user is allowed too.
func TestSessionOwnershipAcrossUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: running client processes under other uids needs root (CI runs as root)")
	}
	bin := sharedTestBinary(t)

	t.Run("root daemon", func(t *testing.T) {
		fake := e2btest.NewServer(e2bKey)
		t.Cleanup(fake.Close)
		sockDir := sharedTempDir(t, 0, 0)
		cfg := writeConfig(t, fmt.Sprintf("admin_group = \"%d\"\ndiscover = false\n", adminGID))
		d := startDaemon(t, "", []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL},
			"--socket", filepath.Join(sockDir, "r.sock"), "--config", cfg, "--schedule", "@every 1h")
		if fi, err := os.Stat(d.socket); err != nil {
			t.Fatal(err)
		} else if fi.Mode().Perm() != 0o660 {
			t.Fatalf("socket %s has mode %v; want 0660", d.socket, fi.Mode())
		}

		a := "e2b/" + fake.Create(nil, time.Now())
		b := "e2b/" + fake.Create(nil, time.Now())
		c := "e2b/" + fake.Create(nil, time.Now())
		owner := &osUser{uid: uidOwner, groups: []uint32{0}}
		other := &osUser{uid: uidOther, groups: []uint32{0}}
		admin := &osUser{uid: uidAdmin, groups: []uint32{0, adminGID}}
		notAdmin := &osUser{uid: uidAdmin, groups: []uint32{0}} // the same uid, outside the admin group
		refusedS1 := func(verb string) []string {
			return []string{"session s1 belongs to uid 1001", "may " + verb + " it", "admin group"}
		}
		refusedA := func(verb string) []string {
			return []string{a + " belongs to uid 1001", "may " + verb + " it"}
		}

		runOwnershipCases(t, bin, d.socket, []ownershipCase{
			{"the owner registers into a new session", owner, []string{"register", a, "--session", "s1", "--ttl", "1h"}, 0,
				[]string{"registered " + a, "session s1"}},
			{"the owner registers again (idempotent)", owner, []string{"register", a, "--session", "s1", "--ttl", "1h"}, 0, nil},
			{"another user heartbeats the session", other, []string{"heartbeat", "--session", "s1"}, exitError, refusedS1("heartbeat")},
			{"another user registers into the session", other, []string{"register", b, "--session", "s1", "--ttl", "1h"}, exitError, refusedS1("register into")},
			{"another user ends the session", other, []string{"end-session", "--session", "s1"}, exitError, refusedS1("end")},
			{"another user tags the owner's entry", other, []string{"tag", a, "--keep"}, exitError, refusedA("change")},
			{"another user releases the owner's entry", other, []string{"release", a}, exitError, refusedA("release")},
			{"another user starts a session of their own", other, []string{"register", b, "--session", "s2", "--ttl", "1h"}, 0,
				[]string{"registered " + b, "session s2"}},
			{"the owner of s1 heartbeats s2", owner, []string{"heartbeat", "--session", "s2"}, exitError,
				[]string{"session s2 belongs to uid 1002"}},
			{"a non-member of the admin group heartbeats s1", notAdmin, []string{"heartbeat", "--session", "s1"}, exitError, refusedS1("heartbeat")},
			{"an admin group member heartbeats s1", admin, []string{"heartbeat", "--session", "s1"}, 0, []string{"session s1 renewed"}},
			{"an admin group member labels the owner's entry", admin, []string{"tag", a, "--label", "by=admin"}, 0, nil},
			{"an admin group member registers into s1", admin, []string{"register", c, "--session", "s1", "--ttl", "1h"}, 0,
				[]string{"registered " + c}},
			{"the owner heartbeats", owner, []string{"heartbeat", "--session", "s1"}, 0, []string{"session s1 renewed"}},
			{"root heartbeats", nil, []string{"heartbeat", "--session", "s1"}, 0, []string{"session s1 renewed"}},
		})
		if t.Failed() {
			t.FailNow()
		}

		// The refusals are 403 "forbidden" on the wire, from a real process
		// of the other user; the owner's are not.
		for _, tc := range []struct{ method, path string }{
			{"POST", "/v1/sessions/s1/heartbeat"},
			{"POST", "/v1/sessions/s1/end"},
			{"POST", "/v1/sandboxes/" + a + "/release"},
		} {
			status, eb := rawAs(t, bin, d.socket, *other, tc.method, tc.path)
			if status != http.StatusForbidden || eb.Error.Code != reaper.EFORBIDDEN || !strings.Contains(eb.Error.Message, "belongs to uid 1001") {
				t.Errorf("%s %s as uid %d = %d %+v; want 403 %q naming uid 1001", tc.method, tc.path, uidOther, status, eb.Error, reaper.EFORBIDDEN)
			}
		}
		if status, eb := rawAs(t, bin, d.socket, *owner, "POST", "/v1/sessions/s1/heartbeat"); status != http.StatusOK {
			t.Errorf("POST /v1/sessions/s1/heartbeat as the owner = %d %+v, want 200", status, eb.Error)
		}

		// The refusals changed nothing; owners are recorded.
		ents := listJSON(t, d)
		wantOwner := map[string]uint32{a: uidOwner, b: uidOther, c: uidAdmin}
		for key, uid := range wantOwner {
			e, ok := ents[key]
			if !ok {
				t.Fatalf("%s is not in the ledger", key)
			}
			if e.Owner == nil || *e.Owner != uid {
				t.Errorf("%s: owner %v, want uid %d", key, e.Owner, uid)
			}
			if e.State != reaper.StateActive {
				t.Errorf("%s: state %s, want active", key, e.State)
			}
		}
		if e := ents[a]; e.Session != "s1" || e.Keep || e.Labels["by"] != "admin" {
			t.Errorf("%s after the refusals: %+v; want session s1, no keep, label by=admin", a, e.Entry)
		}
		if e := ents[b]; e.Session != "s2" {
			t.Errorf("%s: session %q, want s2 (its registration into s1 was refused)", b, e.Session)
		}
		for _, key := range []string{a, b, c} {
			if !fake.Alive(strings.TrimPrefix(key, "e2b/")) {
				t.Errorf("%s was closed at the provider", key)
			}
		}
		ss, err := api.NewClient(d.socket).Sessions(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		var s1 *reaper.Session
		for _, s := range ss {
			if s.ID == "s1" {
				s1 = s
			}
		}
		if s1 == nil || s1.Owner == nil || *s1.Owner != uidOwner || s1.Ended() {
			t.Errorf("session s1 = %+v; want it owned by uid %d and not ended", s1, uidOwner)
		}

		// The owner ends the session: its sandboxes are closed.
		runOwnershipCases(t, bin, d.socket, []ownershipCase{
			{"the owner ends the session", owner, []string{"end-session", "--session", "s1"}, 0, []string{"session s1 ended"}},
		})
		eventually(t, 10*time.Second, "the session's sandboxes to be closed at the fake and in the ledger", func() bool {
			if fake.Alive(strings.TrimPrefix(a, "e2b/")) || fake.Alive(strings.TrimPrefix(c, "e2b/")) {
				return false
			}
			ents := listJSON(t, d)
			return ents[a].State == reaper.StateClosed && ents[c].State == reaper.StateClosed
		})
		if !fake.Alive(strings.TrimPrefix(b, "e2b/")) {
			t.Errorf("%s (session s2, still live) was closed", b)
		}
		if e := listJSON(t, d)[a]; e.CloseReason != reaper.ReasonSessionEnded {
			t.Errorf("%s closed for %q, want %q", a, e.CloseReason, reaper.ReasonSessionEnded)
		}
	})

	t.Run("daemon user", func(t *testing.T) {
		// A daemon running as an ordinary user, without an admin group:
		// its own user may change anything, other users only their own.
		fake := e2btest.NewServer(e2bKey)
		t.Cleanup(fake.Close)
		dir := sharedTempDir(t, uidDaemonUser, uidDaemonUser)
		socket := filepath.Join(dir, "r.sock")
		cfg := filepath.Join(dir, "reaperd.toml")
		if err := os.WriteFile(cfg, []byte("discover = false\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(cfg, uidDaemonUser, uidDaemonUser); err != nil {
			t.Fatal(err)
		}
		log := &syncBuffer{}
		cmd := exec.Command(bin, "serve", "--ledger", filepath.Join(dir, "ledger.db"), "--socket", socket,
			"--schedule", "@every 1h", "--config", cfg)
		cmd.Env = daemonEnv("E2B_API_KEY="+e2bKey, "E2B_API_URL="+fake.URL)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uidDaemonUser, Gid: uidDaemonUser},
			Pdeathsig:  syscall.SIGKILL,
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
			if t.Failed() {
				t.Logf("daemon log:\n%s", log.String())
			}
		})
		eventually(t, 15*time.Second, "the daemon running as uid 1005 to answer", func() bool {
			select {
			case <-done:
				t.Fatalf("the daemon exited: %s", log.String())
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := api.NewClient(socket).Status(ctx)
			return err == nil
		})

		a := "e2b/" + fake.Create(nil, time.Now())
		// The socket is 0660 and belongs to the daemon's group.
		owner := &osUser{uid: uidOwner, groups: []uint32{uidDaemonUser}}
		other := &osUser{uid: uidOther, groups: []uint32{uidDaemonUser}}
		self := &osUser{uid: uidDaemonUser}
		runOwnershipCases(t, bin, socket, []ownershipCase{
			{"a user outside the socket's group cannot connect", &osUser{uid: uidOther}, []string{"status"}, exitError, // a daemon is there, and refused: not 3
				[]string{"permission denied"}},
			{"the owner registers into a new session", owner, []string{"register", a, "--session", "s3", "--ttl", "1h"}, 0, nil},
			{"another user heartbeats the session", other, []string{"heartbeat", "--session", "s3"}, exitError,
				[]string{"session s3 belongs to uid 1001", "only that user, root or the daemon's user may heartbeat it"}},
			{"another user tags the owner's entry", other, []string{"tag", a, "--keep"}, exitError,
				[]string{a + " belongs to uid 1001"}},
			{"the daemon's user heartbeats the session", self, []string{"heartbeat", "--session", "s3"}, 0, []string{"session s3 renewed"}},
			{"the daemon's user tags the owner's entry", self, []string{"tag", a, "--label", "by=daemon"}, 0, nil},
			{"root heartbeats the session", nil, []string{"heartbeat", "--session", "s3"}, 0, []string{"session s3 renewed"}},
			{"the daemon's user ends the session", self, []string{"end-session", "--session", "s3"}, 0, []string{"session s3 ended"}},
		})
		if t.Failed() {
			t.FailNow()
		}
		eventually(t, 10*time.Second, "the session's sandbox to be closed at the fake", func() bool {
			return !fake.Alive(strings.TrimPrefix(a, "e2b/"))
		})
	})
}
