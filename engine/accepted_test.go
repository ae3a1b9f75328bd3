package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/reaper"
)

var errAccepted = &reaper.ProviderError{Provider: "fake", Op: "close", Kind: reaper.ErrAccepted, StatusCode: 200}

// TestAcceptedDeletesHoldNoSlot: a provider that deletes asynchronously
// (Daytona) answers every close at once with ErrAccepted. With one close
// worker, every due sandbox's delete is still sent at once; while the
// listing shows the sandboxes (destroying) nothing is recorded, and once
// two listings leave them out they are closed, without another call.
func TestAcceptedDeletesHoldNoSlot(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) { e.Concurrency = 1 })
	ids := []string{"a", "b", "c", "d", "e"}
	fl := newFleet(ids...)
	h.prov.ListFn = fl.list
	var mu sync.Mutex
	calls := map[string]int{}
	h.prov.setClose(func(_ context.Context, id string) error {
		mu.Lock()
		calls[id]++
		mu.Unlock()
		return errAccepted
	})
	h.start()
	for _, id := range ids {
		h.register(reaper.RegisterRequest{ID: id, TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Advance(time.Second)
	h.sweep() // a listing shows them all: seen
	h.clock.Advance(time.Minute)
	var e *reaper.Entry
	eventually(t, 5*time.Second, func() bool {
		for _, id := range ids {
			e = h.entry("fake/" + id)
			if e.State != reaper.StateClosing || e.AcceptedAt.IsZero() || e.ErrorClass != "accepted" || e.InFlight {
				return false
			}
		}
		return true
	}, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("every delete sent with one worker and recorded accepted; calls %v, last entry %+v", calls, e)
	})
	// Still destroying: listings show them; nothing closes, nothing is
	// contradicted.
	for range 3 {
		h.clock.Advance(3 * time.Second)
		h.sweep()
	}
	for _, id := range ids {
		if e := h.entry("fake/" + id); e.State != reaper.StateClosing {
			t.Fatalf("%s is %s while the listing still shows it", id, e.State)
		}
	}
	if k := kinds(h.audit(), "fake/a"); slicesContains(k, reaper.EventContradicted) {
		t.Fatalf("a listing of a sandbox being destroyed counted as a contradiction: %v", k)
	}
	// Destroyed: two listings without them close them.
	for _, id := range ids {
		fl.remove(id)
	}
	h.clock.Advance(3 * time.Second)
	h.sweep()
	if e := h.entry("fake/a"); e.State != reaper.StateClosing {
		t.Fatalf("closed after one listing without it: %+v", e)
	}
	// (A confirmation listing that began before the removal and ends after
	// the first sweep shows them again, and the absences start over: a few
	// more listings may be needed, never fewer than two.)
	h.advanceUntil(3*time.Second, func() bool {
		h.sweep()
		for _, id := range ids {
			if h.entry("fake/"+id).State != reaper.StateClosed {
				return false
			}
		}
		return true
	}, "the accepted deletes to be confirmed by listings without the sandboxes")
	for _, id := range ids {
		e := h.entry("fake/" + id)
		if e.State != reaper.StateClosed || e.CloseReason != reaper.ReasonExpired || !e.AcceptedAt.IsZero() {
			t.Fatalf("%s after two listings without it: %+v; want closed (expired)", id, e)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if calls[id] != 1 {
			t.Errorf("%s: %d delete calls, want 1: the listing confirmed it before any retry", id, calls[id])
		}
	}
}

func slicesContains(s []reaper.EventKind, k reaper.EventKind) bool {
	for _, v := range s {
		if v == k {
			return true
		}
	}
	return false
}

// TestProviderConcurrency: a provider's own concurrency sets how many of
// its closes are in flight at once, whatever the engine's default.
func TestProviderConcurrency(t *testing.T) {
	h := newHarness(t, func(e *engine.Engine) {
		e.Concurrency = 1
		e.Providers.Concurrency = map[string]int{"fake": 3}
	})
	release := make(chan struct{})
	var mu sync.Mutex
	inFlight, most := 0, 0
	h.prov.setClose(func(ctx context.Context, id string) error {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil
	})
	h.start()
	for i := range 6 {
		h.register(reaper.RegisterRequest{ID: fmt.Sprintf("s%d", i), TTL: reaper.Duration(time.Minute)})
	}
	h.clock.Advance(time.Minute)
	eventually(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return inFlight == 3 },
		func() string { return fmt.Sprintf("3 closes in flight, have %d", inFlight) })
	never(t, 100*time.Millisecond, func() bool { mu.Lock(); defer mu.Unlock(); return most > 3 }, "more than 3 closes in flight")
	close(release)
	for i := range 6 {
		h.waitState(fmt.Sprintf("fake/s%d", i), reaper.StateClosed)
	}
	if most != 3 {
		t.Errorf("at most %d closes in flight, want the provider's 3", most)
	}
}
