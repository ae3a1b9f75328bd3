package modal

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"
	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
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

// v2Fake is the fake with Create making V2 sandboxes, so that the
// conformance suite runs against Modal's V2 backend too.
type v2Fake struct{ *modaltest.Server }

func (f v2Fake) Create(labels map[string]string, createdAt time.Time) string {
	return f.CreateV2(labels, createdAt)
}

func TestConformanceV2(t *testing.T) {
	providertest.Run(t, providertest.Options{
		Name:          Type,
		CredentialEnv: EnvTokenID,
		RetryAfter:    true,
		Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) {
			p, srv := setup(t)
			return p, v2Fake{srv}
		},
	})
}

// TestConformanceEnvironments runs the suite with the provider listing two
// environments and the sandboxes in the second.
func TestConformanceEnvironments(t *testing.T) {
	providertest.Run(t, providertest.Options{
		Name:          Type,
		CredentialEnv: EnvTokenID,
		RetryAfter:    true,
		Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) {
			p, srv := setup(t, func(c *Config) {
				c.Environments = []string{modaltest.DefaultEnvironment, modaltest.DevEnvironment}
			})
			return p, devFake{srv}
		},
	})
}

// devFake is the fake with Create making sandboxes, V1 and V2 in turn, in
// DevEnvironment.
type devFake struct{ *modaltest.Server }

func (f devFake) Create(labels map[string]string, createdAt time.Time) string {
	return f.CreateSandbox(modaltest.SandboxSpec{
		V2: len(f.Sandboxes())%2 == 1, Environment: modaltest.DevEnvironment, Tags: labels, CreatedAt: createdAt,
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
		for _, v2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v2=%v", tt.name, v2), func(t *testing.T) {
				p, srv := setup(t)
				id := srv.CreateSandbox(modaltest.SandboxSpec{V2: v2, CreatedAt: created})
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
}

// TestCloseNotFound: an id Modal answers NOT_FOUND for is ErrNotFound, for
// the engine to confirm with the listing, and Close calls nothing after the
// terminate that answered it. That includes a live sandbox Modal answers
// NOT_FOUND for (a token of another workspace: FailSpuriousNotFound), which
// stays running and listed.
func TestCloseNotFound(t *testing.T) {
	tests := []struct {
		name      string
		id        func(srv *modaltest.Server) string
		alive     bool   // the sandbox lives on at the fake
		terminate string // the RPC the SDK routes the id to
	}{
		{"never existed", func(*modaltest.Server) string { return "sb-0000000000000000000000" }, false, "SandboxTerminate"},
		{"never existed, V2", func(*modaltest.Server) string { return "sb-01ARZ3NDEKTSV4RRFFQ69G5FAV" }, false, "SandboxTerminateV2"},
		{"not an id", func(*modaltest.Server) string { return "does-not-exist-0000" }, false, "SandboxTerminateV2"},
		{"forgotten by Modal", func(srv *modaltest.Server) string {
			id := srv.Create(nil, created)
			srv.Forget(id)
			return id
		}, false, "SandboxTerminate"},
		{"spurious", func(srv *modaltest.Server) string {
			id := srv.Create(nil, created)
			srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
			return id
		}, true, "SandboxTerminate"},
		{"spurious, V2", func(srv *modaltest.Server) string {
			id := srv.CreateV2(nil, created)
			srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
			return id
		}, true, "SandboxTerminateV2"},
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
			reqs := srv.Requests()
			if want := []string{"AuthTokenGet", tt.terminate}; !slices.Equal(reqs, want) {
				t.Errorf("requests = %v, want %v: one terminate and nothing after a not-found", reqs, want)
			}
			if tt.alive {
				got, err := p.List(testCtx(t), reaper.ListFilter{})
				if err != nil || len(got) != 1 || got[0].ID != id {
					t.Fatalf("List = %v, %v; want [%s]", got, err, id)
				}
			}
		})
	}
}

// closeRPCs returns the sandbox RPCs among reqs.
func closeRPCs(reqs []string) []string {
	var out []string
	for _, r := range reqs {
		if strings.HasPrefix(r, "SandboxTerminate") || strings.HasPrefix(r, "SandboxWait") {
			out = append(out, r)
		}
	}
	return out
}

