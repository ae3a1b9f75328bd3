package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
	"github.com/robfig/cron/v3"
)

// Default paths and settings.
const (
	DefaultSchedule  = "@every 1m"
	systemLedgerPath = "/var/lib/reaperd/ledger.db"
	systemSocketPath = "/run/reaperd/reaperd.sock"
	localDataDir     = "reaperd-data"
	ledgerFileName   = "ledger.db"
	socketFileName   = "reaperd.sock"
	maxSocketPathLen = 107 // sun_path holds 108 bytes with the NUL
)

// Config is the daemon's configuration file (TOML). Every field is
// optional; see the README for the defaults.
type Config struct {
	// Ledger is the ledger file. Empty means $STATE_DIRECTORY/ledger.db,
	// else /var/lib/reaperd/ledger.db as root and ./reaperd-data/ledger.db
	// otherwise.
	Ledger string `toml:"ledger"`
	// Socket is the API socket. Empty means $RUNTIME_DIRECTORY/reaperd.sock,
	// else /run/reaperd/reaperd.sock as root and ./reaperd-data/reaperd.sock
	// otherwise.
	Socket string `toml:"socket"`
	// SocketGroup, when set, is the group given the socket (mode 0660), so
	// that its members may use the CLI.
	SocketGroup string `toml:"socket_group"`
	// AdminGroup, when set (a group name or a numeric gid), is the group
	// whose members may change any user's entries and sessions. Empty
	// means only their owners, root and the daemon's own user may.
	AdminGroup string `toml:"admin_group"`
	// Schedule is the cron spec of full sweeps. Empty means "@every 1m".
	Schedule string `toml:"schedule"`
	// Retention is how long closed and released entries and audit events
	// are kept. Empty means 30 days; "0" keeps them forever.
	Retention *Duration `toml:"retention"`
	// DefaultTTL applies to registrations with neither ttl nor session.
	// Empty means such registrations are refused.
	DefaultTTL Duration `toml:"default_ttl"`
	// Discover makes full sweeps list every provider's sandboxes and record
	// those nobody registered. Empty means true.
	Discover *bool `toml:"discover"`
	// LogLevel is debug, info, warn or error. Empty means info.
	LogLevel string `toml:"log_level"`
	// LogFormat is text or json. Empty means text.
	LogFormat string `toml:"log_format"`

	// AdoptGrace is how young an untracked sandbox may be and still be
	// left alone by every adoption rule. Empty means 10m.
	AdoptGrace Duration `toml:"adopt_grace"`
	// Adopt are the adoption rules, tried in order.
	Adopt []AdoptConfig `toml:"adopt"`

	// Prices replace, per provider, the list prices reaperd ships for
	// cost reports; PriceOverrides price the sandboxes whose labels match
	// otherwise. Report holds the report's other settings.
	Prices         map[string]PriceConfig `toml:"prices"`
	PriceOverrides []PriceOverrideConfig  `toml:"price_override"`
	Report         ReportConfig           `toml:"report"`

	HTTP      HTTPConfig                `toml:"http"`
	Engine    EngineConfig              `toml:"engine"`
	Providers map[string]ProviderConfig `toml:"providers"`
}

// HTTPConfig is the optional TCP listener.
type HTTPConfig struct {
	// Listen is host:port; empty means no TCP listener.
	Listen string `toml:"listen"`
	// TokenFile holds the API tokens, one per line ("name:token" or a
	// bare token). Empty means the listener serves /metrics and /healthz
	// only.
	TokenFile string `toml:"token_file"`
	// TLSCertFile and TLSKeyFile serve HTTPS. Required when Listen is not
	// a loopback address.
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
}

