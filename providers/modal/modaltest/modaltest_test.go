package modaltest

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
	}
	srv.Fail(providertest.Failure{Kind: providertest.FailSpuriousNotFound})
	for name, call := range calls {
		want := status.Convert(call(unknown))
		got := status.Convert(call(sb))
		if got.Code() != codes.NotFound || want.Code() != codes.NotFound ||
			got.Message() != strings.Replace(want.Message(), unknown, sb, 1) {
			t.Errorf("%s = %v, want %v for %s", name, got, want, sb)
		}
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
