//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/reaper"
	"golang.org/x/sys/unix"
)

// noPidfdEnv, in a daemon's environment, makes the test binary deny its
// own process pidfd_open (ENOSYS, as a kernel before 5.3 answers) before
// reaperd's main runs, so that the daemon's process watcher polls.
const noPidfdEnv = "REAPERD_TEST_NO_PIDFD=1"

func init() {
	if os.Getenv("REAPERD_TEST_EXEC") != "1" || os.Getenv("REAPERD_TEST_NO_PIDFD") != "1" {
		return
	}
	if err := denyPidfdOpen(); err != nil {
		fmt.Fprintf(os.Stderr, "deny pidfd_open: %v\n", err)
		os.Exit(70)
	}
}

// denyPidfdOpen installs a seccomp filter on every thread of this process
// that fails pidfd_open with ENOSYS and allows everything else.
func denyPidfdOpen() error {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_PIDFD_OPEN},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// no_new_privs is set on this thread; TSYNC carries it and the filter
	// to the others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("install a seccomp filter: %w", errno)
	}
	return nil
}

// pidfdAvailable reports whether this host lets a process use pidfd_open.
func pidfdAvailable() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	_ = unix.Close(fd)
	return true
}

// TestCrashToDestroyPollingFallback runs one crashed agent against a
// daemon denied pidfd_open: it says at start that it polls, and why, and
// still closes the sandbox within its process check.
func TestCrashToDestroyPollingFallback(t *testing.T) {
	fake := e2btest.NewServer(e2bKey)
	t.Cleanup(fake.Close)
	d := startDaemon(t, "", []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL, noPidfdEnv})
	l := crashToDestroy(t, d.socket, fake, "poll-0")
	t.Logf("polling: SIGKILL → DELETE at the fake in %v", l.Round(time.Millisecond))
	if l > 5*time.Second {
		t.Errorf("SIGKILL → DELETE took %v, want < 5s", l)
	}
	log := d.log.String()
	if !strings.Contains(log, watchModeLine["poll"]) || !strings.Contains(log, unix.ENOSYS.Error()) {
		t.Errorf("the daemon does not say that it polls because pidfd_open is unavailable:\n%s", log)
	}
}

