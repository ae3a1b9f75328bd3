package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

// fleet is a provider's sandboxes as its listing shows them.
type fleet struct {
	mu    sync.Mutex
	ids   map[string]bool
	lists atomic.Int32
}

func newFleet(ids ...string) *fleet {
	f := &fleet{ids: map[string]bool{}}
	for _, id := range ids {
		f.ids[id] = true
	}
	return f
}

func (f *fleet) remove(id string) {
	f.mu.Lock()
	delete(f.ids, id)
	f.mu.Unlock()
}

func (f *fleet) list(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
	f.lists.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []reaper.Sandbox
	for id := range f.ids {
		out = append(out, reaper.Sandbox{ID: id, CreatedAt: t0.Add(-time.Hour)})
	}
	return out, nil
}

var errNotFound = &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrNotFound, StatusCode: 404}

// notFoundFor makes the provider answer not-found to closes of the given
// ids, and succeed for the others.
func notFoundFor(ids ...string) func(context.Context, string) error {
	return func(_ context.Context, id string) error {
		if slices.Contains(ids, id) {
			return errNotFound
		}
		return nil
	}
}

// A provider that answers not-found while its listing still shows the
// sandbox is contradicting itself: the entry is never recorded closed, the
// contradiction is recorded, and the close is retried until the provider
// deletes the sandbox for real.
func TestSpuriousNotFoundIsNeverClosed(t *testing.T) {
	m := engine.NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(e *engine.Engine) { e.Metrics = m })
	fl := newFleet("a")
	h.prov.ListFn = fl.list
	h.prov.setClose(notFoundFor("a"))
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.clock.Advance(time.Minute)
	var e *reaper.Entry
	eventually(t, 5*time.Second, func() bool { e = h.entry("fake/a"); return !e.NotFoundAt.IsZero() },
		func() string { return fmt.Sprintf("the not-found to be recorded: %+v", e) })
	if e.State != reaper.StateClosing || e.ErrorClass != "not_found" {
		t.Fatalf("after a not-found the entry is %s (%s), want closing while it is confirmed", e.State, e.ErrorClass)
	}
	// The confirming listing comes a second later.
	h.advanceUntil(100*time.Millisecond, func() bool { e = h.entry("fake/a"); return e.ErrorClass == "contradicted" },
		"the contradiction to be recorded")
	if e.State != reaper.StateClosing || !e.NotFoundAt.IsZero() || !e.Seen {
		t.Fatalf("after the listing still showed it: %+v, want closing, seen, not confirming", e)
	}
	if got := kinds(h.audit(), "fake/a"); !slices.Contains(got, reaper.EventContradicted) || slices.Contains(got, reaper.EventClosed) {
		t.Fatalf("audit = %v, want a contradiction and no close", got)
	}
	eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(m.Contradictions.WithLabelValues("fake")) == 1 },
		func() string { return "the contradictions metric to count 1" })
	// The provider answers truly again: the retry closes the sandbox.
	h.prov.setClose(nil)
	h.advanceUntil(time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed }, "the retried close")
}

// A not-found is confirmed when the listing, taken after it, no longer shows
// a sandbox that an earlier listing did show: closed, in one listing for any
// number of not-founds.
func TestNotFoundConfirmedByTheListing(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("s%02d", i))
	}
	fl := newFleet(ids...)
	h.prov.ListFn = fl.list
	h.prov.setClose(notFoundFor(ids...)) // deleted by someone else meanwhile
	h.start()
	for _, id := range ids {
		h.register(reaper.RegisterRequest{ID: id, TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Advance(2 * time.Second) // the verifying listing
	eventually(t, 5*time.Second, func() bool { return h.entry("fake/s19").Seen }, func() string { return "verification" })
	for _, id := range ids {
		fl.remove(id)
	}
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool {
		for _, id := range ids {
			if e := h.entry("fake/" + id); e.NotFoundAt.IsZero() && e.State != reaper.StateClosed {
				return false
			}
		}
		return true
	},
		func() string { return "the not-founds" })
	listsBefore := fl.lists.Load()
	h.advanceUntil(time.Second, func() bool {
		for _, id := range ids {
			if h.entry("fake/"+id).State != reaper.StateClosed {
				return false
			}
		}
		return true
	}, "every not-found to be confirmed")
	if n := fl.lists.Load() - listsBefore; n > 3 {
		t.Fatalf("%d listings to confirm 20 not-founds, want them batched (two, three if one was under way)", n)
	}
	e := h.entry("fake/s00")
	if e.CloseReason != reaper.ReasonExpired || e.Attempts != 1 {
		t.Fatalf("confirmed entry = %+v, want closed (expired) after its one attempt", e)
	}
}

// With a key that does not reach the sandbox (another organisation), the
// close answers not-found and the listing never shows it: both signals
// come from the wrong key, so nothing is proven. The entry is flagged
// unverified at registration and is never recorded closed.
func TestWrongOrganisationIsNeverClosed(t *testing.T) {
	m := engine.NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(e *engine.Engine) { e.Metrics = m })
	fl := newFleet() // our listing never shows it
	h.prov.ListFn = fl.list
	h.prov.setClose(notFoundFor("theirs"))
	h.start()
	h.register(reaper.RegisterRequest{ID: "theirs", TTL: reaper.Duration(time.Hour)})
	h.advanceUntil(time.Second, func() bool { return h.entry("fake/theirs").Unverified }, "the entry to be flagged unverified")
	h.clock.Advance(time.Hour)
	var e *reaper.Entry
	h.advanceUntil(time.Second, func() bool { e = h.entry("fake/theirs"); return e.ErrorClass == "unverified" },
		"the not-found to be refused as proof")
	if e.State == reaper.StateClosed {
		t.Fatal("a sandbox reaperd never saw was recorded closed on a not-found")
	}
	for range 3 { // retries change nothing
		h.clock.Advance(10 * time.Minute)
		time.Sleep(20 * time.Millisecond)
	}
	if e = h.entry("fake/theirs"); e.State != reaper.StateClosing || !e.Unverified {
		t.Fatalf("entry = %+v, want still closing and unverified", e)
	}
	eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(m.Unverified.WithLabelValues("fake")) == 1 },
		func() string { return "the unverified gauge to show 1" })
	st, _ := h.eng.Status(context.Background())
	if st.Providers["fake"].Unverified != 1 {
		t.Fatalf("status = %+v, want 1 unverified entry", st.Providers["fake"])
	}
}

