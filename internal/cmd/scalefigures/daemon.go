package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A reaperd serve process on its own ledger and socket, in front of the
// E2B fake, with a NOTIFY_SOCKET of ours to learn when it is ready.

const (
	// fakeKey is the API key the E2B fake accepts. It is a fake's key.
	fakeKey = "scalefigures-fake-e2b-key"
	// startTimeout bounds a start-up; stopTimeout a graceful stop, after
	// which the daemon is killed.
	startTimeout = 5 * time.Minute
	stopTimeout  = 30 * time.Second
	// maxSocketPath is what sun_path holds, less the NUL.
	maxSocketPath = 107
)

// daemon is one reaperd serve, started and stopped as many times as
// needed on the same ledger.
type daemon struct {
	bin, dir                          string
	sock, ledger, config, logPath     string
	env                               []string
	notifyConn                        *net.UnixConn
	notes                             chan notice
	http                              *http.Client
	cmd                               *exec.Cmd
	done                              chan struct{} // closed when cmd has exited
	waitErr                           error
	logFile                           *os.File
	startedAt, readyAt, firstAnswerAt time.Time
}

// notice is one sd_notify datagram and when it arrived.
type notice struct {
	text string
	at   time.Time
}

// newDaemon prepares a daemon in dir whose E2B provider is the fake at
// fakeURL: its config file (discovery off), its environment, and the
// NOTIFY_SOCKET it reports to.
func newDaemon(bin, dir, fakeURL string) (*daemon, error) {
	d := &daemon{bin: bin, dir: dir,
		sock:    filepath.Join(dir, "reaperd.sock"),
		ledger:  filepath.Join(dir, "ledger.db"),
		config:  filepath.Join(dir, "reaperd.toml"),
		logPath: filepath.Join(dir, "reaperd.log"),
		notes:   make(chan notice, 64),
	}
	if len(d.sock) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes long; Unix sockets allow %d: choose a shorter -dir", d.sock, len(d.sock), maxSocketPath)
	}
	// Discovery off: the fake has no untracked sandboxes, and full sweeps
	// should only look for due entries. The rest is the production default:
	// the ledger is fsync'd at every commit, sweeps run every minute.
	cfg := "# written by scalefigures\ndiscover = false\nlog_level = \"info\"\n"
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write the daemon's config: %w", err)
	}
	notifyPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("listen for sd_notify on %s: %w", notifyPath, err)
	}
	d.notifyConn = conn
	go d.readNotices()

	// The caller's environment, less anything that would point the daemon
	// at other providers, another socket or ledger, or systemd.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "REAPERD_"), strings.HasPrefix(name, "DAYTONA_"), strings.HasPrefix(name, "E2B_"),
			strings.HasPrefix(name, "MODAL_"), strings.HasPrefix(name, "RUNLOOP_"), strings.HasPrefix(name, "LISTEN_"),
			strings.HasPrefix(name, "WATCHDOG_"), name == "NOTIFY_SOCKET", name == "STATE_DIRECTORY",
			name == "RUNTIME_DIRECTORY", name == "CREDENTIALS_DIRECTORY", name == "INVOCATION_ID":
			continue
		}
		d.env = append(d.env, kv)
	}
	d.env = append(d.env, "E2B_API_KEY="+fakeKey, "E2B_API_URL="+fakeURL, "NOTIFY_SOCKET="+notifyPath)

	d.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.sock)
		},
		MaxIdleConnsPerHost: 4,
	}}
	return d, nil
}

func (d *daemon) readNotices() {
	buf := make([]byte, 4096)
	for {
		n, err := d.notifyConn.Read(buf)
		if err != nil {
			return // closed
		}
		select {
		case d.notes <- notice{text: string(buf[:n]), at: time.Now()}:
		default: // nobody waits for it
		}
	}
}

