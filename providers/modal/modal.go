package modal

import (
	"cmp"
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

	modalsdk "github.com/modal-labs/modal-client/go"
	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/reaperd/reaperd/providers/internal/kit"
	"github.com/reaperd/reaperd/reaper"
)

// Type is the provider's name, the PROVIDER half of an entry key.
const Type = "modal"

// DefaultServerURL is Modal's control-plane endpoint.
const DefaultServerURL = "https://api.modal.com:443"

// DefaultTimeout bounds each gRPC call when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// closeWait bounds how long Close waits, after Modal accepted the
// terminate, for the sandbox to report that it has finished (never longer
// than Config.Timeout).
const closeWait = 10 * time.Second

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
	// Environment is a Modal environment whose sandboxes List returns
	// (MODAL_ENVIRONMENT). Empty means none beyond Environments, or, when
	// Environments is empty too, the token's default environment.
	Environment string
	// Environments are further Modal environments whose sandboxes List
	// returns, each by name. List covers Environment and every one of
	// these (each listed once); when both are empty it covers the token's
	// default environment only. Close needs no environment: Modal
	// terminates a sandbox by its id, whichever environment holds it.
	Environments []string
	// Timeout bounds each gRPC call; zero means DefaultTimeout.
	Timeout time.Duration
}

// String describes the configuration without the token pair.
func (c Config) String() string { return kit.ConfigString(Type, c.fields()...) }

// GoString is String, so that %#v does not print the token either.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the token out of structured logs.
func (c Config) LogValue() slog.Value { return kit.ConfigLogValue(c.fields()...) }

func (c Config) fields() []kit.Field {
	return []kit.Field{{Key: "url", Value: c.ServerURL}, kit.Secret("token_id", c.TokenID), kit.Secret("token_secret", c.TokenSecret),
		{Key: "environment", Value: c.Environment}, {Key: "environments", Value: c.Environments}, {Key: "timeout", Value: c.Timeout}}
}

// ConfigFromEnv reads MODAL_TOKEN_ID, MODAL_TOKEN_SECRET, MODAL_SERVER_URL
// and MODAL_ENVIRONMENT through getenv and fills in the defaults. It does not
// read ~/.modal.toml. Environments is left empty: Modal has no variable for
// a list.
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

// ListEnvironments returns the environments List covers, in order, each
// once: Environment, then Environments. A single "" stands for the token's
// default environment, when neither names one.
func (c Config) ListEnvironments() []string {
	var out []string
	for _, e := range append([]string{c.Environment}, c.Environments...) {
		if e = strings.TrimSpace(e); e != "" && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return []string{""}
	}
	return out
}

// Provider closes and lists Modal sandboxes. Close goes through the official
// Modal Go SDK (Sandboxes.FromID, Sandbox.Terminate, Sandbox.Wait), which
// routes each call to the V1 or V2 RPC by the shape of the sandbox id; List
// calls SandboxList and SandboxListV2 directly, on the same authenticated
// connection, because the SDK's listing keeps only ids.
type Provider struct {
	cfg        Config
	envs       []string // environments List covers; "" is the default one
	target     string   // host:port
	host       string   // x-modal-host
	sdkVersion string
	conn       *grpc.ClientConn
	rpc        pb.ModalClientClient
	sdk        *modalsdk.Client
	tokens     *tokenCache

	appMu    sync.Mutex
	appNames map[string]string // app id -> app name, from AppList

	mu     sync.Mutex
	closed bool
}