// A paginated listing can miss a sandbox that changes state while it pages.
// One listing without the sandbox is therefore not proof: the next listing
// shows it again, and the not-found is a contradiction, never a close.
func TestOneListingMissingTheSandboxIsNotProof(t *testing.T) {
	h := newHarness(t)
	fl := newFleet("a")
	var omitNext atomic.Bool
	var omitted atomic.Int32
	h.prov.ListFn = func(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
		sbs, err := fl.list(ctx, f)
		if omitNext.CompareAndSwap(true, false) {
			omitted.Add(1)
			return slices.DeleteFunc(sbs, func(s reaper.Sandbox) bool { return s.ID == "a" }), err
		}
		return sbs, err
	}
	h.prov.setClose(notFoundFor("a"))
	h.start()
	h.register(reaper.RegisterRequest{ID: "a", TTL: reaper.Duration(time.Minute)})
	h.advanceUntil(time.Second, func() bool { return h.entry("fake/a").Seen }, "verification")
	omitNext.Store(true)
	h.clock.Advance(time.Minute)
	var e *reaper.Entry
	h.advanceUntil(100*time.Millisecond, func() bool { e = h.entry("fake/a"); return e.ErrorClass == "contradicted" },
		"the second listing to contradict the not-found")
	if omitted.Load() != 1 {
		t.Fatalf("%d listings left the sandbox out, want 1", omitted.Load())
	}
	if got := kinds(h.audit(), "fake/a"); slices.Contains(got, reaper.EventClosed) || e.State != reaper.StateClosing {
		t.Fatalf("entry %s, audit %v: a sandbox still running was recorded closed on one listing", e.State, got)
	}
	// Gone for real: two listings without it close the entry.
	fl.remove("a")
	h.advanceUntil(time.Second, func() bool { return h.entry("fake/a").State == reaper.StateClosed }, "the confirmed close")
}

// An unverified registration is not walked at every listing, but a listing
// that shows its sandbox still records it seen, and the count of
// unverified entries (status, the gauge) follows.
func TestUnverifiedEntryIsSeenOnceAListingShowsIt(t *testing.T) {
	m := engine.NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(e *engine.Engine) { e.Metrics = m })
	fl := newFleet("other")
	h.prov.ListFn = fl.list
	h.start()
	h.register(reaper.RegisterRequest{ID: "late", TTL: reaper.Duration(time.Hour)})
	h.advanceUntil(time.Second, func() bool { return h.entry("fake/late").Unverified }, "the entry to be flagged unverified")
	eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(m.Unverified.WithLabelValues("fake")) == 1 },
		func() string { return "the unverified gauge to show 1" })

	fl.mu.Lock()
	fl.ids["late"] = true // eventually consistent: the listing shows it now
	fl.mu.Unlock()
	h.register(reaper.RegisterRequest{ID: "other", TTL: reaper.Duration(time.Hour)}) // asks for a listing
	h.advanceUntil(time.Second, func() bool { e := h.entry("fake/late"); return e.Seen && !e.Unverified }, "the entry to be seen")
	st, _ := h.eng.Status(context.Background())
	if n := st.Providers["fake"].Unverified; n != 0 {
		t.Errorf("status counts %d unverified entries, want 0", n)
	}
	eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(m.Unverified.WithLabelValues("fake")) == 0 },
		func() string { return "the unverified gauge to show 0" })
}
