// Package modaltest runs an in-process fake of Modal's control plane, the
// gRPC service modal.client.ModalClient, for tests, like net/http/httptest.
//
// # Basics
//
// NewServer listens on 127.0.0.1 (plaintext HTTP/2) and serves the calls
// that reaperd's Modal provider and the Modal Go SDK
// (github.com/modal-labs/modal-client/go v0.11.1) make to check
// credentials, close and list sandboxes:
//
//	AuthTokenGet, WorkspaceNameLookup, EnvironmentList, AppList,
//	SandboxList, SandboxListV2,
//	SandboxTerminate, SandboxTerminateV2, SandboxWait, SandboxWaitV2,
//	SandboxGetTaskId, SandboxGetTaskIdV2, SandboxTagsGet, SandboxTagsGetV2
//
// Point the provider at Server.URL ("http://127.0.0.1:PORT", the form
// MODAL_SERVER_URL takes for a plaintext server):
//
//	srv := modaltest.NewServer("ak-test", "as-test")
//	defer srv.Close()
//	v1 := srv.Create(map[string]string{"team": "a"}, time.Now())
//	v2 := srv.CreateSandbox(modaltest.SandboxSpec{V2: true, Environment: modaltest.DevEnvironment})
//
// Every call must carry the token pair in x-modal-token-id and
// x-modal-token-secret, and every call but AuthTokenGet a live auth token
// from AuthTokenGet (a signed JWT with an exp claim) in x-modal-auth-token;
// otherwise the call fails with UNAUTHENTICATED, as at Modal.
//
// # V1 and V2 sandboxes
//
// Modal runs two sandbox backends. A V1 sandbox id is "sb-" and 22 base-62
// characters; any other id is a V2 sandbox (today "sb-" and a 26-character
// ULID), and the SDK routes calls about it to the V2 RPCs
// (SandboxTerminateV2, SandboxWaitV2, ...). The fake keeps the backends
// apart as Modal does: a V1 RPC about a V2 sandbox, or a V2 RPC about a V1
// sandbox, answers NOT_FOUND exactly as for an id it has never seen, while
// the sandbox keeps running. SandboxList returns V1 sandboxes only;
// SandboxListV2 returns both, as the SDK documents for ExperimentalList.
//
// # Environments and apps
//
// The fake knows the environments DefaultEnvironment ("main", the token's
// default, used when a request names none) and DevEnvironment ("dev"), and
// any added with AddEnvironment. A request naming another one answers
// NOT_FOUND. Every sandbox lives in one environment and belongs to one
// deployed app of that environment (DefaultApp unless SandboxSpec.App
// says otherwise); AppList reports the apps of an environment. Calls about
// one sandbox (terminate, wait, tags) find it whatever its environment, as
// Modal's do: they carry no environment.
//
// # Sizes
//
// A sandbox's size (SandboxSpec.Resources, in the units of Modal's
// Resources message) is listed as Modal's SandboxInfo carries it:
// resource_info.milli_cpu and memory_mb (each a value flagged is_default
// when the sandbox asked for none: then Modal's documented defaults,
// DefaultMilliCPU and DefaultMemoryMiB), milli_cpu_max, memory_mb_max and
// ephemeral_disk_mb (zero when not asked for), resource_info.gpu_type (the
// GPU type alone), and task_info.gpu_type and task_info.gpu_config (type
// and count) for a sandbox with a GPU. SandboxSpec.NoResourceInfo lists a
// sandbox without resource_info, as a server older than that field (2026)
// would.
//
// # Caveats
//
// Sandboxes are created with Create and CreateSandbox, not through
// SandboxCreate. Modal does not document how its server fills
// resource_info: the fake reports the request a sandbox was given, or
// Modal's documented default flagged is_default, and the GPU type alone in
// resource_info.gpu_type. SandboxList pages newest first, SetPageSize
// sandboxes a page (100 by default; Modal does not document its own), and
// before_timestamp selects sandboxes created strictly earlier. An id the
// fake has never seen is NOT_FOUND, whatever its form; so is every id while
// FailSpuriousNotFound is injected (see Fail).
package modaltest

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/reaperd/reaperd/providers/providertest"
)

