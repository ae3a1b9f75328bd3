package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// pagedProvider is the fake provider listing page by page
// (reaper.PageLister) with PagesFn.
type pagedProvider struct {
	*fakeProvider
	PagesFn func(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error
}

func (p *pagedProvider) ListPages(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	return p.PagesFn(ctx, f, fn)
}

// pagedFleet is a provider's sandboxes as its API pages them: in id order,
// size to a page. With failAt > 0, the request for page failAt fails,
// after the pages before it were handed out.
type pagedFleet struct {
	mu     sync.Mutex
	sbs    map[string]reaper.Sandbox
	size   int
	failAt int

	failures, completes atomic.Int32
}

func newPagedFleet(size int) *pagedFleet {
	return &pagedFleet{sbs: map[string]reaper.Sandbox{}, size: size}
}

func (f *pagedFleet) add(sbs ...reaper.Sandbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sb := range sbs {
		f.sbs[sb.ID] = sb
	}
}

func (f *pagedFleet) remove(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.sbs, id)
	}
}

func (f *pagedFleet) setFailAt(page int) {
	f.mu.Lock()
	f.failAt = page
	f.mu.Unlock()
}

func (f *pagedFleet) listPages(ctx context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	f.mu.Lock()
	all := make([]reaper.Sandbox, 0, len(f.sbs))
	for _, sb := range f.sbs {
		all = append(all, sb)
	}
	size, failAt := f.size, f.failAt
	f.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	for i, page := 0, 1; i < len(all); i, page = i+size, page+1 {
		if page == failAt {
			f.failures.Add(1)
			return &reaper.ProviderError{Provider: "fake", Op: "list", Kind: reaper.ErrTransient, StatusCode: 503,
				Err: fmt.Errorf("list sandboxes: page %d: service unavailable", page)}
		}
		if err := fn(all[i:min(i+size, len(all)):min(i+size, len(all))]); err != nil {
			return err
		}
	}
	f.completes.Add(1)
	return nil
}

func (f *pagedFleet) list(ctx context.Context, lf reaper.ListFilter) ([]reaper.Sandbox, error) {
	var out []reaper.Sandbox
	err := f.listPages(ctx, lf, func(page []reaper.Sandbox) error {
		out = append(out, page...)
		return nil
	})
	return out, err
}

// usePages makes the harness's provider list fl page by page.
func usePages(h *harness, fl *pagedFleet) {
	h.prov.ListFn = fl.list
	h.eng.Providers.Enabled["fake"] = &pagedProvider{fakeProvider: h.prov, PagesFn: fl.listPages}
}

func live(id string) reaper.Sandbox {
	return reaper.Sandbox{ID: id, State: "started", CreatedAt: t0.Add(-time.Hour)}
}

