package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/reaperd/reaperd/reaper"
)

// funcLister is a function-field fake provider that lists all at once;
// funcPageLister wraps it into one that lists page by page, with PagesFn
// (reaper.PageLister).
type funcLister struct {
	ListFn  func(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error)
	PagesFn func(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error
}

func (l *funcLister) Name() string                               { return "fake" }
func (l *funcLister) Close(ctx context.Context, id string) error { return nil }
func (l *funcLister) List(ctx context.Context, f reaper.ListFilter) ([]reaper.Sandbox, error) {
	return l.ListFn(ctx, f)
}

type funcPageLister struct{ *funcLister }

func (l funcPageLister) ListPages(ctx context.Context, f reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	return l.PagesFn(ctx, f, fn)
}

func sbs(ids ...string) []reaper.Sandbox {
	out := make([]reaper.Sandbox, 0, len(ids))
	for _, id := range ids {
		out = append(out, reaper.Sandbox{ID: id})
	}
	return out
}

// listPages returns nil only for a listing that went through to its end
// with every page accepted; whatever else a provider does is an error.
func TestListPages(t *testing.T) {
	errBroken := &reaper.ProviderError{Provider: "fake", Op: "list", Kind: reaper.ErrTransient, Err: errors.New("page 3: 503")}
	errRefused := errors.New("ledger full")
	pages := [][]reaper.Sandbox{sbs("a", "b"), sbs("c", "d"), sbs("e")}
	tests := []struct {
		name      string
		provider  reaper.Provider
		refuse    int // fn refuses the page with this number (1-based); 0: none
		wantIDs   []string
		wantErr   error // errors.Is; nil: none
		wantPanic bool  // a transient error saying the provider panicked
	}{
		{name: "pages to the end",
			provider: funcPageLister{&funcLister{PagesFn: func(_ context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
				for _, p := range pages {
					if err := fn(p); err != nil {
						return err
					}
				}
				return nil
			}}},
			wantIDs: []string{"a", "b", "c", "d", "e"}},
		{name: "fails after two pages",
			provider: funcPageLister{&funcLister{PagesFn: func(_ context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
				for _, p := range pages[:2] {
					if err := fn(p); err != nil {
						return err
					}
				}
				return errBroken
			}}},
			wantIDs: []string{"a", "b", "c", "d"}, wantErr: reaper.ErrTransient},
		{name: "fn refuses a page: the listing stops",
			provider: funcPageLister{&funcLister{PagesFn: func(_ context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
				for _, p := range pages {
					if err := fn(p); err != nil {
						return err
					}
				}
				return nil
			}}},
			refuse: 2, wantIDs: []string{"a", "b"}, wantErr: errRefused},
		{name: "a provider that swallows fn's refusal and goes on",
			provider: funcPageLister{&funcLister{PagesFn: func(_ context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
				for _, p := range pages {
					_ = fn(p)
				}
				return nil
			}}},
			refuse: 1, wantIDs: nil, wantErr: errRefused},
		{name: "a provider that panics",
			provider: funcPageLister{&funcLister{PagesFn: func(_ context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
				_ = fn(pages[0])
				panic("nil map")
			}}},
			wantIDs: []string{"a", "b"}, wantErr: reaper.ErrTransient, wantPanic: true},
		{name: "no PageLister: List's answer is one page",
			provider: &funcLister{ListFn: func(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
				return sbs("a", "b", "c"), nil
			}},
			wantIDs: []string{"a", "b", "c"}},
		{name: "no PageLister, List fails",
			provider: &funcLister{ListFn: func(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
				return nil, errBroken
			}},
			wantErr: reaper.ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			n := 0
			err := listPages(context.Background(), tt.provider, "fake", func(page []reaper.Sandbox) error {
				n++
				if n == tt.refuse {
					return errRefused
				}
				for _, sb := range page {
					got = append(got, sb.ID)
				}
				return nil
			})
			if !slices.Equal(got, tt.wantIDs) {
				t.Errorf("pages accepted = %v, want %v", got, tt.wantIDs)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("listPages = %v, want nil", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("listPages = %v, want %v", err, tt.wantErr)
			}
			var pe *reaper.ProviderError
			if gotPanic := errors.As(err, &pe) && pe.Err != nil && strings.Contains(pe.Err.Error(), "panicked"); gotPanic != tt.wantPanic {
				t.Errorf("listPages = %v, panic reported %v, want %v", err, gotPanic, tt.wantPanic)
			}
			if tt.refuse > 0 && n != tt.refuse {
				t.Errorf("fn called %d times, want the listing to stop at page %d", n, tt.refuse)
			}
		})
	}
}

// A provider that calls fn after ListPages returned gets an error: the
// engine may already be deciding from that listing.
func TestListPagesLateCall(t *testing.T) {
	var keep func([]reaper.Sandbox) error
	p := funcPageLister{&funcLister{PagesFn: func(_ context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
		keep = fn
		return fn(sbs("a"))
	}}}
	var got []string
	err := listPages(context.Background(), p, "fake", func(page []reaper.Sandbox) error {
		for _, sb := range page {
			got = append(got, sb.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listPages = %v", err)
	}
	if err := keep(sbs("late")); err == nil {
		t.Errorf("a page after the listing returned was accepted")
	}
	if !slices.Equal(got, []string{"a"}) {
		t.Errorf("pages accepted = %v, want [a]", got)
	}
}
