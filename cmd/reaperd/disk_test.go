package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/reaper"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (`getconf CLK_TCK`): 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the CPU time (user + system) the process pid has used so
// far, from /proc/PID/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read the daemon's CPU time: %v", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count the fields after its closing parenthesis, where field 3 (state)
	// is the first, so utime (14) and stime (15) are the 12th and 13th.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 13 {
		t.Fatalf("cannot parse /proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("cannot parse utime/stime in /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

// listenNotify listens on a datagram socket for sd_notify messages.
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen for sd_notify: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, strings.Split(string(buf[:k]), "\n")...)
			n.mu.Unlock()
		}
	}()
	return n
}

// count returns how many notification lines equal line.
func (n *notifySocket) count(line string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if m == line {
			c++
		}
	}
	return c
}

// e2bDaemonIn is e2bDaemon with the daemon's ledger (and, unless args give
// --socket, its socket) in dir.
func e2bDaemonIn(t *testing.T, dir string, args ...string) (*testDaemon, *e2btest.Server) {
	t.Helper()
	fake := e2btest.NewServer(e2bKey)
	t.Cleanup(fake.Close)
	d := startDaemon(t, dir, []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL}, args...)
	return d, fake
}

// rawHTTP is an HTTP client for the daemon's socket that shows status
// codes, which api.Client turns into errors.
func rawHTTP(socket string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

// rawCall sends a request to the daemon and returns the status and body.
func rawCall(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://reaperd"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

// fillDisk writes a file in dir until the filesystem is full, and returns
// the file's path and size.
func fillDisk(t *testing.T, dir string) (string, int64) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create the filler: %v", err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 64<<10)
	var size int64
	for {
		n, err := f.Write(buf)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("fill the disk: %v", err)
		}
		if size > 1<<30 {
			t.Fatalf("wrote %d bytes into %s without filling it: is it the tmpfs?", size, dir)
		}
	}
	// Nothing more fits, not even a byte: the fs is full to the page.
	if _, err := f.Write([]byte{1}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("the filesystem is not full after %d bytes: a 1-byte write answered %v", size, err)
	}
	return path, size
}

