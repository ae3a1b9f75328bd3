package modal

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	modalsdk "github.com/modal-labs/libmodal/modal-go"
	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reaperd/reaperd/providers/modal/modaltest"
	"github.com/reaperd/reaperd/providers/providertest"
	"github.com/reaperd/reaperd/reaper"
)

const (
	testTokenID     = "ak-reaperdtest"
	testTokenSecret = "as-s3cr3t-do-not-print"
	testTimeout     = 500 * time.Millisecond
)

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// setup starts a fake and a provider pointed at it, both stopped at the end
// of the test.
func setup(t *testing.T, mutate ...func(*Config)) (*Provider, *modaltest.Server) {
	t.Helper()
	srv := modaltest.NewServer(testTokenID, testTokenSecret)
	t.Cleanup(srv.Close)
	c := Config{TokenID: testTokenID, TokenSecret: testTokenSecret, ServerURL: srv.URL, Timeout: testTimeout}
	for _, m := range mutate {
		m(&c)
	}
	p, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(p.Shutdown)
	return p, srv
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Options{
		Name:          Type,
		CredentialEnv: EnvTokenID,
		RetryAfter:    true, // RESOURCE_EXHAUSTED carries google.rpc.RetryInfo at the fake
		Conflict:      false,
		Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) {
			return setup(t)
		},
	})
}

func count(reqs []string, method string) int {
	n := 0
	for _, r := range reqs {
		if r == method {
			n++
		}
	}
	return n
}

func TestCloseFinishedSandbox(t *testing.T) {
	tests := []struct {
		name   string
		result pb.GenericResult_GenericStatus
	}{
		{"timed out", pb.GenericResult_GENERIC_STATUS_TIMEOUT},
		{"command exited", pb.GenericResult_GENERIC_STATUS_SUCCESS},
		{"terminated", pb.GenericResult_GENERIC_STATUS_TERMINATED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := setup(t)
			id := srv.Create(nil, created)
			srv.Finish(id, tt.result)
			for i := range 2 {
				if err := p.Close(testCtx(t), id); err != nil {
					t.Fatalf("Close #%d of a finished sandbox = %v, want nil", i+1, err)
				}
			}
			sbs := srv.Sandboxes()
			if len(sbs) != 1 {
				t.Fatalf("fake has %d sandboxes, want 1", len(sbs))
			}
			if got, want := sbs[0].Terminations, 2; got != want {
				t.Errorf("SandboxTerminate calls = %d, want %d", got, want)
			}
			if got := sbs[0].Result; got != tt.result {
				t.Errorf("result after Close = %v, want the original %v", got, tt.result)
			}
		})
	}
}

