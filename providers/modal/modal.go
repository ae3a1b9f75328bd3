package modal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	modalsdk "github.com/modal-labs/libmodal/modal-go"
	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/reaperd/reaperd/reaper"
)

// Type is the provider's name, the PROVIDER half of an entry key.
const Type = "modal"

// DefaultServerURL is Modal's control-plane endpoint.
const DefaultServerURL = "https://api.modal.com:443"

// DefaultTimeout bounds each gRPC call when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Environment variables read by ConfigFromEnv; they are the ones the Modal
// client libraries read.
const (
	EnvTokenID     = "MODAL_TOKEN_ID"
	EnvTokenSecret = "MODAL_TOKEN_SECRET"
	EnvServerURL   = "MODAL_SERVER_URL"
	EnvEnvironment = "MODAL_ENVIRONMENT"
)

// credentialHint is what an operator should check after UNAUTHENTICATED or
// PERMISSION_DENIED.
const credentialHint = "check " + EnvTokenID + " and " + EnvTokenSecret

// Config configures a Modal provider.
type Config struct {
	// TokenID and TokenSecret are a Modal API token pair ("ak-...", "as-...").
	TokenID     string
	TokenSecret string
	// ServerURL is the control-plane endpoint: https://host[:port], or
	// http://host:port for a plaintext server (tests). Empty means
	// DefaultServerURL.
	ServerURL string
	// Environment is the Modal environment whose sandboxes List returns.
	// Empty means the workspace's default environment.
	Environment string
	// Timeout bounds each gRPC call; zero means DefaultTimeout.
	Timeout time.Duration
}

// ConfigFromEnv reads MODAL_TOKEN_ID, MODAL_TOKEN_SECRET, MODAL_SERVER_URL
// and MODAL_ENVIRONMENT through getenv and fills in the defaults. It does not
// read ~/.modal.toml.
func ConfigFromEnv(getenv func(string) string) Config {
	c := Config{
		TokenID:     strings.TrimSpace(getenv(EnvTokenID)),
		TokenSecret: strings.TrimSpace(getenv(EnvTokenSecret)),
		ServerURL:   strings.TrimSpace(getenv(EnvServerURL)),
		Environment: strings.TrimSpace(getenv(EnvEnvironment)),
		Timeout:     DefaultTimeout,
	}
	if c.ServerURL == "" {
		c.ServerURL = DefaultServerURL
	}
	return c
}

// Enabled reports whether credentials are configured. Half a token pair
// counts as configured, so that New reports which half is missing instead of
// the provider being silently disabled.
func (c Config) Enabled() bool {
	return c.TokenID != "" || c.TokenSecret != ""
}

// Provider closes and lists Modal sandboxes. Close goes through the official
// Modal Go SDK (Sandboxes.FromID, then Sandbox.Terminate); List calls the
// SandboxList RPC directly, on the same authenticated connection, because
// the SDK's List drops the creation time and tags.
type Provider struct {
	cfg    Config
	target string // host:port
	conn   *grpc.ClientConn
	rpc    pb.ModalClientClient
	tokens *tokenCache

	mu     sync.Mutex
	sdk    *modalsdk.Client
	init   *sdkInit // in-flight SDK client construction, if any
	closed bool
}

var _ reaper.Provider = (*Provider)(nil)

