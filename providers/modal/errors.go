package modal

import (
	"context"
	"errors"
	"fmt"
	"time"

	modalsdk "github.com/modal-labs/libmodal/modal-go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reaperd/reaperd/reaper"
)

// grpcStatus returns the status of the innermost gRPC error in err's chain
// (the SDK wraps some of them), with its own message and details.
func grpcStatus(err error) (*status.Status, bool) {
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if st := gs.GRPCStatus(); st != nil {
			return st, true
		}
	}
	return nil, false
}

// wrap classifies err from a call made for op ("close" or "list") into a
// *reaper.ProviderError. When the caller's ctx has ended, the error wraps
// ctx.Err() whatever the call returned. NOT_FOUND, and the SDK's
// NotFoundError that FromID turns it into, are reaper.ErrNotFound.
func (p *Provider) wrap(ctx context.Context, op, id string, err error) error {
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
		// FromID's answer to NOT_FOUND: the SDK keeps no gRPC status.
		pe.Kind = reaper.ErrNotFound
		pe.Err = fmt.Errorf("%s: %s", codes.NotFound, nf.Exception)
		return pe
	}
	st, ok := grpcStatus(err)
	if !ok {
		return pe // not a gRPC status: a local failure, retried
	}
	pe.Err = fmt.Errorf("%s: %s", st.Code(), st.Message())
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		pe.Kind = reaper.ErrUnauthorized
		pe.Hint = credentialHint
	case codes.ResourceExhausted:
		pe.Kind = reaper.ErrRateLimited
		pe.RetryAfter = retryDelay(st)
	case codes.DeadlineExceeded:
		// Our per-call timeout or the server's: a timeout either way.
		pe.Err = fmt.Errorf("call timed out (limit %s): %w", p.cfg.Timeout, context.DeadlineExceeded)
		if msg := st.Message(); msg != context.DeadlineExceeded.Error() {
			pe.Err = fmt.Errorf("%w: %s", pe.Err, msg)
		}
	case codes.NotFound:
		// For close: the sandbox, or so Modal says (a sandbox of another
		// workspace is NOT_FOUND too). For list: the environment.
		pe.Kind = reaper.ErrNotFound
		if op == "list" && p.cfg.Environment != "" {
			pe.Hint = "check " + EnvEnvironment
		}
	default:
		// UNAVAILABLE, INTERNAL, UNKNOWN, ABORTED and the rest: retried.
	}
	return pe
}

// retryDelay returns the delay of a google.rpc.RetryInfo detail, or zero.
func retryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			if err := ri.GetRetryDelay().CheckValid(); err == nil {
				if d := ri.GetRetryDelay().AsDuration(); d > 0 {
					return d
				}
			}
		}
	}
	return 0
}

func errorText(err error) string {
	if st, ok := grpcStatus(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}
