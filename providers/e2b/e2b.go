package e2b

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reaperd/reaperd/providers/internal/kit"
	"github.com/reaperd/reaperd/reaper"
)

// Type is the provider's type name, the PROVIDER half of an entry key.
const Type = "e2b"

// DefaultDomain is the E2B domain used when neither E2B_API_URL nor
// E2B_DOMAIN is set; the API lives at https://api.<domain>.
const DefaultDomain = "e2b.app"

// DefaultTimeout is the per-request timeout used when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// pageLimit is the page size asked for when listing; the API's maximum.
const pageLimit = 100

// Limits on how much of a response body is read.
const (
	maxListBody  = 16 << 20
	maxErrorBody = 64 << 10
)

const (
	hintAPIKey = "check E2B_API_KEY"
	hintAPIURL = "check E2B_API_URL"
)

// Config configures the E2B provider.
type Config struct {
	// APIKey is the team API key ("e2b_..."), sent as the X-API-Key header.
	APIKey string
	// APIURL is the base URL of the E2B REST API, e.g. "https://api.e2b.app".
	APIURL string
	// Timeout bounds each HTTP request; zero means DefaultTimeout.
	Timeout time.Duration
	// HTTPClient sends the requests; nil means a client with Timeout. Redirects
	// are never followed, whichever client is used, so that the API key is not
	// forwarded to another host.
	HTTPClient *http.Client
}