// BenchmarkIdleDaemonCPU measures the CPU an idle daemon uses while it
// watches 1,000 live agent processes registered with --pid. Three daemons
// run side by side over the same window: one with no session (the
// baseline: alive stamps and its own timers), one watching the agents
// with pidfds, one denied pidfd_open and polling them every process_check
// (1 s). CPU is utime+stime from /proc/PID/stat over the window, 30 s by
// default (REAPERD_IDLE_WINDOW, a Go duration), logged every 5 s and
// reported for the whole window. Run it with
//
//	go test -run '^$' -bench IdleDaemonCPU -benchtime 1x ./cmd/reaperd/
func BenchmarkIdleDaemonCPU(b *testing.B) {
	const sessions = 1000
	window := 30 * time.Second
	if v := os.Getenv("REAPERD_IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("REAPERD_IDLE_WINDOW: %v", err)
		}
		window = d
	}
	if !pidfdAvailable() {
		b.Skip("pidfd_open is unavailable on this host: there is nothing to compare")
	}
	fake := e2btest.NewServer(e2bKey)
	b.Cleanup(fake.Close)
	env := []string{"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + fake.URL}
	daemons := []struct {
		name string
		env  []string
		d    *benchDaemon
	}{{name: "none", env: env}, {name: "pidfd", env: env}, {name: "poll", env: append(env[:len(env):len(env)], noPidfdEnv)}}
	for i := range daemons {
		daemons[i].d = crashServeForBench(b, daemons[i].env)
	}

	agents := make([]int, sessions)
	for i := range agents {
		cmd := exec.Command("sleep", "3600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatalf("start agent %d: %v", i, err)
		}
		b.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		agents[i] = cmd.Process.Pid
	}
	for _, dm := range daemons[1:] {
		start := time.Now()
		registerAgents(b, dm.d.socket, fake, dm.name, agents)
		b.Logf("%s: %d sessions registered with --pid in %v (16 clients)", dm.name, sessions,
			time.Since(start).Round(time.Millisecond))
	}
	// Let the registrations' verification listings (batched over 15 s)
	// pass.
	time.Sleep(20 * time.Second)
	if n := openPidfds(b, daemons[1].d.pid); n != sessions {
		b.Fatalf("the pidfd daemon holds %d pidfds, want %d", n, sessions)
	}
	if n := openPidfds(b, daemons[2].d.pid); n != 0 {
		b.Fatalf("the polling daemon holds %d pidfds, want 0", n)
	}
	for _, dm := range daemons[1:] {
		waitLog(b, dm.d.log, watchModeLine[dm.name])
	}

	used := make([]time.Duration, len(daemons))
	for b.Loop() {
		before := make([]time.Duration, len(daemons))
		for i, dm := range daemons {
			before[i] = daemonCPU(b, dm.d.pid)
		}
		start := time.Now()
		prev := append([]time.Duration(nil), before...)
		for time.Since(start) < window {
			time.Sleep(min(5*time.Second, window-time.Since(start)))
			line := ""
			for i, dm := range daemons {
				c := daemonCPU(b, dm.d.pid)
				line += fmt.Sprintf(" %s=%v", dm.name, c-prev[i])
				prev[i] = c
			}
			b.Logf("CPU in the last 5 s:%s", line)
		}
		elapsed := time.Since(start)
		for i, dm := range daemons {
			used[i] = daemonCPU(b, dm.d.pid) - before[i]
			pct := 100 * used[i].Seconds() / elapsed.Seconds()
			b.ReportMetric(pct, dm.name+"-%core")
			b.Logf("%-5s: %v of CPU over %v idle (%.3f%% of a core)", dm.name, used[i], elapsed.Round(time.Millisecond), pct)
		}
	}
	b.ReportMetric(0, "ns/op") // one op is the idle window: not a useful figure
	for _, dm := range daemons[1:] {
		out, errOut, code := runCLI(dm.d.socket, "list", "--all", "-o", "json")
		if code != 0 {
			b.Fatalf("list: exit %d: %s%s", code, out, errOut)
		}
		ents, err := crashDecodeEntries(out)
		if err != nil {
			b.Fatal(err)
		}
		for key, e := range ents {
			if e.State != reaper.StateActive {
				b.Fatalf("%s: %s is %s while its agent runs", dm.name, key, e.State)
			}
		}
	}
}

// registerAgents registers one sandbox per agent pid with daemon socket,
// each in its own session, from 16 concurrent clients.
func registerAgents(tb testing.TB, socket string, fake *e2btest.Server, prefix string, pids []int) {
	tb.Helper()
	work := make(chan int)
	errs := make(chan error, len(pids))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				id := fake.Create(map[string]string{"agent": strconv.Itoa(i)}, time.Now())
				out, errOut, code := runCLI(socket, "register", "e2b/"+id, "--session", fmt.Sprintf("%s-%d", prefix, i),
					"--pid", strconv.Itoa(pids[i]))
				if code != 0 {
					errs <- fmt.Errorf("register e2b/%s: exit %d: %s%s", id, code, out, errOut)
				}
			}
		})
	}
	for i := range pids {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// openPidfds returns how many pidfds process pid holds.
func openPidfds(tb testing.TB, pid int) int {
	tb.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatalf("list the daemon's open files: %v", err)
	}
	n := 0
	for _, ent := range ents {
		if link, err := os.Readlink(filepath.Join(dir, ent.Name())); err == nil && link == "anon_inode:[pidfd]" {
			n++
		}
	}
	return n
}

// daemonCPU returns the CPU time (user + system) process pid has used so
// far, from /proc/PID/stat.
func daemonCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("read the daemon's CPU time: %v", err)
	}
	// Fields after the command name's closing parenthesis start at field
	// 3 (state): utime (14) and stime (15) are the 12th and 13th.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		tb.Fatalf("cannot parse /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		tb.Fatalf("cannot parse /proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("cannot parse utime/stime in /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}
