package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
)

// TestSocketActivation starts the daemon the way systemd does with
// reaperd.socket, through systemd-socket-activate: the socket exists
// before the daemon, the first connection starts it, the daemon serves on
// the socket it was passed and, stopped, leaves the socket file in place.
func TestSocketActivation(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: package systemd)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "reaperd.sock")
	log := &syncBuffer{}
	// systemd-socket-activate passes the command only the variables -E
	// names: the test binary needs REAPERD_TEST_EXEC to act as reaperd.
	cmd := exec.Command(sa, "-l", sock, "--fdname=reaperd.socket", "-E", "REAPERD_TEST_EXEC=1", "-E", "HOME",
		os.Args[0], "serve", "--ledger", filepath.Join(dir, "ledger.db"), "--socket", filepath.Join(dir, "unused.sock"))
	cmd.Env = daemonEnv()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("log:\n%s", log.String())
		}
	})
	eventually(t, 10*time.Second, "the socket to be created", func() bool {
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})
	// The first request starts the daemon, which answers it on the passed
	// socket.
	c := api.NewClient(sock)
	var st *api.Status
	eventually(t, 15*time.Second, "the daemon to answer on the passed socket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err = c.Status(ctx)
		return err == nil
	})
	if st.Socket != sock {
		t.Errorf("status socket = %q, want the passed %q", st.Socket, sock)
	}
	// The log reaches the buffer through a pipe: wait for it.
	eventually(t, 5*time.Second, "the log to say the socket was passed", func() bool {
		return strings.Contains(log.String(), "serving on the socket systemd passed")
	})
	if _, err := os.Stat(filepath.Join(dir, "unused.sock")); err == nil {
		t.Errorf("the daemon made a socket of its own beside the passed one")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the daemon did not stop")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the daemon removed the socket it was passed: %v", err)
	}
}
