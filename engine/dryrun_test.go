package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/reaperd/reaperd/reaper"
)

// TestDryRunReadsOnlyWhatIsDue: the dry run, which reads the deadline and
// keep indexes, reports exactly what a scan of every entry reports, on
// random ledgers of active, keep, attached, closing and final entries,
// with live, lapsed and ended sessions, at several instants.
func TestDryRunReadsOnlyWhatIsDue(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			h := newHarness(t)
			rng := rand.New(rand.NewPCG(seed, 7))
			d := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max))) }
			err := h.db.Update(context.Background(), func(tx reaper.Tx) error {
				for i := range 8 {
					s := &reaper.Session{ID: fmt.Sprintf("s%d", i), StartedAt: t0.Add(-time.Hour),
						LastHeartbeat: t0.Add(-d(time.Hour)), Lease: reaper.Duration(d(2 * time.Hour))}
					if rng.IntN(4) == 0 {
						s.EndedAt, s.EndReason = t0.Add(-d(time.Hour)), reaper.ReasonSessionEnded
					}
					if err := tx.PutSession(s); err != nil {
						return err
					}
				}
				for i := range 200 {
					e := &reaper.Entry{Provider: "fake", ID: fmt.Sprintf("sb-%03d", i), RegisteredAt: t0.Add(-2 * time.Hour), State: reaper.StateActive, Seen: true}
					if rng.IntN(3) > 0 {
						e.Session = fmt.Sprintf("s%d", rng.IntN(9)) // s8 does not exist
					}
					if rng.IntN(2) == 0 {
						e.ExpiresAt = t0.Add(d(4*time.Hour) - 2*time.Hour)
					}
					switch rng.IntN(8) {
					case 0:
						e.Keep = true
					case 1:
						e.Attached = true
					case 2:
						e.State, e.CloseReason, e.ClosingSince, e.Attempts = reaper.StateClosing, reaper.ReasonExpired, t0.Add(-time.Hour), 1+rng.IntN(3)
						e.NextAttemptAt = t0.Add(d(2*time.Hour) - time.Hour)
						e.InFlight, e.Stuck = rng.IntN(5) == 0, rng.IntN(5) == 0
					case 3:
						e.State, e.CloseReason, e.ClosedAt = reaper.StateClosed, reaper.ReasonExpired, t0.Add(-time.Hour)
					}
					if err := tx.PutEntry(e); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, step := range []time.Duration{0, 20 * time.Minute, time.Hour, 3 * time.Hour} {
				h.clock.Advance(step)
				got, err := h.eng.Sweep(context.Background(), reaper.SweepOptions{DryRun: true})
				if err != nil {
					t.Fatal(err)
				}
				want, err := h.eng.DryRunScan(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if len(want.Items) == 0 {
					t.Fatalf("at %s: the scan found nothing to do: the ledger tests nothing", h.clock.Now())
				}
				if !reflect.DeepEqual(got.Items, want.Items) || got.Waiting != want.Waiting {
					t.Errorf("at %s: dry run = %d items, %d waiting:\n%+v\nscan = %d items, %d waiting:\n%+v",
						h.clock.Now(), len(got.Items), got.Waiting, got.Items, len(want.Items), want.Waiting, want.Items)
				}
			}
		})
	}
}