// TestCloseNotFound: an id Modal answers NOT_FOUND for is ErrNotFound, for
// the engine to confirm with the listing, and Close calls nothing after
// FromID's SandboxWait. That includes a live sandbox Modal answers
// NOT_FOUND for (a token of another workspace: FailSpuriousNotFound), which
// stays running and listed.
func TestCloseNotFound(t *testing.T) {
	tests := []struct {
		name  string
		id    func(srv *modaltest.Server) string
		alive bool // the sandbox lives on at the fake
	}{
		{"never existed", func(*modaltest.Server) string { return "sb-0000000000000000000000" }, false},
		{"not an id", func(*modaltest.Server) string { return "does-not-exist-0000" }, false},
		{"forgotten by Modal", func(srv *modaltest.Server) string {
			id := srv.Create(nil, created)
			srv.Forget(id)
			return id
		}, false},
		{"spurious", func(srv *modaltest.Server) string {
			id := srv.Create(nil, created)
			srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
			return id
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := setup(t)
			id := tt.id(srv)
			err := p.Close(testCtx(t), id)
			var pe *reaper.ProviderError
			if !errors.As(err, &pe) || pe.Kind != reaper.ErrNotFound || pe.Op != "close" || pe.ID != id || pe.Provider != Type {
				t.Fatalf("Close = %#v, want a *reaper.ProviderError for close %s wrapping ErrNotFound", err, id)
			}
			if errors.Is(err, reaper.ErrTransient) {
				t.Fatalf("Close = %v, classified as transient too", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "NotFound") || !strings.Contains(msg, id) {
				t.Fatalf("Close = %q, want it to name the gRPC code and the sandbox", msg)
			}
			if srv.Alive(id) != tt.alive {
				t.Fatalf("alive at the fake = %v, want %v", srv.Alive(id), tt.alive)
			}
			if tt.alive {
				got, err := p.List(testCtx(t), reaper.ListFilter{})
				if err != nil || len(got) != 1 || got[0].ID != id {
					t.Fatalf("List = %v, %v; want [%s]", got, err, id)
				}
			}
			reqs := srv.Requests()
			if got := count(reqs, "SandboxWait"); got != 1 {
				t.Errorf("SandboxWait calls = %d, want 1 (requests %v)", got, reqs)
			}
			if got := count(reqs, "SandboxTerminate"); got != 0 {
				t.Errorf("SandboxTerminate calls = %d, want 0 after a not-found", got)
			}
		})
	}
}

// TestWrapNotFound: NOT_FOUND is ErrNotFound whichever call answers it (a
// sandbox that vanishes between FromID and SandboxTerminate), and whether
// the SDK passes the status on or turns it into its NotFoundError; but a
// canceled caller's context wins.
func TestWrapNotFound(t *testing.T) {
	p, _ := setup(t)
	for _, err := range []error{
		status.Error(codes.NotFound, "Sandbox with id 'sb-1' not found"),
		fmt.Errorf("terminate: %w", status.Error(codes.NotFound, "Sandbox with id 'sb-1' not found")),
		modalsdk.NotFoundError{Exception: "Sandbox with id: 'sb-1' not found"},
	} {
		got := p.wrap(context.Background(), "close", "sb-1", err)
		if !errors.Is(got, reaper.ErrNotFound) || errors.Is(got, reaper.ErrTransient) || !strings.Contains(got.Error(), "sb-1") {
			t.Errorf("wrap(%v) = %v, want ErrNotFound naming sb-1", err, got)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if got := p.wrap(ctx, "close", "sb-1", err); !errors.Is(got, context.Canceled) || errors.Is(got, reaper.ErrNotFound) {
			t.Errorf("wrap(canceled, %v) = %v, want context.Canceled and no not-found", err, got)
		}
	}
}

func TestRateLimited(t *testing.T) {
	tests := []struct {
		name      string
		retry     time.Duration
		wantDelay time.Duration
		wantOK    bool
	}{
		{"with RetryInfo", 7 * time.Second, 7 * time.Second, true},
		{"with sub-second RetryInfo", 1500 * time.Millisecond, 1500 * time.Millisecond, true},
		{"without RetryInfo", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := setup(t)
			id := srv.Create(nil, created)
			srv.Fail(providertest.Failure{Kind: providertest.FailRateLimited, RetryAfter: tt.retry})
			errs := map[string]error{"close": p.Close(testCtx(t), id)}
			_, errs["list"] = p.List(testCtx(t), reaper.ListFilter{})
			for op, err := range errs {
				if !errors.Is(err, reaper.ErrRateLimited) {
					t.Fatalf("%s when throttled = %v, want ErrRateLimited", op, err)
				}
				d, ok := reaper.RetryAfter(err)
				if d != tt.wantDelay || ok != tt.wantOK {
					t.Errorf("%s: RetryAfter = %v, %v; want %v, %v", op, d, ok, tt.wantDelay, tt.wantOK)
				}
				if got := reaper.ErrorClass(err); got != "rate_limited" {
					t.Errorf("%s: ErrorClass = %q, want rate_limited", op, got)
				}
			}
			if !srv.Alive(id) {
				t.Fatal("sandbox terminated while throttled")
			}
		})
	}
}

func TestListPagesBackInTime(t *testing.T) {
	p, srv := setup(t)
	srv.SetPageSize(2)
	var want []string // newest first
	for i := range 5 {
		// Sub-second creation times survive the float seconds of the wire.
		at := created.Add(time.Duration(i)*time.Minute + 123456*time.Microsecond)
		want = append([]string{srv.Create(map[string]string{"n": string(rune('0' + i))}, at)}, want...)
	}
	finished := srv.Create(nil, created.Add(time.Hour))
	srv.Finish(finished, pb.GenericResult_GENERIC_STATUS_TIMEOUT)

	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	var ids []string
	for _, sb := range got {
		ids = append(ids, sb.ID)
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("List ids = %v, want %v (newest first, finished one left out)", ids, want)
	}
	for i, sb := range got {
		n := 4 - i
		wantAt := created.Add(time.Duration(n)*time.Minute + 123456*time.Microsecond)
		if !sb.CreatedAt.Equal(wantAt) {
			t.Errorf("%s CreatedAt = %v, want %v", sb.ID, sb.CreatedAt, wantAt)
		}
		if sb.State != "running" {
			t.Errorf("%s State = %q, want running", sb.ID, sb.State)
		}
		if wantL := map[string]string{"n": string(rune('0' + n))}; !maps.Equal(sb.Labels, wantL) {
			t.Errorf("%s Labels = %v, want %v", sb.ID, sb.Labels, wantL)
		}
	}
	// 5 live sandboxes in pages of 2: 2+2+1, then the empty page that ends it.
	if got := count(srv.Requests(), "SandboxList"); got != 4 {
		t.Errorf("SandboxList calls = %d, want 4", got)
	}
}

func TestListTagFilter(t *testing.T) {
	p, srv := setup(t)
	srv.SetPageSize(1) // one call per match: shows the filter is server-side
	a1 := srv.Create(map[string]string{"team": "a", "env": "prod"}, created)
	a2 := srv.Create(map[string]string{"team": "a", "env": "dev"}, created.Add(time.Second))
	b1 := srv.Create(map[string]string{"team": "b", "env": "prod"}, created.Add(2*time.Second))
	untagged := srv.Create(nil, created.Add(3*time.Second))

	tests := []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{"no filter", nil, []string{a1, a2, b1, untagged}},
		{"one tag", map[string]string{"team": "a"}, []string{a1, a2}},
		{"all tags must match", map[string]string{"team": "a", "env": "prod"}, []string{a1}},
		{"value must match", map[string]string{"team": "c"}, nil},
		{"unknown key", map[string]string{"owner": "x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := count(srv.Requests(), "SandboxList")
			got, err := p.List(testCtx(t), reaper.ListFilter{Labels: tt.labels})
			if err != nil {
				t.Fatalf("List = %v", err)
			}
			var ids []string
			for _, sb := range got {
				ids = append(ids, sb.ID)
			}
			slices.Sort(ids)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				t.Fatalf("List(%v) = %v, want %v", tt.labels, ids, want)
			}
			if calls := count(srv.Requests(), "SandboxList") - before; calls != len(tt.want)+1 {
				t.Errorf("SandboxList calls = %d, want %d (filtered at the server)", calls, len(tt.want)+1)
			}
		})
	}
}

