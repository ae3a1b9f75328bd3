// Package providertest is the conformance suite every reaper.Provider passes.
//
// # Basics
//
// Each provider package runs the suite from its own tests, with its real
// client library pointed at an in-process fake of the provider's API (an
// httptest server for REST providers, a gRPC server for Modal). The fake
// implements Fake so the suite can create sandboxes, observe whether they are
// still allocated and inject failures:
//
//	func TestConformance(t *testing.T) {
//		providertest.Run(t, providertest.Options{
//			CredentialEnv: "DAYTONA_API_KEY",
//			Setup: func(t *testing.T) (reaper.Provider, providertest.Fake) { ... },
//		})
//	}
//
// # Caveats
//
// Setup must configure the provider with a short per-request timeout (at most
// one second), since the suite checks that a hung provider call surfaces as a
// transient error. The suite never talks to a real provider.
package providertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reaperd/reaperd/providers/internal/kit"
	"github.com/reaperd/reaperd/reaper"
)

// FailureKind is a failure a Fake can inject.
type FailureKind int

const (
	// FailNone clears any injected failure.
	FailNone FailureKind = iota
	// FailUnauthorized answers every request as the provider answers bad
	// credentials (HTTP 401, gRPC UNAUTHENTICATED).
	FailUnauthorized
	// FailRateLimited answers as the provider throttles (HTTP 429 with the
	// provider's retry header carrying Failure.RetryAfter).
	FailRateLimited
	// FailServerError answers with a server error (HTTP 500/503, gRPC
	// UNAVAILABLE or INTERNAL).
	FailServerError
	// FailHang holds every request open until the client gives up.
	FailHang
	// FailConflict answers a delete as the provider answers when the sandbox
	// is changing state (HTTP 409). Only for providers with Options.Conflict.
	FailConflict
	// FailSpuriousNotFound answers a close, and a lookup of one sandbox, as
	// the provider answers for a sandbox it does not have (HTTP 404, gRPC
	// NOT_FOUND), although the sandbox exists and the listing still shows
	// it: Daytona's access guard answers so when its database fails, and
	// every provider answers so to a key of another organisation.
	FailSpuriousNotFound
)

// Failure is an injected failure that applies to every request the fake
// receives until it is replaced or cleared with Failure{}.
type Failure struct {
	Kind       FailureKind
	RetryAfter time.Duration // for FailRateLimited; whole seconds
}

// Fake is the control surface of a provider's in-process fake.
type Fake interface {
	// Create adds a live sandbox with the given labels and creation time and
	// returns its provider-side id.
	Create(labels map[string]string, createdAt time.Time) string
	// Alive reports whether the sandbox is still allocated at the fake (not
	// destroyed or terminated; stopped or paused ones are alive).
	Alive(id string) bool
	// Fail injects f for all following requests; Failure{} clears it.
	Fail(f Failure)
	// SetPageSize caps the number of sandboxes per list page.
	SetPageSize(n int)
}

// Options configures Run.
type Options struct {
	// Setup returns a provider and its fake, fresh for each subtest. The
	// provider's per-request timeout must be at most one second.
	Setup func(t *testing.T) (reaper.Provider, Fake)
	// Name is the provider's expected Name().
	Name string
	// CredentialEnv is the environment variable holding the provider's
	// credential; an unauthorized error must name it.
	CredentialEnv string
	// RetryAfter is true when the provider's throttling response carries a
	// retry delay the provider must pass on.
	RetryAfter bool
	// Conflict is true when the provider has a "state change in progress"
	// answer to a delete (FailConflict).
	Conflict bool
	// UnknownID is a well-formed id the provider does not have, which
	// CloseUnknown closes; empty means "does-not-exist-0000". A provider
	// whose API refuses ids of that shape as malformed (E2B answers 400 to
	// an id with more than one "-") names one its API looks up.
	UnknownID string
	// StartedAtOnly is true for a provider whose API reports when a
	// sandbox last started but not when it was created (E2B): List sets
	// StartedAt from the time given to Fake.Create, and leaves CreatedAt
	// zero.
	StartedAtOnly bool
	// MalformedID is an id the provider's API refuses as malformed, which
	// PermanentRefusal closes; empty when the API has no such answer.
	MalformedID string
}

