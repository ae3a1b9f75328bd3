// Package modaltest runs an in-process fake of Modal's control plane, the
// gRPC service modal.client.ModalClient, for tests, like net/http/httptest.
//
// # Basics
//
// NewServer listens on 127.0.0.1 (plaintext HTTP/2) and serves the calls
// that reaperd's Modal provider and the Modal Go SDK make to close and list
// sandboxes: AuthTokenGet, SandboxWait, SandboxTerminate, SandboxList and
// SandboxTagsGet. Point the provider at Server.URL ("http://127.0.0.1:PORT",
// the form MODAL_SERVER_URL takes for a plaintext server):
//
//	srv := modaltest.NewServer("ak-test", "as-test")
//	defer srv.Close()
//	id := srv.Create(map[string]string{"team": "a"}, time.Now())
//
// Every call must carry the token pair in x-modal-token-id and
// x-modal-token-secret, and every call but AuthTokenGet a live auth token
// from AuthTokenGet (a signed JWT with an exp claim) in x-modal-auth-token;
// otherwise the call fails with UNAUTHENTICATED, as at Modal.
//
// # Caveats
//
// Sandboxes are created with Create, not through SandboxCreate. All live in
// the environment "main", the default one. SandboxList pages newest first,
// SetPageSize sandboxes a page (100 by default; Modal does not document its
// own), and before_timestamp selects sandboxes created strictly earlier. An
// id the fake has never seen is NOT_FOUND, whatever its form; so is every
// id while FailSpuriousNotFound is injected (see Fail).
package modaltest

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/reaperd/reaperd/providers/providertest"
)

// DefaultEnvironment is the one environment the fake has.
const DefaultEnvironment = "main"

// DefaultPageSize is the number of sandboxes a SandboxList page holds
// until SetPageSize changes it.
const DefaultPageSize = 100

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the server's address, "http://127.0.0.1:PORT".
	URL string

	tokenID, tokenSecret string
	jwtKey               []byte

	grpc *grpc.Server
	lis  net.Listener
	done chan struct{}
	stop sync.Once

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	pageSize  int
	failure   providertest.Failure
	tokenTTL  time.Duration
	requests  []string
	tokens    int // auth tokens issued
}

// Sandbox is a snapshot of one sandbox at the fake.
type Sandbox struct {
	ID          string
	Environment string
	Tags        map[string]string
	CreatedAt   time.Time
	// FinishedAt is zero while the sandbox runs.
	FinishedAt time.Time
	// Result is the final status once finished (TERMINATED after a
	// SandboxTerminate).
	Result pb.GenericResult_GenericStatus
	// Terminations counts SandboxTerminate calls for this sandbox.
	Terminations int
}

type sandbox struct {
	Sandbox
	finished chan struct{} // closed when the sandbox finishes
}

// NewServer starts a fake that accepts the token pair tokenID/tokenSecret.
// It panics if it cannot listen, like httptest.NewServer.
func NewServer(tokenID, tokenSecret string) *Server {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("modaltest: listen: %v", err))
	}
	s := &Server{
		URL:         "http://" + lis.Addr().String(),
		tokenID:     tokenID,
		tokenSecret: tokenSecret,
		jwtKey:      []byte(rand.Text()),
		lis:         lis,
		done:        make(chan struct{}),
		sandboxes:   map[string]*sandbox{},
		pageSize:    DefaultPageSize,
		tokenTTL:    time.Hour,
	}
	s.grpc = grpc.NewServer(grpc.ChainUnaryInterceptor(s.intercept))
	pb.RegisterModalClientServer(s.grpc, service{s: s})
	go func() { _ = s.grpc.Serve(lis) }()
	return s
}

// Close stops the server, ending held (FailHang) calls.
func (s *Server) Close() {
	s.stop.Do(func() {
		close(s.done)
		s.grpc.Stop()
	})
}

