package modaltest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/reaperd/reaperd/providers/providertest"
)

const (
	id     = "ak-fake"
	secret = "as-fake"
)

// dial returns a raw client for srv: no interceptors, metadata as given per
// call.
func dial(t *testing.T, srv *Server) pb.ModalClientClient {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewModalClientClient(conn)
}

func withMD(t *testing.T, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(t.Context(), kv...)
}

func creds(t *testing.T, tokenID, tokenSecret string, extra ...string) context.Context {
	return withMD(t, append([]string{"x-modal-client-type", "9", "x-modal-token-id", tokenID, "x-modal-token-secret", tokenSecret}, extra...)...)
}

func token(t *testing.T, c pb.ModalClientClient) string {
	t.Helper()
	resp, err := c.AuthTokenGet(creds(t, id, secret), &pb.AuthTokenGetRequest{})
	if err != nil {
		t.Fatalf("AuthTokenGet = %v", err)
	}
	return resp.GetToken()
}

func TestAuthentication(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	c := dial(t, srv)
	good := token(t, c)

	srv.SetTokenTTL(-time.Second)
	expired := token(t, c)
	srv.SetTokenTTL(time.Hour)

	other := NewServer(id, secret)
	defer other.Close()
	foreign := token(t, dial(t, other)) // signed with another key

	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + parts[1] + "x." + parts[2]

	tests := []struct {
		name     string
		ctx      context.Context
		wantCode codes.Code
		wantMsg  string
	}{
		{"valid", creds(t, id, secret, "x-modal-auth-token", good), codes.OK, ""},
		{"no client type", withMD(t, "x-modal-token-id", id, "x-modal-token-secret", secret, "x-modal-auth-token", good), codes.FailedPrecondition, "x-modal-client-type"},
		{"no token pair", withMD(t, "x-modal-client-type", "9", "x-modal-auth-token", good), codes.Unauthenticated, "Token missing"},
		{"wrong secret", creds(t, id, "as-nope", "x-modal-auth-token", good), codes.Unauthenticated, "Invalid token"},
		{"malformed id", creds(t, "nope", secret, "x-modal-auth-token", good), codes.Unauthenticated, "Token ID is malformed"},
		{"no auth token", creds(t, id, secret), codes.Unauthenticated, "Missing auth token"},
		{"expired auth token", creds(t, id, secret, "x-modal-auth-token", expired), codes.Unauthenticated, "expired"},
		{"foreign auth token", creds(t, id, secret, "x-modal-auth-token", foreign), codes.Unauthenticated, "signature"},
		{"tampered auth token", creds(t, id, secret, "x-modal-auth-token", tampered), codes.Unauthenticated, "Invalid auth token"},
		{"opaque auth token", creds(t, id, secret, "x-modal-auth-token", "opaque"), codes.Unauthenticated, "not a JWT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SandboxList(tt.ctx, &pb.SandboxListRequest{})
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Fatalf("SandboxList = %v, want %v containing %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}

	// AuthTokenGet needs the pair but no auth token.
	if _, err := c.AuthTokenGet(creds(t, id, "as-nope"), &pb.AuthTokenGetRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("AuthTokenGet with a wrong secret = %v, want UNAUTHENTICATED", err)
	}
	// Methods the fake does not model are UNIMPLEMENTED, after the auth check.
	if _, err := c.AppGetOrCreate(creds(t, id, secret, "x-modal-auth-token", good), &pb.AppGetOrCreateRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("AppGetOrCreate = %v, want UNIMPLEMENTED", err)
	}
}

func TestSandboxLifecycle(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	c := dial(t, srv)
	ctx := func() context.Context { return creds(t, id, secret, "x-modal-auth-token", token(t, c)) }
	sb := srv.Create(map[string]string{"team": "a"}, time.Now())

	tags, err := c.SandboxTagsGet(ctx(), pb.SandboxTagsGetRequest_builder{SandboxId: sb}.Build())
	if err != nil || len(tags.GetTags()) != 1 || tags.GetTags()[0].GetTagValue() != "a" {
		t.Fatalf("SandboxTagsGet = %v, %v", tags, err)
	}

	// A running sandbox has no result yet.
	w, err := c.SandboxWait(ctx(), pb.SandboxWaitRequest_builder{SandboxId: sb}.Build())
	if err != nil || w.GetResult() != nil {
		t.Fatalf("SandboxWait(running) = %v, %v; want no result", w, err)
	}

	// A wait with a timeout returns when the sandbox is terminated.
	done := make(chan *pb.SandboxWaitResponse, 1)
	go func() {
		w, _ := c.SandboxWait(ctx(), pb.SandboxWaitRequest_builder{SandboxId: sb, Timeout: 10}.Build())
		done <- w
	}()
	time.Sleep(20 * time.Millisecond)
	resp, err := c.SandboxTerminate(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: sb}.Build())
	if err != nil || resp.GetExistingResult() != nil {
		t.Fatalf("SandboxTerminate(running) = %v, %v; want no existing result", resp, err)
	}
	select {
	case w := <-done:
		if w.GetResult().GetStatus() != pb.GenericResult_GENERIC_STATUS_TERMINATED {
			t.Fatalf("SandboxWait result = %v, want TERMINATED", w.GetResult())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SandboxWait did not return after SandboxTerminate")
	}

	// Terminating again succeeds and reports the existing result.
	resp, err = c.SandboxTerminate(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: sb}.Build())
	if err != nil || resp.GetExistingResult().GetStatus() != pb.GenericResult_GENERIC_STATUS_TERMINATED {
		t.Fatalf("SandboxTerminate(terminated) = %v, %v", resp, err)
	}
	if srv.Alive(sb) {
		t.Fatal("terminated sandbox still alive")
	}

	// Finished sandboxes are listed only on request.
	for _, tt := range []struct {
		includeFinished bool
		want            int
	}{{false, 0}, {true, 1}} {
		l, err := c.SandboxList(ctx(), pb.SandboxListRequest_builder{IncludeFinished: tt.includeFinished}.Build())
		if err != nil || len(l.GetSandboxes()) != tt.want {
			t.Fatalf("SandboxList(include_finished=%v) = %v, %v; want %d sandboxes", tt.includeFinished, l, err, tt.want)
		}
	}

	if _, err := c.SandboxTerminate(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: "sb-unknown"}.Build()); status.Code(err) != codes.NotFound {
		t.Fatalf("SandboxTerminate(unknown) = %v, want NOT_FOUND", err)
	}
}

func TestHangEndsOnClose(t *testing.T) {
	srv := NewServer(id, secret)
	c := dial(t, srv)
	srv.Fail(providertest.Failure{Kind: providertest.FailHang})
	errc := make(chan error, 1)
	go func() {
		_, err := c.AuthTokenGet(creds(t, id, secret), &pb.AuthTokenGetRequest{})
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	srv.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("held call succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a held call")
	}
}

// TestSpuriousNotFound: under FailSpuriousNotFound the calls about one
// sandbox answer exactly as for an unknown id, once authenticated, while the
// sandbox keeps running and SandboxList still returns it.
func TestSpuriousNotFound(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	c := dial(t, srv)
	ctx := func() context.Context { return creds(t, id, secret, "x-modal-auth-token", token(t, c)) }
	sb := srv.Create(nil, time.Now())
	const unknown = "sb-unknown"
	calls := map[string]func(id string) error{
		"SandboxWait": func(id string) error {
			_, err := c.SandboxWait(ctx(), pb.SandboxWaitRequest_builder{SandboxId: id}.Build())
			return err
		},
		"SandboxTerminate": func(id string) error {
			_, err := c.SandboxTerminate(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: id}.Build())
			return err
		},
		"SandboxTagsGet": func(id string) error {
			_, err := c.SandboxTagsGet(ctx(), pb.SandboxTagsGetRequest_builder{SandboxId: id}.Build())
			return err
		},
		"SandboxGetTaskId": func(id string) error {
			_, err := c.SandboxGetTaskId(ctx(), pb.SandboxGetTaskIdRequest_builder{SandboxId: id}.Build())
			return err
		},
	}
	sbV2 := srv.CreateV2(nil, time.Now())
	callsV2 := map[string]func(id string) error{
		"SandboxWaitV2": func(id string) error {
			_, err := c.SandboxWaitV2(ctx(), pb.SandboxWaitRequest_builder{SandboxId: id}.Build())
			return err
		},
		"SandboxTerminateV2": func(id string) error {
			_, err := c.SandboxTerminateV2(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: id}.Build())
			return err
		},
		"SandboxTagsGetV2": func(id string) error {
			_, err := c.SandboxTagsGetV2(ctx(), pb.SandboxTagsGetRequest_builder{SandboxId: id}.Build())
			return err
		},
		"SandboxGetTaskIdV2": func(id string) error {
			_, err := c.SandboxGetTaskIdV2(ctx(), pb.SandboxGetTaskIdRequest_builder{SandboxId: id}.Build())
			return err
		},
	}
	// Unfailed, each answers for its own backend's sandbox.
	for name, call := range calls {
		if err := call(sb); err != nil && name != "SandboxTerminate" {
			t.Errorf("%s(%s) = %v", name, sb, err)
		}
	}
	for name, call := range callsV2 {
		if err := call(sbV2); err != nil && name != "SandboxTerminateV2" {
			t.Errorf("%s(%s) = %v", name, sbV2, err)
		}
	}
	sb, sbV2 = srv.Create(nil, time.Now()), srv.CreateV2(nil, time.Now())
	srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	for _, set := range []struct {
		sb    string
		calls map[string]func(string) error
	}{{sb, calls}, {sbV2, callsV2}} {
		for name, call := range set.calls {
			want := status.Convert(call(unknown))
			got := status.Convert(call(set.sb))
			if got.Code() != codes.NotFound || want.Code() != codes.NotFound ||
				got.Message() != strings.Replace(want.Message(), unknown, set.sb, 1) {
				t.Errorf("%s = %v, want %v for %s", name, got, want, set.sb)
			}
		}
	}
	if !srv.Alive(sbV2) {
		t.Fatal("V2 sandbox finished after spurious not-founds")
	}
	if _, err := c.SandboxWait(creds(t, id, "as-wrong"), pb.SandboxWaitRequest_builder{SandboxId: sb}.Build()); status.Code(err) != codes.Unauthenticated {
		t.Errorf("SandboxWait with a wrong secret = %v, want UNAUTHENTICATED", err)
	}
	l, err := c.SandboxList(ctx(), &pb.SandboxListRequest{})
	if err != nil || len(l.GetSandboxes()) != 1 || l.GetSandboxes()[0].GetId() != sb {
		t.Fatalf("SandboxList = %v, %v; want %s", l, err, sb)
	}
	if !srv.Alive(sb) {
		t.Fatal("sandbox finished after spurious not-founds")
	}
	srv.Fail(providertest.Failure{})
	if err := calls["SandboxTerminate"](sb); err != nil || srv.Alive(sb) {
		t.Fatalf("SandboxTerminate after clearing = %v (alive %v), want it terminated", err, srv.Alive(sb))
	}
}

