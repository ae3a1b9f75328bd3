package runloop

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

// Type is the provider's name, the PROVIDER half of an entry key.
const Type = "runloop"

// Environment variables read by ConfigFromEnv.
const (
	EnvAPIKey  = "RUNLOOP_API_KEY"
	EnvBaseURL = "RUNLOOP_BASE_URL"
)

// Defaults filled in by ConfigFromEnv and New.
const (
	DefaultBaseURL    = "https://api.runloop.ai"
	DefaultTimeout    = 30 * time.Second
	DefaultForceAfter = 3
	DefaultPageSize   = 100

	// MaxPageSize is the largest limit the Runloop API accepts on a list.
	MaxPageSize = 5000
)

// Devbox statuses, as the Runloop API names them.
const (
	// StatusQueued: waiting for infrastructure to be allocated (FLEX
	// devboxes start so).
	StatusQueued = "queued"
	// StatusScheduled is the deprecated name of StatusQueued, which the
	// API still reports and accepts as a filter.
	StatusScheduled    = "scheduled"
	StatusProvisioning = "provisioning"
	StatusInitializing = "initializing"
	StatusRunning      = "running"
	StatusSuspending   = "suspending"
	StatusSuspended    = "suspended"
	StatusResuming     = "resuming"
	StatusFailure      = "failure"
	StatusShutdown     = "shutdown"
)

// liveStatuses are the statuses List asks for, one status filter at a time,
// in lifecycle order (a devbox moving on while List runs is then found
// under its next status): every devbox that is or will be holding compute
// or storage at Runloop. Terminal devboxes (shutdown, failure) stay listed
// by the API forever, so listing without a filter would grow with the
// account's whole history.
var liveStatuses = []string{
	StatusScheduled,
	StatusQueued,
	StatusProvisioning,
	StatusInitializing,
	StatusRunning,
	StatusSuspending,
	StatusSuspended,
	StatusResuming,
}

// Terminal reports whether a devbox in this status holds nothing any more
// at Runloop: it was shut down or it failed.
func Terminal(status string) bool {
	return status == StatusShutdown || status == StatusFailure
}

// transitional reports whether a devbox in this status is changing state.
func transitional(status string) bool {
	switch status {
	case StatusScheduled, StatusQueued, StatusProvisioning, StatusInitializing, StatusSuspending, StatusResuming:
		return true
	}
	return false
}

const (
	maxBodyBytes  = 64 << 20 // a list page of 5000 devboxes fits with room to spare
	maxErrorChars = 300
	maxPages      = 100000
	userAgent     = "reaperd-runloop"
	credentialMsg = "check " + EnvAPIKey
)

// Config configures a Provider.
type Config struct {
	// APIKey is the Runloop API key, sent as "Authorization: Bearer".
	APIKey string
	// BaseURL is the API endpoint; empty means DefaultBaseURL.
	BaseURL string
	// Timeout bounds every HTTP request; zero means DefaultTimeout.
	Timeout time.Duration
	// ForceAfter is the number of close attempts made without force; from
	// attempt ForceAfter+1 on (see reaper.CloseAttempt) the shutdown is sent
	// with force=true, which Runloop honours even while a snapshot of the
	// devbox is in progress. Zero means DefaultForceAfter; negative never
	// forces.
	ForceAfter int
	// PageSize is the number of devboxes asked for per list request; zero
	// means DefaultPageSize, at most MaxPageSize.
	PageSize int
	// HTTPClient sends the requests; nil means a client with Timeout. The
	// per-request Timeout applies in either case.
	HTTPClient *http.Client
}

// ConfigFromEnv reads RUNLOOP_API_KEY and RUNLOOP_BASE_URL through getenv
// and fills in the defaults.
func ConfigFromEnv(getenv func(string) string) Config {
	c := Config{
		APIKey:     strings.TrimSpace(getenv(EnvAPIKey)),
		BaseURL:    strings.TrimSpace(getenv(EnvBaseURL)),
		Timeout:    DefaultTimeout,
		ForceAfter: DefaultForceAfter,
		PageSize:   DefaultPageSize,
	}
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	return c
}