// Create adds a running sandbox with the given tags, created at createdAt,
// and returns its id ("sb-" and 22 letters and digits).
func (s *Server) Create(tags map[string]string, createdAt time.Time) string {
	id := "sb-" + strings.ToLower(rand.Text())[:22]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sandboxes[id] = &sandbox{
		Sandbox: Sandbox{
			ID:          id,
			Environment: DefaultEnvironment,
			Tags:        maps.Clone(tags),
			CreatedAt:   createdAt,
		},
		finished: make(chan struct{}),
	}
	return id
}

// Alive reports whether the sandbox exists and has not finished.
func (s *Server) Alive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	return ok && sb.FinishedAt.IsZero()
}

// Finish ends a running sandbox behind the client's back with the given
// result, as Modal does when a sandbox times out (TIMEOUT) or its command
// exits (SUCCESS, FAILURE).
func (s *Server) Finish(id string, result pb.GenericResult_GenericStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb, ok := s.sandboxes[id]; ok {
		s.finishLocked(sb, result)
	}
}

// Forget removes a sandbox entirely, as Modal eventually does with finished
// ones: afterwards its id is NOT_FOUND.
func (s *Server) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb, ok := s.sandboxes[id]; ok {
		s.finishLocked(sb, pb.GenericResult_GENERIC_STATUS_TERMINATED)
		delete(s.sandboxes, id)
	}
}

// Fail injects f for every following call; Failure{} clears it.
// FailUnauthorized answers UNAUTHENTICATED, FailRateLimited
// RESOURCE_EXHAUSTED (with a google.rpc.RetryInfo detail carrying
// f.RetryAfter when it is positive), FailServerError UNAVAILABLE, and
// FailHang holds the call until the client gives up. FailSpuriousNotFound
// answers the calls about one sandbox (SandboxWait, SandboxTerminate,
// SandboxTagsGet), once authenticated, exactly as for an id the fake does
// not know: NOT_FOUND "Sandbox with id '<id>' not found", as Modal answers
// a token of another workspace; the sandbox keeps running and SandboxList
// still returns it. FailConflict has no Modal counterpart and injects
// nothing.
func (s *Server) Fail(f providertest.Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetPageSize caps the number of sandboxes per SandboxList page; n <= 0
// restores DefaultPageSize.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		n = DefaultPageSize
	}
	s.pageSize = n
}

// SetTokenTTL sets the lifetime of auth tokens issued from now on (one hour
// by default).
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

// Requests returns the method names of the calls received so far, in
// order, e.g. "AuthTokenGet", "SandboxWait", including rejected ones.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// TokensIssued returns the number of auth tokens AuthTokenGet handed out.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens
}

// Sandboxes returns a snapshot of every sandbox the fake knows, finished
// ones included, oldest first.
func (s *Server) Sandboxes() []Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		c := sb.Sandbox
		c.Tags = maps.Clone(sb.Tags)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Sandbox) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

func (s *Server) finishLocked(sb *sandbox, result pb.GenericResult_GenericStatus) {
	if !sb.FinishedAt.IsZero() {
		return
	}
	sb.FinishedAt = time.Now()
	sb.Result = result
	close(sb.finished)
}

