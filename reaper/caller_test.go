package reaper

import (
	"context"
	"strings"
	"testing"
)

func TestAccessWithTokens(t *testing.T) {
	u := func(v uint32) *uint32 { return &v }
	a := Access{Self: 990, AdminGroups: []uint32{50}}
	tests := []struct {
		name   string
		caller *Caller
		owner  Ownership
		want   bool
	}{
		{"no caller", nil, Ownership{UID: u(1000)}, true},
		{"no owner", &Caller{Token: "ci"}, Ownership{}, true},
		{"owning uid", &Caller{UID: 1000}, Ownership{UID: u(1000)}, true},
		{"other uid", &Caller{UID: 1001}, Ownership{UID: u(1000)}, false},
		{"root", &Caller{UID: 0}, Ownership{Token: "ci"}, true},
		{"daemon user", &Caller{UID: 990}, Ownership{Token: "ci"}, true},
		{"admin group", &Caller{UID: 1001, Groups: []uint32{50}}, Ownership{Token: "ci"}, true},
		{"uid on a token's record", &Caller{UID: 1000}, Ownership{Token: "ci"}, false},
		{"owning token", &Caller{Token: "ci"}, Ownership{Token: "ci"}, true},
		{"other token", &Caller{Token: "batch"}, Ownership{Token: "ci"}, false},
		// A token caller's zero UID must never count as root.
		{"token on a uid's record", &Caller{Token: "ci"}, Ownership{UID: u(1000)}, false},
		{"token on root's record", &Caller{Token: "ci"}, Ownership{UID: u(0)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.caller != nil {
				ctx = WithCaller(ctx, *tt.caller)
			}
			if got := a.Allows(ctx, tt.owner); got != tt.want {
				t.Errorf("Allows = %v, want %v", got, tt.want)
			}
			err := a.Check(ctx, tt.owner, "entry e2b/x", "tag")
			if (err == nil) != tt.want {
				t.Errorf("Check = %v, want allowed %v", err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.owner.String()) {
				t.Errorf("Check = %v, want it to name the owner %s", err, tt.owner)
			}
		})
	}
	ctx := WithCaller(context.Background(), Caller{Token: "ci"})
	if CallerUID(ctx) != nil || CallerToken(ctx) != "ci" || OwnedBy(ctx) != (Ownership{Token: "ci"}) {
		t.Errorf("a token caller's identity: uid %v, token %q", CallerUID(ctx), CallerToken(ctx))
	}
}
