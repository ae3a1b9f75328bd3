package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/reaperd/reaperd/ledger"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

// BenchmarkDryRun times `reaperd sweep --dry-run` on ledgers of 10,000 and
// 100,000 active entries (and 1,000,000 without -short) of which 1 in 1,000
// is due and 1 in 10,000 is tagged keep past its expiry, on a fake clock.
//
//   - method=index: the dry run, which reads the deadline index up to now
//     and the keep index.
//   - method=scan: the same report from a scan of every entry, as the dry
//     run was made before (its baseline).
//
// The ledger is built once per size, in a temporary directory.
func BenchmarkDryRun(b *testing.B) {
	sizes := []int{10_000, 100_000, 1_000_000}
	if testing.Short() {
		sizes = sizes[:2]
	}
	for _, n := range sizes {
		dir := b.TempDir()
		db, err := ledger.Open(dir+"/ledger.db", ledger.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		now := t0.Add(time.Hour)
		const chunk = 50_000
		for start := 0; start < n; start += chunk {
			err := db.Update(context.Background(), func(tx reaper.Tx) error {
				for i := start; i < min(start+chunk, n); i++ {
					e := &reaper.Entry{Provider: "fake", ID: ledgertest.ScatteredID(0, uint64(i)), RegisteredAt: t0,
						ExpiresAt: now.Add(time.Hour + time.Duration(i)*time.Millisecond), State: reaper.StateActive, Seen: true}
					if i%1_000 == 0 {
						e.ExpiresAt = now.Add(-time.Minute)
					}
					if i%10_000 == 5 {
						e.Keep, e.ExpiresAt = true, now.Add(-time.Minute)
					}
					if err := tx.PutEntry(e); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		h := newHarnessOn(&testing.T{}, db, clockwork.NewFakeClockAt(now))
		want := n/1_000 + n/10_000
		for _, m := range []struct {
			name string
			run  func(context.Context) (*reaper.SweepReport, error)
		}{
			{"index", func(ctx context.Context) (*reaper.SweepReport, error) {
				return h.eng.Sweep(ctx, reaper.SweepOptions{DryRun: true})
			}},
			{"scan", h.eng.DryRunScan},
		} {
			b.Run(fmt.Sprintf("entries=%d/method=%s", n, m.name), func(b *testing.B) {
				for b.Loop() {
					rep, err := m.run(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					if len(rep.Items) != want {
						b.Fatalf("%d items, want %d", len(rep.Items), want)
					}
				}
			})
		}
		db.Close()
	}
}
