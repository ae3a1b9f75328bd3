package modal

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/reaperd/reaperd/providers/internal/kit"
)

// Metadata the Modal control plane reads on every call, as the Go SDK sends
// it (modal-client/go v0.11.1 client.go: injectRequiredHeaders,
// authTokenInterceptor, retryInterceptor).
const (
	mdClientType           = "x-modal-client-type"
	mdClientVersion        = "x-modal-client-version"
	mdLibmodal             = "x-modal-libmodal-version"
	mdHost                 = "x-modal-host"
	mdTokenID              = "x-modal-token-id"
	mdTokenSecret          = "x-modal-token-secret"
	mdAuthToken            = "x-modal-auth-token"
	mdIdempotencyKey       = "x-idempotency-key"
	mdRetryAttempt         = "x-retry-attempt"
	mdThrottleRetryAttempt = "x-throttle-retry-attempt"

	// mdRetryAfter is the response metadata an HTTP front end may send with
	// a throttled answer. The SDK does not read it (its retry interceptor
	// reads only the RPCRetryPolicy status detail); reaperd honours it too.
	mdRetryAfter = "retry-after"

	// clientVersion is the Python client version the Go SDK claims to
	// behave like.
	clientVersion = "1.0.0"

	authTokenGetMethod = "/modal.client.ModalClient/AuthTokenGet"

	// tokenRefreshMargin: a cached auth token is replaced this long before
	// its exp claim.
	tokenRefreshMargin = time.Minute
	// tokenDefaultLifetime applies to a token without an exp claim, as in
	// the SDK.
	tokenDefaultLifetime = 20 * time.Minute
)

var clientTypeLibmodalGo = strconv.Itoa(int(pb.ClientType_CLIENT_TYPE_LIBMODAL_GO))

// headerInterceptor adds the token pair and the client identification, as
// the SDK does (its x-modal-libmodal-version is "modal-go/" and the SDK's
// Client.Version()).
func (p *Provider) headerInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = metadata.AppendToOutgoingContext(ctx,
		mdClientType, clientTypeLibmodalGo,
		mdClientVersion, clientVersion,
		mdLibmodal, "modal-go/"+p.sdkVersion,
		mdHost, p.host,
		mdTokenID, p.cfg.TokenID,
		mdTokenSecret, p.cfg.TokenSecret,
		mdIdempotencyKey, uuid.NewString(),
		mdRetryAttempt, "0",
		mdThrottleRetryAttempt, "0",
	)
	return invoker(ctx, method, req, reply, cc, opts...)
}

// retryAfterInterceptor reads a "retry-after" entry of a failed call's
// response header or trailer metadata and attaches its delay to the error
// (see retryAfterError), so that wrap can pass it on whichever layer (the
// SDK or this package) made the call.
func retryAfterInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var header, trailer metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&header), grpc.Trailer(&trailer))...)
	if err == nil {
		return nil
	}
	var d time.Duration
	for _, md := range []metadata.MD{header, trailer} {
		for _, v := range md.Get(mdRetryAfter) {
			if x, ok := kit.ParseRetryAfter(v, time.Now()); ok {
				d = max(d, x)
			}
		}
	}
	if d > 0 {
		return &retryAfterError{err: err, after: d}
	}
	return err
}

// retryAfterError is a failed call's error with the delay of its
// retry-after metadata.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// timeoutInterceptor bounds each call by the configured timeout (or the
// caller's earlier deadline).
func (p *Provider) timeoutInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	return invoker(ctx, method, req, reply, cc, opts...)
}

// authInterceptor adds the short-lived auth token (a JWT from AuthTokenGet)
// to every call but AuthTokenGet, and caches the token of every
// AuthTokenGet answer, the SDK token manager's included.
func (p *Provider) authInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == authTokenGetMethod {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := reply.(*pb.AuthTokenGetResponse); ok && err == nil {
			p.tokens.store(r.GetToken(), time.Now())
		}
		return err
	}
	token, err := p.tokens.get(ctx, p.fetchToken)
	if err != nil {
		return err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, mdAuthToken, token)
	return invoker(ctx, method, req, reply, cc, opts...)
}

// fetchToken calls AuthTokenGet through the whole interceptor chain; the
// auth interceptor stores the answer.
func (p *Provider) fetchToken(ctx context.Context) error {
	resp, err := p.rpc.AuthTokenGet(ctx, &pb.AuthTokenGetRequest{})
	if err != nil {
		return err
	}
	if resp.GetToken() == "" {
		return errors.New("get auth token: server returned an empty token")
	}
	return nil
}

// tokenCache holds the current auth token. One fetch runs at a time; other
// callers wait for it or for their ctx.
type tokenCache struct {
	now func() time.Time

	mu     sync.Mutex
	token  string
	expiry time.Time

	fetch chan struct{} // one slot: held by the caller that fetches
}

func newTokenCache() *tokenCache {
	return &tokenCache{now: time.Now, fetch: make(chan struct{}, 1)}
}

func (t *tokenCache) store(token string, now time.Time) {
	if token == "" {
		return
	}
	exp, ok := jwtExpiry(token)
	if !ok {
		exp = now.Add(tokenDefaultLifetime)
	}
	t.mu.Lock()
	t.token, t.expiry = token, exp
	t.mu.Unlock()
}

// current returns the cached token if it is valid for at least margin.
func (t *tokenCache) current(margin time.Duration) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && t.now().Before(t.expiry.Add(-margin)) {
		return t.token
	}
	return ""
}

func (t *tokenCache) get(ctx context.Context, fetch func(context.Context) error) (string, error) {
	if tok := t.current(tokenRefreshMargin); tok != "" {
		return tok, nil
	}
	select {
	case t.fetch <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-t.fetch }()
	if tok := t.current(tokenRefreshMargin); tok != "" { // fetched while we waited
		return tok, nil
	}
	if err := fetch(ctx); err != nil {
		return "", err
	}
	if tok := t.current(0); tok != "" { // a short-lived token is still usable
		return tok, nil
	}
	return "", errors.New("get auth token: server returned an expired token")
}

// jwtExpiry reads the exp claim of a JWT without checking its signature
// (the server does that).
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil || *claims.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(int64(*claims.Exp), 0), true
}
