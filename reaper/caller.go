package reaper

import (
	"context"
	"slices"
)

// Caller identifies the client process behind a request, from the Unix
// socket's peer credentials.
type Caller struct {
	UID uint32
	GID uint32
	// Groups are the caller's supplementary group ids, when known.
	Groups []uint32
	PID    int32
}

// InGroup reports whether gid is the caller's primary or a supplementary
// group.
func (c Caller) InGroup(gid uint32) bool {
	return c.GID == gid || slices.Contains(c.Groups, gid)
}

type callerKey struct{}

// WithCaller returns a context carrying the caller's identity.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller carried by ctx, if any. A context without a
// caller is the daemon acting on its own (or a test), which may do
// anything.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// CallerUID returns the uid of the caller carried by ctx, or nil.
func CallerUID(ctx context.Context) *uint32 {
	if c, ok := CallerFrom(ctx); ok {
		uid := c.UID
		return &uid
	}
	return nil
}

// Access is the ownership rule. Entries and sessions belong to the uid
// that created them. Besides the owner, root, the daemon's own user and
// members of an admin group may change them; nobody else may.
type Access struct {
	// Self is the daemon's own uid.
	Self uint32
	// AdminGroups are gids whose members may change anything. Empty means
	// no admin group.
	AdminGroups []uint32
}

// Allows reports whether the caller carried by ctx may change a record
// owned by owner. A record without an owner, or a context without a
// caller, allows everything.
func (a Access) Allows(ctx context.Context, owner *uint32) bool {
	c, ok := CallerFrom(ctx)
	if !ok || owner == nil {
		return true
	}
	if c.UID == 0 || c.UID == a.Self || c.UID == *owner {
		return true
	}
	for _, g := range a.AdminGroups {
		if c.InGroup(g) {
			return true
		}
	}
	return false
}

// Check returns nil when the caller may change a record owned by owner, and
// otherwise an EFORBIDDEN error that names the record (what) and its owner,
// and says who may do the change (verb).
func (a Access) Check(ctx context.Context, owner *uint32, what, verb string) error {
	if a.Allows(ctx, owner) {
		return nil
	}
	who := "that user, root or the daemon's user"
	if len(a.AdminGroups) > 0 {
		who = "that user, root, the daemon's user or a member of the admin group"
	}
	return Errorf(EFORBIDDEN, "%s belongs to uid %d: only %s may %s it", what, *owner, who, verb)
}