func TestListStaleCursor(t *testing.T) {
	// A page whose oldest sandbox is not older than the cursor would make
	// the loop ask for the same page forever. A sandbox created at the
	// epoch (created_at 0) would reset the cursor to "from the newest".
	p, srv := setup(t)
	srv.Create(nil, time.Unix(0, 0))
	_, err := p.List(testCtx(t), reaper.ListFilter{})
	if !errors.Is(err, reaper.ErrTransient) || !strings.Contains(err.Error(), "cursor") {
		t.Fatalf("List = %v, want a transient cursor error", err)
	}
}

func TestListUnknownEnvironment(t *testing.T) {
	p, _ := setup(t, func(c *Config) { c.Environment = "staging" })
	_, err := p.List(testCtx(t), reaper.ListFilter{})
	if !errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), EnvEnvironment) {
		t.Fatalf("List in an unknown environment = %v, want ErrNotFound naming %s", err, EnvEnvironment)
	}
}

func TestAuthMetadata(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		secret   string
		wantText string // from the server's UNAUTHENTICATED message
	}{
		{"wrong secret", testTokenID, "as-wrong", "Invalid token"},
		{"wrong id", "ak-other", testTokenSecret, "Invalid token"},
		{"malformed id", "not-a-token", testTokenSecret, "Token ID is malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := setup(t, func(c *Config) { c.TokenID, c.TokenSecret = tt.id, tt.secret })
			id := srv.Create(nil, created)
			errs := map[string]error{"close": p.Close(testCtx(t), id)}
			_, errs["list"] = p.List(testCtx(t), reaper.ListFilter{})
			for op, err := range errs {
				if !errors.Is(err, reaper.ErrUnauthorized) {
					t.Fatalf("%s = %v, want ErrUnauthorized", op, err)
				}
				msg := err.Error()
				for _, want := range []string{Type, EnvTokenID, EnvTokenSecret, tt.wantText} {
					if !strings.Contains(msg, want) {
						t.Errorf("%s error %q does not mention %q", op, msg, want)
					}
				}
				if strings.Contains(msg, tt.secret) {
					t.Errorf("%s error %q contains the token secret", op, msg)
				}
			}
			if !srv.Alive(id) {
				t.Fatal("sandbox terminated with bad credentials")
			}
		})
	}
}