// ConfigFromEnv reads E2B_API_KEY and the endpoint: E2B_API_URL when set,
// else https://api.$E2B_DOMAIN, where E2B_DOMAIN defaults to "e2b.app".
func ConfigFromEnv(getenv func(string) string) Config {
	c := Config{
		APIKey: strings.TrimSpace(getenv("E2B_API_KEY")),
		APIURL: strings.TrimSpace(getenv("E2B_API_URL")),
	}
	if c.APIURL == "" {
		domain := strings.TrimSpace(getenv("E2B_DOMAIN"))
		if domain == "" {
			domain = DefaultDomain
		}
		c.APIURL = "https://api." + domain
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
	return []kit.Field{{Key: "url", Value: c.APIURL}, kit.Secret("api_key", c.APIKey), {Key: "timeout", Value: c.Timeout}}
}

// Provider closes and lists E2B sandboxes through the E2B REST API.
type Provider struct {
	apiKey  string
	baseURL string // no trailing slash
	client  *http.Client
	errs    kit.Errors
}

var (
	_ reaper.Provider   = (*Provider)(nil)
	_ reaper.Checker    = (*Provider)(nil)
	_ reaper.PageLister = (*Provider)(nil)
)

// New validates c and returns a provider. The error never contains the key.
func New(c Config) (*Provider, error) {
	if c.APIKey == "" {
		return nil, errors.New("new e2b provider: E2B_API_KEY is empty")
	}
	if strings.ContainsAny(c.APIKey, " \t\r\n") {
		return nil, errors.New("new e2b provider: E2B_API_KEY contains whitespace")
	}
	base, err := kit.BaseURL("E2B_API_URL", c.APIURL)
	if err != nil {
		return nil, fmt.Errorf("new e2b provider: %w (set E2B_API_URL or E2B_DOMAIN)", err)
	}
	if c.Timeout < 0 {
		return nil, fmt.Errorf("new e2b provider: negative timeout %s", c.Timeout)
	}
	timeout := cmp.Or(c.Timeout, DefaultTimeout)
	return &Provider{
		apiKey:  c.APIKey,
		baseURL: base,
		client:  kit.HTTPClient(c.HTTPClient, timeout),
		errs: kit.Errors{Provider: Type, Secrets: []string{c.APIKey}, CredentialHint: hintAPIKey,
			URLHint: hintAPIURL, Timeout: timeout},
	}, nil
}

// Name returns Type.
func (p *Provider) Name() string { return Type }

// Close kills the sandbox with DELETE /sandboxes/{sandboxID}. The API removes
// a running sandbox and a paused one (its snapshot) alike and answers 204. A
// 404 carrying the API's JSON error body is reaper.ErrNotFound, with no
// further lookup: E2B answers it for a sandbox already killed, but also for
// one of another team, so the engine confirms it with the listing. A 404
// without that body (a wrong E2B_API_URL path, a proxy) is not the API
// speaking and is reported as transient. A 400 with the API's body is the
// API refusing the id itself ("Invalid sandbox ID": not lowercase letters
// and digits, with at most one "-clientID" suffix), which no retry changes:
// reaper.ErrInvalid.
func (p *Provider) Close(ctx context.Context, id string) error {
	if id == "" {
		return &reaper.ProviderError{Provider: Type, Op: "close", Kind: reaper.ErrInvalid,
			Err: errors.New("delete sandbox: empty sandbox id")}
	}
	resp, err := p.do(ctx, http.MethodDelete, p.baseURL+"/sandboxes/"+url.PathEscape(id))
	if err != nil {
		return p.errs.Transport(ctx, kit.OpClose, id, "delete sandbox", err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return p.errs.Transport(ctx, kit.OpClose, id, "read delete answer", err)
	}
	pe := p.errs.Status(kit.OpClose, id, "delete sandbox", resp.StatusCode, resp.Header, body)
	var ae apiError
	fromAPI := json.Unmarshal(body, &ae) == nil && ae.Code == resp.StatusCode
	switch resp.StatusCode {
	case http.StatusNotFound:
		if !fromAPI {
			// Not the API speaking (a wrong E2B_API_URL path, a proxy).
			pe.Kind, pe.Hint = reaper.ErrTransient, hintAPIURL
			pe.Err = fmt.Errorf("delete sandbox: 404 without the API's error body: %s", p.errs.Redact(kit.Message(resp.StatusCode, body)))
		}
	case http.StatusBadRequest:
		// The kill handler's only 400 is its check of the id
		// (utils.ShortID): permanent. Without the API's body it is some
		// proxy's, and retried.
		if fromAPI {
			pe.Kind = reaper.ErrInvalid
		}
	case http.StatusConflict:
		// The kill handler answers no 409 (e2b-dev/infra,
		// handlers/sandbox_kill.go); one from elsewhere says nothing
		// about the sandbox.
		pe.Kind = reaper.ErrTransient
	}
	return pe
}

// List pages through GET /v2/sandboxes for running and paused sandboxes,
// filtered server-side by metadata when f.Labels is set.
//
// The API orders the list by startedAt, newest first, and resets a
// sandbox's startedAt when it resumes; a sandbox resumed while List pages
// jumps ahead of the cursor and would be missing from the listing, which
// would then read as proof that it is gone. So once the last page is read,
// List reads the newest sandboxes again, until it reaches one that started
// no later than the newest of its first page: every sandbox that started
// (or resumed) while it paged is then listed.
func (p *Provider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	return reaper.CollectPages(ctx, p, f)
}

// ListPages is List a page at a time (reaper.PageLister): each page of GET
// /v2/sandboxes, up to pageLimit sandboxes, newest first, then the pages
// of the second pass, each without the sandboxes already given.
func (p *Provider) ListPages(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	l := lister{p: p, f: f, seen: map[string]bool{}, fn: fn}
	newest, n, err := l.pages(ctx, time.Time{})
	if err != nil {
		return err
	}
	if n > 1 && !newest.IsZero() {
		// One page is one answer; only a cursor can be overtaken.
		if _, _, err := l.pages(ctx, newest); err != nil {
			return err
		}
	}
	return nil
}

// lister hands one listing's pages to fn.
type lister struct {
	p    *Provider
	f    reaper.ListFilter
	seen map[string]bool
	fn   func([]reaper.Sandbox) error
}

// pages reads pages from the newest sandbox on. With a zero since it reads
// them all; otherwise it stops after the first page that holds a sandbox
// started no later than since. It returns the latest startedAt of the first
// page and the number of pages read.
func (l *lister) pages(ctx context.Context, since time.Time) (time.Time, int, error) {
	var (
		newest time.Time
		token  string
		used   = map[string]bool{}
	)
	for page := 0; ; page++ {
		items, next, err := l.p.listPage(ctx, "list", l.f.Labels, "running,paused", pageLimit, token)
		if err != nil {
			return time.Time{}, 0, err
		}
		reached := false
		var out []reaper.Sandbox
		for _, it := range items {
			if page == 0 && it.StartedAt.After(newest) {
				newest = it.StartedAt
			}
			if !since.IsZero() && !it.StartedAt.After(since) {
				reached = true
			}
			if it.SandboxID == "" || l.seen[it.SandboxID] || !kit.MatchLabels(it.Metadata, l.f.Labels) {
				continue
			}
			l.seen[it.SandboxID] = true
			out = append(out, reaper.Sandbox{
				ID: it.SandboxID,
				// startedAt is when the sandbox last started: E2B resets
				// it on every resume, so it is the age of the sandbox's
				// current run, not of the sandbox. The API reports no
				// creation time, so CreatedAt stays zero and reaperd ages
				// the sandbox from when it first saw it.
				StartedAt: it.StartedAt,
				State:     it.State,
				Labels:    it.Metadata,
				Template:  cmp.Or(it.Alias, it.TemplateID),
				Resources: it.resources(),
			})
		}
		if len(out) > 0 {
			if err := l.fn(out); err != nil {
				return time.Time{}, 0, err
			}
		}
		if next == "" || reached {
			return newest, page + 1, nil
		}
		// Pages go on as long as the server hands out new tokens. A token
		// seen before means the server is looping: the listing cannot be
		// trusted to be complete.
		if used[next] {
			return time.Time{}, 0, &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
				Err: errors.New("list sandboxes: the server repeated a next token")}
		}
		used[next] = true
		token = next
	}
}

// Check lists at most one running sandbox (GET /v2/sandboxes?limit=1&
// state=running), to see that the API key is accepted. A 401 or 403 is
// reaper.ErrUnauthorized naming E2B_API_KEY; a 404 means E2B_API_URL does
// not point at the API and is reported as transient, naming it.
func (p *Provider) Check(ctx context.Context) error {
	_, _, err := p.listPage(ctx, "check", nil, "running", 1, "")
	var pe *reaper.ProviderError
	if errors.As(err, &pe) && pe.StatusCode == http.StatusNotFound {
		pe.Hint = hintAPIURL
	}
	return err
}

// listedSandbox is the part of the API's ListedSandbox schema reaperd uses.
type listedSandbox struct {
	SandboxID  string            `json:"sandboxID"`
	TemplateID string            `json:"templateID"`
	Alias      string            `json:"alias"`
	StartedAt  time.Time         `json:"startedAt"`
	State      string            `json:"state"`
	Metadata   map[string]string `json:"metadata"`
	CPUCount   float64           `json:"cpuCount"`
	MemoryMB   float64           `json:"memoryMB"`
	DiskSizeMB float64           `json:"diskSizeMB"`
}

// resources returns the sandbox's size, nil when the API reports none.
func (s listedSandbox) resources() *reaper.Resources {
	if s.CPUCount <= 0 && s.MemoryMB <= 0 && s.DiskSizeMB <= 0 {
		return nil
	}
	return &reaper.Resources{VCPU: s.CPUCount, MemoryGiB: s.MemoryMB / 1024, DiskGiB: s.DiskSizeMB / 1024}
}

// listPage fetches one page of GET /v2/sandboxes; op names the caller in
// errors ("list", "check").
func (p *Provider) listPage(ctx context.Context, op string, labels map[string]string, states string, limit int, token string) ([]listedSandbox, string, error) {
	q := url.Values{}
	if len(labels) > 0 {
		q.Set("metadata", EncodeMetadata(labels))
	}
	q.Set("state", states)
	q.Set("limit", strconv.Itoa(limit))
	if token != "" {
		q.Set("nextToken", token)
	}
	resp, err := p.do(ctx, http.MethodGet, p.baseURL+"/v2/sandboxes?"+q.Encode())
	if err != nil {
		return nil, "", p.errs.Transport(ctx, op, "", "list sandboxes", err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, "", p.errs.Status(op, "", "list sandboxes", resp.StatusCode, resp.Header, body)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBody+1))
	if err != nil {
		return nil, "", p.errs.Transport(ctx, op, "", "read sandbox list", err)
	}
	if len(body) > maxListBody {
		return nil, "", &reaper.ProviderError{Provider: Type, Op: op, Kind: reaper.ErrTransient, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("read sandbox list: body larger than %d bytes", maxListBody)}
	}
	var items []listedSandbox
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, "", &reaper.ProviderError{Provider: Type, Op: op, Kind: reaper.ErrTransient, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("decode sandbox list: %w", err)}
	}
	return items, resp.Header.Get("X-Next-Token"), nil
}

// EncodeMetadata builds the value of the metadata query parameter of
// GET /v2/sandboxes: "k=v" pairs joined by "&", sorted by key. The E2B API
// unescapes this value twice after the usual query decoding (once whole,
// then each key and value after splitting on "&" and "="), so each key and
// value is query-escaped twice here, as the official SDKs do; url.Values adds
// the third, transport-level escaping.
func EncodeMetadata(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(url.QueryEscape(k)))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(url.QueryEscape(labels[k])))
	}
	return b.String()
}

// do sends one request bounded by the per-request timeout. The response body
// stays readable until the caller closes it; the timeout is released with it.
func (p *Provider) do(ctx context.Context, method, u string) (*http.Response, error) {
	rctx, cancel := context.WithTimeout(ctx, p.errs.Timeout)
	req, err := http.NewRequestWithContext(rctx, method, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("X-API-Key", p.apiKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "reaperd-e2b")
	resp, err := p.client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, maxErrorBody))
	_ = rc.Close()
}

// apiError is the API's error body.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}
