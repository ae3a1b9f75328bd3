package daytona

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	apiclient "github.com/daytonaio/daytona/libs/api-client-go"

	"github.com/reaperd/reaperd/providers/internal/kit"
	"github.com/reaperd/reaperd/reaper"
)

// Type is the provider's type name, the PROVIDER half of an entry key.
const Type = "daytona"

// Environment variables read by ConfigFromEnv.
const (
	EnvAPIKey         = "DAYTONA_API_KEY"
	EnvAPIURL         = "DAYTONA_API_URL"
	EnvOrganizationID = "DAYTONA_ORGANIZATION_ID"
	// EnvServerURL is the deprecated name of DAYTONA_API_URL, still read by
	// Daytona's official SDKs (Go, Python, TypeScript) when DAYTONA_API_URL
	// is unset; ConfigFromEnv does the same.
	EnvServerURL = "DAYTONA_SERVER_URL"
)

// Defaults filled in by ConfigFromEnv and New.
const (
	DefaultAPIURL     = "https://app.daytona.io/api"
	DefaultTimeout    = 30 * time.Second
	DefaultDeleteWait = 0
)

// pageLimit is the page size asked of GET /sandbox. The v0.190.0 spec allows
// 1..200; older API servers cap it at 100, so ask for 100.
const pageLimit = 100

// maxPages bounds List against a server that never stops handing out cursors.
const maxPages = 10000

// List order. GET /sandbox sorts by lastActivityAt, newest first, unless told
// otherwise, and its cursor is the (sort value, id) of the last item: a
// sandbox that sees activity while List pages moves ahead of the cursor and
// is skipped. Creation time never changes. Ascending, a sandbox created
// while List pages is appended rather than missed, and the millisecond
// cursor of Daytona's Postgres search can only repeat a row created in the
// same millisecond as the cursor's (List drops the repeat), where descending
// it would skip one.
const (
	listSort  = apiclient.SANDBOXLISTSORTFIELD_CREATED_AT
	listOrder = apiclient.SANDBOXLISTSORTDIRECTION_ASC
)

// Config configures a Daytona provider.
type Config struct {
	// APIKey is a Daytona API key (DAYTONA_API_KEY), sent as
	// "Authorization: Bearer <key>". Required.
	APIKey string
	// APIURL is the API base URL (DAYTONA_API_URL), default
	// https://app.daytona.io/api. http:// is accepted (self-hosted, tests).
	APIURL string
	// OrganizationID (DAYTONA_ORGANIZATION_ID) is sent as the
	// X-Daytona-Organization-ID header when set. An API key is already bound
	// to one organization, so it is normally left empty.
	OrganizationID string
	// Timeout bounds every HTTP request. Zero means 30s.
	Timeout time.Duration
	// DeleteWait is how long Close keeps polling GET /sandbox/{id} after
	// Daytona accepted a delete, waiting for the sandbox to be destroyed,
	// before it reports reaper.ErrAccepted (delete under way) and leaves
	// the confirmation to the engine's listings. The caller's context
	// bounds it too. Zero, the default, checks once without waiting, so
	// that no close slot is held while Daytona destroys the sandbox; a
	// negative value is zero.
	DeleteWait time.Duration
	// HTTPClient is the client used for all requests. Nil means a new client
	// with Timeout; http.DefaultClient is never used.
	HTTPClient *http.Client
}

// ConfigFromEnv reads Daytona's conventional environment variables through
// getenv (os.Getenv in the daemon) and fills in defaults. The API URL is
// DAYTONA_API_URL, else the deprecated DAYTONA_SERVER_URL, else
// DefaultAPIURL, as Daytona's SDKs resolve it.
func ConfigFromEnv(getenv func(string) string) Config {
	c := Config{
		APIKey:         strings.TrimSpace(getenv(EnvAPIKey)),
		APIURL:         strings.TrimSpace(getenv(EnvAPIURL)),
		OrganizationID: strings.TrimSpace(getenv(EnvOrganizationID)),
		Timeout:        DefaultTimeout,
		DeleteWait:     DefaultDeleteWait,
	}
	if c.APIURL == "" {
		c.APIURL = strings.TrimSpace(getenv(EnvServerURL))
	}
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	return c
}

