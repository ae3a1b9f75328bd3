package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/reaper"
	"github.com/robfig/cron/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Log keys used by the daemon.
const (
	logLedger   = "ledger"
	logSocket   = "socket"
	logErr      = "err"
	logSchedule = "schedule"
	logEnabled  = "enabled"
	logDisabled = "disabled"
	logVersion  = "version"
	logPath     = "path"
)

type serveOptions struct {
	config   string
	ledger   string
	schedule string
	logLevel string
}

func (m *Main) serveCommand() *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon",
		Long: `Run the daemon: open the ledger, listen on the socket, close expired and
orphaned sandboxes at their deadlines and on the schedule, until SIGINT or
SIGTERM. SIGHUP reloads the config file (log level, schedule, providers, adoption rules).

Paths default to $STATE_DIRECTORY/ledger.db and $RUNTIME_DIRECTORY/reaperd.sock
(set by systemd), else /var/lib/reaperd/ledger.db and /run/reaperd/reaperd.sock
as root, else ./reaperd-data/ for other users.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			return m.serve(c.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.config, "config", "", "TOML config file (default $REAPERD_CONFIG; none if unset)")
	f.StringVar(&o.ledger, "ledger", "", "ledger file (default $STATE_DIRECTORY/ledger.db, /var/lib/reaperd/ledger.db as root, ./reaperd-data/ledger.db otherwise)")
	f.StringVar(&o.schedule, "schedule", "", `cron spec of full sweeps (default "@every 1m")`)
	f.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	completeFlag(c, "log-level", "debug", "info", "warn", "error")
	return c
}

// daemonState is what a reload may change.
type daemonState struct {
	tcp      *tcpListener // nil without [http] listen
	mu       sync.Mutex
	cfg      *Config
	schedule string
	cron     *cron.Cron
	enabled  []string
	disabled map[string]string
}

func (m *Main) loadConfig(o serveOptions) (*Config, string, error) {
	path := firstNonEmpty(o.config, m.Getenv("REAPERD_CONFIG"))
	if path == "" {
		return &Config{}, "", nil
	}
	c, err := LoadConfig(path)
	if err != nil {
		// A bad config is the operator's to fix: exit 2, which the unit's
		// RestartPreventExitStatus= does not restart.
		return nil, path, usageError{err}
	}
	return c, path, nil
}

func (m *Main) serve(ctx context.Context, o serveOptions) error {
	// SIGHUP is a reload from the start: its default action ends the
	// process, and a reload may come as soon as the socket exists
	// (`systemctl reload` right after a start). One that comes before the
	// daemon is ready is applied once it is.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	cfg, cfgPath, err := m.loadConfig(o)
	if err != nil {
		return err
	}
	if o.schedule != "" {
		cfg.Schedule = o.schedule
	}
	if o.logLevel != "" {
		cfg.LogLevel = o.logLevel
	}
	if err := cfg.validate(); err != nil {
		return usageError{err}
	}
	level := new(slog.LevelVar)
	lvl, _ := parseLevel(cfg.LogLevel)
	level.Set(lvl)
	logger := newLogger(m.Stderr, cfg.LogFormat, level)

	ledgerPath, socketPath, err := resolvePaths(cfg, o.ledger, m.socket, m.Getenv)
	if err != nil {
		return usageError{err}
	}
	provs, err := BuildProviders(cfg, m.Getenv)
	if err != nil {
		// A missing api_key_file, a bad endpoint: the configuration is
		// wrong, and restarting will not help (RestartPreventExitStatus=2).
		return usageError{err}
	}

	db, err := ledger.Open(ledgerPath, ledger.Options{})
	if err != nil {
		return err
	}
	defer db.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := engine.NewMetrics(reg)

	access := reaper.Access{Self: uint32(os.Getuid())}
	if cfg.AdminGroup != "" {
		gid, err := lookupGroup(cfg.AdminGroup)
		if err != nil {
			return usageError{fmt.Errorf("admin_group: %w", err)}
		}
		access.AdminGroups = []uint32{gid}
	}
	eng := &engine.Engine{
		Store:           db,
		Providers:       *provs,
		Logger:          logger,
		Metrics:         metrics,
		Access:          access,
		Concurrency:     cfg.Engine.Concurrency,
		QueueLimit:      cfg.Engine.QueueLimit,
		CloseTimeout:    time.Duration(cfg.Engine.CloseTimeout),
		ListTimeout:     time.Duration(cfg.Engine.ListTimeout),
		MinBackoff:      time.Duration(cfg.Engine.MinBackoff),
		MaxBackoff:      time.Duration(cfg.Engine.MaxBackoff),
		ShutdownGrace:   time.Duration(cfg.Engine.ShutdownGrace),
		ProcessCheck:    time.Duration(cfg.Engine.ProcessCheck),
		DefaultTTL:      time.Duration(cfg.DefaultTTL),
		Retention:       retentionOf(cfg),
		DiscoverOnSweep: cfg.Discover == nil || *cfg.Discover,
	}

	if err := applyAdoption(eng, cfg, logger); err != nil {
		return usageError{err}
	}
	if err := applyPricing(eng, cfg, logger); err != nil {
		return usageError{err}
	}

	reg.MustRegister(eng.Collector())
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reaperd_build_info",
		Help: "Always 1; the labels say which build runs."}, []string{"version", "commit", "goversion"})
	buildInfo.WithLabelValues(version, buildCommit(), runtime.Version()).Set(1)
	reg.MustRegister(buildInfo)

	ln, inherited, err := apiListener(socketPath, cfg.SocketGroup)
	if err != nil {
		return err
	}
	if inherited {
		// systemd owns the socket file (reaperd.socket): it stays, so that
		// connections during a restart queue up instead of failing.
		socketPath = ln.Addr().String()
		logger.Info("serving on the socket systemd passed", logSocket, socketPath)
	} else {
		defer os.Remove(socketPath)
	}

	// alive reports whether the ledger answers reads: the watchdog's check.
	// A ledger that cannot be written (a full disk) is alive: the daemon
	// backs off and recovers in place, and a restart would not help.
	alive := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return db.View(ctx, func(reaper.Tx) error { return nil })
	}
	st := &daemonState{cfg: cfg}
	startedAt := time.Now().UTC()
	srv := &api.Server{
		Service: eng,
		Ledger:  db,
		Access:  access,
		Logger:  logger,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Status: func() api.Status {
			st.mu.Lock()
			defer st.mu.Unlock()
			return api.Status{Version: versionString(), Ledger: ledgerPath, Socket: socketPath, Schedule: st.schedule,
				Enabled: st.enabled, Disabled: st.disabled, StartedAt: startedAt}
		},
		Ready: func() error {
			if err := alive(); err != nil {
				return err
			}
			return eng.Health()
		},
	}
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		ConnContext:       api.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	m.applyProviders(st, eng, provs, logger)
	if err := m.applySchedule(st, eng, cfg.Schedule, logger); err != nil {
		return err
	}
	logger.Info("reaperd started", logVersion, versionString(), logLedger, ledgerPath, logSocket, socketPath,
		logSchedule, st.schedule, "config", firstNonEmpty(cfgPath, "(none)"))

	engCtx, stopEngine := context.WithCancel(context.Background())
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(engCtx) }()
	srvDone := make(chan error, 1)
	go func() { srvDone <- httpSrv.Serve(ln) }()
	tcp, err := startTCP(cfg.HTTP, srv, logger)
	if err != nil {
		_ = httpSrv.Close()
		stopEngine()
		<-engDone
		return err
	}
	st.tcp = tcp
	var tcpDone chan error
	if tcp != nil {
		tcpDone = tcp.done
	}

	// Ready once the engine has prepared the ledger (lease grace, resumed
	// closes): until then nothing would be reaped. The API answers already.
	select {
	case <-eng.Started():
		_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	case <-ctx.Done():
	case <-eng.Stopped():
	}
	stopWatchdog := startWatchdog(logger, alive)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping: finishing in-flight closes")
			break loop
		case <-hup:
			m.reload(st, eng, o, logger, level)
		case err := <-engDone:
			runErr = fmt.Errorf("engine stopped: %w", err)
			break loop
		case err := <-srvDone:
			runErr = fmt.Errorf("serve API: %w", err)
			break loop
		case err := <-tcpDone:
			runErr = fmt.Errorf("serve API over TCP: %w", err)
			break loop
		}
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	stopWatchdog()
	st.mu.Lock()
	if st.cron != nil {
		<-st.cron.Stop().Done()
	}
	st.mu.Unlock()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = httpSrv.Shutdown(shutCtx)
	if tcp != nil {
		_ = tcp.srv.Shutdown(shutCtx)
	}
	cancel()
	stopEngine()
	if err := <-engDone; err != nil && runErr == nil {
		runErr = err
	}
	if err := db.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close ledger: %w", err)
	}
	logger.Info("reaperd stopped")
	return runErr
}

func retentionOf(c *Config) time.Duration {
	if c.Retention == nil {
		return 0 // engine default
	}
	if *c.Retention == 0 {
		return -1 // keep forever
	}
	return time.Duration(*c.Retention)
}

func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// applyProviders installs a provider set and logs which are enabled. The
// engine shuts the providers it replaces down once their calls end.
func (m *Main) applyProviders(st *daemonState, eng *engine.Engine, provs *engine.ProviderSet, logger *slog.Logger) {
	eng.SetProviders(*provs)
	enabled := eng.EnabledProviders()
	st.mu.Lock()
	st.enabled, st.disabled = enabled, provs.Disabled
	st.mu.Unlock()
	if len(enabled) == 0 {
		logger.Warn("no provider is enabled: reaperd records registrations but can close nothing; set DAYTONA_API_KEY, E2B_API_KEY, MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or RUNLOOP_API_KEY")
	} else {
		logger.Info("providers enabled", logEnabled, enabled)
	}
	for _, name := range slices.Sorted(maps.Keys(provs.Disabled)) {
		logger.Info("provider disabled", "provider", name, "why", provs.Disabled[name])
	}
}

// applySchedule (re)starts the cron schedule of full sweeps. The job only
// asks the engine for a sweep: sweeps run on the engine's goroutine, never
// overlap, and a panic in one is recovered there. cron.Recover guards the
// job itself; SkipIfStillRunning is not used (it leaks its token when a job
// panics in cron v3.0.1), TriggerSweep's own flag skips instead.
func (m *Main) applySchedule(st *daemonState, eng *engine.Engine, spec string, logger *slog.Logger) error {
	if spec == "" {
		spec = DefaultSchedule
	}
	sched, err := parseSchedule(spec)
	if err != nil {
		return usageError{err}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cron != nil && st.schedule == spec {
		return nil
	}
	c := cron.New(cron.WithChain(cron.Recover(cronLogger{logger})), cron.WithLogger(cronLogger{logger}))
	c.Schedule(sched, cron.FuncJob(func() {
		if !eng.TriggerSweep() {
			logger.Warn("scheduled sweep skipped: the previous one is still running")
		}
	}))
	if st.cron != nil {
		st.cron.Stop()
	}
	c.Start()
	st.cron, st.schedule = c, spec
	return nil
}

// cronLogger adapts slog to cron.Logger.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, logErr, err)...)
}

// reload re-reads the config file and applies what can change without a
// restart. A config with errors is rejected whole, and the daemon keeps
// running on the previous one.
func (m *Main) reload(st *daemonState, eng *engine.Engine, o serveOptions, logger *slog.Logger, level *slog.LevelVar) {
	_, _ = daemon.SdNotify(false, reloadingNotice())
	defer daemon.SdNotify(false, daemon.SdNotifyReady)
	cfg, path, err := m.loadConfig(o)
	if err == nil {
		if o.schedule != "" {
			cfg.Schedule = o.schedule
		}
		if o.logLevel != "" {
			cfg.LogLevel = o.logLevel
		}
		err = cfg.validate()
	}
	var provs *engine.ProviderSet
	if err == nil {
		provs, err = BuildProviders(cfg, m.Getenv)
	}
	if err == nil && st.tcp != nil && cfg.HTTP.Listen != "" {
		err = st.tcp.load(cfg.HTTP) // tokens and certificate are read again
	}
	if err == nil {
		err = applyAdoption(eng, cfg, logger)
	}
	if err == nil {
		err = applyPricing(eng, cfg, logger)
	}
	if err != nil {
		logger.Error("reload rejected; still running on the previous configuration", logErr, err)
		return
	}
	st.mu.Lock()
	old := st.cfg
	st.mu.Unlock()
	if changed := restartOnly(old, cfg); len(changed) > 0 {
		logger.Warn("these settings change only at restart; still running on their old values", "settings", changed)
	}
	if err := m.applySchedule(st, eng, cfg.Schedule, logger); err != nil {
		logger.Error("reload: schedule", logErr, err)
		return
	}
	lvl, _ := parseLevel(cfg.LogLevel)
	level.Set(lvl)
	m.applyProviders(st, eng, provs, logger)
	st.mu.Lock()
	st.cfg = cfg
	st.mu.Unlock()
	logger.Info("configuration reloaded", "config", firstNonEmpty(path, "(none)"), logSchedule, st.schedule)
}

// apiListener returns the API's Unix socket listener: the one systemd
// passed (socket activation, reaperd.socket), if any, else a socket of its
// own at path. inherited says which; an inherited socket is never
// unlinked.
func apiListener(path, group string) (ln net.Listener, inherited bool, err error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, false, fmt.Errorf("take the sockets systemd passed: %w", err)
	}
	for _, l := range lns {
		if ul, ok := l.(*net.UnixListener); ok && ln == nil {
			ul.SetUnlinkOnClose(false)
			ln = ul
			continue
		}
		if l != nil {
			l.Close()
		}
	}
	if ln != nil {
		return ln, true, nil
	}
	if len(lns) > 0 {
		return nil, false, errors.New("take the sockets systemd passed: none is a Unix stream socket (check ListenStream= in reaperd.socket)")
	}
	ln, err = listenSocket(path, group)
	return ln, false, err
}

// listenSocket listens on a Unix socket with mode 0660, replacing a stale
// socket file but refusing to steal one a live daemon answers on.
func listenSocket(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket; remove it or choose another --socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another reaperd is serving on this socket; stop it or choose another --socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	// Create the socket with no access for others from the first instant.
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket_group %q: %w", group, err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("give socket to group %s: %w", group, err)
		}
	}
	return ln, nil
}

// startWatchdog pings systemd's watchdog while the ledger answers. It
// returns a function that stops it.
func startWatchdog(logger *slog.Logger, ready func() error) func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := ready(); err != nil {
					logger.Error("watchdog: ledger not answering; not pinging systemd", logErr, err)
					continue
				}
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// restartOnly lists the settings that differ between two configs but that
// a reload cannot apply.
func restartOnly(old, cfg *Config) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("ledger", old.Ledger != cfg.Ledger)
	add("socket", old.Socket != cfg.Socket)
	add("socket_group", old.SocketGroup != cfg.SocketGroup)
	add("admin_group", old.AdminGroup != cfg.AdminGroup)
	add("log_format", old.LogFormat != cfg.LogFormat)
	add("retention", retentionOf(old) != retentionOf(cfg))
	add("default_ttl", old.DefaultTTL != cfg.DefaultTTL)
	add("discover", (old.Discover == nil || *old.Discover) != (cfg.Discover == nil || *cfg.Discover))
	add("http.listen", old.HTTP.Listen != cfg.HTTP.Listen || (old.HTTP.TLSCertFile == "") != (cfg.HTTP.TLSCertFile == ""))
	add("engine", old.Engine != cfg.Engine)
	return out
}

// reloadingNotice is the sd_notify message that starts a reload. systemd
// 253+ wants the monotonic time with it (Type=notify-reload).
func reloadingNotice() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return daemon.SdNotifyReloading
	}
	return daemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}