func TestAuthTokenReused(t *testing.T) {
	p, srv := setup(t)
	a, b := srv.Create(nil, created), srv.Create(nil, created)
	// The SDK's token manager fetches the first token while the SDK client
	// is built; the provider's own calls reuse it.
	for _, id := range []string{a, b, a} {
		if err := p.Close(testCtx(t), id); err != nil {
			t.Fatalf("Close(%s) = %v", id, err)
		}
	}
	if _, err := p.List(testCtx(t), reaper.ListFilter{}); err != nil {
		t.Fatalf("List = %v", err)
	}
	if got := srv.TokensIssued(); got != 1 {
		t.Errorf("auth tokens issued = %d, want 1 (requests %v)", got, srv.Requests())
	}
}

func TestAuthTokenRefreshed(t *testing.T) {
	p, srv := setup(t)
	// Tokens valid for less than the refresh margin are replaced before
	// every call, and each is still accepted while it lasts.
	srv.SetTokenTTL(30 * time.Second)
	for i := range 3 {
		if _, err := p.List(testCtx(t), reaper.ListFilter{}); err != nil {
			t.Fatalf("List #%d = %v", i+1, err)
		}
	}
	if got := srv.TokensIssued(); got != 3 {
		t.Errorf("auth tokens issued = %d, want 3", got)
	}
	// A token past its exp (by the provider's clock) is replaced too.
	srv.SetTokenTTL(time.Hour)
	if _, err := p.List(testCtx(t), reaper.ListFilter{}); err != nil {
		t.Fatal(err)
	}
	p.tokens.now = func() time.Time { return time.Now().Add(time.Hour - 30*time.Second) }
	if _, err := p.List(testCtx(t), reaper.ListFilter{}); err != nil {
		t.Fatalf("List with an expired token = %v", err)
	}
	if got := srv.TokensIssued(); got != 5 {
		t.Errorf("auth tokens issued = %d, want 5", got)
	}
}