var (
	_ reaper.Provider   = (*Provider)(nil)
	_ reaper.Checker    = (*Provider)(nil)
	_ reaper.PageLister = (*Provider)(nil)
)

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
	for _, e := range c.Environments {
		if strings.TrimSpace(e) == "" {
			return nil, errors.New("new modal provider: blank name in the list of environments (name the default environment explicitly)")
		}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ServerURL == "" {
		c.ServerURL = DefaultServerURL
	}
	target, host, creds, err := parseServerURL(c.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("new modal provider: %s: %w", EnvServerURL, err)
	}
	p := &Provider{
		cfg:      c,
		envs:     c.ListEnvironments(),
		target:   target,
		host:     host,
		tokens:   newTokenCache(),
		appNames: map[string]string{},
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(
			p.authInterceptor,     // x-modal-auth-token, fetched with the chain below
			p.headerInterceptor,   // token pair and client identification
			p.timeoutInterceptor,  // per-call deadline
			retryAfterInterceptor, // retry-after response metadata
		),
	)
	if err != nil {
		return nil, fmt.Errorf("new modal provider: dial %s: %w", target, err)
	}
	p.conn = conn
	p.rpc = pb.NewModalClientClient(conn)

	params := &modalsdk.ClientParams{
		TokenID:     c.TokenID,
		TokenSecret: c.TokenSecret,
		Environment: p.envs[0],
		Logger:      slog.New(slog.DiscardHandler),
		// Our connection: our endpoint, auth metadata and deadlines. The SDK
		// then dials nothing itself and installs none of its interceptors
		// (its retry loop included). ControlPlaneConn stays nil: Shutdown
		// closes the connection.
		ControlPlaneClient: p.rpc,
	}
	skipConfigFile(params)
	sdk, err := modalsdk.NewClientWithOptions(params)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("new modal provider: modal client: %w", err)
	}
	p.sdk = sdk
	p.sdkVersion = sdk.Version()
	return p, nil
}

// parseServerURL turns https://host[:port] or http://host[:port] into a gRPC
// target, its host name and its transport credentials.
func parseServerURL(raw string) (target, host string, _ credentials.TransportCredentials, _ error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", nil, fmt.Errorf("parse server url: %w", err)
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
		return "", "", nil, fmt.Errorf("server url %q: scheme must be https:// or http://", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", "", nil, fmt.Errorf("server url %q: no host", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", nil, fmt.Errorf("server url %q: want scheme://host[:port] only", raw)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	return net.JoinHostPort(u.Hostname(), port), u.Hostname(), creds, nil
}

// Name returns Type.
func (p *Provider) Name() string { return Type }

// Close terminates the sandbox with the SDK (SandboxTerminate for a V1 id,
// SandboxTerminateV2 for any other), then waits, at most closeWait and
// Config.Timeout, for Modal to report it finished (SandboxWait or
// SandboxWaitV2). Terminating a sandbox that has already finished succeeds
// at Modal (the sandbox is in its final state), and Close returns nil for
// it. A sandbox Modal does not know (NOT_FOUND) is reaper.ErrNotFound, with
// no further call: Modal answers so for a sandbox of another workspace too,
// so the engine confirms it with the listing.
func (p *Provider) Close(ctx context.Context, id string) error {
	if id == "" {
		return &reaper.ProviderError{Provider: Type, Op: "close", Kind: reaper.ErrInvalid, Err: errors.New("empty sandbox id")}
	}
	c, err := p.client()
	if err != nil {
		return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrTransient, Err: err}
	}
	// FromID makes no call: it builds a handle whose calls go to the V1 or
	// the V2 RPCs by the id's shape.
	sb, err := c.Sandboxes.FromID(ctx, id, nil)
	if err != nil {
		return p.wrap(ctx, "close", id, err)
	}
	defer func() { _ = sb.Detach() }()
	if _, err := sb.Terminate(ctx, nil); err != nil {
		return p.wrap(ctx, "close", id, err)
	}
	// Modal accepted the terminate; termination itself is asynchronous
	// (the SDK offers Terminate with Wait for this). Wait for the result.
	bound := min(closeWait, p.cfg.Timeout)
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if _, err := sb.Wait(wctx, nil); err != nil {
		// The wait's own bound ended it: at the client (wctx), or at the
		// server, which holds the same deadline (grpc-timeout) and may
		// answer DEADLINE_EXCEEDED a moment before wctx is done.
		if st, ok := grpcStatus(err); ctx.Err() == nil && (wctx.Err() != nil || (ok && st.Code() == codes.DeadlineExceeded)) {
			return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrTransient,
				Err: fmt.Errorf("terminate accepted, but the sandbox had not finished after %s: %w", bound, context.DeadlineExceeded)}
		}
		return p.wrap(ctx, "close", id, err)
	}
	return nil
}

