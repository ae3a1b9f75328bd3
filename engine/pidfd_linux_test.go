//go:build linux

package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
	"golang.org/x/sys/unix"
)

// These tests run real processes: the engine checks them through /proc
// and pidfds, not through injected functions. Where a test says the clock
// does not move, nothing but an exit can have ended the session.

// realProcesses makes the engine watch real processes.
func realProcesses(e *engine.Engine) { e.ProcessAlive, e.ProcessStart = nil, nil }

func logTo(w *syncBuffer) func(*engine.Engine) {
	return func(e *engine.Engine) { e.Logger = slog.New(slog.NewTextHandler(w, nil)) }
}

// needPidfd skips a test of the pidfd watcher on a kernel without
// pidfd_open (before Linux 5.3, or refused by a seccomp filter); the
// polling tests still run there.
func needPidfd(t *testing.T) {
	t.Helper()
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("pidfd_open is unavailable on this host (%v): the engine polls here, which TestProcessPollingWhenPidfdsAreOff covers", err)
	}
	_ = unix.Close(fd)
}

// agent is a real process standing in for a session's agent: `sleep 60`,
// killed and reaped when the test ends.
type agent struct {
	cmd *exec.Cmd
	pid int
}

// execPidfds is how many pidfds of a child os/exec holds itself (one
// since Go 1.23 on Linux): the engine's come on top.
var execPidfds = sync.OnceValue(func() int {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		panic(fmt.Sprintf("start a process: %v", err))
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	return pidfdsOf()[cmd.Process.Pid]
})

func startAgent(t *testing.T) *agent {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start an agent process: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &agent{cmd: cmd, pid: cmd.Process.Pid}
}

// kill SIGKILLs the agent, and reaps it when reap is set (else it stays a
// zombie, as the child of a test process would).
func (a *agent) kill(t *testing.T, reap bool) time.Time {
	t.Helper()
	at := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL agent %d: %v", a.pid, err)
	}
	if reap {
		_ = a.cmd.Wait()
	}
	return at
}

// watched reports whether the engine holds a pidfd of the agent.
func (a *agent) watched(t *testing.T) bool { return pidfds(t)[a.pid] > execPidfds() }

func (a *agent) waitWatched(t *testing.T) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool { return a.watched(t) },
		func() string { return fmt.Sprintf("a pidfd of agent %d", a.pid) })
}

// pidfds returns, for each pid, how many pidfds of it this process holds
// (from /proc/self/fdinfo).
func pidfds(t *testing.T) map[int]int {
	t.Helper()
	out := pidfdsOf()
	if out == nil {
		t.Fatal("cannot list /proc/self/fd")
	}
	return out
}

func pidfdsOf() map[int]int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	out := map[int]int{}
	for _, ent := range ents {
		if link, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name())); err != nil || link != "anon_inode:[pidfd]" {
			continue // closed meanwhile, or not a pidfd
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", ent.Name()))
		if err != nil {
			continue
		}
		for line := range bytes.Lines(info) {
			if v, ok := bytes.CutPrefix(line, []byte("Pid:")); ok {
				if pid, err := strconv.Atoi(string(bytes.TrimSpace(v))); err == nil {
					out[pid]++
				}
			}
		}
	}
	return out
}

// openFiles returns the descriptors open in this process, by their
// /proc/self/fd link.
func openFiles(t *testing.T) map[string]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list open files: %v", err)
	}
	out := map[string]int{}
	for _, ent := range ents {
		if link, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name())); err == nil {
			out[link]++
		}
	}
	return out
}

// waitClose waits until the fake provider was asked to close id, and
// returns when it saw that.
func (h *harness) waitClose(id string) time.Time {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() bool { return slices.Contains(h.prov.Closes(), id) },
		func() string { return "a close of " + id + " at the provider" })
	return time.Now()
}

func (h *harness) clockUnmoved() {
	h.t.Helper()
	if now := h.clock.Now(); !now.Equal(t0) {
		h.t.Fatalf("the fake clock moved to %v: this test must not need it", now)
	}
}