// Enabled reports whether credentials are present.
func (c Config) Enabled() bool { return c.APIKey != "" }

// String describes the configuration without the API key.
func (c Config) String() string { return kit.ConfigString(Type, c.fields()...) }

// GoString is String, so that %#v does not print the API key either.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the API key out of structured logs.
func (c Config) LogValue() slog.Value { return kit.ConfigLogValue(c.fields()...) }

func (c Config) fields() []kit.Field {
	return []kit.Field{{Key: "url", Value: c.APIURL}, kit.Secret("api_key", c.APIKey),
		{Key: "organization_id", Value: c.OrganizationID}, {Key: "timeout", Value: c.Timeout}}
}

// Provider closes and lists Daytona sandboxes.
type Provider struct {
	api        *apiclient.APIClient
	key        string
	org        string
	errs       kit.Errors
	deleteWait time.Duration

	// Poll interval bounds while Close waits for a destroy; tests shorten
	// them.
	pollMin, pollMax time.Duration
	now              func() time.Time
}

var (
	_ reaper.Provider   = (*Provider)(nil)
	_ reaper.Checker    = (*Provider)(nil)
	_ reaper.PageLister = (*Provider)(nil)
)

// New validates c and returns a provider. It never logs, and its errors never
// contain the API key.
func New(c Config) (*Provider, error) {
	key := strings.TrimSpace(c.APIKey)
	if key == "" {
		return nil, fmt.Errorf("configure daytona: %s is not set", EnvAPIKey)
	}
	if strings.ContainsAny(key, " \t\r\n") {
		return nil, fmt.Errorf("configure daytona: %s contains whitespace", EnvAPIKey)
	}
	base, err := kit.BaseURL(EnvAPIURL, cmp.Or(strings.TrimSpace(c.APIURL), DefaultAPIURL))
	if err != nil {
		return nil, fmt.Errorf("configure daytona: %w", err)
	}
	if c.Timeout < 0 {
		return nil, fmt.Errorf("configure daytona: negative timeout %s", c.Timeout)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	wait := max(c.DeleteWait, 0)
	hc := kit.HTTPClient(c.HTTPClient, timeout)

	cfg := apiclient.NewConfiguration()
	cfg.Servers = apiclient.ServerConfigurations{{URL: base}}
	cfg.HTTPClient = hc
	cfg.UserAgent = "reaperd (api-client-go/" + apiclient.ClientVersion + ")"

	return &Provider{
		api: apiclient.NewAPIClient(cfg),
		key: key,
		org: strings.TrimSpace(c.OrganizationID),
		errs: kit.Errors{Provider: Type, Secrets: []string{key}, CredentialHint: "check " + EnvAPIKey,
			URLHint: "check " + EnvAPIURL, Timeout: timeout},
		deleteWait: wait,
		pollMin:    250 * time.Millisecond,
		pollMax:    2 * time.Second,
		now:        time.Now,
	}, nil
}

// Name returns "daytona".
func (p *Provider) Name() string { return Type }

// requestContext derives the context of one HTTP request: the caller's
// context, the per-request timeout and the bearer token.
func (p *Provider) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	rctx, cancel := context.WithTimeout(ctx, p.errs.Timeout)
	return context.WithValue(rctx, apiclient.ContextAccessToken, p.key), cancel
}

