// Command reaperd closes the cloud sandboxes that AI-agent sessions leave
// behind. `reaperd serve` runs the daemon; every other subcommand is a
// client that talks to it over its Unix socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/reaper"
	"github.com/spf13/cobra"
)

// Build information, set with -ldflags "-X main.version=...".
var (
	version = "dev"
	commit  = ""
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1 // the operation failed
	exitUsage    = 2 // bad flags or arguments
	exitNoDaemon = 3 // no daemon answers on the socket
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(NewMain().Run(ctx, os.Args[1:]))
}

// Main is the reaperd program: its streams and environment, so tests can
// run it in-process.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string

	socket string // --socket
}

// NewMain returns a Main wired to the process's streams and environment.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// usageError marks errors in flags or arguments.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Run runs the command line args and returns the process exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	root := m.rootCommand()
	root.SetArgs(args)
	root.SetIn(m.Stdin)
	root.SetOut(m.Stdout)
	root.SetErr(m.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(m.Stderr, "reaperd: %s\n", oneLine(err))
	var ue usageError
	var nr *api.NotRunningError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &nr):
		return exitNoDaemon
	}
	return exitError
}

func oneLine(err error) string {
	msg := err.Error()
	for i, r := range msg {
		if r == '\n' {
			return msg[:i]
		}
	}
	return msg
}

func (m *Main) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "reaperd",
		Short: "Close the cloud sandboxes that AI-agent sessions leave behind",
		Long: `reaperd keeps a durable ledger of the cloud sandboxes (Daytona, E2B, Modal,
Runloop) that agent sessions create, and closes the ones that expire or whose
session dies, never touching those tagged keep or attached.

Run the daemon with 'reaperd serve'. The other subcommands talk to it over its
Unix socket (--socket, or REAPERD_SOCKET).`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see 'reaperd %s --help')", err, c.Name())}
	})
	root.PersistentFlags().StringVar(&m.socket, "socket", "", "daemon socket path (default $REAPERD_SOCKET, else the daemon's default)")
	root.AddCommand(
		m.serveCommand(),
		m.registerCommand(),
		m.heartbeatCommand(),
		m.releaseCommand(),
		m.endSessionCommand(),
		m.tagCommand(),
		m.listCommand(),
		m.sweepCommand(),
		m.auditCommand(),
		m.discoverCommand(),
		m.statusCommand(),
		m.versionCommand(),
	)
	return root
}

// client returns an API client for the socket chosen by --socket,
// REAPERD_SOCKET or the default.
func (m *Main) client() *api.Client {
	return api.NewClient(m.clientSocket())
}

// exactArgs is cobra.ExactArgs with a usage error naming what is missing.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			if n == 0 {
				return usagef("%s takes no arguments (got %q)", c.Name(), args)
			}
			return usagef("%s needs %s (see 'reaperd %s --help')", c.Name(), what, c.Name())
		}
		return nil
	}
}

// keyArg validates a PROVIDER/ID argument before it is sent.
func keyArg(key string) error {
	if _, _, err := reaper.ParseKey(key); err != nil {
		return usageError{err}
	}
	return nil
}
