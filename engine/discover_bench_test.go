package engine_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

// benchFleet is a Daytona-sized fleet of n live sandboxes, handed out as
// the API pages them (size a page) and built page by page, as a provider
// decodes them; List builds them all, as List did.
type benchFleet struct {
	name    string
	n, size int
}

var benchTeams = []string{"search", "infra", "evals", "agents"}

// sandbox is the i-th sandbox, with what Daytona reports of one: a UUID,
// a name, three labels, a state (a quarter stopped), times, a snapshot and
// a size.
func (f benchFleet) sandbox(i int) reaper.Sandbox {
	state := "started"
	if i%4 == 3 {
		state = "stopped"
	}
	return reaper.Sandbox{
		ID:             fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(i)*2654435761, i&0xffff, i%4096, (i/7)%4096, i),
		Name:           fmt.Sprintf("openhands-runtime-%06d", i),
		CreatedAt:      t0.Add(-time.Duration(i+3600) * time.Second),
		LastActivityAt: t0.Add(-time.Duration(i%600) * time.Second),
		State:          state,
		Labels: map[string]string{"OpenHands_SID": fmt.Sprintf("sess-%06d", i/3), "team": benchTeams[i%4],
			"code-toolbox-language": "python"},
		Template:  "daytonaio/sandbox:0.4.3",
		Resources: &reaper.Resources{VCPU: 2, MemoryGiB: 4, DiskGiB: 10},
	}
}

func (f benchFleet) ListPages(ctx context.Context, _ reaper.ListFilter, fn func([]reaper.Sandbox) error) error {
	for i := 0; i < f.n; i += f.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		page := make([]reaper.Sandbox, 0, f.size)
		for j := i; j < min(i+f.size, f.n); j++ {
			page = append(page, f.sandbox(j))
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

func (f benchFleet) List(ctx context.Context, lf reaper.ListFilter) ([]reaper.Sandbox, error) {
	var out []reaper.Sandbox
	err := f.ListPages(ctx, lf, func(page []reaper.Sandbox) error {
		out = append(out, page...)
		return nil
	})
	return out, err
}

func (f benchFleet) Name() string                        { return f.name }
func (f benchFleet) Close(context.Context, string) error { return nil }

// heapPeak samples the bytes of heap objects (live and not yet swept)
// until stopped, and keeps the largest figure.
type heapPeak struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func watchHeap() *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), peak: heapObjects()}
	h.done.Go(func() {
		t := time.NewTicker(200 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				h.peak = max(h.peak, heapObjects())
			}
		}
	})
	return h
}

func (h *heapPeak) Stop() uint64 {
	close(h.stop)
	h.done.Wait()
	return max(h.peak, heapObjects())
}

// BenchmarkDiscover100k times one provider's discovery of 100,000 live
// sandboxes, 10,000 of them registered, in Daytona's pages of 100, on a
// ledger that knows them (every sandbox seen or recorded untracked by an
// earlier discovery), and reports the peak heap during it, and the time
// and peak heap of that earlier, first discovery: the former
// discovery, which held the whole listing (path=slice), the sweep's
// discovery page by page, whose report lists 1,000 untracked sandboxes
// (path=pages), and `reaperd discover`, page by page but answering with
// every untracked sandbox (path=pages-full-answer).
func BenchmarkDiscover100k(b *testing.B) {
	const n, registered, pageSize = 100_000, 10_000, 100
	paths := []struct {
		name     string
		discover func(*engine.Engine, context.Context) (int, map[string]string)
		want     int // untracked sandboxes answered
	}{
		{"path=slice", engine.DiscoverWholeSlice, n - registered},
		{"path=pages", func(e *engine.Engine, ctx context.Context) (int, map[string]string) {
			listed, _, errs := engine.DiscoverForSweep(e, ctx)
			return listed, errs
		}, 1000},
		{"path=pages-full-answer", func(e *engine.Engine, ctx context.Context) (int, map[string]string) {
			found, errs := e.Discover(ctx)
			return len(found), errs
		}, n - registered},
	}
	for _, path := range paths {
		b.Run(path.name, func(b *testing.B) {
			fleet := benchFleet{name: "daytona", n: n, size: pageSize}
			db := ledgertest.Open(b)
			ctx := context.Background()
			for start := 0; start < n; start += 10 * 1000 {
				err := db.Update(ctx, func(tx reaper.Tx) error {
					for i := start; i < start+10*1000; i += 10 { // one in ten registered
						sb := fleet.sandbox(i)
						if err := tx.PutEntry(&reaper.Entry{Provider: fleet.name, ID: sb.ID, State: reaper.StateActive, Seen: true,
							RegisteredAt: t0.Add(-2 * time.Hour), ExpiresAt: t0.Add(24 * time.Hour), Labels: map[string]string{"team": "agents"},
							Resources: sb.Resources, Stopped: sb.State == "stopped"}); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			e := &engine.Engine{Store: db, Providers: engine.ProviderSet{Enabled: map[string]reaper.Provider{fleet.name: fleet}},
				Clock: clockwork.NewFakeClockAt(t0), Logger: quietLogger()}
			rule := reaper.AdoptRule{Name: "oh", Provider: fleet.name, Labels: map[string]string{"OpenHands_SID": "*"},
				States: []string{"stopped"}, MinAge: time.Hour, Action: reaper.AdoptReport}
			e.SetAdoption(engine.Adoption{Rules: []reaper.AdoptRule{rule}})
			// The ledger's commit loop keeps its last batch, and with it
			// what the batch's functions hold, until the next write: an
			// empty write after each discovery lets go of it, so that a
			// figure is one discovery's own.
			flush := func() {
				if err := db.Update(ctx, func(reaper.Tx) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
			// The first discovery records the 90,000 untracked sandboxes:
			// timed and watched apart, once.
			runtime.GC()
			first, start := watchHeap(), time.Now()
			if got, errs := path.discover(e, ctx); errs != nil || got != path.want {
				b.Fatalf("first discovery: %d untracked, errors %v; want %d", got, errs, path.want)
			}
			firstTook, firstPeak := time.Since(start), first.Stop()
			flush()
			runtime.GC()
			runtime.GC() // and the pools' victims
			base := heapObjects()
			watch := watchHeap()
			for b.Loop() {
				if got, errs := path.discover(e, ctx); errs != nil || got != path.want {
					b.Fatalf("discovery: %d untracked, errors %v; want %d", got, errs, path.want)
				}
				flush()
			}
			peak := watch.Stop()
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(base)/(1<<20), "base-heap-MB")
			b.ReportMetric(float64(firstTook.Milliseconds()), "first-ms")
			b.ReportMetric(float64(firstPeak)/(1<<20), "first-peak-heap-MB")
		})
	}
}
