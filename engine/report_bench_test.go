package engine_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/providers/daytona"
	"github.com/reaperd/reaperd/providers/e2b"
	"github.com/reaperd/reaperd/providers/modal"
	"github.com/reaperd/reaperd/reaper"
)

// fleetEvents writes n audit events of a month's busy fleet: each sandbox
// is registered with a size and labels, a quarter of them stop for a while,
// and each is closed an hour or so after it started, for the usual
// reasons.
func fleetEvents(b *testing.B, db *ledger.DB, n int, t0 time.Time) {
	b.Helper()
	providers := []string{"daytona", "e2b", "modal", "runloop"}
	reasons := []reaper.Reason{reaper.ReasonExpired, reaper.ReasonOrphanedLease, reaper.ReasonSessionEnded, reaper.ReasonGone}
	var evs []reaper.AuditEvent
	flush := func() {
		err := db.Update(context.Background(), func(tx reaper.Tx) error {
			for _, ev := range evs {
				if err := tx.Append(ev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		evs = evs[:0]
	}
	uid := uint32(1000)
	written := 0
	for i := 0; written < n; i++ {
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		key := fmt.Sprintf("%s/sb-%08d", providers[i%4], i)
		session := fmt.Sprintf("run-%06d", i/3)
		sb := []reaper.AuditEvent{
			{Time: at, Kind: reaper.EventRegistered, Key: key, Session: session, Actor: &uid, Detail: "expires in 1h",
				Labels:    map[string]string{"team": fmt.Sprintf("team-%d", i%8), "repo": fmt.Sprintf("repo-%d", i%50)},
				Resources: &reaper.Resources{VCPU: 2, MemoryGiB: 4, DiskGiB: 10}},
		}
		if i%4 == 0 {
			sb = append(sb, reaper.AuditEvent{Time: at.Add(20 * time.Minute), Kind: reaper.EventStateChanged, Key: key, RunState: reaper.RunStateStopped})
		}
		re := reasons[i%len(reasons)]
		end := at.Add(time.Hour + time.Duration(i%300)*time.Second)
		if re != reaper.ReasonGone {
			sb = append(sb, reaper.AuditEvent{Time: end, Kind: reaper.EventCloseStarted, Key: key, Session: session, Reason: re, DueAt: end})
		}
		sb = append(sb, reaper.AuditEvent{Time: end.Add(800 * time.Millisecond), Kind: reaper.EventClosed, Key: key, Session: session, Reason: re})
		for _, ev := range sb {
			if written == n {
				break
			}
			evs = append(evs, ev)
			written++
		}
		if len(evs) >= 20000 {
			flush()
		}
	}
	flush()
}

// BenchmarkAuditReport1M builds a cost report over a ledger of 1,000,000
// audit events (about 290,000 sandboxes over 34 days), whole window, by
// provider: the figure docs/benchmarks.md reports.
func BenchmarkAuditReport1M(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "ledger.db")
			db, err := ledger.Open(path, ledger.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			t0 := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
			fleetEvents(b, db, n, t0)
			eng := &engine.Engine{Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			eng.SetPricing(&reaper.Pricing{Providers: map[string]reaper.PriceList{"daytona": daytona.ListPrices, "e2b": e2b.ListPrices, "modal": modal.ListPrices},
				Cleanup: map[string]reaper.Cleanup{"daytona": daytona.Cleanup, "e2b": e2b.Cleanup, "modal": modal.Cleanup}})
			q := reaper.ReportQuery{Since: t0, Until: t0.AddDate(0, 2, 0), GroupBy: reaper.GroupByProvider}
			b.ResetTimer()
			var rep *reaper.Report
			for b.Loop() {
				rep, err = eng.AuditReport(context.Background(), q)
				if err != nil {
					b.Fatal(err)
				}
			}
			if rep.Events != n {
				b.Fatalf("the report read %d events, want %d", rep.Events, n)
			}
			b.ReportMetric(float64(n), "events")
		})
	}
}