// Enabled reports whether the configuration carries credentials.
func (c Config) Enabled() bool { return strings.TrimSpace(c.APIKey) != "" }

// String describes the configuration without its API key.
func (c Config) String() string { return kit.ConfigString(Type, c.fields()...) }

// GoString is String, so that %#v does not print the API key either.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the API key out of structured logs.
func (c Config) LogValue() slog.Value { return kit.ConfigLogValue(c.fields()...) }

func (c Config) fields() []kit.Field {
	return []kit.Field{{Key: "url", Value: c.BaseURL}, kit.Secret("api_key", c.APIKey), {Key: "timeout", Value: c.Timeout},
		{Key: "force_after", Value: c.ForceAfter}, {Key: "page_size", Value: c.PageSize}}
}

// Provider closes and lists Runloop devboxes through the Runloop REST API.
type Provider struct {
	apiKey     string
	baseURL    string // without a trailing slash
	forceAfter int    // 0: never force
	pageSize   int
	client     *http.Client
	errs       kit.Errors
}

var (
	_ reaper.Provider   = (*Provider)(nil)
	_ reaper.Checker    = (*Provider)(nil)
	_ reaper.PageLister = (*Provider)(nil)
)

// New validates c and returns a Provider.
func New(c Config) (*Provider, error) {
	key := strings.TrimSpace(c.APIKey)
	if key == "" {
		return nil, fmt.Errorf("configure runloop: %s is not set", EnvAPIKey)
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("configure runloop: %s holds whitespace or control characters", EnvAPIKey)
	}
	base, err := kit.BaseURL(EnvBaseURL, cmp.Or(strings.TrimSpace(c.BaseURL), DefaultBaseURL))
	if err != nil {
		return nil, fmt.Errorf("configure runloop: %w", err)
	}
	if c.Timeout < 0 {
		return nil, fmt.Errorf("configure runloop: negative timeout %s", c.Timeout)
	}
	timeout := cmp.Or(c.Timeout, DefaultTimeout)
	force := c.ForceAfter
	switch {
	case force == 0:
		force = DefaultForceAfter
	case force < 0:
		force = 0
	}
	if c.PageSize < 0 || c.PageSize > MaxPageSize {
		return nil, fmt.Errorf("configure runloop: page size %d out of range 1..%d", c.PageSize, MaxPageSize)
	}
	return &Provider{
		apiKey:     key,
		baseURL:    base,
		forceAfter: force,
		pageSize:   cmp.Or(c.PageSize, DefaultPageSize),
		client:     kit.HTTPClient(c.HTTPClient, timeout),
		errs: kit.Errors{Provider: Type, Secrets: []string{key}, CredentialHint: credentialMsg,
			URLHint: "check " + EnvBaseURL, Timeout: timeout},
	}, nil
}

// Name returns Type.
func (p *Provider) Name() string { return Type }

// devboxView is the part of Runloop's DevboxView that reaperd reads.
type devboxView struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Status       string            `json:"status"`
	CreateTimeMs int64             `json:"create_time_ms"`
	Metadata     map[string]string `json:"metadata"`
	BlueprintID  string            `json:"blueprint_id"`
	SnapshotID   string            `json:"snapshot_id"`
	// LaunchParameters is read for the devbox's size (devboxResources),
	// leniently: its shape never fails a listing.
	LaunchParameters json.RawMessage `json:"launch_parameters"`
}

// devboxListView is Runloop's DevboxListView.
type devboxListView struct {
	Devboxes []devboxView `json:"devboxes"`
	HasMore  *bool        `json:"has_more"`
}