// New validates c and returns a provider. It does not contact Modal: the
// connection is opened and the token exchanged on the first call.
func New(c Config) (*Provider, error) {
	switch {
	case c.TokenID == "" && c.TokenSecret == "":
		return nil, fmt.Errorf("new modal provider: no credentials: set %s and %s", EnvTokenID, EnvTokenSecret)
	case c.TokenID == "":
		return nil, fmt.Errorf("new modal provider: %s is not set", EnvTokenID)
	case c.TokenSecret == "":
		return nil, fmt.Errorf("new modal provider: %s is not set", EnvTokenSecret)
	case c.Timeout < 0:
		return nil, fmt.Errorf("new modal provider: negative timeout %s", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ServerURL == "" {
		c.ServerURL = DefaultServerURL
	}
	target, creds, err := parseServerURL(c.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("new modal provider: %s: %w", EnvServerURL, err)
	}
	p := &Provider{cfg: c, target: target, tokens: newTokenCache()}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(
			p.authInterceptor,    // x-modal-auth-token, fetched with the chain below
			p.headerInterceptor,  // token pair and client identification
			p.timeoutInterceptor, // per-call deadline
		),
	)
	if err != nil {
		return nil, fmt.Errorf("new modal provider: dial %s: %w", target, err)
	}
	p.conn = conn
	p.rpc = pb.NewModalClientClient(conn)
	return p, nil
}

// parseServerURL turns https://host[:port] or http://host[:port] into a gRPC
// target and its transport credentials.
func parseServerURL(raw string) (string, credentials.TransportCredentials, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("parse server url: %w", err)
	}
	var creds credentials.TransportCredentials
	port := ""
	switch u.Scheme {
	case "https":
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
		port = "443"
	case "http":
		creds = insecure.NewCredentials()
		port = "80"
	default:
		return "", nil, fmt.Errorf("server url %q: scheme must be https:// or http://", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", nil, fmt.Errorf("server url %q: no host", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", nil, fmt.Errorf("server url %q: want scheme://host[:port] only", raw)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	return net.JoinHostPort(u.Hostname(), port), creds, nil
}

// Name returns Type.
func (p *Provider) Name() string { return Type }

// Close terminates the sandbox. Terminating a sandbox that has already
// finished succeeds at Modal (the sandbox is in its final state), and Close
// returns nil for it. A sandbox Modal does not know (NOT_FOUND, from FromID's
// SandboxWait or from SandboxTerminate) is reaper.ErrNotFound, with no
// further call: Modal answers so for a sandbox of another workspace too, so
// the engine confirms it with the listing.
func (p *Provider) Close(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("close %s sandbox: empty id", Type)
	}
	c, err := p.client(ctx)
	if err != nil {
		return p.wrap(ctx, "close", id, err)
	}
	sb, err := c.Sandboxes.FromID(ctx, id)
	if err != nil {
		return p.wrap(ctx, "close", id, err)
	}
	if err := sb.Terminate(ctx); err != nil {
		return p.wrap(ctx, "close", id, err)
	}
	return nil
}

// List returns the sandboxes that have not finished, newest first as Modal
// pages them, carrying every label in f (Modal tags, filtered server-side).
func (p *Provider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	tags := make([]*pb.SandboxTag, 0, len(f.Labels))
	for _, k := range sortedKeys(f.Labels) {
		tags = append(tags, pb.SandboxTag_builder{TagName: k, TagValue: f.Labels[k]}.Build())
	}
	var (
		out    []reaper.Sandbox
		seen   = map[string]bool{}
		before float64 // 0: from the newest
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, p.wrap(ctx, "list", "", err)
		}
		resp, err := p.rpc.SandboxList(ctx, pb.SandboxListRequest_builder{
			BeforeTimestamp: before,
			EnvironmentName: p.cfg.Environment,
			IncludeFinished: false,
			Tags:            tags,
		}.Build())
		if err != nil {
			return nil, p.wrap(ctx, "list", "", err)
		}
		page := resp.GetSandboxes()
		if len(page) == 0 {
			return out, nil
		}
		oldest := math.Inf(1)
		for _, info := range page {
			oldest = min(oldest, info.GetCreatedAt())
			if seen[info.GetId()] {
				continue
			}
			seen[info.GetId()] = true
			out = append(out, sandboxFromInfo(info))
		}
		// The next page holds sandboxes created before the oldest one of
		// this page. A cursor that does not move back in time would loop.
		if oldest <= 0 || (before > 0 && oldest >= before) {
			return nil, &reaper.ProviderError{
				Provider: Type, Op: "list", Kind: reaper.ErrTransient,
				Err: fmt.Errorf("list sandboxes: page cursor did not advance (before_timestamp %.6f, oldest created_at %.6f)", before, oldest),
			}
		}
		before = oldest
	}
}

// Shutdown stops the SDK's background token refresh and closes the
// connection. The provider is unusable afterwards.
func (p *Provider) Shutdown() {
	p.mu.Lock()
	p.closed = true
	c := p.sdk
	p.sdk = nil
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
	_ = p.conn.Close()
}