// Close deletes the sandbox and returns nil once Daytona reports it gone
// (GET answers 404 or state "destroyed" after the DELETE was accepted). See
// the package documentation for why an accepted delete is not yet a
// confirmed one. A DELETE answered 404 is reaper.ErrNotFound, with no
// further lookup: Daytona answers 404 for sandboxes that exist too.
func (p *Provider) Close(ctx context.Context, id string) error {
	if strings.TrimSpace(id) == "" || strings.ContainsAny(id, "/?#") {
		// No request could name this sandbox, now or later.
		return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrInvalid,
			Err: fmt.Errorf("delete sandbox: invalid sandbox id %q", id)}
	}
	if err := ctx.Err(); err != nil {
		return p.classify(ctx, "close", id, "delete sandbox", nil, err)
	}

	rctx, cancel := p.requestContext(ctx)
	req := p.api.SandboxAPI.DeleteSandbox(rctx, id)
	if p.org != "" {
		req = req.XDaytonaOrganizationID(p.org)
	}
	sb, resp, err := req.Execute()
	cancel()

	switch status := statusOf(resp); {
	case status >= 200 && status < 300:
		// The delete is recorded (desiredState "destroyed"); the runner has
		// yet to destroy the sandbox. A body we cannot decode changes
		// nothing: confirmation comes from GET.
		if sb != nil && sb.State != nil && *sb.State == apiclient.SANDBOXSTATE_DESTROYED {
			return nil
		}
		return p.awaitDestroyed(ctx, id)
	case status == http.StatusConflict:
		// "Sandbox state change in progress": some transition is pending,
		// possibly a delete already under way. Closed only if GET shows the
		// sandbox destroyed; a 404 there is a not-found like any other.
		conflict := p.classify(ctx, "close", id, "delete sandbox", resp, err)
		state, gerr := p.lookup(ctx, id)
		if gerr != nil {
			return gerr
		}
		if state == string(apiclient.SANDBOXSTATE_DESTROYED) {
			return nil
		}
		if state == string(apiclient.SANDBOXSTATE_DESTROYING) {
			// A delete is under way (an earlier attempt's): the listing
			// confirms it.
			return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrAccepted,
				Err: errors.New("delete sandbox: a delete is under way (sandbox is destroying)")}
		}
		var pe *reaper.ProviderError
		if errors.As(conflict, &pe) {
			pe.Err = fmt.Errorf("%w (sandbox is %s)", pe.Err, state)
		}
		return conflict
	default:
		// 404 among them: reaper.ErrNotFound, for the engine to confirm
		// with the listing. Daytona's access guard answers 404 for any
		// failure to look the sandbox up, so it is no proof of a delete.
		return p.classify(ctx, "close", id, "delete sandbox", resp, err)
	}
}

// awaitDestroyed polls GET /sandbox/{id} after an accepted delete until the
// sandbox is gone (404, or state "destroyed"), the delete wait runs out
// (ErrConflict) or ctx ends.
func (p *Provider) awaitDestroyed(ctx context.Context, id string) error {
	deadline := p.now().Add(p.deleteWait)
	interval := p.pollMin
	for {
		state, err := p.lookup(ctx, id)
		if errors.Is(err, reaper.ErrNotFound) {
			// Daytona accepted the delete: a 404 now means the destroy
			// finished (or failed at the runner, which hides the sandbox).
			return nil
		}
		if err != nil {
			return err
		}
		if state == string(apiclient.SANDBOXSTATE_DESTROYED) {
			return nil
		}
		left := deadline.Sub(p.now())
		if left <= 0 {
			return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrAccepted,
				Err: fmt.Errorf("delete sandbox: delete accepted, sandbox still %s", state)}
		}
		t := time.NewTimer(min(interval, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return p.classify(ctx, "close", id, "await sandbox deletion", nil, ctx.Err())
		case <-t.C:
		}
		interval = min(2*interval, p.pollMax)
	}
}

// lookup returns the state GET /sandbox/{id} reports. A 404 is an error
// wrapping reaper.ErrNotFound; what it means is the caller's to decide.
func (p *Provider) lookup(ctx context.Context, id string) (state string, err error) {
	rctx, cancel := p.requestContext(ctx)
	defer cancel()
	req := p.api.SandboxAPI.GetSandbox(rctx, id)
	if p.org != "" {
		req = req.XDaytonaOrganizationID(p.org)
	}
	sb, resp, err := req.Execute()
	status := statusOf(resp)
	if status < 200 || status >= 300 {
		return "", p.classify(ctx, "close", id, "get sandbox", resp, err)
	}
	if sb != nil && sb.State != nil && *sb.State != apiclient.SANDBOXSTATE_UNKNOWN_DEFAULT_OPEN_API {
		state = string(*sb.State)
	} else {
		// Undecodable body or a state this client version does not know:
		// read the raw field.
		state = rawState(bodyOf(resp, err))
	}
	if state == "" {
		if cerr := ctx.Err(); cerr != nil {
			return "", p.classify(ctx, "close", id, "get sandbox", nil, cerr)
		}
		return "", &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrTransient,
			StatusCode: status, Err: fmt.Errorf("get sandbox: no state in response: %v", err)}
	}
	return state, nil
}

