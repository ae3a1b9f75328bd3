package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for reaperd-fakes.
func TestMain(m *testing.M) {
	if os.Getenv("REAPERD_FAKES_TEST_EXEC") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestForwardsSignalsAndExitStatus: the daemon run under the fakes gets
// SIGHUP (a reload) and SIGTERM (a stop), and the fakes runner exits with
// the daemon's status.
func TestForwardsSignalsAndExitStatus(t *testing.T) {
	script := `trap 'echo reloaded' HUP; trap 'echo stopping; exit 7' TERM; echo "E2B_API_URL=$E2B_API_URL"; while :; do sleep 0.05; done`
	cmd := exec.Command(os.Args[0], "-sandboxes", "0", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "REAPERD_FAKES_TEST_EXEC=1")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	wait := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in:\n%s", what, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("E2B_API_URL=http://127.0.0.1:")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait("reloaded")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 7 {
		t.Fatalf("exit = %v, want the daemon's status 7\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "stopping") {
		t.Fatalf("the daemon did not get SIGTERM:\n%s", out.String())
	}
}
