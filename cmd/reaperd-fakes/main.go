// Command reaperd-fakes runs in-process fakes of the Daytona, E2B, Modal and
// Runloop APIs on loopback, for trying reaperd without cloud accounts. Each
// fake starts with a few sandboxes, so that discovery has something to find.
//
// With a command after its flags, it runs that command with the providers'
// environment variables pointing at the fakes, and stops when it exits:
//
//	go run ./cmd/reaperd-fakes go run ./cmd/reaperd serve
//
// Without one, it prints the variables (as shell exports) and serves until
// interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/reaperd/reaperd/providers/daytona/daytonatest"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/providers/modal/modaltest"
	"github.com/reaperd/reaperd/providers/runloop/runlooptest"
)

// Credentials the fakes accept. They are fakes' keys, not secrets.
const (
	fakeKey         = "fake-key-for-local-testing"
	fakeModalID     = "ak-fakelocal0000"
	fakeModalSecret = "as-fakelocal0000"
)

func main() {
	n := flag.Int("sandboxes", 2, "sandboxes each fake starts with")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: reaperd-fakes [-sandboxes N] [command [args...]]\n\n"+
			"Runs fake Daytona, E2B, Modal and Runloop APIs on loopback. With a command, runs it\n"+
			"with DAYTONA_*, E2B_*, MODAL_* and RUNLOOP_* pointing at the fakes.\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	d := daytonatest.NewServer(fakeKey)
	defer d.Close()
	e := e2btest.NewServer(fakeKey)
	defer e.Close()
	m := modaltest.NewServer(fakeModalID, fakeModalSecret)
	defer m.Close()
	r := runlooptest.NewServer(fakeKey)
	defer r.Close()

	env := map[string]string{
		"DAYTONA_API_KEY": fakeKey, "DAYTONA_API_URL": d.URL,
		"E2B_API_KEY": fakeKey, "E2B_API_URL": e.URL,
		"MODAL_TOKEN_ID": fakeModalID, "MODAL_TOKEN_SECRET": fakeModalSecret, "MODAL_SERVER_URL": m.URL,
		"RUNLOOP_API_KEY": fakeKey, "RUNLOOP_BASE_URL": r.URL,
	}
	created := time.Now().Add(-time.Hour)
	labels := map[string]string{"origin": "reaperd-fakes"}
	fmt.Fprintln(os.Stderr, "reaperd-fakes: sandboxes at the fakes:")
	for i := 0; i < *n; i++ {
		fmt.Fprintf(os.Stderr, "  daytona/%s\n  e2b/%s\n  modal/%s\n  runloop/%s\n",
			d.Create(labels, created), e.Create(labels, created), m.Create(labels, created), r.Create(labels, created))
	}

	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if flag.NArg() == 0 {
		for _, k := range keys {
			fmt.Printf("export %s=%s\n", k, env[k])
		}
		fmt.Fprintln(os.Stderr, "reaperd-fakes: serving until interrupted")
		<-ctx.Done()
		return
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = os.Environ()
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "reaperd-fakes: run %s: %v\n", strings.Join(flag.Args(), " "), err)
		os.Exit(1)
	}
	// Forward what systemd or a terminal would send the daemon: a stop
	// (SIGINT, SIGTERM) as SIGTERM, and SIGHUP (reload) as itself.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				_ = cmd.Process.Signal(syscall.SIGTERM)
				return
			case <-hup:
				_ = cmd.Process.Signal(syscall.SIGHUP)
			}
		}
	}()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		os.Exit(ee.ExitCode())
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "reaperd-fakes: %v\n", err)
		os.Exit(1)
	}
}
