package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
)

// TestMain lets the test binary stand in for the reaperd binary: with
// REAPERD_TEST_EXEC=1 it runs reaperd's main on its arguments. Tests start
// real daemon processes this way, so that they can be killed.
func TestMain(m *testing.M) {
	if os.Getenv("REAPERD_TEST_EXEC") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := NewMain().Run(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// daemon is a reaperd serve process started by a test.
type testDaemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	ledger string
	socket string
	env    []string
	log    *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonEnv returns a clean environment for a daemon: no provider
// credentials from the test's own environment.
func daemonEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "DAYTONA_"), strings.HasPrefix(k, "E2B_"), strings.HasPrefix(k, "MODAL_"),
			strings.HasPrefix(k, "RUNLOOP_"), strings.HasPrefix(k, "REAPERD_"),
			k == "STATE_DIRECTORY", k == "RUNTIME_DIRECTORY", k == "CREDENTIALS_DIRECTORY", k == "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "REAPERD_TEST_EXEC=1")
	return append(env, extra...)
}

// startDaemon starts `reaperd serve` in a fresh directory (or dir, when
// given) and waits until it answers on its socket.
func startDaemon(t *testing.T, dir string, env []string, args ...string) *testDaemon {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	d := &testDaemon{t: t, dir: dir, ledger: filepath.Join(dir, "ledger.db"), socket: filepath.Join(dir, "r.sock"),
		env: env, log: &syncBuffer{}, done: make(chan struct{})}
	d.start(args...)
	t.Cleanup(func() {
		d.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	return d
}

func (d *testDaemon) start(args ...string) {
	d.t.Helper()
	for i, a := range args {
		if a == "--socket" && i+1 < len(args) {
			d.socket = args[i+1]
		}
	}
	full := append([]string{"serve", "--ledger", d.ledger, "--socket", d.socket}, args...)
	d.cmd = exec.Command(os.Args[0], full...)
	d.cmd.Env = daemonEnv(d.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	// Never outlive the test binary, even if it is killed.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.done = make(chan struct{})
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start daemon: %v", err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	c := api.NewClient(d.socket)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("daemon exited at start: %v\n%s", d.err, d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon did not answer on %s: %v\n%s", d.socket, err, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop signals the daemon and waits for it to exit; it returns the exit
// code (-1 when killed by a signal).
func (d *testDaemon) stop(sig syscall.Signal) int {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(sig)
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			d.t.Errorf("daemon did not stop on %v", sig)
		}
	}
	return d.cmd.ProcessState.ExitCode()
}

// cli runs a client subcommand in-process against the daemon's socket.
func (d *testDaemon) cli(args ...string) (stdout, stderr string, code int) {
	return runCLI(d.socket, args...)
}

func runCLI(socket string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "REAPERD_SOCKET" {
			return socket
		}
		return ""
	}}
	code := m.Run(context.Background(), args)
	return out.String(), errb.String(), code
}

// mustCLI runs a client subcommand and fails the test unless it exits 0.
func (d *testDaemon) mustCLI(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.cli(args...)
	if code != 0 {
		d.t.Fatalf("reaperd %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func execCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.WaitDelay = 30 * time.Second
	return cmd
}