// A listing that fails on its seventh page proves nothing by what its
// first six pages did not show. Entries whose sandboxes are gone (a
// not-found, an accepted delete, an active entry, an untracked record, a
// registration never seen) stay as they are through every such listing,
// for confirmation and for discovery, while what the pages did show is
// recorded. Once listings complete again, the same absences decide.
func TestFailedListingDecidesNothingFromAbsence(t *testing.T) {
	h := newHarness(t, withAdoption())
	fl := newPagedFleet(2)
	for i := range 16 {
		fl.add(live(fmt.Sprintf("live%02d", i)))
	}
	fl.add(live("nf"), live("acc"), live("gone"), live("ut"))
	usePages(h, fl)
	h.prov.setClose(func(_ context.Context, id string) error {
		switch id {
		case "nf":
			return errNotFound
		case "acc":
			return errAccepted
		}
		return nil
	})
	h.start()
	h.register(reaper.RegisterRequest{ID: "nf", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "acc", TTL: reaper.Duration(time.Minute)})
	h.register(reaper.RegisterRequest{ID: "gone", TTL: reaper.Duration(10 * time.Hour)})
	h.clock.Advance(time.Second)
	if rep := h.sweep(); rep.DiscoveryErrors != nil {
		t.Fatalf("first sweep: discovery errors %v", rep.DiscoveryErrors)
	}
	for _, key := range []string{"fake/nf", "fake/acc", "fake/gone"} {
		if !h.entry(key).Seen {
			t.Fatalf("%s not seen after a complete listing showed it", key)
		}
	}
	untracked := func() map[string]bool {
		out := map[string]bool{}
		h.view(func(tx reaper.Tx) error {
			return tx.Untracked("fake", func(id string, _ time.Time) error { out[id] = true; return nil })
		})
		return out
	}
	if !untracked()["ut"] {
		t.Fatal("fake/ut not recorded untracked after a complete listing showed it")
	}

	// The four are gone at the provider, whose listing now fails on page 7
	// of 9, after six pages that show two newcomers first.
	fl.remove("nf", "acc", "gone", "ut")
	fl.add(live("fresh"), live("late"))
	fl.setFailAt(7)
	completes := fl.completes.Load()
	h.register(reaper.RegisterRequest{ID: "late", TTL: reaper.Duration(10 * time.Hour)})
	h.register(reaper.RegisterRequest{ID: "unv", TTL: reaper.Duration(10 * time.Hour)}) // never listed
	h.clock.Advance(time.Minute)                                                        // nf and acc are due
	eventually(t, 5*time.Second, func() bool {
		return !h.entry("fake/nf").NotFoundAt.IsZero() && !h.entry("fake/acc").AcceptedAt.IsZero()
	}, func() string { return "the not-found and the accepted delete" })
	failures := fl.failures.Load()
	for range 4 {
		h.clock.Advance(15 * time.Second)
		if rep := h.sweep(); rep.DiscoveryErrors["fake"] == "" {
			t.Fatalf("sweep over a failing listing: no discovery error in %+v", rep)
		}
	}
	// Until ten listings failed, confirmations included, or, should the
	// engine take one for proof, until it closed what it must not.
	h.advanceUntil(time.Second, func() bool {
		return fl.failures.Load()-failures >= 10 ||
			h.entry("fake/nf").State == reaper.StateClosed || h.entry("fake/acc").State == reaper.StateClosed
	}, "listings for confirmation to fail as well")
	if n := fl.completes.Load(); n != completes {
		t.Fatalf("%d listings completed in the failing phase, want none", n-completes)
	}

	evs := h.audit()
	tests := []struct {
		key       string
		wantState reaper.State
		notEvent  reaper.EventKind
	}{
		{"fake/nf", reaper.StateClosing, reaper.EventClosed},
		{"fake/acc", reaper.StateClosing, reaper.EventClosed},
		{"fake/gone", reaper.StateActive, reaper.EventClosed},
		{"fake/ut", "", reaper.EventUntrackedGone},
	}
	for _, tt := range tests {
		if tt.wantState != "" {
			if got := h.entry(tt.key).State; got != tt.wantState {
				t.Errorf("%s after failed listings: %s, want %s", tt.key, got, tt.wantState)
			}
		}
		if got := kinds(evs, tt.key); slices.Contains(got, tt.notEvent) {
			t.Errorf("%s: audit %v holds %s after listings that all failed", tt.key, got, tt.notEvent)
		}
	}
	if !untracked()["ut"] {
		t.Error("fake/ut's untracked record forgotten after listings that all failed")
	}
	if e := h.entry("fake/unv"); e.Unverified {
		t.Errorf("fake/unv marked unverified by listings that all failed: %+v", e)
	}
	// What the six pages showed stands.
	if e := h.entry("fake/late"); !e.Seen {
		t.Errorf("fake/late, on the first page, not seen: %+v", e)
	}
	if got := kinds(evs, "fake/fresh"); !slices.Contains(got, reaper.EventDiscovered) {
		t.Errorf("fake/fresh, on the first page, not recorded untracked: audit %v", got)
	}

	// The listings complete again: the same absences decide.
	fl.setFailAt(0)
	h.advanceUntil(time.Second, func() bool {
		return h.entry("fake/nf").State == reaper.StateClosed && h.entry("fake/acc").State == reaper.StateClosed
	}, "the not-found and the accepted delete to be confirmed by complete listings")
	h.sweep()
	h.clock.Advance(time.Minute)
	h.sweep()
	if e := h.entry("fake/gone"); e.State != reaper.StateClosed || e.CloseReason != reaper.ReasonGone {
		t.Errorf("fake/gone after two complete listings without it: %s (%s), want closed (gone)", e.State, e.CloseReason)
	}
	if got := kinds(h.audit(), "fake/ut"); !slices.Contains(got, reaper.EventUntrackedGone) || untracked()["ut"] {
		t.Errorf("fake/ut after a complete listing without it: audit %v, recorded %v; want untracked-gone and forgotten", got, untracked()["ut"])
	}
	if e := h.entry("fake/unv"); !e.Unverified {
		t.Errorf("fake/unv after complete listings without it: %+v, want unverified", e)
	}
	if got := h.prov.Closes(); slices.Contains(got, "gone") {
		t.Errorf("closes = %v: a sandbox gone by itself needs no close", got)
	}
}