// Environments the fake knows from the start.
const (
	// DefaultEnvironment is the token's default environment, the one a
	// request without an environment name means.
	DefaultEnvironment = "main"
	// DevEnvironment is a second environment.
	DevEnvironment = "dev"
)

// DefaultApp is the name of the app a sandbox belongs to unless
// SandboxSpec.App names another.
const DefaultApp = "modaltest"

// Workspace is the workspace name WorkspaceNameLookup reports.
const Workspace = "modaltest-workspace"

// Modal's default CPU and memory requests, for a sandbox that asks for
// none: 0.125 physical cores and 128 MiB
// (https://modal.com/docs/guide/resources).
const (
	DefaultMilliCPU  = 125
	DefaultMemoryMiB = 128
)

// DefaultPageSize is the number of sandboxes a SandboxList page holds
// until SetPageSize changes it.
const DefaultPageSize = 100

// ThrottleSignal selects how a RESOURCE_EXHAUSTED answer (FailRateLimited)
// carries its retry delay. Signals combine with |.
type ThrottleSignal int

const (
	// SignalRetryPolicy is a modal.client.RPCRetryPolicy status detail
	// (retry_after_secs, float seconds) under the type URL prefix
	// type.modal.com/, as Modal's server encodes it: the signal the Modal Go
	// SDK's retry interceptor reads (client.go, getServerRetryPolicy). The
	// default.
	SignalRetryPolicy ThrottleSignal = 1 << iota
	// SignalRetryInfo is a google.rpc.RetryInfo status detail.
	SignalRetryInfo
	// SignalRetryAfterHeader is a "retry-after" response metadata entry in
	// seconds, as an HTTP front end sends it.
	SignalRetryAfterHeader
)

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

	mu           sync.Mutex
	sandboxes    map[string]*sandbox
	environments []string                     // in order of creation; [0] is the default
	apps         map[string]map[string]string // environment -> app name -> app id
	pageSize     int
	failure      providertest.Failure
	throttle     ThrottleSignal
	termDelay    time.Duration
	tokenTTL     time.Duration
	requests     []string
	tokens       int // auth tokens issued
}

// Sandbox is a snapshot of one sandbox at the fake.
type Sandbox struct {
	ID          string
	V2          bool // created on the V2 backend
	Environment string
	App         string // app name
	AppID       string
	Name        string // sandbox name, may be empty
	Tags        map[string]string
	CreatedAt   time.Time
	// FinishedAt is zero while the sandbox runs.
	FinishedAt time.Time
	// Result is the final status once finished (TERMINATED after a
	// terminate).
	Result pb.GenericResult_GenericStatus
	// Terminations counts accepted terminate calls (V1 or V2, whichever
	// matches the sandbox) for this sandbox.
	Terminations int
	// Resources is the size the sandbox was created with.
	Resources Resources
	// NoResourceInfo: SandboxList leaves resource_info out.
	NoResourceInfo bool
}

// Resources is the size a sandbox asks for, in the units of Modal's
// Resources message. A zero request means the sandbox asked for none.
type Resources struct {
	MilliCPU     uint32 // CPU request, thousandths of a physical core (1 core = 2 vCPUs)
	MilliCPUMax  uint32 // CPU limit, thousandths of a physical core
	MemoryMiB    uint32 // memory request
	MemoryMiBMax uint32 // memory limit
	DiskMiB      uint32 // ephemeral disk
	GPUType      string // "A100", "H100", as Modal names GPUs
	GPUCount     uint32
}

type sandbox struct {
	Sandbox
	finished    chan struct{} // closed when the sandbox finishes
	terminating bool          // a delayed finish is scheduled
}

// SandboxSpec describes a sandbox for CreateSandbox. The zero value is a
// running V1 sandbox of DefaultApp in DefaultEnvironment, created now.
type SandboxSpec struct {
	V2          bool
	Environment string // "" means DefaultEnvironment; must be known
	App         string // app name; "" means DefaultApp
	Name        string
	Tags        map[string]string
	CreatedAt   time.Time // zero means now
	Resources   Resources
	// NoResourceInfo lists the sandbox without resource_info, as a server
	// that does not fill it would.
	NoResourceInfo bool
}