func (h *harness) closed(id string) func() bool {
	return func() bool { return slices.Contains(h.prov.Closes(), id) }
}

// An agent's exit is seen through its pidfd, at once: the session ends
// and the sandbox is closed while the fake clock stands still, whether the
// agent is left a zombie or reaped.
func TestPidfdSeesExitWithoutClock(t *testing.T) {
	needPidfd(t)
	logs := &syncBuffer{}
	m := engine.NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, realProcesses, logTo(logs), func(e *engine.Engine) { e.Metrics = m })
	h.start()
	for i, reap := range []bool{false, true} {
		a := startAgent(t)
		id, sess := fmt.Sprintf("a%d", i), fmt.Sprintf("s%d", i)
		h.register(reaper.RegisterRequest{ID: id, Session: sess, PID: a.pid})
		a.waitWatched(t)
		if h.closed(id)() {
			t.Fatalf("%s closed while its agent runs", id)
		}
		killed := a.kill(t, reap)
		took := h.waitClose(id).Sub(killed)
		t.Logf("reaped=%v: SIGKILL → close at the provider in %v", reap, took.Round(time.Microsecond))
		if took > 2*time.Second {
			t.Errorf("reaped=%v: SIGKILL → close took %v, want well under a second", reap, took)
		}
		if e := h.waitState("fake/"+id, reaper.StateClosed); e.CloseReason != reaper.ReasonOrphanedProcess {
			t.Errorf("%s closed for %s, want %s", id, e.CloseReason, reaper.ReasonOrphanedProcess)
		}
		if s := h.session(sess); s.EndReason != reaper.ReasonOrphanedProcess {
			t.Errorf("session %s ended for %q, want %s", sess, s.EndReason, reaper.ReasonOrphanedProcess)
		}
		want := fmt.Sprintf("process %d exited", a.pid)
		if !slices.ContainsFunc(h.audit(), func(ev reaper.AuditEvent) bool {
			return ev.Kind == reaper.EventSessionEnded && ev.Session == sess && ev.Detail == want
		}) {
			t.Errorf("no session-ended event for %s with %q", sess, want)
		}
		eventually(t, 5*time.Second, func() bool { return !a.watched(t) },
			func() string { return "the pidfd of an exited agent to be closed" })
	}
	h.clockUnmoved()
	if got := testutil.ToFloat64(m.ProcessExits); got != 2 {
		t.Errorf("process exits metric = %v, want 2", got)
	}
	if !strings.Contains(logs.String(), "watching session processes with pidfds") {
		t.Errorf("the watcher's mode is not logged:\n%s", logs.String())
	}
}

// A pidfd names whatever process holds the pid when it is opened: if the
// start time recorded for the session is not that process's, the session's
// own process is gone and the pid reused, and the session ends, though a
// process with its pid still runs.
func TestPidfdReusedPidCountsAsExited(t *testing.T) {
	needPidfd(t)
	h := newHarness(t, realProcesses, func(e *engine.Engine) {
		// The registration records an earlier start than the running
		// process's, as for a process that exited before its pid was
		// given to this one.
		e.ProcessStart = func(pid int) (uint64, error) {
			st, err := engine.ProcessStart(pid)
			return st - 1, err
		}
	})
	h.start()
	a := startAgent(t)
	start, err := engine.ProcessStart(a.pid)
	if err != nil {
		t.Fatal(err)
	}
	h.register(reaper.RegisterRequest{ID: "a", Session: "s", PID: a.pid})
	h.waitClose("a")
	if s := h.session("s"); s.EndReason != reaper.ReasonOrphanedProcess {
		t.Errorf("session ended for %q, want %s", s.EndReason, reaper.ReasonOrphanedProcess)
	}
	if !engine.ProcessAlive(a.pid, start) {
		t.Fatal("the agent exited: the test proves nothing")
	}
	if a.watched(t) {
		t.Error("the engine still holds a pidfd of a process that is not the session's")
	}
	h.clockUnmoved()
}