// TestBackendsApart: a V1 RPC about a V2 sandbox, and a V2 RPC about a V1
// sandbox, answer NOT_FOUND exactly as for an unknown id, and leave the
// sandbox running; the matching RPCs work.
func TestBackendsApart(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	c := dial(t, srv)
	ctx := func() context.Context { return creds(t, id, secret, "x-modal-auth-token", token(t, c)) }
	v1 := srv.Create(nil, time.Now())
	v2 := srv.CreateV2(nil, time.Now())
	if !IsV1ID(v1) || IsV1ID(v2) || len(v2) != len("sb-")+26 {
		t.Fatalf("ids %q (V1 shape %v), %q (V1 shape %v)", v1, IsV1ID(v1), v2, IsV1ID(v2))
	}
	terminate := map[bool]func(string) error{
		false: func(id string) error {
			_, err := c.SandboxTerminate(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: id}.Build())
			return err
		},
		true: func(id string) error {
			_, err := c.SandboxTerminateV2(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: id}.Build())
			return err
		},
	}
	wait := map[bool]func(string) error{
		false: func(id string) error {
			_, err := c.SandboxWait(ctx(), pb.SandboxWaitRequest_builder{SandboxId: id}.Build())
			return err
		},
		true: func(id string) error {
			_, err := c.SandboxWaitV2(ctx(), pb.SandboxWaitRequest_builder{SandboxId: id}.Build())
			return err
		},
	}
	for _, tt := range []struct {
		id string
		v2 bool
	}{{v1, false}, {v2, true}} {
		wrong := !tt.v2
		for name, call := range map[string]func(string) error{"terminate": terminate[wrong], "wait": wait[wrong]} {
			err := call(tt.id)
			want := status.Convert(call("sb-unknown"))
			if got := status.Convert(err); got.Code() != codes.NotFound || got.Message() != strings.Replace(want.Message(), "sb-unknown", tt.id, 1) {
				t.Errorf("%s on the wrong backend for %s = %v, want NOT_FOUND as for an unknown id", name, tt.id, err)
			}
			if !srv.Alive(tt.id) {
				t.Fatalf("%s finished by a call on the wrong backend", tt.id)
			}
		}
		if err := wait[tt.v2](tt.id); err != nil {
			t.Errorf("wait on the right backend for %s = %v", tt.id, err)
		}
		if err := terminate[tt.v2](tt.id); err != nil || srv.Alive(tt.id) {
			t.Errorf("terminate on the right backend for %s = %v (alive %v)", tt.id, err, srv.Alive(tt.id))
		}
	}
}

