// Command reaperd closes the cloud sandboxes that AI-agent sessions leave
// behind. `reaperd serve` runs the daemon; every other subcommand is a
// client that talks to it over its Unix socket.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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

	socket    string        // --socket
	url       string        // --url
	tokenFile string        // --token-file
	caFile    string        // --ca-file
	timeout   time.Duration // --timeout
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
	return exitCode(err)
}

// exitCode maps an error to the exit status the README promises: 2 for
// every usage or invalid-argument error, whether the CLI or the daemon
// caught it; 3 when no daemon answers; 1 otherwise, permission denied
// included (a daemon answered, and refused).
func exitCode(err error) int {
	var ue usageError
	var nr *api.NotRunningError
	switch {
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command "):
		return exitUsage
	case errors.As(err, &nr) && errors.Is(nr.Err, os.ErrPermission):
		return exitError // the socket is there; this user may not use it
	case errors.As(err, &nr):
		return exitNoDaemon
	}
	switch reaper.ErrorCode(err) {
	case reaper.EINVALID, reaper.EUNKNOWN, reaper.ETOOLARGE:
		return exitUsage
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
	root.PersistentFlags().StringVar(&m.url, "url", "", "daemon's TCP listener, https://host:port (default $REAPERD_URL; the socket when unset)")
	root.PersistentFlags().StringVar(&m.tokenFile, "token-file", "", "file holding the API token for --url (default $REAPERD_TOKEN)")
	root.PersistentFlags().DurationVar(&m.timeout, "timeout", 0, "bound each call to the daemon (default 30s; sweeps and discovery 10m)")
	root.PersistentFlags().StringVar(&m.caFile, "ca-file", "", "PEM CA certificate to trust for --url (default $REAPERD_CA_FILE, else the system's)")
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
		m.ledgerCommand(),
		m.versionCommand(),
		m.manCommand(),
	)
	return root
}

// client returns an API client for the socket chosen by --socket,
// REAPERD_SOCKET or the default.
// client returns the API client: over the TCP listener when a URL is given
// (--url or REAPERD_URL, with a token from --token-file or REAPERD_TOKEN),
// else over the Unix socket.
func (m *Main) client() *api.Client {
	if m.timeout < 0 {
		return &api.Client{Err: usagef("--timeout %s: must not be negative", m.timeout)}
	}
	u := firstNonEmpty(m.url, m.Getenv("REAPERD_URL"))
	if u == "" {
		c := api.NewClient(m.clientSocket())
		c.CallTimeout = m.timeout
		return c
	}
	c, err := m.remoteClient(u)
	if err != nil {
		return &api.Client{Err: usageError{err}}
	}
	c.CallTimeout = m.timeout
	return c
}

func (m *Main) remoteClient(u string) (*api.Client, error) {
	token := m.Getenv("REAPERD_TOKEN")
	if m.tokenFile != "" {
		b, err := os.ReadFile(m.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	var tlsConfig *tls.Config
	if ca := firstNonEmpty(m.caFile, m.Getenv("REAPERD_CA_FILE")); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", ca)
		}
		tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return api.NewRemoteClient(u, token, tlsConfig)
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