// Run runs the conformance suite.
func Run(t *testing.T, o Options) {
	t.Helper()
	if o.Setup == nil {
		t.Fatal("providertest: Options.Setup is nil")
	}
	created := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return c
	}

	t.Run("Name", func(t *testing.T) {
		p, _ := o.Setup(t)
		if got := p.Name(); got != o.Name {
			t.Fatalf("Name() = %q, want %q", got, o.Name)
		}
	})

	t.Run("CloseLive", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(map[string]string{"team": "a"}, created)
		other := f.Create(nil, created)
		if !f.Alive(id) {
			t.Fatalf("fake: sandbox %s not alive after Create", id)
		}
		if err := p.Close(ctx(t), id); err != nil {
			t.Fatalf("Close(%s) = %v, want nil", id, err)
		}
		if f.Alive(id) {
			t.Fatalf("sandbox %s still allocated after Close returned nil", id)
		}
		if !f.Alive(other) {
			t.Fatalf("Close(%s) destroyed another sandbox %s", id, other)
		}
	})

	t.Run("CloseTwice", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		if err := p.Close(ctx(t), id); err != nil {
			t.Fatalf("Close #1 = %v, want nil", err)
		}
		// The second close may find it gone (not-found, which the engine
		// confirms with the listing) or in a final state (nil).
		if err := p.Close(ctx(t), id); err != nil && !errors.Is(err, reaper.ErrNotFound) {
			t.Fatalf("Close #2 = %v, want nil or ErrNotFound", err)
		}
		if f.Alive(id) {
			t.Fatalf("sandbox %s still allocated", id)
		}
	})

	t.Run("CloseUnknown", func(t *testing.T) {
		p, _ := o.Setup(t)
		unknown := o.UnknownID
		if unknown == "" {
			unknown = "does-not-exist-0000"
		}
		err := p.Close(ctx(t), unknown)
		if !errors.Is(err, reaper.ErrNotFound) {
			t.Fatalf("Close(unknown) = %v, want ErrNotFound: a not-found is a claim for the engine to confirm, never nil", err)
		}
	})

	t.Run("SpuriousNotFound", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		f.Fail(Failure{Kind: FailSpuriousNotFound})
		err := p.Close(ctx(t), id)
		if !errors.Is(err, reaper.ErrNotFound) {
			t.Fatalf("Close answered a spurious not-found = %v, want ErrNotFound (never nil: the sandbox exists)", err)
		}
		if !f.Alive(id) {
			t.Fatalf("fake: sandbox %s gone after a spurious not-found", id)
		}
		all, err := p.List(ctx(t), reaper.ListFilter{})
		if err != nil {
			t.Fatalf("List during spurious not-founds = %v", err)
		}
		if !slices.Contains(ids(all), id) {
			t.Fatalf("List = %v, want it to still show %s: the listing is the second signal", ids(all), id)
		}
		f.Fail(Failure{})
		if err := p.Close(ctx(t), id); err != nil || f.Alive(id) {
			t.Fatalf("Close once the provider answers truly = %v (alive %v), want nil and gone", err, f.Alive(id))
		}
	})

	t.Run("Check", func(t *testing.T) {
		p, f := o.Setup(t)
		c, ok := p.(reaper.Checker)
		if !ok {
			t.Fatalf("%T does not implement reaper.Checker: every provider checks its credentials at start", p)
		}
		if err := c.Check(ctx(t)); err != nil {
			t.Fatalf("Check with good credentials = %v, want nil", err)
		}
		f.Fail(Failure{Kind: FailUnauthorized})
		err := c.Check(ctx(t))
		if !errors.Is(err, reaper.ErrUnauthorized) {
			t.Fatalf("Check with bad credentials = %v, want ErrUnauthorized", err)
		}
		if o.CredentialEnv != "" && !strings.Contains(err.Error(), o.CredentialEnv) {
			t.Fatalf("Check error %q must name %s", err, o.CredentialEnv)
		}
		f.Fail(Failure{Kind: FailServerError})
		if err := c.Check(ctx(t)); !errors.Is(err, reaper.ErrTransient) {
			t.Fatalf("Check on a server error = %v, want ErrTransient", err)
		}
		f.Fail(Failure{})
	})

	t.Run("Unauthorized", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		f.Fail(Failure{Kind: FailUnauthorized})
		err := p.Close(ctx(t), id)
		if !errors.Is(err, reaper.ErrUnauthorized) {
			t.Fatalf("Close with bad credentials = %v, want ErrUnauthorized", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, o.Name) || (o.CredentialEnv != "" && !strings.Contains(msg, o.CredentialEnv)) {
			t.Fatalf("unauthorized error %q must name the provider %q and the variable %q", msg, o.Name, o.CredentialEnv)
		}
		_, err = p.List(ctx(t), reaper.ListFilter{})
		if !errors.Is(err, reaper.ErrUnauthorized) {
			t.Fatalf("List with bad credentials = %v, want ErrUnauthorized", err)
		}
		f.Fail(Failure{})
		if !f.Alive(id) {
			t.Fatalf("sandbox destroyed by an unauthorized request")
		}
	})

	t.Run("RateLimited", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		f.Fail(Failure{Kind: FailRateLimited, RetryAfter: 7 * time.Second})
		err := p.Close(ctx(t), id)
		if !errors.Is(err, reaper.ErrRateLimited) {
			t.Fatalf("Close when throttled = %v, want ErrRateLimited", err)
		}
		if o.RetryAfter {
			if d, ok := reaper.RetryAfter(err); !ok || d != 7*time.Second {
				t.Fatalf("RetryAfter(%v) = %v, %v; want 7s, true", err, d, ok)
			}
		}
		if !f.Alive(id) {
			t.Fatalf("sandbox reported destroyed while throttled")
		}
		f.Fail(Failure{})
		if err := p.Close(ctx(t), id); err != nil || f.Alive(id) {
			t.Fatalf("Close after throttling = %v (alive %v), want nil and gone", err, f.Alive(id))
		}
	})

	// A refusal that no retry can change is reaper.ErrInvalid, which the
	// engine parks as stuck, instead of a transient error retried forever.
	t.Run("PermanentRefusal", func(t *testing.T) {
		p, f := o.Setup(t)
		live := f.Create(nil, created)
		bad := []string{""}
		if o.MalformedID != "" {
			bad = append(bad, o.MalformedID)
		}
		for _, id := range bad {
			err := p.Close(ctx(t), id)
			if !errors.Is(err, reaper.ErrInvalid) || errors.Is(err, reaper.ErrTransient) {
				t.Errorf("Close(%q) = %v, want ErrInvalid and not transient: no retry changes the answer", id, err)
			}
		}
		if !f.Alive(live) {
			t.Fatalf("a refused close destroyed another sandbox")
		}
	})

	// A throttling answer asking for an absurd delay is passed on capped
	// at kit.MaxRetryAfter: never zero (which would retry at once) and never
	// beyond a day (the engine applies its own, shorter cap).
	if o.RetryAfter {
		t.Run("RetryAfterCapped", func(t *testing.T) {
			p, f := o.Setup(t)
			id := f.Create(nil, created)
			f.Fail(Failure{Kind: FailRateLimited, RetryAfter: 1_000_000 * time.Second})
			err := p.Close(ctx(t), id)
			if !errors.Is(err, reaper.ErrRateLimited) {
				t.Fatalf("Close when throttled = %v, want ErrRateLimited", err)
			}
			if d, ok := reaper.RetryAfter(err); !ok || d != kit.MaxRetryAfter {
				t.Fatalf("RetryAfter(%v) = %v, %v; want %v, true", err, d, ok, kit.MaxRetryAfter)
			}
			f.Fail(Failure{})
			if !f.Alive(id) {
				t.Fatalf("sandbox reported destroyed while throttled")
			}
		})
	}

	t.Run("ServerError", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		f.Fail(Failure{Kind: FailServerError})
		err := p.Close(ctx(t), id)
		if !errors.Is(err, reaper.ErrTransient) {
			t.Fatalf("Close on server error = %v, want ErrTransient", err)
		}
		if _, err := p.List(ctx(t), reaper.ListFilter{}); !errors.Is(err, reaper.ErrTransient) {
			t.Fatalf("List on server error = %v, want ErrTransient", err)
		}
		f.Fail(Failure{})
		if !f.Alive(id) {
			t.Fatalf("sandbox destroyed although the server failed")
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		f.Fail(Failure{Kind: FailHang})
		start := time.Now()
		err := p.Close(context.Background(), id)
		if err == nil {
			t.Fatalf("Close against a hung provider = nil, want an error")
		}
		if !errors.Is(err, reaper.ErrTransient) {
			t.Fatalf("Close against a hung provider = %v, want ErrTransient", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("Close against a hung provider took %v; the provider needs a request timeout", el)
		}
		f.Fail(Failure{})
	})

	t.Run("ContextCanceled", func(t *testing.T) {
		p, f := o.Setup(t)
		id := f.Create(nil, created)
		f.Fail(Failure{Kind: FailHang})
		c, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		start := time.Now()
		err := p.Close(c, id)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Close with a canceled context = %v, want an error wrapping context.Canceled", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("Close took %v after its context was canceled", el)
		}
		f.Fail(Failure{})
		if !f.Alive(id) {
			t.Fatalf("sandbox destroyed by a canceled close")
		}
	})

	if o.Conflict {
		t.Run("Conflict", func(t *testing.T) {
			p, f := o.Setup(t)
			id := f.Create(nil, created)
			f.Fail(Failure{Kind: FailConflict})
			err := p.Close(ctx(t), id)
			if !errors.Is(err, reaper.ErrConflict) {
				t.Fatalf("Close during a state change = %v, want ErrConflict", err)
			}
			f.Fail(Failure{})
		})
	}

	t.Run("ListPaginatesAndFilters", func(t *testing.T) {
		p, f := o.Setup(t)
		f.SetPageSize(2)
		want := map[string]map[string]string{}
		var teamA []string
		for i := range 7 {
			team := "a"
			if i%2 == 1 {
				team = "b"
			}
			labels := map[string]string{"team": team, "n": fmt.Sprint(i)}
			id := f.Create(labels, created.Add(time.Duration(i)*time.Minute))
			want[id] = labels
			if team == "a" {
				teamA = append(teamA, id)
			}
		}
		all, err := p.List(ctx(t), reaper.ListFilter{})
		if err != nil {
			t.Fatalf("List() = %v", err)
		}
		if got := ids(all); !slices.Equal(got, sortedKeys(want)) {
			t.Fatalf("List() ids = %v, want %v (all pages)", got, sortedKeys(want))
		}
		for _, sb := range all {
			wl := want[sb.ID]
			for k, v := range wl {
				if sb.Labels[k] != v {
					t.Errorf("sandbox %s label %s = %q, want %q", sb.ID, k, sb.Labels[k], v)
				}
			}
			n := 0
			fmt.Sscan(wl["n"], &n)
			wantAt := created.Add(time.Duration(n) * time.Minute)
			switch {
			case o.StartedAtOnly && (!sb.StartedAt.Equal(wantAt) || !sb.CreatedAt.IsZero()):
				t.Errorf("sandbox %s StartedAt, CreatedAt = %v, %v; want %v and zero (no creation time)", sb.ID, sb.StartedAt, sb.CreatedAt, wantAt)
			case !o.StartedAtOnly && !sb.CreatedAt.Equal(wantAt):
				t.Errorf("sandbox %s CreatedAt = %v, want %v", sb.ID, sb.CreatedAt, wantAt)
			}
		}
		got, err := p.List(ctx(t), reaper.ListFilter{Labels: map[string]string{"team": "a"}})
		if err != nil {
			t.Fatalf("List(team=a) = %v", err)
		}
		slices.Sort(teamA)
		if g := ids(got); !slices.Equal(g, teamA) {
			t.Fatalf("List(team=a) ids = %v, want %v", g, teamA)
		}
	})

	// The listing page by page is the listing: the same sandboxes as List,
	// each once, in pages no larger than the API's; the caller's error
	// stops it; a failure after some pages is an error, never a short
	// listing that would read as proof that the rest are gone.
	t.Run("ListPages", func(t *testing.T) {
		p, f := o.Setup(t)
		pl, ok := p.(reaper.PageLister)
		if !ok {
			t.Fatalf("%T does not implement reaper.PageLister: discovery at scale lists page by page", p)
		}
		f.SetPageSize(2)
		for i := range 7 {
			team := "a"
			if i%2 == 1 {
				team = "b"
			}
			f.Create(map[string]string{"team": team, "n": fmt.Sprint(i)}, created.Add(time.Duration(i)*time.Minute))
		}
		for _, filter := range []reaper.ListFilter{{}, {Labels: map[string]string{"team": "a"}}} {
			all, err := p.List(ctx(t), filter)
			if err != nil {
				t.Fatalf("List(%v) = %v", filter.Labels, err)
			}
			byID := map[string]reaper.Sandbox{}
			var pages int
			err = pl.ListPages(ctx(t), filter, func(page []reaper.Sandbox) error {
				pages++
				if len(page) == 0 || len(page) > 2 {
					t.Errorf("ListPages(%v): page %d holds %d sandboxes, want 1 to 2 (the API's page size)", filter.Labels, pages, len(page))
				}
				for _, sb := range page {
					if _, dup := byID[sb.ID]; dup {
						t.Errorf("ListPages(%v): sandbox %s given twice", filter.Labels, sb.ID)
					}
					byID[sb.ID] = sb
				}
				return nil
			})
			if err != nil {
				t.Fatalf("ListPages(%v) = %v", filter.Labels, err)
			}
			if want := (len(all) + 1) / 2; pages < want {
				t.Errorf("ListPages(%v) gave %d pages, want at least %d for %d sandboxes 2 a page", filter.Labels, pages, want, len(all))
			}
			if got, want := sortedIDs(byID), ids(all); !slices.Equal(got, want) {
				t.Fatalf("ListPages(%v) ids = %v, want List's %v", filter.Labels, got, want)
			}
			for _, sb := range all {
				if got := byID[sb.ID]; !sameSandbox(got, sb) {
					t.Errorf("ListPages(%v) gives %+v, List %+v", filter.Labels, got, sb)
				}
			}
		}

		errStop := errors.New("enough")
		calls := 0
		err := pl.ListPages(ctx(t), reaper.ListFilter{}, func([]reaper.Sandbox) error {
			calls++
			return errStop
		})
		if !errors.Is(err, errStop) || calls != 1 {
			t.Errorf("ListPages whose fn fails = %v after %d calls, want fn's error after 1", err, calls)
		}

		calls = 0
		err = pl.ListPages(ctx(t), reaper.ListFilter{}, func([]reaper.Sandbox) error {
			calls++
			if calls == 1 {
				f.Fail(Failure{Kind: FailServerError})
			}
			return nil
		})
		f.Fail(Failure{})
		if !errors.Is(err, reaper.ErrTransient) || calls != 1 {
			t.Errorf("ListPages failing after its first page = %v after %d pages, want ErrTransient after 1", err, calls)
		}
	})

	t.Run("ListOmitsClosed", func(t *testing.T) {
		p, f := o.Setup(t)
		a := f.Create(nil, created)
		b := f.Create(nil, created)
		if err := p.Close(ctx(t), a); err != nil {
			t.Fatalf("Close = %v", err)
		}
		got, err := p.List(ctx(t), reaper.ListFilter{})
		if err != nil {
			t.Fatalf("List = %v", err)
		}
		if g := ids(got); !slices.Equal(g, []string{b}) {
			t.Fatalf("List after closing %s = %v, want [%s]", a, g, b)
		}
	})
}

func ids(sbs []reaper.Sandbox) []string {
	out := make([]string, 0, len(sbs))
	for _, s := range sbs {
		out = append(out, s.ID)
	}
	slices.Sort(out)
	return out
}

func sortedIDs(m map[string]reaper.Sandbox) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// sameSandbox reports whether a and b say the same of a sandbox.
func sameSandbox(a, b reaper.Sandbox) bool {
	return a.ID == b.ID && a.CreatedAt.Equal(b.CreatedAt) && a.StartedAt.Equal(b.StartedAt) &&
		a.LastActivityAt.Equal(b.LastActivityAt) && a.State == b.State && maps.Equal(a.Labels, b.Labels) &&
		a.Name == b.Name && a.App == b.App && a.Template == b.Template &&
		(a.Resources == nil) == (b.Resources == nil) && (a.Resources == nil || *a.Resources == *b.Resources)
}

func sortedKeys(m map[string]map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
