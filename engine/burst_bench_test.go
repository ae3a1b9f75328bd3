package engine_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/providers/e2b"
	"github.com/reaperd/reaperd/providers/modal"
	"github.com/reaperd/reaperd/providers/runloop"
	"github.com/reaperd/reaperd/reaper"
)

// burstFleet is one provider's sandboxes: each answers a close after a
// latency, and an asynchronous one (Daytona) stays listed, destroying, for
// a while after its delete was accepted.
type burstFleet struct {
	name    string
	latency time.Duration
	destroy time.Duration // > 0: deletes are accepted and take this long
	mu      sync.Mutex
	live    map[string]bool
	gone    map[string]time.Time // accepted: when the destroy ends
}

func (f *burstFleet) close(ctx context.Context, id string) error {
	select {
	case <-time.After(f.latency):
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.destroy == 0 {
		delete(f.live, id)
		return nil
	}
	if _, ok := f.gone[id]; !ok {
		f.gone[id] = time.Now().Add(f.destroy)
	}
	return &reaper.ProviderError{Provider: f.name, Op: "close", ID: id, Kind: reaper.ErrAccepted, StatusCode: 200}
}

func (f *burstFleet) list(context.Context, reaper.ListFilter) ([]reaper.Sandbox, error) {
	time.Sleep(f.latency)
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	var out []reaper.Sandbox
	for id := range f.live {
		if at, ok := f.gone[id]; ok && now.After(at) {
			continue
		}
		out = append(out, reaper.Sandbox{ID: id, State: "started"})
	}
	return out, nil
}

// BenchmarkBurst2000 makes 2,000 sandboxes, 500 at each provider, fall due
// in the same second, with every provider answering in 250 ms and
// Daytona's deletes taking 2 s more to finish, and times until the ledger
// records every one closed: with each provider's default pace (its
// documented rate limits) and with the former defaults (10 closes a second
// and 4 in flight for every provider).
func BenchmarkBurst2000(b *testing.B) {
	const perProvider = 500
	paces := []struct {
		name        string
		rates       map[string]float64
		concurrency map[string]int
	}{
		{"pace=documented",
			map[string]float64{"daytona": daytona.DefaultRate, "e2b": e2b.DefaultRate, "modal": modal.DefaultRate, "runloop": runloop.DefaultRate},
			map[string]int{"daytona": daytona.DefaultConcurrency, "e2b": e2b.DefaultConcurrency, "modal": modal.DefaultConcurrency, "runloop": runloop.DefaultConcurrency}},
		{"pace=former",
			map[string]float64{"daytona": 10, "e2b": 10, "modal": 10, "runloop": 10},
			map[string]int{"daytona": 4, "e2b": 4, "modal": 4, "runloop": 4}},
	}
	for _, pace := range paces {
		b.Run(pace.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				db, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), ledger.Options{})
				if err != nil {
					b.Fatal(err)
				}
				due := time.Now().Add(2 * time.Second).Truncate(time.Second)
				set := engine.ProviderSet{Enabled: map[string]reaper.Provider{}, Rates: pace.rates, Concurrency: pace.concurrency}
				var fleets []*burstFleet
				err = db.Update(context.Background(), func(tx reaper.Tx) error {
					for _, name := range []string{"daytona", "e2b", "modal", "runloop"} {
						f := &burstFleet{name: name, latency: 250 * time.Millisecond, live: map[string]bool{}, gone: map[string]time.Time{}}
						if name == "daytona" {
							f.destroy = 2 * time.Second
						}
						for i := range perProvider {
							id := fmt.Sprintf("sb%04d", i)
							f.live[id] = true
							if err := tx.PutEntry(&reaper.Entry{Provider: name, ID: id, State: reaper.StateActive, Seen: true,
								RegisteredAt: due.Add(-time.Hour), ExpiresAt: due}); err != nil {
								return err
							}
						}
						fleets = append(fleets, f)
						set.Enabled[name] = &fakeProvider{name: name, CloseFn: f.close, ListFn: f.list}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				eng := &engine.Engine{Store: db, Providers: set, Logger: quietLogger(), CloseTimeout: time.Minute}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- eng.Run(ctx) }()
				<-eng.Started()
				time.Sleep(time.Until(due))
				b.StartTimer()
				for {
					closed := 0
					_ = db.View(ctx, func(tx reaper.Tx) error {
						return tx.Counts(func(_ string, st reaper.State, n int) error {
							if st == reaper.StateClosed {
								closed += n
							}
							return nil
						})
					})
					if closed == 4*perProvider {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				b.ReportMetric(time.Since(due).Seconds(), "s-to-all-closed")
				b.StopTimer()
				cancel()
				<-done
				db.Close()
				for _, f := range fleets {
					f.mu.Lock()
					n := len(f.live)
					if f.destroy > 0 {
						n -= len(f.gone)
					}
					f.mu.Unlock()
					if n != 0 {
						b.Fatalf("%s: %d sandboxes never deleted", f.name, n)
					}
				}
				b.StartTimer()
			}
		})
	}
}