// Close shuts the devbox down with POST /v1/devboxes/{id}/shutdown. Runloop
// has no delete: a shutdown devbox releases its compute and its disk and is
// only kept as a record. A suspended devbox (which still bills for its disk)
// is shut down the same way. From attempt ForceAfter+1 on the shutdown is
// forced past in-progress snapshots. A 404 is reaper.ErrNotFound, and Close
// looks no further.
func (p *Provider) Close(ctx context.Context, id string) error {
	if id == "" {
		return &reaper.ProviderError{Provider: Type, Op: "close", Kind: reaper.ErrInvalid,
			Err: errors.New("shut down devbox: empty devbox id")}
	}
	attempt := reaper.CloseAttempt(ctx)
	force := p.forceAfter > 0 && attempt > p.forceAfter
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	const what = "shut down devbox"
	r, err := p.do(ctx, http.MethodPost, "/v1/devboxes/"+url.PathEscape(id)+"/shutdown", q)
	if err != nil {
		return p.errs.Transport(ctx, "close", id, what, err)
	}
	switch {
	case r.status >= 200 && r.status < 300:
		return nil
	case r.status == http.StatusNotFound:
		return p.notFound(id, what, r)
	case r.status == http.StatusBadRequest || r.status == http.StatusUnprocessableEntity:
		// Runloop refuses a state change that does not apply to the devbox's
		// current status; a devbox that is already shut down or failed is
		// closed. Runloop documents no meaning for a 400 here (its
		// generated SDK names only the 409 of a snapshot in progress), so
		// it is not taken for a malformed id (reaper.ErrInvalid): the
		// devbox's own status decides.
		return p.checkTerminal(ctx, id, r)
	}
	pe := p.errs.Status("close", id, what, r.status, r.header, r.body)
	if r.status == http.StatusConflict {
		switch {
		case force:
			pe.Hint = "shutdown refused even with force=true"
		case p.forceAfter > 0:
			pe.Hint = fmt.Sprintf("a snapshot is probably in progress; attempt %d of %d before reaperd forces the shutdown", attempt, p.forceAfter)
		default:
			pe.Hint = "a snapshot is probably in progress; forcing is disabled"
		}
	}
	return pe
}

// notFound reports a 404 to a request about one devbox as
// reaper.ErrNotFound. Runloop keeps shut down devboxes as records, so the
// API answers 404 for an id that never existed in this account (a devbox of
// another account included); a base URL that does not point at the Runloop
// API answers 404 too. Neither is proof that a devbox is gone, and none is
// sought here: the engine confirms a not-found with List, which fails
// against a wrong base URL.
func (p *Provider) notFound(id, what string, r *response) error {
	return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrNotFound,
		StatusCode: r.status, Err: fmt.Errorf("%s: %s", what, p.errs.Redact(kit.Message(r.status, r.body)))}
}

// checkTerminal looks the devbox up after a refused shutdown.
func (p *Provider) checkTerminal(ctx context.Context, id string, refused *response) error {
	const what = "get devbox"
	r, err := p.do(ctx, http.MethodGet, "/v1/devboxes/"+url.PathEscape(id), nil)
	if err != nil {
		return p.errs.Transport(ctx, "close", id, what, err)
	}
	if r.status == http.StatusNotFound {
		return p.notFound(id, what, r)
	}
	if r.status < 200 || r.status > 299 {
		return p.errs.Status("close", id, what, r.status, r.header, r.body)
	}
	var v devboxView
	if err := json.Unmarshal(r.body, &v); err != nil {
		return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: reaper.ErrTransient,
			StatusCode: r.status, Err: fmt.Errorf("decode devbox: %w", err)}
	}
	if Terminal(v.Status) {
		return nil
	}
	kind := reaper.ErrTransient
	if transitional(v.Status) {
		kind = reaper.ErrConflict
	}
	return &reaper.ProviderError{Provider: Type, Op: "close", ID: id, Kind: kind, StatusCode: refused.status,
		Err: fmt.Errorf("shut down devbox: %s (devbox is %s)", p.errs.Redact(kit.Message(refused.status, refused.body)), cmp.Or(v.Status, "of unknown status"))}
}