// TestCloseV1AndV2: Close terminates and waits for a V1 sandbox with the V1
// RPCs and for a V2 sandbox with the V2 RPCs, in any configured environment;
// both are listed before and gone from the listing after.
func TestCloseV1AndV2(t *testing.T) {
	p, srv := setup(t, func(c *Config) { c.Environments = []string{modaltest.DefaultEnvironment, modaltest.DevEnvironment} })
	v1 := srv.Create(map[string]string{"team": "a"}, created)
	v2 := srv.CreateV2(map[string]string{"team": "a"}, created.Add(time.Second))
	devV1 := srv.CreateSandbox(modaltest.SandboxSpec{Environment: modaltest.DevEnvironment, CreatedAt: created.Add(2 * time.Second)})
	devV2 := srv.CreateSandbox(modaltest.SandboxSpec{V2: true, Environment: modaltest.DevEnvironment, CreatedAt: created.Add(3 * time.Second)})
	other := srv.CreateV2(nil, created.Add(4*time.Second))

	listed := func() []string {
		t.Helper()
		got, err := p.List(testCtx(t), reaper.ListFilter{})
		if err != nil {
			t.Fatalf("List = %v", err)
		}
		var ids []string
		for _, sb := range got {
			ids = append(ids, sb.ID)
		}
		return ids
	}
	// The trap: a V1 terminate for a V2 id answers NOT_FOUND for a running
	// sandbox (what libmodal v0.6.0 would send).
	if _, err := p.rpc.SandboxTerminate(testCtx(t), pb.SandboxTerminateRequest_builder{SandboxId: v2}.Build()); status.Code(err) != codes.NotFound || !srv.Alive(v2) {
		t.Fatalf("V1 SandboxTerminate for V2 sandbox %s = %v (alive %v), want NOT_FOUND and still running", v2, err, srv.Alive(v2))
	}
	if got, want := listed(), []string{other, devV2, devV1, v2, v1}; !slices.Equal(got, want) {
		t.Fatalf("List before = %v, want %v (newest first, both backends, both environments)", got, want)
	}
	for _, tt := range []struct {
		id   string
		want []string
	}{
		{v1, []string{"SandboxTerminate", "SandboxWait"}},
		{v2, []string{"SandboxTerminateV2", "SandboxWaitV2"}},
		{devV1, []string{"SandboxTerminate", "SandboxWait"}},
		{devV2, []string{"SandboxTerminateV2", "SandboxWaitV2"}},
	} {
		before := len(srv.Requests())
		if err := p.Close(testCtx(t), tt.id); err != nil {
			t.Fatalf("Close(%s) = %v", tt.id, err)
		}
		if got := closeRPCs(srv.Requests()[before:]); !slices.Equal(got, tt.want) {
			t.Errorf("Close(%s) called %v, want %v", tt.id, got, tt.want)
		}
		if srv.Alive(tt.id) {
			t.Errorf("%s alive after Close", tt.id)
		}
		if sb, _ := srv.Get(tt.id); sb.Terminations != 1 || sb.Result != pb.GenericResult_GENERIC_STATUS_TERMINATED {
			t.Errorf("%s: terminations %d, result %v", tt.id, sb.Terminations, sb.Result)
		}
	}
	if got, want := listed(), []string{other}; !slices.Equal(got, want) {
		t.Fatalf("List after = %v, want %v", got, want)
	}
	if !srv.Alive(other) {
		t.Fatal("Close terminated another sandbox")
	}
}

// TestCloseRoutesByIDShape: the SDK sends V1 RPCs only for "sb-" and 22
// base-62 characters and V2 RPCs for every other id (sandbox.go,
// getSandboxVersion), which is what the fake's backends expect.
func TestCloseRoutesByIDShape(t *testing.T) {
	for _, id := range []string{
		"sb-0000000000000000000000",
		"sb-nGEijt9WbBMlGrsPH9FOaZ",
		"sb-nGEijt9WbBMlGrsPH9FOa_",
		"sb-123",
		"sb-01ARZ3NDEKTSV4RRFFQ69G5FAV",
		"sb-01arz3ndektsv4rrffq69g5fav",
		"sb-foo-bar",
		"fu-01ARZ3NDEKTSV4RRFFQ69G5FAV",
		"not-a-sandbox-id",
		modaltest.NewV1ID(),
		modaltest.NewV2ID(),
	} {
		p, srv := setup(t)
		if err := p.Close(testCtx(t), id); !errors.Is(err, reaper.ErrNotFound) {
			t.Fatalf("Close(%s) = %v, want ErrNotFound", id, err)
		}
		want := "SandboxTerminateV2"
		if modaltest.IsV1ID(id) {
			want = "SandboxTerminate"
		}
		if got := closeRPCs(srv.Requests()); !slices.Equal(got, []string{want}) {
			t.Errorf("Close(%s) called %v, want [%s]", id, got, want)
		}
	}
}

