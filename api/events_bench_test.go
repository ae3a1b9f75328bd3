package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/reaperd/reaperd/api"
	"github.com/reaperd/reaperd/engine"
	"github.com/reaperd/reaperd/ledger/ledgertest"
	"github.com/reaperd/reaperd/reaper"
)

// benchEvents is the size of the audit log the export benchmarks read.
const benchEvents = 88000

// eventsDaemon serves a ledger holding benchEvents audit events on a Unix
// socket until b ends.
func eventsDaemon(b *testing.B) *api.Client {
	var eventsClient *api.Client
	func() {
		db := ledgertest.Open(b)
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for done := 0; done < benchEvents; done += 10000 {
			err := db.Update(context.Background(), func(tx reaper.Tx) error {
				for i := done; i < done+10000 && i < benchEvents; i++ {
					ev := reaper.AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Kind: reaper.EventCloseFailed,
						Key: fmt.Sprintf("e2b/sandbox-%06d", i), Session: fmt.Sprintf("run-%d", i/10), Reason: reaper.ReasonExpired,
						ErrorClass: "timeout", Error: "delete sandbox: no answer within 30s: context deadline exceeded",
						Detail: "attempt 1; retry in 5s"}
					if err := tx.Append(ev); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		eng := &engine.Engine{Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		eventsClient = api.NewClient(serveUnix(b, &api.Server{Service: eng}))
		eventsClient.Timeout = 5 * time.Minute
	}()
	return eventsClient
}

// BenchmarkAuditExport reads the whole log of 88,000 events over the
// socket: as one JSON response (GET /v1/audit), and as JSON lines page by
// page (GET /v1/audit/events, what reaperd audit --events does).
func BenchmarkAuditExport(b *testing.B) {
	c := eventsDaemon(b)
	b.Run("one-response", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			evs, err := c.Audit(context.Background(), "", 0)
			if err != nil || len(evs) != benchEvents {
				b.Fatalf("%d events, %v", len(evs), err)
			}
		}
	})
	b.Run("pages", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n, err := c.AuditEvents(context.Background(), "", 0, io.Discard)
			if err != nil || n != benchEvents {
				b.Fatalf("%d events, %v", n, err)
			}
		}
	})
}