// At start, the sessions with a pid in the ledger are watched again: one
// whose process exited while no engine ran ends at once, the other's exit
// is seen when it happens.
func TestPidfdWatchesRearmFromLedgerAtStart(t *testing.T) {
	needPidfd(t)
	db, clock := ledgertest.Open(t), clockwork.NewFakeClockAt(t0)
	h1 := newHarnessOn(t, db, clock, realProcesses)
	h1.start()
	gone, lives := startAgent(t), startAgent(t)
	h1.register(reaper.RegisterRequest{ID: "gone", Session: "gone", PID: gone.pid})
	h1.register(reaper.RegisterRequest{ID: "lives", Session: "lives", PID: lives.pid})
	gone.waitWatched(t)
	lives.waitWatched(t)
	h1.shutdown()
	if gone.watched(t) || lives.watched(t) {
		t.Fatal("the stopped engine still holds pidfds")
	}
	gone.kill(t, true) // while no engine runs

	h2 := newHarnessOn(t, db, clock, realProcesses)
	h2.start()
	at := clock.Now()
	h2.waitClose("gone")
	if s := h2.session("gone"); s.EndReason != reaper.ReasonOrphanedProcess {
		t.Errorf("session gone ended for %q, want %s", s.EndReason, reaper.ReasonOrphanedProcess)
	}
	lives.waitWatched(t)
	if h2.closed("lives")() {
		t.Fatal("lives closed while its agent runs")
	}
	lives.kill(t, false)
	h2.waitClose("lives")
	if !clock.Now().Equal(at) {
		t.Fatalf("the fake clock moved: this test must not need it")
	}
}

// A session that ends otherwise (end-session here) has its pidfd closed
// at the watcher's next reconciliation with the ledger.
func TestPidfdClosedWhenSessionEndsOtherwise(t *testing.T) {
	needPidfd(t)
	h := newHarness(t, realProcesses)
	h.start()
	a := startAgent(t)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s", PID: a.pid})
	a.waitWatched(t)
	if _, err := h.eng.EndSession(context.Background(), "s"); err != nil {
		t.Fatalf("EndSession = %v", err)
	}
	if e := h.waitState("fake/a", reaper.StateClosed); e.CloseReason != reaper.ReasonSessionEnded {
		t.Errorf("closed for %s, want %s", e.CloseReason, reaper.ReasonSessionEnded)
	}
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool { return !a.watched(t) },
		func() string { return "the pidfd of an ended session to be closed" })
}

// A session given a new pid by a later registration is watched through
// the new process; the old one's exit ends nothing.
func TestPidfdFollowsANewPID(t *testing.T) {
	needPidfd(t)
	h := newHarness(t, realProcesses)
	h.start()
	first, second := startAgent(t), startAgent(t)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s", PID: first.pid})
	first.waitWatched(t)
	h.register(reaper.RegisterRequest{ID: "b", Session: "s", PID: second.pid})
	second.waitWatched(t)
	eventually(t, 5*time.Second, func() bool { return !first.watched(t) },
		func() string { return "the pidfd of the session's former process to be closed" })
	first.kill(t, true)
	never(t, 300*time.Millisecond, func() bool { return h.session("s").Ended() },
		"the session ended when its former process exited")
	second.kill(t, true)
	h.waitClose("a")
	h.waitClose("b")
	h.clockUnmoved()
}

// With pidfds turned off, the engine polls real processes every
// ProcessCheck: an exit is seen only when the clock moves.
func TestProcessPollingWhenPidfdsAreOff(t *testing.T) {
	logs := &syncBuffer{}
	h := newHarness(t, realProcesses, logTo(logs), func(e *engine.Engine) { engine.SetMaxPidfds(e, -1) })
	h.start()
	a := startAgent(t)
	h.register(reaper.RegisterRequest{ID: "a", Session: "s", PID: a.pid})
	// The check the registration asks for runs, and finds the agent alive.
	never(t, 200*time.Millisecond, h.closed("a"), "closed while its agent runs")
	if a.watched(t) {
		t.Error("the polling watcher holds a pidfd")
	}
	a.kill(t, false)
	never(t, 300*time.Millisecond, h.closed("a"), "closed before a process check: the polling watcher needs no clock?")
	h.clock.Advance(time.Second)
	h.waitClose("a")
	if e := h.waitState("fake/a", reaper.StateClosed); e.CloseReason != reaper.ReasonOrphanedProcess {
		t.Errorf("closed for %s, want %s", e.CloseReason, reaper.ReasonOrphanedProcess)
	}
	if l := logs.String(); !strings.Contains(l, "checking session processes by polling") || !strings.Contains(l, "pidfds are turned off") {
		t.Errorf("the watcher's mode is not logged:\n%s", l)
	}
}