// TestListingsAndEnvironments: SandboxList returns V1 sandboxes, SandboxListV2
// both, each of one environment; an unknown environment is NOT_FOUND;
// AppList reports app names per environment.
func TestListingsAndEnvironments(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	srv.AddEnvironment("staging")
	c := dial(t, srv)
	ctx := func() context.Context { return creds(t, id, secret, "x-modal-auth-token", token(t, c)) }
	mainV1 := srv.Create(nil, time.Now())
	mainV2 := srv.CreateV2(nil, time.Now())
	devV2 := srv.CreateSandbox(SandboxSpec{V2: true, Environment: DevEnvironment, App: "agents", Name: "box-1"})
	stagingV1 := srv.CreateSandbox(SandboxSpec{Environment: "staging"})

	ids := func(resp *pb.SandboxListResponse) []string {
		var out []string
		for _, sb := range resp.GetSandboxes() {
			out = append(out, sb.GetId())
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	for _, tt := range []struct {
		env    string
		v2     bool
		want   []string
		status codes.Code
	}{
		{"", false, []string{mainV1}, codes.OK},
		{"", true, sorted(mainV1, mainV2), codes.OK},
		{DefaultEnvironment, true, sorted(mainV1, mainV2), codes.OK},
		{DevEnvironment, false, nil, codes.OK},
		{DevEnvironment, true, []string{devV2}, codes.OK},
		{"staging", false, []string{stagingV1}, codes.OK},
		{"nope", false, nil, codes.NotFound},
		{"nope", true, nil, codes.NotFound},
	} {
		req := pb.SandboxListRequest_builder{EnvironmentName: tt.env}.Build()
		call := c.SandboxList
		if tt.v2 {
			call = c.SandboxListV2
		}
		resp, err := call(ctx(), req)
		if status.Code(err) != tt.status || !slices.Equal(ids(resp), tt.want) {
			t.Errorf("list(env %q, v2 %v) = %v, %v; want %v, %v", tt.env, tt.v2, ids(resp), err, tt.want, tt.status)
		}
	}
	resp, err := c.SandboxListV2(ctx(), pb.SandboxListRequest_builder{EnvironmentName: DevEnvironment}.Build())
	if err != nil || len(resp.GetSandboxes()) != 1 || resp.GetSandboxes()[0].GetName() != "box-1" {
		t.Fatalf("SandboxListV2(dev) = %v, %v", resp, err)
	}
	appID := resp.GetSandboxes()[0].GetAppId()
	apps, err := c.AppList(ctx(), pb.AppListRequest_builder{EnvironmentName: DevEnvironment}.Build())
	if err != nil || len(apps.GetApps()) != 1 || apps.GetApps()[0].GetAppId() != appID || apps.GetApps()[0].GetName() != "agents" {
		t.Fatalf("AppList(dev) = %v, %v; want app agents (%s)", apps, err, appID)
	}
	if _, err := c.AppList(ctx(), pb.AppListRequest_builder{EnvironmentName: "nope"}.Build()); status.Code(err) != codes.NotFound {
		t.Fatalf("AppList(unknown) = %v, want NOT_FOUND", err)
	}
	envs, err := c.EnvironmentList(ctx(), &emptypb.Empty{})
	if err != nil || len(envs.GetItems()) != 3 || !envs.GetItems()[0].GetDefault() || envs.GetItems()[0].GetName() != DefaultEnvironment {
		t.Fatalf("EnvironmentList = %v, %v", envs, err)
	}
	who, err := c.WorkspaceNameLookup(ctx(), &emptypb.Empty{})
	if err != nil || who.GetWorkspaceName() != Workspace {
		t.Fatalf("WorkspaceNameLookup = %v, %v", who, err)
	}
	// Terminate finds a sandbox whatever its environment.
	if _, err := c.SandboxTerminateV2(ctx(), pb.SandboxTerminateRequest_builder{SandboxId: devV2}.Build()); err != nil || srv.Alive(devV2) {
		t.Fatalf("SandboxTerminateV2(dev sandbox) = %v", err)
	}
}

// TestThrottleSignals: FailRateLimited carries its delay in the signals
// chosen, RPCRetryPolicy under type.modal.com/ by default.
func TestThrottleSignals(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	c := dial(t, srv)
	srv.Fail(providertest.Failure{Kind: providertest.FailRateLimited, RetryAfter: 1500 * time.Millisecond})
	call := func() (*status.Status, metadata.MD) {
		var hdr, trl metadata.MD
		_, err := c.AuthTokenGet(creds(t, id, secret), &pb.AuthTokenGetRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl))
		md := metadata.Join(hdr, trl)
		return status.Convert(err), md
	}
	st, md := call()
	if st.Code() != codes.ResourceExhausted || len(st.Proto().GetDetails()) != 1 ||
		st.Proto().GetDetails()[0].GetTypeUrl() != "type.modal.com/modal.client.RPCRetryPolicy" {
		t.Fatalf("default throttle = %v %v", st.Proto(), md)
	}
	if p, ok := st.Details()[0].(*pb.RPCRetryPolicy); !ok || p.GetRetryAfterSecs() != 1.5 {
		t.Fatalf("details = %v", st.Details())
	}
	if len(md.Get("retry-after")) != 0 {
		t.Fatalf("retry-after sent by default: %v", md)
	}

	srv.SetThrottleSignal(SignalRetryInfo | SignalRetryAfterHeader)
	st, md = call()
	if len(st.Details()) != 1 {
		t.Fatalf("details = %v", st.Details())
	}
	if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 1500*time.Millisecond {
		t.Fatalf("details = %v", st.Details())
	}
	if got := md.Get("retry-after"); !slices.Equal(got, []string{"1.5"}) {
		t.Fatalf("retry-after = %v, want [1.5]", got)
	}
}

// TestResourceInfo: SandboxList and SandboxListV2 report a sandbox's size
// in resource_info (requests flagged is_default when the sandbox asked for
// none) and its GPU in task_info, and leave resource_info out under
// NoResourceInfo.
func TestResourceInfo(t *testing.T) {
	srv := NewServer(id, secret)
	defer srv.Close()
	c := dial(t, srv)
	ctx := creds(t, id, secret, "x-modal-auth-token", token(t, c))
	plain := srv.CreateSandbox(SandboxSpec{})
	sized := srv.CreateSandbox(SandboxSpec{V2: true, Resources: Resources{MilliCPU: 2000, MilliCPUMax: 4000, MemoryMiB: 8192,
		MemoryMiBMax: 16384, DiskMiB: 20480, GPUType: "H100", GPUCount: 8}})
	bare := srv.CreateSandbox(SandboxSpec{NoResourceInfo: true, Resources: Resources{MilliCPU: 2000}})

	type value struct {
		v         uint32
		isDefault bool
	}
	type want struct {
		has                  bool
		cpu, mem             value
		cpuMax, memMax, disk uint32
		gpu                  string
		taskGPU              string
		gpuConfig            bool
		gpuCount             uint32
	}
	wants := map[string]want{
		plain: {has: true, cpu: value{DefaultMilliCPU, true}, mem: value{DefaultMemoryMiB, true}},
		sized: {has: true, cpu: value{2000, false}, mem: value{8192, false}, cpuMax: 4000, memMax: 16384, disk: 20480,
			gpu: "H100", taskGPU: "H100", gpuConfig: true, gpuCount: 8},
		bare: {},
	}
	resp, err := c.SandboxListV2(ctx, pb.SandboxListRequest_builder{}.Build())
	if err != nil || len(resp.GetSandboxes()) != 3 {
		t.Fatalf("SandboxListV2 = %v, %v; want 3 sandboxes", resp, err)
	}
	v1, err := c.SandboxList(ctx, pb.SandboxListRequest_builder{}.Build())
	if err != nil || len(v1.GetSandboxes()) != 2 {
		t.Fatalf("SandboxList = %v, %v; want 2 sandboxes", v1, err)
	}
	for _, info := range append(resp.GetSandboxes(), v1.GetSandboxes()...) {
		w := wants[info.GetId()]
		ri := info.GetResourceInfo()
		cfg := info.GetTaskInfo().GetGpuConfig()
		got := want{has: info.HasResourceInfo(),
			cpu: value{ri.GetMilliCpu().GetValue(), ri.GetMilliCpu().GetIsDefault()}, mem: value{ri.GetMemoryMb().GetValue(), ri.GetMemoryMb().GetIsDefault()},
			cpuMax: ri.GetMilliCpuMax(), memMax: ri.GetMemoryMbMax(), disk: ri.GetEphemeralDiskMb(), gpu: ri.GetGpuType(),
			taskGPU: info.GetTaskInfo().GetGpuType(), gpuConfig: info.GetTaskInfo().HasGpuConfig(), gpuCount: cfg.GetCount()}
		if got != w || cfg.GetGpuType() != w.gpu {
			t.Errorf("sandbox %s: %+v (gpu_config type %q), want %+v", info.GetId(), got, cfg.GetGpuType(), w)
		}
	}
	if sb, _ := srv.Get(sized); sb.Resources.GPUCount != 8 || sb.Resources.MilliCPU != 2000 {
		t.Errorf("Get(sized).Resources = %+v", sb.Resources)
	}
}