// pid is the running daemon's process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// running reports whether the daemon process is alive.
func (d *daemon) running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// start starts reaperd serve and waits until it sends READY=1. It returns
// the time from the start of the process to READY=1, and to its first
// 200 answer to GET /healthz on the socket (polled every 5 ms meanwhile).
func (d *daemon) start(ctx context.Context) (ready, answer time.Duration, err error) {
	if d.running() {
		return 0, 0, errors.New("start reaperd: it is already running")
	}
	if d.logFile == nil {
		if d.logFile, err = os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return 0, 0, fmt.Errorf("open the daemon's log: %w", err)
		}
	}
	cmd := exec.Command(d.bin, "--socket", d.sock, "serve", "--ledger", d.ledger, "--config", d.config)
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = d.logFile, d.logFile
	// Its own process group, so that a Ctrl-C reaches this program only,
	// which then stops the daemon; and SIGTERM if this program dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	for drained := false; !drained; {
		select {
		case <-d.notes:
		default:
			drained = true
		}
	}
	d.startedAt = time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start %s serve: %w", d.bin, err)
	}
	d.cmd, d.done, d.waitErr = cmd, make(chan struct{}), nil
	done := d.done
	go func() {
		d.waitErr = cmd.Wait()
		close(done)
	}()

	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	answered := make(chan time.Time, 1)
	go func() {
		for pollCtx.Err() == nil {
			rctx, cancel := context.WithTimeout(pollCtx, time.Second)
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://reaperd/healthz", nil)
			resp, err := d.http.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					cancel()
					answered <- time.Now()
					return
				}
			}
			cancel()
			select {
			case <-pollCtx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	d.readyAt = time.Time{}
	for d.readyAt.IsZero() {
		select {
		case n := <-d.notes:
			for _, line := range strings.Split(n.text, "\n") {
				if line == "READY=1" {
					d.readyAt = n.at
				}
			}
		case <-done:
			return 0, 0, fmt.Errorf("reaperd exited before it was ready (%v)%s", d.waitErr, d.logTail())
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-timeout.C:
			return 0, 0, fmt.Errorf("reaperd sent no READY=1 within %s of its start%s", startTimeout, d.logTail())
		}
	}
	select {
	case d.firstAnswerAt = <-answered:
	case <-done:
		return 0, 0, fmt.Errorf("reaperd exited after it was ready (%v)%s", d.waitErr, d.logTail())
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-timeout.C:
		return 0, 0, fmt.Errorf("reaperd was ready, but GET /healthz on %s did not answer 200 within %s%s", d.sock, startTimeout, d.logTail())
	}
	return d.readyAt.Sub(d.startedAt), d.firstAnswerAt.Sub(d.startedAt), nil
}

// stop sends SIGTERM and waits for the daemon to exit (SIGKILL after
// stopTimeout). It returns how long the graceful stop took; a daemon that
// had to be killed, or that exited with an error, is an error.
func (d *daemon) stop() (time.Duration, error) {
	if !d.running() {
		return 0, nil
	}
	t0 := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("stop reaperd: %w", err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		return 0, fmt.Errorf("reaperd did not stop within %s of SIGTERM; killed it%s", stopTimeout, d.logTail())
	}
	took := time.Since(t0)
	if d.waitErr != nil {
		return took, fmt.Errorf("reaperd exited with %v after SIGTERM%s", d.waitErr, d.logTail())
	}
	return took, nil
}

// close stops the daemon if it runs and releases what newDaemon took.
func (d *daemon) close() error {
	_, err := d.stop()
	d.notifyConn.Close()
	if d.logFile != nil {
		d.logFile.Close()
	}
	d.http.CloseIdleConnections()
	return err
}

// logTail returns the end of the daemon's log, to append to an error.
func (d *daemon) logTail() string {
	data, err := os.ReadFile(d.logPath)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	lines = lines[max(0, len(lines)-12):]
	return "\nthe end of its log (" + d.logPath + "):\n  " + strings.Join(lines, "\n  ")
}

// alive returns an error naming the daemon's exit if it is no longer
// running, to explain a failed call.
func (d *daemon) alive() error {
	if d.running() {
		return nil
	}
	return fmt.Errorf("reaperd is no longer running (%v)%s", d.waitErr, d.logTail())
}

// get sends GET path over the socket and decodes a 200 answer's JSON into
// out (or discards it when out is nil). It returns the time to the last
// byte of the body.
func (d *daemon) get(ctx context.Context, path string, out any) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://reaperd"+path, nil)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, errors.Join(err, d.alive()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("GET %s: read the answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return 0, fmt.Errorf("GET %s: decode the answer: %w", path, err)
		}
	}
	return took, nil
}

// metric returns one sample of GET /metrics, by its name (a metric without
// labels).
func (d *daemon) metric(ctx context.Context, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://reaperd/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return 0, fmt.Errorf("GET /metrics: %s: %w", name, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("GET /metrics has no %s", name)
}