// countingStore counts write transactions and the untracked records each
// one writes.
type countingStore struct {
	reaper.Store
	mu      sync.Mutex
	updates int
	maxPuts int
}

type countingTx struct {
	reaper.Tx
	puts *int
}

func (t countingTx) PutUntracked(provider, id string, at time.Time) error {
	*t.puts++
	return t.Tx.PutUntracked(provider, id, at)
}

func (s *countingStore) Update(ctx context.Context, fn func(reaper.Tx) error) error {
	puts := 0
	err := s.Store.Update(ctx, func(tx reaper.Tx) error {
		puts = 0
		return fn(countingTx{tx, &puts})
	})
	s.mu.Lock()
	s.updates++
	s.maxPuts = max(s.maxPuts, puts)
	s.mu.Unlock()
	return err
}

func (s *countingStore) counts() (updates, maxPuts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, m := s.updates, s.maxPuts
	s.updates, s.maxPuts = 0, 0
	return u, m
}

// A discovery records a page in a transaction of its own, and a fleet it
// knows already costs it no write transaction at all.
func TestDiscoveryWritesPageByPage(t *testing.T) {
	h := newHarness(t)
	st := &countingStore{Store: h.db}
	h.eng.Store = st
	fl := newPagedFleet(100)
	for i := range 1000 {
		fl.add(live(fmt.Sprintf("sb%04d", i)))
	}
	usePages(h, fl)
	found, errs := h.eng.Discover(context.Background())
	if errs != nil || len(found) != 1000 {
		t.Fatalf("first discovery: %d untracked, errors %v; want 1000, none", len(found), errs)
	}
	updates, maxPuts := st.counts()
	if updates < 10 || maxPuts > 100 {
		t.Errorf("first discovery: %d write transactions, at most %d records in one; want one a page (10), at most a page's (100)", updates, maxPuts)
	}
	found, errs = h.eng.Discover(context.Background())
	if errs != nil || len(found) != 1000 {
		t.Fatalf("second discovery: %d untracked, errors %v; want 1000, none", len(found), errs)
	}
	if updates, _ := st.counts(); updates != 0 {
		t.Errorf("second discovery of the same fleet: %d write transactions, want none", updates)
	}
}

// A sweep's report lists at most 1,000 untracked sandboxes, those it
// adopted first, and counts them all; a discovery asked for lists every
// one.
func TestSweepReportCapsUntracked(t *testing.T) {
	rule := openhandsRule
	rule.States = nil
	h := newHarness(t, withAdoption(rule))
	fl := newPagedFleet(100)
	for i := range 1500 {
		fl.add(live(fmt.Sprintf("sb%04d", i)))
	}
	// Three that the rule adopts, on the last pages.
	oh := func(id string) reaper.Sandbox {
		sb := live(id)
		sb.CreatedAt, sb.Labels = t0.Add(-3*time.Hour), map[string]string{"OpenHands_SID": "s-" + id}
		return sb
	}
	fl.add(oh("zz1"), oh("zz2"), oh("zz3"))
	usePages(h, fl)
	h.prov.setClose(func(_ context.Context, id string) error { fl.remove(id); return nil })
	h.start()
	rep := h.sweep()
	if len(rep.Untracked) < 3 {
		t.Fatalf("sweep report lists %d untracked, want 1000", len(rep.Untracked))
	}
	var adopted []string
	for _, u := range rep.Untracked[:3] {
		if u.Adopted {
			adopted = append(adopted, u.Sandbox.ID)
		}
	}
	if got, want := len(rep.Untracked), 1000; got != want || rep.UntrackedTotal != 1503 || !slices.Equal(adopted, []string{"zz1", "zz2", "zz3"}) {
		t.Fatalf("sweep report: %d untracked listed of %d, first adopted %v; want %d of 1503, the three adopted first",
			got, rep.UntrackedTotal, adopted, want)
	}
	for _, id := range adopted {
		h.waitState("fake/"+id, reaper.StateClosed)
	}
	found, errs := h.eng.Discover(context.Background())
	if errs != nil || len(found) != 1500 {
		t.Fatalf("discover: %d untracked, errors %v; want every one of the 1500 not adopted", len(found), errs)
	}
}