// NewServer starts a fake that accepts the token pair tokenID/tokenSecret.
// It panics if it cannot listen, like httptest.NewServer.
func NewServer(tokenID, tokenSecret string) *Server {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("modaltest: listen: %v", err))
	}
	s := &Server{
		URL:          "http://" + lis.Addr().String(),
		tokenID:      tokenID,
		tokenSecret:  tokenSecret,
		jwtKey:       []byte(rand.Text()),
		lis:          lis,
		done:         make(chan struct{}),
		sandboxes:    map[string]*sandbox{},
		environments: []string{DefaultEnvironment, DevEnvironment},
		apps:         map[string]map[string]string{},
		pageSize:     DefaultPageSize,
		throttle:     SignalRetryPolicy,
		tokenTTL:     time.Hour,
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

// AddEnvironment makes an environment known to the fake.
func (s *Server) AddEnvironment(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name != "" && !slices.Contains(s.environments, name) {
		s.environments = append(s.environments, name)
	}
}

// Create adds a running V1 sandbox of DefaultApp in DefaultEnvironment with
// the given tags, created at createdAt, and returns its id ("sb-" and 22
// letters and digits).
func (s *Server) Create(tags map[string]string, createdAt time.Time) string {
	return s.CreateSandbox(SandboxSpec{Tags: tags, CreatedAt: createdAt})
}

// CreateV2 is Create for a V2 sandbox: its id is "sb-" and a 26-character
// ULID.
func (s *Server) CreateV2(tags map[string]string, createdAt time.Time) string {
	return s.CreateSandbox(SandboxSpec{V2: true, Tags: tags, CreatedAt: createdAt})
}

// CreateSandbox adds a running sandbox as spec says and returns its id. It
// panics if spec names an environment the fake does not know.
func (s *Server) CreateSandbox(spec SandboxSpec) string {
	env := cmp.Or(spec.Environment, DefaultEnvironment)
	app := cmp.Or(spec.App, DefaultApp)
	at := spec.CreatedAt
	if at.IsZero() {
		at = time.Now()
	}
	id := NewV1ID()
	if spec.V2 {
		id = NewV2ID()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.environments, env) {
		panic(fmt.Sprintf("modaltest: CreateSandbox in unknown environment %q", env))
	}
	s.sandboxes[id] = &sandbox{
		Sandbox: Sandbox{
			ID:             id,
			V2:             spec.V2,
			Environment:    env,
			App:            app,
			AppID:          s.appIDLocked(env, app),
			Name:           spec.Name,
			Tags:           maps.Clone(spec.Tags),
			CreatedAt:      at,
			Resources:      spec.Resources,
			NoResourceInfo: spec.NoResourceInfo,
		},
		finished: make(chan struct{}),
	}
	return id
}

// appIDLocked returns the id of the app named name in env, creating the app
// (deployed) on first use. Caller holds s.mu.
func (s *Server) appIDLocked(env, name string) string {
	if s.apps[env] == nil {
		s.apps[env] = map[string]string{}
	}
	id, ok := s.apps[env][name]
	if !ok {
		sum := sha256.Sum256([]byte(env + "/" + name))
		id = "ap-" + base62(sum[:], 22)
		s.apps[env][name] = id
	}
	return id
}

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func base62(b []byte, n int) string {
	out := make([]byte, n)
	for i := range out {
		out[i] = base62Alphabet[int(b[i%len(b)])%len(base62Alphabet)]
	}
	return string(out)
}

// NewV1ID returns a fresh id of the V1 shape: "sb-" and 22 base-62
// characters.
func NewV1ID() string {
	b := make([]byte, 22)
	_, _ = rand.Read(b)
	return "sb-" + base62(b, 22)
}

// crockford is the ULID alphabet.
var crockford = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// NewV2ID returns a fresh id of the V2 shape: "sb-" and a 26-character
// ULID (Crockford base 32, upper case).
func NewV2ID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "sb-0" + crockford.EncodeToString(b)[:25]
}