// intercept records the call, applies the injected failure and checks the
// credentials, as Modal's front end does before any handler runs.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	s.mu.Lock()
	s.requests = append(s.requests, method)
	f := s.failure
	s.mu.Unlock()

	switch f.Kind {
	case providertest.FailUnauthorized:
		return nil, status.Error(codes.Unauthenticated, "Invalid token id or secret")
	case providertest.FailRateLimited:
		st := status.New(codes.ResourceExhausted, "Too many requests, please slow down")
		if f.RetryAfter > 0 {
			if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(f.RetryAfter)}); err == nil {
				st = d
			}
		}
		return nil, st.Err()
	case providertest.FailServerError:
		return nil, status.Error(codes.Unavailable, "Service temporarily unavailable")
	case providertest.FailHang:
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return nil, status.Error(codes.Unavailable, "server shutting down")
		}
	}

	if err := s.authenticate(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) authenticate(ctx context.Context, fullMethod string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	one := func(k string) string {
		if v := md.Get(k); len(v) == 1 {
			return v[0]
		} else if len(v) > 1 {
			return "\x00duplicate"
		}
		return ""
	}
	if one("x-modal-client-type") == "" {
		return status.Error(codes.FailedPrecondition, "Missing x-modal-client-type header")
	}
	id, secret := one("x-modal-token-id"), one("x-modal-token-secret")
	switch {
	case id == "" || secret == "":
		return status.Error(codes.Unauthenticated, "Token missing. Could not authenticate client. "+
			"If you have token credentials, see modal.com/docs/reference/modal.config for setup help.")
	case !strings.HasPrefix(id, "ak-") && strings.HasPrefix(s.tokenID, "ak-"):
		return status.Error(codes.Unauthenticated, "Token ID is malformed")
	case subtle.ConstantTimeCompare([]byte(id), []byte(s.tokenID)) != 1 ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.tokenSecret)) != 1:
		return status.Error(codes.Unauthenticated, "Invalid token id or secret")
	}
	if fullMethod == pb.ModalClient_AuthTokenGet_FullMethodName {
		return nil
	}
	tok := one("x-modal-auth-token")
	if tok == "" {
		return status.Error(codes.Unauthenticated, "Missing auth token")
	}
	if err := s.checkJWT(tok, id); err != nil {
		return status.Error(codes.Unauthenticated, "Invalid auth token: "+err.Error())
	}
	return nil
}