// validate checks the listener's settings (not its files, which serve
// reads).
func (h HTTPConfig) validate() error {
	if h.Listen == "" {
		if h.TokenFile != "" || h.TLSCertFile != "" || h.TLSKeyFile != "" {
			return errors.New("[http]: token_file and tls_* need listen")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(h.Listen)
	if err != nil {
		return fmt.Errorf("[http] listen %q: %v: use host:port, e.g. \"127.0.0.1:9810\"", h.Listen, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("[http] listen %q: port %q is not a number from 0 to 65535", h.Listen, port)
	}
	if (h.TLSCertFile == "") != (h.TLSKeyFile == "") {
		return errors.New("[http]: give both tls_cert_file and tls_key_file, or neither")
	}
	if h.TLSCertFile == "" && !loopback(host) {
		return fmt.Errorf("[http] listen %q is not a loopback address: set tls_cert_file and tls_key_file (tokens never travel in clear off this host)", h.Listen)
	}
	return nil
}

// loopback reports whether host names only this host.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// EngineConfig tunes the engine. Zero values take the engine's defaults.
type EngineConfig struct {
	Concurrency   int      `toml:"concurrency"`
	QueueLimit    int      `toml:"queue_limit"`
	CloseTimeout  Duration `toml:"close_timeout"`
	ListTimeout   Duration `toml:"list_timeout"`
	MinBackoff    Duration `toml:"min_backoff"`
	MaxBackoff    Duration `toml:"max_backoff"`
	ShutdownGrace Duration `toml:"shutdown_grace"`
	ProcessCheck  Duration `toml:"process_check"`
}

// ProviderConfig overrides one provider's environment. A field left empty
// takes the provider's environment variable.
type ProviderConfig struct {
	// Enabled false turns the provider off even with credentials.
	Enabled *bool `toml:"enabled"`
	// APIKey (daytona, e2b, runloop). Prefer APIKeyFile or the
	// environment: a key in the config file is readable by whoever can
	// read the file.
	APIKey     string `toml:"api_key"`
	APIKeyFile string `toml:"api_key_file"`
	// APIURL is the endpoint (daytona, e2b: API URL; runloop: base URL;
	// modal: server URL).
	APIURL string `toml:"api_url"`
	// TokenID and TokenSecret (modal).
	TokenID         string `toml:"token_id"`
	TokenSecret     string `toml:"token_secret"`
	TokenSecretFile string `toml:"token_secret_file"`
	// Environment is the Modal environment.
	Environment string `toml:"environment"`
	// Environments are more Modal environments whose sandboxes are listed
	// (modal only). Empty means only Environment, or the token's default.
	Environments []string `toml:"environments"`
	// Timeout bounds each request. Empty means 30s.
	Timeout Duration `toml:"timeout"`
	// Rate caps close calls per second (burst the same). Zero means the
	// provider's default, set from its documented rate limits (see the
	// README); negative means no limit.
	Rate float64 `toml:"rate"`
	// Concurrency is the number of close calls in flight at once. Zero
	// means [engine] concurrency when set, else the provider's default.
	Concurrency int `toml:"concurrency"`
	// ForceAfter (runloop) is the number of close attempts before a
	// forced shutdown.
	ForceAfter int `toml:"force_after"`
}

// Duration is a duration in a config file, written as a string ("30m").
type Duration time.Duration

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	if string(b) == "0" {
		*d = 0
		return nil
	}
	v, err := reaper.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads a TOML config file strictly: unknown keys are errors.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses and validates config file contents; path is for
// messages.
func ParseConfig(path string, data []byte) (*Config, error) {
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var de *toml.DecodeError
		var sm *toml.StrictMissingError
		switch {
		case errors.As(err, &de):
			row, col := de.Position()
			return nil, fmt.Errorf("config %s:%d:%d: %s", path, row, col, de.Error())
		case errors.As(err, &sm):
			var keys []string
			for _, e := range sm.Errors {
				row, _ := e.Position()
				keys = append(keys, fmt.Sprintf("%q (line %d)", strings.Join(e.Key(), "."), row))
			}
			return nil, fmt.Errorf("config %s: unknown key %s: see the README's configuration section", path, strings.Join(keys, ", "))
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if c.Schedule != "" {
		if _, err := parseSchedule(c.Schedule); err != nil {
			return err
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		return fmt.Errorf("log_format %q: use text or json", c.LogFormat)
	}
	if c.Engine.Concurrency < 0 {
		return fmt.Errorf("engine.concurrency %d: must be zero (default) or more", c.Engine.Concurrency)
	}
	if c.Engine.QueueLimit < 0 {
		return fmt.Errorf("engine.queue_limit %d: must be zero (default) or more", c.Engine.QueueLimit)
	}
	if c.Engine.MinBackoff > 0 && c.Engine.MaxBackoff > 0 && c.Engine.MinBackoff > c.Engine.MaxBackoff {
		return fmt.Errorf("engine.min_backoff %s is longer than engine.max_backoff %s", time.Duration(c.Engine.MinBackoff), time.Duration(c.Engine.MaxBackoff))
	}
	if err := c.HTTP.validate(); err != nil {
		return err
	}
	if c.AdoptGrace < 0 {
		return fmt.Errorf("adopt_grace %s: must not be negative", time.Duration(c.AdoptGrace))
	}
	if _, err := c.adoptRules(); err != nil {
		return err
	}
	if _, err := c.pricing(); err != nil {
		return err
	}
	if c.AdminGroup != "" {
		if _, err := lookupGroup(c.AdminGroup); err != nil {
			return fmt.Errorf("admin_group: %w", err)
		}
	}
	for name, p := range c.Providers {
		kind, ok := providerKindOf(name)
		if !ok {
			return fmt.Errorf("[providers.%s]: unknown provider: use one of %s", name, strings.Join(providerNames, ", "))
		}
		for _, key := range p.setKeys() {
			if !slices.Contains(kind.keys, key) {
				var owners []string
				for _, k := range providerKinds {
					if slices.Contains(k.keys, key) {
						owners = append(owners, k.name)
					}
				}
				return fmt.Errorf("[providers.%s]: %s is for %s only; %s takes %s (and enabled, api_url, timeout, rate, concurrency)",
					name, key, strings.Join(owners, ", "), name, strings.Join(kind.keys, ", "))
			}
		}
		if p.Concurrency < 0 || p.Concurrency > 1024 {
			return fmt.Errorf("[providers.%s] concurrency %d: use a number of close calls in flight from 1 to 1024, or 0 for the default", name, p.Concurrency)
		}
		if p.APIKey != "" && p.APIKeyFile != "" {
			return fmt.Errorf("[providers.%s]: give api_key or api_key_file, not both", name)
		}
		if p.TokenSecret != "" && p.TokenSecretFile != "" {
			return fmt.Errorf("[providers.%s]: give token_secret or token_secret_file, not both", name)
		}
		for _, env := range p.Environments {
			if strings.TrimSpace(env) == "" {
				return fmt.Errorf("[providers.%s]: environments holds an empty name", name)
			}
		}
	}
	return nil
}

// lookupGroup resolves a group name, or a numeric gid, to a gid.
func lookupGroup(name string) (uint32, error) {
	if gid, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(gid), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w: create it, or give a numeric gid", name, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has gid %q, which is not a number", name, g.Gid)
	}
	return uint32(gid), nil
}

func parseSchedule(spec string) (cron.Schedule, error) {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v: use a 5-field cron spec such as \"*/5 * * * *\" or \"@every 1m\"", spec, err)
	}
	if every, ok := strings.CutPrefix(strings.TrimSpace(spec), "@every "); ok {
		// cron rounds a shorter delay up to a second without a word.
		if d, err := time.ParseDuration(strings.TrimSpace(every)); err == nil && d < time.Second {
			return nil, fmt.Errorf("schedule %q: sweeps at most once a second: use \"@every 1s\" or longer (deadlines do not wait for sweeps)", spec)
		}
	}
	return s, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// getenvFunc returns a lookup that reads the environment and falls back to
// systemd credentials: a file named like the variable in
// $CREDENTIALS_DIRECTORY (LoadCredential=DAYTONA_API_KEY:/etc/...).
func getenvFunc(getenv func(string) string) func(string) string {
	return func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		dir := getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return ""
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
}

func readSecretFile(provider, field, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("[providers.%s] %s: %w", provider, field, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("[providers.%s] %s: %s is empty", provider, field, path)
	}
	return v, nil
}

// BuildProviders builds every provider from its environment variables,
// overridden by the config file. A provider without credentials is
// disabled; one with credentials that fail validation is an error.
func BuildProviders(c *Config, getenv func(string) string) (*engine.ProviderSet, error) {
	env := getenvFunc(getenv)
	set := &engine.ProviderSet{Enabled: map[string]reaper.Provider{}, Disabled: map[string]string{}, Rates: map[string]float64{},
		Concurrency: map[string]int{}}
	for _, kind := range providerKinds {
		name := kind.name
		pc := c.Providers[name]
		if pc.Enabled != nil && !*pc.Enabled {
			set.Disabled[name] = fmt.Sprintf("it is turned off by enabled = false in [providers.%s]", name)
			continue
		}
		secret, token := pc.APIKey, pc.TokenSecret
		var err error
		if pc.APIKeyFile != "" {
			if secret, err = readSecretFile(name, "api_key_file", pc.APIKeyFile); err != nil {
				return nil, err
			}
		}
		if pc.TokenSecretFile != "" {
			if token, err = readSecretFile(name, "token_secret_file", pc.TokenSecretFile); err != nil {
				return nil, err
			}
		}
		p, err := kind.build(pc, secret, token, env)
		if err != nil {
			return nil, fmt.Errorf("configure provider %s: %w", name, err)
		}
		if p == nil {
			set.Disabled[name] = "no credentials: " + kind.credentials
			continue
		}
		set.Enabled[name] = p
		r := pc.Rate
		if r == 0 {
			r = kind.rate
		}
		if r > 0 {
			set.Rates[name] = r
		}
		switch {
		case pc.Concurrency > 0:
			set.Concurrency[name] = pc.Concurrency
		case c.Engine.Concurrency > 0:
			set.Concurrency[name] = c.Engine.Concurrency
		default:
			set.Concurrency[name] = kind.concurrency
		}
	}
	return set, nil
}

// resolvePaths picks the ledger and socket paths: flags, then the config
// file, then the systemd directories, then the defaults.
func resolvePaths(c *Config, ledgerFlag, socketFlag string, getenv func(string) string) (ledger, socket string, err error) {
	ledger = firstNonEmpty(ledgerFlag, c.Ledger)
	if ledger == "" {
		if dir := getenv("STATE_DIRECTORY"); dir != "" {
			ledger = filepath.Join(firstPath(dir), ledgerFileName)
		} else if systemPaths(getenv) {
			ledger = systemLedgerPath
		} else {
			ledger = filepath.Join(localDataDir, ledgerFileName)
		}
	}
	socket = firstNonEmpty(socketFlag, getenv("REAPERD_SOCKET"), c.Socket)
	if socket == "" {
		switch dir := getenv("RUNTIME_DIRECTORY"); {
		case dir != "":
			socket = filepath.Join(firstPath(dir), socketFileName)
		case systemPaths(getenv):
			socket = systemSocketPath
		default:
			socket = filepath.Join(localDataDir, socketFileName)
		}
	}
	if ledger, err = filepath.Abs(ledger); err != nil {
		return "", "", fmt.Errorf("resolve ledger path: %w", err)
	}
	if socket, err = filepath.Abs(socket); err != nil {
		return "", "", fmt.Errorf("resolve socket path: %w", err)
	}
	if len(socket) > maxSocketPathLen {
		return "", "", fmt.Errorf("socket path %s is %d bytes long; Unix sockets allow %d: choose a shorter --socket", socket, len(socket), maxSocketPathLen)
	}
	return ledger, socket, nil
}

// systemPaths reports whether the daemon uses the system's paths
// (/var/lib/reaperd, /run/reaperd) by default: as root under systemd, which
// sets INVOCATION_ID for every unit it starts. Root trying reaperd by hand
// gets ./reaperd-data like anyone else, unless it passes --ledger.
func systemPaths(getenv func(string) string) bool {
	return os.Geteuid() == 0 && getenv("INVOCATION_ID") != ""
}

// defaultSocket is the socket path when none is configured.
func defaultSocket(getenv func(string) string) string {
	if dir := getenv("RUNTIME_DIRECTORY"); dir != "" {
		return filepath.Join(firstPath(dir), socketFileName)
	}
	if os.Geteuid() == 0 {
		return systemSocketPath
	}
	return filepath.Join(localDataDir, socketFileName)
}

// clientSocket is the socket a client subcommand connects to: --socket,
// REAPERD_SOCKET, else the first default that exists.
func (m *Main) clientSocket() string {
	if s := firstNonEmpty(m.socket, m.Getenv("REAPERD_SOCKET")); s != "" {
		return s
	}
	candidates := []string{defaultSocket(m.Getenv), systemSocketPath, filepath.Join(localDataDir, socketFileName)}
	for _, c := range candidates {
		// A socket we may not stat still exists: use it, so that the
		// error says "permission denied", not "not running".
		if _, err := os.Stat(c); err == nil || !errors.Is(err, os.ErrNotExist) {
			return c
		}
	}
	return candidates[0]
}

// firstPath returns the first of a colon-separated list of directories, as
// systemd sets STATE_DIRECTORY when several are configured.
func firstPath(s string) string {
	first, _, _ := strings.Cut(s, ":")
	return first
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// setIf sets *dst to v when the config file gives v, so that the file
// overrides the environment only where it says something.
func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}