// TestCloseWaitsForFinish: Close returns nil once Modal reports the
// terminated sandbox finished; a sandbox still shutting down when the wait
// ends is a transient timeout, and the next Close completes it.
func TestCloseWaitsForFinish(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v2=%v", v2), func(t *testing.T) {
			p, srv := setup(t)
			create := srv.Create
			if v2 {
				create = srv.CreateV2
			}

			srv.SetTerminateDelay(100 * time.Millisecond)
			quick := create(nil, created)
			if err := p.Close(testCtx(t), quick); err != nil || srv.Alive(quick) {
				t.Fatalf("Close (finishes after 100ms) = %v, alive %v; want nil and gone", err, srv.Alive(quick))
			}

			srv.SetTerminateDelay(3 * testTimeout)
			slow := create(nil, created)
			start := time.Now()
			err := p.Close(testCtx(t), slow)
			if !errors.Is(err, reaper.ErrTransient) || reaper.ErrorClass(err) != "timeout" || !strings.Contains(err.Error(), "terminate accepted") {
				t.Fatalf("Close (finishes after %v) = %v (class %q), want a transient timeout", 3*testTimeout, err, reaper.ErrorClass(err))
			}
			if el := time.Since(start); el > 3*testTimeout {
				t.Errorf("Close took %v with a %v timeout", el, testTimeout)
			}
			if !srv.Alive(slow) {
				t.Fatal("sandbox finished before its delay")
			}
			time.Sleep(3 * testTimeout)
			if err := p.Close(testCtx(t), slow); err != nil || srv.Alive(slow) {
				t.Fatalf("Close once finished = %v, alive %v", err, srv.Alive(slow))
			}
			if sb, _ := srv.Get(slow); sb.Terminations != 2 {
				t.Errorf("terminations = %d, want 2", sb.Terminations)
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
	const (
		policy = modaltest.SignalRetryPolicy
		info   = modaltest.SignalRetryInfo
		header = modaltest.SignalRetryAfterHeader
	)
	tests := []struct {
		name      string
		signal    modaltest.ThrottleSignal
		retry     time.Duration
		wantDelay time.Duration
	}{
		{"RPCRetryPolicy", policy, 7 * time.Second, 7 * time.Second},
		{"sub-second RPCRetryPolicy", policy, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"RPCRetryPolicy of a float32 tenth", policy, 100 * time.Millisecond, 100 * time.Millisecond},
		{"RetryInfo", info, 7 * time.Second, 7 * time.Second},
		{"sub-second RetryInfo", info, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"retry-after header", header, 7 * time.Second, 7 * time.Second},
		{"sub-second retry-after header", header, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"all three", policy | info | header, 9 * time.Second, 9 * time.Second},
		{"no signal", 0, 7 * time.Second, 0},
		{"no delay", policy | info | header, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := setup(t)
			id := srv.Create(nil, created)
			srv.SetThrottleSignal(tt.signal)
			srv.Fail(providertest.Failure{Kind: providertest.FailRateLimited, RetryAfter: tt.retry})
			errs := map[string]error{"close": p.Close(testCtx(t), id), "check": p.Check(testCtx(t))}
			_, errs["list"] = p.List(testCtx(t), reaper.ListFilter{})
			for op, err := range errs {
				if !errors.Is(err, reaper.ErrRateLimited) {
					t.Fatalf("%s when throttled = %v, want ErrRateLimited", op, err)
				}
				d, ok := reaper.RetryAfter(err)
				if d != tt.wantDelay || ok != (tt.wantDelay > 0) {
					t.Errorf("%s: RetryAfter = %v, %v; want %v", op, d, ok, tt.wantDelay)
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

// TestRetryDelayOtherCodes: a delay the server asks for is passed on with
// any code, for the engine's backoff.
func TestRetryDelayOtherCodes(t *testing.T) {
	p, _ := setup(t)
	st, err := status.New(codes.Unavailable, "overloaded").WithDetails(pb.RPCRetryPolicy_builder{RetryAfterSecs: 3}.Build())
	if err != nil {
		t.Fatal(err)
	}
	got := p.wrap(context.Background(), "close", "sb-1", st.Err())
	if !errors.Is(got, reaper.ErrTransient) || got.RetryAfter != 3*time.Second {
		t.Fatalf("wrap(UNAVAILABLE with RPCRetryPolicy 3s) = %v (retry after %v)", got, got.RetryAfter)
	}
	got = p.wrap(context.Background(), "close", "sb-1",
		&retryAfterError{err: status.Error(codes.Unavailable, "overloaded"), after: 2 * time.Second})
	if !errors.Is(got, reaper.ErrTransient) || got.RetryAfter != 2*time.Second {
		t.Fatalf("wrap(UNAVAILABLE with retry-after 2s) = %v (retry after %v)", got, got.RetryAfter)
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
	for _, c := range []func(*Config){
		func(c *Config) { c.Environment = "staging" },
		func(c *Config) { c.Environments = []string{modaltest.DevEnvironment, "staging"} },
	} {
		p, _ := setup(t, c)
		_, err := p.List(testCtx(t), reaper.ListFilter{})
		if !errors.Is(err, reaper.ErrNotFound) || !strings.Contains(err.Error(), EnvEnvironment) || !strings.Contains(err.Error(), "staging") {
			t.Fatalf("List in an unknown environment = %v, want ErrNotFound naming %s and the environment", err, EnvEnvironment)
		}
	}
}

// TestListEnvironments: List covers Environment and every one of
// Environments, each once, and only the default environment when none is
// configured; it reports sandbox and app names, and asks AppList once per
// environment for apps it has not seen.
func TestListEnvironments(t *testing.T) {
	p, srv := setup(t, func(c *Config) {
		c.Environment = modaltest.DevEnvironment
		c.Environments = []string{"staging", modaltest.DevEnvironment, modaltest.DefaultEnvironment}
	})
	srv.AddEnvironment("staging")
	srv.AddEnvironment("prod") // not configured
	type want struct{ env, name, app string }
	sandboxes := map[string]want{}
	add := func(v2 bool, env, app, name string, at time.Duration) string {
		id := srv.CreateSandbox(modaltest.SandboxSpec{
			V2: v2, Environment: env, App: app, Name: name,
			Tags: map[string]string{"env": env}, CreatedAt: created.Add(at),
		})
		sandboxes[id] = want{env, name, cmp.Or(app, modaltest.DefaultApp)}
		return id
	}
	add(false, modaltest.DefaultEnvironment, "", "", 0)
	add(true, modaltest.DefaultEnvironment, "agents", "box-a", time.Second)
	add(false, modaltest.DevEnvironment, "agents", "box-b", 2*time.Second)
	add(true, modaltest.DevEnvironment, "", "", 3*time.Second)
	add(true, "staging", "ci", "box-c", 4*time.Second)
	prod := srv.CreateSandbox(modaltest.SandboxSpec{Environment: "prod"})

	got, err := p.List(testCtx(t), reaper.ListFilter{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	if len(got) != len(sandboxes) {
		t.Fatalf("List = %+v, want the %d sandboxes of main, dev and staging", got, len(sandboxes))
	}
	for _, sb := range got {
		w, ok := sandboxes[sb.ID]
		if !ok {
			t.Fatalf("List returned %s (prod: %s), not in a configured environment", sb.ID, prod)
		}
		if sb.Name != w.name || sb.App != w.app || sb.Labels["env"] != w.env {
			t.Errorf("%s: name %q app %q labels %v; want %q, %q, env=%s", sb.ID, sb.Name, sb.App, sb.Labels, w.name, w.app, w.env)
		}
	}
	// Each environment once, each with both listings (a page, if it has
	// sandboxes, then the empty page that ends it) and one AppList: V1
	// listings 2 (main) + 2 (dev) + 1 (staging), V2 listings 2 + 2 + 2.
	reqs := srv.Requests()
	for m, n := range map[string]int{"SandboxList": 5, "SandboxListV2": 6, "AppList": 3} {
		if c := count(reqs, m); c != n {
			t.Errorf("%s calls = %d, want %d (requests %v)", m, c, n, reqs)
		}
	}
	// App names are remembered; a new app is looked up in its environment.
	if _, err := p.List(testCtx(t), reaper.ListFilter{}); err != nil {
		t.Fatal(err)
	}
	if c := count(srv.Requests(), "AppList"); c != 3 {
		t.Errorf("AppList calls after a second List = %d, want still 3", c)
	}
	fresh := add(true, "staging", "new-app", "", 5*time.Second)
	got, err = p.List(testCtx(t), reaper.ListFilter{Labels: map[string]string{"env": "staging"}})
	if err != nil || len(got) != 2 || got[0].ID != fresh || got[0].App != "new-app" {
		t.Fatalf("List(env=staging) = %+v, %v; want %s of new-app first", got, err, fresh)
	}
	if c := count(srv.Requests(), "AppList"); c != 4 {
		t.Errorf("AppList calls after a new app = %d, want 4", c)
	}

	// Unconfigured: the default environment only.
	p2, err := New(Config{TokenID: testTokenID, TokenSecret: testTokenSecret, ServerURL: srv.URL, Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Shutdown()
	got, err = p2.List(testCtx(t), reaper.ListFilter{})
	if err != nil || len(got) != 2 {
		t.Fatalf("List (default environment) = %+v, %v; want the 2 sandboxes of main", got, err)
	}
	for _, sb := range got {
		if sandboxes[sb.ID].env != modaltest.DefaultEnvironment {
			t.Errorf("List (default environment) returned %s of %q", sb.ID, sandboxes[sb.ID].env)
		}
	}
}

func TestConfigListEnvironments(t *testing.T) {
	tests := []struct {
		env  string
		envs []string
		want []string
	}{
		{"", nil, []string{""}},
		{"dev", nil, []string{"dev"}},
		{"", []string{"a", "b"}, []string{"a", "b"}},
		{"dev", []string{"a", "dev", " a "}, []string{"dev", "a"}},
		{" ", []string{}, []string{""}},
	}
	for _, tt := range tests {
		c := Config{Environment: tt.env, Environments: tt.envs}
		if got := c.ListEnvironments(); !slices.Equal(got, tt.want) {
			t.Errorf("ListEnvironments(%q, %q) = %q, want %q", tt.env, tt.envs, got, tt.want)
		}
	}
}

// TestCheck: one WorkspaceNameLookup (after the token exchange); refused
// credentials are ErrUnauthorized naming both variables.
func TestCheck(t *testing.T) {
	p, srv := setup(t)
	if err := p.Check(testCtx(t)); err != nil {
		t.Fatalf("Check = %v", err)
	}
	if got, want := srv.Requests(), []string{"AuthTokenGet", "WorkspaceNameLookup"}; !slices.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	// x-modal-libmodal-version is "modal-go/" and the SDK's version.
	if p.sdkVersion != "0.11.1" {
		t.Errorf("SDK version = %q, want 0.11.1 (go.mod pins it)", p.sdkVersion)
	}
	bad, _ := setup(t, func(c *Config) { c.TokenSecret = "as-wrong" })
	err := bad.Check(testCtx(t))
	if !errors.Is(err, reaper.ErrUnauthorized) || !strings.Contains(err.Error(), EnvTokenID) || !strings.Contains(err.Error(), EnvTokenSecret) {
		t.Fatalf("Check with a wrong secret = %v, want ErrUnauthorized naming %s and %s", err, EnvTokenID, EnvTokenSecret)
	}
	if strings.Contains(err.Error(), "as-wrong") {
		t.Fatalf("Check error %q contains the secret", err)
	}
	p.Shutdown()
	if err := p.Check(testCtx(t)); err == nil {
		t.Fatal("Check after Shutdown = nil")
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
		if err := p.Check(testCtx(t)); err != nil {
			t.Fatalf("Check #%d = %v", i+1, err)
		}
	}
	if got := srv.TokensIssued(); got != 3 {
		t.Errorf("auth tokens issued = %d, want 3", got)
	}
	// A token past its exp (by the provider's clock) is replaced too.
	srv.SetTokenTTL(time.Hour)
	if err := p.Check(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	p.tokens.now = func() time.Time { return time.Now().Add(time.Hour - 30*time.Second) }
	if err := p.Check(testCtx(t)); err != nil {
		t.Fatalf("Check with an expired token = %v", err)
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
			if !reflect.DeepEqual(got, tt.want) {
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