// List returns the sandboxes visible to the API key, all pages, destroyed
// ones left out, oldest first (see listSort). f.Labels is sent as Daytona's
// JSON "labels" filter.
func (p *Provider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	return reaper.CollectPages(ctx, p, f)
}

// ListPages is List a page at a time (reaper.PageLister): each page of GET
// /sandbox, up to pageLimit sandboxes, oldest first, without destroyed
// ones and without a sandbox an earlier page of the same listing already
// gave (a repeat at the millisecond cursor).
func (p *Provider) ListPages(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	labels, err := labelsParam(f.Labels)
	if err != nil {
		return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient, Err: err}
	}
	seen := map[string]bool{}
	cursor := ""
	for page := 1; ; page++ {
		if page > maxPages {
			return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
				Err: fmt.Errorf("list sandboxes: more than %d pages", maxPages)}
		}
		if err := ctx.Err(); err != nil {
			return p.classify(ctx, "list", "", "list sandboxes", nil, err)
		}
		rctx, cancel := p.requestContext(ctx)
		req := p.api.SandboxAPI.ListSandboxes(rctx).Limit(pageLimit).Sort(listSort).Order(listOrder)
		if cursor != "" {
			req = req.Cursor(cursor)
		}
		if labels != "" {
			req = req.Labels(labels)
		}
		if p.org != "" {
			req = req.XDaytonaOrganizationID(p.org)
		}
		res, resp, err := req.Execute()
		cancel()
		if status := statusOf(resp); status < 200 || status >= 300 {
			return p.classify(ctx, "list", "", "list sandboxes", resp, err)
		}
		items, next, derr := decodeList(res, resp, err)
		if derr != nil {
			if cerr := ctx.Err(); cerr != nil {
				return p.classify(ctx, "list", "", "list sandboxes", nil, cerr)
			}
			return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
				StatusCode: statusOf(resp), Err: fmt.Errorf("decode sandbox list: %w", derr)}
		}
		out := items[:0]
		for _, sb := range items {
			if sb.ID == "" || seen[sb.ID] || sb.State == string(apiclient.SANDBOXSTATE_DESTROYED) {
				continue
			}
			if !kit.MatchLabels(sb.Labels, f.Labels) {
				continue // the server filters; this guards against one that ignored the filter
			}
			seen[sb.ID] = true
			out = append(out, sb)
		}
		if len(out) > 0 {
			if err := fn(out); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		if next == cursor {
			return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
				Err: fmt.Errorf("list sandboxes: server repeated cursor %q", next)}
		}
		cursor = next
	}
}

// Check lists one sandbox (GET /sandbox?limit=1), to see that the API key
// is accepted. A 401 or 403 is reaper.ErrUnauthorized naming
// DAYTONA_API_KEY; a 404 means DAYTONA_API_URL does not point at the API
// and is reported as transient, naming that variable.
func (p *Provider) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return p.classify(ctx, "check", "", "list sandboxes", nil, err)
	}
	rctx, cancel := p.requestContext(ctx)
	defer cancel()
	req := p.api.SandboxAPI.ListSandboxes(rctx).Limit(1).Sort(listSort).Order(listOrder)
	if p.org != "" {
		req = req.XDaytonaOrganizationID(p.org)
	}
	_, resp, err := req.Execute()
	status := statusOf(resp)
	if status >= 200 && status < 300 {
		return nil
	}
	return p.classify(ctx, "check", "", "list sandboxes", resp, err)
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}