// List returns the devboxes that are not shut down or failed, following
// Runloop's starting_after pagination for each live status, oldest first.
// Runloop has no metadata filter on the devbox list, so f.Labels is
// applied here.
func (p *Provider) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	out, err := reaper.CollectPages(ctx, p, f)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b reaper.Sandbox) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// ListPages is List a page at a time (reaper.PageLister): each page of GET
// /v1/devboxes, up to the page size, status by status in lifecycle order,
// in the API's order, without a devbox an earlier page already gave (one
// that changed status between two requests).
func (p *Provider) ListPages(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	seen := make(map[string]bool)
	for _, status := range liveStatuses {
		after := ""
		for page := 0; ; page++ {
			if page >= maxPages {
				return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
					Err: fmt.Errorf("list devboxes: more than %d pages of %s devboxes", maxPages, status)}
			}
			q := url.Values{
				"status":              {status},
				"limit":               {strconv.Itoa(p.pageSize)},
				"include_total_count": {"false"},
			}
			if after != "" {
				q.Set("starting_after", after)
			}
			r, err := p.do(ctx, http.MethodGet, "/v1/devboxes", q)
			if err != nil {
				return p.errs.Transport(ctx, "list", "", "list devboxes", err)
			}
			if r.status < 200 || r.status > 299 {
				return p.errs.Status("list", "", "list devboxes", r.status, r.header, r.body)
			}
			var lv devboxListView
			if err := json.Unmarshal(r.body, &lv); err != nil {
				return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
					StatusCode: r.status, Err: fmt.Errorf("decode devbox list: %w", err)}
			}
			var out []reaper.Sandbox
			for _, d := range lv.Devboxes {
				// The status check guards against a server that ignores the
				// filter; seen, against a devbox that changed status between
				// two requests.
				if d.ID == "" || Terminal(d.Status) || seen[d.ID] {
					continue
				}
				seen[d.ID] = true
				if !kit.MatchLabels(d.Metadata, f.Labels) {
					continue
				}
				out = append(out, toSandbox(d))
			}
			if len(out) > 0 {
				if err := fn(out); err != nil {
					return err
				}
			}
			if len(lv.Devboxes) == 0 || (lv.HasMore != nil && !*lv.HasMore) {
				break
			}
			last := lv.Devboxes[len(lv.Devboxes)-1].ID
			if last == "" || last == after {
				return &reaper.ProviderError{Provider: Type, Op: "list", Kind: reaper.ErrTransient,
					StatusCode: r.status, Err: fmt.Errorf("list devboxes: pagination cursor %q did not advance", last)}
			}
			after = last
		}
	}
	return nil
}

// Check lists one devbox (GET /v1/devboxes?limit=1), to see that the API key
// is accepted. A 401 or 403 is reaper.ErrUnauthorized naming
// RUNLOOP_API_KEY; a 404 means RUNLOOP_BASE_URL does not point at the API
// and is reported as transient, naming it.
func (p *Provider) Check(ctx context.Context) error {
	q := url.Values{"limit": {"1"}, "include_total_count": {"false"}}
	r, err := p.do(ctx, http.MethodGet, "/v1/devboxes", q)
	if err != nil {
		return p.errs.Transport(ctx, "check", "", "list devboxes", err)
	}
	if r.status >= 200 && r.status <= 299 {
		return nil
	}
	return p.errs.Status("check", "", "list devboxes", r.status, r.header, r.body)
}

// toSandbox converts a devbox. Template is the blueprint it was created
// from, else the disk snapshot, when Runloop reports either; Resources the
// size its launch_parameters give (devboxResources).
func toSandbox(d devboxView) reaper.Sandbox {
	s := reaper.Sandbox{ID: d.ID, Name: d.Name, State: d.Status, Template: cmp.Or(d.BlueprintID, d.SnapshotID),
		Resources: devboxResources(d.LaunchParameters)}
	if d.CreateTimeMs > 0 {
		s.CreatedAt = time.UnixMilli(d.CreateTimeMs).UTC()
	}
	if len(d.Metadata) > 0 {
		s.Labels = make(map[string]string, len(d.Metadata))
		for k, v := range d.Metadata {
			s.Labels[k] = v
		}
	}
	return s
}

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request under the per-request timeout and reads the whole
// response. The error is a transport error (no response, or a body cut
// short); HTTP error statuses are returned as responses.
func (p *Provider) do(ctx context.Context, method, path string, q url.Values) (*response, error) {
	rctx, cancel := context.WithTimeout(ctx, p.errs.Timeout)
	defer cancel()
	u := p.baseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(rctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.apiKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: body}, nil
}