// TestFullDiskBacksOffAnswers503AndRecovers runs a daemon whose ledger is on
// a tiny tmpfs, fills that filesystem while sandboxes fall due, and checks
// that the daemon neither spins nor closes anything it cannot record: it
// backs off (little CPU, a bounded number of log lines naming the cause),
// answers registrations and /healthz with 503 naming the cause, and, once
// space is freed, the same process recovers in place and closes what fell
// due.
func TestFullDiskBacksOffAnswers503AndRecovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a tmpfs to fill needs root (CI runs as root)")
	}
	const (
		shortTTL  = 2 * time.Second
		window    = 4 * time.Second // full-disk observation window
		maxCPU    = 0.10            // of one core, over the window
		maxFailed = 8               // "engine pass failed" lines in the window (backoff 100ms doubling)
		recovery  = 10 * time.Second
	)

	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		t.Skipf("skipped: cannot mount a 4 MiB tmpfs on %s: %v", mnt, err)
	}
	// Registered before the daemon's cleanup, so run after it: the daemon
	// is killed and has let go of the ledger before the unmount.
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount the tmpfs %s: %v", mnt, err)
		}
	})

	// The daemon runs as under systemd with a watchdog of 300ms: a full disk
	// must not stop its pings, or systemd would kill a daemon that is only
	// waiting for space.
	notify := listenNotify(t)
	fake := e2btest.NewServer(e2bKey)
	t.Cleanup(fake.Close)
	d := startDaemon(t, mnt, []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL,
		"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=300000"},
		"--socket", filepath.Join(t.TempDir(), "r.sock"), "--schedule", "@every 1h")
	if filepath.Dir(d.ledger) != mnt {
		t.Fatalf("ledger %s is not on the tmpfs %s", d.ledger, mnt)
	}
	pid := d.cmd.Process.Pid
	hc := rawHTTP(d.socket)
	if code, body := rawCall(t, hc, "GET", "/healthz", ""); code != http.StatusOK {
		t.Fatalf("GET /healthz before the disk is full = %d %s, want 200", code, body)
	}

	created := time.Now().Add(-time.Minute)
	var short []string
	for range 5 {
		short = append(short, fake.Create(map[string]string{"disk": "short"}, created))
	}
	long := fake.Create(map[string]string{"disk": "long"}, created)
	for _, id := range short {
		d.mustCLI("register", "e2b/"+id, "--ttl", shortTTL.String())
	}
	registered := time.Now()
	d.mustCLI("register", "e2b/"+long, "--ttl", "1h")

	filler, size := fillDisk(t, mnt)
	filled := time.Now()
	if filled.Sub(registered) >= shortTTL {
		t.Fatalf("filling the disk took until %v after the registrations, past the ttl %v", filled.Sub(registered), shortTTL)
	}
	t.Logf("filled the tmpfs with %d KiB, %v after the registrations", size>>10, filled.Sub(registered).Round(time.Millisecond))

	// The entries fall due on a full disk: the engine cannot commit their
	// move to closing, so it must fail its pass and back off.
	const failedLine = "engine pass failed"
	eventually(t, shortTTL+5*time.Second, `the daemon to log "`+failedLine+`"`, func() bool {
		return strings.Contains(d.log.String(), failedLine)
	})
	firstFail := time.Now()
	t.Logf("first failed pass logged %v after the registrations", firstFail.Sub(registered).Round(time.Millisecond))

	// A quiet window on the full disk: CPU and log lines.
	logBefore := strings.Count(d.log.String(), failedLine)
	pings0 := notify.count("WATCHDOG=1")
	cpu0, t0 := procCPU(t, pid), time.Now()
	time.Sleep(window)
	cpu1, t1 := procCPU(t, pid), time.Now()
	if pings := notify.count("WATCHDOG=1") - pings0; pings < int(window/(300*time.Millisecond)) {
		t.Errorf("%d watchdog pings in %v of full disk with WatchdogSec=300ms; want them to go on (a full disk is not a hung daemon)", pings, window)
	}
	if notify.count("READY=1") != 1 {
		t.Errorf("READY=1 sent %d times, want once", notify.count("READY=1"))
	}
	logText := d.log.String()
	failedLines := strings.Count(logText, failedLine)
	frac := float64(cpu1-cpu0) / float64(t1.Sub(t0))
	t.Logf("full disk: daemon CPU %v over %v = %.1f%% of one core; %q logged %d times (%d before the window)",
		cpu1-cpu0, t1.Sub(t0).Round(time.Millisecond), 100*frac, failedLine, failedLines, logBefore)
	if frac > maxCPU {
		t.Errorf("daemon used %.1f%% of a core while the disk was full; want under %.0f%% (a busy retry loop?)", 100*frac, 100*maxCPU)
	}
	if failedLines > maxFailed {
		t.Errorf("%q logged %d times in %v of full disk; want at most %d (once per backoff step)", failedLine, failedLines, t1.Sub(firstFail).Round(time.Millisecond), maxFailed)
	}
	for _, l := range strings.Split(logText, "\n") {
		if strings.Contains(l, failedLine) && !strings.Contains(l, "no space left on device") {
			t.Errorf("a failed pass does not name the cause (no space left on device): %s", l)
		}
	}

	// Registrations and /healthz answer 503 naming the cause. A commit
	// may still fit in pages the file already holds (bbolt reuses freed
	// ones), and then it is as durable as any: registrations go on until
	// one needs space the disk no longer has.
	var accepted []string
	var newID, body string
	var code int
	for range 500 {
		newID = fake.Create(nil, created)
		code, body = rawCall(t, hc, "POST", "/v1/sandboxes", fmt.Sprintf(`{"provider":"e2b","id":%q,"ttl":"1h"}`, newID))
		if code != http.StatusCreated {
			break
		}
		accepted = append(accepted, newID)
	}
	t.Logf("%d registrations fitted in the ledger's free pages before one needed space", len(accepted))
	var eb api.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		t.Fatalf("POST /v1/sandboxes on a full disk = %d %q: not an error body: %v", code, body, err)
	}
	if code != http.StatusServiceUnavailable || eb.Error.Code != reaper.EUNAVAILABLE || !strings.Contains(eb.Error.Message, "no space left on device") {
		t.Errorf("POST /v1/sandboxes on a full disk = %d %s; want 503, code %q, naming \"no space left on device\"", code, body, reaper.EUNAVAILABLE)
	}
	cliID := fake.Create(nil, created)
	out, errOut, exit := d.cli("register", "e2b/"+cliID, "--ttl", "1h")
	if exit != exitError || !strings.Contains(errOut, "no space left on device") {
		t.Errorf("reaperd register on a full disk: exit %d, stdout %q, stderr %q; want exit %d naming \"no space left on device\"", exit, out, errOut, exitError)
	}
	code, body = rawCall(t, hc, "GET", "/healthz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no space left on device") {
		t.Errorf("GET /healthz on a full disk = %d %s; want 503 naming \"no space left on device\"", code, body)
	}

	// Nothing is recorded closed while the sandbox is alive at the fake.
	ents := listJSON(t, d)
	for _, id := range append(short, long) {
		e, ok := ents["e2b/"+id]
		if !ok {
			t.Fatalf("e2b/%s is not in the ledger", id)
		}
		if e.State == reaper.StateClosed && fake.Alive(id) {
			t.Errorf("e2b/%s is recorded closed on a full disk, but alive at the provider: %+v", id, e.Entry)
		}
	}
	for _, id := range []string{newID, cliID} {
		if _, ok := ents["e2b/"+id]; ok {
			t.Errorf("e2b/%s is in the ledger although its registration was refused", id)
		}
	}
	for _, id := range accepted {
		if e, ok := ents["e2b/"+id]; !ok || e.State != reaper.StateActive {
			t.Errorf("e2b/%s was accepted on the full disk but is not active in the ledger: %+v", id, e.Entry)
		}
	}
	if !fake.Alive(long) {
		t.Fatal("the long-ttl sandbox was closed")
	}
	if t.Failed() {
		t.FailNow()
	}

	// Free the space: the same process recovers in place.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	eventually(t, recovery, "the due sandboxes to be closed at the fake and in the ledger after space was freed", func() bool {
		for _, id := range short {
			if fake.Alive(id) {
				return false
			}
		}
		ents := listJSON(t, d)
		for _, id := range short {
			if ents["e2b/"+id].State != reaper.StateClosed {
				return false
			}
		}
		return true
	})
	closedAfter := time.Since(freed)
	eventually(t, recovery, "/healthz to answer 200 after space was freed", func() bool {
		code, _ := rawCall(t, hc, "GET", "/healthz", "")
		return code == http.StatusOK
	})
	healthyAfter := time.Since(freed)
	t.Logf("recovered after space was freed: due sandboxes closed in %v, /healthz 200 in %v",
		closedAfter.Round(time.Millisecond), healthyAfter.Round(time.Millisecond))

	select {
	case <-d.done:
		t.Fatalf("the daemon exited: %v", d.err)
	default:
	}
	if d.cmd.Process.Pid != pid {
		t.Fatal("the daemon was restarted; want it to recover in place")
	}
	d.mustCLI("register", "e2b/"+newID, "--ttl", "1h")
	ents = listJSON(t, d)
	for _, id := range short {
		if e := ents["e2b/"+id]; e.CloseReason != reaper.ReasonExpired {
			t.Errorf("e2b/%s closed for %q, want %q", id, e.CloseReason, reaper.ReasonExpired)
		}
	}
	for _, id := range []string{long, newID} {
		if e := ents["e2b/"+id]; e.Entry == nil || e.State != reaper.StateActive || !fake.Alive(id) {
			t.Errorf("e2b/%s: want active and alive at the fake; entry %+v, alive %v", id, e.Entry, fake.Alive(id))
		}
	}
	if !strings.Contains(d.log.String(), "engine passes work again") {
		t.Errorf("the daemon did not log that its passes work again")
	}
}