// Check makes one cheap authenticated call, WorkspaceNameLookup (Modal's
// "who am I", what the Modal Python client calls to verify a new token),
// after exchanging the token pair for an auth token if none is cached.
func (p *Provider) Check(ctx context.Context) error {
	if _, err := p.client(); err != nil {
		return &reaper.ProviderError{Provider: Type, Op: "check", Kind: reaper.ErrTransient, Err: err}
	}
	if _, err := p.rpc.WorkspaceNameLookup(ctx, &emptypb.Empty{}); err != nil {
		return p.wrap(ctx, "check", "", err)
	}
	return nil
}

// listRPC is SandboxList or SandboxListV2.
type listRPC struct {
	name string
	call func(context.Context, *pb.SandboxListRequest, ...grpc.CallOption) (*pb.SandboxListResponse, error)
}

// List returns the sandboxes that have not finished in every configured
// environment, newest first, carrying every label in f (Modal tags,
// filtered server-side and checked again here). In each environment it
// reads both SandboxList (V1 sandboxes) and SandboxListV2 (V1 and V2
// sandboxes, the listing the SDK uses since V2 became its default) to the
// end, and reports each sandbox once. App names come from AppList, once per
// environment holding an app not seen before.
func (p *Provider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	out, err := reaper.CollectPages(ctx, p, f)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b reaper.Sandbox) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// ListPages is List a page at a time (reaper.PageLister): environment by
// environment, each page of SandboxList, then of SandboxListV2, newest
// first, without the sandboxes an earlier page gave (every V1 sandbox is
// in both listings), each with its app's name. AppList is called for a
// page holding an app not known yet, at most once per app in a listing.
func (p *Provider) ListPages(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	if _, err := p.client(); err != nil {
		return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient, Err: err}
	}
	tags := make([]*pb.SandboxTag, 0, len(f.Labels))
	for _, k := range sortedKeys(f.Labels) {
		tags = append(tags, pb.SandboxTag_builder{TagName: k, TagValue: f.Labels[k]}.Build())
	}
	rpcs := []listRPC{
		{"SandboxList", p.rpc.SandboxList},
		{"SandboxListV2", p.rpc.SandboxListV2},
	}
	seen := map[string]bool{}
	for _, env := range p.envs {
		asked := map[string]bool{} // app ids AppList was asked about in env
		for _, rpc := range rpcs {
			err := p.listRPCPages(ctx, rpc, env, tags, func(page []*pb.SandboxInfo) error {
				infos := page[:0]
				for _, info := range page {
					if !seen[info.GetId()] && hasLabels(info, f.Labels) {
						seen[info.GetId()] = true
						infos = append(infos, info)
					}
				}
				if len(infos) == 0 {
					return nil
				}
				names, err := p.appNamesFor(ctx, env, infos, asked)
				if err != nil {
					return err
				}
				out := make([]reaper.Sandbox, 0, len(infos))
				for _, info := range infos {
					sb := sandboxFromInfo(info)
					sb.App = names[info.GetAppId()]
					out = append(out, sb)
				}
				return fn(out)
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// listRPCPages reads every page of one listing RPC in one environment,
// handing each to fn, whose error stops it. Modal pages back in time with
// before_timestamp (the oldest created_at of the previous page) until an
// empty page.
func (p *Provider) listRPCPages(ctx context.Context, rpc listRPC, env string, tags []*pb.SandboxTag, fn func([]*pb.SandboxInfo) error) error {
	var before float64 // 0: from the newest
	for {
		if err := ctx.Err(); err != nil {
			return p.wrapList(ctx, env, err)
		}
		resp, err := rpc.call(ctx, pb.SandboxListRequest_builder{
			BeforeTimestamp: before,
			EnvironmentName: env,
			IncludeFinished: false,
			Tags:            tags,
		}.Build())
		if err != nil {
			return p.wrapList(ctx, env, err)
		}
		page := resp.GetSandboxes()
		if len(page) == 0 {
			return nil
		}
		oldest := math.Inf(1)
		for _, info := range page {
			oldest = min(oldest, info.GetCreatedAt())
		}
		// The next page holds sandboxes created before the oldest one of
		// this page. A cursor that does not move back in time would loop.
		if oldest <= 0 || (before > 0 && oldest >= before) {
			return &reaper.ProviderError{
				Provider: Type, Op: "list", Kind: reaper.ErrTransient,
				Err: fmt.Errorf("%s%s: page cursor did not advance (before_timestamp %.6f, oldest created_at %.6f)",
					rpc.name, envText(env), before, oldest),
			}
		}
		if err := fn(page); err != nil {
			return err
		}
		before = oldest
	}
}

// appNamesFor returns the names of the apps of infos, calling AppList for
// env when one of them is neither known nor in asked (the app ids AppList
// was already asked about during this listing), and adding them to asked.
func (p *Provider) appNamesFor(ctx context.Context, env string, infos []*pb.SandboxInfo, asked map[string]bool) (map[string]string, error) {
	p.appMu.Lock()
	missing := false
	for _, info := range infos {
		if id := info.GetAppId(); id != "" && !asked[id] {
			if _, ok := p.appNames[id]; !ok {
				missing = true
				break
			}
		}
	}
	p.appMu.Unlock()
	if missing {
		resp, err := p.rpc.AppList(ctx, pb.AppListRequest_builder{EnvironmentName: env}.Build())
		if err != nil {
			return nil, p.wrapList(ctx, env, err)
		}
		p.appMu.Lock()
		for _, app := range resp.GetApps() {
			// A deployed app has a name; an ephemeral one (modal run) only
			// the description it was given, which is the name in its code.
			if name := cmp.Or(app.GetName(), app.GetDescription()); app.GetAppId() != "" && name != "" {
				p.appNames[app.GetAppId()] = name
			}
		}
		p.appMu.Unlock()
		for _, info := range infos {
			asked[info.GetAppId()] = true
		}
	}
	p.appMu.Lock()
	defer p.appMu.Unlock()
	names := make(map[string]string, len(infos))
	for _, info := range infos {
		if name, ok := p.appNames[info.GetAppId()]; ok {
			names[info.GetAppId()] = name
		}
	}
	return names, nil
}

// wrapList classifies an error of a listing call in env. NOT_FOUND there is
// the environment's.
func (p *Provider) wrapList(ctx context.Context, env string, err error) error {
	pe := p.wrap(ctx, "list", "", err)
	if errors.Is(pe.Kind, reaper.ErrNotFound) {
		pe.Hint = "check the Modal environments configured (" + EnvEnvironment + "): environment " + cmp.Or(env, "(default)")
	} else if env != "" && pe.Err != nil && ctx.Err() == nil {
		pe.Err = fmt.Errorf("environment %q: %w", env, pe.Err)
	}
	return pe
}

func envText(env string) string {
	if env == "" {
		return ""
	}
	return fmt.Sprintf(" in environment %q", env)
}

// Shutdown closes the connection. The provider is unusable afterwards.
func (p *Provider) Shutdown() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.sdk.Close()
	_ = p.conn.Close()
}

func (p *Provider) client() (*modalsdk.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("provider shut down")
	}
	return p.sdk, nil
}

func hasLabels(info *pb.SandboxInfo, want map[string]string) bool {
	if len(want) == 0 {
		return true
	}
	have := make(map[string]string, len(info.GetTags()))
	for _, t := range info.GetTags() {
		have[t.GetTagName()] = t.GetTagValue()
	}
	return kit.MatchLabels(have, want)
}

func sandboxFromInfo(info *pb.SandboxInfo) reaper.Sandbox {
	sb := reaper.Sandbox{
		ID:        info.GetId(),
		CreatedAt: unixSeconds(info.GetCreatedAt()),
		State:     sandboxState(info),
		Name:      info.GetName(),
		Resources: sandboxResources(info),
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
// ("terminated", "timeout", ...) once the task, or the sandbox's handle
// metadata, has a result.
func sandboxState(info *pb.SandboxInfo) string {
	task := info.GetTaskInfo()
	for _, r := range []*pb.GenericResult{task.GetResult(), info.GetMetadata().GetResult()} {
		if r != nil && r.GetStatus() != pb.GenericResult_GENERIC_STATUS_UNSPECIFIED {
			return strings.ToLower(strings.TrimPrefix(r.GetStatus().String(), "GENERIC_STATUS_"))
		}
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