// IsV1ID reports whether id has the V1 shape, "sb-" and 22 base-62
// characters, as the SDK decides (sandbox.go, isV1SandboxID).
func IsV1ID(id string) bool {
	suffix, ok := strings.CutPrefix(id, "sb-")
	if !ok || len(suffix) != 22 {
		return false
	}
	for _, c := range suffix {
		if !strings.ContainsRune(base62Alphabet, c) {
			return false
		}
	}
	return true
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
// RESOURCE_EXHAUSTED (carrying f.RetryAfter, when it is positive, in the
// signals SetThrottleSignal chose), FailServerError UNAVAILABLE, and
// FailHang holds the call until the client gives up. FailSpuriousNotFound
// answers the calls about one sandbox (wait, terminate, tags, task id; V1
// and V2), once authenticated, exactly as for an id the fake does not know:
// NOT_FOUND "Sandbox with id '<id>' not found", as Modal answers a token of
// another workspace; the sandbox keeps running and the listings still
// return it. FailConflict has no Modal counterpart and injects nothing.
func (s *Server) Fail(f providertest.Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetThrottleSignal chooses how FailRateLimited carries its delay
// (SignalRetryPolicy, the default, as Modal does). Zero sends no delay.
func (s *Server) SetThrottleSignal(sig ThrottleSignal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = sig
}

// SetTerminateDelay makes an accepted terminate finish the sandbox d later
// instead of at once, as a sandbox that takes time to shut down (zero, the
// default, finishes it before the terminate call returns).
func (s *Server) SetTerminateDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.termDelay = d
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
// order, e.g. "AuthTokenGet", "SandboxTerminateV2", including rejected
// ones.
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

// Get returns a snapshot of one sandbox.
func (s *Server) Get(id string) (Sandbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return Sandbox{}, false
	}
	c := sb.Sandbox
	c.Tags = maps.Clone(sb.Tags)
	return c, true
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
	sig := s.throttle
	s.mu.Unlock()

	switch f.Kind {
	case providertest.FailUnauthorized:
		return nil, status.Error(codes.Unauthenticated, "Invalid token id or secret")
	case providertest.FailRateLimited:
		return nil, throttled(ctx, f.RetryAfter, sig)
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

// throttled builds the RESOURCE_EXHAUSTED answer carrying d in the signals
// sig selects.
func throttled(ctx context.Context, d time.Duration, sig ThrottleSignal) error {
	st := status.New(codes.ResourceExhausted, "Too many requests, please slow down")
	if d <= 0 {
		return st.Err()
	}
	p := st.Proto()
	if sig&SignalRetryPolicy != 0 {
		// Modal's server encodes its own details under type.modal.com/, not
		// type.googleapis.com/ (the SDK's client_test.go, statusWithDetails).
		policy := pb.RPCRetryPolicy_builder{RetryAfterSecs: float32(d.Seconds())}.Build()
		b, err := proto.Marshal(policy)
		if err != nil {
			panic(err)
		}
		p.Details = append(p.Details, &anypb.Any{
			TypeUrl: "type.modal.com/" + string(policy.ProtoReflect().Descriptor().FullName()),
			Value:   b,
		})
	}
	if sig&SignalRetryInfo != 0 {
		a, err := anypb.New(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			panic(err)
		}
		p.Details = append(p.Details, a)
	}
	if sig&SignalRetryAfterHeader != 0 {
		v := strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
		_ = grpc.SetHeader(ctx, metadata.Pairs("retry-after", v))
	}
	return status.FromProto(p).Err()
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

// WorkspaceNameLookup answers who the token belongs to.
func (v service) WorkspaceNameLookup(context.Context, *emptypb.Empty) (*pb.WorkspaceNameLookupResponse, error) {
	return pb.WorkspaceNameLookupResponse_builder{WorkspaceName: Workspace, Username: "reaperd"}.Build(), nil
}

// EnvironmentList lists the environments, the default one marked.
func (v service) EnvironmentList(context.Context, *emptypb.Empty) (*pb.EnvironmentListResponse, error) {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make([]*pb.EnvironmentListItem, 0, len(s.environments))
	for i, name := range s.environments {
		items = append(items, pb.EnvironmentListItem_builder{
			Name:          name,
			EnvironmentId: "en-" + name,
			Default:       i == 0,
		}.Build())
	}
	return pb.EnvironmentListResponse_builder{Items: items}.Build(), nil
}

// environment resolves a request's environment name. Caller holds s.mu.
func (s *Server) environmentLocked(name string) (string, error) {
	if name == "" {
		return s.environments[0], nil
	}
	if !slices.Contains(s.environments, name) {
		return "", status.Errorf(codes.NotFound, "Environment '%s' not found", name)
	}
	return name, nil
}

// AppList lists the apps of an environment, all deployed.
func (v service) AppList(_ context.Context, req *pb.AppListRequest) (*pb.AppListResponse, error) {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	env, err := s.environmentLocked(req.GetEnvironmentName())
	if err != nil {
		return nil, err
	}
	var items []*pb.AppListResponse_AppListItem
	for _, name := range slices.Sorted(maps.Keys(s.apps[env])) {
		items = append(items, pb.AppListResponse_AppListItem_builder{
			AppId:       s.apps[env][name],
			Name:        name,
			Description: name,
			State:       pb.AppState_APP_STATE_DEPLOYED,
		}.Build())
	}
	return pb.AppListResponse_builder{Apps: items}.Build(), nil
}

// lookup finds a sandbox for a call about it on backend v2 (a V2 RPC) or
// V1. A sandbox of the other backend is as unknown as an id never seen.
// Caller holds s.mu.
func (s *Server) lookup(id string, v2 bool) (*sandbox, error) {
	sb, ok := s.sandboxes[id]
	if !ok || sb.V2 != v2 || s.failure.Kind == providertest.FailSpuriousNotFound {
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

// SandboxWait waits up to req.timeout seconds for a V1 sandbox to finish
// and returns its result, or no result if it is still running.
func (v service) SandboxWait(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	return v.s.wait(ctx, req, false)
}

// SandboxWaitV2 is SandboxWait for V2 sandboxes.
func (v service) SandboxWaitV2(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	return v.s.wait(ctx, req, true)
}

func (s *Server) wait(ctx context.Context, req *pb.SandboxWaitRequest, v2 bool) (*pb.SandboxWaitResponse, error) {
	s.mu.Lock()
	sb, err := s.lookup(req.GetSandboxId(), v2)
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
	return pb.SandboxWaitResponse_builder{
		Result:   result(sb),
		Metadata: pb.SandboxHandleMetadata_builder{Result: result(sb), AppId: sb.AppID}.Build(),
	}.Build(), nil
}

// SandboxTerminate terminates a running V1 sandbox. A sandbox that has
// already finished stays as it is, and the answer carries its existing
// result.
func (v service) SandboxTerminate(_ context.Context, req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	return v.s.terminate(req, false)
}

// SandboxTerminateV2 is SandboxTerminate for V2 sandboxes.
func (v service) SandboxTerminateV2(_ context.Context, req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	return v.s.terminate(req, true)
}

func (s *Server) terminate(req *pb.SandboxTerminateRequest, v2 bool) (*pb.SandboxTerminateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := s.lookup(req.GetSandboxId(), v2)
	if err != nil {
		return nil, err
	}
	sb.Terminations++
	if !sb.FinishedAt.IsZero() {
		return pb.SandboxTerminateResponse_builder{ExistingResult: result(sb)}.Build(), nil
	}
	if s.termDelay > 0 {
		if !sb.terminating {
			sb.terminating = true
			time.AfterFunc(s.termDelay, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.finishLocked(sb, pb.GenericResult_GENERIC_STATUS_TERMINATED)
			})
		}
		return &pb.SandboxTerminateResponse{}, nil
	}
	s.finishLocked(sb, pb.GenericResult_GENERIC_STATUS_TERMINATED)
	return &pb.SandboxTerminateResponse{}, nil
}

// SandboxTagsGet returns a V1 sandbox's tags.
func (v service) SandboxTagsGet(_ context.Context, req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	return v.s.tagsGet(req, false)
}

// SandboxTagsGetV2 returns a V2 sandbox's tags.
func (v service) SandboxTagsGetV2(_ context.Context, req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	return v.s.tagsGet(req, true)
}

func (s *Server) tagsGet(req *pb.SandboxTagsGetRequest, v2 bool) (*pb.SandboxTagsGetResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := s.lookup(req.GetSandboxId(), v2)
	if err != nil {
		return nil, err
	}
	return pb.SandboxTagsGetResponse_builder{Tags: tagList(sb.Tags)}.Build(), nil
}

// SandboxGetTaskId returns a V1 sandbox's task id, and its result once it
// has finished.
func (v service) SandboxGetTaskId(_ context.Context, req *pb.SandboxGetTaskIdRequest) (*pb.SandboxGetTaskIdResponse, error) {
	return v.s.taskID(req, false)
}

// SandboxGetTaskIdV2 is SandboxGetTaskId for V2 sandboxes.
func (v service) SandboxGetTaskIdV2(_ context.Context, req *pb.SandboxGetTaskIdRequest) (*pb.SandboxGetTaskIdResponse, error) {
	return v.s.taskID(req, true)
}

func (s *Server) taskID(req *pb.SandboxGetTaskIdRequest, v2 bool) (*pb.SandboxGetTaskIdResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, err := s.lookup(req.GetSandboxId(), v2)
	if err != nil {
		return nil, err
	}
	id := "ta-" + sb.ID[3:]
	return pb.SandboxGetTaskIdResponse_builder{TaskId: &id, TaskResult: result(sb)}.Build(), nil
}

// SandboxList returns one page of V1 sandboxes; see list.
func (v service) SandboxList(_ context.Context, req *pb.SandboxListRequest) (*pb.SandboxListResponse, error) {
	return v.s.list(req, false)
}

// SandboxListV2 returns one page of sandboxes of both backends; see list.
func (v service) SandboxListV2(_ context.Context, req *pb.SandboxListRequest) (*pb.SandboxListResponse, error) {
	return v.s.list(req, true)
}

// list returns one page of sandboxes, newest first: those of req's
// environment (the default one when it names none) created before
// req.before_timestamp (all when it is 0), in req.app_id if set, carrying
// every tag in req.tags, unfinished ones only unless req.include_finished;
// V2 sandboxes only when v2. An empty page ends the listing.
func (s *Server) list(req *pb.SandboxListRequest, v2 bool) (*pb.SandboxListResponse, error) {
	want := map[string]string{}
	for _, t := range req.GetTags() {
		if prev, dup := want[t.GetTagName()]; dup && prev != t.GetTagValue() {
			return nil, status.Errorf(codes.InvalidArgument, "conflicting values for tag %q", t.GetTagName())
		}
		want[t.GetTagName()] = t.GetTagValue()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	env, err := s.environmentLocked(req.GetEnvironmentName())
	if err != nil {
		return nil, err
	}
	var match []*sandbox
	for _, sb := range s.sandboxes {
		switch {
		case sb.Environment != env:
		case sb.V2 && !v2:
		case !req.GetIncludeFinished() && !sb.FinishedAt.IsZero():
		case req.GetAppId() != "" && req.GetAppId() != sb.AppID:
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
		res := sb.Resources
		if res.GPUType != "" || res.GPUCount > 0 {
			task.GpuType = res.GPUType
			task.GpuConfig = pb.GPUConfig_builder{GpuType: res.GPUType, Count: res.GPUCount}.Build()
		}
		info := pb.SandboxInfo_builder{
			Id:        sb.ID,
			CreatedAt: seconds(sb.CreatedAt),
			AppId:     sb.AppID,
			Name:      sb.Name,
			TaskInfo:  task.Build(),
			Tags:      tagList(sb.Tags),
			Metadata:  pb.SandboxHandleMetadata_builder{Result: result(sb), AppId: sb.AppID}.Build(),
		}
		if !sb.NoResourceInfo {
			info.ResourceInfo = resourceInfo(res)
		}
		infos = append(infos, info.Build())
	}
	return pb.SandboxListResponse_builder{Sandboxes: infos}.Build(), nil
}

// resourceInfo renders a sandbox's size as SandboxInfo.resource_info.
func resourceInfo(r Resources) *pb.ResourceInfo {
	value := func(v, def uint32) *pb.ResourceInfo_ResourceValue {
		if v == 0 {
			return pb.ResourceInfo_ResourceValue_builder{Value: def, IsDefault: true}.Build()
		}
		return pb.ResourceInfo_ResourceValue_builder{Value: v}.Build()
	}
	return pb.ResourceInfo_builder{
		MilliCpu:        value(r.MilliCPU, DefaultMilliCPU),
		MemoryMb:        value(r.MemoryMiB, DefaultMemoryMiB),
		GpuType:         r.GPUType,
		MilliCpuMax:     r.MilliCPUMax,
		MemoryMbMax:     r.MemoryMiBMax,
		EphemeralDiskMb: r.DiskMiB,
	}.Build()
}

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
