package reaper

import (
	"context"
	"os"
)

// selfUID is the daemon's own uid, which may change any entry.
var selfUID = uint32(os.Getuid())

// Caller identifies the client process behind a request, from the Unix
// socket's peer credentials.
type Caller struct {
	UID uint32
	PID int32
}

type callerKey struct{}

// WithCaller returns a context carrying the caller's identity.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller carried by ctx, if any.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

func callerUID(ctx context.Context) *uint32 {
	if c, ok := CallerFrom(ctx); ok {
		uid := c.UID
		return &uid
	}
	return nil
}