// Beyond its budget of pidfds the watcher polls the other sessions every
// ProcessCheck, and gives them pidfds as soon as some are freed.
func TestPidfdBudgetSpentFallsBackToPolling(t *testing.T) {
	needPidfd(t)
	logs := &syncBuffer{}
	h := newHarness(t, realProcesses, logTo(logs), func(e *engine.Engine) { engine.SetMaxPidfds(e, 1) })
	h.start()
	a, b, c := startAgent(t), startAgent(t), startAgent(t)
	h.register(reaper.RegisterRequest{ID: "a", Session: "a", PID: a.pid})
	a.waitWatched(t)
	h.register(reaper.RegisterRequest{ID: "b", Session: "b", PID: b.pid})
	eventually(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "too many session processes") },
		func() string { return "the watcher to report its budget spent" })
	if b.watched(t) {
		t.Fatal("a pidfd beyond the budget")
	}
	// b is polled: its exit is seen at the next process check.
	b.kill(t, false)
	never(t, 300*time.Millisecond, h.closed("b"), "b closed before a process check, without a pidfd")
	h.clock.Advance(time.Second)
	h.waitClose("b")

	// c is polled too, until a's exit frees a's pidfd; then c's exit is
	// seen at once.
	h.register(reaper.RegisterRequest{ID: "c", Session: "c", PID: c.pid})
	never(t, 100*time.Millisecond, func() bool { return c.watched(t) }, "a pidfd beyond the budget")
	at := h.clock.Now()
	a.kill(t, false)
	h.waitClose("a")
	c.waitWatched(t)
	c.kill(t, false)
	h.waitClose("c")
	if !h.clock.Now().Equal(at) {
		t.Fatal("the fake clock moved")
	}
}

// Hundreds of sessions are watched at once, one pidfd each; the exits of
// half of them are all seen without the clock; when the engine stops,
// every descriptor it opened is closed.
func TestPidfdManySessionsAndStopClosesAll(t *testing.T) {
	needPidfd(t)
	const n = 200
	h := newHarness(t, realProcesses)
	agents := make([]*agent, n)
	for i := range agents {
		agents[i] = startAgent(t)
	}
	before := openFiles(t)
	h.start()
	regStart := time.Now()
	for i, a := range agents {
		h.register(reaper.RegisterRequest{ID: fmt.Sprintf("m%d", i), Session: fmt.Sprintf("m%d", i), PID: a.pid})
	}
	eventually(t, 10*time.Second, func() bool {
		held := pidfds(t)
		for _, a := range agents {
			if held[a.pid] <= execPidfds() {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("%d agents watched", n) })
	t.Logf("%d sessions registered and watched in %v", n, time.Since(regStart).Round(time.Millisecond))
	killed := time.Now()
	for _, a := range agents[:n/2] {
		a.kill(t, false)
	}
	eventually(t, 10*time.Second, func() bool { return len(h.prov.Closes()) == n/2 },
		func() string { return fmt.Sprintf("%d closes at the provider; %d so far", n/2, len(h.prov.Closes())) })
	t.Logf("%d SIGKILLs → %d closes at the provider in %v", n/2, n/2, time.Since(killed).Round(time.Millisecond))
	for i := range n / 2 {
		if id := fmt.Sprintf("m%d", n/2+i); slices.Contains(h.prov.Closes(), id) {
			t.Fatalf("%s closed while its agent runs", id)
		}
	}
	h.clockUnmoved()

	h.shutdown()
	after := openFiles(t)
	if !maps.Equal(before, after) {
		t.Fatalf("open files before the engine ran %v, after it stopped %v", before, after)
	}
}
