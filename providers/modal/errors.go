package modal

import (
	"context"
	"errors"
	"fmt"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"
	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reaperd/reaperd/providers/internal/kit"
	"github.com/reaperd/reaperd/reaper"
)

// grpcStatus returns the status of the innermost gRPC error in err's chain
// (the SDK and retryAfterInterceptor wrap some of them), with its own
// message and details.
func grpcStatus(err error) (*status.Status, bool) {
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if st := gs.GRPCStatus(); st != nil {
			return st, true
		}
	}
	return nil, false
}

// wrap classifies err from a call made for op ("close", "list" or "check")
// into a *reaper.ProviderError. When the caller's ctx has ended, the error
// wraps ctx.Err() whatever the call returned. NOT_FOUND, and the SDK's
// NotFoundError, are reaper.ErrNotFound; INVALID_ARGUMENT, and the SDK's
// InvalidError, are reaper.ErrInvalid.
// The token pair is redacted from the message, should a server or proxy
// ever echo it.
func (p *Provider) wrap(ctx context.Context, op, id string, err error) *reaper.ProviderError {
	pe := p.classify(ctx, op, id, err)
	pe.Err = kit.RedactError(pe.Err, p.cfg.TokenID, p.cfg.TokenSecret)
	return pe
}

func (p *Provider) classify(ctx context.Context, op, id string, err error) *reaper.ProviderError {
	pe := &reaper.ProviderError{Provider: Type, Op: op, ID: id, Kind: reaper.ErrTransient, Err: err}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if st, ok := grpcStatus(err); errors.Is(err, ctxErr) ||
			(ok && (st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded)) {
			pe.Err = ctxErr
		} else {
			pe.Err = fmt.Errorf("%w (%s)", ctxErr, errorText(err))
		}
		return pe
	}
	if nf := (modalsdk.NotFoundError{}); errors.As(err, &nf) {
		pe.Kind = reaper.ErrNotFound
		pe.Err = fmt.Errorf("%s: %s", codes.NotFound, nf.Exception)
		return pe
	}
	if inv := (modalsdk.InvalidError{}); errors.As(err, &inv) {
		pe.Kind = reaper.ErrInvalid
		pe.Err = fmt.Errorf("%s: %s", codes.InvalidArgument, inv.Exception)
		return pe
	}
	st, ok := grpcStatus(err)
	if !ok {
		return pe // not a gRPC status: a local failure, retried
	}
	pe.Err = fmt.Errorf("%s: %s", st.Code(), st.Message())
	// A delay the server asks for applies whatever the code: the engine's
	// backoff honours it for any error.
	pe.RetryAfter = retryDelay(err, st)
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		pe.Kind = reaper.ErrUnauthorized
		pe.Hint = credentialHint
	case codes.ResourceExhausted:
		pe.Kind = reaper.ErrRateLimited
	case codes.InvalidArgument:
		pe.Kind = reaper.ErrInvalid
	case codes.DeadlineExceeded:
		// Our per-call timeout or the server's: a timeout either way.
		pe.Err = fmt.Errorf("call timed out (limit %s): %w", p.cfg.Timeout, context.DeadlineExceeded)
		if msg := st.Message(); msg != context.DeadlineExceeded.Error() {
			pe.Err = fmt.Errorf("%w: %s", pe.Err, msg)
		}
	case codes.NotFound:
		// For close: the sandbox, or so Modal says (a sandbox of another
		// workspace is NOT_FOUND too). For list: the environment (see
		// wrapList).
		pe.Kind = reaper.ErrNotFound
	default:
		// UNAVAILABLE, INTERNAL, UNKNOWN, ABORTED and the rest: retried.
	}
	return pe
}

// retryDelay returns the delay a failed call asked for, or zero: the
// largest of a modal.client.RPCRetryPolicy status detail (what Modal's
// server sends: the SDK's retry interceptor sleeps retry_after_secs before
// it retries, client.go getServerRetryPolicy), a google.rpc.RetryInfo
// status detail, and a retry-after response metadata entry
// (retryAfterInterceptor).
func retryDelay(err error, st *status.Status) time.Duration {
	var d time.Duration
	for _, detail := range st.Details() {
		switch x := detail.(type) {
		case *pb.RPCRetryPolicy:
			// float32 seconds: kit.Seconds keeps whole milliseconds (7
			// stays 7s, 0.1 is not 100.000001ms).
			d = max(d, kit.Seconds(float64(x.GetRetryAfterSecs())))
		case *errdetails.RetryInfo:
			if rd := x.GetRetryDelay(); rd != nil && rd.CheckValid() == nil {
				d = max(d, kit.Cap(rd.AsDuration()))
			}
		}
	}
	var ra *retryAfterError
	if errors.As(err, &ra) {
		d = max(d, ra.after)
	}
	return d
}

func errorText(err error) string {
	if st, ok := grpcStatus(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}
