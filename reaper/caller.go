package reaper

import (
	"context"
	"slices"
	"strconv"
)

// Caller identifies the client behind a request: a process on the Unix
// socket, from its peer credentials, or an API token on the TCP listener.
type Caller struct {
	UID uint32
	GID uint32
	// Groups are the caller's supplementary group ids, when known.
	Groups []uint32
	PID    int32
	// Token is the name of the API token the request carried (TCP
	// listener). When set, the caller is that token and nothing else: UID,
	// GID and Groups mean nothing.
	Token string
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

// CallerUID returns the uid of the caller carried by ctx, or nil (no
// caller, or a token).
func CallerUID(ctx context.Context) *uint32 {
	if c, ok := CallerFrom(ctx); ok && c.Token == "" {
		uid := c.UID
		return &uid
	}
	return nil
}

// CallerToken returns the name of the API token of the caller carried by
// ctx, or "".
func CallerToken(ctx context.Context) string {
	c, _ := CallerFrom(ctx)
	return c.Token
}

// Ownership says who created a record: a uid on the socket, or an API
// token on the TCP listener. The zero value is no owner.
type Ownership struct {
	UID   *uint32
	Token string
}

func (o Ownership) String() string {
	switch {
	case o.Token != "":
		return "API token " + strconv.Quote(o.Token)
	case o.UID != nil:
		return "uid " + strconv.FormatUint(uint64(*o.UID), 10)
	}
	return "nobody"
}

// OwnedBy returns the ownership of what the caller carried by ctx creates.
func OwnedBy(ctx context.Context) Ownership {
	return Ownership{UID: CallerUID(ctx), Token: CallerToken(ctx)}
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
// owned by o. A record without an owner, or a context without a caller,
// allows everything. A token may change only what it created; a uid on the
// socket what it created, and root, the daemon's user and admin group
// members anything.
func (a Access) Allows(ctx context.Context, o Ownership) bool {
	c, ok := CallerFrom(ctx)
	if !ok || (o.UID == nil && o.Token == "") {
		return true
	}
	if c.Token != "" {
		return o.Token == c.Token
	}
	if c.UID == 0 || c.UID == a.Self || (o.UID != nil && c.UID == *o.UID) {
		return true
	}
	for _, g := range a.AdminGroups {
		if c.InGroup(g) {
			return true
		}
	}
	return false
}

// Check returns nil when the caller may change a record owned by o, and
// otherwise an EFORBIDDEN error that names the record (what) and its owner,
// and says who may do the change (verb).
func (a Access) Check(ctx context.Context, o Ownership, what, verb string) error {
	if a.Allows(ctx, o) {
		return nil
	}
	owner := "that user"
	if o.Token != "" {
		owner = "that token"
	}
	who := owner + ", root or the daemon's user"
	if len(a.AdminGroups) > 0 {
		who = owner + ", root, the daemon's user or a member of the admin group"
	}
	if c, _ := CallerFrom(ctx); c.Token != "" {
		who = owner + ": an API token may change only what it registered"
	}
	return Errorf(EFORBIDDEN, "%s belongs to %s: only %s may %s it", what, o, who, verb)
}