type claims struct {
	Sub string `json:"sub"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

func (s *Server) issueJWT(sub string, now time.Time, ttl time.Duration) string {
	body, _ := json.Marshal(claims{Sub: sub, Iat: now.Unix(), Exp: now.Add(ttl).Unix()})
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(body)
	mac := hmac.New(sha256.New, s.jwtKey)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (s *Server) checkJWT(tok, tokenID string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT")
	}
	mac := hmac.New(sha256.New, s.jwtKey)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return fmt.Errorf("bad signature")
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("bad payload")
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil {
		return fmt.Errorf("bad claims")
	}
	if c.Sub != tokenID {
		return fmt.Errorf("issued to another token")
	}
	if time.Now().Unix() >= c.Exp {
		return fmt.Errorf("expired")
	}
	return nil
}

// service implements the gRPC methods; the rest answer UNIMPLEMENTED.
type service struct {
	pb.UnimplementedModalClientServer
	s *Server
}

// AuthTokenGet issues a signed JWT with sub, iat and exp claims.
func (v service) AuthTokenGet(ctx context.Context, _ *pb.AuthTokenGetRequest) (*pb.AuthTokenGetResponse, error) {
	s := v.s
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	ttl := s.tokenTTL
	s.tokens++
	s.mu.Unlock()
	tok := s.issueJWT(strings.Join(md.Get("x-modal-token-id"), ""), time.Now(), ttl)
	return pb.AuthTokenGetResponse_builder{Token: tok}.Build(), nil
}

// lookup finds a sandbox for a call about it. Caller holds s.mu.
func (s *Server) lookup(id string) (*sandbox, error) {
	sb, ok := s.sandboxes[id]
	if !ok || s.failure.Kind == providertest.FailSpuriousNotFound {
		return nil, status.Errorf(codes.NotFound, "Sandbox with id '%s' not found", id)
	}
	return sb, nil
}

func result(sb *sandbox) *pb.GenericResult {
	if sb.FinishedAt.IsZero() {
		return nil
	}
	r := pb.GenericResult_builder{Status: sb.Result}
	if sb.Result == pb.GenericResult_GENERIC_STATUS_TERMINATED {
		r.Exitcode = 137
	}
	return r.Build()
}

// SandboxWait waits up to req.timeout seconds for the sandbox to finish and
// returns its result, or no result if it is still running. The SDK's
// Sandboxes.FromID calls it with timeout 0 to check that the id exists.
func (v service) SandboxWait(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	s := v.s
	s.mu.Lock()
	sb, err := s.lookup(req.GetSandboxId())
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if t := req.GetTimeout(); t > 0 {
		timer := time.NewTimer(time.Duration(float64(t) * float64(time.Second)))
		defer timer.Stop()
		select {
		case <-sb.finished:
		case <-timer.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return nil, status.Error(codes.Unavailable, "server shutting down")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return pb.SandboxWaitResponse_builder{Result: result(sb)}.Build(), nil
}

// SandboxTerminate terminates a running sandbox. A sandbox that has already
// finished stays as it is, and the answer carries its existing result.
func (v service) SandboxTerminate(_ context.Context, req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	sb.Terminations++
	if !sb.FinishedAt.IsZero() {
		return pb.SandboxTerminateResponse_builder{ExistingResult: result(sb)}.Build(), nil
	}
	s.finishLocked(sb, pb.GenericResult_GENERIC_STATUS_TERMINATED)
	return &pb.SandboxTerminateResponse{}, nil
}

// SandboxTagsGet returns the sandbox's tags.
func (v service) SandboxTagsGet(_ context.Context, req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	return pb.SandboxTagsGetResponse_builder{Tags: tagList(sb.Tags)}.Build(), nil
}

// SandboxList returns one page of sandboxes, newest first: those created
// before req.before_timestamp (all when it is 0), in req.app_id if set,
// carrying every tag in req.tags, unfinished ones only unless
// req.include_finished. An empty page ends the listing.
func (v service) SandboxList(_ context.Context, req *pb.SandboxListRequest) (*pb.SandboxListResponse, error) {
	s := v.s
	if env := req.GetEnvironmentName(); env != "" && env != DefaultEnvironment {
		return nil, status.Errorf(codes.NotFound, "Environment '%s' not found", env)
	}
	want := map[string]string{}
	for _, t := range req.GetTags() {
		if prev, dup := want[t.GetTagName()]; dup && prev != t.GetTagValue() {
			return nil, status.Errorf(codes.InvalidArgument, "conflicting values for tag %q", t.GetTagName())
		}
		want[t.GetTagName()] = t.GetTagValue()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var match []*sandbox
	for _, sb := range s.sandboxes {
		switch {
		case !req.GetIncludeFinished() && !sb.FinishedAt.IsZero():
		case req.GetAppId() != "" && req.GetAppId() != appID:
		case req.GetBeforeTimestamp() > 0 && seconds(sb.CreatedAt) >= req.GetBeforeTimestamp():
		case !hasTags(sb.Tags, want):
		default:
			match = append(match, sb)
		}
	}
	slices.SortFunc(match, func(a, b *sandbox) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	if len(match) > s.pageSize {
		match = match[:s.pageSize]
	}
	infos := make([]*pb.SandboxInfo, 0, len(match))
	for _, sb := range match {
		task := pb.TaskInfo_builder{
			Id:         "ta-" + sb.ID[3:],
			SandboxId:  sb.ID,
			EnqueuedAt: seconds(sb.CreatedAt),
			StartedAt:  seconds(sb.CreatedAt),
			Result:     result(sb),
		}
		if !sb.FinishedAt.IsZero() {
			task.FinishedAt = seconds(sb.FinishedAt)
		}
		infos = append(infos, pb.SandboxInfo_builder{
			Id:        sb.ID,
			CreatedAt: seconds(sb.CreatedAt),
			AppId:     appID,
			TaskInfo:  task.Build(),
			Tags:      tagList(sb.Tags),
		}.Build())
	}
	return pb.SandboxListResponse_builder{Sandboxes: infos}.Build(), nil
}

// appID is the app every fake sandbox belongs to.
const appID = "ap-modaltest"

func seconds(t time.Time) float64 { return float64(t.Unix()) + float64(t.Nanosecond())/1e9 }

func hasTags(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func tagList(tags map[string]string) []*pb.SandboxTag {
	keys := slices.Sorted(maps.Keys(tags))
	out := make([]*pb.SandboxTag, 0, len(keys))
	for _, k := range keys {
		out = append(out, pb.SandboxTag_builder{TagName: k, TagValue: tags[k]}.Build())
	}
	return out
}

var _ providertest.Fake = (*Server)(nil)