func TestListTimeoutAndCancel(t *testing.T) {
	p, srv := setup(t)
	srv.Fail(providertest.Failure{Kind: providertest.FailHang})

	start := time.Now()
	_, err := p.List(context.Background(), reaper.ListFilter{})
	if !errors.Is(err, reaper.ErrTransient) || reaper.ErrorClass(err) != "timeout" {
		t.Fatalf("List against a hung server = %v (class %q), want a transient timeout", err, reaper.ErrorClass(err))
	}
	if el := time.Since(start); el > 4*testTimeout {
		t.Errorf("List took %v with a %v timeout", el, testTimeout)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = p.List(ctx, reaper.ListFilter{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("List with a canceled context = %v, want context.Canceled", err)
	}
}

func TestCloseServerUnreachable(t *testing.T) {
	p, srv := setup(t)
	srv.Close()
	err := p.Close(testCtx(t), "sb-x")
	if !errors.Is(err, reaper.ErrTransient) {
		t.Fatalf("Close with the server down = %v, want ErrTransient", err)
	}
	p.Shutdown()
	if err := p.Close(testCtx(t), "sb-x"); err == nil {
		t.Fatal("Close after Shutdown = nil, want an error")
	}
}

func TestSDKIgnoresModalConfigFile(t *testing.T) {
	// A malformed ~/.modal.toml makes NewClientWithOptions fail unless the
	// provider keeps the SDK from reading it.
	path := filepath.Join(t.TempDir(), "modal.toml")
	if err := os.WriteFile(path, []byte("this is [not toml"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MODAL_CONFIG_PATH", path)
	t.Setenv("MODAL_SERVER_URL", "http://127.0.0.1:1") // the SDK's own dial target, unused

	p, srv := setup(t)
	id := srv.Create(nil, created)
	if err := p.Close(testCtx(t), id); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if srv.Alive(id) {
		t.Fatal("sandbox still alive")
	}

	params := &modalsdk.ClientParams{}
	skipConfigFile(params)
	if params.Config == nil {
		t.Fatal("skipConfigFile left ClientParams.Config nil")
	}
}

func TestNew(t *testing.T) {
	ok := Config{TokenID: "ak-1", TokenSecret: "as-1"}
	tests := []struct {
		name       string
		mutate     func(*Config)
		wantErr    string // substring; empty for success
		wantTarget string
	}{
		{"defaults", func(*Config) {}, "", "api.modal.com:443"},
		{"https without port", func(c *Config) { c.ServerURL = "https://api.modal.com" }, "", "api.modal.com:443"},
		{"https trailing slash", func(c *Config) { c.ServerURL = "https://api.modal.com:443/" }, "", "api.modal.com:443"},
		{"plaintext", func(c *Config) { c.ServerURL = "http://127.0.0.1:8765" }, "", "127.0.0.1:8765"},
		{"ipv6", func(c *Config) { c.ServerURL = "http://[::1]:8765" }, "", "[::1]:8765"},
		{"no credentials", func(c *Config) { c.TokenID, c.TokenSecret = "", "" }, "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET", ""},
		{"no id", func(c *Config) { c.TokenID = "" }, "MODAL_TOKEN_ID is not set", ""},
		{"no secret", func(c *Config) { c.TokenSecret = "" }, "MODAL_TOKEN_SECRET is not set", ""},
		{"grpc scheme", func(c *Config) { c.ServerURL = "grpc://api.modal.com" }, "scheme", ""},
		{"bare host", func(c *Config) { c.ServerURL = "api.modal.com:443" }, "MODAL_SERVER_URL", ""},
		{"path", func(c *Config) { c.ServerURL = "https://api.modal.com/v1" }, "host[:port] only", ""},
		{"no host", func(c *Config) { c.ServerURL = "https://" }, "no host", ""},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "negative timeout", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			p, err := New(c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "as-1") {
					t.Errorf("error %q contains the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New = %v", err)
			}
			defer p.Shutdown()
			if p.target != tt.wantTarget {
				t.Errorf("target = %q, want %q", p.target, tt.wantTarget)
			}
			if p.cfg.Timeout != DefaultTimeout {
				t.Errorf("Timeout = %v, want %v", p.cfg.Timeout, DefaultTimeout)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		enabled bool
	}{
		{"empty", nil, Config{ServerURL: DefaultServerURL, Timeout: DefaultTimeout}, false},
		{"all set", map[string]string{
			"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1",
			"MODAL_SERVER_URL": "http://127.0.0.1:9", "MODAL_ENVIRONMENT": "dev",
		}, Config{TokenID: "ak-1", TokenSecret: "as-1", ServerURL: "http://127.0.0.1:9", Environment: "dev", Timeout: DefaultTimeout}, true},
		{"half a pair", map[string]string{"MODAL_TOKEN_ID": " ak-1\n"},
			Config{TokenID: "ak-1", ServerURL: DefaultServerURL, Timeout: DefaultTimeout}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ConfigFromEnv(func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Errorf("ConfigFromEnv = %+v, want %+v", got, tt.want)
			}
			if got.Enabled() != tt.enabled {
				t.Errorf("Enabled = %v, want %v", got.Enabled(), tt.enabled)
			}
		})
	}
}

func TestSandboxState(t *testing.T) {
	result := func(s pb.GenericResult_GenericStatus) *pb.GenericResult {
		return pb.GenericResult_builder{Status: s}.Build()
	}
	tests := []struct {
		name string
		task *pb.TaskInfo
		want string
	}{
		{"no task yet", nil, "pending"},
		{"enqueued", pb.TaskInfo_builder{EnqueuedAt: 1}.Build(), "pending"},
		{"started", pb.TaskInfo_builder{EnqueuedAt: 1, StartedAt: 2}.Build(), "running"},
		{"finished without result", pb.TaskInfo_builder{StartedAt: 2, FinishedAt: 3}.Build(), "finished"},
		{"terminated", pb.TaskInfo_builder{StartedAt: 2, Result: result(pb.GenericResult_GENERIC_STATUS_TERMINATED)}.Build(), "terminated"},
		{"timed out", pb.TaskInfo_builder{StartedAt: 2, Result: result(pb.GenericResult_GENERIC_STATUS_TIMEOUT)}.Build(), "timeout"},
		{"unspecified result", pb.TaskInfo_builder{StartedAt: 2, Result: result(pb.GenericResult_GENERIC_STATUS_UNSPECIFIED)}.Build(), "running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := pb.SandboxInfo_builder{Id: "sb-1", TaskInfo: tt.task}.Build()
			if got := sandboxState(info); got != tt.want {
				t.Errorf("sandboxState = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnixSeconds(t *testing.T) {
	tests := []struct {
		in   float64
		want time.Time
	}{
		{0, time.Time{}},
		{-1, time.Time{}},
		{1772600767, time.Unix(1772600767, 0).UTC()},
		{1772600767.123456, time.Unix(1772600767, 123456000).UTC()},
		{1772600767.5, time.Unix(1772600767, 500000000).UTC()},
	}
	for _, tt := range tests {
		if got := unixSeconds(tt.in); !got.Equal(tt.want) {
			t.Errorf("unixSeconds(%f) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestJWTExpiry(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		want   time.Time
		wantOK bool
	}{
		// {"exp":9999999999}, the SDK tests' mock token
		{"exp", "x.eyJleHAiOjk5OTk5OTk5OTl9.x", time.Unix(9999999999, 0), true},
		// same, padded
		{"padded", "x.eyJleHAiOjk5OTk5OTk5OTl9==.x", time.Unix(9999999999, 0), true},
		// {"sub":"a"}
		{"no exp", "x.eyJzdWIiOiJhIn0.x", time.Time{}, false},
		{"not a JWT", "opaque-token", time.Time{}, false},
		{"bad base64", "x.!!!.x", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := jwtExpiry(tt.token)
			if !got.Equal(tt.want) || ok != tt.wantOK {
				t.Errorf("jwtExpiry = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