func sandboxFromInfo(info *pb.SandboxInfo) reaper.Sandbox {
	sb := reaper.Sandbox{
		ID:        info.GetId(),
		CreatedAt: unixSeconds(info.GetCreatedAt()),
		State:     sandboxState(info),
	}
	if tags := info.GetTags(); len(tags) > 0 {
		sb.Labels = make(map[string]string, len(tags))
		for _, t := range tags {
			sb.Labels[t.GetTagName()] = t.GetTagValue()
		}
	}
	return sb
}

// sandboxState names the state of a listed sandbox. Modal's SandboxInfo has
// no state field; it is derived from the sandbox's task: "pending" until a
// task has started, "running" after, and the lower-cased result status
// ("terminated", "timeout", ...) once the task has a result.
func sandboxState(info *pb.SandboxInfo) string {
	task := info.GetTaskInfo()
	if r := task.GetResult(); r != nil && r.GetStatus() != pb.GenericResult_GENERIC_STATUS_UNSPECIFIED {
		return strings.ToLower(strings.TrimPrefix(r.GetStatus().String(), "GENERIC_STATUS_"))
	}
	switch {
	case task.GetFinishedAt() > 0:
		return "finished"
	case task.GetStartedAt() > 0:
		return "running"
	default:
		return "pending"
	}
}

// unixSeconds converts Modal's float seconds since the epoch to a UTC time,
// rounded to the microsecond (a float64 holds no more at today's epoch).
func unixSeconds(s float64) time.Time {
	if s <= 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return time.Time{}
	}
	sec, frac := math.Modf(s)
	usec := math.Round(frac * 1e6)
	return time.Unix(int64(sec), int64(usec)*1e3).UTC()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sdkInit is one construction of the SDK client, shared by the calls that
// wait for it.
type sdkInit struct {
	done chan struct{}
	c    *modalsdk.Client
	err  error
}

// client returns the SDK client, constructing it on first use. Construction
// fetches an auth token (NewClientWithOptions starts the SDK's token
// manager), so it runs in its own goroutine, bounded by the per-call
// timeout, and a caller whose ctx ends stops waiting for it.
func (p *Provider) client(ctx context.Context) (*modalsdk.Client, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("provider shut down")
	}
	if p.sdk != nil {
		c := p.sdk
		p.mu.Unlock()
		return c, nil
	}
	in := p.init
	if in == nil {
		in = &sdkInit{done: make(chan struct{})}
		p.init = in
		go p.construct(in)
	}
	p.mu.Unlock()
	select {
	case <-in.done:
		return in.c, in.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *Provider) construct(in *sdkInit) {
	params := &modalsdk.ClientParams{
		TokenID:     p.cfg.TokenID,
		TokenSecret: p.cfg.TokenSecret,
		Environment: p.cfg.Environment,
		Logger:      slog.New(slog.DiscardHandler),
		// Our connection: our endpoint, auth metadata and deadlines. The SDK
		// then dials nothing itself and installs none of its interceptors
		// (its retry loop included).
		ControlPlaneClient: p.rpc,
	}
	skipConfigFile(params)
	c, err := modalsdk.NewClientWithOptions(params)

	p.mu.Lock()
	p.init = nil
	if err == nil {
		if p.closed {
			c.Close()
			c, err = nil, errors.New("provider shut down")
		} else {
			p.sdk = c
		}
	}
	in.c, in.err = c, err
	p.mu.Unlock()
	close(in.done)
}

// skipConfigFile keeps NewClientWithOptions from reading ~/.modal.toml (or
// $MODAL_CONFIG_PATH): with ClientParams.Config nil it parses that file, and
// fails on a malformed one, although every value we use is passed
// explicitly. The field's type is unexported, so an empty value is set by
// reflection; if a later SDK changes the field, the SDK's default applies.
func skipConfigFile(params *modalsdk.ClientParams) {
	f := reflect.ValueOf(params).Elem().FieldByName("Config")
	if f.IsValid() && f.Kind() == reflect.Pointer && f.CanSet() && f.IsNil() {
		f.Set(reflect.New(f.Type().Elem()))
	}
}
